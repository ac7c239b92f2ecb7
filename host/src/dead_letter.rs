//! Dead-letter and rejected files.
//!
//! Records that ran out of retries go to a dead-letter file; records that
//! the API rejected with a permanent fault, malformed records and records
//! the plugin could not map go to a rejected file. Both are valid input
//! files for the plugin that produced them: the plugin's preamble, then
//! each record's raw bytes followed by the plugin's record separator.
//!
//! Beside each data file, a JSON Lines sidecar (`<data file>.meta.jsonl`)
//! holds one [`SidecarEntry`] per record, in the same order, with the
//! record's original source and position, so reprocessing keeps them.
//!
//! File names are `<stem>.<run id>.dead.<ext>` and
//! `<stem>.<run id>.rejected.<ext>`. The run id starts with a UTC
//! timestamp, so sorting names sorts files oldest first.
//!
//! A record counts as handled only after [`DeadLetterSink::sync`] has
//! flushed both files to disk. The sync writes and flushes the data file
//! first and only then appends the sidecar lines, so every sidecar line on
//! disk has its record on disk too. A record at the end of a data file
//! without a sidecar line was cut off by a crash before it counted as
//! handled; reprocessing skips it, and the rerun of its source sends it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Version of the sidecar line format.
pub const SIDECAR_VERSION: u32 = 1;

const SIDECAR_SUFFIX: &str = ".meta.jsonl";

/// The kind of file a record goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Ran out of retries on transient faults; reprocess once the API is
    /// back.
    DeadLetter,
    /// Permanent fault, malformed record or mapping error; needs a fix.
    Rejected,
}

impl Kind {
    fn infix(self) -> &'static str {
        match self {
            Kind::DeadLetter => "dead",
            Kind::Rejected => "rejected",
        }
    }
}

/// One sidecar line: where a record came from and why it is here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SidecarEntry {
    /// Sidecar format version, [`SIDECAR_VERSION`].
    pub version: u32,
    pub kind: Kind,
    /// The original input file, as given on the command line.
    pub source: String,
    /// 1-based record number in the original file.
    pub record: u64,
    /// 1-based line number in the original file.
    pub line: u64,
    /// The record's key, empty when it has none.
    pub key: String,
    /// HTTP attempts made, counting the first; 0 when nothing was sent.
    pub attempts: u32,
    /// The last HTTP status, when the server responded.
    pub status: Option<u16>,
    /// The error of the last attempt, or the reason nothing was sent.
    pub error: String,
    /// When the record was written here, in RFC 3339 UTC.
    pub time: String,
    /// The idempotency key of the record's requests, reused when the
    /// record is reprocessed.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Fingerprint of the file being read when the record was written
    /// here: the source on a first run, a dead-letter file on reprocessing.
    #[serde(default)]
    pub input_fingerprint: Option<String>,
    /// The record's number in that file.
    #[serde(default)]
    pub input_record: Option<u64>,
    /// That file's [`input_name`]. The fingerprint alone does not identify
    /// it: when every record of a dead-letter file fails again, the new
    /// file has the same bytes as the one it replaces.
    #[serde(default)]
    pub input_file: Option<String>,
}

struct OpenFile {
    data: File,
    sidecar: File,
    data_path: PathBuf,
    records: u64,
    // Sidecar lines of records whose data is written but not yet synced.
    pending_lines: Vec<u8>,
}

/// The dead-letter and rejected files of one input file, created on the
/// first record that needs them.
pub struct DeadLetterSink {
    dir: PathBuf,
    stem: String,
    extension: String,
    run_id: String,
    separator: Vec<u8>,
    preamble: Vec<u8>,
    dead: Option<OpenFile>,
    rejected: Option<OpenFile>,
}

impl DeadLetterSink {
    /// Prepares a sink in `dir` for records of a file named `stem.extension`.
    pub fn new(dir: &Path, stem: &str, extension: &str, run_id: &str, separator: &[u8]) -> Self {
        DeadLetterSink {
            dir: dir.to_owned(),
            stem: stem.to_owned(),
            extension: extension.to_owned(),
            run_id: run_id.to_owned(),
            separator: separator.to_vec(),
            preamble: Vec::new(),
            dead: None,
            rejected: None,
        }
    }

    /// Sets the bytes each new file starts with. Files already created keep
    /// theirs.
    pub fn set_preamble(&mut self, preamble: Vec<u8>) {
        self.preamble = preamble;
    }

    /// Appends one record and its sidecar line; [`sync`](Self::sync) makes
    /// them durable.
    ///
    /// # Errors
    ///
    /// Fails when a file cannot be created or written.
    pub fn write(&mut self, raw: &[u8], entry: &SidecarEntry) -> io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(io::Error::other)?;
        line.push(b'\n');
        let separator = self.separator.clone();
        let file = self.open(entry.kind)?;
        file.data.write_all(raw)?;
        file.data.write_all(&separator)?;
        file.pending_lines.extend_from_slice(&line);
        file.records += 1;
        Ok(())
    }

    /// Flushes every record written since the last call to disk.
    ///
    /// # Errors
    ///
    /// Fails when the disk does not confirm the write.
    pub fn sync(&mut self) -> io::Result<()> {
        for file in [&mut self.dead, &mut self.rejected].into_iter().flatten() {
            if !file.pending_lines.is_empty() {
                file.data.sync_data()?;
                file.sidecar.write_all(&file.pending_lines)?;
                file.sidecar.sync_data()?;
                file.pending_lines.clear();
            }
        }
        Ok(())
    }

    /// Returns the data files created so far, with their record counts.
    pub fn files(&self) -> Vec<(Kind, PathBuf, u64)> {
        let mut files = Vec::new();
        if let Some(file) = &self.dead {
            files.push((Kind::DeadLetter, file.data_path.clone(), file.records));
        }
        if let Some(file) = &self.rejected {
            files.push((Kind::Rejected, file.data_path.clone(), file.records));
        }
        files
    }

    fn open(&mut self, kind: Kind) -> io::Result<&mut OpenFile> {
        let slot = match kind {
            Kind::DeadLetter => &mut self.dead,
            Kind::Rejected => &mut self.rejected,
        };
        if slot.is_none() {
            fs::create_dir_all(&self.dir)?;
            let name = format!(
                "{}.{}.{}.{}",
                self.stem,
                self.run_id,
                kind.infix(),
                self.extension
            );
            let data_path = self.dir.join(&name);
            let sidecar_path = sidecar_path(&data_path);
            let mut data = create_new(&data_path)?;
            let sidecar = create_new(&sidecar_path)?;
            data.write_all(&self.preamble)?;
            // Make the new directory entries themselves durable.
            File::open(&self.dir)?.sync_all()?;
            *slot = Some(OpenFile {
                data,
                sidecar,
                data_path,
                records: 0,
                pending_lines: Vec::new(),
            });
        }
        Ok(slot.as_mut().expect("slot was filled above"))
    }
}

fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|err| io::Error::new(err.kind(), format!("{}: {err}", path.display())))
}

/// Returns the sidecar path of a data file.
pub fn sidecar_path(data_path: &Path) -> PathBuf {
    let mut name = data_path.as_os_str().to_owned();
    name.push(SIDECAR_SUFFIX);
    PathBuf::from(name)
}

/// The parts of a dead-letter or rejected file name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetterName {
    /// The stem of the original input file.
    pub stem: String,
    pub run_id: String,
    pub kind: Kind,
    pub extension: String,
}

/// Splits `<stem>.<run id>.<dead|rejected>.<ext>`; `None` for other names,
/// sidecars included.
pub fn parse_name(path: &Path) -> Option<DeadLetterName> {
    let name = path.file_name()?.to_str()?;
    if name.ends_with(SIDECAR_SUFFIX) {
        return None;
    }
    let mut parts = name.rsplitn(4, '.');
    let extension = parts.next()?;
    let kind = match parts.next()? {
        "dead" => Kind::DeadLetter,
        "rejected" => Kind::Rejected,
        _ => return None,
    };
    let run_id = parts.next()?;
    let stem = parts.next()?;
    if stem.is_empty() || run_id.is_empty() {
        return None;
    }
    Some(DeadLetterName {
        stem: stem.to_owned(),
        run_id: run_id.to_owned(),
        kind,
        extension: extension.to_owned(),
    })
}

/// Lists the dead-letter files in `dir`, oldest first, with rejected files
/// too when `include_rejected` is set.
///
/// # Errors
///
/// Fails when the directory cannot be read.
pub fn list_dir(dir: &Path, include_rejected: bool) -> io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = parse_name(&path) else {
            continue;
        };
        if name.kind == Kind::DeadLetter || include_rejected {
            found.push((name.run_id, path));
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, path)| path).collect())
}

/// The entries of a sidecar file.
#[derive(Debug, Default)]
pub struct Sidecar {
    /// Whether the sidecar file exists. The sink creates it with its data
    /// file, before writing any record, so only a data file made by hand
    /// has none.
    pub found: bool,
    pub entries: Vec<SidecarEntry>,
    /// A last line that was cut short by a crash and ignored.
    pub torn_tail: bool,
}

/// Reads a sidecar. A missing file gives no entries, with `found` false.
/// A last line without its newline, left by a crash mid-write, is ignored
/// and reported through `torn_tail`.
///
/// # Errors
///
/// Fails when the file cannot be read or a complete line is not a valid
/// entry; the message names the file and the line.
pub fn read_sidecar(path: &Path) -> io::Result<Sidecar> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Sidecar::default()),
        Err(err) => return Err(err),
    };
    let mut sidecar = Sidecar {
        found: true,
        ..Sidecar::default()
    };
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    let mut number = 0;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        number += 1;
        if !line.ends_with('\n') {
            sidecar.torn_tail = true;
            break;
        }
        let entry = serde_json::from_str(&line).map_err(|err| {
            let message = format!("{}:{number}: invalid sidecar entry: {err}", path.display());
            io::Error::new(io::ErrorKind::InvalidData, message)
        })?;
        sidecar.entries.push(entry);
    }
    Ok(sidecar)
}

/// The records of one input file that earlier runs already wrote to
/// dead-letter and rejected files, found through the sidecars.
#[derive(Debug, Default)]
pub struct Written {
    /// Record numbers of the input that are in some dead-letter or
    /// rejected file.
    pub records: std::collections::HashSet<u64>,
    /// For each key, the lowest record number that went to a dead-letter
    /// or rejected file, and which of the two.
    pub held_keys: std::collections::HashMap<String, (u64, Kind)>,
    /// For each key, the highest record number that went to a dead-letter
    /// or rejected file.
    pub latest: std::collections::HashMap<String, u64>,
}

/// One record waiting in a dead-letter or rejected file.
#[derive(Clone, Debug)]
pub struct PendingRecord {
    /// The data file the record is in.
    pub file: PathBuf,
    /// The file's run id, which orders files oldest first.
    pub run_id: String,
    pub entry: SidecarEntry,
}

/// Reads the sidecars of every dead-letter and rejected file in `dir`. A
/// missing directory has none.
///
/// # Errors
///
/// Fails when the directory or a sidecar cannot be read.
pub fn pending(dir: &Path) -> io::Result<Vec<PendingRecord>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut pending = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let Some(name) = parse_name(&path) else {
            continue;
        };
        for line in read_sidecar(&sidecar_path(&path))?.entries {
            pending.push(PendingRecord {
                file: path.clone(),
                run_id: name.run_id.clone(),
                entry: line,
            });
        }
    }
    Ok(pending)
}

impl PendingRecord {
    /// Returns whether the record was written while reading the input
    /// named `input` (see [`input_name`]) with content `fingerprint`.
    pub fn written_while_reading(&self, input: &str, fingerprint: &str) -> bool {
        if self.entry.input_fingerprint.as_deref() != Some(fingerprint) {
            return false;
        }
        match &self.entry.input_file {
            Some(name) => name == input,
            // An entry from before input names were recorded. A file's own
            // entries describe where its records came from, so they never
            // describe the output of reading that file.
            None => self.file.file_name().and_then(|name| name.to_str()) != Some(input),
        }
    }
}

/// Names an input file for sidecar entries. A dead-letter file is named
/// by its file name, which contains a unique run id and stays valid when
/// the directory moves. A source file is named by its absolute path, as
/// in the ledger.
pub fn input_name(path: &Path, dead_letter: bool) -> String {
    if dead_letter {
        if let Some(name) = path.file_name() {
            return name.to_string_lossy().into_owned();
        }
    }
    fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_owned())
        .to_string_lossy()
        .into_owned()
}

/// Finds the records in `pending` that were written while reading the
/// input named `input` with content `fingerprint`.
pub fn written_from(pending: &[PendingRecord], input: &str, fingerprint: &str) -> Written {
    let mut written = Written::default();
    {
        for pending in pending {
            if !pending.written_while_reading(input, fingerprint) {
                continue;
            }
            let line = pending.entry.clone();
            let Some(record) = line.input_record else {
                continue;
            };
            written.records.insert(record);
            if !line.key.is_empty() {
                let latest = written.latest.entry(line.key.clone()).or_insert(record);
                *latest = (*latest).max(record);
                let held = written
                    .held_keys
                    .entry(line.key)
                    .or_insert((record, line.kind));
                if record < held.0 {
                    *held = (record, line.kind);
                }
            }
        }
    }
    written
}

/// Returns a run id: the UTC time to the millisecond and the process id,
/// such as `20261204T183000123Z-4242`.
pub fn new_run_id() -> String {
    run_id_at(unique_millis())
}

/// Returns the run id of [`new_run_id`] for `millis` since the Unix epoch.
pub fn run_id_at(millis: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(millis);
    let time = humantime::format_rfc3339_millis(time).to_string();
    let compact: String = time
        .chars()
        .filter(|c| !matches!(c, '-' | ':' | '.'))
        .collect();
    format!("{compact}-{}", std::process::id())
}

/// Returns the milliseconds since the Unix epoch, one more than the last
/// call's when the clock has not moved on. Run ids made from them are
/// unique within the process and sort in the order they were made, so
/// the files of one `sluice watch` process never clash.
pub fn unique_millis() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64);
    let next = |last: u64| now.max(last + 1);
    let previous = LAST
        .fetch_update(Relaxed, Relaxed, |last| Some(next(last)))
        .expect("the update always returns a value");
    next(previous)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: Kind, record: u64) -> SidecarEntry {
        SidecarEntry {
            version: SIDECAR_VERSION,
            kind,
            source: "data/a.csv".to_owned(),
            record,
            line: record + 1,
            key: format!("k{record}"),
            attempts: 3,
            status: Some(503),
            error: "HTTP 503 Service Unavailable".to_owned(),
            time: "2026-12-04T18:30:00Z".to_owned(),
            idempotency_key: Some(format!("fp-{record}")),
            input_fingerprint: Some("fp".to_owned()),
            input_record: Some(record),
            input_file: Some("/data/a.csv".to_owned()),
        }
    }

    #[test]
    fn sink_writes_preamble_records_and_sidecar() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = DeadLetterSink::new(dir.path(), "a", "csv", "R1", b"\n");
        sink.set_preamble(b"id,name\n".to_vec());

        sink.write(b"1,x", &entry(Kind::DeadLetter, 1)).unwrap();
        sink.write(b"2,\"y\nz\"", &entry(Kind::DeadLetter, 2))
            .unwrap();
        sink.write(b"3,bad", &entry(Kind::Rejected, 3)).unwrap();
        sink.sync().unwrap();

        let dead = dir.path().join("a.R1.dead.csv");
        let rejected = dir.path().join("a.R1.rejected.csv");
        assert_eq!(fs::read(&dead).unwrap(), b"id,name\n1,x\n2,\"y\nz\"\n");
        assert_eq!(fs::read(&rejected).unwrap(), b"id,name\n3,bad\n");
        let sidecar = read_sidecar(&sidecar_path(&dead)).unwrap();
        assert_eq!(
            sidecar.entries,
            [entry(Kind::DeadLetter, 1), entry(Kind::DeadLetter, 2)]
        );
        assert!(!sidecar.torn_tail);
        let files = sink.files();
        assert_eq!(
            files,
            [(Kind::DeadLetter, dead, 2), (Kind::Rejected, rejected, 1)]
        );
    }

    #[test]
    fn sidecar_lines_wait_for_sync() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = DeadLetterSink::new(dir.path(), "a", "csv", "R1", b"\n");
        let sidecar = sidecar_path(&dir.path().join("a.R1.dead.csv"));
        assert!(!read_sidecar(&sidecar).unwrap().found);
        sink.write(b"1,x", &entry(Kind::DeadLetter, 1)).unwrap();
        let unsynced = read_sidecar(&sidecar).unwrap();
        assert!(unsynced.found);
        assert_eq!(unsynced.entries.len(), 0);
        sink.sync().unwrap();
        assert_eq!(read_sidecar(&sidecar).unwrap().entries.len(), 1);
    }

    #[test]
    fn written_from_finds_records_of_one_input() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = DeadLetterSink::new(dir.path(), "a", "csv", "R1", b"\n");
        sink.write(b"5", &entry(Kind::DeadLetter, 5)).unwrap();
        sink.write(b"3", &entry(Kind::DeadLetter, 3)).unwrap();
        sink.write(b"4", &entry(Kind::Rejected, 4)).unwrap();
        let mut other = entry(Kind::DeadLetter, 9);
        other.input_fingerprint = Some("other".to_owned());
        sink.write(b"9", &other).unwrap();
        let mut renamed = entry(Kind::DeadLetter, 8);
        renamed.input_file = Some("/data/copy-of-a.csv".to_owned());
        sink.write(b"8", &renamed).unwrap();
        sink.sync().unwrap();

        let written = written_from(&pending(dir.path()).unwrap(), "/data/a.csv", "fp");

        let mut records: Vec<u64> = written.records.iter().copied().collect();
        records.sort();
        assert_eq!(records, [3, 4, 5]);
        assert_eq!(written.held_keys.get("k3"), Some(&(3, Kind::DeadLetter)));
        assert_eq!(written.held_keys.get("k5"), Some(&(5, Kind::DeadLetter)));
        assert_eq!(written.held_keys.get("k4"), Some(&(4, Kind::Rejected)));
        assert_eq!(written.latest.get("k5"), Some(&5));
    }

    #[test]
    fn unnamed_entries_skip_their_own_file() {
        let mut legacy = entry(Kind::DeadLetter, 1);
        legacy.input_file = None;
        let record = |file: &str| PendingRecord {
            file: PathBuf::from("dead-letters").join(file),
            run_id: "R1".to_owned(),
            entry: legacy.clone(),
        };
        assert!(!record("a.R1.dead.csv").written_while_reading("a.R1.dead.csv", "fp"));
        assert!(record("a.R1~x.dead.csv").written_while_reading("a.R1.dead.csv", "fp"));
        assert!(!record("a.R1~x.dead.csv").written_while_reading("a.R1.dead.csv", "other"));
    }

    #[test]
    fn missing_directory_has_nothing_pending() {
        let pending = pending(Path::new("/nonexistent/dead-letters")).unwrap();
        assert!(pending.is_empty());
    }

    #[test]
    fn sink_creates_nothing_without_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = DeadLetterSink::new(dir.path(), "a", "csv", "R1", b"\n");
        sink.sync().unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn sink_never_overwrites_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.R1.dead.csv"), b"old").unwrap();
        let mut sink = DeadLetterSink::new(dir.path(), "a", "csv", "R1", b"\n");
        assert!(sink.write(b"1", &entry(Kind::DeadLetter, 1)).is_err());
        assert_eq!(fs::read(dir.path().join("a.R1.dead.csv")).unwrap(), b"old");
    }

    #[test]
    fn torn_sidecar_tail_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.meta.jsonl");
        let mut text = serde_json::to_string(&entry(Kind::DeadLetter, 1)).unwrap();
        text.push('\n');
        text.push_str("{\"version\":1,\"kind\":\"dea");
        fs::write(&path, text).unwrap();

        let sidecar = read_sidecar(&path).unwrap();

        assert_eq!(sidecar.entries.len(), 1);
        assert!(sidecar.torn_tail);
    }

    #[test]
    fn corrupt_sidecar_line_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.meta.jsonl");
        fs::write(&path, "not json\n").unwrap();
        let err = read_sidecar(&path).unwrap_err().to_string();
        assert!(err.contains("x.meta.jsonl:1:"), "{err}");
    }

    #[test]
    fn names_round_trip() {
        let parsed = parse_name(Path::new("dl/my.data.20261204T183000Z-1.dead.csv")).unwrap();
        assert_eq!(parsed.stem, "my.data");
        assert_eq!(parsed.run_id, "20261204T183000Z-1");
        assert_eq!(parsed.kind, Kind::DeadLetter);
        assert_eq!(parsed.extension, "csv");
        assert!(parse_name(Path::new("a.R.dead.csv.meta.jsonl")).is_none());
        assert!(parse_name(Path::new("airports.csv")).is_none());
        let rejected = parse_name(Path::new("a.R.rejected.csv")).unwrap();
        assert_eq!(rejected.kind, Kind::Rejected);
    }

    #[test]
    fn listing_sorts_oldest_first_and_filters_rejected() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "b.20261204T120000Z-2.dead.csv",
            "a.20261204T110000Z-1.dead.csv",
            "a.20261204T110000Z-1.dead.csv.meta.jsonl",
            "a.20261204T110000Z-1.rejected.csv",
            "notes.txt",
        ] {
            fs::write(dir.path().join(name), b"").unwrap();
        }
        let names = |paths: Vec<PathBuf>| -> Vec<String> {
            let names = paths
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy());
            names.map(|n| n.into_owned()).collect()
        };

        let dead = names(list_dir(dir.path(), false).unwrap());
        let all = names(list_dir(dir.path(), true).unwrap());

        assert_eq!(
            dead,
            [
                "a.20261204T110000Z-1.dead.csv",
                "b.20261204T120000Z-2.dead.csv"
            ]
        );
        assert_eq!(all.len(), 3);
    }

    #[test]
    fn run_id_is_sortable_utc() {
        let id = new_run_id();
        assert!(id.len() > 17, "{id}");
        assert_eq!(&id[8..9], "T");
        assert_eq!(&id[18..19], "Z");
    }

    #[test]
    fn run_ids_are_unique_and_ordered() {
        let ids: Vec<String> = (0..50).map(|_| new_run_id()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, ids);
    }
}
