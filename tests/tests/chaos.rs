//! The chaos test: sluice loads flights through a fault-injecting proxy
//! into the example target, is killed with SIGKILL at seeded random
//! moments and rerun each time, then reprocesses its dead letters after
//! the outage. The target must end up holding every row exactly once with
//! the file's values: nothing lost, nothing duplicated, nothing stale.
//!
//! It runs twice: PUT by composite key, and POST with idempotency keys
//! that the target deduplicates. The CI size is the bundled 20,000-row
//! slice; with `SLUICE_LONG=1` it uses the whole nycflights13 file
//! (336,776 rows) from the shared datasets directory beside the
//! repository. A third test kills `sluice reprocess` again and again on a
//! file with five versions of each key.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value};
use sluice_target::{
    compare_csv, read_posts, start, start_proxy, CompareOptions, FaultPlan, Outage, ProxyConfig,
    TargetConfig,
};
use sluice_tests::{dataset, workspace_root, Sluice};

const KEY: &str = "year,month,day,carrier,flight,origin";
const PATH: &str = "/flights/{year}/{month}/{day}/{carrier}/{flight}/{origin}";
const KILLS: usize = 5;

/// Returns the input file and its row count for this mode.
fn flights(dir: &Path) -> (PathBuf, usize) {
    if std::env::var_os("SLUICE_LONG").is_none() {
        return (dataset("flights-20k.csv"), 20_000);
    }
    let source = workspace_root().join("../shared/datasets/nycflights13/flights.csv.gz");
    assert!(
        source.is_file(),
        "long mode needs {}, which is missing; unset SLUICE_LONG for the CI size",
        source.display()
    );
    let output = std::process::Command::new("gzip")
        .arg("-dc")
        .arg(&source)
        .output()
        .expect("gzip runs");
    assert!(
        output.status.success(),
        "gzip failed on {}",
        source.display()
    );
    let path = dir.join("flights.csv");
    std::fs::write(&path, &output.stdout).unwrap();
    (path, 336_776)
}

fn faults(seed: u64) -> FaultPlan {
    FaultPlan {
        seed,
        rate_500: 0.02,
        rate_503: 0.02,
        rate_429: 0.01,
        retry_after_secs: 1,
        rate_stall: 0.003,
        stall_for: Duration::from_secs(2),
        rate_reset: 0.01,
        rate_lost_response: 0.02,
        outage: Some(Outage {
            after: Duration::from_secs(2),
            duration: Duration::from_secs(3),
        }),
        max_in_flight: None,
    }
}

/// Runs sluice, kills it at random moments, reruns it until a run
/// finishes, then reprocesses dead letters until none are left.
async fn chaos(dir: &Path, endpoint: &str, input: &Path, method: &str, seed: u64) {
    let command = |subcommand: &str| {
        Sluice::new(subcommand, dir)
            .arg("--endpoint")
            .arg(endpoint)
            .arg("--timeout=500ms")
            .arg("--max-retries=6")
            .arg("--max-retry-after=1s")
            .arg("--failure-threshold=5")
            .arg("--open-duration=1s")
            .arg("--concurrency=16")
            .plugin_config("key", KEY)
            .plugin_config("path", if method == "PUT" { PATH } else { "/flights" })
            .plugin_config("method", method)
            .plugin_config("null", "NA")
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let mut killed = 0;
    for _ in 0..KILLS {
        let (mut child, _) = command("run").arg(input.display().to_string()).spawn();
        let wait = Duration::from_millis(rng.gen_range(300..1500));
        match tokio::time::timeout(wait, child.wait()).await {
            Ok(status) => {
                let status = status.unwrap();
                assert!(matches!(status.code(), Some(0 | 3)), "run failed: {status}");
            }
            Err(_) => {
                child.start_kill().unwrap();
                child.wait().await.unwrap();
                killed += 1;
            }
        }
    }
    assert!(
        killed >= 3,
        "only {killed} runs were killed; the kill schedule is too late"
    );

    let last = command("run").arg(input.display().to_string()).run().await;
    assert!(matches!(last.code, Some(0 | 3)), "{}", last.stderr);

    for round in 0.. {
        let pending = dead_letters(dir);
        if pending == 0 {
            break;
        }
        assert!(
            round < 5,
            "{pending} dead-letter files left after {round} reprocessing rounds"
        );
        let again = command("reprocess").arg("dead-letters").run().await;
        assert!(matches!(again.code, Some(0 | 3)), "{}", again.stderr);
    }
}

fn dead_letters(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir.join("dead-letters")) else {
        return 0;
    };
    entries
        .filter(|e| {
            let name = e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .into_owned();
            name.contains(".dead.") && !name.ends_with(".meta.jsonl")
        })
        .count()
}

/// Reads the file's rows as the JSON objects the plugin sends.
fn expected_rows(input: &Path) -> Vec<Value> {
    let mut reader = csv::Reader::from_path(input).unwrap();
    let headers = reader.headers().unwrap().clone();
    reader
        .records()
        .map(|row| {
            let row = row.unwrap();
            let object: Map<String, Value> = headers
                .iter()
                .zip(row.iter())
                .map(|(name, value)| {
                    let value = if value == "NA" {
                        Value::Null
                    } else {
                        Value::String(value.to_owned())
                    };
                    (name.to_owned(), value)
                })
                .collect();
            Value::Object(object)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_by_key_survives_kills_and_faults_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("target.db");
    let target = start(TargetConfig::new(&db)).await.unwrap();
    let mut proxy = ProxyConfig::new(target.url());
    proxy.faults = faults(31);
    let proxy = start_proxy(proxy).await.unwrap();
    let (input, rows) = flights(dir.path());

    chaos(dir.path(), &proxy.url(), &input, "PUT", 7).await;

    let stats = proxy.shutdown().await;
    assert!(
        stats.faults.lost_response > 0,
        "no lost responses were injected: {stats:?}"
    );
    assert!(
        stats.faults.outage > 0,
        "the outage never happened: {stats:?}"
    );
    let mut options = CompareOptions::new(PATH);
    options.null_token = Some("NA".to_owned());
    let comparison = compare_csv(&db, &input, &options).unwrap();
    assert!(comparison.is_exact(), "{comparison}");
    assert_eq!(comparison.matched, rows);
    target.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_with_idempotency_keys_survives_kills_and_faults_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("target.db");
    let target = start(TargetConfig::new(&db)).await.unwrap();
    let mut proxy = ProxyConfig::new(target.url());
    proxy.faults = faults(32);
    let proxy = start_proxy(proxy).await.unwrap();
    let (input, rows) = flights(dir.path());

    chaos(dir.path(), &proxy.url(), &input, "POST", 8).await;

    let stats = proxy.shutdown().await;
    assert!(
        stats.faults.lost_response > 0,
        "no lost responses were injected: {stats:?}"
    );
    target.shutdown().await;
    let posts = read_posts(&db).unwrap();
    let keyed = posts
        .iter()
        .filter(|post| post.idempotency_key.is_some())
        .count();
    assert_eq!(keyed, posts.len(), "every POST carries an idempotency key");
    // Rows are unique in the file, so equal bodies mean a duplicate insert.
    let mut by_body: HashMap<String, usize> = HashMap::new();
    for post in &posts {
        *by_body.entry(post.body.to_string()).or_default() += 1;
    }
    let duplicated = by_body.values().filter(|count| **count > 1).count();
    assert_eq!(duplicated, 0, "rows inserted more than once");
    assert_eq!(posts.len(), rows, "rows missing or extra");

    let mut stored: Vec<String> = by_body.into_keys().collect();
    let mut expected: Vec<String> = expected_rows(&input).iter().map(Value::to_string).collect();
    stored.sort();
    expected.sort();
    assert_eq!(stored.len(), expected.len());
    let first_difference = stored.iter().zip(&expected).position(|(a, b)| a != b);
    assert_eq!(first_difference, None, "stored values differ from the file");
}

/// Writes `versions` versions of the first `keys` airports, version by
/// version, so that every key's last row has its newest value.
fn versioned_airports(dir: &Path, keys: usize, versions: usize) -> PathBuf {
    let text = std::fs::read_to_string(dataset("airports.csv")).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let rows: Vec<&str> = lines.take(keys).collect();
    let mut out = format!("{header}\n");
    for version in 1..=versions {
        for row in &rows {
            let (iata, rest) = row.split_once(',').unwrap();
            let (name, tail) = rest.split_once(',').unwrap();
            out.push_str(&format!("{iata},{name} v{version},{tail}\n"));
        }
    }
    let path = dir.join("versions.csv");
    std::fs::write(&path, out).unwrap();
    path
}

/// Kills `sluice reprocess` 25 times in a row, 10 to 90 ms after each
/// start, then reprocesses until no dead letters are left. Every key must
/// end at its last version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_reprocessing_never_leaves_an_older_version() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("target.db");
    let mut config = TargetConfig::new(&db);
    config.faults = FaultPlan {
        seed: 98,
        rate_500: 0.15,
        rate_stall: 0.02,
        stall_for: Duration::from_millis(300),
        rate_reset: 0.03,
        ..FaultPlan::default()
    };
    let target = start(config).await.unwrap();
    let input = versioned_airports(dir.path(), 800, 5);
    let command = |subcommand: &str| {
        Sluice::new(subcommand, dir.path())
            .arg("--endpoint")
            .arg(target.url())
            .arg("--timeout=200ms")
            .arg("--max-retries=0")
            .arg("--failure-threshold=100000")
            .arg("--concurrency=8")
            .plugin_config("key", "iata")
            .plugin_config("path", "/airports/{iata}")
    };

    let first = command("run").arg(input.display().to_string()).run().await;
    assert_eq!(first.code, Some(3), "{}", first.stderr);

    let mut rng = StdRng::seed_from_u64(5);
    for _ in 0..25 {
        if dead_letters(dir.path()) == 0 {
            break;
        }
        let (mut child, _) = command("reprocess").arg("dead-letters").spawn();
        tokio::time::sleep(Duration::from_millis(rng.gen_range(10..90))).await;
        child.start_kill().unwrap();
        child.wait().await.unwrap();
    }
    for round in 0.. {
        if dead_letters(dir.path()) == 0 {
            break;
        }
        assert!(round < 40, "dead letters left after {round} rounds");
        let again = command("reprocess").arg("dead-letters").run().await;
        assert!(matches!(again.code, Some(0 | 3)), "{}", again.stderr);
    }

    let comparison = compare_csv(&db, &input, &CompareOptions::new("/airports/{iata}")).unwrap();
    assert!(comparison.is_exact(), "{comparison}");
    target.shutdown().await;
}
