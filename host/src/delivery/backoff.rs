//! Capped exponential backoff with full jitter.
//!
//! The n-th delay (0-based) is drawn uniformly from `[0, min(max, initial *
//! multiplier^n)]`. Full jitter spreads the retries of many clients that
//! failed at the same moment, so they do not hit the API again in lockstep.
//! Which failures are retried is decided elsewhere: this module only yields
//! delays.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The parameters of a backoff schedule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BackoffPolicy {
    /// Upper bound of the first delay.
    pub initial: Duration,
    /// Growth factor of the upper bound per attempt; at least 1.
    pub multiplier: f64,
    /// Cap on the upper bound.
    pub max: Duration,
}

impl BackoffPolicy {
    /// Returns the upper bound of the `n`-th delay (0-based), before jitter.
    pub fn ceiling(&self, n: u32) -> Duration {
        let factor = self.multiplier.powi(n.min(i32::MAX as u32) as i32);
        let ceiling = self.initial.as_secs_f64() * factor;
        if !ceiling.is_finite() || ceiling >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(ceiling)
        }
    }
}

/// An endless iterator of jittered delays for one request.
#[derive(Debug)]
pub struct Backoff {
    policy: BackoffPolicy,
    next: u32,
    rng: StdRng,
}

impl Backoff {
    /// Creates a schedule whose jitter comes from `seed`, so that tests and
    /// reruns with a fixed seed see the same delays.
    pub fn new(policy: BackoffPolicy, seed: u64) -> Backoff {
        Backoff {
            policy,
            next: 0,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Starts the schedule over from the first delay, keeping the jitter
    /// source.
    pub fn reset(&mut self) {
        self.next = 0;
    }
}

impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let ceiling = self.policy.ceiling(self.next);
        self.next = self.next.saturating_add(1);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Some(Duration::from_nanos(self.rng.gen_range(0..=nanos)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BackoffPolicy {
        BackoffPolicy {
            initial: Duration::from_millis(100),
            multiplier: 2.0,
            max: Duration::from_secs(1),
        }
    }

    #[test]
    fn ceiling_grows_then_caps() {
        let policy = policy();
        let ceilings: Vec<_> = (0..6).map(|n| policy.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn ceiling_survives_huge_exponents() {
        assert_eq!(policy().ceiling(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn delays_stay_within_their_ceiling() {
        let policy = policy();
        for seed in 0..200 {
            let delays = Backoff::new(policy, seed).take(8);
            for (n, delay) in delays.enumerate() {
                assert!(delay <= policy.ceiling(n as u32), "seed {seed}, delay {n}");
            }
        }
    }

    #[test]
    fn jitter_spreads_delays() {
        let first: Vec<_> = (0..100)
            .map(|seed| Backoff::new(policy(), seed).nth(3).unwrap())
            .collect();
        let distinct: std::collections::BTreeSet<_> = first.iter().collect();
        assert!(
            distinct.len() > 90,
            "only {} distinct delays",
            distinct.len()
        );
        let below_half = first
            .iter()
            .filter(|d| **d < Duration::from_millis(400))
            .count();
        assert!(
            (20..=80).contains(&below_half),
            "{below_half} of 100 below half the ceiling"
        );
    }

    #[test]
    fn same_seed_gives_same_delays() {
        let a: Vec<_> = Backoff::new(policy(), 7).take(5).collect();
        let b: Vec<_> = Backoff::new(policy(), 7).take(5).collect();
        let c: Vec<_> = Backoff::new(policy(), 8).take(5).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn reset_restarts_the_ceiling() {
        let mut backoff = Backoff::new(policy(), 1);
        backoff.by_ref().take(5).for_each(drop);
        backoff.reset();
        assert!(backoff.next().unwrap() <= Duration::from_millis(100));
    }

    #[test]
    fn multiplier_of_one_keeps_a_constant_ceiling() {
        let flat = BackoffPolicy {
            multiplier: 1.0,
            ..policy()
        };
        assert_eq!(flat.ceiling(0), flat.ceiling(20));
    }
}
