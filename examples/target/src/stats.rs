//! Request, write and fault counters.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::faults::Fault;

/// Snapshot of the server's counters, also served as JSON by `GET /_stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Requests received, excluding those to `/_stats`.
    pub requests: u64,
    /// Committed writes: PUTs, POSTs and DELETEs that removed a resource.
    pub writes: u64,
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
    /// Stalled requests, which get 503 after the stall.
    pub stall: u64,
    /// Connections closed with a TCP reset.
    pub reset: u64,
    /// Requests that got 503 inside the outage window.
    pub outage: u64,
}

impl FaultCounts {
    /// Returns the number of injected faults of all kinds.
    pub fn total(&self) -> u64 {
        self.status_500 + self.status_503 + self.status_429 + self.stall + self.reset + self.outage
    }

    /// Returns the count for one kind of fault.
    pub fn get(&self, fault: Fault) -> u64 {
        match fault {
            Fault::InternalError => self.status_500,
            Fault::Unavailable => self.status_503,
            Fault::TooManyRequests => self.status_429,
            Fault::Stall => self.stall,
            Fault::Reset => self.reset,
            Fault::Outage => self.outage,
        }
    }
}

impl fmt::Display for FaultCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "500: {}, 503: {}, 429: {}, stall: {}, reset: {}, outage: {}",
            self.status_500, self.status_503, self.status_429, self.stall, self.reset, self.outage
        )
    }
}

/// Live counters shared by the connection tasks and the database writer.
#[derive(Default)]
pub(crate) struct Counters {
    requests: AtomicU64,
    writes: AtomicU64,
    status_500: AtomicU64,
    status_503: AtomicU64,
    status_429: AtomicU64,
    stall: AtomicU64,
    reset: AtomicU64,
    outage: AtomicU64,
}

impl Counters {
    pub(crate) fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_writes(&self, writes: u64) {
        self.writes.fetch_add(writes, Ordering::Relaxed);
    }

    pub(crate) fn count_fault(&self, fault: Fault) {
        let counter = match fault {
            Fault::InternalError => &self.status_500,
            Fault::Unavailable => &self.status_503,
            Fault::TooManyRequests => &self.status_429,
            Fault::Stall => &self.stall,
            Fault::Reset => &self.reset,
            Fault::Outage => &self.outage,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Stats {
            requests: load(&self.requests),
            writes: load(&self.writes),
            faults: FaultCounts {
                status_500: load(&self.status_500),
                status_503: load(&self.status_503),
                status_429: load(&self.status_429),
                stall: load(&self.stall),
                reset: load(&self.reset),
                outage: load(&self.outage),
            },
        }
    }
}
