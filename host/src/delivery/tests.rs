//! Retry-loop tests against a real HTTP server on 127.0.0.1 (wiremock).
//! Backoffs are a few milliseconds, so these run on real time.

use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::atomic::{AtomicUsize, Ordering};

use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Respond, ResponseTemplate};

use super::*;
use crate::delivery::breaker::{BreakerSettings, BreakerState};

struct NoCount;

impl InFlight for NoCount {
    fn started(&self) {}
    fn finished(&self, _elapsed: Duration) {}
}

/// Answers with the given statuses in turn, then repeats the last one.
struct Script {
    statuses: Vec<u16>,
    calls: AtomicUsize,
    retry_after: Option<&'static str>,
}

impl Respond for Script {
    fn respond(&self, _: &wiremock::Request) -> ResponseTemplate {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let status = self.statuses[n.min(self.statuses.len() - 1)];
        let mut response = ResponseTemplate::new(status).set_body_string(format!("reply {n}"));
        if let Some(value) = self.retry_after {
            response = response.insert_header("Retry-After", value);
        }
        response
    }
}

fn retry(max_retries: u32) -> RetryPolicy {
    RetryPolicy {
        max_retries,
        backoff: BackoffPolicy {
            initial: Duration::from_millis(2),
            multiplier: 2.0,
            max: Duration::from_millis(10),
        },
        max_retry_after: Duration::from_secs(5),
        jitter_seed: Some(1),
    }
}

fn http(timeout: Duration) -> HttpSettings {
    HttpSettings {
        concurrency: NonZeroUsize::new(4).unwrap(),
        adaptive: false,
        timeout,
        connect_timeout: Duration::from_secs(1),
        headers: Vec::new(),
    }
}

fn sender(retry: RetryPolicy, threshold: u32, timeout: Duration) -> Sender {
    let breaker = Arc::new(Breaker::new(BreakerSettings {
        failure_threshold: NonZeroU32::new(threshold).unwrap(),
        open_duration: Duration::from_millis(200),
    }));
    let options = SenderOptions::default();
    Sender::new(&http(timeout), retry, breaker, Arc::new(NoCount), options).unwrap()
}

async fn server_with(statuses: &[u16], retry_after: Option<&'static str>) -> MockServer {
    let server = MockServer::start().await;
    let script = Script {
        statuses: statuses.to_vec(),
        calls: AtomicUsize::new(0),
        retry_after,
    };
    Mock::given(method("PUT"))
        .and(path("/items/1"))
        .respond_with(script)
        .mount(&server)
        .await;
    server
}

fn put(server: &MockServer) -> PreparedRequest {
    let endpoint = Url::parse(&server.uri()).unwrap();
    prepare(&endpoint, "PUT", "/items/1", [], &[], b"{}".to_vec()).unwrap()
}

async fn deliver(sender: &Sender, request: &PreparedRequest) -> (Delivery, Vec<Event>) {
    let mut events = Vec::new();
    let delivery = sender
        .deliver(request, 0, None, &mut |event| {
            if !matches!(event, Event::FirstAttempt) {
                events.push(event);
            }
        })
        .await;
    (delivery, events)
}

fn retry_delays(events: &[Event]) -> Vec<Duration> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Retry { delay, .. } => Some(*delay),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn transient_statuses_are_retried_until_success() {
    let server = server_with(&[503, 500, 200], None).await;
    let sender = sender(retry(5), 5, Duration::from_secs(5));

    let (delivery, events) = deliver(&sender, &put(&server)).await;

    assert!(matches!(delivery.outcome, Outcome::Delivered { status } if status == 200));
    assert_eq!(delivery.attempts, 3);
    assert_eq!(retry_delays(&events).len(), 2);
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
}

#[tokio::test]
async fn permanent_status_is_not_retried() {
    let server = server_with(&[400], None).await;
    let sender = sender(retry(5), 5, Duration::from_secs(5));

    let (delivery, events) = deliver(&sender, &put(&server)).await;

    let Outcome::Rejected(detail) = delivery.outcome else {
        panic!("expected a rejection, got {:?}", delivery.outcome);
    };
    assert_eq!(detail.fault.status(), Some(StatusCode::BAD_REQUEST));
    assert_eq!(detail.body.as_deref(), Some("reply 0"));
    assert_eq!(delivery.attempts, 1);
    assert!(events.is_empty());
}

#[tokio::test]
async fn zero_max_retries_means_one_attempt() {
    let server = server_with(&[503], None).await;
    let sender = sender(retry(0), 5, Duration::from_secs(5));

    let (delivery, _) = deliver(&sender, &put(&server)).await;

    assert!(matches!(delivery.outcome, Outcome::Exhausted(_)));
    assert_eq!(delivery.attempts, 1);
}

#[tokio::test]
async fn exhausted_after_max_retries_plus_one_attempts() {
    let server = server_with(&[502], None).await;
    let sender = sender(retry(3), 5, Duration::from_secs(5));

    let (delivery, events) = deliver(&sender, &put(&server)).await;

    let Outcome::Exhausted(detail) = delivery.outcome else {
        panic!("expected exhaustion, got {:?}", delivery.outcome);
    };
    assert_eq!(detail.fault.status(), Some(StatusCode::BAD_GATEWAY));
    assert_eq!(delivery.attempts, 4);
    let attempts: Vec<u32> = events
        .iter()
        .filter_map(|event| match event {
            Event::Retry {
                attempt,
                max_attempts,
                ..
            } => {
                assert_eq!(*max_attempts, 4);
                Some(*attempt)
            }
            _ => None,
        })
        .collect();
    assert_eq!(attempts, [1, 2, 3]);
}

#[tokio::test]
async fn retry_after_seconds_sets_the_delay() {
    let server = server_with(&[429, 200], Some("1")).await;
    let sender = sender(retry(2), 5, Duration::from_secs(5));

    let (delivery, events) = deliver(&sender, &put(&server)).await;

    assert!(matches!(delivery.outcome, Outcome::Delivered { .. }));
    assert_eq!(retry_delays(&events), [Duration::from_secs(1)]);
}

#[tokio::test]
async fn retry_after_is_capped() {
    let server = server_with(&[503, 200], Some("3600")).await;
    let mut policy = retry(2);
    policy.max_retry_after = Duration::from_millis(20);
    let sender = sender(policy, 5, Duration::from_secs(5));

    let (_, events) = deliver(&sender, &put(&server)).await;

    assert_eq!(retry_delays(&events), [Duration::from_millis(20)]);
}

#[tokio::test]
async fn retry_after_is_ignored_on_500() {
    let server = server_with(&[500, 200], Some("3600")).await;
    let sender = sender(retry(2), 5, Duration::from_secs(5));

    let (_, events) = deliver(&sender, &put(&server)).await;

    let delays = retry_delays(&events);
    assert_eq!(delays.len(), 1);
    assert!(delays[0] <= Duration::from_millis(2), "{delays:?}");
}

#[tokio::test]
async fn slow_response_times_out_and_is_retried() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(2)))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let sender = sender(retry(2), 5, Duration::from_millis(200));

    let (delivery, events) = deliver(&sender, &put(&server)).await;

    assert!(matches!(delivery.outcome, Outcome::Delivered { .. }));
    assert_eq!(delivery.attempts, 2);
    assert!(matches!(
        &events[0],
        Event::Retry {
            fault: Fault::Timeout,
            ..
        }
    ));
}

#[tokio::test]
async fn refused_connection_is_transient() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let endpoint = Url::parse(&format!("http://{addr}")).unwrap();
    let request = prepare(&endpoint, "PUT", "/x", [], &[], Vec::new()).unwrap();
    let sender = sender(retry(1), 5, Duration::from_secs(1));

    let (delivery, events) = deliver(&sender, &request).await;

    let Outcome::Exhausted(detail) = delivery.outcome else {
        panic!("expected exhaustion, got {:?}", delivery.outcome);
    };
    assert!(
        matches!(detail.fault, Fault::Connection(_)),
        "{:?}",
        detail.fault
    );
    assert_eq!(delivery.attempts, 2);
    assert_eq!(events.len(), 1);
}

#[tokio::test]
async fn exhaustion_at_threshold_opens_the_breaker() {
    let server = server_with(&[503], None).await;
    let sender = sender(retry(0), 1, Duration::from_secs(5));

    let (_, events) = deliver(&sender, &put(&server)).await;

    assert_eq!(sender.breaker().state(), BreakerState::Open);
    assert!(events
        .iter()
        .any(|event| matches!(event, Event::Breaker(t) if t.to == BreakerState::Open)));
}

#[tokio::test]
async fn probe_closes_the_breaker_after_recovery() {
    let server = server_with(&[503, 200], None).await;
    let sender = sender(retry(0), 1, Duration::from_secs(5));
    let request = put(&server);
    deliver(&sender, &request).await;
    assert_eq!(sender.breaker().state(), BreakerState::Open);

    let started = tokio::time::Instant::now();
    let (delivery, events) = deliver(&sender, &request).await;

    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(matches!(delivery.outcome, Outcome::Delivered { .. }));
    assert_eq!(sender.breaker().state(), BreakerState::Closed);
    let states: Vec<_> = events
        .iter()
        .filter_map(|event| match event {
            Event::Breaker(t) => Some(t.to),
            _ => None,
        })
        .collect();
    assert_eq!(states, [BreakerState::HalfOpen, BreakerState::Closed]);
}

#[tokio::test]
async fn see_other_redirect_is_not_followed() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(303).insert_header("Location", "/elsewhere"))
        .mount(&server)
        .await;
    let sender = sender(retry(2), 5, Duration::from_secs(5));

    let (delivery, _) = deliver(&sender, &put(&server)).await;

    let Outcome::Rejected(detail) = delivery.outcome else {
        panic!("expected a rejection, got {:?}", delivery.outcome);
    };
    assert_eq!(detail.fault.status(), Some(StatusCode::SEE_OTHER));
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn redirects_307_and_308_keep_the_body() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path("/items/1"))
        .respond_with(ResponseTemplate::new(307).insert_header("Location", "/moved/1"))
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/moved/1"))
        .respond_with(ResponseTemplate::new(308).insert_header("Location", "../final/1"))
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/final/1"))
        .respond_with(ResponseTemplate::new(201))
        .mount(&server)
        .await;
    let sender = sender(retry(0), 5, Duration::from_secs(5));

    let (delivery, _) = deliver(&sender, &put(&server)).await;

    assert!(
        matches!(delivery.outcome, Outcome::Delivered { status } if status == StatusCode::CREATED),
        "{:?}",
        delivery.outcome
    );
    let received = server.received_requests().await.unwrap();
    let paths: Vec<_> = received.iter().map(|r| r.url.path().to_owned()).collect();
    assert_eq!(paths, ["/items/1", "/moved/1", "/final/1"]);
    assert!(received.iter().all(|r| r.body == b"{}"));
}

#[tokio::test]
async fn endless_redirects_end_as_a_rejection() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(307).insert_header("Location", "/items/1"))
        .mount(&server)
        .await;
    let sender = sender(retry(2), 5, Duration::from_secs(5));

    let (delivery, _) = deliver(&sender, &put(&server)).await;

    let Outcome::Rejected(detail) = delivery.outcome else {
        panic!("expected a rejection, got {:?}", delivery.outcome);
    };
    assert_eq!(detail.fault.status(), Some(StatusCode::TEMPORARY_REDIRECT));
    // The first request and ten redirects, with no retry of a 3xx.
    assert_eq!(server.received_requests().await.unwrap().len(), 11);
}

#[tokio::test]
async fn cross_origin_redirect_drops_credentials() {
    let first = MockServer::start().await;
    let second = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(
            ResponseTemplate::new(307).insert_header("Location", format!("{}/x", second.uri())),
        )
        .mount(&first)
        .await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&second)
        .await;
    let endpoint = Url::parse(&first.uri()).unwrap();
    let headers = [
        ("Authorization".to_owned(), "Bearer secret".to_owned()),
        ("X-Trace".to_owned(), "kept".to_owned()),
    ];
    let request = prepare(&endpoint, "PUT", "/items/1", headers, &[], b"{}".to_vec()).unwrap();
    let sender = sender(retry(0), 5, Duration::from_secs(5));

    let (delivery, _) = deliver(&sender, &request).await;

    assert!(matches!(delivery.outcome, Outcome::Delivered { .. }));
    let before = &first.received_requests().await.unwrap()[0];
    assert_eq!(before.headers["authorization"], "Bearer secret");
    let after = &second.received_requests().await.unwrap()[0];
    assert!(!after.headers.contains_key("authorization"));
    assert_eq!(after.headers["x-trace"], "kept");
}

#[tokio::test]
async fn credentials_in_the_endpoint_travel_as_basic_auth() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let mut endpoint = Url::parse(&server.uri()).unwrap();
    endpoint.set_username("loader").unwrap();
    endpoint.set_password(Some("s3cret")).unwrap();
    let request = prepare(&endpoint, "PUT", "/items/1", [], &[], b"{}".to_vec()).unwrap();
    let sender = sender(retry(0), 5, Duration::from_secs(5));

    let (delivery, _) = deliver(&sender, &request).await;

    assert!(matches!(delivery.outcome, Outcome::Delivered { .. }));
    let received = &server.received_requests().await.unwrap()[0];
    // "loader:s3cret" in base64.
    assert_eq!(
        received.headers["authorization"],
        "Basic bG9hZGVyOnMzY3JldA=="
    );
    assert!(received.headers["user-agent"]
        .to_str()
        .unwrap()
        .starts_with("sluice/"));
}

#[tokio::test]
async fn same_origin_redirect_keeps_endpoint_credentials() {
    let server = MockServer::start().await;
    // An absolute Location on the same origin, without user info.
    Mock::given(method("PUT"))
        .and(path("/items/1"))
        .respond_with(
            ResponseTemplate::new(307)
                .insert_header("Location", format!("{}/moved/1", server.uri())),
        )
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/moved/1"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let mut endpoint = Url::parse(&server.uri()).unwrap();
    endpoint.set_username("loader").unwrap();
    endpoint.set_password(Some("s3cret")).unwrap();
    let request = prepare(&endpoint, "PUT", "/items/1", [], &[], b"{}".to_vec()).unwrap();
    let sender = sender(retry(0), 5, Duration::from_secs(5));

    let (delivery, _) = deliver(&sender, &request).await;

    assert!(matches!(delivery.outcome, Outcome::Delivered { .. }));
    let received = server.received_requests().await.unwrap();
    assert_eq!(received.len(), 2);
    for hop in &received {
        // "loader:s3cret" in base64.
        assert_eq!(hop.headers["authorization"], "Basic bG9hZGVyOnMzY3JldA==");
    }
}

#[tokio::test]
async fn stalled_body_times_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                let _ = socket.read(&mut buffer).await;
                // Ten bytes promised, three sent, then nothing.
                let head = "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc";
                let _ = socket.write_all(head.as_bytes()).await;
                tokio::time::sleep(Duration::from_secs(10)).await;
            });
        }
    });
    let endpoint = Url::parse(&format!("http://{addr}")).unwrap();
    let request = prepare(&endpoint, "PUT", "/x", [], &[], b"{}".to_vec()).unwrap();
    let sender = sender(retry(0), 5, Duration::from_millis(300));

    let (delivery, _) = deliver(&sender, &request).await;

    let Outcome::Exhausted(detail) = delivery.outcome else {
        panic!(
            "expected the retries to run out, got {:?}",
            delivery.outcome
        );
    };
    assert_eq!(detail.fault, Fault::Timeout);
}

#[test]
fn prepare_joins_endpoint_and_path() {
    let endpoint = Url::parse("http://127.0.0.1:9/api/").unwrap();
    let request = prepare(&endpoint, "PUT", "/a%2Fb/c?x=1", [], &[], Vec::new()).unwrap();
    assert_eq!(request.url.as_str(), "http://127.0.0.1:9/api/a%2Fb/c?x=1");
}

/// The URL the full parser makes of the joined text, which the shortcut in
/// `join` must match byte for byte.
fn parsed(endpoint: &Url, path: &str) -> Option<String> {
    let base = endpoint.as_str().trim_end_matches('/');
    Url::parse(&format!("{base}{path}"))
        .ok()
        .map(|url| url.to_string())
}

#[test]
fn prepare_matches_full_url_parser() {
    let endpoints = [
        "http://127.0.0.1:9",
        "http://127.0.0.1:9/",
        "http://127.0.0.1:9/api",
        "http://127.0.0.1:9/api/v1/",
        "https://user:secret@example.test/base%20dir/",
        "http://127.0.0.1:9/api?token=1",
    ];
    let mut paths: Vec<String> = [
        "/",
        "/x",
        "//x",
        "/a/b/c?x=1&y=2",
        "/a%2Fb/%zz?q=%",
        "/a b/c",
        "/caf\u{e9}/\u{1f600}?k=\u{e9}",
        "/a\\b",
        "/a#frag",
        "/a?b?c",
        "/a?",
        "/{x}/<y>/\"z\"/`w`/'v'|^",
        "/a\tb\nc",
        "/%2e%2e%2fx",
        "/a;b=c/d:e@f!$&()*+,",
    ]
    .iter()
    .map(|path| (*path).to_owned())
    .collect();
    // Random printable ASCII, with a fixed seed so a failure repeats.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..2000 {
        let mut path = String::from("/");
        for _ in 0..(state % 24) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            path.push(char::from(b' ' + (state % 95) as u8));
        }
        paths.push(path);
    }
    for endpoint in endpoints {
        let endpoint = Url::parse(endpoint).unwrap();
        for path in &paths {
            let ours = prepare(&endpoint, "PUT", path, [], &[], Vec::new());
            let Ok(ours) = ours else {
                continue; // dot segments, which the full parser would resolve
            };
            assert_eq!(
                Some(ours.url.to_string()),
                parsed(&endpoint, path),
                "endpoint {endpoint}, path {path:?}"
            );
        }
    }
}

#[test]
fn prepare_rejects_bad_parts() {
    let endpoint = Url::parse("http://127.0.0.1:9").unwrap();
    let headers = || [("bad header".to_owned(), "x".to_owned())];
    assert!(prepare(&endpoint, "P UT", "/x", [], &[], Vec::new()).is_err());
    assert!(prepare(&endpoint, "PUT", "x", [], &[], Vec::new()).is_err());
    assert!(prepare(&endpoint, "PUT", "/x", headers(), &[], Vec::new()).is_err());
}

#[test]
fn prepare_rejects_dot_segments() {
    let endpoint = Url::parse("http://127.0.0.1:9/api").unwrap();
    for path in [
        "/r/..",
        "/r/../x",
        "/r/.",
        "/r/%2e%2E/x",
        "/r/.%2e",
        "/r/%2E?x=1",
        "/r/%2e",
    ] {
        assert!(
            prepare(&endpoint, "PUT", path, [], &[], Vec::new()).is_err(),
            "{path}"
        );
    }
    for path in [
        "/r/a..b",
        "/r/.x",
        "/r/x?up=..",
        "/r/...",
        "/r/%2e%2e%2e",
        "/r/%2",
        "/r/%2f",
        "/r//x",
    ] {
        assert!(
            prepare(&endpoint, "PUT", path, [], &[], Vec::new()).is_ok(),
            "{path}"
        );
    }
}

#[test]
fn configured_headers_override_plugin_headers() {
    let endpoint = Url::parse("http://127.0.0.1:9").unwrap();
    let plugin = [("content-type".to_owned(), "text/plain".to_owned())];
    let extra = [(
        HeaderName::from_static("content-type"),
        HeaderValue::from_static("application/json"),
    )];
    let request = prepare(&endpoint, "PUT", "/x", plugin, &extra, Vec::new()).unwrap();
    assert_eq!(request.headers["content-type"], "application/json");
}

/// Records what the sender reports through [`InFlight`].
#[derive(Default)]
struct Recorder {
    started: AtomicUsize,
    finished: std::sync::Mutex<Vec<Duration>>,
    retry_causes: std::sync::Mutex<Vec<Fault>>,
}

impl InFlight for Recorder {
    fn started(&self) {
        self.started.fetch_add(1, Ordering::SeqCst);
    }

    fn finished(&self, elapsed: Duration) {
        self.finished.lock().unwrap().push(elapsed);
    }

    fn retrying(&self, cause: &Fault) {
        self.retry_causes.lock().unwrap().push(cause.clone());
    }
}

fn recording_sender(retry: RetryPolicy) -> (Sender, Arc<Recorder>) {
    let breaker = Arc::new(Breaker::new(BreakerSettings {
        failure_threshold: NonZeroU32::new(5).unwrap(),
        open_duration: Duration::from_millis(200),
    }));
    let recorder = Arc::new(Recorder::default());
    let http = http(Duration::from_secs(5));
    let options = SenderOptions::default();
    let sender = Sender::new(&http, retry, breaker, recorder.clone(), options).unwrap();
    (sender, recorder)
}

#[tokio::test]
async fn hooks_see_each_attempt_and_each_retry_cause() {
    let server = server_with(&[503, 429, 200], None).await;
    let (sender, recorder) = recording_sender(retry(5));

    let (delivery, _) = deliver(&sender, &put(&server)).await;

    assert_eq!(delivery.attempts, 3);
    assert_eq!(recorder.started.load(Ordering::SeqCst), 3);
    assert_eq!(recorder.finished.lock().unwrap().len(), 3);
    let causes = recorder.retry_causes.lock().unwrap().clone();
    let expected = [
        Fault::Status(StatusCode::SERVICE_UNAVAILABLE),
        Fault::Status(StatusCode::TOO_MANY_REQUESTS),
    ];
    assert_eq!(causes, expected);
}

#[tokio::test]
async fn hooks_count_no_retry_after_the_last_attempt() {
    let server = server_with(&[502], None).await;
    let (sender, recorder) = recording_sender(retry(2));

    let (delivery, _) = deliver(&sender, &put(&server)).await;

    assert!(matches!(delivery.outcome, Outcome::Exhausted(_)));
    assert_eq!(delivery.attempts, 3);
    assert_eq!(recorder.finished.lock().unwrap().len(), 3);
    let causes = recorder.retry_causes.lock().unwrap().len();
    assert_eq!(causes as u32, delivery.attempts - 1);
}
