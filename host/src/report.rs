//! Run reporting: live counters, the progress display and the summary.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::config::ProgressMode;
use crate::delivery::breaker::Breaker;
use crate::delivery::InFlight;

/// Live counts for the whole run, updated from many tasks.
#[derive(Debug, Default)]
pub struct Counters {
    pub read: AtomicU64,
    pub delivered: AtomicU64,
    pub retrying: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub rejected: AtomicU64,
    pub in_flight: AtomicU64,
    pub bytes_read: AtomicU64,
}

impl InFlight for Counters {
    fn started(&self) {
        self.in_flight.fetch_add(1, Relaxed);
    }

    fn finished(&self) {
        self.in_flight.fetch_sub(1, Relaxed);
    }
}

/// What happened to one input file.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FileReport {
    pub path: PathBuf,
    /// Records and malformed records parsed from the file.
    pub records: u64,
    pub delivered: u64,
    pub delivered_first_try: u64,
    pub delivered_after_retries: u64,
    /// Retries made, not counting first attempts.
    pub retries: u64,
    pub dead_lettered: u64,
    pub rejected: u64,
    /// Dead-letter and rejected files written for this file.
    pub dead_letter_files: Vec<PathBuf>,
    /// Why the file was stopped before its end, if it was.
    pub error: Option<String>,
}

/// What happened in the whole run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunReport {
    pub files: Vec<FileReport>,
    pub breaker_openings: u64,
    pub elapsed_seconds: f64,
}

impl RunReport {
    fn total(&self, field: impl Fn(&FileReport) -> u64) -> u64 {
        self.files.iter().map(field).sum()
    }

    /// Returns the documented exit status: 0 when every record was
    /// delivered, 3 when some were dead-lettered or rejected, 1 when a file
    /// could not be read to its end.
    pub fn exit_code(&self) -> u8 {
        if self.files.iter().any(|file| file.error.is_some()) {
            1
        } else if self.total(|f| f.dead_lettered + f.rejected) > 0 {
            3
        } else {
            0
        }
    }

    /// Writes the human-readable summary.
    pub fn write_summary(&self, out: &mut impl Write) -> std::io::Result<()> {
        let records = self.total(|f| f.records);
        let delivered = self.total(|f| f.delivered);
        let first_try = self.total(|f| f.delivered_first_try);
        let after_retries = self.total(|f| f.delivered_after_retries);
        let failed = self.files.iter().filter(|f| f.error.is_some()).count();
        let rate = if self.elapsed_seconds > 0.0 {
            records as f64 / self.elapsed_seconds
        } else {
            0.0
        };

        writeln!(out, "summary")?;
        writeln!(
            out,
            "  files          {} ({failed} stopped early)",
            self.files.len()
        )?;
        writeln!(out, "  records read   {records}")?;
        writeln!(
            out,
            "  delivered      {delivered} ({first_try} first try, {after_retries} after retries)"
        )?;
        writeln!(out, "  retries        {}", self.total(|f| f.retries))?;
        writeln!(out, "  dead-lettered  {}", self.total(|f| f.dead_lettered))?;
        writeln!(out, "  rejected       {}", self.total(|f| f.rejected))?;
        writeln!(out, "  breaker opened {} times", self.breaker_openings)?;
        writeln!(
            out,
            "  elapsed        {:.2}s ({rate:.0} records/s)",
            self.elapsed_seconds
        )?;
        for file in &self.files {
            if let Some(error) = &file.error {
                writeln!(out, "  stopped        {}: {error}", file.path.display())?;
            }
            for path in &file.dead_letter_files {
                writeln!(out, "  written        {}", path.display())?;
            }
        }
        Ok(())
    }
}

/// The progress display: a bar on a terminal, periodic log lines otherwise.
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Creates the display for `total_bytes` of input.
    pub fn new(mode: ProgressMode, total_bytes: u64) -> Progress {
        let draw = match mode {
            ProgressMode::Always => true,
            ProgressMode::Never => false,
            ProgressMode::Auto => std::io::stderr().is_terminal(),
        };
        let bar = draw.then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{bar:30} {bytes}/{total_bytes} {elapsed_precise} {msg}",
            )
            .expect("the template is valid");
            bar.set_style(style);
            bar
        });
        Progress { bar }
    }

    /// Returns the bar, so log output can be written around it.
    pub fn bar(&self) -> Option<ProgressBar> {
        self.bar.clone()
    }

    /// Refreshes the display until the returned task is aborted.
    pub fn spawn_ticker(
        &self,
        counters: Arc<Counters>,
        breaker: Arc<Breaker>,
    ) -> tokio::task::JoinHandle<()> {
        let bar = self.bar.clone();
        tokio::spawn(async move {
            let period = if bar.is_some() {
                Duration::from_millis(200)
            } else {
                Duration::from_secs(10)
            };
            let mut ticker = tokio::time::interval(period);
            ticker.tick().await;
            let started = Instant::now();
            loop {
                ticker.tick().await;
                let line = format!(
                    "read {} delivered {} in flight {} retrying {} dead-lettered {} rejected {} \
                     breaker {}",
                    counters.read.load(Relaxed),
                    counters.delivered.load(Relaxed),
                    counters.in_flight.load(Relaxed),
                    counters.retrying.load(Relaxed),
                    counters.dead_lettered.load(Relaxed),
                    counters.rejected.load(Relaxed),
                    breaker.state().as_str(),
                );
                match &bar {
                    Some(bar) => {
                        bar.set_position(counters.bytes_read.load(Relaxed));
                        bar.set_message(line);
                    }
                    None => tracing::info!(elapsed_s = started.elapsed().as_secs(), "{line}"),
                }
            }
        })
    }

    /// Removes the bar from the terminal.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
