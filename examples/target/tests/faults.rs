//! Injected faults: each kind alone, the outage window and the seeded
//! schedule.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{is_connection_reset, TestTarget};
use reqwest::StatusCode;
use sluice_target::{read_posts, read_resources, read_write_counts, Fault, FaultPlan, Outage};

fn assert_nothing_stored(target: &TestTarget) {
    assert!(
        read_resources(&target.db()).unwrap().is_empty(),
        "resources were stored"
    );
    assert!(
        read_posts(&target.db()).unwrap().is_empty(),
        "rows were posted"
    );
    assert_eq!(target.stats().writes, 0);
}

#[tokio::test]
async fn status_faults_respond_without_writing() {
    let cases = [
        (Fault::InternalError, StatusCode::INTERNAL_SERVER_ERROR),
        (Fault::Unavailable, StatusCode::SERVICE_UNAVAILABLE),
        (Fault::TooManyRequests, StatusCode::TOO_MANY_REQUESTS),
    ];
    for (fault, status) in cases {
        let mut plan = FaultPlan {
            seed: 3,
            retry_after_secs: 7,
            ..FaultPlan::default()
        };
        match fault {
            Fault::InternalError => plan.rate_500 = 1.0,
            Fault::Unavailable => plan.rate_503 = 1.0,
            _ => plan.rate_429 = 1.0,
        }
        let target = TestTarget::start(plan).await;

        let put = target.put("/items/1", "{}").await.unwrap();
        assert_eq!(put.status(), status, "{fault:?} on PUT");
        let retry_after = put
            .headers()
            .get("retry-after")
            .map(|value| value.to_str().unwrap());
        if fault == Fault::TooManyRequests {
            assert_eq!(retry_after, Some("7"));
        } else {
            assert_eq!(retry_after, None, "{fault:?} sent Retry-After");
        }

        let post = target.post("/events", "{}").await.unwrap();
        assert_eq!(post.status(), status, "{fault:?} on POST");
        let get = target.get("/items/1").await.unwrap();
        assert_eq!(get.status(), status, "{fault:?} on GET");

        assert_nothing_stored(&target);
        let stats = target.stats();
        assert_eq!(stats.requests, 3);
        assert_eq!(stats.faults.get(fault), 3, "{fault:?}");
        assert_eq!(stats.faults.total(), 3, "{fault:?}");
    }
}

#[tokio::test]
async fn faulted_delete_keeps_resource() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("target.db");
    let client = common::client(None);

    let clean = sluice_target::start(sluice_target::TargetConfig::new(&db))
        .await
        .unwrap();
    client
        .put(format!("{}/items/1", clean.url()))
        .body("{}")
        .send()
        .await
        .unwrap();
    clean.shutdown().await;

    let mut config = sluice_target::TargetConfig::new(&db);
    config.faults = FaultPlan {
        rate_503: 1.0,
        ..FaultPlan::default()
    };
    let faulty = sluice_target::start(config).await.unwrap();
    let response = client
        .delete(format!("{}/items/1", faulty.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(read_resources(&db).unwrap().len(), 1);
    faulty.shutdown().await;
}

#[tokio::test]
async fn stall_responds_503_after_delay() {
    let stall_for = Duration::from_millis(300);
    let plan = FaultPlan {
        rate_stall: 1.0,
        stall_for,
        ..FaultPlan::default()
    };
    let target = TestTarget::start(plan).await;

    let started = Instant::now();
    let response = target.put("/items/1", "{}").await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().get("retry-after").is_none());
    assert!(elapsed >= stall_for, "responded after {elapsed:?}");

    assert_nothing_stored(&target);
    assert_eq!(target.stats().faults.stall, 1);
}

#[tokio::test]
async fn stall_outlasts_client_timeout() {
    let stall_for = Duration::from_millis(500);
    let plan = FaultPlan {
        rate_stall: 1.0,
        stall_for,
        ..FaultPlan::default()
    };
    let target = TestTarget::start(plan).await;
    let impatient = common::client(Some(Duration::from_millis(100)));

    let err = impatient
        .put(target.url("/items/1"))
        .body("{}")
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "expected a timeout, got {err:?}");

    // Nothing is written once the stall ends either.
    tokio::time::sleep(stall_for + Duration::from_millis(200)).await;
    assert_nothing_stored(&target);
    assert_eq!(target.stats().faults.stall, 1);
}

#[tokio::test]
async fn shutdown_cuts_stall_short() {
    let plan = FaultPlan {
        rate_stall: 1.0,
        stall_for: Duration::from_secs(60),
        ..FaultPlan::default()
    };
    let target = TestTarget::start(plan).await;
    let TestTarget {
        target: running,
        client,
        dir,
    } = target;
    let db = dir.path().join("target.db");

    let request = client
        .put(format!("{}/items/1", running.url()))
        .body("{}")
        .send();
    let in_flight = tokio::spawn(request);
    while running.stats().faults.stall == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let started = Instant::now();
    let stats = running.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert_eq!(stats.faults.stall, 1);

    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(read_resources(&db).unwrap().is_empty());
}

#[tokio::test]
async fn reset_surfaces_as_connection_error() {
    let plan = FaultPlan {
        rate_reset: 1.0,
        ..FaultPlan::default()
    };
    let target = TestTarget::start(plan).await;

    for attempt in 0..3 {
        let err = target.put("/items/1", r#"{"a": 1}"#).await.unwrap_err();
        assert!(!err.is_status(), "attempt {attempt}: {err:?}");
        assert!(
            is_connection_reset(&err),
            "attempt {attempt}: expected a reset, got {err:?}"
        );
    }

    assert_nothing_stored(&target);
    assert_eq!(target.stats().faults.reset, 3);
    assert_eq!(target.stats().requests, 3);
}

#[tokio::test]
async fn lost_response_commits_then_resets() {
    let plan = FaultPlan {
        rate_lost_response: 1.0,
        ..FaultPlan::default()
    };
    let target = TestTarget::start(plan).await;

    let put = target.put("/items/1", r#"{"a": 1}"#).await.unwrap_err();
    assert!(is_connection_reset(&put), "expected a reset, got {put:?}");
    let post = target.post("/events", r#"{"n": 1}"#).await.unwrap_err();
    assert!(is_connection_reset(&post), "expected a reset, got {post:?}");

    // Both writes were committed although the client saw only errors.
    let resources = read_resources(&target.db()).unwrap();
    assert_eq!(
        resources.get("/items/1"),
        Some(&serde_json::json!({"a": 1}))
    );
    let posts = read_posts(&target.db()).unwrap();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].body, serde_json::json!({"n": 1}));

    // A naive retry of the POST inserts the row a second time.
    let retry = target.post("/events", r#"{"n": 1}"#).await.unwrap_err();
    assert!(
        is_connection_reset(&retry),
        "expected a reset, got {retry:?}"
    );
    assert_eq!(read_posts(&target.db()).unwrap().len(), 2);

    let stats = target.stats();
    assert_eq!(stats.requests, 3);
    assert_eq!(stats.writes, 3);
    assert_eq!(stats.faults.lost_response, 3);
    assert_eq!(stats.faults.total(), 3);
}

#[tokio::test]
async fn stats_endpoint_is_never_faulted() {
    let plan = FaultPlan {
        rate_reset: 0.5,
        rate_500: 0.5,
        ..FaultPlan::default()
    };
    let target = TestTarget::start(plan).await;

    for _ in 0..20 {
        let response = target.get("/_stats").await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(target.stats().requests, 0);
    assert_eq!(target.stats().faults.total(), 0);
}

#[tokio::test]
async fn outage_window_responds_503() {
    let outage = Outage {
        after: Duration::from_millis(300),
        duration: Duration::from_millis(600),
    };
    let plan = FaultPlan {
        outage: Some(outage),
        ..FaultPlan::default()
    };
    let target = TestTarget::start(plan).await;

    // The first request starts the outage clock.
    let started = Instant::now();
    assert_eq!(
        target.put("/before", "{}").await.unwrap().status(),
        StatusCode::CREATED
    );

    tokio::time::sleep_until((started + Duration::from_millis(500)).into()).await;
    let during = target.put("/during", "{}").await.unwrap();
    assert_eq!(during.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(during.headers().get("retry-after").is_none());
    let stats = target.get("/_stats").await.unwrap();
    assert_eq!(stats.status(), StatusCode::OK, "the outage reached /_stats");

    tokio::time::sleep_until((started + Duration::from_millis(1100)).into()).await;
    assert_eq!(
        target.put("/after", "{}").await.unwrap().status(),
        StatusCode::CREATED
    );

    let resources = read_resources(&target.db()).unwrap();
    assert_eq!(resources.keys().collect::<Vec<_>>(), ["/after", "/before"]);
    assert_eq!(target.stats().faults.outage, 1);
    assert_eq!(target.stats().faults.total(), 1);
}

/// Outcome of one request as the client sees it.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Status(u16),
    Reset,
}

async fn run_sequence(plan: &FaultPlan, requests: usize) -> (Vec<Seen>, Vec<String>) {
    let target = TestTarget::start(plan.clone()).await;
    let mut seen = Vec::new();
    for i in 0..requests {
        match target.put(&format!("/k/{i}"), "{}").await {
            Ok(response) => seen.push(Seen::Status(response.status().as_u16())),
            Err(err) if is_connection_reset(&err) => seen.push(Seen::Reset),
            Err(err) => panic!("request {i} failed: {err:?}"),
        }
    }
    let stored = read_resources(&target.db()).unwrap().into_keys().collect();
    (seen, stored)
}

#[tokio::test]
async fn same_seed_gives_same_faults() {
    const REQUESTS: usize = 60;
    let plan = FaultPlan {
        seed: 11,
        rate_500: 0.15,
        rate_503: 0.15,
        rate_429: 0.15,
        rate_reset: 0.1,
        retry_after_secs: 0,
        ..FaultPlan::default()
    };

    let (first, first_stored) = run_sequence(&plan, REQUESTS).await;
    let (second, second_stored) = run_sequence(&plan, REQUESTS).await;
    assert_eq!(first, second);
    assert_eq!(first_stored, second_stored);

    // The schedule is the one that `fault_for` predicts.
    let predicted: Vec<Seen> = (0..REQUESTS as u64)
        .map(|arrival| match plan.fault_for(arrival) {
            None => Seen::Status(201),
            Some(Fault::InternalError) => Seen::Status(500),
            Some(Fault::Unavailable) => Seen::Status(503),
            Some(Fault::TooManyRequests) => Seen::Status(429),
            Some(Fault::Reset) => Seen::Reset,
            Some(other) => panic!("plan has no {other:?} faults"),
        })
        .collect();
    assert_eq!(first, predicted);
    for kind in [
        Seen::Status(201),
        Seen::Status(500),
        Seen::Status(503),
        Seen::Reset,
    ] {
        assert!(first.contains(&kind), "60 requests got no {kind:?}");
    }

    let mut expected_stored: Vec<String> = (0..REQUESTS)
        .filter(|&i| first[i] == Seen::Status(201))
        .map(|i| format!("/k/{i}"))
        .collect();
    expected_stored.sort();
    assert_eq!(first_stored, expected_stored);

    let other_seed = FaultPlan { seed: 12, ..plan };
    let (third, _) = run_sequence(&other_seed, REQUESTS).await;
    assert_ne!(first, third);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_requests_store_each_record_once() {
    const RECORDS: usize = 5000;
    const IN_FLIGHT: usize = 16;
    let plan = FaultPlan {
        seed: 5,
        rate_500: 0.1,
        rate_503: 0.1,
        rate_429: 0.1,
        rate_reset: 0.1,
        retry_after_secs: 0,
        ..FaultPlan::default()
    };
    let target = Arc::new(TestTarget::start(plan).await);

    let mut workers = Vec::new();
    for worker in 0..IN_FLIGHT {
        let target = target.clone();
        workers.push(tokio::spawn(async move {
            for i in (worker..RECORDS).step_by(IN_FLIGHT) {
                let body = format!(r#"{{"n": {i}}}"#);
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    assert!(attempts <= 50, "record {i} failed 50 times");
                    match target.put(&format!("/r/{i}"), &body).await {
                        Ok(response) if response.status() == StatusCode::CREATED => break,
                        Ok(response) => {
                            assert!(response.status().is_server_error() || response.status() == 429)
                        }
                        Err(err) => assert!(is_connection_reset(&err), "record {i}: {err:?}"),
                    }
                }
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }

    let resources = read_resources(&target.db()).unwrap();
    assert_eq!(resources.len(), RECORDS);
    let counts = read_write_counts(&target.db()).unwrap();
    assert!(
        counts.values().all(|&writes| writes == 1),
        "a faulted request was written"
    );

    let stats = target.stats();
    assert_eq!(stats.writes, RECORDS as u64);
    assert_eq!(stats.requests, RECORDS as u64 + stats.faults.total());
    assert!(stats.faults.reset > 0);
}

#[tokio::test]
async fn invalid_plan_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sluice_target::TargetConfig::new(dir.path().join("target.db"));
    config.faults = FaultPlan {
        rate_500: 2.0,
        ..FaultPlan::default()
    };
    let err = sluice_target::start(config.clone())
        .await
        .err()
        .expect("plan is invalid");
    assert!(err.to_string().contains("rate_500 = 2"), "{err}");

    config.faults = FaultPlan {
        rate_500: 0.6,
        rate_reset: 0.6,
        ..FaultPlan::default()
    };
    let err = sluice_target::start(config)
        .await
        .err()
        .expect("plan is invalid");
    assert!(err.to_string().contains("add up to"), "{err}");
}
