//! The circuit breaker shared by every request of a run.
//!
//! States and transitions:
//!
//! - `Closed`: requests flow. Each request that runs out of retries adds one
//!   to a count of consecutive exhausted requests; a delivered request sets
//!   the count back to zero. Permanent (4xx) failures never count. When the
//!   count reaches `failure_threshold` the breaker opens.
//! - `Open`: no request is admitted and input reading pauses, for
//!   `open_duration`. A request that runs out of retries while the breaker
//!   is open or half-open was caught by the same outage; it is not
//!   dead-lettered but waits. Every request that had to wait for the
//!   breaker starts a fresh round of retries once it is let through, since
//!   the outage, not the request, used up its earlier ones.
//! - `HalfOpen`: once the open time has passed, the first request to ask
//!   becomes the probe and is sent with its full retries while every other
//!   request waits. If the probe gets any answer from the API (a success or
//!   a permanent fault), the breaker closes and the count resets; if it runs
//!   out of retries, the breaker opens again for another `open_duration`.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// The externally visible state of the breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// Returns the lowercase name used in logs and the progress line.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }
}

/// The part a request plays when the breaker lets it through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// An ordinary request while the breaker is closed.
    Normal,
    /// The one request sent while the breaker is half-open.
    Probe,
}

/// The breaker's decision for a request that is ready to be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    pub role: Role,
    /// The transition to half-open, when this request made it.
    pub transition: Option<Transition>,
    /// Whether the request had to wait because the breaker was not closed.
    pub waited: bool,
}

/// The next step for a request that ran out of retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exhausted {
    /// Give up on the record: it goes to a dead-letter file.
    DeadLetter,
    /// The breaker is already open because of other requests: wait for it
    /// to close, then retry with a fresh retry budget.
    Wait,
}

/// A state change, returned to the caller so it can log it with context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: BreakerState,
    pub to: BreakerState,
}

/// A snapshot of the breaker for health checks and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerStatus {
    pub state: BreakerState,
    /// Time since the breaker entered `state`, or since it was created.
    pub since: Duration,
    /// Time until the open breaker lets a probe through: zero when the
    /// probe is due and waits for a request to carry it. `None` unless the
    /// breaker is open.
    pub next_probe_in: Option<Duration>,
    /// How many times the breaker has opened, as [`Breaker::openings`].
    pub openings: u64,
}

/// Validated breaker settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive exhausted requests that open the breaker.
    pub failure_threshold: NonZeroU32,
    /// How long the breaker stays open before it lets a probe through.
    pub open_duration: Duration,
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probe_out: bool },
}

impl State {
    fn public(&self) -> BreakerState {
        match self {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

#[derive(Debug)]
struct Inner {
    settings: BreakerSettings,
    state: State,
    openings: u64,
    // When `state` last changed its public state.
    changed_at: Instant,
}

/// A circuit breaker that async tasks wait on.
#[derive(Debug)]
pub struct Breaker {
    inner: Mutex<Inner>,
    // Bumped on every transition so that waiters wake up and look again.
    changes: watch::Sender<u64>,
}

enum Wait {
    Until(Instant),
    Change(watch::Receiver<u64>),
}

impl Breaker {
    /// Creates a closed breaker.
    pub fn new(settings: BreakerSettings) -> Breaker {
        Breaker {
            inner: Mutex::new(Inner {
                settings,
                state: State::Closed { failures: 0 },
                openings: 0,
                changed_at: Instant::now(),
            }),
            changes: watch::channel(0).0,
        }
    }

    /// Returns the current state.
    pub fn state(&self) -> BreakerState {
        self.lock().state.public()
    }

    /// Returns whether the breaker is open and its open time has not
    /// passed, so that [`Breaker::wait_until_not_open`] would wait.
    pub fn is_open(&self) -> bool {
        matches!(self.lock().state, State::Open { until } if Instant::now() < until)
    }

    /// Returns how many times the breaker has opened, counting reopenings
    /// after a failed probe.
    pub fn openings(&self) -> u64 {
        self.lock().openings
    }

    /// Returns the state, how long it has held and when the next probe
    /// goes.
    pub fn status(&self) -> BreakerStatus {
        let inner = self.lock();
        let now = Instant::now();
        let next_probe_in = match inner.state {
            State::Open { until } => Some(until.saturating_duration_since(now)),
            _ => None,
        };
        BreakerStatus {
            state: inner.state.public(),
            since: now.saturating_duration_since(inner.changed_at),
            next_probe_in,
            openings: inner.openings,
        }
    }

    /// Replaces the settings and keeps the state. An open breaker keeps
    /// the reopening time it was given. The new open duration applies from
    /// the next opening, and the new threshold from the next request that
    /// runs out of retries.
    pub fn reconfigure(&self, settings: BreakerSettings) {
        self.lock().settings = settings;
    }

    /// Admits a request without waiting when the breaker is closed, as
    /// [`Breaker::admit`] would. Returns `None` in any other state.
    pub fn admit_now(&self) -> Option<Admission> {
        let closed = matches!(self.lock().state, State::Closed { .. });
        closed.then_some(Admission {
            role: Role::Normal,
            transition: None,
            waited: false,
        })
    }

    /// Waits until a request may be sent and returns its role.
    ///
    /// `current` is the role the request held on its previous attempt, or
    /// `Role::Normal` on its first one: a probe keeps its role across its
    /// retries.
    pub async fn admit(&self, current: Role) -> Admission {
        let mut waited = false;
        loop {
            let wait = {
                let mut inner = self.lock();
                let admitted = |role, transition| Admission {
                    role,
                    transition,
                    waited,
                };
                match inner.state {
                    State::Closed { .. } => return admitted(Role::Normal, None),
                    State::HalfOpen { .. } if current == Role::Probe => {
                        return admitted(Role::Probe, None)
                    }
                    State::Open { until } if Instant::now() >= until => {
                        let transition = self.set(&mut inner, State::HalfOpen { probe_out: true });
                        return admitted(Role::Probe, transition);
                    }
                    State::HalfOpen { probe_out: false } => {
                        inner.state = State::HalfOpen { probe_out: true };
                        return admitted(Role::Probe, None);
                    }
                    State::Open { until } => Wait::Until(until),
                    State::HalfOpen { probe_out: true } => Wait::Change(self.changes.subscribe()),
                }
            };
            waited = true;
            match wait {
                Wait::Until(until) => tokio::time::sleep_until(until).await,
                Wait::Change(mut changes) => {
                    // The sender lives as long as `self`, so this cannot fail.
                    let _ = changes.changed().await;
                }
            }
        }
    }

    /// Waits while the breaker is open. Input reading calls this before each
    /// chunk, so that nothing is read or parsed during an outage.
    pub async fn wait_until_not_open(&self) {
        loop {
            let until = match self.lock().state {
                State::Open { until } if Instant::now() < until => until,
                _ => return,
            };
            tokio::time::sleep_until(until).await;
        }
    }

    /// Records a delivered request.
    pub fn record_success(&self, role: Role) -> Option<Transition> {
        let mut inner = self.lock();
        match (role, &inner.state) {
            (Role::Probe, State::HalfOpen { .. }) => {
                self.set(&mut inner, State::Closed { failures: 0 })
            }
            (_, State::Closed { .. }) => {
                inner.state = State::Closed { failures: 0 };
                None
            }
            _ => None,
        }
    }

    /// Records a request that ended in a permanent fault. It proves the API
    /// is responding, so a probe closes the breaker. Otherwise nothing
    /// changes.
    pub fn record_permanent(&self, role: Role) -> Option<Transition> {
        let mut inner = self.lock();
        match (role, &inner.state) {
            (Role::Probe, State::HalfOpen { .. }) => {
                self.set(&mut inner, State::Closed { failures: 0 })
            }
            _ => None,
        }
    }

    /// Records a request that ran out of retries and returns its next step.
    pub fn record_exhausted(&self, role: Role) -> (Exhausted, Option<Transition>) {
        let mut inner = self.lock();
        let open = State::Open {
            until: Instant::now() + inner.settings.open_duration,
        };
        match (role, &inner.state) {
            (Role::Probe, State::HalfOpen { .. }) => {
                inner.openings += 1;
                (Exhausted::DeadLetter, self.set(&mut inner, open))
            }
            (_, State::Closed { failures }) => {
                let failures = failures + 1;
                if failures >= inner.settings.failure_threshold.get() {
                    inner.openings += 1;
                    (Exhausted::DeadLetter, self.set(&mut inner, open))
                } else {
                    inner.state = State::Closed { failures };
                    (Exhausted::DeadLetter, None)
                }
            }
            _ => (Exhausted::Wait, None),
        }
    }

    /// Gives up the probe role without a verdict, as when the run is
    /// cancelled, so that another request can probe.
    pub fn release_probe(&self, role: Role) {
        let mut inner = self.lock();
        if role == Role::Probe {
            if let State::HalfOpen { probe_out: true } = inner.state {
                inner.state = State::HalfOpen { probe_out: false };
                self.changes.send_modify(|n| *n += 1);
            }
        }
    }

    fn set(&self, inner: &mut Inner, state: State) -> Option<Transition> {
        let from = inner.state.public();
        let to = state.public();
        inner.state = state;
        if from != to {
            inner.changed_at = Instant::now();
        }
        self.changes.send_modify(|n| *n += 1);
        (from != to).then_some(Transition { from, to })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The lock is never held across a panic point that leaves the state
        // half-written, so a poisoned lock still holds a valid state.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn breaker(threshold: u32) -> Arc<Breaker> {
        Arc::new(Breaker::new(BreakerSettings {
            failure_threshold: NonZeroU32::new(threshold).unwrap(),
            open_duration: Duration::from_secs(10),
        }))
    }

    async fn open(breaker: &Breaker, threshold: u32) {
        for _ in 0..threshold {
            let role = breaker.admit(Role::Normal).await.role;
            breaker.record_exhausted(role);
        }
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn opens_at_threshold_of_exhausted_requests() {
        let breaker = breaker(3);
        for n in 1..=3 {
            let role = breaker.admit(Role::Normal).await.role;
            let (verdict, transition) = breaker.record_exhausted(role);
            assert_eq!(verdict, Exhausted::DeadLetter);
            if n < 3 {
                assert_eq!(transition, None);
                assert_eq!(breaker.state(), BreakerState::Closed);
            } else {
                let to_open = Transition {
                    from: BreakerState::Closed,
                    to: BreakerState::Open,
                };
                assert_eq!(transition, Some(to_open));
            }
        }
        assert_eq!(breaker.openings(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn status_reports_since_and_next_probe() {
        let breaker = breaker(1);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let closed = breaker.status();
        assert_eq!(closed.state, BreakerState::Closed);
        assert_eq!(closed.since, Duration::from_secs(3));
        assert_eq!(closed.next_probe_in, None);

        open(&breaker, 1).await;
        tokio::time::sleep(Duration::from_secs(4)).await;
        let open = breaker.status();
        assert_eq!(open.state, BreakerState::Open);
        assert_eq!(open.since, Duration::from_secs(4));
        assert_eq!(open.next_probe_in, Some(Duration::from_secs(6)));
        assert_eq!(open.openings, 1);

        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(breaker.status().next_probe_in, Some(Duration::ZERO));
        let probe = breaker.admit(Role::Normal).await.role;
        let half_open = breaker.status();
        assert_eq!(half_open.state, BreakerState::HalfOpen);
        assert_eq!(half_open.since, Duration::ZERO);
        assert_eq!(half_open.next_probe_in, None);

        breaker.record_success(probe);
        assert_eq!(breaker.status().state, BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn success_resets_the_count() {
        let breaker = breaker(2);
        breaker.record_exhausted(Role::Normal);
        breaker.record_success(Role::Normal);
        breaker.record_exhausted(Role::Normal);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_failures_never_count() {
        let breaker = breaker(1);
        for _ in 0..10 {
            assert_eq!(breaker.record_permanent(Role::Normal), None);
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn open_breaker_admits_nothing_until_open_duration_passes() {
        let breaker = breaker(1);
        open(&breaker, 1).await;
        let start = Instant::now();

        let admission = breaker.admit(Role::Normal).await;

        assert_eq!(start.elapsed(), Duration::from_secs(10));
        assert_eq!(admission.role, Role::Probe);
        assert!(admission.waited);
        let transition = admission.transition;
        let to_half_open = Transition {
            from: BreakerState::Open,
            to: BreakerState::HalfOpen,
        };
        assert_eq!(transition, Some(to_half_open));
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_sends_exactly_one_probe() {
        let breaker = breaker(1);
        open(&breaker, 1).await;
        let probe = breaker.admit(Role::Normal).await.role;
        assert_eq!(probe, Role::Probe);

        let other = tokio::spawn({
            let breaker = breaker.clone();
            async move { breaker.admit(Role::Normal).await.role }
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(
            !other.is_finished(),
            "a second request passed a half-open breaker"
        );

        // The probe keeps its role across its own retries.
        assert_eq!(breaker.admit(Role::Probe).await.role, Role::Probe);

        breaker.record_success(Role::Probe);
        assert_eq!(other.await.unwrap(), Role::Normal);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probe_reopens_for_another_open_duration() {
        let breaker = breaker(1);
        open(&breaker, 1).await;
        let probe = breaker.admit(Role::Normal).await.role;
        let reopened_at = Instant::now();

        let (verdict, transition) = breaker.record_exhausted(probe);

        assert_eq!(verdict, Exhausted::DeadLetter);
        assert_eq!(transition.map(|t| t.to), Some(BreakerState::Open));
        assert_eq!(breaker.openings(), 2);
        let role = breaker.admit(Role::Normal).await.role;
        assert_eq!(role, Role::Probe);
        assert_eq!(reopened_at.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_fault_on_probe_closes() {
        let breaker = breaker(1);
        open(&breaker, 1).await;
        let probe = breaker.admit(Role::Normal).await.role;
        let transition = breaker.record_permanent(probe);
        assert_eq!(transition.map(|t| t.to), Some(BreakerState::Closed));
    }

    #[tokio::test(start_paused = true)]
    async fn requests_exhausted_while_open_wait_instead_of_dead_lettering() {
        let breaker = breaker(1);
        let late = breaker.admit(Role::Normal).await.role;
        open(&breaker, 1).await;

        let (verdict, transition) = breaker.record_exhausted(late);

        assert_eq!(verdict, Exhausted::Wait);
        assert_eq!(transition, None);
        assert_eq!(breaker.openings(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn late_success_does_not_close_an_open_breaker() {
        let breaker = breaker(1);
        let late = breaker.admit(Role::Normal).await.role;
        open(&breaker, 1).await;
        assert_eq!(breaker.record_success(late), None);
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn released_probe_lets_another_request_probe() {
        let breaker = breaker(1);
        open(&breaker, 1).await;
        let probe = breaker.admit(Role::Normal).await.role;
        let waiter = tokio::spawn({
            let breaker = breaker.clone();
            async move { breaker.admit(Role::Normal).await.role }
        });
        tokio::task::yield_now().await;

        breaker.release_probe(probe);

        assert_eq!(waiter.await.unwrap(), Role::Probe);
    }

    #[tokio::test(start_paused = true)]
    async fn reconfigure_keeps_state() {
        let breaker = breaker(1);
        open(&breaker, 1).await;

        breaker.reconfigure(BreakerSettings {
            failure_threshold: NonZeroU32::new(2).unwrap(),
            open_duration: Duration::from_secs(3),
        });

        assert_eq!(breaker.state(), BreakerState::Open);
        let start = Instant::now();
        let probe = breaker.admit(Role::Normal).await.role;
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        breaker.record_success(probe);
        breaker.record_exhausted(Role::Normal);
        assert_eq!(breaker.state(), BreakerState::Closed);
        breaker.record_exhausted(Role::Normal);
        assert_eq!(breaker.state(), BreakerState::Open);
        let reopened = Instant::now();
        breaker.wait_until_not_open().await;
        assert_eq!(reopened.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn reading_waits_only_while_open() {
        let breaker = breaker(1);
        let start = Instant::now();
        breaker.wait_until_not_open().await;
        assert_eq!(start.elapsed(), Duration::ZERO);

        open(&breaker, 1).await;
        assert!(breaker.is_open());
        breaker.wait_until_not_open().await;
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        assert!(!breaker.is_open());
        assert_eq!(breaker.state(), BreakerState::Open);
    }
}
