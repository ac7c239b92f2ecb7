//! The watcher's record of the files in its inbox: which ones are
//! complete, which wait to settle, and which stopped early or are kept.
//!
//! A file is complete when it was renamed into the inbox, or when its
//! [`Stamp`] (size, modification time and inode) has stayed the same for
//! the settle time. The inbox learns of files from events and from full
//! listings; each observation stats the file, and a changed stamp starts
//! the settle time over. A file that stopped early, or a completed one
//! that is kept, is not taken again until its stamp changes.

use std::collections::BTreeMap;
use std::fs::Metadata;
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use globset::GlobSet;
use tokio::time::Instant;

/// The parts of a file's metadata that change when it is written or
/// replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub len: u64,
    pub modified: Option<SystemTime>,
    pub inode: u64,
}

impl Stamp {
    /// Returns the stamp of a file's metadata.
    pub fn of(metadata: &Metadata) -> Stamp {
        Stamp {
            len: metadata.len(),
            modified: metadata.modified().ok(),
            inode: metadata.ino(),
        }
    }
}

/// The state of a tracked file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Waiting to settle, or ready to be taken.
    Waiting,
    /// Stopped early; taken again once its stamp changes.
    Stopped,
    /// Completed and kept in the inbox; taken again once its stamp
    /// changes.
    Kept,
}

#[derive(Clone, Debug)]
struct Tracked {
    stamp: Stamp,
    /// When `stamp` was first seen.
    since: Instant,
    /// Whether the file was renamed into the inbox with this stamp.
    renamed: bool,
    state: State,
}

/// The files of the inbox directory, by path.
pub struct Inbox {
    dir: PathBuf,
    ignore: GlobSet,
    settle_time: Duration,
    files: BTreeMap<PathBuf, Tracked>,
}

impl Inbox {
    /// Tracks the files directly in `dir` whose names match none of
    /// `ignore`.
    pub fn new(dir: &Path, ignore: GlobSet, settle_time: Duration) -> Inbox {
        Inbox {
            dir: dir.to_owned(),
            ignore,
            settle_time,
            files: BTreeMap::new(),
        }
    }

    /// Replaces the ignore patterns and the settle time. Tracked files
    /// that the new patterns ignore are dropped; files that only the old
    /// patterns ignored are found by the next [`Inbox::rescan`].
    pub fn set_rules(&mut self, ignore: GlobSet, settle_time: Duration) {
        self.ignore = ignore;
        self.settle_time = settle_time;
        let ignore = &self.ignore;
        self.files.retain(|path, _| !is_ignored(ignore, path));
    }

    /// Returns whether `path` is a file of the inbox that is not ignored.
    /// Files in subdirectories, such as the done directory, are not.
    pub fn accepts(&self, path: &Path) -> bool {
        path.parent() == Some(self.dir.as_path()) && !is_ignored(&self.ignore, path)
    }

    /// Stats `path` and records what it finds: `renamed` when an event
    /// reported that the file was renamed into the inbox.
    pub fn observe(&mut self, path: &Path, now: Instant, renamed: bool) {
        if !self.accepts(path) {
            return;
        }
        let stamp = match std::fs::metadata(path) {
            Ok(metadata) if metadata.is_file() => Some(Stamp::of(&metadata)),
            _ => None,
        };
        self.record(path, stamp, now, renamed);
    }

    /// Records the stamp of `path`, or its absence as `None`.
    pub fn record(&mut self, path: &Path, stamp: Option<Stamp>, now: Instant, renamed: bool) {
        let Some(stamp) = stamp else {
            self.files.remove(path);
            return;
        };
        if let Some(tracked) = self.files.get_mut(path) {
            if tracked.stamp == stamp {
                if renamed && tracked.state == State::Waiting {
                    tracked.renamed = true;
                }
                return;
            }
        }
        let tracked = Tracked {
            stamp,
            since: now,
            renamed,
            state: State::Waiting,
        };
        self.files.insert(path.to_owned(), tracked);
    }

    /// Lists the inbox, observes each file in it and drops the files that
    /// are gone.
    ///
    /// # Errors
    ///
    /// Fails when the directory cannot be listed.
    pub fn rescan(&mut self, now: Instant) -> io::Result<()> {
        let mut present = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if self.accepts(&path) {
                present.push(path);
            }
        }
        self.files.retain(|path, _| present.contains(path));
        for path in present {
            self.observe(&path, now, false);
        }
        Ok(())
    }

    /// Returns the complete file to take next: the oldest by modification
    /// time, then by name.
    pub fn next_ready(&self, now: Instant) -> Option<PathBuf> {
        self.files
            .iter()
            .filter(|(_, tracked)| self.is_ready(tracked, now))
            .min_by_key(|(path, tracked)| (tracked.stamp.modified, *path))
            .map(|(path, _)| path.clone())
    }

    /// Stats a file that [`Inbox::next_ready`] returned and returns its
    /// stamp when it is still complete. A file that changed since starts
    /// its settle time over; a file that is gone is forgotten.
    pub fn confirm(&mut self, path: &Path, now: Instant) -> Option<Stamp> {
        self.observe(path, now, false);
        let tracked = self.files.get(path)?;
        self.is_ready(tracked, now).then_some(tracked.stamp)
    }

    /// Returns when the next waiting file settles, if any does.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.files
            .values()
            .filter(|tracked| tracked.state == State::Waiting && !tracked.renamed)
            .map(|tracked| tracked.since + self.settle_time)
            .min()
    }

    /// Marks a file that stopped early, or a completed file that stays in
    /// the inbox, so that it is not taken again while `stamp` lasts.
    pub fn set_state(&mut self, path: &Path, stamp: Stamp, state: State, now: Instant) {
        let tracked = self.files.entry(path.to_owned()).or_insert(Tracked {
            stamp,
            since: now,
            renamed: false,
            state,
        });
        // A file that changed while it was read is taken again.
        if tracked.stamp == stamp {
            tracked.state = state;
        }
    }

    /// Forgets a file, as once it is moved or deleted.
    pub fn forget(&mut self, path: &Path) {
        self.files.remove(path);
    }

    /// Returns how many tracked files are in `state`.
    pub fn count(&self, state: State) -> u64 {
        let matching = self.files.values().filter(|tracked| tracked.state == state);
        matching.count() as u64
    }

    fn is_ready(&self, tracked: &Tracked, now: Instant) -> bool {
        tracked.state == State::Waiting
            && (tracked.renamed || now.duration_since(tracked.since) >= self.settle_time)
    }
}

fn is_ignored(ignore: &GlobSet, path: &Path) -> bool {
    match path.file_name() {
        Some(name) => ignore.is_match(Path::new(name)),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use globset::{Glob, GlobSetBuilder};

    use super::*;

    const SETTLE: Duration = Duration::from_secs(5);

    fn globs(patterns: &[&str]) -> GlobSet {
        let mut builder = GlobSetBuilder::new();
        for pattern in patterns {
            builder.add(Glob::new(pattern).unwrap());
        }
        builder.build().unwrap()
    }

    fn stamp(len: u64, modified_secs: u64) -> Option<Stamp> {
        Some(Stamp {
            len,
            modified: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(modified_secs)),
            inode: 1,
        })
    }

    fn inbox() -> Inbox {
        Inbox::new(Path::new("/in"), globs(&[".*", "*.tmp"]), SETTLE)
    }

    #[test]
    fn file_ready_after_settle_time() {
        let mut inbox = inbox();
        let start = Instant::now();
        let path = Path::new("/in/a.csv");

        inbox.record(path, stamp(10, 1), start, false);
        inbox.record(path, stamp(20, 2), start + Duration::from_secs(3), false);

        assert_eq!(inbox.next_ready(start + Duration::from_secs(7)), None);
        assert_eq!(inbox.next_deadline(), Some(start + Duration::from_secs(8)));
        let ready = inbox.next_ready(start + Duration::from_secs(8));
        assert_eq!(ready.as_deref(), Some(path));
    }

    #[test]
    fn renamed_file_is_ready_at_once() {
        let mut inbox = inbox();
        let start = Instant::now();
        let path = Path::new("/in/a.csv");

        inbox.record(path, stamp(10, 1), start, true);

        assert_eq!(inbox.next_ready(start).as_deref(), Some(path));
        assert_eq!(inbox.next_deadline(), None);
    }

    #[test]
    fn change_after_a_rename_needs_settling() {
        let mut inbox = inbox();
        let start = Instant::now();
        let path = Path::new("/in/a.csv");

        inbox.record(path, stamp(10, 1), start, true);
        inbox.record(path, stamp(11, 2), start, false);

        assert_eq!(inbox.next_ready(start), None);
    }

    #[test]
    fn oldest_modification_time_goes_first_then_name() {
        let mut inbox = inbox();
        let start = Instant::now();
        inbox.record(Path::new("/in/c.csv"), stamp(1, 5), start, true);
        inbox.record(Path::new("/in/b.csv"), stamp(1, 9), start, true);
        inbox.record(Path::new("/in/a.csv"), stamp(1, 9), start, true);

        let mut order = Vec::new();
        while let Some(path) = inbox.next_ready(start) {
            inbox.forget(&path);
            order.push(path);
        }

        assert_eq!(
            order,
            ["/in/c.csv", "/in/a.csv", "/in/b.csv"].map(PathBuf::from)
        );
    }

    #[test]
    fn stopped_file_waits_for_a_change() {
        let mut inbox = inbox();
        let start = Instant::now();
        let path = Path::new("/in/a.csv");
        inbox.record(path, stamp(10, 1), start, true);

        inbox.set_state(path, stamp(10, 1).unwrap(), State::Stopped, start);
        inbox.record(path, stamp(10, 1), start, true);

        assert_eq!(inbox.next_ready(start + SETTLE), None);
        assert_eq!(inbox.count(State::Stopped), 1);
        inbox.record(path, stamp(12, 3), start, false);
        assert_eq!(inbox.next_ready(start + SETTLE).as_deref(), Some(path));
        assert_eq!(inbox.count(State::Waiting), 1);
    }

    #[test]
    fn file_changed_while_read_is_taken_again() {
        let mut inbox = inbox();
        let start = Instant::now();
        let path = Path::new("/in/a.csv");
        inbox.record(path, stamp(10, 1), start, true);
        inbox.record(path, stamp(30, 4), start, false);

        inbox.set_state(path, stamp(10, 1).unwrap(), State::Kept, start);

        assert_eq!(inbox.next_ready(start + SETTLE).as_deref(), Some(path));
    }

    #[test]
    fn ignored_names_and_subdirectories_are_not_accepted() {
        let inbox = inbox();
        assert!(inbox.accepts(Path::new("/in/a.csv")));
        assert!(!inbox.accepts(Path::new("/in/.a.csv")));
        assert!(!inbox.accepts(Path::new("/in/a.csv.tmp")));
        assert!(!inbox.accepts(Path::new("/in/done/a.csv")));
        assert!(!inbox.accepts(Path::new("/elsewhere/a.csv")));
    }

    #[test]
    fn rescan_finds_files_and_forgets_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let dir = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::write(dir.join("a.csv"), b"x").unwrap();
        std::fs::write(dir.join(".hidden"), b"x").unwrap();
        std::fs::create_dir(dir.join("done")).unwrap();
        std::fs::write(dir.join("done/b.csv"), b"x").unwrap();
        let mut inbox = Inbox::new(&dir, globs(&[".*"]), SETTLE);
        let start = Instant::now();
        inbox.record(&dir.join("gone.csv"), stamp(1, 1), start, true);

        inbox.rescan(start).unwrap();

        assert_eq!(inbox.count(State::Waiting), 1);
        assert_eq!(inbox.next_ready(start), None);
        let ready = inbox.next_ready(start + SETTLE);
        assert_eq!(ready, Some(dir.join("a.csv")));
        assert!(inbox.confirm(&dir.join("a.csv"), start + SETTLE).is_some());
        std::fs::write(dir.join("a.csv"), b"longer").unwrap();
        assert!(inbox.confirm(&dir.join("a.csv"), start + SETTLE).is_none());
    }

    #[test]
    fn new_rules_drop_files_they_ignore() {
        let mut inbox = inbox();
        let start = Instant::now();
        inbox.record(Path::new("/in/a.csv"), stamp(1, 1), start, true);
        inbox.record(Path::new("/in/b.json"), stamp(1, 1), start, true);

        inbox.set_rules(globs(&["*.json"]), SETTLE);

        assert_eq!(inbox.count(State::Waiting), 1);
        assert!(inbox.accepts(Path::new("/in/.a.csv")));
    }
}
