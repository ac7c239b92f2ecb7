//! The ingestion pipeline: one input file at a time, read on a blocking
//! thread, sent by async tasks, with dead letters written as records fail.
//!
//! `sluice run` feeds it source files; `sluice reprocess` feeds it
//! dead-letter files, whose sidecars keep each record's original source
//! and position, and removes each one once all its records are handled.

mod dispatch;
mod reader;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tracing::Instrument as _;

use self::dispatch::{Dispatcher, Origin, Origins};
use self::reader::ReaderContext;
use crate::config::Settings;
use crate::dead_letter::{self, DeadLetterName, DeadLetterSink, SidecarEntry};
use crate::delivery::breaker::Breaker;
use crate::delivery::Sender;
use crate::plugin::{Plugin, Position};
use crate::report::{Counters, FileReport, RunReport};

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
        /// The sidecar's entries, one per record in file order.
        entries: Vec<SidecarEntry>,
    },
}

/// Shared state of one run.
pub struct Pipeline {
    settings: Settings,
    plugin: Arc<Plugin>,
    sender: Arc<Sender>,
    breaker: Arc<Breaker>,
    counters: Arc<Counters>,
    run_id: String,
}

impl Pipeline {
    /// Prepares a run with a loaded, configured plugin.
    ///
    /// # Errors
    ///
    /// Fails when the HTTP client cannot be built.
    pub fn new(
        settings: Settings,
        plugin: Plugin,
        counters: Arc<Counters>,
    ) -> anyhow::Result<Self> {
        let breaker = Arc::new(Breaker::new(settings.breaker));
        let sender = Sender::new(
            &settings.http,
            settings.retry,
            breaker.clone(),
            counters.clone(),
        )?;
        Ok(Pipeline {
            settings,
            plugin: Arc::new(plugin),
            sender: Arc::new(sender),
            breaker,
            counters,
            run_id: dead_letter::new_run_id(),
        })
    }

    /// Returns the run's circuit breaker.
    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }

    /// Ingests every input in order and reports on each.
    ///
    /// # Errors
    ///
    /// Fails only when a dead-letter file cannot be written, because going
    /// on would lose records.
    pub async fn run(&self, inputs: &[Input]) -> anyhow::Result<RunReport> {
        let started = Instant::now();
        let mut report = RunReport::default();
        for (index, input) in inputs.iter().enumerate() {
            self.breaker.wait_until_not_open().await;
            let file = self.run_file(input, index).await?;
            if let InputKind::DeadLetter { .. } = input.kind {
                if file.error.is_none() {
                    remove_dead_letter(&input.path)?;
                }
            }
            if let Some(error) = &file.error {
                tracing::error!(file = %input.path.display(), error = %error, "file stopped early");
            }
            report.files.push(file);
        }
        report.breaker_openings = self.breaker.openings();
        report.elapsed_seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    async fn run_file(&self, input: &Input, index: usize) -> anyhow::Result<FileReport> {
        let span = tracing::info_span!("file", file = %input.path.display());
        span.in_scope(|| tracing::info!("ingesting file"));

        let (stem, extension, origins): (String, String, Box<dyn Origins + Sync>) =
            match &input.kind {
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
                    };
                    (stem, extension, Box::new(origins))
                }
                InputKind::DeadLetter { name, entries } => {
                    let origins = SidecarOrigins {
                        fallback: input.path.display().to_string(),
                        entries: entries.clone(),
                    };
                    (name.stem.clone(), name.extension.clone(), Box::new(origins))
                }
            };
        let run_id = format!("{}-{index:04}", self.run_id);
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
        };
        let path = input.path.clone();
        let reader = tokio::task::spawn_blocking(move || reader::read_file(&path, &context, tx));

        let concurrency = self.settings.http.concurrency.get();
        let max_pending = (concurrency * 4).max(64);
        let report = FileReport {
            path: input.path.clone(),
            ..FileReport::default()
        };
        let dispatcher = Dispatcher::new(
            self.sender.clone(),
            &mut sink,
            origins.as_ref(),
            self.counters.clone(),
            max_pending,
            span.clone(),
            report,
        );
        let report = dispatcher.run(rx).instrument(span.clone()).await;
        // The reader ends once the channel closes; a panic there is a bug.
        reader.await.expect("the reader thread panicked");
        let report = report?;

        span.in_scope(|| {
            tracing::info!(
                records = report.records,
                delivered = report.delivered,
                dead_lettered = report.dead_lettered,
                rejected = report.rejected,
                "file done"
            )
        });
        Ok(report)
    }
}

struct SourceOrigins {
    source: String,
}

impl Origins for SourceOrigins {
    fn origin(&self, position: &Position) -> Origin {
        Origin {
            source: self.source.clone(),
            record: position.record_number,
            line: position.line,
        }
    }
}

struct SidecarOrigins {
    fallback: String,
    entries: Vec<SidecarEntry>,
}

impl Origins for SidecarOrigins {
    fn origin(&self, position: &Position) -> Origin {
        let index = usize::try_from(position.record_number.saturating_sub(1)).ok();
        match index.and_then(|i| self.entries.get(i)) {
            Some(entry) => Origin {
                source: entry.source.clone(),
                record: entry.record,
                line: entry.line,
            },
            None => Origin {
                source: self.fallback.clone(),
                record: position.record_number,
                line: position.line,
            },
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
                "{} holds rejected records; pass --include-rejected to reprocess them",
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
                entries: sidecar.entries,
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
