//! The JSON Lines plugin through the real host: real datasets into the
//! example target with faults, then `sluice verify` against the file.

use std::time::Duration;

use sluice_target::{start, FaultPlan, TargetConfig};
use sluice_tests::{dataset, jsonl_plugin, Sluice};

fn faults() -> FaultPlan {
    FaultPlan {
        seed: 41,
        rate_503: 0.05,
        rate_reset: 0.02,
        rate_lost_response: 0.02,
        ..FaultPlan::default()
    }
}

fn jsonl(subcommand: &str, dir: &std::path::Path, endpoint: &str, path: &str) -> Sluice {
    Sluice::new(subcommand, dir)
        .plugin(jsonl_plugin())
        .arg("--endpoint")
        .arg(endpoint)
        .arg("--timeout=2s")
        .arg("--max-retries=8")
        .plugin_config("path", path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn earthquakes_arrive_and_verify_despite_faults() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = TargetConfig::new(dir.path().join("t.db"));
    config.faults = faults();
    let target = start(config).await.unwrap();
    let input = dataset("earthquakes.jsonl").display().to_string();

    let run = jsonl("run", dir.path(), &target.url(), "/quakes/{id}")
        .arg(&input)
        .run()
        .await;

    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.total("delivered"), 1707);
    assert!(run.total("retries") > 0, "faults should force retries");

    let verify = jsonl("verify", dir.path(), &target.url(), "/quakes/{id}")
        .arg("--max-retry-after=1s")
        .arg(&input)
        .run()
        .await;
    assert_eq!(verify.code, Some(0), "{}", verify.stdout);
    assert!(
        verify
            .stdout
            .contains("matched 1707, missing 0, different 0"),
        "{}",
        verify.stdout
    );
    target.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn movies_with_data_errors_reject_only_the_bad_record() {
    let dir = tempfile::tempdir().unwrap();
    let target = start(TargetConfig::new(dir.path().join("t.db")))
        .await
        .unwrap();
    let input = dataset("movies.jsonl").display().to_string();

    let run = jsonl("run", dir.path(), &target.url(), "/movies/{Title}")
        .arg(&input)
        .run()
        .await;

    assert_eq!(run.code, Some(3), "{}", run.stderr);
    assert_eq!(run.total("records"), 3201);
    assert_eq!(run.total("rejected"), 1);
    assert_eq!(run.total("delivered"), 3200);
    let rejected = sluice_tests::dead_letter_files(&dir.path().join("dead-letters"), "rejected");
    assert_eq!(rejected[0].sidecar[0]["line"], 3054);
    tokio::time::sleep(Duration::from_millis(10)).await;
    target.shutdown().await;
}
