//! Prometheus metrics and health checks for `run`, `reprocess` and other
//! long-running commands (`--metrics-addr`, key `metrics.address`).
//!
//! The values live where the run keeps them anyway. [`Counters`] contains
//! atomics that the reader, the dispatcher and the sender add to as they
//! go, the [`Breaker`] keeps its own state, and the dead-letter directory
//! contains the records waiting there. Recording a record costs a few atomic
//! adds and never a lock. A scrape reads everything once and encodes it
//! with prometheus-client in the Prometheus text format, version 0.0.4.
//! [`server`] serves `/metrics`, `/healthz` and `/readyz` over HTTP/1.
//!
//! Every metric name starts with `sluice_`. docs/metrics.md lists them.

pub mod histogram;
pub mod server;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use reqwest::StatusCode;

use self::histogram::{Histogram, PLUGIN_CALL_BUCKETS};
use crate::dead_letter;
use crate::delivery::breaker::{Breaker, BreakerState, BreakerStatus};
use crate::delivery::classify::Fault;
use crate::report::Counters;

/// The `Content-Type` of `/metrics`: the Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The kind of fault that a retry follows, which labels
/// `sluice_retries_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryClass {
    /// Any 5xx status.
    ServerError,
    /// 429 Too Many Requests.
    TooManyRequests,
    /// 408 Request Timeout.
    RequestTimeout,
    /// 409 Conflict, which idempotency-aware servers send while a request
    /// with the same key is in progress.
    Conflict,
    /// The request timed out.
    Timeout,
    /// The connection failed or broke.
    Connection,
    /// The plugin's `classify` function asked for the retry.
    Plugin,
}

impl RetryClass {
    /// Every class, in the order of the exposition.
    pub const ALL: [RetryClass; 7] = [
        RetryClass::ServerError,
        RetryClass::TooManyRequests,
        RetryClass::RequestTimeout,
        RetryClass::Conflict,
        RetryClass::Timeout,
        RetryClass::Connection,
        RetryClass::Plugin,
    ];

    /// Returns the class of a transient fault, or `None` for a fault that
    /// is never retried.
    pub fn of(fault: &Fault) -> Option<RetryClass> {
        match fault {
            Fault::Status(status) if status.is_server_error() => Some(RetryClass::ServerError),
            Fault::Status(StatusCode::TOO_MANY_REQUESTS) => Some(RetryClass::TooManyRequests),
            Fault::Status(StatusCode::REQUEST_TIMEOUT) => Some(RetryClass::RequestTimeout),
            Fault::Status(StatusCode::CONFLICT) => Some(RetryClass::Conflict),
            Fault::Status(_) | Fault::Request(_) => None,
            Fault::Timeout => Some(RetryClass::Timeout),
            Fault::Connection(_) => Some(RetryClass::Connection),
            Fault::Plugin { .. } => Some(RetryClass::Plugin),
        }
    }

    /// Returns the value of the `class` label.
    pub fn label(self) -> &'static str {
        match self {
            RetryClass::ServerError => "5xx",
            RetryClass::TooManyRequests => "429",
            RetryClass::RequestTimeout => "408",
            RetryClass::Conflict => "409",
            RetryClass::Timeout => "timeout",
            RetryClass::Connection => "connection",
            RetryClass::Plugin => "plugin",
        }
    }
}

/// Retries sent, by [`RetryClass`].
#[derive(Debug, Default)]
pub struct RetryCounts([AtomicU64; RetryClass::ALL.len()]);

impl RetryCounts {
    /// Counts a retry of `cause`. Faults that are never retried count
    /// nowhere.
    pub fn count(&self, cause: &Fault) {
        if let Some(class) = RetryClass::of(cause) {
            self.0[class as usize].fetch_add(1, Relaxed);
        }
    }

    /// Returns the retries of one class.
    pub fn get(&self, class: RetryClass) -> u64 {
        self.0[class as usize].load(Relaxed)
    }
}

/// A call into the plugin that is timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PluginCall {
    Feed,
    Finish,
    Map,
    Classify,
}

impl PluginCall {
    /// Every timed call, in the order of the exposition.
    pub const ALL: [PluginCall; 4] = [
        PluginCall::Feed,
        PluginCall::Finish,
        PluginCall::Map,
        PluginCall::Classify,
    ];

    /// Returns the value of the `call` label.
    pub fn label(self) -> &'static str {
        match self {
            PluginCall::Feed => "feed",
            PluginCall::Finish => "finish",
            PluginCall::Map => "map",
            PluginCall::Classify => "classify",
        }
    }
}

/// The time of each plugin call, by [`PluginCall`].
#[derive(Debug)]
pub struct PluginCallTimes([Histogram; PluginCall::ALL.len()]);

impl Default for PluginCallTimes {
    fn default() -> Self {
        PluginCallTimes(PluginCall::ALL.map(|_| Histogram::new(PLUGIN_CALL_BUCKETS)))
    }
}

impl PluginCallTimes {
    /// Records one call that took `elapsed`, trapped or not.
    pub fn observe(&self, call: PluginCall, elapsed: Duration) {
        self.0[call as usize].observe(elapsed);
    }

    /// Returns the histogram of one call.
    pub fn get(&self, call: PluginCall) -> &Histogram {
        &self.0[call as usize]
    }
}

/// Input files by state, exposed as `sluice_files`.
///
/// [`crate::pipeline::Pipeline::run`] adds its inputs to `pending` when it
/// starts and moves each to `active` and then to `done`. A file that a
/// signal interrupts goes back to `pending`, because the next run resumes
/// it. `sluice watch` sets `pending` to the inbox files that wait, not
/// counting the one it hands to the pipeline, and `stopped` to the files
/// that stopped early and wait for a change. The gauges share their value
/// with their clones.
#[derive(Clone, Debug, Default)]
pub struct FileGauges {
    /// Files waiting to be ingested.
    pub pending: Gauge,
    /// Files being ingested.
    pub active: Gauge,
    /// Files that the pipeline finished, whatever their outcome.
    pub done: Gauge,
    /// `sluice watch`: files that stopped early and stay in the inbox
    /// until they change or the process restarts.
    pub stopped: Gauge,
}

/// The metrics of one process, ready to encode.
pub struct Metrics {
    registry: Registry,
    sources: Arc<Sources>,
}

/// The values that a scrape reads.
#[derive(Debug)]
struct Sources {
    counters: Arc<Counters>,
    breaker: RwLock<Option<Arc<Breaker>>>,
    dead_letter_dir: PathBuf,
    // Complete lines per dead-letter sidecar, by path, with the bytes
    // counted so far: sidecars only grow, so a scrape reads what is new.
    sidecar_lines: Mutex<HashMap<PathBuf, (u64, u64)>>,
}

impl Metrics {
    /// Creates the metrics of a process whose counters are `counters` and
    /// whose dead letters go to `dead_letter_dir`.
    pub fn new(counters: Arc<Counters>, dead_letter_dir: &Path) -> Metrics {
        let sources = Arc::new(Sources {
            counters,
            breaker: RwLock::new(None),
            dead_letter_dir: dead_letter_dir.to_owned(),
            sidecar_lines: Mutex::new(HashMap::new()),
        });
        let mut registry = Registry::with_prefix("sluice");
        registry.register_collector(Box::new(sources.clone()));
        Metrics { registry, sources }
    }

    /// Reports `breaker` from now on, in place of any earlier one.
    pub fn watch_breaker(&self, breaker: Arc<Breaker>) {
        let mut slot = self
            .sources
            .breaker
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        *slot = Some(breaker);
    }

    /// Encodes every metric in the Prometheus text format. Reads the
    /// dead-letter directory, so async callers run it on a blocking
    /// thread.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            .expect("writing to a String does not fail");
        text
    }

    /// Returns whether the process is ready to make progress, with the
    /// reason: not while the circuit breaker is open or half-open.
    pub fn readiness(&self) -> Readiness {
        match self.sources.breaker_status() {
            None => Readiness {
                ready: true,
                body: "ready: no request sent yet\n".to_owned(),
            },
            Some(status) => Readiness::of(status, SystemTime::now()),
        }
    }
}

/// The response of `/readyz`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    /// Plain text: a first line with the reason, then `name: value` lines.
    pub body: String,
}

impl Readiness {
    /// Describes `status` as seen at `now`.
    fn of(status: BreakerStatus, now: SystemTime) -> Readiness {
        let state = status.state.as_str();
        let since = now.checked_sub(status.since).unwrap_or(now);
        let since = format!(
            "since: {} ({} ago)",
            humantime::format_rfc3339_seconds(since),
            seconds(status.since)
        );
        let (ready, headline, probe) = match (status.state, status.next_probe_in) {
            (BreakerState::Closed, _) => (true, "ready: the circuit breaker is closed", None),
            (BreakerState::Open, Some(wait)) if wait.is_zero() => (
                false,
                "not ready: the circuit breaker is open, so nothing is sent or read",
                Some("next probe: due now, with the next request".to_owned()),
            ),
            (BreakerState::Open, wait) => {
                let wait = wait.unwrap_or_default();
                let at = humantime::format_rfc3339_seconds(now + wait);
                (
                    false,
                    "not ready: the circuit breaker is open, so nothing is sent or read",
                    Some(format!("next probe: {at} (in {})", seconds(wait))),
                )
            }
            (BreakerState::HalfOpen, _) => (
                false,
                "not ready: the circuit breaker is half-open and one probe request tests the API",
                Some("next probe: in flight".to_owned()),
            ),
        };
        let mut body = format!("{headline}\nstate: {state}\n{since}\n");
        if let Some(probe) = probe {
            body.push_str(&probe);
            body.push('\n');
        }
        body.push_str(&format!("openings: {}\n", status.openings));
        Readiness { ready, body }
    }
}

/// Formats a duration as seconds with one decimal, such as `2.5s`.
fn seconds(duration: Duration) -> String {
    format!("{:.1}s", duration.as_secs_f64())
}

impl Sources {
    fn breaker_status(&self) -> Option<BreakerStatus> {
        let slot = self.breaker.read().unwrap_or_else(PoisonError::into_inner);
        slot.as_ref().map(|breaker| breaker.status())
    }

    /// Counts the records in the dead-letter directory's dead-letter
    /// sidecars: one complete line each. A directory that cannot be read
    /// counts as empty, and a sidecar that cannot be read keeps its last
    /// count.
    fn dead_letter_records(&self) -> u64 {
        let files = dead_letter::list_dir(&self.dead_letter_dir, false).unwrap_or_default();
        let mut known = self
            .sidecar_lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut current = HashMap::with_capacity(files.len());
        for data_path in files {
            let sidecar = dead_letter::sidecar_path(&data_path);
            let (offset, lines) = known.get(&sidecar).copied().unwrap_or((0, 0));
            let counted = count_lines_from(&sidecar, offset, lines).unwrap_or((offset, lines));
            current.insert(sidecar, counted);
        }
        let total = current.values().map(|(_, lines)| lines).sum();
        // Removed files drop out of the cache.
        *known = current;
        total
    }
}

/// Counts the complete lines of `path` past byte `offset`, adding them to
/// `lines`, and returns the offset after the last complete line with the
/// new count. Starts over when the file shrank below `offset`.
fn count_lines_from(path: &Path, offset: u64, lines: u64) -> std::io::Result<(u64, u64)> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(err) => return Err(err),
    };
    let (mut offset, mut lines) = if file.metadata()?.len() < offset {
        (0, 0)
    } else {
        (offset, lines)
    };
    file.seek(SeekFrom::Start(offset))?;
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader.read_until(b'\n', &mut line)?;
        // A line without its end is still being written, or was torn by a
        // crash, and the reprocessing skips it: it does not count.
        if read == 0 || line.last() != Some(&b'\n') {
            return Ok((offset, lines));
        }
        offset += read as u64;
        lines += 1;
    }
}

impl Collector for Sources {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counters = &self.counters;
        let load = |value: &AtomicU64| value.load(Relaxed);

        let totals = [
            (
                "records_read",
                "Records parsed from input files, malformed records included.",
                load(&counters.read),
            ),
            (
                "records_delivered",
                "Records that the API accepted.",
                load(&counters.delivered),
            ),
            (
                "records_dead_lettered",
                "Records written to dead-letter files: out of retries, or held behind an \
                 earlier dead letter of their key.",
                load(&counters.dead_lettered),
            ),
            (
                "records_rejected",
                "Records written to rejected files: permanent faults, malformed records and \
                 records the plugin could not map.",
                load(&counters.rejected),
            ),
        ];
        for (name, help, value) in totals {
            let metric = ConstCounter::new(value);
            metric.encode(encoder.encode_descriptor(name, help, None, MetricType::Counter)?)?;
        }

        let mut retries = encoder.encode_descriptor(
            "retries",
            "Retries sent, by the fault of the attempt before them: 5xx, 429, 408, 409, \
             timeout, connection, or plugin when the plugin's classify function asked for it.",
            None,
            MetricType::Counter,
        )?;
        for class in RetryClass::ALL {
            let labels = [("class", class.label())];
            let metric = ConstCounter::new(counters.retries.get(class));
            metric.encode(retries.encode_family(&labels)?)?;
        }

        let gauges = [
            (
                "records_retrying",
                "Records between a failed attempt and their outcome.",
                load(&counters.retrying),
            ),
            (
                "requests_in_flight",
                "HTTP requests on the wire.",
                load(&counters.in_flight),
            ),
            (
                "concurrency_limit",
                "Requests allowed on the wire at once; it moves when http.concurrency is \
                 \"adaptive\".",
                load(&counters.concurrency_limit),
            ),
            (
                "dead_letter_records",
                "Records waiting in the dead-letter files of the dead-letter directory, \
                 counted from their sidecars; rejected files are not counted.",
                self.dead_letter_records(),
            ),
        ];
        for (name, help, value) in gauges {
            let metric = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            metric.encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)?;
        }

        counters
            .attempt_durations
            .encode(encoder.encode_descriptor(
                "request_duration",
                "Time of one HTTP attempt, from sending the request to the end of the response \
             body or the failure.",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?)?;

        let status = self.breaker_status();
        let mut state = encoder.encode_descriptor(
            "breaker_state",
            "Circuit breaker state: 1 for the current state, 0 for the others.",
            None,
            MetricType::Gauge,
        )?;
        let current = status.map_or(BreakerState::Closed, |status| status.state);
        for each in [
            BreakerState::Closed,
            BreakerState::Open,
            BreakerState::HalfOpen,
        ] {
            let labels = [("state", each.as_str())];
            let metric = ConstGauge::new(i64::from(each == current));
            metric.encode(state.encode_family(&labels)?)?;
        }
        let openings = ConstCounter::new(status.map_or(0, |status| status.openings));
        openings.encode(encoder.encode_descriptor(
            "breaker_openings",
            "Times the circuit breaker opened, counting reopenings after a failed probe.",
            None,
            MetricType::Counter,
        )?)?;

        let mut files = encoder.encode_descriptor(
            "files",
            "Input files by state: pending (waiting), active (being ingested) or done.",
            None,
            MetricType::Gauge,
        )?;
        let gauges = &counters.files;
        for (label, gauge) in [
            ("pending", &gauges.pending),
            ("active", &gauges.active),
            ("done", &gauges.done),
            ("stopped", &gauges.stopped),
        ] {
            let labels = [("state", label)];
            gauge.encode(files.encode_family(&labels)?)?;
        }

        let mut calls = encoder.encode_descriptor(
            "plugin_call_duration",
            "Time of one call into the plugin, by call: feed, finish, map or classify.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for call in PluginCall::ALL {
            let labels = [("call", call.label())];
            let histogram = counters.plugin_calls.get(call);
            histogram.encode(calls.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
