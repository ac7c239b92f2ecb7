//! `sluice watch`: a service that ingests each file that appears in an
//! inbox directory, one at a time, through the same [`Pipeline`] as
//! `sluice run`, with its ledger, dead letters and circuit breaker.
//!
//! The service learns of files from file system events ([`events`]) and
//! from a listing of the inbox every `watch.rescan_interval`, which also
//! finds the files present at start and any whose events were missed.
//! [`Inbox`] decides when a file is complete: at once when it was renamed
//! into the inbox, otherwise once its size and modification time stayed
//! the same for `watch.settle_time`. Complete files go oldest first, by
//! modification time, then name.
//!
//! A file whose records are all handled is moved to the done directory,
//! deleted or kept (`watch.on_complete`). The ledger keeps a restart from
//! sending it again in every mode: a completed file found again is moved
//! or deleted without being read, or, when kept, skipped quietly. A file
//! that stops early stays in the inbox and is taken again only once it
//! changes, or after a restart.
//!
//! While the circuit breaker is open, no file starts; the breaker is
//! shared by every file, by dead-letter reprocessing, and across
//! configuration reloads. With `watch.reprocess_dead_letters`, the
//! dead-letter files are sent again through the code path of
//! `sluice reprocess` once the breaker is no longer open and no attempt
//! has failed for `watch.reprocess_after`, before the next file. A
//! failure during that round writes records to new dead-letter files and
//! starts the wait over.
//!
//! The service runs between files: a reloaded configuration applies from
//! the next file on, and a stop signal drains the current file as for
//! `run`.

mod done;
mod events;
mod inbox;
mod report;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

pub use self::done::move_to_done;
pub use self::events::{watch_dir, Change};
pub use self::inbox::{Inbox, Stamp, State};
pub use self::report::{Totals, WatchReport};
use crate::config::{OnComplete, Settings, DEFAULT_DONE_DIR_NAME};
use crate::dead_letter;
use crate::delivery::breaker::BreakerState;
use crate::identity;
use crate::pipeline::{dead_letter_inputs, Input, InputKind, Pipeline};
use crate::report::{Counters, Progress};

/// Builds a pipeline from the configuration as it reads now, keeping the
/// running pipeline's circuit breaker, or returns `None` after logging
/// why the configuration was rejected.
pub type Reload = Box<dyn FnMut(&Pipeline) -> Option<Pipeline> + Send + Sync>;

/// The reason the idle service woke up.
enum Wake {
    Stop,
    Hangup,
    Change(Change),
    Timer,
}

/// The running service.
pub struct Service {
    dir: PathBuf,
    inbox: Inbox,
    pipeline: Pipeline,
    counters: Arc<Counters>,
    shutdown: watch::Receiver<bool>,
    hangups: mpsc::UnboundedReceiver<()>,
    reload: Reload,
    changes: mpsc::UnboundedReceiver<Change>,
    // Events stop when the watcher is dropped.
    _watcher: Option<notify::RecommendedWatcher>,
    report: WatchReport,
    next_rescan: Instant,
    listing_failed: bool,
    breaker_wait_logged: bool,
    // The count of transient faults last seen, and when it last changed.
    faults_seen: u64,
    quiet_since: Instant,
    // Dead-letter files that a round took but could not finish, as when
    // the plugin stops reading them. No round starts for them alone, so
    // they wait for a new dead-letter file or a restart.
    stuck_dead_letters: Vec<PathBuf>,
}

impl Service {
    /// Prepares to watch `dir`, an absolute path without symbolic links,
    /// with `pipeline`. Each message on `hangups` reloads the
    /// configuration through `reload`; `shutdown` turning true stops the
    /// service after the current file drains.
    pub fn new(
        dir: PathBuf,
        pipeline: Pipeline,
        counters: Arc<Counters>,
        shutdown: watch::Receiver<bool>,
        hangups: mpsc::UnboundedReceiver<()>,
        reload: Reload,
    ) -> Service {
        let watch = &pipeline.settings().watch;
        let inbox = Inbox::new(&dir, watch.ignore.clone(), watch.settle_time);
        let (sender, changes) = mpsc::unbounded_channel();
        // Set up before the first listing, so that no file slips between.
        let watcher = match events::watch_dir(&dir, sender) {
            Ok(watcher) => Some(watcher),
            Err(err) => {
                tracing::warn!(
                    error = %err,
                    rescan_interval = %humantime::format_duration(watch.rescan_interval),
                    "file system events are unavailable; new files are found by listing the \
                     inbox every watch.rescan_interval"
                );
                None
            }
        };
        let now = Instant::now();
        Service {
            report: WatchReport {
                inbox: dir.clone(),
                ..WatchReport::default()
            },
            faults_seen: counters.transient_faults.load(Relaxed),
            dir,
            inbox,
            pipeline,
            counters,
            shutdown,
            hangups,
            reload,
            changes,
            _watcher: watcher,
            next_rescan: now,
            listing_failed: false,
            breaker_wait_logged: false,
            quiet_since: now,
            stuck_dead_letters: Vec::new(),
        }
    }

    /// Runs until the stop signal, and returns the totals.
    ///
    /// # Errors
    ///
    /// Fails only when a dead-letter file or the ledger cannot be written,
    /// because going on could lose records.
    pub async fn run(mut self) -> anyhow::Result<WatchReport> {
        let started = std::time::Instant::now();
        let watch = &self.settings().watch;
        tracing::info!(
            inbox = %self.dir.display(),
            on_complete = watch.on_complete.as_str(),
            done_dir = %self.done_dir().display(),
            settle_time = %humantime::format_duration(watch.settle_time),
            reprocess_dead_letters = watch.reprocess_dead_letters,
            "watching the inbox"
        );

        loop {
            if *self.shutdown.borrow() {
                break;
            }
            let now = self.catch_up();
            if self.work(now).await? {
                continue;
            }
            match self.wait(now).await {
                Wake::Stop => break,
                Wake::Hangup => self.reload(),
                Wake::Change(change) => self.apply(change, Instant::now()),
                Wake::Timer => {}
            }
        }

        self.report.breaker_openings = self.pipeline.breaker().openings();
        let dead_letter_dir = &self.settings().dead_letter_dir;
        self.report.pending_dead_letter_files =
            dead_letter::list_dir(dead_letter_dir, true).map_or(0, |files| files.len());
        self.report.elapsed_seconds = started.elapsed().as_secs_f64();
        tracing::info!(
            inbox = %self.dir.display(),
            files_completed = self.report.files_completed,
            files_stopped = self.report.files_stopped,
            "stopped watching the inbox"
        );
        Ok(self.report)
    }

    /// Applies the reloads, events and listings that are due, and returns
    /// the time it looked.
    fn catch_up(&mut self) -> Instant {
        let mut hangup = false;
        while self.hangups.try_recv().is_ok() {
            hangup = true;
        }
        if hangup {
            self.reload();
        }

        let now = Instant::now();
        while let Ok(change) = self.changes.try_recv() {
            self.apply(change, now);
        }
        if now >= self.next_rescan {
            self.rescan(now);
        }
        self.note_faults(now);
        self.update_gauges();
        now
    }

    /// Runs a due round of dead-letter reprocessing, or ingests the next
    /// complete file, unless the breaker is open. Returns whether it did
    /// either.
    async fn work(&mut self, now: Instant) -> anyhow::Result<bool> {
        if self.pipeline.breaker().is_open() {
            if !self.breaker_wait_logged && self.inbox.next_ready(now).is_some() {
                tracing::info!(
                    "circuit breaker open: the next file starts once its open time has passed"
                );
                self.breaker_wait_logged = true;
            }
            return Ok(false);
        }
        self.breaker_wait_logged = false;

        // Dead letters hold older values than the files waiting, so a due
        // round goes first.
        if self.reprocess_due(now) {
            self.reprocess().await?;
            return Ok(true);
        }
        match self.take_ready(now) {
            Some((path, stamp)) => {
                self.ingest(&path, stamp).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn settings(&self) -> &Settings {
        self.pipeline.settings()
    }

    fn done_dir(&self) -> PathBuf {
        match &self.settings().watch.done_dir {
            Some(dir) => dir.clone(),
            None => self.dir.join(DEFAULT_DONE_DIR_NAME),
        }
    }

    /// Waits for a signal, an event, the next settle, listing or
    /// reprocessing time, or the end of the breaker's open time.
    async fn wait(&mut self, now: Instant) -> Wake {
        let mut deadline = self.next_rescan;
        // A settle time that has passed belongs to a file that waits for
        // the breaker, which the breaker's own branch wakes for.
        if let Some(settled) = self.inbox.next_deadline().filter(|at| *at > now) {
            deadline = deadline.min(settled);
        }
        if let Some(reprocess) = self.reprocess_deadline(now) {
            deadline = deadline.min(reprocess);
        }
        let breaker = self.pipeline.breaker().clone();
        let open = breaker.is_open();
        tokio::select! {
            _ = crate::shutdown::stopped(&mut self.shutdown) => Wake::Stop,
            Some(()) = self.hangups.recv() => Wake::Hangup,
            Some(change) = self.changes.recv() => Wake::Change(change),
            _ = tokio::time::sleep_until(deadline) => Wake::Timer,
            _ = breaker.wait_until_not_open(), if open => Wake::Timer,
        }
    }

    fn apply(&mut self, change: Change, now: Instant) {
        match change {
            Change::Written(path) | Change::Gone(path) => self.inbox.observe(&path, now, false),
            Change::RenamedIn(path) => self.inbox.observe(&path, now, true),
            Change::Rescan => self.rescan(now),
        }
    }

    fn rescan(&mut self, now: Instant) {
        self.next_rescan = now + self.settings().watch.rescan_interval;
        match self.inbox.rescan(now) {
            Ok(()) if self.listing_failed => {
                tracing::info!(inbox = %self.dir.display(), "the inbox can be listed again");
                self.listing_failed = false;
            }
            Ok(()) => {}
            Err(err) if !self.listing_failed => {
                tracing::error!(
                    inbox = %self.dir.display(),
                    error = %err,
                    "cannot list the inbox; trying again every watch.rescan_interval"
                );
                self.listing_failed = true;
            }
            Err(_) => {}
        }
    }

    /// Restarts the quiet time before reprocessing when an attempt failed
    /// since the last look.
    fn note_faults(&mut self, now: Instant) {
        let faults = self.counters.transient_faults.load(Relaxed);
        if faults != self.faults_seen {
            self.faults_seen = faults;
            self.quiet_since = now;
        }
    }

    fn update_gauges(&self) {
        let files = &self.counters.files;
        files
            .pending
            .set(gauge_value(self.inbox.count(State::Waiting)));
        files
            .stopped
            .set(gauge_value(self.inbox.count(State::Stopped)));
    }

    /// Returns the next complete file and its stamp, checked once more.
    fn take_ready(&mut self, now: Instant) -> Option<(PathBuf, Stamp)> {
        while let Some(path) = self.inbox.next_ready(now) {
            if let Some(stamp) = self.inbox.confirm(&path, now) {
                return Some((path, stamp));
            }
        }
        None
    }

    async fn ingest(&mut self, path: &Path, stamp: Stamp) -> anyhow::Result<()> {
        // The pipeline counts the file it is handed as pending, then
        // active, then done.
        let waiting = self.inbox.count(State::Waiting).saturating_sub(1);
        self.counters.files.pending.set(gauge_value(waiting));
        let result = self.ingest_file(path, stamp).await;
        self.update_gauges();
        result
    }

    async fn ingest_file(&mut self, path: &Path, stamp: Stamp) -> anyhow::Result<()> {
        if self.completed_earlier(path).await {
            self.counters.files.done.inc();
            self.complete(path, stamp, true);
            return Ok(());
        }

        let breaker = self.pipeline.breaker().clone();
        let ticker = Progress::new(crate::config::ProgressMode::Never, 0)
            .spawn_ticker(self.counters.clone(), breaker);
        let input = Input {
            path: path.to_owned(),
            kind: InputKind::Source,
        };
        let result = self.pipeline.run(std::slice::from_ref(&input)).await;
        ticker.abort();
        let run = result?;
        let now = Instant::now();
        self.note_faults(now);

        // No report means the stop signal came before the file started.
        let Some(file) = run.files.into_iter().next() else {
            return Ok(());
        };
        self.report.files.add(&file);
        if file.interrupted {
            return Ok(());
        }
        if file.completed {
            if self.unchanged_since_taken(path, stamp) {
                self.complete(path, stamp, false);
            }
            return Ok(());
        }
        if !path.exists() {
            tracing::info!(file = %path.display(), "file removed from the inbox while it was read");
            self.inbox.forget(path);
            return Ok(());
        }
        let error = file
            .error
            .unwrap_or_else(|| "not every record was handled".to_owned());
        tracing::warn!(
            file = %path.display(),
            error = %error,
            "file stays in the inbox until it changes or sluice restarts; fix the cause in the \
             error, then replace the file"
        );
        self.report.files_stopped += 1;
        self.inbox.set_state(path, stamp, State::Stopped, now);
        Ok(())
    }

    /// Returns whether `path` is still the file that was taken with
    /// `stamp`, so that completing it moves or deletes the file that was
    /// read. A file removed while it was read is forgotten. A file that a
    /// writer extended, or that another file replaced by a rename, stays
    /// in the inbox and is taken again as a new file once it settles.
    fn unchanged_since_taken(&mut self, path: &Path, stamp: Stamp) -> bool {
        let current = match std::fs::metadata(path) {
            Ok(metadata) => Stamp::of(&metadata),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                tracing::info!(
                    file = %path.display(),
                    "file removed from the inbox while it was read; every record it held when \
                     read is handled"
                );
                self.inbox.forget(path);
                if let Err(err) = self.pipeline.ledger().remove(path) {
                    tracing::warn!(file = %path.display(), error = %err, "cannot remove the file's ledger entry");
                }
                return false;
            }
            // Moving or deleting reports any other error.
            Err(_) => return true,
        };
        if current == stamp {
            return true;
        }
        tracing::warn!(
            file = %path.display(),
            "file changed while it was read, by a writer that was not done or by another file \
             renamed over it; it stays in the inbox and is read again from the start once it \
             settles. Write files under an ignored name such as NAME.part and rename them into \
             the inbox when complete"
        );
        self.inbox.forget(path);
        false
    }

    /// Returns whether the ledger shows the file, with its current
    /// content, as completed by an earlier run.
    async fn completed_earlier(&self, path: &Path) -> bool {
        let Ok(Some(entry)) = self.pipeline.ledger().load(path) else {
            return false;
        };
        if !entry.completed {
            return false;
        }
        let owned = path.to_owned();
        let fingerprint = tokio::task::spawn_blocking(move || identity::fingerprint_file(&owned))
            .await
            .expect("fingerprinting does not panic");
        fingerprint.is_ok_and(|fingerprint| fingerprint == entry.fingerprint)
    }

    /// Moves, deletes or keeps a file whose records are all handled,
    /// `earlier` when an earlier run handled them.
    fn complete(&mut self, path: &Path, stamp: Stamp, earlier: bool) {
        self.report.files_completed += 1;
        let now = Instant::now();
        let file = path.display();
        // The ledger entry is named after the absolute path of the file,
        // or of its target when it is a symbolic link.
        let ledger_name = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());

        let outcome = match self.settings().watch.on_complete {
            OnComplete::Keep => {
                if earlier {
                    tracing::debug!(file = %file, "file completed by an earlier run; keeping it");
                }
                self.inbox.set_state(path, stamp, State::Kept, now);
                return;
            }
            OnComplete::Move => {
                let done_dir = self.done_dir();
                match move_to_done(path, &done_dir) {
                    Ok(moved) => {
                        tracing::info!(
                            file = %file,
                            to = %moved.display(),
                            earlier,
                            "file moved to the done directory"
                        );
                        Ok(())
                    }
                    Err(err) => Err(format!(
                        "cannot move it to the done directory {}: {err}",
                        done_dir.display()
                    )),
                }
            }
            OnComplete::Delete => match std::fs::remove_file(path) {
                Ok(()) => {
                    tracing::info!(file = %file, earlier, "file deleted");
                    Ok(())
                }
                Err(err) => Err(format!("cannot delete it: {err}")),
            },
        };

        match outcome {
            Ok(()) => {
                self.inbox.forget(path);
                if let Err(err) = self.pipeline.ledger().remove(&ledger_name) {
                    tracing::warn!(file = %file, error = %err, "cannot remove the file's ledger entry");
                }
            }
            Err(error) => {
                tracing::error!(
                    file = %file,
                    error = %error,
                    "completed file stays in the inbox, and the ledger keeps it from being sent \
                     again; fix the permissions, then restart sluice to finish it"
                );
                self.inbox.set_state(path, stamp, State::Kept, now);
            }
        }
    }

    /// Returns when dead-letter files may be reprocessed next, if that
    /// time is still ahead.
    fn reprocess_deadline(&self, now: Instant) -> Option<Instant> {
        let watch = &self.settings().watch;
        let due = self.quiet_since + watch.reprocess_after;
        (watch.reprocess_dead_letters && due > now).then_some(due)
    }

    /// Returns whether a round of dead-letter reprocessing should start.
    /// It must be turned on, and no attempt may have failed for
    /// `watch.reprocess_after`. Some dead-letter file must also be new
    /// since the last round, or one that the last round finished.
    fn reprocess_due(&mut self, now: Instant) -> bool {
        let watch = &self.settings().watch;
        if !watch.reprocess_dead_letters || now < self.quiet_since + watch.reprocess_after {
            return false;
        }
        let listing = dead_letter::list_dir(&self.settings().dead_letter_dir, false);
        let listing = listing.unwrap_or_default();
        listing
            .iter()
            .any(|file| !self.stuck_dead_letters.contains(file))
    }

    /// Sends the dead-letter files again, oldest first, as
    /// `sluice reprocess` does. When the breaker is still open, because
    /// no request was sent since its open time passed, the round's first
    /// request is the probe.
    async fn reprocess(&mut self) -> anyhow::Result<()> {
        let dead_letter_dir = self.settings().dead_letter_dir.clone();
        let listed = dead_letter::list_dir(&dead_letter_dir, false).unwrap_or_default();
        let inputs = match dead_letter_inputs(std::slice::from_ref(&dead_letter_dir), false) {
            Ok(inputs) => inputs,
            Err(err) => {
                tracing::error!(
                    error = %format!("{err:#}"),
                    "cannot reprocess the dead-letter files; trying again once they change"
                );
                self.stuck_dead_letters = listed;
                return Ok(());
            }
        };
        // Each round that fails again lengthens a file's name, so a record
        // that always fails would at last make a name too long to create.
        let (inputs, retired): (Vec<Input>, Vec<Input>) = inputs
            .into_iter()
            .partition(|input| automatic_rounds(&input.path) < MAX_AUTOMATIC_ROUNDS);
        for input in &retired {
            tracing::warn!(
                file = %input.path.display(),
                rounds = MAX_AUTOMATIC_ROUNDS,
                "dead-letter file failed every automatic reprocessing round; watch no longer \
                 sends it, and later records of its keys are held behind it. Fix the cause its \
                 sidecar names, then run sluice reprocess on the dead-letter directory"
            );
        }
        let retired: Vec<PathBuf> = retired.into_iter().map(|input| input.path).collect();
        if inputs.is_empty() {
            self.stuck_dead_letters = listed;
            return Ok(());
        }
        let breaker = self.pipeline.breaker().state();
        tracing::info!(
            files = inputs.len(),
            breaker = breaker.as_str(),
            "reprocessing dead-letter files"
        );

        let run = self.pipeline.run(&inputs).await?;
        self.note_faults(Instant::now());
        self.report.add_round(&run);
        let completed = run.files.iter().filter(|file| file.completed).count();
        let delivered: u64 = run.files.iter().map(|file| file.delivered).sum();
        let again: u64 = run.files.iter().map(|file| file.dead_lettered).sum();
        tracing::info!(
            files = run.files.len(),
            completed,
            delivered,
            dead_lettered = again,
            breaker = self.pipeline.breaker().state().as_str(),
            "dead-letter reprocessing done"
        );
        if self.pipeline.breaker().state() != BreakerState::Closed || again > 0 {
            tracing::warn!(
                reprocess_after = %humantime::format_duration(self.settings().watch.reprocess_after),
                "some dead letters failed again; the next round waits for watch.reprocess_after \
                 without failures"
            );
        }
        // Files that failed again were replaced by new ones, which the next
        // round takes; those still here under their old names are stuck.
        let left = dead_letter::list_dir(&dead_letter_dir, false).unwrap_or_default();
        self.stuck_dead_letters = left
            .into_iter()
            .filter(|file| retired.contains(file) || inputs.iter().any(|input| input.path == *file))
            .collect();
        Ok(())
    }

    fn reload(&mut self) {
        let Some(pipeline) = (self.reload)(&self.pipeline) else {
            return;
        };
        self.pipeline = pipeline;
        let watch = &self.pipeline.settings().watch;
        self.inbox
            .set_rules(watch.ignore.clone(), watch.settle_time);
        // List the inbox at once, for files that only the old patterns
        // ignored.
        self.next_rescan = Instant::now();
    }
}

/// Reprocessing rounds after which `watch` stops sending a dead-letter
/// file by itself. A round that fails again adds 13 bytes to the file's
/// name, and file names are limited to 255 bytes.
const MAX_AUTOMATIC_ROUNDS: usize = 8;

/// Returns how many reprocessing rounds wrote the dead-letter file at
/// `path`: each adds a `~` and a suffix to its run id.
fn automatic_rounds(path: &Path) -> usize {
    dead_letter::parse_name(path).map_or(0, |name| name.run_id.matches('~').count())
}

/// Converts a file count to a gauge value.
fn gauge_value(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}
