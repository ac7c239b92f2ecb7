//! The summary of a `sluice watch` process: totals over every file it
//! took and every dead-letter round, kept as counts so that a service
//! that runs for months does not grow a list of files.

use std::io::Write;
use std::path::PathBuf;

use serde::Serialize;

use crate::report::{count, FileReport, RunReport};

/// Record counts summed over files.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Totals {
    pub records: u64,
    pub delivered: u64,
    pub delivered_first_try: u64,
    pub delivered_after_retries: u64,
    pub retries: u64,
    pub dead_lettered: u64,
    pub rejected: u64,
    pub skipped: u64,
    pub replayed: u64,
    pub abandoned: u64,
}

impl Totals {
    /// Adds the counts of one file.
    pub fn add(&mut self, file: &FileReport) {
        self.records += file.records;
        self.delivered += file.delivered;
        self.delivered_first_try += file.delivered_first_try;
        self.delivered_after_retries += file.delivered_after_retries;
        self.retries += file.retries;
        self.dead_lettered += file.dead_lettered;
        self.rejected += file.rejected;
        self.skipped += file.skipped;
        self.replayed += file.replayed;
        self.abandoned += file.abandoned;
    }
}

/// The outcome of a `sluice watch` process.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WatchReport {
    /// The inbox directory.
    pub inbox: PathBuf,
    /// Files whose records were all handled, those that an earlier run
    /// completed included.
    pub files_completed: u64,
    /// Times a file stopped early and stayed in the inbox.
    pub files_stopped: u64,
    /// Counts over the files taken from the inbox.
    pub files: Totals,
    /// Rounds of dead-letter reprocessing.
    pub reprocess_rounds: u64,
    /// Dead-letter files that reprocessing sent and removed.
    pub reprocessed_files: u64,
    /// Counts over the dead-letter files reprocessed.
    pub reprocessed: Totals,
    /// The signal that stopped the process, such as `SIGTERM`.
    pub interrupted_by: Option<String>,
    /// Dead-letter and rejected files waiting when the process stopped.
    pub pending_dead_letter_files: usize,
    pub breaker_openings: u64,
    pub elapsed_seconds: f64,
}

impl WatchReport {
    /// Adds a round of dead-letter reprocessing.
    pub fn add_round(&mut self, round: &RunReport) {
        self.reprocess_rounds += 1;
        for file in &round.files {
            self.reprocessed.add(file);
            if file.completed {
                self.reprocessed_files += 1;
            }
        }
    }

    /// Returns the exit status: 130 or 143 after SIGINT or SIGTERM, the
    /// only ways a watch ends without an error.
    pub fn exit_code(&self) -> u8 {
        match self.interrupted_by.as_deref() {
            Some("SIGTERM") => 143,
            _ => 130,
        }
    }

    /// Writes the human-readable summary.
    pub fn write_summary(&self, out: &mut impl Write) -> std::io::Result<()> {
        let files = &self.files;
        writeln!(out, "summary of watching {}", self.inbox.display())?;
        writeln!(
            out,
            "  files          {} completed, {} stopped early",
            self.files_completed, self.files_stopped
        )?;

        writeln!(out, "  records read   {}", files.records)?;
        writeln!(
            out,
            "  delivered      {} ({} first try, {} after retries)",
            files.delivered, files.delivered_first_try, files.delivered_after_retries
        )?;
        writeln!(out, "  retries        {}", files.retries)?;
        writeln!(out, "  dead-lettered  {}", files.dead_lettered)?;
        writeln!(out, "  rejected       {}", files.rejected)?;

        if files.skipped + files.replayed > 0 {
            writeln!(
                out,
                "  resumed        {} skipped as already handled, {} replayed",
                files.skipped, files.replayed
            )?;
        }

        if self.reprocess_rounds > 0 {
            let again = &self.reprocessed;
            writeln!(
                out,
                "  reprocessed    {}, {} done: {} records delivered, {} dead-lettered again, \
                 {} rejected",
                count(self.reprocess_rounds, "round", "rounds"),
                count(
                    self.reprocessed_files,
                    "dead-letter file",
                    "dead-letter files"
                ),
                again.delivered,
                again.dead_lettered,
                again.rejected
            )?;
        }

        writeln!(out, "  breaker opened {} times", self.breaker_openings)?;
        writeln!(out, "  elapsed        {:.2}s", self.elapsed_seconds)?;

        if self.pending_dead_letter_files > 0 {
            writeln!(
                out,
                "  waiting        {} in the dead-letter directory; send dead letters with \
                 sluice reprocess, and rejected records once they are fixed",
                count(
                    self.pending_dead_letter_files as u64,
                    "dead-letter or rejected file",
                    "dead-letter or rejected files"
                )
            )?;
        }
        if let Some(signal) = &self.interrupted_by {
            let abandoned = files.abandoned + self.reprocessed.abandoned;
            writeln!(
                out,
                "  interrupted    by {signal}; {abandoned} records left for the next run"
            )?;
        }
        Ok(())
    }
}
