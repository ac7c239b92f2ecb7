//! The limit on requests in flight: fixed, or adaptive.
//!
//! An adaptive limit follows the API by additive increase and
//! multiplicative decrease, judged once per window of attempts: as many as
//! the limit, and at least 20, so that one stray fault weighs little:
//!
//! - a window in which at least a tenth of the attempts got a 429, a 503
//!   or a timeout shrinks the limit to 90 % of its size, and at least by
//!   one: the API is asking for less;
//! - a window that used the whole limit, with a mean latency of at most 1.5
//!   times the baseline, grows the limit by one. The baseline is the lowest
//!   window mean of the last 10 to 20 seconds, so that it follows an API
//!   that became slower for good;
//! - anything else keeps the limit. Latency alone never shrinks it: when
//!   the API is the bottleneck, each request more in flight adds its wait
//!   to every latency, and shrinking on that would settle at one request.
//!
//! Other failures, such as refused connections and 500s, say nothing about
//! load and are left out of the windows. While the breaker is half-open
//! only its probe is sent, and the limit drops to one. It stays there
//! until the breaker closes, and grows again from there.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use super::breaker::BreakerState;

/// The highest adaptive limit.
pub const ADAPTIVE_MAX: usize = 256;
/// Share of the limit that a window with back pressure keeps.
const DECREASE: f64 = 0.9;
/// Minimum number of attempts in a window.
const MIN_WINDOW: usize = 20;
/// Share of a window's attempts with back pressure that shrinks the limit.
const SHRINK_SHARE: f64 = 0.1;
/// A window mean up to this multiple of the baseline lets the limit grow.
const GROW_BELOW: f64 = 1.5;
/// The baseline is the lowest window mean of the last one or two spans.
const BASELINE_SPAN: Duration = Duration::from_secs(10);

/// The load signal of an attempt's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// A response that carries no load signal: its latency counts.
    Normal,
    /// A 429, a 503 or a timeout: the API wants fewer requests.
    BackPressure,
    /// A failure with no load signal and no useful latency, such as a
    /// refused connection or a 500. It is left out of the window.
    Other,
}

/// The right to have one request on the wire.
pub struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    limiter: Arc<Limiter>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        // A slot given back while the limit is shrinking is retired.
        let retire = self
            .limiter
            .excess
            .fetch_update(Relaxed, Relaxed, |excess| excess.checked_sub(1))
            .is_ok();
        if let (true, Some(permit)) = (retire, self.permit.take()) {
            permit.forget();
        }
    }
}

/// Hands out slots under the current limit and, when it is adaptive,
/// moves the limit by what attempts report.
pub struct Limiter {
    slots: Arc<Semaphore>,
    // Slots to retire as they come back, after the limit shrank below the
    // number in use.
    excess: AtomicUsize,
    limit: AtomicUsize,
    adaptive: Option<Mutex<Window>>,
}

#[derive(Debug)]
struct Window {
    in_flight: usize,
    attempts: usize,
    total: Duration,
    full: bool,
    back_pressure: usize,
    // False from the breaker's opening until it closes again.
    breaker_closed: bool,
    baseline: Lowest,
}

/// The lowest value of the current span and of the one before it.
#[derive(Debug)]
struct Lowest {
    current: f64,
    previous: f64,
    since: Option<Instant>,
}

impl Lowest {
    /// Adds `value` seen at `now` and returns the lowest value.
    fn add(&mut self, value: f64, now: Instant) -> f64 {
        let since = *self.since.get_or_insert(now);
        if now.duration_since(since) >= BASELINE_SPAN {
            self.previous = self.current;
            self.current = f64::INFINITY;
            self.since = Some(now);
        }
        self.current = self.current.min(value);
        self.current.min(self.previous)
    }
}

impl Limiter {
    /// Creates a limiter that starts at `limit`. An adaptive one moves
    /// between 1 and [`ADAPTIVE_MAX`].
    pub fn new(limit: usize, adaptive: bool) -> Arc<Limiter> {
        let limit = if adaptive {
            limit.clamp(1, ADAPTIVE_MAX)
        } else {
            limit.max(1)
        };
        Arc::new(Limiter {
            slots: Arc::new(Semaphore::new(limit)),
            excess: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit),
            adaptive: adaptive.then(|| {
                Mutex::new(Window {
                    in_flight: 0,
                    attempts: 0,
                    total: Duration::ZERO,
                    full: false,
                    back_pressure: 0,
                    breaker_closed: true,
                    baseline: Lowest {
                        current: f64::INFINITY,
                        previous: f64::INFINITY,
                        since: None,
                    },
                })
            }),
        })
    }

    /// Returns the current limit.
    pub fn limit(&self) -> usize {
        self.limit.load(Relaxed)
    }

    /// Takes a free slot, if there is one.
    pub fn try_slot(self: &Arc<Self>) -> Option<Slot> {
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => Some(self.slot_from(permit)),
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => None,
        }
    }

    /// Waits for a free slot. Waiters get slots in the order of their calls.
    pub async fn slot(self: Arc<Self>) -> Slot {
        let permit = self.slots.clone().acquire_owned().await;
        self.slot_from(permit.expect("the semaphore is never closed"))
    }

    fn slot_from(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> Slot {
        Slot {
            permit: Some(permit),
            limiter: self.clone(),
        }
    }

    /// Counts an attempt that went on the wire.
    pub fn started(&self) {
        if let Some(window) = &self.adaptive {
            let mut window = lock(window);
            window.in_flight += 1;
            if window.in_flight >= self.limit() {
                window.full = true;
            }
        }
    }

    /// Counts an attempt that ended after `latency`, and moves the limit
    /// when it ends a window.
    pub fn finished(&self, latency: Duration, signal: Signal) {
        self.finished_at(latency, signal, Instant::now);
    }

    fn finished_at(&self, latency: Duration, signal: Signal, now: impl FnOnce() -> Instant) {
        let Some(window) = &self.adaptive else {
            return;
        };
        let mut window = lock(window);
        window.in_flight = window.in_flight.saturating_sub(1);

        match signal {
            Signal::Other => return,
            Signal::BackPressure => window.back_pressure += 1,
            Signal::Normal => window.total += latency,
        }
        window.attempts += 1;
        let limit = self.limit();
        if window.attempts < limit.max(MIN_WINDOW) {
            return;
        }

        let answered = window.attempts - window.back_pressure;
        let pressed = window.back_pressure as f64 >= window.attempts as f64 * SHRINK_SHARE;
        // Only responses without back pressure give latencies, because
        // the failures may have been quick.
        let baseline = if pressed || answered == 0 {
            window.baseline.current.min(window.baseline.previous)
        } else {
            let mean = window.total.as_secs_f64() / answered as f64;
            window.baseline.add(mean, now())
        };
        let mean = window.total.as_secs_f64() / answered.max(1) as f64;
        let next = if pressed {
            ((limit as f64 * DECREASE) as usize).min(limit - 1).max(1)
        } else if window.breaker_closed && window.full && mean <= baseline * GROW_BELOW {
            (limit + 1).min(ADAPTIVE_MAX)
        } else {
            limit
        };

        window.attempts = 0;
        window.total = Duration::ZERO;
        window.full = window.in_flight >= next;
        window.back_pressure = 0;
        // Set under the lock, so that a drop to one for the breaker cannot
        // be overwritten by a window that ends at the same time.
        self.set_limit(next);
    }

    /// Follows the breaker: one request from half-open until it closes.
    pub fn breaker_changed(&self, state: BreakerState) {
        let Some(window) = &self.adaptive else {
            return;
        };
        let mut window = lock(window);
        window.breaker_closed = state == BreakerState::Closed;
        if state == BreakerState::HalfOpen {
            self.set_limit(1);
        }
    }

    fn set_limit(&self, next: usize) {
        let limit = self.limit.swap(next, Relaxed);
        if next > limit {
            // Growing first cancels retirements still due.
            let mut grow = next - limit;
            while grow > 0 {
                let cancelled = self
                    .excess
                    .fetch_update(Relaxed, Relaxed, |e| e.checked_sub(1));
                if cancelled.is_err() {
                    break;
                }
                grow -= 1;
            }
            self.slots.add_permits(grow);
        } else {
            for _ in next..limit {
                match self.slots.try_acquire() {
                    Ok(permit) => permit.forget(),
                    Err(_) => {
                        self.excess.fetch_add(1, Relaxed);
                    }
                }
            }
        }
    }
}

fn lock(window: &Mutex<Window>) -> std::sync::MutexGuard<'_, Window> {
    // Every update leaves the window whole, so a poisoned lock is usable.
    window
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: Duration = Duration::from_millis(10);

    /// Runs one window of `limit` attempts that all overlap, so that the
    /// window uses the whole limit.
    fn window(limiter: &Arc<Limiter>, latency: Duration, signal: Signal) {
        window_at(limiter, latency, signal, Instant::now());
    }

    fn window_at(limiter: &Arc<Limiter>, latency: Duration, signal: Signal, now: Instant) {
        let limit = limiter.limit();
        let slots: Vec<_> = (0..limit).map(|_| limiter.try_slot().unwrap()).collect();
        for _ in 0..limit {
            limiter.started();
        }
        for attempt in 0..limit.max(MIN_WINDOW) {
            if attempt >= limit {
                limiter.started();
            }
            limiter.finished_at(latency, signal, || now);
        }
        drop(slots);
    }

    fn free_slots(limiter: &Arc<Limiter>) -> usize {
        let slots: Vec<_> = std::iter::from_fn(|| limiter.try_slot()).collect();
        slots.len()
    }

    #[test]
    fn fixed_limit_never_moves() {
        let limiter = Limiter::new(4, false);
        window(&limiter, FAST, Signal::BackPressure);
        limiter.breaker_changed(BreakerState::HalfOpen);
        assert_eq!(limiter.limit(), 4);
        assert_eq!(free_slots(&limiter), 4);
    }

    #[test]
    fn full_steady_window_grows_by_one() {
        let limiter = Limiter::new(4, true);
        window(&limiter, FAST, Signal::Normal);
        assert_eq!(limiter.limit(), 5);
        window(&limiter, FAST, Signal::Normal);
        assert_eq!(limiter.limit(), 6);
        assert_eq!(free_slots(&limiter), 6);
    }

    #[test]
    fn partial_window_keeps_the_limit() {
        let limiter = Limiter::new(4, true);
        for _ in 0..MIN_WINDOW {
            limiter.started();
            limiter.finished(FAST, Signal::Normal);
        }
        assert_eq!(limiter.limit(), 4);
    }

    #[test]
    fn stray_back_pressure_does_not_shrink() {
        let limiter = Limiter::new(16, true);
        for _ in 0..16 {
            limiter.started();
        }
        limiter.finished(FAST, Signal::BackPressure);
        for attempt in 1..MIN_WINDOW {
            if attempt >= 16 {
                limiter.started();
            }
            limiter.finished(FAST, Signal::Normal);
        }
        assert_eq!(limiter.limit(), 17, "one in 20 is below a tenth");
    }

    #[test]
    fn other_failures_are_left_out() {
        let limiter = Limiter::new(4, true);
        for _ in 0..100 {
            limiter.started();
            limiter.finished(Duration::ZERO, Signal::Other);
        }
        assert_eq!(limiter.limit(), 4);
        window(&limiter, FAST, Signal::Normal);
        assert_eq!(limiter.limit(), 5, "the window starts after them");
    }

    #[test]
    fn back_pressure_shrinks_by_a_tenth() {
        let limiter = Limiter::new(40, true);
        window(&limiter, FAST, Signal::BackPressure);
        assert_eq!(limiter.limit(), 36);
        assert_eq!(free_slots(&limiter), 36);

        let small = Limiter::new(3, true);
        window(&small, FAST, Signal::BackPressure);
        assert_eq!(small.limit(), 2);
        window(&small, FAST, Signal::BackPressure);
        window(&small, FAST, Signal::BackPressure);
        assert_eq!(small.limit(), 1, "the limit never drops below one");
    }

    #[test]
    fn rising_latency_stops_growth() {
        let limiter = Limiter::new(10, true);
        window(&limiter, FAST, Signal::Normal);
        assert_eq!(limiter.limit(), 11);
        window(&limiter, FAST * 14 / 10, Signal::Normal);
        assert_eq!(limiter.limit(), 12, "1.4 times the baseline still holds");
        window(&limiter, FAST * 16 / 10, Signal::Normal);
        assert_eq!(limiter.limit(), 12);
        window(&limiter, FAST * 10, Signal::Normal);
        assert_eq!(limiter.limit(), 12);
    }

    #[test]
    fn baseline_follows_slower_api() {
        let limiter = Limiter::new(4, true);
        let start = Instant::now();
        let slow = FAST * 3;
        window_at(&limiter, FAST, Signal::Normal, start);
        assert_eq!(limiter.limit(), 5);
        window_at(
            &limiter,
            slow,
            Signal::Normal,
            start + Duration::from_secs(1),
        );
        assert_eq!(limiter.limit(), 5);
        // A new span starts, but the last one still contains the fast window.
        window_at(
            &limiter,
            slow,
            Signal::Normal,
            start + BASELINE_SPAN * 11 / 10,
        );
        assert_eq!(limiter.limit(), 5);
        // Now both spans saw only slow windows: the latency holds.
        window_at(
            &limiter,
            slow,
            Signal::Normal,
            start + BASELINE_SPAN * 22 / 10,
        );
        assert_eq!(limiter.limit(), 6);
    }

    #[test]
    fn busy_slots_retire_on_return() {
        let limiter = Limiter::new(10, true);
        let in_use: Vec<_> = (0..10).map(|_| limiter.try_slot().unwrap()).collect();
        for _ in 0..10 {
            limiter.started();
        }
        for _ in 0..MIN_WINDOW {
            limiter.finished(FAST, Signal::BackPressure);
        }
        assert_eq!(limiter.limit(), 9);
        drop(in_use);
        assert_eq!(free_slots(&limiter), 9);
    }

    #[test]
    fn half_open_drops_limit_to_one() {
        let limiter = Limiter::new(8, true);
        limiter.breaker_changed(BreakerState::Open);
        assert_eq!(limiter.limit(), 8);
        limiter.breaker_changed(BreakerState::HalfOpen);
        assert_eq!(limiter.limit(), 1);
        assert_eq!(free_slots(&limiter), 1);
        window(&limiter, FAST, Signal::Normal);
        assert_eq!(limiter.limit(), 1, "no growth until the breaker closes");
        limiter.breaker_changed(BreakerState::Closed);
        window(&limiter, FAST, Signal::Normal);
        window(&limiter, FAST, Signal::Normal);
        assert_eq!(limiter.limit(), 3);
    }

    #[test]
    fn limit_stays_under_maximum() {
        let limiter = Limiter::new(ADAPTIVE_MAX + 5, true);
        assert_eq!(limiter.limit(), ADAPTIVE_MAX);
        window(&limiter, FAST, Signal::Normal);
        assert_eq!(limiter.limit(), ADAPTIVE_MAX);
        assert_eq!(free_slots(&limiter), ADAPTIVE_MAX);
    }
}
