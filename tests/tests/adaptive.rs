//! Adaptive concurrency against an API that sheds load: the target returns
//! 503 for every request that arrives while four others are being served.

use std::path::Path;

use sluice_target::{compare_csv, start, CompareOptions, FaultPlan, Stats, TargetConfig};
use sluice_tests::{dataset, Finished, Sluice};

const ROWS: usize = 1500;
const SERVED_AT_ONCE: usize = 4;

/// Writes the header and the first [`ROWS`] airports to `dir`.
fn airports_slice(dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(dataset("airports.csv")).unwrap();
    let lines: Vec<&str> = text.lines().take(ROWS + 1).collect();
    let path = dir.join("airports.csv");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// Sends the slice with `--concurrency=CONCURRENCY` to a fresh target that
/// serves at most [`SERVED_AT_ONCE`] requests at once, and checks that the
/// target ends up holding exactly the slice.
async fn send(concurrency: &str) -> (Finished, Stats) {
    let dir = tempfile::tempdir().unwrap();
    let input = airports_slice(dir.path());
    let db = dir.path().join("target.db");
    let mut config = TargetConfig::new(&db);
    config.faults = FaultPlan {
        max_in_flight: Some(SERVED_AT_ONCE),
        ..FaultPlan::default()
    };
    let target = start(config).await.unwrap();
    let finished = Sluice::new("run", dir.path())
        .arg("--endpoint")
        .arg(target.url())
        .arg(format!("--concurrency={concurrency}"))
        .arg("--max-retries=40")
        .arg("--failure-threshold=1000")
        .plugin_config("key", "iata")
        .plugin_config("path", "/airports/{iata}")
        .arg(input.display().to_string())
        .run()
        .await;
    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    assert_eq!(
        finished.total("delivered"),
        ROWS as u64,
        "{}",
        finished.stdout
    );

    let comparison = compare_csv(&db, &input, &CompareOptions::new("/airports/{iata}")).unwrap();
    assert!(comparison.is_exact(), "{comparison}");
    assert_eq!(comparison.matched, ROWS);
    let stats = target.stats();
    target.shutdown().await;
    (finished, stats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_limit_backs_off_shedding_api() {
    let (fixed_run, fixed) = send("16").await;
    let (adaptive, shed) = send("adaptive").await;
    let turned_away = |stats: &Stats| stats.faults.crowded as f64 / stats.requests as f64;

    // Sixteen in flight against four served: most requests are turned
    // away, and every one of them is retried.
    assert!(
        turned_away(&fixed) > 0.4,
        "a fixed limit of 16 should be turned away often: {fixed:?}"
    );
    // The adaptive limit starts at 16 too, shrinks on the 503s, and then
    // stays near what the API serves, so a far smaller share of the
    // requests is turned away.
    assert!(
        turned_away(&shed) * 2.0 < turned_away(&fixed),
        "adaptive: {shed:?}\nfixed at 16: {fixed:?}"
    );
    // Only the adaptive run reports its limit, which ends near the four
    // that the API serves.
    assert_eq!(fixed_run.summary["adaptive_limit"], serde_json::Value::Null);
    assert!(
        !fixed_run.stdout.contains("concurrency"),
        "{}",
        fixed_run.stdout
    );
    let last = adaptive.summary["adaptive_limit"]["last"].as_u64().unwrap();
    let highest = adaptive.summary["adaptive_limit"]["highest"]
        .as_u64()
        .unwrap();
    assert!((1..=12).contains(&last), "{}", adaptive.summary);
    assert!(highest >= 16, "{}", adaptive.summary);
    let line = format!("  concurrency    adaptive: {last} at the end, {highest} at the highest");
    assert!(adaptive.stdout.contains(&line), "{}", adaptive.stdout);
    assert_eq!(
        adaptive.total("retries"),
        shed.faults.crowded,
        "each turned-away request is retried once: {}",
        adaptive.stdout
    );
}
