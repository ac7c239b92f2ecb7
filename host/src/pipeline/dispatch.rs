//! The sending side of a file: per-key ordering, delivery tasks, dead
//! letters and progress checkpoints.
//!
//! Ordering rule: records with the same non-empty key are sent one at a
//! time, in file order. A record whose key has one in flight waits in that
//! key's queue. When a record is dead-lettered or rejected, every later
//! record with the same key follows it into the same file instead of being
//! sent, so reprocessing that file, which replays it in order, can never
//! let an older value overwrite a newer one. The rule holds for later
//! files of the same run, whose dead-letter files sort after this one's,
//! and across restarts: a resumed run learns from the sidecars which
//! records of this file were held before. Malformed records have no key,
//! so they hold nothing back.
//!
//! At most `max_pending` records are held between reading and completion;
//! beyond that, the dispatcher stops taking messages and the reader blocks.
//!
//! Checkpoints: a record counts as handled once it is delivered, or once
//! the dead-letter sink has synced it to disk. The [`Watermark`] of handled
//! records goes to the ledger at most every [`CHECKPOINT_INTERVAL`] and at
//! the end of the file.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::BuildHasher as _;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::{Fuse, FusedFuture as _};
use futures_util::stream::{FuturesUnordered, StreamExt as _};
use futures_util::FutureExt as _;
use tokio::sync::{mpsc, watch};

use super::reader::{Item, Message};
use crate::dead_letter::{DeadLetterSink, Kind, SidecarEntry, Written, SIDECAR_VERSION};
use crate::delivery::breaker::{BreakerState, Transition};
use crate::delivery::{Delivery, Event, Outcome, PreparedRequest, Sender, Slot};
use crate::ledger::{Ledger, LedgerEntry, Watermark, LEDGER_VERSION};
use crate::plugin::{Position, Record};
use crate::report::{Counters, FileReport};

/// Minimum time between two ledger writes for one file.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);

/// The original source and position of a record, for sidecar entries and
/// idempotency keys.
#[derive(Clone, Debug)]
pub struct Origin {
    pub source: String,
    pub record: u64,
    pub line: u64,
    /// The idempotency key of the record's requests.
    pub idempotency_key: String,
}

/// Maps a record of the file being read to its origin. For a first run
/// that is the file itself; for a dead-letter file it is the source named
/// in the sidecar.
pub trait Origins: Send + Sync {
    fn origin(&self, record: &Record) -> Origin;

    /// Returns the idempotency key of the record's requests, the same as
    /// [`Origins::origin`] gives.
    fn idempotency_key(&self, record: &Record) -> String {
        self.origin(record).idempotency_key
    }

    /// Returns whether a record has no sidecar line: a record written just
    /// before a crash, which never counted as handled and is not sent.
    fn orphaned(&self, _record_number: u64) -> bool {
        false
    }
}

/// The progress an earlier run of the same file left behind.
#[derive(Debug, Default)]
pub struct Resume {
    /// Every record up to this number is handled.
    pub skip_through: u64,
    /// The highest record number sent at least once.
    pub dispatched_through: u64,
    /// Records already in dead-letter or rejected files.
    pub written: Written,
}

/// The ledger entry that the dispatcher updates.
pub struct Checkpoint {
    pub ledger: Ledger,
    pub input: PathBuf,
    /// The input's [`crate::dead_letter::input_name`], for sidecar entries.
    pub input_name: String,
    pub fingerprint: String,
}

struct Pending {
    record: Record,
    request: PreparedRequest,
    /// The hash of `record.key`, computed once per record.
    key_hash: u64,
}

struct Finished {
    pending: Pending,
    delivery: Delivery,
}

/// One record's delivery, from its first attempt to its outcome.
type InFlight = Pin<Box<dyn Future<Output = Finished> + Send>>;

/// The fixed parts of a [`Dispatcher`].
pub struct DispatchContext<'a> {
    pub sender: Arc<Sender>,
    pub sink: &'a mut DeadLetterSink,
    pub origins: &'a dyn Origins,
    pub counters: Arc<Counters>,
    pub max_pending: usize,
    pub checkpoint: Checkpoint,
    pub shutdown: watch::Receiver<bool>,
}

/// Sends the records of one file and writes its dead letters.
///
/// The deliveries are futures that the dispatcher polls itself, not tasks
/// of their own: a spawned task per record, with its scheduling and
/// wake-ups, cost more CPU time than the rest of the dispatcher.
pub struct Dispatcher<'a> {
    context: DispatchContext<'a>,
    deliveries: FuturesUnordered<InFlight>,
    // Records that may be sent, in order, waiting for a free slot. A
    // delivery starts only once it has one, so that a record waiting for
    // its turn costs no future and no waker.
    ready: VecDeque<Pending>,
    // A key's hash is present while one of the key's records is in
    // flight. Its queue contains the key's later records. Keys whose hashes
    // collide share a queue, which only makes them wait for each other.
    queues: HashMap<u64, VecDeque<Pending>, foldhash::fast::RandomState>,
    key_hasher: foldhash::fast::RandomState,
    // Keys with a record in a dead-letter or rejected file, with that
    // record's number and file: later records of the key follow it there.
    held: HashMap<String, (u64, Kind)>,
    // The keys this dispatcher itself sent to a dead-letter or rejected
    // file, for later files of the run.
    newly_held: HashMap<String, Kind>,
    // Records in flight or queued behind their key.
    pending: usize,
    resume: Resume,
    watermark: Watermark,
    // Handled records whose dead-letter writes await the next sync.
    unsynced: Vec<u64>,
    // The highest record number sent at least once, updated by the
    // delivery tasks as first attempts go out.
    dispatched_through: Arc<AtomicU64>,
    last_checkpoint: Option<(Instant, u64)>,
    report: FileReport,
}

impl<'a> Dispatcher<'a> {
    /// Creates a dispatcher whose report starts from `report`. `held` are
    /// keys that earlier files of the run sent to a dead-letter or rejected
    /// file; every record of them in this file follows.
    pub fn new(
        context: DispatchContext<'a>,
        resume: Resume,
        held: &HashMap<String, Kind>,
        report: FileReport,
    ) -> Self {
        let mut initially_held = resume.written.held_keys.clone();
        for (key, kind) in held {
            initially_held.insert(key.clone(), (0, *kind));
        }
        Dispatcher {
            context,
            deliveries: FuturesUnordered::new(),
            ready: VecDeque::new(),
            queues: HashMap::default(),
            key_hasher: foldhash::fast::RandomState::default(),
            held: initially_held,
            newly_held: HashMap::new(),
            pending: 0,
            watermark: Watermark::starting_at(resume.skip_through),
            dispatched_through: Arc::new(AtomicU64::new(resume.dispatched_through)),
            resume,
            unsynced: Vec::new(),
            last_checkpoint: None,
            report,
        }
    }

    /// Consumes the reader's messages until the file is done, or the run
    /// is stopping, and every record sent is finished. Returns the report
    /// and the keys now held in a dead-letter or rejected file.
    ///
    /// # Errors
    ///
    /// Fails only when a dead-letter file or the ledger cannot be written.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<Message>,
    ) -> std::io::Result<(FileReport, HashMap<String, Kind>)> {
        let mut reading = true;
        let mut shutdown = self.context.shutdown.clone();
        // The wait for a slot for the first record in `ready`, kept across
        // turns of the loop so that it keeps its place in the queue.
        let mut next_slot = std::pin::pin!(Fuse::terminated());
        while reading || !self.deliveries.is_empty() || !self.ready.is_empty() {
            self.start_ready();
            if !self.ready.is_empty() && next_slot.is_terminated() {
                next_slot.set(self.context.sender.slot().fuse());
            }
            tokio::select! {
                message = rx.recv(), if reading && self.pending < self.context.max_pending => {
                    match message {
                        None => reading = false,
                        Some(message) => reading = self.on_message(message)?,
                    }
                }
                Some(finished) = self.deliveries.next(), if !self.deliveries.is_empty() => {
                    self.on_finished(finished)?;
                    while let Some(Some(finished)) = self.deliveries.next().now_or_never() {
                        self.on_finished(finished)?;
                    }
                    self.sync()?;
                }
                slot = next_slot.as_mut(), if !next_slot.is_terminated() => {
                    if let Some(pending) = self.ready.pop_front() {
                        self.launch(pending, slot);
                    }
                }
                _ = crate::shutdown::stopped(&mut shutdown), if !self.report.interrupted => {
                    // Stop reading; deliveries finish their current attempt.
                    self.report.interrupted = true;
                    reading = false;
                    rx.close();
                }
            }
        }
        self.sync()?;
        let completed = !self.report.interrupted
            && self.report.error.is_none()
            && self.watermark.is_caught_up();
        self.save_checkpoint(completed, true)?;
        self.report.completed = completed;
        let files = self
            .context
            .sink
            .files()
            .into_iter()
            .map(|(_, path, _)| path);
        self.report.dead_letter_files = files.collect();
        Ok((self.report, self.newly_held))
    }

    /// Handles one message; returns whether more messages follow.
    fn on_message(&mut self, message: Message) -> std::io::Result<bool> {
        match message {
            Message::Preamble(preamble) => self.context.sink.set_preamble(preamble),
            Message::Stopped { position, message } => {
                let at = position
                    .map(|p| format!(" (after record {}, line {})", p.record_number, p.line))
                    .unwrap_or_else(|| " (before the first record)".to_owned());
                self.report.error = Some(format!("{message}{at}"));
                return Ok(false);
            }
            Message::Items(items) => {
                for item in items {
                    self.on_item(item)?;
                }
                self.sync()?;
            }
        }
        Ok(true)
    }

    fn on_item(&mut self, item: Item) -> std::io::Result<()> {
        let record_number = item.position().record_number;
        self.report.records += 1;
        if record_number <= self.resume.skip_through {
            self.report.skipped += 1;
            return Ok(());
        }
        self.watermark.read(record_number);
        if self.resume.written.records.contains(&record_number) {
            tracing::debug!(
                record = record_number,
                "skipping a record already in a dead-letter file"
            );
            self.report.skipped += 1;
            self.unsynced.push(record_number);
            return Ok(());
        }
        // A key's records go out one at a time, so a record that an earlier
        // run wrote to a dead-letter file was only sent, or held, after
        // every earlier record of its key was delivered. Sending those
        // earlier ones again would put an older value after a newer one.
        let key = match &item {
            Item::Ready { record, .. } | Item::Unsendable { record, .. } => record.key.as_str(),
            Item::Malformed(_) => "",
        };
        let superseded = !key.is_empty()
            && self
                .resume
                .written
                .latest
                .get(key)
                .is_some_and(|latest| record_number < *latest);
        if superseded {
            tracing::debug!(
                record = record_number,
                key,
                "skipping a record superseded by a later dead letter"
            );
            self.report.skipped += 1;
            self.unsynced.push(record_number);
            return Ok(());
        }
        if self.context.origins.orphaned(record_number) {
            tracing::warn!(
                record = record_number,
                "skipping a record without a sidecar line, left by a crash; its source's rerun \
                 sends it"
            );
            self.report.skipped += 1;
            self.unsynced.push(record_number);
            return Ok(());
        }

        match item {
            Item::Ready { record, request } => {
                let key_hash = self.key_hasher.hash_one(&record.key);
                self.submit(Pending {
                    record,
                    request,
                    key_hash,
                })
            }
            Item::Unsendable { record, reason } => {
                warn_unsent(&record, &reason);
                let entry = self.entry(Kind::Rejected, &record, 0, None, reason);
                self.write(&record, entry)?;
                self.hold_key(&record, Kind::Rejected);
                Ok(())
            }
            Item::Malformed(bad) => {
                let record = Record {
                    position: bad.position,
                    key: String::new(),
                    raw: bad.raw,
                };
                let reason = format!("malformed record: {}", bad.message);
                warn_unsent(&record, &reason);
                let entry = self.entry(Kind::Rejected, &record, 0, None, reason);
                self.write(&record, entry)
            }
        }
    }

    /// Returns the file that `record` must follow an earlier record of its
    /// key into, if any.
    fn held_in(&self, record: &Record) -> Option<Kind> {
        let (from, kind) = self.held.get(&record.key)?;
        (record.position.record_number > *from).then_some(*kind)
    }

    fn hold_key(&mut self, record: &Record, kind: Kind) {
        if record.key.is_empty() {
            return;
        }
        self.newly_held.entry(record.key.clone()).or_insert(kind);
        let number = record.position.record_number;
        let held = self
            .held
            .entry(record.key.clone())
            .or_insert((number, kind));
        if number < held.0 {
            *held = (number, kind);
        }
    }

    fn submit(&mut self, pending: Pending) -> std::io::Result<()> {
        if pending.record.key.is_empty() {
            self.spawn(pending);
        } else if let Some(kind) = self.held_in(&pending.record) {
            self.follow(pending, kind)?;
        } else if let Some(queue) = self.queues.get_mut(&pending.key_hash) {
            self.pending += 1;
            queue.push_back(pending);
        } else {
            self.queues.insert(pending.key_hash, VecDeque::new());
            self.spawn(pending);
        }
        Ok(())
    }

    /// Queues `pending` to start as soon as a slot is free.
    fn spawn(&mut self, pending: Pending) {
        self.pending += 1;
        self.ready.push_back(pending);
    }

    /// Starts records from `ready` while slots are free.
    fn start_ready(&mut self) {
        while !self.ready.is_empty() {
            let Some(slot) = self.context.sender.try_slot() else {
                return;
            };
            if let Some(pending) = self.ready.pop_front() {
                self.launch(pending, slot);
            }
        }
    }

    /// Starts the delivery of `pending`, whose first attempt uses `slot`.
    fn launch(&mut self, pending: Pending, slot: Slot) {
        let sender = self.context.sender.clone();
        let counters = self.context.counters.clone();
        let dispatched = self.dispatched_through.clone();
        let pending = Box::new(pending);
        let delivery = async move {
            let position = &pending.record.position;
            let key = pending.record.key.as_str();
            let mut retrying = false;
            let mut on_event = |event: Event| {
                if let Event::FirstAttempt = event {
                    dispatched.fetch_max(position.record_number, Relaxed);
                    return;
                }
                if matches!(event, Event::Retry { .. }) && !retrying {
                    retrying = true;
                    counters.retrying.fetch_add(1, Relaxed);
                }
                log_event(&event, position, key);
            };
            let seed = position.record_number;
            let delivery = sender
                .deliver(&pending.request, seed, Some(slot), &mut on_event)
                .await;
            if retrying {
                counters.retrying.fetch_sub(1, Relaxed);
            }
            Finished {
                pending: *pending,
                delivery,
            }
        };
        self.deliveries.push(Box::pin(delivery));
    }

    fn on_finished(&mut self, finished: Finished) -> std::io::Result<()> {
        self.pending -= 1;
        let Finished { pending, delivery } = finished;
        let record = &pending.record;
        let attempts = delivery.attempts;
        self.report.retries += u64::from(attempts.saturating_sub(1));
        let record_number = record.position.record_number;
        if attempts > 0 && record_number <= self.resume.dispatched_through {
            self.report.replayed += 1;
        }

        match delivery.outcome {
            Outcome::Delivered { .. } => {
                tracing::debug!(
                    record = record.position.record_number,
                    key = %record.key,
                    attempts,
                    "record delivered"
                );
                self.report.delivered += 1;
                if attempts == 1 {
                    self.report.delivered_first_try += 1;
                } else {
                    self.report.delivered_after_retries += 1;
                }
                self.context.counters.delivered.fetch_add(1, Relaxed);
                self.unsynced.push(record.position.record_number);
            }
            Outcome::Abandoned => {
                // Not handled: the ledger stays below it, and the rerun
                // sends it again under the same idempotency key.
                self.report.abandoned += 1;
            }
            Outcome::Exhausted(detail) => {
                let status = detail.fault.status().map(|s| s.as_u16());
                let error = describe(&detail);
                tracing::warn!(
                    record = record.position.record_number,
                    line = record.position.line,
                    key = %record.key,
                    attempts,
                    status,
                    error = %error,
                    "record dead-lettered after running out of retries"
                );
                let entry = self.entry(Kind::DeadLetter, record, attempts, status, error);
                self.write(record, entry)?;
                self.hold_key(record, Kind::DeadLetter);
            }
            Outcome::Rejected(detail) => {
                let status = detail.fault.status().map(|s| s.as_u16());
                let error = describe(&detail);
                tracing::warn!(
                    record = record.position.record_number,
                    line = record.position.line,
                    key = %record.key,
                    attempts,
                    status,
                    error = %error,
                    "record rejected by the API"
                );
                let entry = self.entry(Kind::Rejected, record, attempts, status, error);
                self.write(record, entry)?;
                self.hold_key(record, Kind::Rejected);
            }
        }

        if !pending.record.key.is_empty() {
            self.release_key(pending.key_hash)?;
        }
        Ok(())
    }

    /// Starts the next queued record of the key with `key_hash`, or frees
    /// the key.
    fn release_key(&mut self, key_hash: u64) -> std::io::Result<()> {
        loop {
            let Some(queue) = self.queues.get_mut(&key_hash) else {
                return Ok(());
            };
            let Some(next) = queue.pop_front() else {
                self.queues.remove(&key_hash);
                return Ok(());
            };
            self.pending -= 1;
            if let Some(kind) = self.held_in(&next.record) {
                self.follow(next, kind)?;
            } else {
                self.spawn(next);
                return Ok(());
            }
        }
    }

    /// Writes `pending` unsent behind an earlier record of its key.
    fn follow(&mut self, pending: Pending, kind: Kind) -> std::io::Result<()> {
        let earlier = match kind {
            Kind::DeadLetter => "dead-lettered",
            Kind::Rejected => "rejected",
        };
        let reason = format!("not sent: an earlier record with the same key was {earlier}");
        tracing::warn!(
            record = pending.record.position.record_number,
            line = pending.record.position.line,
            key = %pending.record.key,
            "record held behind an earlier record with the same key that was {earlier}"
        );
        let entry = self.entry(kind, &pending.record, 0, None, reason);
        self.write(&pending.record, entry)
    }

    fn entry(
        &self,
        kind: Kind,
        record: &Record,
        attempts: u32,
        status: Option<u16>,
        error: String,
    ) -> SidecarEntry {
        let origin = self.context.origins.origin(record);
        SidecarEntry {
            version: SIDECAR_VERSION,
            kind,
            source: origin.source,
            record: origin.record,
            line: origin.line,
            key: record.key.clone(),
            attempts,
            status,
            error,
            time: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            idempotency_key: Some(origin.idempotency_key),
            input_fingerprint: Some(self.context.checkpoint.fingerprint.clone()),
            input_record: Some(record.position.record_number),
            input_file: Some(self.context.checkpoint.input_name.clone()),
        }
    }

    fn write(&mut self, record: &Record, entry: SidecarEntry) -> std::io::Result<()> {
        match entry.kind {
            Kind::DeadLetter => {
                self.report.dead_lettered += 1;
                self.context.counters.dead_lettered.fetch_add(1, Relaxed);
            }
            Kind::Rejected => {
                self.report.rejected += 1;
                self.context.counters.rejected.fetch_add(1, Relaxed);
            }
        }
        self.unsynced.push(record.position.record_number);
        self.context.sink.write(&record.raw, &entry).map_err(|err| {
            let message = format!(
                "failed to write record {} (line {}) to the dead-letter directory: {err}",
                entry.record, entry.line
            );
            std::io::Error::new(err.kind(), message)
        })
    }

    /// Flushes dead letters, then counts the records they complete as
    /// handled and checkpoints when it is time.
    fn sync(&mut self) -> std::io::Result<()> {
        self.context.sink.sync()?;
        for record in self.unsynced.drain(..) {
            self.watermark.handled(record);
        }
        self.save_checkpoint(false, false)
    }

    fn save_checkpoint(&mut self, completed: bool, force: bool) -> std::io::Result<()> {
        let through = self.watermark.through();
        if let Some((at, saved)) = self.last_checkpoint {
            let due = at.elapsed() >= CHECKPOINT_INTERVAL && saved != through;
            if !force && !due {
                return Ok(());
            }
        } else if !force && through == self.resume.skip_through {
            return Ok(());
        }
        let checkpoint = &self.context.checkpoint;
        let entry = LedgerEntry {
            version: LEDGER_VERSION,
            path: checkpoint.input.display().to_string(),
            fingerprint: checkpoint.fingerprint.clone(),
            handled_through: through,
            dispatched_through: self.dispatched_through.load(Relaxed),
            completed,
            updated: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        };
        checkpoint.ledger.store(&checkpoint.input, &entry)?;
        self.last_checkpoint = Some((Instant::now(), through));
        Ok(())
    }
}

fn warn_unsent(record: &Record, reason: &str) {
    tracing::warn!(
        record = record.position.record_number,
        line = record.position.line,
        key = %record.key,
        error = %reason,
        "record rejected without being sent"
    );
}

fn describe(detail: &crate::delivery::FailureDetail) -> String {
    match &detail.body {
        Some(body) => format!("{}: {body}", detail.fault),
        None => detail.fault.to_string(),
    }
}

fn log_event(event: &Event, position: &Position, key: &str) {
    let record = position.record_number;
    let line = position.line;
    match event {
        Event::Retry {
            attempt,
            max_attempts,
            fault,
            delay,
        } => tracing::debug!(
            record,
            line,
            key,
            attempt,
            max_attempts,
            status = fault.status().map(|s| s.as_u16()),
            delay_ms = delay.as_millis() as u64,
            error = %fault,
            "retrying request"
        ),
        Event::FirstAttempt => {}
        Event::HeldByBreaker { attempt } => tracing::debug!(
            record,
            line,
            key,
            attempt,
            "request out of retries while the breaker is open; waiting for it to close"
        ),
        Event::Breaker(Transition { from, to }) => {
            let message = match to {
                BreakerState::Open if *from == BreakerState::HalfOpen => {
                    "circuit breaker reopened: the probe request failed"
                }
                BreakerState::Open => "circuit breaker opened: requests and reading paused",
                BreakerState::HalfOpen => "circuit breaker half-open: sending one probe request",
                BreakerState::Closed => "circuit breaker closed: resuming",
            };
            tracing::warn!(record, line, key, state = to.as_str(), "{message}");
        }
    }
}
