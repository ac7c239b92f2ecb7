//! The sending side of a file: per-key ordering, delivery tasks and
//! dead letters.
//!
//! Ordering rule: records with the same non-empty key are sent one at a
//! time, in file order. A record whose key has one in flight waits in that
//! key's queue. When a record is dead-lettered, every later record with the
//! same key in this file goes to the dead-letter file after it instead of
//! being sent, so reprocessing the dead letters, which replays them in
//! order, can never let an older value overwrite a newer one.
//!
//! At most `max_pending` records are held between reading and completion;
//! beyond that, the dispatcher stops taking messages and the reader blocks.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::Instrument as _;

use super::reader::{Item, Message};
use crate::dead_letter::{DeadLetterSink, Kind, SidecarEntry, SIDECAR_VERSION};
use crate::delivery::breaker::{BreakerState, Transition};
use crate::delivery::{Delivery, Event, Outcome, PreparedRequest, Sender};
use crate::plugin::{Position, Record};
use crate::report::{Counters, FileReport};

/// Where a record originally came from, for sidecar entries.
#[derive(Clone, Debug)]
pub struct Origin {
    pub source: String,
    pub record: u64,
    pub line: u64,
}

/// Maps a position in the file being read to the record's origin. For a
/// first run that is the file itself; for a dead-letter file it is the
/// source named in the sidecar.
pub trait Origins: Send {
    fn origin(&self, position: &Position) -> Origin;
}

struct Pending {
    record: Record,
    request: PreparedRequest,
}

struct Finished {
    pending: Pending,
    delivery: Delivery,
}

/// Sends the records of one file and writes its dead letters.
pub struct Dispatcher<'a> {
    sender: Arc<Sender>,
    sink: &'a mut DeadLetterSink,
    origins: &'a dyn Origins,
    counters: Arc<Counters>,
    max_pending: usize,
    span: tracing::Span,
    tasks: JoinSet<Finished>,
    // A key is present while one of its records is in flight; the queue
    // holds its later records.
    queues: HashMap<String, VecDeque<Pending>>,
    // Keys with a dead-lettered record in this file.
    poisoned: HashSet<String>,
    // Records in flight or queued behind their key.
    pending: usize,
    report: FileReport,
}

impl<'a> Dispatcher<'a> {
    /// Creates a dispatcher whose report starts from `report`.
    pub fn new(
        sender: Arc<Sender>,
        sink: &'a mut DeadLetterSink,
        origins: &'a dyn Origins,
        counters: Arc<Counters>,
        max_pending: usize,
        span: tracing::Span,
        report: FileReport,
    ) -> Self {
        Dispatcher {
            sender,
            sink,
            origins,
            counters,
            max_pending,
            span,
            tasks: JoinSet::new(),
            queues: HashMap::new(),
            poisoned: HashSet::new(),
            pending: 0,
            report,
        }
    }

    /// Consumes the reader's messages until the file is done and every
    /// record is delivered or durably written to a dead-letter file.
    ///
    /// # Errors
    ///
    /// Fails only when a dead-letter file cannot be written.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Message>) -> std::io::Result<FileReport> {
        let mut reading = true;
        while reading || !self.tasks.is_empty() {
            tokio::select! {
                message = rx.recv(), if reading && self.pending < self.max_pending => {
                    match message {
                        None => reading = false,
                        Some(message) => reading = self.on_message(message)?,
                    }
                }
                Some(joined) = self.tasks.join_next() => {
                    self.on_finished(joined.expect("delivery tasks do not panic"))?;
                    while let Some(joined) = self.tasks.try_join_next() {
                        self.on_finished(joined.expect("delivery tasks do not panic"))?;
                    }
                    self.sink.sync()?;
                }
            }
        }
        self.sink.sync()?;
        let files = self.sink.files().into_iter().map(|(_, path, _)| path);
        self.report.dead_letter_files = files.collect();
        Ok(self.report)
    }

    /// Handles one message; returns whether more messages follow.
    fn on_message(&mut self, message: Message) -> std::io::Result<bool> {
        match message {
            Message::Preamble(preamble) => self.sink.set_preamble(preamble),
            Message::Stopped { position, message } => {
                let at = position
                    .map(|p| format!(" (after record {}, line {})", p.record_number, p.line))
                    .unwrap_or_default();
                self.report.error = Some(format!("{message}{at}"));
                return Ok(false);
            }
            Message::Items(items) => {
                for item in items {
                    self.report.records += 1;
                    match item {
                        Item::Ready { record, request } => {
                            self.submit(Pending { record, request })?
                        }
                        Item::Unsendable { record, reason } => {
                            let entry = self.entry(Kind::Rejected, &record, 0, None, reason);
                            self.write(&record.raw, entry)?;
                        }
                        Item::Malformed(bad) => {
                            let record = Record {
                                position: bad.position,
                                key: String::new(),
                                raw: bad.raw,
                            };
                            let reason = format!("malformed record: {}", bad.message);
                            let entry = self.entry(Kind::Rejected, &record, 0, None, reason);
                            self.write(&record.raw, entry)?;
                        }
                    }
                }
                self.sink.sync()?;
            }
        }
        Ok(true)
    }

    fn submit(&mut self, pending: Pending) -> std::io::Result<()> {
        let key = &pending.record.key;
        if key.is_empty() {
            self.spawn(pending);
        } else if self.poisoned.contains(key) {
            self.dead_letter_behind(pending)?;
        } else if let Some(queue) = self.queues.get_mut(key) {
            self.pending += 1;
            queue.push_back(pending);
        } else {
            self.queues.insert(key.clone(), VecDeque::new());
            self.spawn(pending);
        }
        Ok(())
    }

    fn spawn(&mut self, pending: Pending) {
        self.pending += 1;
        let sender = self.sender.clone();
        let counters = self.counters.clone();
        let task = async move {
            let position = pending.record.position;
            let key = pending.record.key.clone();
            let mut retrying = false;
            let mut on_event = |event: Event| {
                if matches!(event, Event::Retry { .. }) && !retrying {
                    retrying = true;
                    counters.retrying.fetch_add(1, Relaxed);
                }
                log_event(&event, &position, &key);
            };
            let seed = position.record_number;
            let delivery = sender.deliver(&pending.request, seed, &mut on_event).await;
            if retrying {
                counters.retrying.fetch_sub(1, Relaxed);
            }
            Finished { pending, delivery }
        };
        self.tasks.spawn(task.instrument(self.span.clone()));
    }

    fn on_finished(&mut self, finished: Finished) -> std::io::Result<()> {
        self.pending -= 1;
        let Finished { pending, delivery } = finished;
        let record = &pending.record;
        let attempts = delivery.attempts;
        self.report.retries += u64::from(attempts.saturating_sub(1));

        match delivery.outcome {
            Outcome::Delivered { .. } => {
                self.report.delivered += 1;
                if attempts == 1 {
                    self.report.delivered_first_try += 1;
                } else {
                    self.report.delivered_after_retries += 1;
                }
                self.counters.delivered.fetch_add(1, Relaxed);
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
                self.write(&record.raw, entry)?;
                if !record.key.is_empty() {
                    self.poisoned.insert(record.key.clone());
                }
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
                self.write(&record.raw, entry)?;
            }
        }

        if !pending.record.key.is_empty() {
            self.release_key(&pending.record.key)?;
        }
        Ok(())
    }

    /// Starts the next queued record of `key`, or frees the key.
    fn release_key(&mut self, key: &str) -> std::io::Result<()> {
        loop {
            let Some(queue) = self.queues.get_mut(key) else {
                return Ok(());
            };
            let Some(next) = queue.pop_front() else {
                self.queues.remove(key);
                return Ok(());
            };
            self.pending -= 1;
            if self.poisoned.contains(key) {
                self.dead_letter_behind(next)?;
            } else {
                self.spawn(next);
                return Ok(());
            }
        }
    }

    fn dead_letter_behind(&mut self, pending: Pending) -> std::io::Result<()> {
        let reason = "not sent: an earlier record with the same key was dead-lettered".to_owned();
        tracing::warn!(
            record = pending.record.position.record_number,
            line = pending.record.position.line,
            key = %pending.record.key,
            "record dead-lettered behind an earlier record with the same key"
        );
        let entry = self.entry(Kind::DeadLetter, &pending.record, 0, None, reason);
        self.write(&pending.record.raw, entry)
    }

    fn entry(
        &self,
        kind: Kind,
        record: &Record,
        attempts: u32,
        status: Option<u16>,
        error: String,
    ) -> SidecarEntry {
        let origin = self.origins.origin(&record.position);
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
        }
    }

    fn write(&mut self, raw: &[u8], entry: SidecarEntry) -> std::io::Result<()> {
        if entry.attempts == 0 {
            tracing::warn!(
                record = entry.record,
                line = entry.line,
                error = %entry.error,
                "record rejected without being sent"
            );
        }
        match entry.kind {
            Kind::DeadLetter => {
                self.report.dead_lettered += 1;
                self.counters.dead_lettered.fetch_add(1, Relaxed);
            }
            Kind::Rejected => {
                self.report.rejected += 1;
                self.counters.rejected.fetch_add(1, Relaxed);
            }
        }
        self.sink.write(raw, &entry).map_err(|err| {
            let message = format!(
                "failed to write record {} (line {}) to the dead-letter directory: {err}",
                entry.record, entry.line
            );
            std::io::Error::new(err.kind(), message)
        })
    }
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
