//! Resource API without faults.

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::TestTarget;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sluice_target::{
    read_posts, read_resources, read_write_counts, start, FaultPlan, Stats, TargetConfig,
    MAX_BODY_BYTES,
};

async fn json_body(response: reqwest::Response) -> Value {
    let text = response.text().await.expect("read response body");
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("body {text:?} is not JSON: {err}"))
}

#[tokio::test]
async fn put_creates_then_updates() {
    let target = TestTarget::start(FaultPlan::default()).await;

    let created = target.put("/items/1", r#"{"a": 1}"#).await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let fetched = target.get("/items/1").await.unwrap();
    assert_eq!(fetched.status(), StatusCode::OK);
    assert_eq!(json_body(fetched).await, json!({"a": 1}));

    let updated = target.put("/items/1", r#"{"a": 2}"#).await.unwrap();
    assert_eq!(updated.status(), StatusCode::OK);
    assert_eq!(
        json_body(target.get("/items/1").await.unwrap()).await,
        json!({"a": 2})
    );

    // The database is readable while the server runs.
    let resources = read_resources(&target.db()).unwrap();
    assert_eq!(resources.len(), 1);
    assert_eq!(resources["/items/1"], json!({"a": 2}));
    assert_eq!(read_write_counts(&target.db()).unwrap()["/items/1"], 2);

    let stats = target.stats();
    assert_eq!(stats.requests, 4);
    assert_eq!(stats.writes, 2);
    assert_eq!(stats.faults.total(), 0);
}

#[tokio::test]
async fn post_keeps_every_row() {
    let target = TestTarget::start(FaultPlan::default()).await;

    let mut ids = Vec::new();
    for body in [r#"{"n": 1}"#, r#"{"n": 1}"#, r#"{"n": 2}"#] {
        let response = target.post("/events", body).await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let id = json_body(response).await["id"]
            .as_i64()
            .expect("id is an integer");
        ids.push(id);
    }
    assert!(
        ids.windows(2).all(|pair| pair[0] < pair[1]),
        "ids {ids:?} are not increasing"
    );

    let posts = read_posts(&target.db()).unwrap();
    assert_eq!(posts.len(), 3);
    assert_eq!(posts.iter().map(|row| row.id).collect::<Vec<_>>(), ids);
    assert!(posts.iter().all(|row| row.collection == "/events"));
    assert_eq!(posts[1].body, json!({"n": 1}));
    assert_eq!(posts[2].body, json!({"n": 2}));

    assert!(read_resources(&target.db()).unwrap().is_empty());
    assert_eq!(target.stats().writes, 3);
}

#[tokio::test]
async fn delete_removes_resource() {
    let target = TestTarget::start(FaultPlan::default()).await;
    target.put("/items/1", "{}").await.unwrap();

    let deleted = target.delete("/items/1").await.unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        target.get("/items/1").await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        target.delete("/items/1").await.unwrap().status(),
        StatusCode::NOT_FOUND
    );

    assert!(read_resources(&target.db()).unwrap().is_empty());
    // The PUT and the first DELETE are writes; the second DELETE is not.
    assert_eq!(target.stats().writes, 2);

    // A PUT after a DELETE creates the resource again.
    assert_eq!(
        target.put("/items/1", "{}").await.unwrap().status(),
        StatusCode::CREATED
    );
    assert_eq!(read_write_counts(&target.db()).unwrap()["/items/1"], 1);
}

#[tokio::test]
async fn get_missing_is_404() {
    let target = TestTarget::start(FaultPlan::default()).await;
    let response = target.get("/nothing/here").await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let error = json_body(response).await["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(error.contains("/nothing/here"), "{error}");
}

#[tokio::test]
async fn invalid_json_is_400() {
    let target = TestTarget::start(FaultPlan::default()).await;

    for body in ["{not json", "", r#"{"a": 1} trailing"#, "[1, 2"] {
        let response = target.put("/items/1", body).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "body {body:?}");
        let error = json_body(response).await["error"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(error.contains("not valid JSON"), "body {body:?}: {error}");
    }

    let posted = target.post("/events", "nope").await.unwrap();
    assert_eq!(posted.status(), StatusCode::BAD_REQUEST);

    let latin1 = target
        .client
        .put(target.url("/items/2"))
        .body(b"\"caf\xe9\"".to_vec());
    let response = latin1.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error = json_body(response).await["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(error.contains("UTF-8"), "{error}");

    assert!(read_resources(&target.db()).unwrap().is_empty());
    assert!(read_posts(&target.db()).unwrap().is_empty());
    assert_eq!(target.stats().writes, 0);
}

#[tokio::test]
async fn scalar_json_bodies_are_stored() {
    let target = TestTarget::start(FaultPlan::default()).await;
    for (path, body) in [
        ("/n", "42"),
        ("/s", r#""text""#),
        ("/null", "null"),
        ("/l", "[1,2]"),
    ] {
        let response = target.put(path, body).await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "{path}");
    }
    let resources = read_resources(&target.db()).unwrap();
    assert_eq!(resources["/n"], json!(42));
    assert_eq!(resources["/s"], json!("text"));
    assert_eq!(resources["/null"], Value::Null);
    assert_eq!(resources["/l"], json!([1, 2]));
}

#[tokio::test]
async fn unsupported_method_is_405() {
    let target = TestTarget::start(FaultPlan::default()).await;

    let patch = target
        .client
        .patch(target.url("/items/1"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(patch.headers()["allow"], "GET, PUT, POST, DELETE");

    let stats_put = target.put("/_stats", "{}").await.unwrap();
    assert_eq!(stats_put.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(stats_put.headers()["allow"], "GET");

    assert!(read_resources(&target.db()).unwrap().is_empty());
}

#[tokio::test]
async fn paths_are_stored_percent_encoded() {
    let target = TestTarget::start(FaultPlan::default()).await;
    let paths = ["/cities/S%C3%A3o%20Paulo", "/ids/a%2Fb", "/plain/x"];
    for path in paths {
        assert_eq!(
            target.put(path, "{}").await.unwrap().status(),
            StatusCode::CREATED
        );
    }

    let resources = read_resources(&target.db()).unwrap();
    assert_eq!(
        resources.keys().collect::<Vec<_>>(),
        ["/cities/S%C3%A3o%20Paulo", "/ids/a%2Fb", "/plain/x"]
    );
    assert_eq!(
        target.get("/ids/a%2Fb").await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        target.get("/ids/a/b").await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn query_string_is_not_part_of_key() {
    let target = TestTarget::start(FaultPlan::default()).await;
    target
        .put("/items/1?version=2", r#"{"v": 2}"#)
        .await
        .unwrap();
    let resources = read_resources(&target.db()).unwrap();
    assert_eq!(resources.keys().collect::<Vec<_>>(), ["/items/1"]);
}

#[tokio::test]
async fn oversized_body_is_413() {
    let target = TestTarget::start(FaultPlan::default()).await;
    let body = format!("\"{}\"", "x".repeat(MAX_BODY_BYTES));
    let response = target.put("/big", &body).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(read_resources(&target.db()).unwrap().is_empty());

    // The connection and the server stay usable.
    assert_eq!(
        target.put("/small", "{}").await.unwrap().status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn stats_endpoint_matches_counters() {
    let target = TestTarget::start(FaultPlan::default()).await;
    target.put("/a", "{}").await.unwrap();
    target.post("/b", "{}").await.unwrap();
    target.get("/c").await.unwrap();

    let response = target.get("/_stats").await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let served: Stats = serde_json::from_value(json_body(response).await).unwrap();
    assert_eq!(served, target.stats());
    assert_eq!(served.requests, 3);
    assert_eq!(served.writes, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_all_committed() {
    const RECORDS: usize = 6000;
    const IN_FLIGHT: usize = 32;

    let target = Arc::new(TestTarget::start(FaultPlan::default()).await);
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..IN_FLIGHT {
        let target = target.clone();
        workers.push(tokio::spawn(async move {
            for i in (worker..RECORDS).step_by(IN_FLIGHT) {
                let body = format!(r#"{{"id": "{i:05}", "name": "record {i}"}}"#);
                let response = target
                    .put(&format!("/records/{i:05}"), &body)
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::CREATED, "record {i}");
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let elapsed = started.elapsed();
    println!(
        "{RECORDS} PUTs with {IN_FLIGHT} in flight in {elapsed:?}: {:.0} requests/s",
        RECORDS as f64 / elapsed.as_secs_f64()
    );

    let resources = read_resources(&target.db()).unwrap();
    assert_eq!(resources.len(), RECORDS);
    assert_eq!(
        resources["/records/00042"],
        json!({"id": "00042", "name": "record 42"})
    );
    let counts = read_write_counts(&target.db()).unwrap();
    assert!(counts.values().all(|&writes| writes == 1));
    assert_eq!(target.stats().writes, RECORDS as u64);
}

#[tokio::test]
async fn data_survives_shutdown_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("target.db");
    let client = common::client(None);

    let first = start(TargetConfig::new(&db)).await.unwrap();
    let url = format!("{}/items/1", first.url());
    client
        .put(&url)
        .body(r#"{"kept": true}"#)
        .send()
        .await
        .unwrap();
    let final_stats = first.shutdown().await;
    assert_eq!(final_stats.writes, 1);

    // Closing the database checkpoints the write-ahead log into the file.
    assert!(!dir.path().join("target.db-wal").exists());
    assert_eq!(
        read_resources(&db).unwrap()["/items/1"],
        json!({"kept": true})
    );
    // Readers leave no WAL files behind either.
    assert!(!dir.path().join("target.db-wal").exists());
    assert!(!dir.path().join("target.db-shm").exists());

    let second = start(TargetConfig::new(&db)).await.unwrap();
    let url = format!("{}/items/1", second.url());
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let updated = client.put(&url).body("{}").send().await.unwrap();
    assert_eq!(updated.status(), StatusCode::OK);
    second.shutdown().await;
}

#[tokio::test]
async fn readers_reject_missing_database() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.db");
    let err = read_resources(&missing).unwrap_err();
    assert!(format!("{err:#}").contains("missing.db"), "{err:#}");
    assert!(!missing.exists());
}
