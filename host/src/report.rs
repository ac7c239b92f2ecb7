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
use crate::delivery::classify::Fault;
use crate::delivery::InFlight;
use crate::metrics::histogram::{Histogram, REQUEST_BUCKETS};
use crate::metrics::{FileGauges, PluginCallTimes, RetryCounts};

/// Live counts for the whole run, updated from many tasks. The progress
/// display and the metrics read them.
#[derive(Debug)]
pub struct Counters {
    pub read: AtomicU64,
    pub delivered: AtomicU64,
    pub retrying: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub rejected: AtomicU64,
    pub in_flight: AtomicU64,
    /// The limit on requests in flight, which moves when it is adaptive.
    pub concurrency_limit: AtomicU64,
    pub bytes_read: AtomicU64,
    /// Retries sent, by the fault that each one follows.
    pub retries: RetryCounts,
    /// The time of each HTTP attempt.
    pub attempt_durations: Histogram,
    /// The time of each plugin call, shared with the plugin's instances.
    pub plugin_calls: Arc<PluginCallTimes>,
    pub files: FileGauges,
    /// Attempts that ended in a transient fault (connection error,
    /// timeout, 5xx, 408, 429), counting every retry.
    pub transient_faults: AtomicU64,
}

impl Counters {
    /// Creates counters whose concurrency limit starts at `limit`, so that
    /// metrics served before the sender exists already show it.
    pub fn with_limit(limit: usize) -> Self {
        let counters = Counters::default();
        InFlight::limit(&counters, limit);
        counters
    }
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            read: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            retrying: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            concurrency_limit: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            retries: RetryCounts::default(),
            attempt_durations: Histogram::new(REQUEST_BUCKETS),
            plugin_calls: Arc::default(),
            files: FileGauges::default(),
            transient_faults: AtomicU64::new(0),
        }
    }
}

impl InFlight for Counters {
    fn started(&self) {
        self.in_flight.fetch_add(1, Relaxed);
    }

    fn finished(&self, elapsed: Duration) {
        self.in_flight.fetch_sub(1, Relaxed);
        self.attempt_durations.observe(elapsed);
    }

    fn retrying(&self, cause: &Fault) {
        self.retries.count(cause);
    }

    fn limit(&self, limit: usize) {
        self.concurrency_limit.store(limit as u64, Relaxed);
    }

    fn transient_fault(&self) {
        self.transient_faults.fetch_add(1, Relaxed);
    }
}

/// The outcome of one input file.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FileReport {
    pub path: PathBuf,
    /// Records and malformed records parsed from the file.
    pub records: u64,
    /// Records an earlier run already handled, so this one did not send.
    pub skipped: u64,
    /// Records sent again after a restart because an earlier run may have
    /// sent them without seeing the result.
    pub replayed: u64,
    /// Records left unsent because the run was stopping; the next run
    /// sends them.
    pub abandoned: u64,
    pub delivered: u64,
    pub delivered_first_try: u64,
    pub delivered_after_retries: u64,
    /// Retries made, not counting first attempts.
    pub retries: u64,
    pub dead_lettered: u64,
    pub rejected: u64,
    /// Dead-letter and rejected files written for this file.
    pub dead_letter_files: Vec<PathBuf>,
    /// The reason the file was stopped before its end, if it was.
    pub error: Option<String>,
    /// Whether a signal stopped the run during this file.
    pub interrupted: bool,
    /// Whether every record of the file is handled.
    pub completed: bool,
    /// Whether the ledger showed the file as completed, so it was skipped.
    pub already_completed: bool,
}

/// The outcome of the whole run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunReport {
    pub files: Vec<FileReport>,
    /// The signal that stopped the run, such as `SIGINT`.
    pub interrupted_by: Option<String>,
    /// Dead-letter and rejected files waiting in the dead-letter directory
    /// when the run ended, from this run or earlier ones.
    pub pending_dead_letter_files: usize,
    pub breaker_openings: u64,
    /// The adaptive concurrency limit, when `http.concurrency` is
    /// `"adaptive"`.
    pub adaptive_limit: Option<AdaptiveLimit>,
    pub elapsed_seconds: f64,
}

/// The last and highest values of an adaptive concurrency limit in a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct AdaptiveLimit {
    /// The limit when the run ended.
    pub last: usize,
    /// The highest limit of the run.
    pub highest: usize,
}

impl RunReport {
    fn total(&self, field: impl Fn(&FileReport) -> u64) -> u64 {
        self.files.iter().map(field).sum()
    }

    /// Returns the documented exit status: 130 or 143 when SIGINT or
    /// SIGTERM stopped the run, 1 when a file could not be read to its end,
    /// 3 when some records were dead-lettered or rejected, and 0 when every
    /// record was delivered.
    pub fn exit_code(&self) -> u8 {
        match self.interrupted_by.as_deref() {
            Some("SIGTERM") => return 143,
            Some(_) => return 130,
            None => {}
        }
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
        let failed = self
            .files
            .iter()
            .filter(|f| f.error.is_some() || f.interrupted)
            .count();
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
        if let Some(limit) = self.adaptive_limit {
            writeln!(
                out,
                "  concurrency    adaptive: {} at the end, {} at the highest",
                limit.last, limit.highest
            )?;
        }
        let skipped = self.total(|f| f.skipped);
        let replayed = self.total(|f| f.replayed);
        if skipped + replayed > 0 {
            writeln!(
                out,
                "  resumed        {skipped} skipped as already handled, {replayed} replayed"
            )?;
        }
        writeln!(
            out,
            "  elapsed        {:.2}s ({rate:.0} records/s)",
            self.elapsed_seconds
        )?;
        if self.pending_dead_letter_files > 0 {
            let files = count(
                self.pending_dead_letter_files as u64,
                "dead-letter or rejected file",
                "dead-letter or rejected files",
            );
            writeln!(
                out,
                "  waiting        {files} in the dead-letter directory; send dead letters with \
                 sluice reprocess, and rejected records once they are fixed"
            )?;
        }
        if let Some(signal) = &self.interrupted_by {
            let abandoned = self.total(|f| f.abandoned);
            writeln!(
                out,
                "  interrupted    by {signal}; {abandoned} records left for the next run"
            )?;
        }
        if self.files.len() > 1 {
            for file in &self.files {
                file.write_line(out)?;
            }
        }
        for file in &self.files {
            if file.already_completed {
                writeln!(
                    out,
                    "  skipped        {}: completed by an earlier run (--force sends it again)",
                    file.path.display()
                )?;
            }
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

impl FileReport {
    fn write_line(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(
            out,
            "  file           {}: parsed {}, delivered {} ({} first try, {} after retries), \
             replayed {}, skipped {}, dead-lettered {}, rejected {}",
            self.path.display(),
            self.records,
            self.delivered,
            self.delivered_first_try,
            self.delivered_after_retries,
            self.replayed,
            self.skipped,
            self.dead_lettered,
            self.rejected
        )
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

    /// Sets the number of input bytes the bar counts up to.
    pub fn set_total(&self, total_bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(total_bytes);
        }
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

/// Formats `number` with the singular or the plural noun.
pub(crate) fn count(number: u64, singular: &str, plural: &str) -> String {
    let noun = if number == 1 { singular } else { plural };
    format!("{number} {noun}")
}
