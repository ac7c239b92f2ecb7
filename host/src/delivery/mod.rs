//! Delivery: sending one record's request until it succeeds, fails for
//! good, or runs out of retries.
//!
//! A request's concurrency slot is held only while an attempt is on the
//! wire; a request waiting out its backoff or the circuit breaker gives its
//! slot to others, so retries overlap with new work instead of blocking it.
//! Every attempt first passes the shared [`Breaker`].
//!
//! The retry loop does not log. It reports each retry and breaker change
//! through a callback, which the caller logs with the record's file,
//! position and key.

pub mod backoff;
pub mod breaker;
pub mod classify;
pub mod limiter;
pub mod retry_after;
mod transport;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use tokio::sync::watch;

use self::backoff::{Backoff, BackoffPolicy};
use self::breaker::{Breaker, Exhausted, Role, Transition};
use self::classify::{Fault, FaultKind};
pub use self::limiter::Slot;
use self::limiter::{Limiter, Signal};
use self::retry_after::parse_retry_after;
use self::transport::Transport;
use crate::config::HttpSettings;

/// How many bytes of an error response body are kept for reports.
const ERROR_BODY_LIMIT: usize = 512;
/// How many bytes of an error response body are passed to a plugin's
/// `classify`.
const CLASSIFY_BODY_LIMIT: usize = 64 * 1024;

/// Validated retry settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt; 0 means one attempt only.
    pub max_retries: u32,
    /// The backoff schedule between attempts.
    pub backoff: BackoffPolicy,
    /// Cap on a delay requested by `Retry-After`.
    pub max_retry_after: Duration,
    /// Seed for the jitter; each record derives its own stream from it.
    pub jitter_seed: Option<u64>,
}

/// A request ready to send, with its body shared across attempts.
#[derive(Clone, Debug)]
pub struct PreparedRequest {
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// The last failed attempt of a request that was not delivered.
#[derive(Clone, Debug)]
pub struct FailureDetail {
    pub fault: Fault,
    /// The start of the response body, when the server sent one.
    pub body: Option<String>,
}

/// The end state of a record's delivery.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// A 2xx response arrived, or the plugin judged another response as
    /// delivered.
    Delivered { status: StatusCode },
    /// The run is shutting down: no further attempt was made, and the
    /// record is neither delivered nor dead-lettered.
    Abandoned,
    /// A permanent fault: the record needs a fix, not a retry.
    Rejected(FailureDetail),
    /// Transient faults until the retries ran out.
    Exhausted(FailureDetail),
}

/// The result of [`Sender::deliver`].
#[derive(Clone, Debug)]
pub struct Delivery {
    pub outcome: Outcome,
    /// Attempts made, counting the first one.
    pub attempts: u32,
}

/// Something that happened while delivering one record.
#[derive(Clone, Debug)]
pub enum Event {
    /// The first attempt is about to go on the wire.
    FirstAttempt,
    /// A transient fault; the next attempt follows after `delay`.
    Retry {
        attempt: u32,
        max_attempts: u32,
        fault: Fault,
        delay: Duration,
    },
    /// The request ran out of retries while the breaker was already open,
    /// so it waits for the breaker instead of being dead-lettered.
    HeldByBreaker { attempt: u32 },
    /// This request's result changed the breaker's state.
    Breaker(Transition),
}

/// A plugin's judgement of a response that is not a 2xx success.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Delivered(String),
    Retry(String),
    RetryAfter(Duration, String),
    Permanent(String),
}

/// Classifies responses before the host's own rules apply.
pub trait Classify: Send + Sync {
    /// Returns a verdict, or `None` to let the host's rules decide.
    fn classify(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Option<Verdict>;
}

/// Counters that the sender keeps up to date for the progress display and
/// the metrics. They run once per attempt, so they must be cheap: atomic
/// adds, no locks.
pub trait InFlight: Send + Sync {
    /// Counts an attempt that went on the wire.
    fn started(&self);
    /// Counts an attempt that came back, or failed, after `elapsed`.
    fn finished(&self, elapsed: Duration);
    /// Counts a retry that is about to go on the wire, by the fault of the
    /// attempt before it.
    fn retrying(&self, _cause: &Fault) {}
    /// Counts an attempt that ended in a transient fault.
    fn transient_fault(&self) {}
    /// Notes the limit on requests in flight after an attempt.
    fn limit(&self, _limit: usize) {}
}

/// Sends requests through one connection pool, concurrency limit and
/// breaker.
pub struct Sender {
    transport: Transport,
    limiter: Arc<Limiter>,
    breaker: Arc<Breaker>,
    retry: RetryPolicy,
    in_flight: Arc<dyn InFlight>,
    classifier: Option<Arc<dyn Classify>>,
    idempotency_header: Option<HeaderName>,
    warned_unkeyed_post: AtomicBool,
    shutdown: watch::Receiver<bool>,
}

/// Optional parts of a [`Sender`].
#[derive(Default)]
pub struct SenderOptions {
    /// The plugin's response classifier.
    pub classifier: Option<Arc<dyn Classify>>,
    /// The header that carries idempotency keys, when they are on.
    pub idempotency_header: Option<HeaderName>,
    /// Turns true when the run must stop starting new attempts.
    pub shutdown: Option<watch::Receiver<bool>>,
}

impl Sender {
    /// Builds the HTTP clients.
    ///
    /// # Errors
    ///
    /// Fails when the TLS backend or, with a proxy variable set, the
    /// client for proxied requests cannot be initialised.
    pub fn new(
        http: &HttpSettings,
        retry: RetryPolicy,
        breaker: Arc<Breaker>,
        in_flight: Arc<dyn InFlight>,
        options: SenderOptions,
    ) -> anyhow::Result<Sender> {
        let transport = Transport::new(http)?;
        let limiter = Limiter::new(http.concurrency.get(), http.adaptive);
        in_flight.limit(limiter.limit());
        Ok(Sender {
            transport,
            limiter,
            breaker,
            retry,
            in_flight,
            classifier: options.classifier,
            idempotency_header: options.idempotency_header,
            warned_unkeyed_post: AtomicBool::new(false),
            // A sender without a shutdown signal never stops early.
            shutdown: options.shutdown.unwrap_or_else(|| watch::channel(false).1),
        })
    }

    /// Returns the breaker this sender obeys.
    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }

    /// Takes a free concurrency slot, if there is one.
    pub fn try_slot(&self) -> Option<Slot> {
        self.limiter.try_slot()
    }

    /// Waits for a free concurrency slot. Waiters, the retries inside
    /// [`Sender::deliver`] among them, get slots in the order of their calls.
    pub fn slot(&self) -> impl Future<Output = Slot> + Send + 'static {
        self.limiter.clone().slot()
    }

    /// Returns the current limit on requests in flight.
    pub fn concurrency_limit(&self) -> usize {
        self.limiter.limit()
    }

    /// Returns the current and the highest limit, when it is adaptive.
    pub fn adaptive_limits(&self) -> Option<(usize, usize)> {
        self.limiter.adaptive_limits()
    }

    /// Delivers one request, retrying transient faults.
    ///
    /// `slot`, when given, is used for the first attempt if the breaker
    /// admits it at once. Otherwise it is given back before waiting.
    /// `seed` picks the record's jitter stream when no jitter seed is
    /// configured to be fixed; `on_event` hears about retries and breaker
    /// changes as they happen.
    pub async fn deliver(
        &self,
        request: &PreparedRequest,
        seed: u64,
        mut slot: Option<Slot>,
        on_event: &mut (dyn FnMut(Event) + Send),
    ) -> Delivery {
        let seed = match self.retry.jitter_seed {
            Some(base) => base ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            None => rand::random(),
        };
        // The limiter follows the breaker through the transitions that
        // this request's attempts make.
        let mut on_event = |event: Event| {
            if let Event::Breaker(transition) = &event {
                self.limiter.breaker_changed(transition.to);
            }
            on_event(event);
        };
        let mut backoff = Backoff::new(self.retry.backoff, seed);
        let max_attempts = self.retry.max_retries.saturating_add(1);
        let mut role = Role::Normal;
        let mut attempts = 0u32;
        // Attempts made in the current round; a round restarts after the
        // request waited for the breaker or became the probe.
        let mut round = 0u32;
        // The fault that the next attempt retries.
        let mut retry_cause: Option<Fault> = None;

        let mut shutdown = self.shutdown.clone();
        loop {
            // While the breaker is closed, admission neither waits nor
            // needs the stop signal raced against it.
            let admission = match self.breaker.admit_now() {
                Some(admission) => admission,
                None => {
                    // A request that waits for the breaker gives its slot
                    // back, so that the probe, whichever request it is, gets one.
                    slot = None;
                    tokio::select! {
                        admission = self.breaker.admit(role) => admission,
                        _ = crate::shutdown::stopped(&mut shutdown) => {
                            self.breaker.release_probe(role);
                            return Delivery { outcome: Outcome::Abandoned, attempts };
                        }
                    }
                }
            };
            if *shutdown.borrow() {
                self.breaker.release_probe(admission.role);
                return Delivery {
                    outcome: Outcome::Abandoned,
                    attempts,
                };
            }
            if let Some(transition) = admission.transition {
                on_event(Event::Breaker(transition));
            }
            // A request that waited out an open breaker, or that becomes
            // the probe, starts a fresh round: the outage used up its
            // retries, not a fault of its own.
            if admission.waited || (admission.role == Role::Probe && role != Role::Probe) {
                round = 0;
                backoff.reset();
            }
            role = admission.role;
            attempts += 1;
            round += 1;

            // Requests queue here for a concurrency slot; one that gets a
            // slot after the stop signal is left for the next run.
            // A free slot is taken at once. A permit is only free when no
            // request is queued for one, so this keeps the queue's order.
            let slot = match slot.take().or_else(|| self.try_slot()) {
                Some(slot) => slot,
                None => tokio::select! {
                    slot = self.slot() => slot,
                    _ = crate::shutdown::stopped(&mut shutdown) => {
                        self.breaker.release_probe(role);
                        return Delivery { outcome: Outcome::Abandoned, attempts: attempts - 1 };
                    }
                },
            };
            if attempts == 1 {
                on_event(Event::FirstAttempt);
            } else if let Some(cause) = retry_cause.take() {
                self.in_flight.retrying(&cause);
            }
            // Boxed, so that a delivery waiting for its turn or its
            // backoff stays small: this future is most of its size.
            let result = Box::pin(self.attempt(request, slot)).await;
            let (fault, retry_after) = match result {
                Ok(status) => {
                    if let Some(transition) = self.breaker.record_success(role) {
                        on_event(Event::Breaker(transition));
                    }
                    let outcome = Outcome::Delivered { status };
                    return Delivery { outcome, attempts };
                }
                Err(failure) => failure,
            };

            if fault.fault.kind() == FaultKind::Permanent {
                if let Some(transition) = self.breaker.record_permanent(role) {
                    on_event(Event::Breaker(transition));
                }
                let outcome = Outcome::Rejected(fault);
                return Delivery { outcome, attempts };
            }
            self.in_flight.transient_fault();

            if round < max_attempts {
                let backoff_delay = backoff.next().unwrap_or(self.retry.backoff.max);
                let delay = retry_after
                    .map(|delay| delay.min(self.retry.max_retry_after))
                    .unwrap_or(backoff_delay);
                self.warn_unkeyed_post(request);
                on_event(Event::Retry {
                    attempt: attempts,
                    max_attempts,
                    fault: fault.fault.clone(),
                    delay,
                });
                tokio::select! {
                    _ = Box::pin(tokio::time::sleep(delay)) => {}
                    _ = crate::shutdown::stopped(&mut shutdown) => {
                        self.breaker.release_probe(role);
                        return Delivery { outcome: Outcome::Abandoned, attempts };
                    }
                }
                retry_cause = Some(fault.fault);
                continue;
            }

            let (verdict, transition) = self.breaker.record_exhausted(role);
            if let Some(transition) = transition {
                on_event(Event::Breaker(transition));
            }
            match verdict {
                Exhausted::DeadLetter => {
                    let outcome = Outcome::Exhausted(fault);
                    return Delivery { outcome, attempts };
                }
                Exhausted::Wait => {
                    on_event(Event::HeldByBreaker { attempt: attempts });
                    round = 0;
                    backoff.reset();
                    retry_cause = Some(fault.fault);
                }
            }
        }
    }

    /// Warns once per run that POSTs are retried without idempotency keys,
    /// because each retry after a lost response may create a duplicate.
    fn warn_unkeyed_post(&self, request: &PreparedRequest) {
        let keyed = self
            .idempotency_header
            .as_ref()
            .is_some_and(|name| request.headers.contains_key(name));
        if request.method == Method::POST
            && !keyed
            && !self.warned_unkeyed_post.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                "retrying POST requests without idempotency keys; a retry after a lost \
                 response may create a duplicate"
            );
        }
    }

    /// Sends one attempt and reads the whole response within the timeout.
    /// On failure, returns the fault and any `Retry-After` delay.
    async fn attempt(
        &self,
        request: &PreparedRequest,
        _slot: Slot,
    ) -> Result<StatusCode, (FailureDetail, Option<Duration>)> {
        self.in_flight.started();
        let on_wire = self.limiter.started();
        let started = std::time::Instant::now();
        let result = self.exchange(request).await;
        let elapsed = started.elapsed();
        self.in_flight.finished(elapsed);
        let signal = match &result {
            Ok(_) => Signal::Normal,
            Err((detail, _)) if detail.fault.is_back_pressure() => Signal::BackPressure,
            Err((detail, _)) if detail.fault.is_transient() => Signal::Other,
            // A permanent fault is a response, with a latency like others.
            Err(_) => Signal::Normal,
        };
        self.limiter.finished(on_wire, elapsed, signal);
        self.in_flight.limit(self.limiter.limit());
        result
    }

    async fn exchange(
        &self,
        request: &PreparedRequest,
    ) -> Result<StatusCode, (FailureDetail, Option<Duration>)> {
        let fail = |fault| (FailureDetail { fault, body: None }, None);
        let response = self.transport.exchange(request).await.map_err(fail)?;
        let status = response.status;
        if status.is_success() {
            return Ok(status);
        }
        let retry_after = if matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            response
                .headers
                .get(RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| parse_retry_after(value, SystemTime::now()))
        } else {
            None
        };
        let headers = response.headers;
        let body = response.body;

        let text = String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_LIMIT)]);
        let mut text = text.trim().to_owned();
        let keyed = self
            .idempotency_header
            .as_ref()
            .is_some_and(|name| request.headers.contains_key(name));
        if status == StatusCode::UNPROCESSABLE_ENTITY && keyed {
            // Idempotency-aware servers return 422 when a key comes back
            // with another payload, which retrying cannot fix. Other
            // servers use 422 for invalid payloads, so name both.
            text = format!(
                "idempotency key reused with a different payload, or an invalid payload: {text}"
            );
        }
        let body_text = (!text.is_empty()).then_some(text);

        let verdict = self.classifier.as_ref().and_then(|classifier| {
            let limit = body.len().min(CLASSIFY_BODY_LIMIT);
            classifier.classify(status, &headers, &body[..limit])
        });
        let (fault, retry_after) = match verdict {
            None => (Fault::Status(status), retry_after),
            Some(Verdict::Delivered(reason)) => {
                tracing::debug!(status = status.as_u16(), reason = %reason, "plugin judged response as delivered");
                return Ok(status);
            }
            Some(Verdict::Retry(reason)) => (
                Fault::Plugin {
                    status,
                    transient: true,
                    reason,
                },
                None,
            ),
            Some(Verdict::RetryAfter(delay, reason)) => (
                Fault::Plugin {
                    status,
                    transient: true,
                    reason,
                },
                Some(delay),
            ),
            Some(Verdict::Permanent(reason)) => (
                Fault::Plugin {
                    status,
                    transient: false,
                    reason,
                },
                None,
            ),
        };
        let detail = FailureDetail {
            fault,
            body: body_text,
        };
        Err((detail, retry_after))
    }
}

/// Builds a request from a plugin's method, path, headers and body.
///
/// # Errors
///
/// Returns a message naming the bad part: an invalid method, a path that
/// does not start with `/`, or an invalid header.
pub fn prepare(
    endpoint: &Url,
    method: &str,
    path: &str,
    plugin_headers: impl IntoIterator<Item = (String, String)>,
    extra_headers: &[(HeaderName, HeaderValue)],
    body: Vec<u8>,
) -> Result<PreparedRequest, String> {
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| format!("invalid HTTP method {method:?}"))?;
    if !path.starts_with('/') {
        return Err(format!("request path {path:?} does not start with \"/\""));
    }
    // URL parsing resolves `.` and `..` segments, also percent-encoded, so
    // such a path would address another resource than the record's.
    let mut segments = path.split(['?', '#']).next().unwrap_or_default().split('/');
    if segments.any(is_dot_segment) {
        return Err(format!(
            "request path {path:?} contains a \".\" or \"..\" segment, which would address \
             another resource"
        ));
    }
    let url = join(endpoint, path)
        .map_err(|err| format!("request path {path:?} makes an invalid URL: {err}"))?;

    let mut headers = HeaderMap::new();
    for (name, value) in plugin_headers {
        let header_name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid header name {name:?}"))?;
        let header_value = HeaderValue::from_str(&value)
            .map_err(|_| format!("invalid value for header {name:?}"))?;
        headers.append(header_name, header_value);
    }
    for (name, value) in extra_headers {
        headers.insert(name.clone(), value.clone());
    }
    Ok(PreparedRequest {
        method,
        url,
        headers,
        body: Bytes::from(body),
    })
}

/// Appends a request path, with its query, to the endpoint's path.
///
/// Most paths are printable ASCII: for them, the path and query are set on
/// a copy of the parsed endpoint, which skips parsing the scheme and host
/// again for every request. Any other path, or an endpoint with a query or
/// fragment, goes through the full parser on the joined text.
fn join(endpoint: &Url, path: &str) -> Result<Url, String> {
    let simple = path
        .bytes()
        .all(|byte| byte.is_ascii_graphic() && byte != b'\\' && byte != b'#');
    if !simple || endpoint.query().is_some() || endpoint.fragment().is_some() {
        let base = endpoint.as_str().trim_end_matches('/');
        return Url::parse(&format!("{base}{path}")).map_err(|err| err.to_string());
    }
    let (path, query) = match path.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path, None),
    };
    let base = endpoint.path().trim_end_matches('/');
    let mut url = endpoint.clone();
    if base.is_empty() {
        url.set_path(path);
    } else {
        url.set_path(&format!("{base}{path}"));
    }
    url.set_query(query);
    Ok(url)
}

/// Returns whether a path segment is `.` or `..`, with any dot written
/// as `%2e` or `%2E`. Runs once per request, so it allocates nothing.
fn is_dot_segment(segment: &str) -> bool {
    let mut rest = segment.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        rest = match rest {
            [b'.', tail @ ..] => tail,
            [b'%', b'2', b'e' | b'E', tail @ ..] => tail,
            _ => return false,
        };
        dots += 1;
    }
    dots == 1 || dots == 2
}

#[cfg(test)]
mod tests;
