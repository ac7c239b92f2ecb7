//! The limit on requests in flight: fixed, or adaptive.
//!
//! An adaptive limit follows the API by additive increase and
//! multiplicative decrease, judged once per window of attempts: as many as
//! the limit, and at least 20, so that one stray fault weighs little.
//!
//! - A window shrinks the limit when more of its attempts got a 429, a 503
//!   or a timeout than the API's background share would give by chance.
//!   The bound is the mean plus two standard deviations: 5 of 20, or 17 of
//!   100, for a share of one in ten. The new limit is the share of the
//!   window that the API served, with the background counted as served.
//!   It is between half and 90 % of the old limit, and at least one less.
//! - The background share is the share of back pressure at the lowest limit
//!   below the current one that has seen enough attempts lately: between
//!   one in ten and a half. Many APIs fail a share of requests at any load.
//!   Back pressure that stays when the limit falls is of that kind, and a
//!   limit that kept shrinking on it would sink to one, where one stalled
//!   request blocks all sending.
//! - A window that used the whole limit, with a mean latency of at most 1.5
//!   times the baseline, grows the limit by one. The baseline is the lowest
//!   window mean of the last 10 to 20 seconds, so that it follows an API
//!   that became slower for good.
//! - Anything else keeps the limit. Latency alone never shrinks it: when
//!   the API is the bottleneck, each request more in flight adds its wait
//!   to every latency, and shrinking on that would settle at one request.
//!
//! Back pressure on an attempt that started before the last shrink is left
//! out, because that shrink already accounts for it. The timeouts of one
//! slow spell arrive together, one timeout after the load that caused them.
//! Counted again, they would shrink the limit once per window, as TCP would
//! if it cut its window for every packet lost in one burst. Other
//! failures, such as refused connections and 500s, say nothing about load
//! and are left out of the windows too.
//!
//! While the breaker is half-open only its probe is sent, and the limit
//! drops to one. It stays there until the breaker closes, and grows again
//! from there.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use super::breaker::BreakerState;

/// The highest adaptive limit.
pub const ADAPTIVE_MAX: usize = 256;
/// Largest and smallest share of the limit that a shrink keeps.
const KEEP_MOST: f64 = 0.9;
const KEEP_LEAST: f64 = 0.5;
/// Minimum number of attempts in a window.
const MIN_WINDOW: usize = 20;
/// Lowest and highest share of attempts with back pressure that the limit
/// tolerates as the API's own, present at any load.
const BACKGROUND_SHARE: f64 = 0.1;
const BACKGROUND_MOST: f64 = 0.5;
/// Attempts at one limit that measure its share of back pressure.
const EVIDENCE: f64 = 50.0;
/// Weight that the attempts counted at each limit keep from one window to
/// the next, so that the count follows a change of the API.
const FADE: f64 = 0.998;
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

/// The limit that an attempt on the wire started under, and the number of
/// shrinks before it started.
#[derive(Clone, Copy, Debug)]
pub struct Started {
    limit: usize,
    shrinks: u64,
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
    // The highest limit so far.
    highest: AtomicUsize,
    adaptive: Option<Mutex<Window>>,
}

#[derive(Debug)]
struct Window {
    in_flight: usize,
    attempts: usize,
    total: Duration,
    full: bool,
    back_pressure: usize,
    // Times the limit shrank, the drops to one for the breaker included.
    shrinks: u64,
    // False from the breaker's opening until it closes again.
    breaker_closed: bool,
    baseline: Lowest,
    // Attempts and back pressure counted at each limit, by index.
    by_limit: Vec<Tally>,
}

/// Attempts counted at one limit, and those with back pressure.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    attempts: f64,
    pressed: f64,
}

impl Window {
    /// Returns the share of back pressure that the API has at any load: the
    /// share at the lowest limit below `limit` with enough attempts.
    fn background_share(&self, limit: usize) -> f64 {
        self.by_limit[..limit.min(self.by_limit.len())]
            .iter()
            .find(|tally| tally.attempts >= EVIDENCE)
            .map_or(BACKGROUND_SHARE, |tally| {
                (tally.pressed / tally.attempts).clamp(BACKGROUND_SHARE, BACKGROUND_MOST)
            })
    }
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
            highest: AtomicUsize::new(limit),
            adaptive: adaptive.then(|| {
                Mutex::new(Window {
                    in_flight: 0,
                    attempts: 0,
                    total: Duration::ZERO,
                    full: false,
                    back_pressure: 0,
                    shrinks: 0,
                    breaker_closed: true,
                    baseline: Lowest {
                        current: f64::INFINITY,
                        previous: f64::INFINITY,
                        since: None,
                    },
                    by_limit: vec![Tally::default(); ADAPTIVE_MAX + 1],
                })
            }),
        })
    }

    /// Returns the current limit.
    pub fn limit(&self) -> usize {
        self.limit.load(Relaxed)
    }

    /// Returns the current and the highest limit of an adaptive limiter.
    pub fn adaptive_limits(&self) -> Option<(usize, usize)> {
        self.adaptive
            .as_ref()
            .map(|_| (self.limit(), self.highest.load(Relaxed)))
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
    pub fn started(&self) -> Started {
        let Some(window) = &self.adaptive else {
            return Started {
                limit: 0,
                shrinks: 0,
            };
        };
        let mut window = lock(window);
        window.in_flight += 1;
        let limit = self.limit();
        if window.in_flight >= limit {
            window.full = true;
        }
        Started {
            limit,
            shrinks: window.shrinks,
        }
    }

    /// Counts an attempt that ended after `latency`, and moves the limit
    /// when it ends a window.
    pub fn finished(&self, started: Started, latency: Duration, signal: Signal) {
        self.finished_at(started, latency, signal, Instant::now);
    }

    fn finished_at(
        &self,
        started: Started,
        latency: Duration,
        signal: Signal,
        now: impl FnOnce() -> Instant,
    ) {
        let Some(window) = &self.adaptive else {
            return;
        };
        let mut window = lock(window);
        window.in_flight = window.in_flight.saturating_sub(1);

        let counted_by_a_shrink =
            signal == Signal::BackPressure && started.shrinks < window.shrinks;
        match signal {
            Signal::Other => return,
            _ if counted_by_a_shrink => return,
            Signal::BackPressure => window.back_pressure += 1,
            Signal::Normal => window.total += latency,
        }
        window.attempts += 1;
        let tally = &mut window.by_limit[started.limit.min(ADAPTIVE_MAX)];
        tally.attempts += 1.0;
        if signal == Signal::BackPressure {
            tally.pressed += 1.0;
        }
        let limit = self.limit();
        if window.attempts < limit.max(MIN_WINDOW) {
            return;
        }

        let answered = window.attempts - window.back_pressure;
        let background = window.background_share(limit);
        let pressed = window.back_pressure > background_limit(window.attempts, background);
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
            let pressure = window.back_pressure as f64 / window.attempts as f64;
            let keep = (1.0 + background - pressure).clamp(KEEP_LEAST, KEEP_MOST);
            ((limit as f64 * keep) as usize).min(limit - 1).max(1)
        } else if window.breaker_closed && window.full && mean <= baseline * GROW_BELOW {
            // NOTE: on loopback, latency rises with every request in flight,
            // so a baseline taken at one or two requests stops the limit
            // from growing back for up to 20 seconds after it fell.
            (limit + 1).min(ADAPTIVE_MAX)
        } else {
            limit
        };

        window.attempts = 0;
        window.total = Duration::ZERO;
        window.full = window.in_flight >= next;
        window.back_pressure = 0;
        if next < limit {
            window.shrinks += 1;
        }
        for tally in &mut window.by_limit {
            tally.attempts *= FADE;
            tally.pressed *= FADE;
        }
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
            window.shrinks += 1;
            self.set_limit(1);
        }
    }

    fn set_limit(&self, next: usize) {
        let limit = self.limit.swap(next, Relaxed);
        self.highest.fetch_max(next, Relaxed);
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

/// Returns the largest count of back pressure in `attempts` that a steady
/// `share` gives by chance: the mean plus two standard deviations.
fn background_limit(attempts: usize, share: f64) -> usize {
    let n = attempts as f64;
    (n * share + 2.0 * (n * share * (1.0 - share)).sqrt()) as usize
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
        run_window(limiter, latency, now, |_| signal);
    }

    /// Runs one window in which the first `limit` attempts overlap, and
    /// attempt number `n` gets `signal(n)`.
    fn run_window(
        limiter: &Arc<Limiter>,
        latency: Duration,
        now: Instant,
        mut signal: impl FnMut(usize) -> Signal,
    ) {
        let limit = limiter.limit();
        let slots: Vec<_> = (0..limit).map(|_| limiter.try_slot().unwrap()).collect();
        let mut on_wire: Vec<_> = (0..limit).map(|_| limiter.started()).collect();
        for attempt in 0..limit.max(MIN_WINDOW) {
            if attempt >= limit {
                on_wire.push(limiter.started());
            }
            let started = on_wire.pop().unwrap();
            limiter.finished_at(started, latency, signal(attempt), || now);
        }
        drop(slots);
    }

    /// Starts and finishes one attempt that never overlaps another.
    fn alone(limiter: &Limiter, latency: Duration, signal: Signal) {
        let started = limiter.started();
        limiter.finished(started, latency, signal);
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
            alone(&limiter, FAST, Signal::Normal);
        }
        assert_eq!(limiter.limit(), 4);
    }

    #[test]
    fn stray_back_pressure_does_not_shrink() {
        let limiter = Limiter::new(16, true);
        let mut on_wire: Vec<_> = (0..16).map(|_| limiter.started()).collect();
        limiter.finished(on_wire.pop().unwrap(), FAST, Signal::BackPressure);
        for attempt in 1..MIN_WINDOW {
            if attempt >= 16 {
                on_wire.push(limiter.started());
            }
            limiter.finished(on_wire.pop().unwrap(), FAST, Signal::Normal);
        }
        assert_eq!(limiter.limit(), 17, "one in 20 is below a tenth");
    }

    #[test]
    fn other_failures_are_left_out() {
        let limiter = Limiter::new(4, true);
        for _ in 0..100 {
            alone(&limiter, Duration::ZERO, Signal::Other);
        }
        assert_eq!(limiter.limit(), 4);
        window(&limiter, FAST, Signal::Normal);
        assert_eq!(limiter.limit(), 5, "the window starts after them");
    }

    /// Ends a window of overlapping attempts at `limit`, of which
    /// `pressed` got back pressure, and returns the new limit.
    fn window_with(limit: usize, pressed: usize) -> usize {
        let limiter = Limiter::new(limit, true);
        run_window(&limiter, FAST, Instant::now(), |attempt| {
            if attempt < pressed {
                Signal::BackPressure
            } else {
                Signal::Normal
            }
        });
        limiter.limit()
    }

    #[test]
    fn shrink_follows_the_share_turned_away() {
        assert_eq!(window_with(20, 4), 21, "4 of 20 can be chance");
        assert_eq!(window_with(20, 5), 17, "keeps 1.1 - 0.25 of 20");
        assert_eq!(window_with(20, 8), 14, "keeps 1.1 - 0.4 of 20");
        assert_eq!(window_with(100, 16), 101, "16 of 100 can be chance");
        assert_eq!(window_with(100, 17), 90, "keeps at most 90 %");
        assert_eq!(window_with(20, 20), 10, "keeps at least half");
        assert_eq!(window_with(5, 5), 4);
        assert_eq!(window_with(5, 20), 2);
        assert_eq!(window_with(2, 20), 1);
        assert_eq!(window_with(1, 20), 1, "the limit never drops below one");
    }

    #[test]
    fn background_limit_is_two_deviations_up() {
        assert_eq!(background_limit(20, BACKGROUND_SHARE), 4);
        assert_eq!(background_limit(100, BACKGROUND_SHARE), 16);
        assert_eq!(background_limit(ADAPTIVE_MAX, BACKGROUND_SHARE), 35);
        assert_eq!(background_limit(20, 0.25), 8);
    }

    #[test]
    fn shrunk_limit_takes_slots_back() {
        let limiter = Limiter::new(40, true);
        window(&limiter, FAST, Signal::BackPressure);
        assert_eq!(limiter.limit(), 20);
        assert_eq!(free_slots(&limiter), 20);
    }

    /// Runs `windows` windows of overlapping attempts, each getting back
    /// pressure with the chance that `share` gives for the current limit,
    /// and returns the mean limit over the second half.
    fn simulate(limiter: &Arc<Limiter>, windows: usize, share: impl Fn(usize) -> f64) -> f64 {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut sum = 0;
        for n in 0..windows {
            let chance = share(limiter.limit());
            run_window(limiter, FAST, Instant::now(), |_| {
                if rng.gen_bool(chance) {
                    Signal::BackPressure
                } else {
                    Signal::Normal
                }
            });
            if n >= windows / 2 {
                sum += limiter.limit();
            }
        }
        sum as f64 / (windows - windows / 2) as f64
    }

    #[test]
    fn steady_seventh_of_faults_grows_limit() {
        // An API that fails one request in seven whatever the load.
        let limiter = Limiter::new(16, true);
        let mean = simulate(&limiter, 4000, |_| 1.0 / 7.0);
        assert!(mean > 32.0, "mean limit {mean}");
    }

    #[test]
    fn steady_quarter_of_faults_keeps_start() {
        // An API that fails one request in four whatever the load. The share
        // at low limits shows that shrinking does not help.
        let limiter = Limiter::new(16, true);
        let mean = simulate(&limiter, 4000, |_| 0.25);
        assert!(mean >= 16.0, "mean limit {mean}");
    }

    #[test]
    fn shedding_api_holds_limit_near_capacity() {
        // An API that serves 8 at once and turns the rest away.
        let limiter = Limiter::new(16, true);
        let mean = simulate(&limiter, 4000, |limit| {
            limit.saturating_sub(8) as f64 / limit as f64
        });
        assert!((8.0..12.0).contains(&mean), "mean limit {mean}");
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
        let mut on_wire: Vec<_> = (0..10).map(|_| limiter.started()).collect();
        on_wire.extend((10..MIN_WINDOW).map(|_| limiter.started()));
        for started in on_wire {
            limiter.finished(started, FAST, Signal::BackPressure);
        }
        assert_eq!(limiter.limit(), 5);
        drop(in_use);
        assert_eq!(free_slots(&limiter), 5);
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
    fn adaptive_limits_keep_the_highest() {
        assert_eq!(Limiter::new(4, false).adaptive_limits(), None);
        let limiter = Limiter::new(4, true);
        window(&limiter, FAST, Signal::Normal);
        window(&limiter, FAST, Signal::Normal);
        window(&limiter, FAST, Signal::BackPressure);
        assert_eq!(limiter.adaptive_limits(), Some((3, 6)));
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
