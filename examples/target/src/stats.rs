//! Request, write and fault counters.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::faults::Fault;

/// Snapshot of the counters of a target or a proxy, also served as JSON by
/// their statistics endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Requests received, excluding those to the statistics endpoint.
    pub requests: u64,
    /// Committed writes of a target: PUTs, POSTs that inserted a row and
    /// DELETEs that removed a resource. Always 0 for a proxy.
    pub writes: u64,
    /// Requests that a proxy sent to its upstream, including stalled ones
    /// and those whose response it then lost. Always 0 for a target.
    #[serde(default)]
    pub forwarded: u64,
    /// Injected faults by kind.
    pub faults: FaultCounts,
}

/// Number of injected faults of each kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultCounts {
    /// Injected 500 responses.
    pub status_500: u64,
    /// Injected 503 responses, excluding stalls and the outage window.
    pub status_503: u64,
    /// Injected 429 responses.
    pub status_429: u64,
    /// Stalled requests.
    pub stall: u64,
    /// Connections closed with a TCP reset before the request was served.
    pub reset: u64,
    /// Connections closed with a TCP reset after the request was served.
    #[serde(default)]
    pub lost_response: u64,
    /// Requests that got 503 inside the outage window.
    pub outage: u64,
    /// Requests that got 503 for arriving beyond the in-flight limit.
    #[serde(default)]
    pub crowded: u64,
}

impl FaultCounts {
    /// Returns the number of injected faults of all kinds.
    pub fn total(&self) -> u64 {
        self.status_500
            + self.status_503
            + self.status_429
            + self.stall
            + self.reset
            + self.lost_response
            + self.outage
            + self.crowded
    }

    /// Returns the count for one kind of fault.
    pub fn get(&self, fault: Fault) -> u64 {
        match fault {
            Fault::InternalError => self.status_500,
            Fault::Unavailable => self.status_503,
            Fault::TooManyRequests => self.status_429,
            Fault::Stall => self.stall,
            Fault::Reset => self.reset,
            Fault::LostResponse => self.lost_response,
            Fault::Outage => self.outage,
            Fault::Crowded => self.crowded,
        }
    }
}

impl fmt::Display for FaultCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "500: {}, 503: {}, 429: {}, stall: {}, reset: {}, lost response: {}, outage: {}, \
             crowded: {}",
            self.status_500,
            self.status_503,
            self.status_429,
            self.stall,
            self.reset,
            self.lost_response,
            self.outage,
            self.crowded
        )
    }
}

/// Live counters shared by the connection tasks and the database writer.
#[derive(Default)]
pub(crate) struct Counters {
    requests: AtomicU64,
    writes: AtomicU64,
    forwarded: AtomicU64,
    status_500: AtomicU64,
    status_503: AtomicU64,
    status_429: AtomicU64,
    stall: AtomicU64,
    reset: AtomicU64,
    lost_response: AtomicU64,
    crowded: AtomicU64,
    outage: AtomicU64,
}

impl Counters {
    pub(crate) fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_writes(&self, writes: u64) {
        self.writes.fetch_add(writes, Ordering::Relaxed);
    }

    pub(crate) fn count_forward(&self) {
        self.forwarded.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_fault(&self, fault: Fault) {
        let counter = match fault {
            Fault::InternalError => &self.status_500,
            Fault::Unavailable => &self.status_503,
            Fault::TooManyRequests => &self.status_429,
            Fault::Stall => &self.stall,
            Fault::Reset => &self.reset,
            Fault::LostResponse => &self.lost_response,
            Fault::Outage => &self.outage,
            Fault::Crowded => &self.crowded,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Stats {
            requests: load(&self.requests),
            writes: load(&self.writes),
            forwarded: load(&self.forwarded),
            faults: FaultCounts {
                status_500: load(&self.status_500),
                status_503: load(&self.status_503),
                status_429: load(&self.status_429),
                stall: load(&self.stall),
                reset: load(&self.reset),
                lost_response: load(&self.lost_response),
                outage: load(&self.outage),
                crowded: load(&self.crowded),
            },
        }
    }
}
