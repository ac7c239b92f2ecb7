//! Real datasets ingested through the real binary and CSV plugin into the
//! example target API with seeded faults, then checked record for record
//! against the file with the target's independent comparison.

use std::path::Path;
use std::time::Duration;

use sluice_target::{compare_csv, start, CompareOptions, FaultPlan, Outage, TargetConfig};
use sluice_tests::{dataset, Sluice};

fn faults(seed: u64) -> FaultPlan {
    FaultPlan {
        seed,
        rate_500: 0.03,
        rate_503: 0.03,
        rate_429: 0.02,
        retry_after_secs: 1,
        rate_stall: 0.002,
        stall_for: Duration::from_secs(2),
        rate_reset: 0.02,
        ..FaultPlan::default()
    }
}

struct Case {
    file: &'static str,
    key: &'static str,
    path: &'static str,
    null: Option<&'static str>,
    rows: usize,
}

/// Ingests `case` with faults, reprocesses whatever was dead-lettered on a
/// fault-free pass, and requires an exact match with the file.
async fn ingest_and_verify(case: Case, plan: FaultPlan) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("target.db");
    let mut config = TargetConfig::new(&db);
    config.faults = plan;
    let target = start(config).await.unwrap();
    let input = dataset(case.file);

    let mut first = Sluice::new("run", dir.path())
        .arg("--endpoint")
        .arg(target.url())
        .arg("--timeout=500ms")
        .arg("--max-retries=6")
        .arg("--max-retry-after=1s")
        .arg("--concurrency=32")
        .plugin_config("key", case.key)
        .plugin_config("path", case.path);
    if let Some(null) = case.null {
        first = first.plugin_config("null", null);
    }
    let first = first.arg(input.display().to_string()).run().await;

    assert!(matches!(first.code, Some(0 | 3)), "{}", first.stderr);
    assert_eq!(first.total("records"), case.rows as u64);
    assert_eq!(first.total("rejected"), 0, "{}", first.stdout);
    assert_eq!(
        first.total("delivered") + first.total("dead_lettered"),
        case.rows as u64
    );
    let stats = target.stats();
    assert!(
        stats.requests > case.rows as u64,
        "faults should force retries: {stats:?}"
    );
    assert!(first.total("retries") > 0);

    if first.total("dead_lettered") > 0 {
        let mut again = Sluice::new("reprocess", dir.path())
            .arg("--endpoint")
            .arg(target.url())
            .arg("--timeout=3s")
            .arg("--max-retries=20")
            .arg("--max-retry-after=1s")
            .plugin_config("key", case.key)
            .plugin_config("path", case.path);
        if let Some(null) = case.null {
            again = again.plugin_config("null", null);
        }
        let again = again.arg("dead-letters").run().await;
        assert_eq!(again.code, Some(0), "{}", again.stderr);
    }

    let mut options = CompareOptions::new(case.path);
    options.null_token = case.null.map(str::to_owned);
    let comparison = compare_csv(&db, &input, &options).unwrap();
    assert!(comparison.is_exact(), "{comparison}");
    assert_eq!(comparison.matched, case.rows);
    target.shutdown().await;
    assert_no_dead_letters_left(&dir.path().join("dead-letters"));
}

fn assert_no_dead_letters_left(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let left: Vec<_> = entries.map(|e| e.unwrap().file_name()).collect();
    assert!(
        left.is_empty(),
        "left in the dead-letter directory: {left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vega_airports_arrive_exactly_despite_faults() {
    let case = Case {
        file: "airports.csv",
        key: "iata",
        path: "/airports/{iata}",
        null: None,
        rows: 3376,
    };
    ingest_and_verify(case, faults(11)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zipcodes_keep_leading_zeros_despite_faults() {
    let case = Case {
        file: "zipcodes.csv",
        key: "zip_code",
        path: "/zipcodes/{zip_code}",
        null: None,
        rows: 42049,
    };
    ingest_and_verify(case, faults(12)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planes_with_na_nulls_arrive_exactly_despite_faults() {
    let case = Case {
        file: "planes.csv",
        key: "tailnum",
        path: "/planes/{tailnum}",
        null: Some("NA"),
        rows: 3322,
    };
    ingest_and_verify(case, faults(13)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_opens_the_breaker_and_reprocessing_completes_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("target.db");
    let mut config = TargetConfig::new(&db);
    config.faults = FaultPlan {
        outage: Some(Outage {
            after: Duration::from_millis(200),
            duration: Duration::from_secs(3),
        }),
        ..faults(21)
    };
    let target = start(config).await.unwrap();
    let input = dataset("airports.csv");
    let common = |sluice: Sluice| {
        sluice
            .arg("--endpoint")
            .arg(target.url())
            .arg("--timeout=500ms")
            .arg("--max-retry-after=1s")
            .arg("--failure-threshold=5")
            .arg("--open-duration=1s")
            .plugin_config("key", "iata")
            .plugin_config("path", "/airports/{iata}")
    };

    let first = common(Sluice::new("run", dir.path()))
        .arg("--max-retries=2")
        .arg(input.display().to_string())
        .run()
        .await;

    assert_eq!(first.code, Some(3), "{}", first.stderr);
    assert!(first.summary["breaker_openings"].as_u64().unwrap() >= 1);
    assert!(
        first.stderr.contains("circuit breaker opened"),
        "{}",
        first.stderr
    );
    assert!(first.total("dead_lettered") >= 5);
    assert_eq!(
        first.total("delivered") + first.total("dead_lettered"),
        3376
    );

    let again = common(Sluice::new("reprocess", dir.path()))
        .arg("--max-retries=20")
        .arg("dead-letters")
        .run()
        .await;
    assert_eq!(again.code, Some(0), "{}", again.stderr);

    let comparison = compare_csv(&db, &input, &CompareOptions::new("/airports/{iata}")).unwrap();
    assert!(comparison.is_exact(), "{comparison}");
    target.shutdown().await;
}
