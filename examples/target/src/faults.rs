//! Seeded fault schedule.
//!
//! Every request except those to the statistics endpoint gets an arrival
//! number (0, 1, 2, ...) when its head is read. The fault for arrival `n` is
//! drawn from an RNG seeded with the plan's seed and `n`, so the schedule
//! depends only on the seed and the order of arrival: sequential requests see
//! the same faults on every run. The outage window is the exception because
//! it is measured in time from the first request.
//!
//! The target and the proxy share this schedule. They differ in what a stall
//! does, as [`FaultPlan::rate_stall`] describes.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::bail;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Default `Retry-After` value sent with an injected 429, in seconds.
pub const DEFAULT_RETRY_AFTER_SECS: u64 = 1;

/// Default time a stalled request waits before its response.
pub const DEFAULT_STALL_FOR: Duration = Duration::from_secs(5);

/// Odd 64-bit constant (the golden ratio) that spreads arrival numbers over
/// the seed space before they reach the RNG.
const ARRIVAL_SPREAD: u64 = 0x9E37_79B9_7F4A_7C15;

/// Faults to inject, decided per request. `Default` injects none.
///
/// The rates are probabilities per request of mutually exclusive faults, so
/// each must lie in 0..=1 and their sum must be at most 1.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultPlan {
    /// Seed of the schedule: the same seed and arrival order give the same
    /// faults.
    pub seed: u64,
    /// Probability of responding with 500 Internal Server Error.
    pub rate_500: f64,
    /// Probability of responding with 503 Service Unavailable without
    /// `Retry-After`.
    pub rate_503: f64,
    /// Probability of responding with 429 Too Many Requests and
    /// `Retry-After`.
    pub rate_429: f64,
    /// `Retry-After` value sent with each 429, in seconds.
    pub retry_after_secs: u64,
    /// Probability of stalling a request for `stall_for`. The target then
    /// responds with 503 without serving the request, while the proxy
    /// forwards it and sends the upstream's response after the stall.
    pub rate_stall: f64,
    /// Time a stalled request waits before its response, meant to exceed
    /// the client's timeout.
    pub stall_for: Duration,
    /// Probability of closing the connection with a TCP reset and no
    /// response.
    pub rate_reset: f64,
    /// Probability of serving the request (committing its write) and then
    /// closing the connection with a TCP reset instead of sending the
    /// response.
    pub rate_lost_response: f64,
    /// Window in which every request gets 503.
    pub outage: Option<Outage>,
    /// Requests served at once; one more that arrives gets 503, like an
    /// API that sheds load.
    pub max_in_flight: Option<usize>,
}

impl Default for FaultPlan {
    fn default() -> Self {
        Self {
            seed: 0,
            rate_500: 0.0,
            rate_503: 0.0,
            rate_429: 0.0,
            retry_after_secs: DEFAULT_RETRY_AFTER_SECS,
            rate_stall: 0.0,
            stall_for: DEFAULT_STALL_FOR,
            rate_reset: 0.0,
            rate_lost_response: 0.0,
            outage: None,
            max_in_flight: None,
        }
    }
}

/// Window of time, relative to the first request, in which every request
/// gets 503 without `Retry-After`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outage {
    /// Start of the window, measured from the arrival of the first request.
    pub after: Duration,
    /// Length of the window.
    pub duration: Duration,
}

/// Kind of an injected fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// 500 Internal Server Error.
    InternalError,
    /// 503 Service Unavailable.
    Unavailable,
    /// 429 Too Many Requests with `Retry-After`.
    TooManyRequests,
    /// Wait for `stall_for` before responding.
    Stall,
    /// TCP reset without a response.
    Reset,
    /// TCP reset after the request was served, in place of its response.
    LostResponse,
    /// 503 inside the outage window.
    Outage,
    /// 503 for a request beyond `max_in_flight`.
    Crowded,
}

impl Fault {
    /// Returns the short name used in logs, such as `500` or `reset`.
    pub fn name(self) -> &'static str {
        match self {
            Fault::InternalError => "500",
            Fault::Unavailable => "503",
            Fault::TooManyRequests => "429",
            Fault::Stall => "stall",
            Fault::Reset => "reset",
            Fault::LostResponse => "lost-response",
            Fault::Outage => "outage",
            Fault::Crowded => "crowded",
        }
    }
}

impl FaultPlan {
    /// Checks that every rate lies in 0..=1 and that the rates add up to at
    /// most 1.
    ///
    /// # Errors
    ///
    /// Returns an error naming the first rate out of range, or the sum.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (name, rate) in self.rates() {
            if !(0.0..=1.0).contains(&rate) {
                bail!("fault rate {name} = {rate} is out of range; use a value from 0 to 1");
            }
        }
        let sum = self.rate_sum();
        // Allow for rounding in sums such as 0.1 + 0.2 + 0.7.
        if sum > 1.0 + 1e-9 {
            bail!("fault rates add up to {sum}; lower them so that their sum is at most 1");
        }
        if self.max_in_flight == Some(0) {
            bail!("max_in_flight = 0 would turn every request away; use 1 or more");
        }
        Ok(())
    }

    /// Returns the random fault for arrival number `arrival`, ignoring the
    /// outage window, or `None` when the request should be served.
    ///
    /// The result depends only on the seed, the rates and `arrival`.
    // NOTE: `StdRng` is reproducible for a given `rand` version only, so a
    // schedule may change when the lockfile moves to another `rand` release.
    pub fn fault_for(&self, arrival: u64) -> Option<Fault> {
        if self.rate_sum() <= 0.0 {
            return None;
        }

        let stream = self.seed.wrapping_add(arrival.wrapping_mul(ARRIVAL_SPREAD));
        let draw: f64 = StdRng::seed_from_u64(stream).gen();

        let kinds = [
            (Fault::InternalError, self.rate_500),
            (Fault::Unavailable, self.rate_503),
            (Fault::TooManyRequests, self.rate_429),
            (Fault::Stall, self.rate_stall),
            (Fault::Reset, self.rate_reset),
            (Fault::LostResponse, self.rate_lost_response),
        ];
        let mut upper = 0.0;
        for (kind, rate) in kinds {
            upper += rate;
            if draw < upper {
                return Some(kind);
            }
        }
        None
    }

    /// Returns true when the plan injects no fault at all.
    pub fn is_empty(&self) -> bool {
        self.rate_sum() <= 0.0 && self.outage.is_none() && self.max_in_flight.is_none()
    }

    // New kinds go at the end of this list and of the one in `fault_for`, so
    // that plans without them keep their schedules.
    fn rates(&self) -> [(&'static str, f64); 6] {
        [
            ("rate_500", self.rate_500),
            ("rate_503", self.rate_503),
            ("rate_429", self.rate_429),
            ("rate_stall", self.rate_stall),
            ("rate_reset", self.rate_reset),
            ("rate_lost_response", self.rate_lost_response),
        ]
    }

    fn rate_sum(&self) -> f64 {
        self.rates().iter().map(|(_, rate)| rate).sum()
    }
}

impl fmt::Display for FaultPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("no faults");
        }

        write!(f, "seed {}", self.seed)?;
        for (name, rate) in self.rates() {
            if rate > 0.0 {
                write!(f, ", {name} {rate}")?;
            }
        }
        if self.rate_429 > 0.0 {
            write!(f, ", retry-after {}s", self.retry_after_secs)?;
        }
        if self.rate_stall > 0.0 {
            write!(
                f,
                ", stall for {}",
                humantime::format_duration(self.stall_for)
            )?;
        }
        if let Some(outage) = self.outage {
            write!(
                f,
                ", outage after {} for {}",
                humantime::format_duration(outage.after),
                humantime::format_duration(outage.duration)
            )?;
        }
        if let Some(max) = self.max_in_flight {
            write!(f, ", at most {max} in flight")?;
        }
        Ok(())
    }
}

/// Per-server state of the schedule: the arrival counter and the clock of
/// the outage window.
pub(crate) struct Schedule {
    plan: FaultPlan,
    arrivals: AtomicU64,
    first_arrival: OnceLock<Instant>,
    in_flight: AtomicUsize,
}

/// A request counted as in flight until it is dropped.
pub(crate) struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Schedule {
    pub(crate) fn new(plan: FaultPlan) -> Self {
        Self {
            plan,
            arrivals: AtomicU64::new(0),
            first_arrival: OnceLock::new(),
            in_flight: AtomicUsize::new(0),
        }
    }

    pub(crate) fn plan(&self) -> &FaultPlan {
        &self.plan
    }

    /// Counts a request in flight while the returned guard lives, and
    /// returns whether it is one more than `max_in_flight`.
    pub(crate) fn enter(&self) -> (InFlight<'_>, bool) {
        let count = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        let crowded = self.plan.max_in_flight.is_some_and(|max| count > max);
        (InFlight(&self.in_flight), crowded)
    }

    /// Registers the arrival of a request and returns its arrival number and
    /// fault. The outage window takes precedence over random faults.
    pub(crate) fn arrive(&self) -> (u64, Option<Fault>) {
        let arrival = self.arrivals.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let first = *self.first_arrival.get_or_init(|| now);

        if let Some(outage) = self.plan.outage {
            let elapsed = now.saturating_duration_since(first);
            if elapsed >= outage.after && elapsed < outage.after + outage.duration {
                return (arrival, Some(Fault::Outage));
            }
        }
        (arrival, self.plan.fault_for(arrival))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_with(rate_500: f64, rate_503: f64, rate_reset: f64) -> FaultPlan {
        FaultPlan {
            seed: 42,
            rate_500,
            rate_503,
            rate_reset,
            ..FaultPlan::default()
        }
    }

    #[test]
    fn default_plan_injects_nothing() {
        let plan = FaultPlan::default();
        assert!(plan.is_empty());
        assert!((0..1000).all(|arrival| plan.fault_for(arrival).is_none()));
    }

    #[test]
    fn rate_one_always_faults() {
        let plan = FaultPlan {
            rate_429: 1.0,
            ..FaultPlan::default()
        };
        for arrival in 0..1000 {
            assert_eq!(plan.fault_for(arrival), Some(Fault::TooManyRequests));
        }
    }

    #[test]
    fn rates_set_fault_frequencies() {
        let plan = plan_with(0.1, 0.2, 0.3);
        let draws = 20_000;
        let count = |kind| {
            (0..draws)
                .filter(|&a| plan.fault_for(a) == Some(kind))
                .count()
        };

        let share = |n: usize| n as f64 / draws as f64;
        assert!((share(count(Fault::InternalError)) - 0.1).abs() < 0.02);
        assert!((share(count(Fault::Unavailable)) - 0.2).abs() < 0.02);
        assert!((share(count(Fault::Reset)) - 0.3).abs() < 0.02);
        assert_eq!(count(Fault::Stall), 0);
    }

    #[test]
    fn schedule_depends_on_seed() {
        let plan = plan_with(0.3, 0.3, 0.0);
        let other = FaultPlan {
            seed: 43,
            ..plan.clone()
        };
        let faults = |p: &FaultPlan| (0..200).map(|a| p.fault_for(a)).collect::<Vec<_>>();

        assert_eq!(faults(&plan), faults(&plan.clone()));
        assert_ne!(faults(&plan), faults(&other));
    }

    #[test]
    fn validate_rejects_zero_in_flight() {
        let plan = FaultPlan {
            max_in_flight: Some(0),
            ..FaultPlan::default()
        };
        let err = plan.validate().unwrap_err().to_string();
        assert!(err.contains("max_in_flight = 0"), "{err}");
        let one = FaultPlan {
            max_in_flight: Some(1),
            ..FaultPlan::default()
        };
        assert!(one.validate().is_ok());
    }

    #[test]
    fn validate_rejects_bad_rates() {
        let negative = FaultPlan {
            rate_503: -0.1,
            ..FaultPlan::default()
        };
        let err = negative.validate().unwrap_err().to_string();
        assert!(err.contains("rate_503 = -0.1"), "{err}");

        let not_a_number = FaultPlan {
            rate_stall: f64::NAN,
            ..FaultPlan::default()
        };
        assert!(not_a_number.validate().is_err());

        let too_much = plan_with(0.5, 0.4, 0.2);
        let err = too_much.validate().unwrap_err().to_string();
        assert!(err.contains("add up to"), "{err}");

        assert!(plan_with(0.1, 0.2, 0.7).validate().is_ok());
    }

    #[test]
    fn lost_responses_keep_other_faults_in_place() {
        let plan = plan_with(0.1, 0.2, 0.3);
        let lossy = FaultPlan {
            rate_lost_response: 0.2,
            ..plan.clone()
        };
        let draws = 20_000;
        let mut lost = 0;
        for arrival in 0..draws {
            match (plan.fault_for(arrival), lossy.fault_for(arrival)) {
                (Some(kind), other) => assert_eq!(other, Some(kind), "arrival {arrival}"),
                (None, Some(Fault::LostResponse)) => lost += 1,
                (None, None) => {}
                (None, other) => panic!("arrival {arrival} got {other:?}"),
            }
        }
        let share = f64::from(lost) / draws as f64;
        assert!(
            (share - 0.2).abs() < 0.02,
            "share of lost responses {share}"
        );
    }

    #[test]
    fn validate_counts_lost_responses() {
        let too_high = FaultPlan {
            rate_lost_response: 1.5,
            ..FaultPlan::default()
        };
        let err = too_high.validate().unwrap_err().to_string();
        assert!(err.contains("rate_lost_response = 1.5"), "{err}");

        let too_much = FaultPlan {
            rate_lost_response: 0.5,
            ..plan_with(0.0, 0.0, 0.6)
        };
        let err = too_much.validate().unwrap_err().to_string();
        assert!(err.contains("add up to"), "{err}");
        assert!(!too_much.is_empty());
    }

    #[test]
    fn outage_window_overrides_random_faults() {
        let plan = FaultPlan {
            outage: Some(Outage {
                after: Duration::ZERO,
                duration: Duration::from_secs(60),
            }),
            ..FaultPlan::default()
        };
        let schedule = Schedule::new(plan);
        assert_eq!(schedule.arrive(), (0, Some(Fault::Outage)));
        assert_eq!(schedule.arrive(), (1, Some(Fault::Outage)));
    }
}
