//! POST with `Idempotency-Key`: insert once, replay, conflicts and limits.

mod common;

use std::net::SocketAddr;

use common::{is_connection_reset, json_body, wait_until, TestTarget};
use reqwest::StatusCode;
use serde_json::json;
use sluice_target::{read_posts, start, FaultPlan, TargetConfig, MAX_IDEMPOTENCY_KEY_BYTES};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

fn replayed(response: &reqwest::Response) -> Option<&str> {
    response
        .headers()
        .get("idempotent-replayed")
        .map(|value| value.to_str().unwrap())
}

#[tokio::test]
async fn repeated_key_replays_first_response() {
    let target = TestTarget::start(FaultPlan::default()).await;
    let body = r#"{"n": 1}"#;

    let first = target
        .post_with_key("/events", "order-1", body)
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(replayed(&first), None);
    let first_body = json_body(first).await;
    let id = first_body["id"].as_i64().expect("id is an integer");

    for attempt in 0..2 {
        let again = target
            .post_with_key("/events", "order-1", body)
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::CREATED, "attempt {attempt}");
        assert_eq!(replayed(&again), Some("true"), "attempt {attempt}");
        assert_eq!(
            again.headers()["content-type"],
            "application/json",
            "attempt {attempt}"
        );
        assert_eq!(json_body(again).await, first_body, "attempt {attempt}");
    }

    let posts = read_posts(&target.db()).unwrap();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].id, id);
    assert_eq!(posts[0].collection, "/events");
    assert_eq!(posts[0].body, json!({"n": 1}));
    assert_eq!(posts[0].idempotency_key.as_deref(), Some("order-1"));
    assert_eq!(target.stats().writes, 1);
}

#[tokio::test]
async fn distinct_keys_insert_distinct_rows() {
    let target = TestTarget::start(FaultPlan::default()).await;
    let body = r#"{"n": 1}"#;
    for key in ["a", "b"] {
        let response = target.post_with_key("/events", key, body).await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "key {key}");
        assert_eq!(replayed(&response), None, "key {key}");
    }

    let keys: Vec<_> = read_posts(&target.db())
        .unwrap()
        .into_iter()
        .map(|row| row.idempotency_key)
        .collect();
    assert_eq!(keys, [Some("a".to_owned()), Some("b".to_owned())]);
}

#[tokio::test]
async fn reused_key_with_other_payload_is_422() {
    let target = TestTarget::start(FaultPlan::default()).await;
    let created = target
        .post_with_key("/events", "k", r#"{"n": 1}"#)
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);

    let cases = [
        ("/events", r#"{"n": 2}"#, "other body"),
        ("/events", r#"{"n":1}"#, "same JSON, other bytes"),
        ("/other", r#"{"n": 1}"#, "other path"),
    ];
    for (path, body, case) in cases {
        let response = target.post_with_key(path, "k", body).await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{case}"
        );
        assert_eq!(replayed(&response), None, "{case}");
        assert_eq!(
            response.text().await.unwrap(),
            r#"{"error":"idempotency key reused with a different payload"}"#,
            "{case}"
        );
    }

    // The first payload still replays.
    let again = target
        .post_with_key("/events", "k", r#"{"n": 1}"#)
        .await
        .unwrap();
    assert_eq!(replayed(&again), Some("true"));
    assert_eq!(read_posts(&target.db()).unwrap().len(), 1);
}

/// Sends the head of a POST with `Idempotency-Key: key` and only the first
/// `sent` bytes of `body`, so that the request stays in progress.
async fn start_slow_post(addr: SocketAddr, key: &str, body: &str, sent: usize) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /events HTTP/1.1\r\nHost: {addr}\r\nIdempotency-Key: {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body.as_bytes()[..sent]).await.unwrap();
    stream
}

/// Returns the status and body of the response on a `Connection: close`
/// stream.
async fn read_raw_response(mut stream: TcpStream) -> (u16, String) {
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn key_in_progress_is_409() {
    let target = TestTarget::start(FaultPlan::default()).await;
    let body = r#"{"n": 1}"#;

    // The server claims the key when the request head arrives and counts the
    // request after that, so the count shows that the key is claimed.
    let slow = start_slow_post(target.target.addr(), "slow", body, 3).await;
    wait_until("the slow POST arrives", || target.stats().requests == 1).await;

    for conflicting in [body, r#"{"n": 2}"#] {
        let response = target
            .post_with_key("/events", "slow", conflicting)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CONFLICT, "{conflicting}");
        assert_eq!(
            response.text().await.unwrap(),
            r#"{"error":"request with this idempotency key is in progress"}"#
        );
    }
    let other_key = target.post_with_key("/events", "fast", body).await.unwrap();
    assert_eq!(other_key.status(), StatusCode::CREATED);
    assert_eq!(read_posts(&target.db()).unwrap().len(), 1);

    let mut slow = slow;
    slow.write_all(&body.as_bytes()[3..]).await.unwrap();
    let (status, slow_body) = read_raw_response(slow).await;
    assert_eq!(status, 201, "{slow_body}");
    let slow_body: serde_json::Value = serde_json::from_str(&slow_body).unwrap();

    // The key is free again, and it replays the slow request's response.
    let replay = target.post_with_key("/events", "slow", body).await.unwrap();
    assert_eq!(replay.status(), StatusCode::CREATED);
    assert_eq!(replayed(&replay), Some("true"));
    assert_eq!(json_body(replay).await, slow_body);

    let posts = read_posts(&target.db()).unwrap();
    assert_eq!(posts.len(), 2);
    assert_eq!(posts[1].idempotency_key.as_deref(), Some("slow"));
}

#[tokio::test]
async fn key_header_name_is_case_insensitive() {
    let target = TestTarget::start(FaultPlan::default()).await;
    let addr = target.target.addr();
    let body = "{}";

    for name in ["IDEMPOTENCY-KEY", "idempotency-key", "Idempotency-Key"] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "POST /events HTTP/1.1\r\nHost: {addr}\r\n{name}: k\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let (status, _) = read_raw_response(stream).await;
        assert_eq!(status, 201, "{name}");
    }
    assert_eq!(read_posts(&target.db()).unwrap().len(), 1);
}

#[tokio::test]
async fn post_without_key_always_inserts() {
    let target = TestTarget::start(FaultPlan::default()).await;
    let keyed = target.post_with_key("/events", "k", "{}").await.unwrap();
    assert_eq!(keyed.status(), StatusCode::CREATED);

    for _ in 0..3 {
        let response = target.post("/events", "{}").await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(replayed(&response), None);
    }

    let posts = read_posts(&target.db()).unwrap();
    assert_eq!(posts.len(), 4);
    let unkeyed = posts.iter().filter(|row| row.idempotency_key.is_none());
    assert_eq!(unkeyed.count(), 3);
}

#[tokio::test]
async fn put_ignores_key() {
    let target = TestTarget::start(FaultPlan::default()).await;
    let send = |body: &'static str| {
        target
            .client
            .put(target.url("/items/1"))
            .header("Idempotency-Key", "k")
            .body(body)
            .send()
    };

    let created = send(r#"{"v": 1}"#).await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let updated = send(r#"{"v": 2}"#).await.unwrap();
    assert_eq!(updated.status(), StatusCode::OK);
    assert_eq!(replayed(&updated), None);

    let resources = sluice_target::read_resources(&target.db()).unwrap();
    assert_eq!(resources["/items/1"], json!({"v": 2}));
    // The key is still unused for POST.
    let posted = target.post_with_key("/events", "k", "{}").await.unwrap();
    assert_eq!(replayed(&posted), None);
}

#[tokio::test]
async fn invalid_keys_are_400() {
    let target = TestTarget::start(FaultPlan::default()).await;
    let longest = "k".repeat(MAX_IDEMPOTENCY_KEY_BYTES);
    let accepted = target
        .post_with_key("/events", &longest, "{}")
        .await
        .unwrap();
    assert_eq!(accepted.status(), StatusCode::CREATED);

    let too_long = format!("{longest}k");
    for (key, expected) in [(too_long.as_str(), "256 bytes long"), ("", "is empty")] {
        let response = target.post_with_key("/events", key, "{}").await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "key {key:?}");
        let error = json_body(response).await["error"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(error.contains(expected), "key {key:?}: {error}");
    }

    let twice = target
        .client
        .post(target.url("/events"))
        .header("Idempotency-Key", "a")
        .header("Idempotency-Key", "b")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(twice.status(), StatusCode::BAD_REQUEST);

    assert_eq!(read_posts(&target.db()).unwrap().len(), 1);
}

#[tokio::test]
async fn rejected_post_leaves_key_unused() {
    let target = TestTarget::start(FaultPlan::default()).await;
    let invalid = target.post_with_key("/events", "k", "{oops").await.unwrap();
    assert_eq!(invalid.status(), StatusCode::BAD_REQUEST);

    let valid = target.post_with_key("/events", "k", "{}").await.unwrap();
    assert_eq!(valid.status(), StatusCode::CREATED);
    assert_eq!(replayed(&valid), None);
    assert_eq!(read_posts(&target.db()).unwrap().len(), 1);
}

#[tokio::test]
async fn faulted_post_leaves_key_unused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("target.db");
    let client = common::client(None);

    let mut config = TargetConfig::new(&db);
    config.faults = FaultPlan {
        rate_503: 1.0,
        ..FaultPlan::default()
    };
    let faulty = start(config).await.unwrap();
    let response = client
        .post(format!("{}/events", faulty.url()))
        .header("Idempotency-Key", "k")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    faulty.shutdown().await;

    let clean = start(TargetConfig::new(&db)).await.unwrap();
    let response = client
        .post(format!("{}/events", clean.url()))
        .header("Idempotency-Key", "k")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(replayed(&response), None);
    clean.shutdown().await;
    assert_eq!(read_posts(&db).unwrap().len(), 1);
}

#[tokio::test]
async fn retry_after_lost_response_replays() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("target.db");
    let client = common::client(None);
    let post = |url: String| {
        client
            .post(format!("{url}/events"))
            .header("Idempotency-Key", "once")
            .body(r#"{"n": 1}"#)
            .send()
    };

    let mut config = TargetConfig::new(&db);
    config.faults = FaultPlan {
        rate_lost_response: 1.0,
        ..FaultPlan::default()
    };
    let lossy = start(config).await.unwrap();
    let err = post(lossy.url()).await.unwrap_err();
    assert!(is_connection_reset(&err), "expected a reset, got {err:?}");
    lossy.shutdown().await;

    let posts = read_posts(&db).unwrap();
    assert_eq!(posts.len(), 1, "the lost response's row was not committed");

    // The key survives a restart, so the retry replays the lost response.
    let clean = start(TargetConfig::new(&db)).await.unwrap();
    let retry = post(clean.url()).await.unwrap();
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(replayed(&retry), Some("true"));
    assert_eq!(json_body(retry).await, json!({"id": posts[0].id}));
    clean.shutdown().await;
    assert_eq!(read_posts(&db).unwrap().len(), 1);
}
