//! The progress ledger: how far each input file is handled, so that a
//! rerun after a crash or a stop resumes instead of starting over.
//!
//! One JSON file per input path lives in `<state dir>/ledger/`. It records
//! the file's content fingerprint and the highest record number below
//! which every record is delivered or durably in a dead-letter or rejected
//! file. Each update is written to a temporary file, synced, and renamed
//! over the old one, so a crash leaves either the old entry or the new
//! one, never a torn mix. A missing ledger is a normal first run.
//!
//! The mark never passes a record that is neither delivered nor flushed to
//! a dead-letter file, because records only count as handled once the
//! dead-letter sink has synced ([`Watermark`] is fed after each sync).

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Version of the ledger entry format.
pub const LEDGER_VERSION: u32 = 1;

/// The ledger's record of one input file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Ledger format version, [`LEDGER_VERSION`].
    pub version: u32,
    /// The input path as given on the command line.
    pub path: String,
    /// SHA-256 of the file's contents when the entry was written.
    pub fingerprint: String,
    /// Every record numbered up to and including this one is handled.
    pub handled_through: u64,
    /// The highest record number sent at least once; records between
    /// `handled_through` and this one may have reached the API already.
    pub dispatched_through: u64,
    /// Whether the whole file was read and every record handled.
    pub completed: bool,
    /// When the entry was written, in RFC 3339 UTC.
    pub updated: String,
}

/// The ledger directory.
#[derive(Clone, Debug)]
pub struct Ledger {
    dir: PathBuf,
}

impl Ledger {
    /// Uses `state_dir/ledger`, created on the first store.
    pub fn new(state_dir: &Path) -> Ledger {
        Ledger {
            dir: state_dir.join("ledger"),
        }
    }

    /// Reads the entry for `input`, if there is one.
    ///
    /// # Errors
    ///
    /// Fails when the entry exists but cannot be read or parsed; the
    /// message names the ledger file.
    pub fn load(&self, input: &Path) -> io::Result<Option<LedgerEntry>> {
        let path = self.entry_path(input);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(named(&path, err)),
        };
        serde_json::from_str(&text).map(Some).map_err(|err| {
            let message = format!(
                "invalid ledger entry {}: {err}; delete it to start the file over",
                path.display()
            );
            io::Error::new(io::ErrorKind::InvalidData, message)
        })
    }

    /// Writes the entry for its input atomically.
    ///
    /// # Errors
    ///
    /// Fails when the directory or file cannot be written or synced.
    pub fn store(&self, input: &Path, entry: &LedgerEntry) -> io::Result<()> {
        fs::create_dir_all(&self.dir).map_err(|err| named(&self.dir, err))?;
        let path = self.entry_path(input);
        let temporary = path.with_extension("json.tmp");
        let mut file = File::create(&temporary).map_err(|err| named(&temporary, err))?;
        let mut bytes = serde_json::to_vec_pretty(entry).map_err(io::Error::other)?;
        bytes.push(b'\n');
        file.write_all(&bytes)?;
        file.sync_all()?;
        fs::rename(&temporary, &path).map_err(|err| named(&path, err))?;
        File::open(&self.dir)?.sync_all()
    }

    /// Removes the entry for `input`, if any.
    ///
    /// # Errors
    ///
    /// Fails when the entry exists but cannot be removed.
    pub fn remove(&self, input: &Path) -> io::Result<()> {
        match fs::remove_file(self.entry_path(input)) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }

    fn entry_path(&self, input: &Path) -> PathBuf {
        // Key entries by the absolute path, so that `a.csv` and `./a.csv`
        // share one.
        let absolute = fs::canonicalize(input).unwrap_or_else(|_| input.to_owned());
        let digest = Sha256::digest(absolute.to_string_lossy().as_bytes());
        let name: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{name}.json"))
    }
}

fn named(path: &Path, err: io::Error) -> io::Error {
    io::Error::new(err.kind(), format!("{}: {err}", path.display()))
}

/// Tracks the highest record number below which every record is handled,
/// while records finish out of order.
#[derive(Debug, Default)]
pub struct Watermark {
    through: u64,
    // Record numbers in reading order, which is ascending, from the first
    // unhandled one on, each with whether it is handled.
    open: VecDeque<(u64, bool)>,
}

impl Watermark {
    /// Starts after `through`, whose records are all handled already.
    pub fn starting_at(through: u64) -> Watermark {
        Watermark {
            through,
            ..Watermark::default()
        }
    }

    /// Notes that `record` was read; records are read in order.
    pub fn read(&mut self, record: u64) {
        self.open.push_back((record, false));
    }

    /// Notes that `record` is handled and advances the mark if it can.
    /// A record that was not read is ignored.
    pub fn handled(&mut self, record: u64) {
        if let Ok(index) = self
            .open
            .binary_search_by_key(&record, |(number, _)| *number)
        {
            self.open[index].1 = true;
        }
        while let Some(&(front, true)) = self.open.front() {
            self.through = self.through.max(front);
            self.open.pop_front();
        }
    }

    /// Returns the highest record number below which all are handled.
    pub fn through(&self) -> u64 {
        self.through
    }

    /// Returns whether every record read so far is handled.
    pub fn is_caught_up(&self) -> bool {
        self.open.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(through: u64) -> LedgerEntry {
        LedgerEntry {
            version: LEDGER_VERSION,
            path: "a.csv".to_owned(),
            fingerprint: "f".repeat(64),
            handled_through: through,
            dispatched_through: through + 3,
            completed: false,
            updated: "2026-12-04T18:30:00Z".to_owned(),
        }
    }

    #[test]
    fn missing_entry_is_a_first_run() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::new(dir.path());
        assert_eq!(ledger.load(Path::new("a.csv")).unwrap(), None);
    }

    #[test]
    fn stored_entry_loads_back_and_replaces_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("a.csv");
        fs::write(&input, b"x").unwrap();
        let ledger = Ledger::new(&dir.path().join("state"));

        ledger.store(&input, &entry(5)).unwrap();
        ledger.store(&input, &entry(9)).unwrap();

        assert_eq!(ledger.load(&input).unwrap(), Some(entry(9)));
        let files = fs::read_dir(dir.path().join("state/ledger"))
            .unwrap()
            .count();
        assert_eq!(files, 1, "temporary files must not remain");
    }

    #[test]
    fn relative_and_absolute_paths_share_an_entry() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("a.csv");
        fs::write(&input, b"x").unwrap();
        let ledger = Ledger::new(&dir.path().join("state"));
        ledger.store(&input, &entry(2)).unwrap();
        let dotted = dir.path().join(".").join("a.csv");
        assert_eq!(ledger.load(&dotted).unwrap(), Some(entry(2)));
    }

    #[test]
    fn corrupt_entry_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("a.csv");
        fs::write(&input, b"x").unwrap();
        let ledger = Ledger::new(dir.path());
        ledger.store(&input, &entry(1)).unwrap();
        let stored = fs::read_dir(dir.path().join("ledger"))
            .unwrap()
            .next()
            .unwrap();
        fs::write(stored.unwrap().path(), b"{not json").unwrap();

        let err = ledger.load(&input).unwrap_err().to_string();

        assert!(err.contains("invalid ledger entry"), "{err}");
        assert!(err.contains("delete it"), "{err}");
    }

    #[test]
    fn watermark_waits_for_the_oldest_unhandled_record() {
        let mut mark = Watermark::starting_at(10);
        for record in 11..=15 {
            mark.read(record);
        }
        mark.handled(12);
        mark.handled(13);
        assert_eq!(mark.through(), 10);
        mark.handled(11);
        assert_eq!(mark.through(), 13);
        mark.handled(15);
        assert_eq!(mark.through(), 13);
        assert!(!mark.is_caught_up());
        mark.handled(14);
        assert_eq!(mark.through(), 15);
        assert!(mark.is_caught_up());
    }

    #[test]
    fn watermark_tolerates_gaps_in_numbering() {
        let mut mark = Watermark::default();
        mark.read(1);
        mark.read(5);
        mark.handled(5);
        assert_eq!(mark.through(), 0);
        mark.handled(1);
        assert_eq!(mark.through(), 5);
    }
}
