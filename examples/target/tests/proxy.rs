//! Fault-injecting proxy: forwarding, each fault alone, the outage window and
//! a mixed load retried with idempotency keys.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::echo::{EchoServer, Echoed};
use common::{is_connection_reset, json_body, wait_until, TestTarget};
use reqwest::StatusCode;
use serde_json::json;
use sluice_target::{
    read_posts, read_resources, start_proxy, Fault, FaultPlan, Outage, ProxyConfig, RunningProxy,
    Stats, PROXY_STATS_PATH,
};

/// Proxy with the given faults in front of a target without faults.
struct TestProxy {
    proxy: RunningProxy,
    upstream: TestTarget,
    client: reqwest::Client,
}

impl TestProxy {
    async fn start(faults: FaultPlan) -> Self {
        let upstream = TestTarget::start(FaultPlan::default()).await;
        let mut config = ProxyConfig::new(upstream.target.url());
        config.faults = faults;
        let proxy = start_proxy(config).await.expect("start proxy");
        Self {
            proxy,
            upstream,
            client: common::client(None),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.proxy.url())
    }

    fn stats(&self) -> Stats {
        self.proxy.stats()
    }

    async fn put(&self, path: &str, body: &str) -> reqwest::Result<reqwest::Response> {
        self.client
            .put(self.url(path))
            .body(body.to_owned())
            .send()
            .await
    }

    async fn post(&self, path: &str, body: &str) -> reqwest::Result<reqwest::Response> {
        self.client
            .post(self.url(path))
            .body(body.to_owned())
            .send()
            .await
    }
}

async fn start_echo_proxy(upstream: &EchoServer, base_path: &str) -> RunningProxy {
    let config = ProxyConfig::new(format!("{}{base_path}", upstream.url()));
    start_proxy(config).await.expect("start proxy")
}

async fn echoed(response: reqwest::Response) -> Echoed {
    serde_json::from_value(json_body(response).await).expect("echo response")
}

#[tokio::test]
async fn forwards_requests_intact() {
    let upstream = EchoServer::start().await;
    let proxy = start_echo_proxy(&upstream, "").await;
    let client = common::client(None);

    let body = r#"{"name": "São Paulo", "n": [1, 2]}"#;
    let cases = [
        (
            reqwest::Method::PUT,
            "/cities/S%C3%A3o%20Paulo?v=2&x=a%2Fb",
            body,
        ),
        (reqwest::Method::POST, "/events", body),
        (reqwest::Method::GET, "/events/7?fields=id", ""),
        (reqwest::Method::DELETE, "/events/7", ""),
    ];
    for (method, path_and_query, body) in cases {
        let response = client
            .request(method.clone(), format!("{}{path_and_query}", proxy.url()))
            .header("Authorization", "Bearer secret-token")
            .header("Idempotency-Key", "key-1")
            .header("Content-Type", "application/json")
            .header("X-Repeated", "first")
            .header("X-Repeated", "second")
            .header("Connection", "x-per-hop")
            .header("X-Per-Hop", "dropped")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{method}");
        assert_eq!(response.headers()["x-upstream"], "echo", "{method}");
        for hop in ["x-upstream-hop", "keep-alive"] {
            assert!(
                response.headers().get(hop).is_none(),
                "{method}: {hop} relayed"
            );
        }

        let seen = echoed(response).await;
        assert_eq!(seen.method, method.as_str());
        assert_eq!(seen.uri, path_and_query, "{method}");
        assert_eq!(seen.body, body, "{method}");
        assert_eq!(seen.header("authorization"), ["Bearer secret-token"]);
        assert_eq!(seen.header("idempotency-key"), ["key-1"]);
        assert_eq!(seen.header("content-type"), ["application/json"]);
        assert_eq!(seen.header("x-repeated"), ["first", "second"]);
        assert_eq!(seen.header("host"), [upstream.addr.to_string()]);
        assert!(
            seen.header("x-per-hop").is_empty(),
            "{method}: hop header forwarded"
        );
        if !body.is_empty() {
            assert_eq!(seen.header("content-length"), [body.len().to_string()]);
        }
    }

    let stats = proxy.shutdown().await;
    assert_eq!(stats.requests, 4);
    assert_eq!(stats.forwarded, 4);
    assert_eq!(stats.faults.total(), 0);
}

#[tokio::test]
async fn upstream_base_path_prefixes_requests() {
    let upstream = EchoServer::start().await;
    let proxy = start_echo_proxy(&upstream, "/api/v1/").await;
    let client = common::client(None);

    let response = client
        .get(format!("{}/items?page=2", proxy.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(echoed(response).await.uri, "/api/v1/items?page=2");
}

#[tokio::test]
async fn upstream_statuses_pass_through() {
    let upstream = EchoServer::start().await;
    let proxy = start_echo_proxy(&upstream, "").await;
    let client = common::client(None);

    for status in [201, 400, 404, 409, 422, 429, 500, 502, 503] {
        let response = client
            .post(format!("{}/events", proxy.url()))
            .header("x-echo-status", status.to_string())
            .header("x-echo-retry-after", "9")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status);
        assert_eq!(response.headers()["retry-after"], "9", "status {status}");
        assert_eq!(echoed(response).await.body, "{}", "status {status}");
    }
    assert_eq!(proxy.stats().faults.total(), 0);
}

#[tokio::test]
async fn target_behind_proxy_serves_as_usual() {
    let proxied = TestProxy::start(FaultPlan::default()).await;

    let created = proxied.put("/items/1", r#"{"a": 1}"#).await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let updated = proxied.put("/items/1", r#"{"a": 2}"#).await.unwrap();
    assert_eq!(updated.status(), StatusCode::OK);

    let fetched = proxied
        .client
        .get(proxied.url("/items/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(fetched.status(), StatusCode::OK);
    assert_eq!(json_body(fetched).await, json!({"a": 2}));

    let missing = proxied
        .client
        .get(proxied.url("/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    let patch = proxied
        .client
        .patch(proxied.url("/items/1"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(patch.headers()["allow"], "GET, PUT, POST, DELETE");

    let posted = proxied.post("/events", "{}").await.unwrap();
    assert_eq!(posted.status(), StatusCode::CREATED);

    let upstream = proxied.upstream.stats();
    assert_eq!(upstream.requests, 6);
    assert_eq!(upstream.writes, 3);
    let stats = proxied.stats();
    assert_eq!(stats.requests, 6);
    assert_eq!(stats.forwarded, 6);
    assert_eq!(stats.writes, 0);
}

#[tokio::test]
async fn status_faults_are_not_forwarded() {
    let cases = [
        (Fault::InternalError, StatusCode::INTERNAL_SERVER_ERROR),
        (Fault::Unavailable, StatusCode::SERVICE_UNAVAILABLE),
        (Fault::TooManyRequests, StatusCode::TOO_MANY_REQUESTS),
    ];
    for (fault, status) in cases {
        let mut plan = FaultPlan {
            retry_after_secs: 4,
            ..FaultPlan::default()
        };
        match fault {
            Fault::InternalError => plan.rate_500 = 1.0,
            Fault::Unavailable => plan.rate_503 = 1.0,
            _ => plan.rate_429 = 1.0,
        }
        let proxied = TestProxy::start(plan).await;

        let put = proxied.put("/items/1", "{}").await.unwrap();
        assert_eq!(put.status(), status, "{fault:?}");
        let retry_after = put
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap());
        if fault == Fault::TooManyRequests {
            assert_eq!(retry_after, Some("4"));
        } else {
            assert_eq!(retry_after, None, "{fault:?} sent Retry-After");
        }
        let post = proxied.post("/events", "{}").await.unwrap();
        assert_eq!(post.status(), status, "{fault:?}");

        assert_eq!(
            proxied.upstream.stats().requests,
            0,
            "{fault:?} was forwarded"
        );
        let stats = proxied.stats();
        assert_eq!(stats.requests, 2);
        assert_eq!(stats.forwarded, 0);
        assert_eq!(stats.faults.get(fault), 2, "{fault:?}");
        assert_eq!(stats.faults.total(), 2, "{fault:?}");
    }
}

#[tokio::test]
async fn reset_is_not_forwarded() {
    let plan = FaultPlan {
        rate_reset: 1.0,
        ..FaultPlan::default()
    };
    let proxied = TestProxy::start(plan).await;

    for attempt in 0..2 {
        let err = proxied.put("/items/1", "{}").await.unwrap_err();
        assert!(is_connection_reset(&err), "attempt {attempt}: {err:?}");
    }

    assert_eq!(proxied.upstream.stats().requests, 0);
    assert!(read_resources(&proxied.upstream.db()).unwrap().is_empty());
    let stats = proxied.stats();
    assert_eq!(stats.faults.reset, 2);
    assert_eq!(stats.forwarded, 0);
}

#[tokio::test]
async fn stall_forwards_then_holds_response() {
    let stall_for = Duration::from_millis(600);
    let plan = FaultPlan {
        rate_stall: 1.0,
        stall_for,
        ..FaultPlan::default()
    };
    let proxied = TestProxy::start(plan).await;
    let db = proxied.upstream.db();

    // An impatient client times out, but the write reaches the upstream.
    let impatient = common::client(Some(Duration::from_millis(150)));
    let err = impatient
        .put(proxied.url("/items/1"))
        .body(r#"{"a": 1}"#)
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "expected a timeout, got {err:?}");
    wait_until("the stalled PUT is committed", || {
        read_resources(&db).unwrap().contains_key("/items/1")
    })
    .await;

    // A patient client gets the upstream's own response after the stall.
    let started = Instant::now();
    let response = proxied.put("/items/1", r#"{"a": 2}"#).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "not the upstream's response"
    );
    assert!(elapsed >= stall_for, "responded after {elapsed:?}");

    assert_eq!(read_resources(&db).unwrap()["/items/1"], json!({"a": 2}));
    assert_eq!(proxied.upstream.stats().writes, 2);
    let stats = proxied.stats();
    assert_eq!(stats.faults.stall, 2);
    assert_eq!(stats.forwarded, 2);
}

#[tokio::test]
async fn shutdown_cuts_proxy_stall_short() {
    let plan = FaultPlan {
        rate_stall: 1.0,
        stall_for: Duration::from_secs(60),
        ..FaultPlan::default()
    };
    let TestProxy {
        proxy,
        upstream,
        client,
    } = TestProxy::start(plan).await;

    let request = client
        .put(format!("{}/items/1", proxy.url()))
        .body("{}")
        .send();
    let in_flight = tokio::spawn(request);
    wait_until("the PUT is forwarded", || proxy.stats().forwarded == 1).await;

    let started = Instant::now();
    proxy.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "shutdown took {:?}",
        started.elapsed()
    );
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(read_resources(&upstream.db()).unwrap().len(), 1);
}

#[tokio::test]
async fn lost_response_forwards_then_resets() {
    let plan = FaultPlan {
        rate_lost_response: 1.0,
        ..FaultPlan::default()
    };
    let proxied = TestProxy::start(plan).await;

    let put = proxied.put("/items/1", r#"{"a": 1}"#).await.unwrap_err();
    assert!(is_connection_reset(&put), "expected a reset, got {put:?}");
    let post = proxied.post("/events", r#"{"n": 1}"#).await.unwrap_err();
    assert!(is_connection_reset(&post), "expected a reset, got {post:?}");

    // The proxy waited for the upstream's responses, so the writes are
    // committed by the time the client sees the resets.
    let db = proxied.upstream.db();
    assert_eq!(read_resources(&db).unwrap()["/items/1"], json!({"a": 1}));
    assert_eq!(read_posts(&db).unwrap().len(), 1);

    let stats = proxied.stats();
    assert_eq!(stats.requests, 2);
    assert_eq!(stats.forwarded, 2);
    assert_eq!(stats.faults.lost_response, 2);
    assert_eq!(stats.faults.total(), 2);
}

#[tokio::test]
async fn proxy_outage_window_is_not_forwarded() {
    let outage = Outage {
        after: Duration::from_millis(300),
        duration: Duration::from_millis(600),
    };
    let plan = FaultPlan {
        outage: Some(outage),
        ..FaultPlan::default()
    };
    let proxied = TestProxy::start(plan).await;

    let started = Instant::now();
    let before = proxied.put("/before", "{}").await.unwrap();
    assert_eq!(before.status(), StatusCode::CREATED);

    tokio::time::sleep_until((started + Duration::from_millis(500)).into()).await;
    let during = proxied.put("/during", "{}").await.unwrap();
    assert_eq!(during.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(during.headers().get("retry-after").is_none());

    tokio::time::sleep_until((started + Duration::from_millis(1100)).into()).await;
    let after = proxied.put("/after", "{}").await.unwrap();
    assert_eq!(after.status(), StatusCode::CREATED);

    let resources = read_resources(&proxied.upstream.db()).unwrap();
    assert_eq!(resources.keys().collect::<Vec<_>>(), ["/after", "/before"]);
    let stats = proxied.stats();
    assert_eq!(stats.faults.outage, 1);
    assert_eq!(stats.forwarded, 2);
}

#[tokio::test]
async fn proxy_stats_endpoint_is_never_faulted() {
    let plan = FaultPlan {
        rate_500: 0.5,
        rate_reset: 0.5,
        ..FaultPlan::default()
    };
    let proxied = TestProxy::start(plan).await;

    for _ in 0..10 {
        let response = proxied
            .client
            .get(proxied.url(PROXY_STATS_PATH))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let served: Stats = serde_json::from_value(json_body(response).await).unwrap();
        assert_eq!(served.requests, 0);
    }
    assert_eq!(proxied.stats().faults.total(), 0);
    assert_eq!(proxied.upstream.stats().requests, 0);
}

#[tokio::test]
async fn unreachable_upstream_is_502() {
    // Bind a port and release it, so that nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);

    let proxy = start_proxy(ProxyConfig::new(format!("http://{addr}")))
        .await
        .unwrap();
    let client = common::client(None);
    let response = client
        .put(format!("{}/items/1", proxy.url()))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let error = json_body(response).await["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(error.contains("failed to forward PUT /items/1"), "{error}");
    assert!(error.contains(&addr.to_string()), "{error}");
    assert_eq!(proxy.stats().forwarded, 0);
}

#[tokio::test]
async fn start_proxy_rejects_invalid_config() {
    let err = start_proxy(ProxyConfig::new("https://127.0.0.1:8090"))
        .await
        .err()
        .expect("https upstream is rejected");
    assert!(err.to_string().contains("http://"), "{err}");

    let mut config = ProxyConfig::new("http://127.0.0.1:8090");
    config.faults = FaultPlan {
        rate_reset: 0.6,
        rate_lost_response: 0.6,
        ..FaultPlan::default()
    };
    let err = start_proxy(config).await.err().expect("plan is invalid");
    assert!(err.to_string().contains("add up to"), "{err}");
}

/// Outcome counts of the mixed-fault load, as the client saw them.
#[derive(Default)]
struct Seen {
    attempts: AtomicU64,
    replayed: AtomicU64,
    conflicts: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_retries_through_mixed_faults_insert_once() {
    const RECORDS: usize = 600;
    const IN_FLIGHT: usize = 8;
    let plan = FaultPlan {
        seed: 9,
        rate_500: 0.05,
        rate_503: 0.05,
        rate_429: 0.05,
        retry_after_secs: 0,
        rate_reset: 0.05,
        rate_stall: 0.02,
        stall_for: Duration::from_millis(1500),
        rate_lost_response: 0.1,
        outage: None,
        max_in_flight: None,
    };
    let proxied = Arc::new(TestProxy::start(plan).await);
    let seen = Arc::new(Seen::default());
    // Shorter than the stall, so that stalled requests time out.
    let client = common::client(Some(Duration::from_millis(750)));

    let mut workers = Vec::new();
    for worker in 0..IN_FLIGHT {
        let (proxied, seen, client) = (proxied.clone(), seen.clone(), client.clone());
        workers.push(tokio::spawn(async move {
            for i in (worker..RECORDS).step_by(IN_FLIGHT) {
                let key = format!("record-{i}");
                let body = format!(r#"{{"n": {i}}}"#);
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    assert!(attempts <= 50, "record {i} failed 50 times");
                    seen.attempts.fetch_add(1, Ordering::Relaxed);
                    let result = client
                        .post(proxied.url("/events"))
                        .header("Idempotency-Key", &key)
                        .body(body.clone())
                        .send()
                        .await;
                    match result {
                        Ok(response) if response.status() == StatusCode::CREATED => {
                            if response.headers().contains_key("idempotent-replayed") {
                                seen.replayed.fetch_add(1, Ordering::Relaxed);
                            }
                            break;
                        }
                        Ok(response) if response.status() == StatusCode::CONFLICT => {
                            // The stalled attempt is still being served.
                            seen.conflicts.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Ok(response) => {
                            let status = response.status();
                            assert!(
                                status.is_server_error() || status == 429,
                                "record {i}: {status}"
                            );
                        }
                        Err(err) => assert!(
                            is_connection_reset(&err) || err.is_timeout(),
                            "record {i}: {err:?}"
                        ),
                    }
                }
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }

    let posts = read_posts(&proxied.upstream.db()).unwrap();
    let mut rows_per_key: BTreeMap<String, usize> = BTreeMap::new();
    for row in &posts {
        let key = row.idempotency_key.clone().expect("row has a key");
        let n: usize = key.strip_prefix("record-").unwrap().parse().unwrap();
        assert_eq!(row.body, json!({ "n": n }), "row of {key}");
        *rows_per_key.entry(key).or_default() += 1;
    }
    assert_eq!(rows_per_key.len(), RECORDS, "records are missing");
    let duplicated: Vec<_> = rows_per_key.iter().filter(|(_, &rows)| rows > 1).collect();
    assert!(duplicated.is_empty(), "duplicated rows: {duplicated:?}");
    assert_eq!(posts.len(), RECORDS);

    let stats = proxied.stats();
    let attempts = seen.attempts.load(Ordering::Relaxed);
    println!(
        "{RECORDS} keyed POSTs in {attempts} attempts; proxy faults: {}; replayed {}, \
         conflicts {}",
        stats.faults,
        seen.replayed.load(Ordering::Relaxed),
        seen.conflicts.load(Ordering::Relaxed)
    );
    assert_eq!(stats.requests, attempts);
    for kind in [
        Fault::LostResponse,
        Fault::Stall,
        Fault::Reset,
        Fault::InternalError,
    ] {
        assert!(stats.faults.get(kind) > 0, "the load got no {kind:?}");
    }
    // A lost response commits a row, so the retry that succeeds for that
    // record is a replay.
    assert!(
        seen.replayed.load(Ordering::Relaxed) > 0,
        "no response was replayed"
    );
    assert_eq!(proxied.upstream.stats().writes, RECORDS as u64);
}
