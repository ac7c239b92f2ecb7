//! The ingestion pipeline: one input file at a time, read on a blocking
//! thread, sent by async tasks, with dead letters written as records fail.
//!
//! `sluice run` feeds it source files; `sluice reprocess` feeds it
//! dead-letter files, whose sidecars keep each record's original source,
//! position and idempotency key, and removes each one once all its records
//! are handled. Before a file starts, its fingerprint is looked up in the
//! ledger: a completed file is skipped, an interrupted one resumes after
//! the last record it handled, and a changed one starts over.

mod dispatch;
mod parsing;
pub mod reader;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use tokio::sync::{mpsc, watch};
use tracing::Instrument as _;

use self::dispatch::{Checkpoint, DispatchContext, Dispatcher, Origin, Origins, Resume};
use self::reader::{Idempotency, ReaderContext};
use crate::config::{KeySource, Settings};
use crate::dead_letter::{self, DeadLetterName, DeadLetterSink, SidecarEntry};
use crate::delivery::breaker::Breaker;
use crate::delivery::{Sender, SenderOptions};
use crate::identity;
use crate::ledger::Ledger;
use crate::plugin::{Classifier, Plugin, Record};
use crate::report::{AdaptiveLimit, Counters, FileReport, RunReport};

/// Messages of parsed records buffered between reader and dispatcher.
const CHANNEL_MESSAGES: usize = 4;

/// One file to ingest.
#[derive(Clone, Debug)]
pub struct Input {
    pub path: PathBuf,
    pub kind: InputKind,
}

/// Whether an input is an original file or a dead-letter file.
#[derive(Clone, Debug)]
pub enum InputKind {
    Source,
    DeadLetter {
        name: DeadLetterName,
        /// The sidecar's entries, one per record in file order, or `None`
        /// when the file has no sidecar, as for a file made by hand.
        entries: Option<Vec<SidecarEntry>>,
    },
}

/// Shared state of one run: the plugin, the HTTP client, the circuit
/// breaker and the ledger, for one or more calls of [`Pipeline::run`].
pub struct Pipeline {
    settings: Settings,
    plugin: Arc<Plugin>,
    sender: Arc<Sender>,
    breaker: Arc<Breaker>,
    counters: Arc<Counters>,
    ledger: Ledger,
    force: bool,
    shutdown: watch::Receiver<bool>,
}

/// One call of [`Pipeline::run`]: the name its dead-letter files carry,
/// and the keys its files sent to a dead-letter or rejected file.
struct Round {
    run_id: String,
    started_millis: u64,
    held: HashMap<String, dead_letter::Kind>,
}

impl Round {
    fn new() -> Round {
        let started_millis = dead_letter::unique_millis();
        Round {
            run_id: dead_letter::run_id_at(started_millis),
            started_millis,
            held: HashMap::new(),
        }
    }

    /// Returns a short suffix that sorts by round start time, then by
    /// input index: base-36 milliseconds since the Unix epoch and the
    /// index, both fixed-width.
    fn suffix(&self, index: usize) -> String {
        format!(
            "{}{}",
            base36(self.started_millis, 9),
            base36(index as u64, 3)
        )
    }
}

impl Pipeline {
    /// Prepares a run with a loaded, configured plugin. `shutdown` turns
    /// true when the run must stop; `force` ingests files again that the
    /// ledger shows as completed.
    ///
    /// # Errors
    ///
    /// Fails when the HTTP client cannot be built.
    pub fn new(
        settings: Settings,
        plugin: Plugin,
        counters: Arc<Counters>,
        shutdown: watch::Receiver<bool>,
        force: bool,
    ) -> anyhow::Result<Self> {
        let breaker = Arc::new(Breaker::new(settings.breaker));
        Pipeline::with_breaker(settings, plugin, breaker, counters, shutdown, force)
    }

    /// Prepares a run as [`Pipeline::new`] does, with a circuit breaker
    /// that outlives it, as when `sluice watch` reloads its configuration.
    ///
    /// # Errors
    ///
    /// Fails when the HTTP client cannot be built.
    pub fn with_breaker(
        settings: Settings,
        mut plugin: Plugin,
        breaker: Arc<Breaker>,
        counters: Arc<Counters>,
        shutdown: watch::Receiver<bool>,
        force: bool,
    ) -> anyhow::Result<Self> {
        plugin.time_calls(counters.plugin_calls.clone());
        let plugin = Arc::new(plugin);
        let options = SenderOptions {
            classifier: Some(Arc::new(Classifier::new(plugin.clone()))),
            idempotency_header: settings.idempotency.as_ref().map(|(name, _)| name.clone()),
            shutdown: Some(shutdown.clone()),
        };
        let sender = Sender::new(
            &settings.http,
            settings.retry,
            breaker.clone(),
            counters.clone(),
            options,
        )?;
        Ok(Pipeline {
            ledger: Ledger::new(&settings.state_dir),
            settings,
            plugin,
            sender: Arc::new(sender),
            breaker,
            counters,
            force,
            shutdown,
        })
    }

    /// Returns the run's circuit breaker.
    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }

    /// Returns the settings the pipeline runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Returns the progress ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Ingests every input in order and reports on each, until the inputs
    /// end or the run is stopped.
    ///
    /// Each call writes dead-letter files under a run id of its own, so
    /// that `sluice watch` can call it once per file. When a file of the
    /// call sends a key to a dead-letter or rejected file, the key's
    /// records in the call's later files follow it there. A later call
    /// reads such keys from the dead-letter directory instead.
    ///
    /// # Errors
    ///
    /// Fails only when a dead-letter file or the ledger cannot be written,
    /// because going on could lose records.
    pub async fn run(&self, inputs: &[Input]) -> anyhow::Result<RunReport> {
        let started = Instant::now();
        let mut report = RunReport::default();
        let mut round = Round::new();
        // Records already waiting in dead-letter files, from earlier runs.
        // A newer value of their keys must not reach the API before they do.
        let pending = dead_letter::pending(&self.settings.dead_letter_dir)?;
        let files = &self.counters.files;
        files.pending.inc_by(inputs.len() as i64);
        for (index, input) in inputs.iter().enumerate() {
            if *self.shutdown.borrow() {
                break;
            }
            let mut shutdown = self.shutdown.clone();
            tokio::select! {
                _ = self.breaker.wait_until_not_open() => {}
                _ = crate::shutdown::stopped(&mut shutdown) => break,
            }
            files.pending.dec();
            files.active.inc();
            let file = self
                .run_file(input, index, inputs, &pending, &mut round)
                .await;
            files.active.dec();
            let file = file?;
            // The next run resumes an interrupted file.
            if file.interrupted {
                files.pending.inc();
            } else {
                files.done.inc();
            }
            if let InputKind::DeadLetter { .. } = input.kind {
                if file.completed {
                    remove_dead_letter(&input.path)?;
                    self.ledger.remove(&input.path)?;
                }
            }
            if let Some(error) = &file.error {
                tracing::error!(file = %input.path.display(), error = %error, "file stopped early");
            }
            report.files.push(file);
        }
        report.breaker_openings = self.breaker.openings();
        report.adaptive_limit = self
            .sender
            .adaptive_limits()
            .map(|(last, highest)| AdaptiveLimit { last, highest });
        report.elapsed_seconds = started.elapsed().as_secs_f64();
        report.pending_dead_letter_files =
            dead_letter::list_dir(&self.settings.dead_letter_dir, true).map_or(0, |f| f.len());
        Ok(report)
    }

    async fn run_file(
        &self,
        input: &Input,
        index: usize,
        inputs: &[Input],
        pending: &[dead_letter::PendingRecord],
        round: &mut Round,
    ) -> anyhow::Result<FileReport> {
        let span = tracing::info_span!("file", file = %input.path.display());
        let mut report = FileReport {
            path: input.path.clone(),
            ..FileReport::default()
        };

        let path = input.path.clone();
        let fingerprint = tokio::task::spawn_blocking(move || identity::fingerprint_file(&path))
            .await
            .expect("fingerprinting does not panic");
        let fingerprint = match fingerprint {
            Ok(fingerprint) => fingerprint,
            Err(err) => {
                report.error = Some(format!("cannot read: {err}"));
                return Ok(report);
            }
        };
        let is_dead_letter = matches!(input.kind, InputKind::DeadLetter { .. });
        let input_name = dead_letter::input_name(&input.path, is_dead_letter);
        let Some(resume) = self.resume_point(input, &input_name, &fingerprint, pending, &span)?
        else {
            report.already_completed = true;
            report.completed = true;
            return Ok(report);
        };

        let key_source = self
            .settings
            .idempotency
            .as_ref()
            .map_or(KeySource::Position, |(_, source)| *source);
        let (stem, extension, origins): (String, String, Arc<dyn Origins>) = match &input.kind {
            InputKind::Source => {
                let stem = input
                    .path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "input".to_owned());
                let extension = input
                    .path
                    .extension()
                    .map(|s| s.to_string_lossy().into_owned())
                    .or_else(|| self.plugin.info().extensions.first().cloned())
                    .unwrap_or_else(|| "dat".to_owned());
                let origins = SourceOrigins {
                    source: input.path.display().to_string(),
                    fingerprint: fingerprint.clone(),
                    key_source,
                };
                (stem, extension, Arc::new(origins))
            }
            InputKind::DeadLetter { name, entries } => {
                let origins = SidecarOrigins {
                    fallback: input.path.display().to_string(),
                    entries: entries.clone(),
                    fingerprint: fingerprint.clone(),
                    key_source,
                };
                (name.stem.clone(), name.extension.clone(), Arc::new(origins))
            }
        };
        let run_id = match &input.kind {
            InputKind::Source => format!("{}-{index:04}", round.run_id),
            // A file written while reprocessing sorts right after its
            // input, and after the outputs of inputs that sorted before it,
            // so replaying the directory keeps every key's records in their
            // original order. The suffix is short because each round that
            // fails again adds one.
            // NOTE: so names grow without bound. `sluice watch` stops its
            // automatic rounds for a file after `MAX_AUTOMATIC_ROUNDS`, but
            // `sluice reprocess` run by hand fails at the 255-byte limit.
            InputKind::DeadLetter { name, .. } => {
                format!("{}~{}", name.run_id, round.suffix(index))
            }
        };
        let separator = self.plugin.info().record_separator.clone();
        let mut sink = DeadLetterSink::new(
            &self.settings.dead_letter_dir,
            &stem,
            &extension,
            &run_id,
            &separator,
        );

        let (tx, rx) = mpsc::channel(CHANNEL_MESSAGES);
        let context = ReaderContext {
            plugin: self.plugin.clone(),
            endpoint: self.settings.endpoint.clone(),
            headers: Arc::new(self.settings.http.headers.clone()),
            chunk_size: self.settings.chunk_size.get(),
            breaker: self.breaker.clone(),
            counters: self.counters.clone(),
            runtime: tokio::runtime::Handle::current(),
            shutdown: self.shutdown.clone(),
            idempotency: self
                .settings
                .idempotency
                .as_ref()
                .map(|(header, _)| Idempotency {
                    header: header.clone(),
                    origins: origins.clone(),
                }),
        };
        // Plugin logs, such as its stderr and its traps, name the file.
        let reader = reader::spawn(input.path.clone(), context, tx, span.clone())
            .context("cannot start the thread that reads the file")?;

        let mut held = older_pending_keys(input, inputs, &input_name, &fingerprint, pending);
        let from_earlier_runs = held.len();
        held.extend(round.held.clone());
        span.in_scope(|| {
            tracing::debug!(
                from_earlier_runs,
                total = held.len(),
                "keys held behind older dead letters"
            )
        });
        let concurrency = self.settings.http.max_concurrency();
        let context = DispatchContext {
            sender: self.sender.clone(),
            sink: &mut sink,
            origins: origins.as_ref(),
            counters: self.counters.clone(),
            max_pending: (concurrency * 4).max(64),
            checkpoint: Checkpoint {
                ledger: self.ledger.clone(),
                input: input.path.clone(),
                input_name,
                fingerprint,
            },
            shutdown: self.shutdown.clone(),
        };
        let dispatcher = Dispatcher::new(context, resume, &held, report);
        let result = dispatcher.run(rx).instrument(span.clone()).await;
        // The reader ends once the channel closes.
        reader.await;
        let (report, held) = result?;
        round.held.extend(held);

        span.in_scope(|| {
            tracing::info!(
                records = report.records,
                delivered = report.delivered,
                dead_lettered = report.dead_lettered,
                rejected = report.rejected,
                skipped = report.skipped,
                replayed = report.replayed,
                "file done"
            )
        });
        Ok(report)
    }

    /// Decides where to start a file from its ledger entry; `None` means
    /// the file is already completed and is skipped.
    fn resume_point(
        &self,
        input: &Input,
        input_name: &str,
        fingerprint: &str,
        pending: &[dead_letter::PendingRecord],
        span: &tracing::Span,
    ) -> anyhow::Result<Option<Resume>> {
        let _entered = span.enter();
        let entry = self.ledger.load(&input.path)?;
        let resume = match entry {
            Some(entry) if entry.fingerprint == fingerprint => {
                if entry.completed && !self.force {
                    tracing::info!("file already completed by an earlier run; skipping it");
                    return Ok(None);
                }
                if entry.completed {
                    tracing::info!("file completed before; sending it again as --force asks");
                    Resume::default()
                } else {
                    tracing::info!(
                        handled_through = entry.handled_through,
                        "resuming after the last record an earlier run handled"
                    );
                    let written = dead_letter::written_from(pending, input_name, fingerprint);
                    Resume {
                        skip_through: entry.handled_through,
                        dispatched_through: entry.dispatched_through,
                        written,
                    }
                }
            }
            Some(_) => {
                tracing::warn!(
                    "file content changed since the ledger entry was written; ingesting it as a \
                     new file"
                );
                Resume::default()
            }
            None => {
                tracing::info!("ingesting file");
                Resume::default()
            }
        };
        Ok(Some(resume))
    }
}

/// Formats `value` in base 36 with lowercase digits, left-padded with
/// zeros to `width`, so that strings of one width sort like the numbers.
fn base36(mut value: u64, width: usize) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut digits = Vec::new();
    while value > 0 {
        digits.push(DIGITS[(value % 36) as usize]);
        value /= 36;
    }
    while digits.len() < width {
        digits.push(b'0');
    }
    digits.reverse();
    String::from_utf8(digits).expect("ASCII digits")
}

/// Returns the keys with a record waiting in a dead-letter or rejected
/// file that must be replayed before this input's records. For a source
/// file, that is every pending record except those that reading the same
/// file with the same content wrote, which the resume point orders by
/// position. For a dead-letter
/// file, it is those in older files that this run does not process.
fn older_pending_keys(
    input: &Input,
    inputs: &[Input],
    input_name: &str,
    fingerprint: &str,
    pending: &[dead_letter::PendingRecord],
) -> HashMap<String, dead_letter::Kind> {
    let older = |record: &&dead_letter::PendingRecord| match &input.kind {
        InputKind::Source => !record.written_while_reading(input_name, fingerprint),
        InputKind::DeadLetter { name, .. } => {
            let processed_here = inputs.iter().any(|other| other.path == record.file);
            !processed_here && record.run_id < name.run_id
        }
    };
    pending
        .iter()
        .filter(older)
        .filter(|record| !record.entry.key.is_empty())
        .map(|record| (record.entry.key.clone(), record.entry.kind))
        .collect()
}

struct SourceOrigins {
    source: String,
    fingerprint: String,
    key_source: KeySource,
}

impl Origins for SourceOrigins {
    fn origin(&self, record: &Record) -> Origin {
        let position = &record.position;
        Origin {
            source: self.source.clone(),
            record: position.record_number,
            line: position.line,
            idempotency_key: self.idempotency_key(record),
        }
    }

    fn idempotency_key(&self, record: &Record) -> String {
        identity::idempotency_key(
            self.key_source,
            &self.fingerprint,
            record.position.record_number,
            &record.key,
        )
    }
}

struct SidecarOrigins {
    fallback: String,
    entries: Option<Vec<SidecarEntry>>,
    /// Fingerprint of the dead-letter file, for records without an entry.
    fingerprint: String,
    key_source: KeySource,
}

impl Origins for SidecarOrigins {
    fn origin(&self, record: &Record) -> Origin {
        let position = &record.position;
        let index = usize::try_from(position.record_number.saturating_sub(1)).ok();
        let derived = || {
            identity::idempotency_key(
                self.key_source,
                &self.fingerprint,
                position.record_number,
                &record.key,
            )
        };
        let entries = self.entries.as_deref().unwrap_or_default();
        match index.and_then(|i| entries.get(i)) {
            Some(entry) => Origin {
                source: entry.source.clone(),
                record: entry.record,
                line: entry.line,
                idempotency_key: entry.idempotency_key.clone().unwrap_or_else(derived),
            },
            None => Origin {
                source: self.fallback.clone(),
                record: position.record_number,
                line: position.line,
                idempotency_key: derived(),
            },
        }
    }

    fn orphaned(&self, record_number: u64) -> bool {
        // A dead-letter file without a sidecar file was made by hand, and
        // every record in it counts. An existing sidecar, even an empty
        // one, lists every record that counted as handled. A crash cut off
        // the records past its last line, and their input's rerun sends
        // them.
        match &self.entries {
            Some(entries) => record_number > entries.len() as u64,
            None => false,
        }
    }
}

/// Collects the dead-letter files named by `paths`: files as given,
/// directories expanded to their dead-letter files, oldest first.
///
/// # Errors
///
/// Fails when a path does not exist, a named file is not a dead-letter
/// file, or a sidecar is corrupt.
pub fn dead_letter_inputs(paths: &[PathBuf], include_rejected: bool) -> anyhow::Result<Vec<Input>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let listed = dead_letter::list_dir(path, include_rejected).map_err(|err| {
                anyhow::anyhow!(
                    "cannot list dead-letter directory {}: {err}",
                    path.display()
                )
            })?;
            files.extend(listed);
        } else if path.is_file() {
            files.push(path.clone());
        } else {
            anyhow::bail!("dead-letter path {} does not exist", path.display());
        }
    }

    let mut inputs = Vec::new();
    for path in files {
        let Some(name) = dead_letter::parse_name(&path) else {
            anyhow::bail!(
                "{} is not a dead-letter file: expected a name like STEM.RUN.dead.EXT",
                path.display()
            );
        };
        if name.kind == dead_letter::Kind::Rejected && !include_rejected {
            anyhow::bail!(
                "{} contains rejected records; pass --include-rejected to reprocess them",
                path.display()
            );
        }
        let sidecar_path = dead_letter::sidecar_path(&path);
        let sidecar = dead_letter::read_sidecar(&sidecar_path)?;
        if sidecar.torn_tail {
            tracing::warn!(
                sidecar = %sidecar_path.display(),
                "ignoring a sidecar line cut short by an earlier crash"
            );
        }
        inputs.push(Input {
            path,
            kind: InputKind::DeadLetter {
                name,
                entries: sidecar.found.then_some(sidecar.entries),
            },
        });
    }
    Ok(inputs)
}

fn remove_dead_letter(path: &Path) -> anyhow::Result<()> {
    let sidecar = dead_letter::sidecar_path(path);
    std::fs::remove_file(path)
        .map_err(|err| anyhow::anyhow!("cannot remove {}: {err}", path.display()))?;
    match std::fs::remove_file(&sidecar) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            anyhow::bail!("cannot remove {}: {err}", sidecar.display())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::base36;

    #[test]
    fn base36_pads_and_sorts_like_numbers() {
        assert_eq!(base36(0, 3), "000");
        assert_eq!(base36(35, 3), "00z");
        assert_eq!(base36(36, 3), "010");
        let mut values = [7u64, 1_800_000_000_000, 36, 1_799_999_999_999, 0];
        let mut texts: Vec<String> = values.iter().map(|v| base36(*v, 9)).collect();
        values.sort();
        texts.sort();
        let sorted: Vec<String> = values.iter().map(|v| base36(*v, 9)).collect();
        assert_eq!(texts, sorted);
    }
}
