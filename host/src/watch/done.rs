//! Moving completed files into the done directory without replacing a
//! file already there.
//!
//! The move links the file under its new name, which fails instead of
//! replacing an existing file, then removes the old name. When a file of
//! that name is there already, the next free name of the form
//! `stem.1.ext`, `stem.2.ext`, ... is taken. Where a link cannot be made,
//! as across file systems or where the kernel's `protected_hardlinks`
//! forbids linking another user's file, the file is copied to a temporary
//! name in the done directory, synced, and that copy is linked instead.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

/// Moves `path` into `done_dir`, which is created when missing, and
/// returns its new path. No existing file is replaced.
///
/// A crash between the link and the removal of the old name leaves the
/// file under both names. Moving it again then only removes the old name.
///
/// # Errors
///
/// Fails when the done directory cannot be created or written, or the
/// file cannot be read or removed.
pub fn move_to_done(path: &Path, done_dir: &Path) -> io::Result<PathBuf> {
    fs::create_dir_all(done_dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other(format!("{} has no file name", path.display())))?
        .to_owned();

    let moved = match link_under_free_name(path, done_dir, &name) {
        Ok(moved) => moved,
        Err(_) => {
            let copy = copy_into(path, done_dir, &name)?;
            let linked = link_under_free_name(&copy, done_dir, &name);
            let _ = fs::remove_file(&copy);
            linked?
        }
    };
    fs::remove_file(path)?;
    File::open(done_dir)?.sync_all()?;
    if let Some(inbox) = path.parent() {
        File::open(inbox)?.sync_all()?;
    }
    Ok(moved)
}

/// Links `path` under `name`, or the first free numbered variant of it,
/// in `dir`. A name already linked to the same file counts as done.
fn link_under_free_name(path: &Path, dir: &Path, name: &OsString) -> io::Result<PathBuf> {
    for attempt in 0u64.. {
        let candidate = dir.join(numbered(name, attempt));
        match fs::hard_link(path, &candidate) {
            Ok(()) => return Ok(candidate),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                if is_same_file(path, &candidate)? {
                    return Ok(candidate);
                }
            }
            Err(err) => return Err(err),
        }
    }
    unreachable!("some numbered name is free")
}

/// Copies `path` to a temporary name in `dir` and syncs the copy.
fn copy_into(path: &Path, dir: &Path, name: &OsString) -> io::Result<PathBuf> {
    let mut temporary = OsString::from(".");
    temporary.push(name);
    temporary.push(format!(".sluice-{}.tmp", std::process::id()));
    let temporary = dir.join(temporary);
    fs::copy(path, &temporary)?;
    File::open(&temporary)?.sync_all()?;
    Ok(temporary)
}

/// Returns `name` for attempt 0, and `stem.N.ext` (or `name.N` without an
/// extension) for attempt N.
fn numbered(name: &OsString, attempt: u64) -> OsString {
    if attempt == 0 {
        return name.clone();
    }
    let path = Path::new(name);
    match (path.file_stem(), path.extension()) {
        (Some(stem), Some(extension)) => {
            let mut numbered = stem.to_owned();
            numbered.push(format!(".{attempt}."));
            numbered.push(extension);
            numbered
        }
        _ => {
            let mut numbered = name.clone();
            numbered.push(format!(".{attempt}"));
            numbered
        }
    }
}

fn is_same_file(a: &Path, b: &Path) -> io::Result<bool> {
    let (a, b) = (fs::metadata(a)?, fs::metadata(b)?);
    Ok(a.dev() == b.dev() && a.ino() == b.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_names_keep_the_extension() {
        let name = OsString::from("flights.2026.csv");
        assert_eq!(numbered(&name, 0), "flights.2026.csv");
        assert_eq!(numbered(&name, 2), "flights.2026.2.csv");
        assert_eq!(numbered(&OsString::from("README"), 1), "README.1");
    }

    #[test]
    fn move_never_replaces_an_earlier_file() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = dir.path().join("in");
        let done = inbox.join("done");
        fs::create_dir_all(&done).unwrap();
        fs::write(done.join("a.csv"), b"first").unwrap();
        fs::write(done.join("a.1.csv"), b"second").unwrap();
        fs::write(inbox.join("a.csv"), b"third").unwrap();

        let moved = move_to_done(&inbox.join("a.csv"), &done).unwrap();

        assert_eq!(moved, done.join("a.2.csv"));
        assert_eq!(fs::read(done.join("a.csv")).unwrap(), b"first");
        assert_eq!(fs::read(done.join("a.1.csv")).unwrap(), b"second");
        assert_eq!(fs::read(&moved).unwrap(), b"third");
        assert!(!inbox.join("a.csv").exists());
    }

    #[test]
    fn move_creates_the_done_directory() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.csv"), b"x").unwrap();
        let done = dir.path().join("later/done");

        let moved = move_to_done(&dir.path().join("a.csv"), &done).unwrap();

        assert_eq!(moved, done.join("a.csv"));
        assert_eq!(fs::read(&moved).unwrap(), b"x");
    }

    #[test]
    fn move_after_crash_removes_old_name() {
        let dir = tempfile::tempdir().unwrap();
        let done = dir.path().join("done");
        fs::create_dir(&done).unwrap();
        fs::write(dir.path().join("a.csv"), b"x").unwrap();
        fs::hard_link(dir.path().join("a.csv"), done.join("a.csv")).unwrap();

        let moved = move_to_done(&dir.path().join("a.csv"), &done).unwrap();

        assert_eq!(moved, done.join("a.csv"));
        assert!(!dir.path().join("a.csv").exists());
        let names = fs::read_dir(&done).unwrap().count();
        assert_eq!(names, 1);
    }
}
