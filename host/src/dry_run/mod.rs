//! `sluice run --dry-run`: parses and maps input files through the plugin
//! exactly as a run does, and shows the requests instead of sending them.
//!
//! Each file goes through the same reader as a real run, with the same
//! plugin configuration, endpoint and configured headers, and each request
//! gets the idempotency key header that a run would add. Nothing is sent,
//! and nothing is written besides the output: no ledger, no dead-letter or
//! rejected files, no directory locks. The ledger is only read, to say
//! whether a run would skip or resume a file.
//!
//! The first records of each file are shown (all of them with a limit of
//! 0), and every record is counted for the summary.
//!
//! NOTE: a dry run shows each mappable record's request even when a run
//! would not send it: records before a resume point, and records whose
//! key waits in an older dead-letter file, which a run writes after it
//! unsent. The ledger note in the summary names the resume point.

mod render;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use reqwest::header::HeaderValue;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

pub use self::render::{
    mask_headers, write_human, write_json, Entry, ErrorKind, MaskedRequest, Outcome, MASK,
    SHOWN_HEADERS,
};
use crate::config::{KeySource, Settings};
use crate::delivery::breaker::Breaker;
use crate::identity;
use crate::ledger::Ledger;
use crate::pipeline::reader::{self, Item, Message, ReaderContext};
use crate::plugin::{Plugin, Position};
use crate::report::Counters;

/// The prefix the reader puts before a plugin's mapping error. An
/// unsendable item without it is a request that the host rejected.
const MAPPING_FAILED: &str = "mapping failed: ";

/// Messages buffered between the reader thread and the dry run.
const CHANNEL_MESSAGES: usize = 4;

/// Output form of a dry run's records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Several lines per record, for a person to read.
    Human,
    /// One JSON object per line, per record.
    JsonLines,
}

/// Output settings of a dry run.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Records shown per file, counting malformed and unmappable ones. 0
    /// shows every record.
    pub records_per_file: u64,
    pub format: Format,
    /// Whether the run would have `--force`, for the ledger notes.
    pub force: bool,
}

/// Counts and notes for one file of a dry run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FileSummary {
    pub path: PathBuf,
    /// Records parsed, malformed ones included.
    pub records: u64,
    /// Records with a request that a run would send.
    pub mappable: u64,
    pub malformed: u64,
    /// Records the plugin could not map to a request.
    pub unmappable: u64,
    /// Records whose request the host would reject before sending.
    pub unsendable: u64,
    /// Records written to the output.
    pub shown: u64,
    /// The reason reading stopped before the end of the file, if it did.
    pub error: Option<String>,
    /// A note on the file's ledger entry, when it makes a run skip the
    /// file or resume it after its first record.
    pub ledger: Option<String>,
}

impl FileSummary {
    fn failed_records(&self) -> u64 {
        self.malformed + self.unmappable + self.unsendable
    }
}

/// The outcome of a dry run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DryRunReport {
    /// Always true, which distinguishes this report from a run's summary.
    pub dry_run: bool,
    pub files: Vec<FileSummary>,
}

impl DryRunReport {
    /// Returns the exit status: 1 when a file could not be read to its
    /// end, 3 when some records are malformed, unmappable or unsendable,
    /// and 0 when every record maps to a request.
    pub fn exit_code(&self) -> u8 {
        if self.files.iter().any(|file| file.error.is_some()) {
            1
        } else if self.files.iter().any(|file| file.failed_records() > 0) {
            3
        } else {
            0
        }
    }

    /// Writes the human-readable summary, one line per file.
    ///
    /// # Errors
    ///
    /// Fails when `out` cannot be written.
    pub fn write_summary(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(out, "dry run summary (nothing was sent)")?;
        for file in &self.files {
            let path = file.path.display();
            write!(
                out,
                "  file      {path}: parsed {}, mappable {}, malformed {}, unmappable {}",
                file.records, file.mappable, file.malformed, file.unmappable
            )?;
            if file.unsendable > 0 {
                write!(out, ", unsendable {}", file.unsendable)?;
            }
            writeln!(out)?;
            if let Some(note) = &file.ledger {
                writeln!(out, "  ledger    {path}: {note}")?;
            }
            if let Some(error) = &file.error {
                writeln!(out, "  stopped   {path}: {error}")?;
            }
        }
        Ok(())
    }
}

/// Parses and maps every file and writes the first records of each to
/// `out`. A file that cannot be read to its end is reported in its summary,
/// and the next file goes on.
///
/// `runtime` drives the reader's waits, so the caller must not run inside
/// it.
///
/// # Errors
///
/// Fails when `out` cannot be written.
pub fn run(
    settings: &Settings,
    plugin: Plugin,
    files: &[PathBuf],
    options: Options,
    runtime: tokio::runtime::Handle,
    out: &mut dyn Write,
) -> io::Result<DryRunReport> {
    // The reader waits while the breaker is open and stops on the shutdown
    // flag. Nothing is sent, so the breaker stays closed. The flag's
    // sender lives until the end, so reading never stops early.
    let (_keep_reading, shutdown) = watch::channel(false);
    let context = ReaderContext {
        plugin: Arc::new(plugin),
        endpoint: settings.endpoint.clone(),
        headers: Arc::new(settings.http.headers.clone()),
        chunk_size: settings.chunk_size.get(),
        breaker: Arc::new(Breaker::new(settings.breaker)),
        counters: Arc::new(Counters::default()),
        runtime,
        shutdown,
        // Added below, with the key that a run would send.
        idempotency: None,
    };
    let dry_run = DryRun {
        settings,
        context,
        options,
        ledger: Ledger::new(&settings.state_dir),
    };

    let mut report = DryRunReport {
        dry_run: true,
        files: Vec::new(),
    };
    for path in files {
        let summary = dry_run.file(path, out)?;
        if let Some(error) = &summary.error {
            tracing::error!(file = %path.display(), error = %error, "file stopped early");
        }
        report.files.push(summary);
    }
    out.flush()?;
    Ok(report)
}

struct DryRun<'a> {
    settings: &'a Settings,
    context: ReaderContext,
    options: Options,
    ledger: Ledger,
}

impl DryRun<'_> {
    fn file(&self, path: &Path, out: &mut dyn Write) -> io::Result<FileSummary> {
        let mut summary = FileSummary {
            path: path.to_owned(),
            ..FileSummary::default()
        };
        let fingerprint = match identity::fingerprint_file(path) {
            Ok(fingerprint) => fingerprint,
            Err(err) => {
                let error = format!("cannot read: {err}");
                if self.options.format == Format::Human {
                    writeln!(out, "{}: reading stopped: {error}\n", path.display())?;
                }
                summary.error = Some(error);
                return Ok(summary);
            }
        };
        summary.ledger = self.ledger_note(path, &fingerprint);

        let mut current = FileContext {
            file: path.display().to_string(),
            fingerprint,
            summary,
            out,
        };
        std::thread::scope(|scope| {
            let (tx, mut rx) = mpsc::channel(CHANNEL_MESSAGES);
            scope.spawn(|| reader::read_file(path, &self.context, tx));
            // Returning early drops `rx`, which stops the reader.
            while let Some(message) = rx.blocking_recv() {
                self.on_message(message, &mut current)?;
            }
            Ok::<(), io::Error>(())
        })?;

        let summary = current.summary;
        let hidden = summary.records - summary.shown;
        if hidden > 0 && self.options.format == Format::Human {
            writeln!(
                current.out,
                "{}: {hidden} more records not shown; --dry-run-records 0 shows every record\n",
                current.file
            )?;
        }
        Ok(summary)
    }

    fn on_message(&self, message: Message, current: &mut FileContext<'_>) -> io::Result<()> {
        match message {
            Message::Preamble(_) => {}
            Message::Items(items) => {
                for item in items {
                    self.on_item(item, current)?;
                }
            }
            Message::Stopped { position, message } => {
                let error = format!("{message}{}", describe_stop(position));
                if self.options.format == Format::Human {
                    writeln!(current.out, "{}: reading stopped: {error}\n", current.file)?;
                }
                current.summary.error = Some(error);
            }
        }
        Ok(())
    }

    fn on_item(&self, item: Item, current: &mut FileContext<'_>) -> io::Result<()> {
        let summary = &mut current.summary;
        summary.records += 1;
        let (position, key, outcome) = match item {
            Item::Ready {
                record,
                mut request,
            } => {
                summary.mappable += 1;
                let idempotency = self.settings.idempotency.as_ref();
                if let Some((header, source)) = idempotency {
                    let key = idempotency_key(*source, &current.fingerprint, &record);
                    if let Ok(value) = HeaderValue::from_str(&key) {
                        request.headers.insert(header.clone(), value);
                    }
                }
                let request = MaskedRequest::new(&request, idempotency.map(|(header, _)| header));
                (record.position, Some(record.key), Outcome::Request(request))
            }
            Item::Unsendable { record, reason } => {
                let (kind, message) = classify_unsendable(reason);
                match kind {
                    ErrorKind::Unmappable => summary.unmappable += 1,
                    _ => summary.unsendable += 1,
                }
                let outcome = Outcome::Error { kind, message };
                (record.position, Some(record.key), outcome)
            }
            Item::Malformed(bad) => {
                summary.malformed += 1;
                let outcome = Outcome::Error {
                    kind: ErrorKind::Malformed,
                    message: bad.message,
                };
                (bad.position, None, outcome)
            }
        };

        let limit = self.options.records_per_file;
        if limit != 0 && summary.shown >= limit {
            return Ok(());
        }
        summary.shown += 1;
        let entry = Entry {
            file: current.file.clone(),
            record: position.record_number,
            line: position.line,
            offset: position.offset,
            key,
            outcome,
        };
        match self.options.format {
            Format::Human => write_human(&entry, current.out),
            Format::JsonLines => write_json(&entry, current.out),
        }
    }

    /// Describes what a run would do with `path` when its ledger entry
    /// makes it skip or resume the file.
    fn ledger_note(&self, path: &Path, fingerprint: &str) -> Option<String> {
        let entry = match self.ledger.load(path) {
            Ok(entry) => entry?,
            Err(err) => return Some(format!("cannot read the ledger entry: {err}")),
        };
        if entry.fingerprint != fingerprint {
            return Some("changed since its ledger entry; a run ingests it as a new file".into());
        }
        if entry.completed && !self.options.force {
            return Some(
                "completed by an earlier run; a run skips it unless --force is passed".into(),
            );
        }
        if entry.completed || entry.handled_through == 0 {
            return None;
        }
        Some(format!(
            "an earlier run stopped in it; a run resumes after record {}",
            entry.handled_through
        ))
    }
}

/// The file being read, with its counts and the output.
struct FileContext<'a> {
    file: String,
    fingerprint: String,
    summary: FileSummary,
    out: &'a mut dyn Write,
}

/// Derives the idempotency key that a run of a source file sends with
/// `record`.
fn idempotency_key(source: KeySource, fingerprint: &str, record: &crate::plugin::Record) -> String {
    let number = record.position.record_number;
    identity::idempotency_key(source, fingerprint, number, &record.key)
}

/// Tells a plugin's mapping error apart from a request the host rejects,
/// and strips the reader's prefix from the message.
fn classify_unsendable(reason: String) -> (ErrorKind, String) {
    match reason.strip_prefix(MAPPING_FAILED) {
        Some(message) => (ErrorKind::Unmappable, message.to_owned()),
        None => (ErrorKind::Unsendable, reason),
    }
}

/// Returns where reading stopped, in the words a run's summary uses.
fn describe_stop(position: Option<Position>) -> String {
    match position {
        Some(p) => format!(" (after record {}, line {})", p.record_number, p.line),
        None => " (before the first record)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(malformed: u64, error: Option<&str>) -> FileSummary {
        FileSummary {
            path: PathBuf::from("a.csv"),
            records: 5,
            mappable: 5 - malformed,
            malformed,
            error: error.map(str::to_owned),
            ..FileSummary::default()
        }
    }

    #[test]
    fn mapping_errors_are_unmappable() {
        let (kind, message) = classify_unsendable("mapping failed: column empty".to_owned());
        assert_eq!(kind, ErrorKind::Unmappable);
        assert_eq!(message, "column empty");
    }

    #[test]
    fn host_rejections_are_unsendable() {
        let reason = "invalid header name \"a b\"".to_owned();
        let (kind, message) = classify_unsendable(reason.clone());
        assert_eq!(kind, ErrorKind::Unsendable);
        assert_eq!(message, reason);
    }

    #[test]
    fn exit_code_follows_worst_file() {
        let report = |files| DryRunReport {
            dry_run: true,
            files,
        };
        assert_eq!(report(vec![summary(0, None)]).exit_code(), 0);
        assert_eq!(
            report(vec![summary(0, None), summary(1, None)]).exit_code(),
            3
        );
        let stopped = summary(0, Some("bad header"));
        assert_eq!(report(vec![summary(1, None), stopped]).exit_code(), 1);
    }

    #[test]
    fn summary_lists_counts_and_stops() {
        let mut file = summary(1, Some("bad header (before the first record)"));
        file.unsendable = 2;
        file.ledger = Some("completed by an earlier run".to_owned());
        let report = DryRunReport {
            dry_run: true,
            files: vec![file],
        };

        let mut out = Vec::new();
        report.write_summary(&mut out).unwrap();

        let text = String::from_utf8(out).unwrap();
        let expected = "dry run summary (nothing was sent)\n  \
                        file      a.csv: parsed 5, mappable 4, malformed 1, unmappable 0, \
                        unsendable 2\n  \
                        ledger    a.csv: completed by an earlier run\n  \
                        stopped   a.csv: bad header (before the first record)\n";
        assert_eq!(text, expected);
    }

    #[test]
    fn stop_position_names_record_and_line() {
        let position = Position {
            record_number: 7,
            line: 9,
            offset: 120,
        };
        assert_eq!(describe_stop(Some(position)), " (after record 7, line 9)");
        assert_eq!(describe_stop(None), " (before the first record)");
    }
}
