//! The real `sluice` binary and CSV plugin against a real PocketBase (Go and
//! SQLite): airports.csv is created as records of the `airports` collection
//! with ids derived from each row's iata code, then checked record for
//! record through PocketBase's own API.
//!
//! PocketBase has no upsert: a create whose id exists fails with 400
//! `validation_not_unique`. The plugin's `delivered_when` rule turns that
//! error into "delivered", which is right after a lost response because the
//! first attempt created the record with the same body. `sluice verify`
//! reads every record back and catches a record whose values differ.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{json, Map, Value};
use sluice_target::{start_proxy, FaultPlan, ProxyConfig};
use sluice_tests::pocketbase::PocketBase;
use sluice_tests::{dataset, Finished, Sluice};

const COLLECTION: &str = "airports";

/// Builds a `run` or `verify` command for airports.csv against `endpoint`,
/// with the superuser token passed only through the child's environment.
fn airports(subcommand: &str, dir: &Path, endpoint: &str, token: &str) -> Sluice {
    Sluice::new(subcommand, dir)
        .arg("--endpoint")
        .arg(endpoint)
        .arg("--header")
        .arg("Authorization: ${PB_TOKEN}")
        .env("PB_TOKEN", token)
        .plugin_config("method", "POST")
        .plugin_config("path", "/api/collections/airports/records")
        .plugin_config("key", "iata")
        .plugin_config("id_field", "id")
        .plugin_config("delivered_when", "400:validation_not_unique")
        .plugin_config("read_path", "/api/collections/airports/records/{id}")
        .arg(dataset("airports.csv").display().to_string())
}

/// Reads airports.csv with the `csv` crate: the header and each row as a
/// map from column name to value.
fn csv_rows() -> (Vec<String>, Vec<HashMap<String, String>>) {
    let mut reader = csv::Reader::from_path(dataset("airports.csv")).unwrap();
    let columns: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    let rows = reader
        .records()
        .map(|row| {
            let row = row.unwrap();
            columns
                .iter()
                .cloned()
                .zip(row.iter().map(str::to_owned))
                .collect()
        })
        .collect();
    (columns, rows)
}

/// Asserts that the collection contains each row of airports.csv exactly
/// once, with equal values and a 15-character id of `[a-z0-9]`, and nothing
/// else.
async fn assert_collection_matches_csv(pocketbase: &PocketBase) {
    let (columns, rows) = csv_rows();
    let records = pocketbase.records(COLLECTION).await;
    assert_eq!(records.len(), rows.len(), "record count in {COLLECTION}");

    let mut by_iata: HashMap<&str, Vec<&Map<String, Value>>> = HashMap::new();
    for record in &records {
        let iata = record["iata"].as_str().expect("iata is a string");
        by_iata.entry(iata).or_default().push(record);

        let id = record["id"].as_str().expect("id is a string");
        assert_eq!(id.len(), 15, "id {id:?} of {iata}");
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
            "id {id:?} of {iata} is not [a-z0-9]"
        );
    }

    for row in &rows {
        let iata = row["iata"].as_str();
        let found = by_iata.get(iata).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(found.len(), 1, "records with iata {iata:?}");
        for column in &columns {
            assert_eq!(
                found[0].get(column).and_then(Value::as_str),
                Some(row[column].as_str()),
                "{iata} column {column}"
            );
        }
    }
}

fn assert_all_delivered(finished: &Finished, rows: u64) {
    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    assert_eq!(finished.total("records"), rows, "{}", finished.stdout);
    assert_eq!(finished.total("delivered"), rows, "{}", finished.stdout);
    assert_eq!(finished.total("rejected"), 0, "{}", finished.stdout);
    assert_eq!(finished.total("dead_lettered"), 0, "{}", finished.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn airports_arrive_once_with_equal_values() {
    let pocketbase = PocketBase::start().await;
    let dir = tempfile::tempdir().unwrap();
    let rows = csv_rows().1.len() as u64;

    let run = airports("run", dir.path(), pocketbase.url(), pocketbase.token())
        .arg("--concurrency=8")
        .run()
        .await;

    assert_all_delivered(&run, rows);
    assert_collection_matches_csv(&pocketbase).await;
    assert!(
        !run.stdout.contains(pocketbase.token()) && !run.stderr.contains(pocketbase.token()),
        "sluice printed the token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_counts_existing_records_as_delivered() {
    let pocketbase = PocketBase::start().await;
    let dir = tempfile::tempdir().unwrap();
    let rows = csv_rows().1.len() as u64;

    let first = airports("run", dir.path(), pocketbase.url(), pocketbase.token())
        .arg("--concurrency=8")
        .run()
        .await;
    assert_all_delivered(&first, rows);

    // Every create of the second run fails with 400 validation_not_unique,
    // which the delivered_when rule accepts. `--force` sends the file again
    // although the ledger records it as completed.
    let second = airports("run", dir.path(), pocketbase.url(), pocketbase.token())
        .arg("--concurrency=8")
        .arg("--force")
        .run()
        .await;
    assert_all_delivered(&second, rows);
    assert_eq!(second.total("retries"), 0, "{}", second.stdout);
    assert_collection_matches_csv(&pocketbase).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_responses_still_load_every_row_and_verify() {
    let pocketbase = PocketBase::start().await;
    let dir = tempfile::tempdir().unwrap();
    let rows = csv_rows().1.len() as u64;

    let mut config = ProxyConfig::new(pocketbase.url());
    config.faults = FaultPlan {
        seed: 11,
        rate_503: 0.03,
        rate_reset: 0.02,
        rate_lost_response: 0.05,
        ..FaultPlan::default()
    };
    let proxy = start_proxy(config).await.unwrap();

    let run = airports("run", dir.path(), &proxy.url(), pocketbase.token())
        .arg("--concurrency=8")
        .arg("--timeout=5s")
        .arg("--max-retries=12")
        .run()
        .await;

    // A lost response makes the retry of a create that succeeded fail with
    // validation_not_unique. Without the delivered_when rule those records
    // would be rejected.
    assert_all_delivered(&run, rows);
    assert!(run.total("retries") > 0, "{}", run.stdout);
    let stats = proxy.shutdown().await;
    assert!(stats.faults.lost_response > 0, "{stats:?}");
    assert_collection_matches_csv(&pocketbase).await;

    let verify = airports("verify", dir.path(), pocketbase.url(), pocketbase.token())
        .run()
        .await;
    assert_eq!(verify.code, Some(0), "{}\n{}", verify.stdout, verify.stderr);
    assert_eq!(verify.total("matched"), rows, "{}", verify.stdout);
    assert_eq!(verify.total("unchecked"), 0, "{}", verify.stdout);

    // A record changed behind sluice's back no longer reads back as
    // expected, so verify must fail.
    let records = pocketbase.records(COLLECTION).await;
    let stale = records
        .iter()
        .find(|record| record["iata"] == "00M")
        .expect("airport 00M is in the collection");
    let id = stale["id"].as_str().unwrap();
    pocketbase
        .update_record(COLLECTION, id, &json!({ "city": "Nowhere" }))
        .await;

    let verify = airports("verify", dir.path(), pocketbase.url(), pocketbase.token())
        .run()
        .await;
    assert_eq!(verify.code, Some(3), "{}\n{}", verify.stdout, verify.stderr);
    assert_eq!(verify.total("different"), 1, "{}", verify.stdout);
    assert_eq!(verify.total("matched"), rows - 1, "{}", verify.stdout);
}
