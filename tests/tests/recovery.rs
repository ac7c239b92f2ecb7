//! Idempotency keys, the progress ledger, graceful stops, resumption and
//! `sluice verify`, through the real binary and CSV plugin against servers
//! on 127.0.0.1.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use sluice_target::{start, TargetConfig};
use sluice_tests::{dead_letter_files, slow_server, write_file, Sluice};
use wiremock::matchers::{body_string_contains, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

const AIRPORTS: &str = "iata,name,city\nABQ,Albuquerque,Albuquerque\nBOS,Logan,Boston\n";

fn run(dir: &Path, endpoint: &str) -> Sluice {
    Sluice::new("run", dir)
        .arg("--endpoint")
        .arg(endpoint)
        .plugin_config("key", "iata")
        .plugin_config("path", "/airports/{iata}")
}

fn reprocess(dir: &Path, endpoint: &str) -> Sluice {
    Sluice::new("reprocess", dir)
        .arg("--endpoint")
        .arg(endpoint)
        .plugin_config("key", "iata")
        .plugin_config("path", "/airports/{iata}")
        .arg("dead-letters")
}

/// Idempotency-Key header values of the requests a server received, in
/// arrival order.
async fn keys(server: &MockServer) -> Vec<Option<String>> {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let value = r.headers.get("idempotency-key");
            value.map(|v| v.to_str().unwrap().to_owned())
        })
        .collect()
}

async fn answering(status: u16) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(status))
        .mount(&server)
        .await;
    server
}

fn ledger_entry(dir: &Path) -> (PathBuf, Value) {
    let ledger = dir.join(".sluice/ledger");
    let entry = std::fs::read_dir(&ledger)
        .unwrap()
        .next()
        .expect("one ledger entry");
    let path = entry.unwrap().path();
    let value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    (path, value)
}

#[tokio::test]
async fn idempotency_key_is_stable_across_retries_and_reprocessing() {
    let dir = tempfile::tempdir().unwrap();
    let down = answering(503).await;
    let input = write_file(dir.path(), "a.csv", AIRPORTS);

    let first = run(dir.path(), &down.uri())
        .arg("--max-retries=2")
        .arg(input.display().to_string())
        .run()
        .await;
    assert_eq!(first.code, Some(3), "{}", first.stderr);
    let sent = keys(&down).await;
    assert_eq!(sent.len(), 6);
    assert!(sent.iter().all(Option::is_some), "{sent:?}");
    let mut distinct: Vec<_> = sent.iter().flatten().cloned().collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        2,
        "one key per record, same on every retry: {sent:?}"
    );

    let up = answering(200).await;
    let again = reprocess(dir.path(), &up.uri()).run().await;

    assert_eq!(again.code, Some(0), "{}", again.stderr);
    let mut replayed: Vec<_> = keys(&up).await.into_iter().flatten().collect();
    replayed.sort();
    assert_eq!(
        replayed, distinct,
        "reprocessing must reuse the original keys"
    );
}

#[tokio::test]
async fn idempotency_header_can_be_renamed_or_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = answering(200).await;
    let input = write_file(dir.path(), "a.csv", AIRPORTS);

    let renamed = run(dir.path(), &server.uri())
        .arg("--idempotency-header=X-Request-Id")
        .arg(input.display().to_string())
        .run()
        .await;
    assert_eq!(renamed.code, Some(0), "{}", renamed.stderr);
    let requests = server.received_requests().await.unwrap();
    assert!(requests
        .iter()
        .all(|r| r.headers.contains_key("x-request-id")));
    assert!(requests
        .iter()
        .all(|r| !r.headers.contains_key("idempotency-key")));

    let off = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&off)
        .await;
    let finished = run(dir.path(), &off.uri())
        .arg("--no-idempotency")
        .arg("--force")
        .arg(input.display().to_string())
        .run()
        .await;
    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    assert!(keys(&off).await.iter().all(Option::is_none));
}

#[tokio::test]
async fn record_key_mode_gives_one_key_per_entity() {
    let dir = tempfile::tempdir().unwrap();
    let server = answering(200).await;
    let csv = "iata,name,city\nABQ,one,x\nABQ,two,x\n";
    let input = write_file(dir.path(), "a.csv", csv);

    let finished = run(dir.path(), &server.uri())
        .arg("--idempotency-key=record-key")
        .arg(input.display().to_string())
        .run()
        .await;

    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    let sent: Vec<_> = keys(&server).await.into_iter().flatten().collect();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0], sent[1]);
}

#[tokio::test]
async fn post_retries_without_keys_warn_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let input = write_file(dir.path(), "a.csv", AIRPORTS);

    let finished = Sluice::new("run", dir.path())
        .arg("--endpoint")
        .arg(server.uri())
        .arg("--no-idempotency")
        .arg("--max-retries=2")
        .plugin_config("path", "/airports")
        .plugin_config("method", "POST")
        .arg(input.display().to_string())
        .run()
        .await;

    assert_eq!(finished.code, Some(3));
    let warnings = finished
        .stderr
        .matches("retrying POST requests without idempotency keys")
        .count();
    assert_eq!(warnings, 1, "{}", finished.stderr);
}

#[tokio::test]
async fn in_progress_conflict_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(409))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(201))
        .mount(&server)
        .await;
    let input = write_file(dir.path(), "one.csv", "iata,name\nABQ,x\n");

    let finished = run(dir.path(), &server.uri())
        .arg(input.display().to_string())
        .run()
        .await;

    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    assert_eq!(finished.total("retries"), 2);
}

#[tokio::test]
async fn reused_key_422_is_permanent_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let server = answering(422).await;
    let input = write_file(dir.path(), "one.csv", "iata,name\nABQ,x\n");

    let finished = run(dir.path(), &server.uri())
        .arg(input.display().to_string())
        .run()
        .await;

    assert_eq!(finished.code, Some(3));
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
    let rejected = dead_letter_files(&dir.path().join("dead-letters"), "rejected");
    let error = rejected[0].sidecar[0]["error"].as_str().unwrap();
    assert!(
        error.contains("idempotency key reused with a different payload"),
        "{error}"
    );
}

#[tokio::test]
async fn plugin_classifies_duplicate_id_as_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let server = MockServer::start().await;
    let body = r#"{"data":{"id":{"code":"validation_not_unique"}}}"#;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_string(body))
        .mount(&server)
        .await;
    let input = write_file(dir.path(), "one.csv", "iata,name\nABQ,x\n");

    let finished = Sluice::new("run", dir.path())
        .arg("--endpoint")
        .arg(server.uri())
        .plugin_config("path", "/records")
        .plugin_config("method", "POST")
        .plugin_config("key", "iata")
        .plugin_config("delivered_when", "400:validation_not_unique")
        .arg(input.display().to_string())
        .run()
        .await;

    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    assert_eq!(finished.total("delivered"), 1);
}

#[tokio::test]
async fn completed_file_is_skipped_until_forced_or_changed() {
    let dir = tempfile::tempdir().unwrap();
    let server = answering(200).await;
    let input = write_file(dir.path(), "a.csv", AIRPORTS);
    let input = input.display().to_string();

    let first = run(dir.path(), &server.uri()).arg(&input).run().await;
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    let (_, entry) = ledger_entry(dir.path());
    assert_eq!(entry["completed"], true);
    assert_eq!(entry["handled_through"], 2);

    let second = run(dir.path(), &server.uri()).arg(&input).run().await;
    assert_eq!(second.code, Some(0));
    assert!(
        second.stdout.contains("completed by an earlier run"),
        "{}",
        second.stdout
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 2);

    let forced = run(dir.path(), &server.uri())
        .arg("--force")
        .arg(&input)
        .run()
        .await;
    assert_eq!(forced.code, Some(0));
    assert_eq!(server.received_requests().await.unwrap().len(), 4);

    write_file(
        dir.path(),
        "a.csv",
        &format!("{AIRPORTS}CHS,Charleston,Charleston\n"),
    );
    let changed = run(dir.path(), &server.uri()).arg(&input).run().await;
    assert_eq!(changed.code, Some(0));
    assert!(
        changed.stderr.contains("content changed"),
        "{}",
        changed.stderr
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 7);
}

fn many_rows(count: usize) -> String {
    let rows: String = (0..count)
        .map(|n| format!("K{n:03},name {n},city\n"))
        .collect();
    format!("iata,name,city\n{rows}")
}

#[tokio::test]
async fn sigterm_drains_then_a_rerun_finishes_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (server, names) = slow_server(Duration::from_millis(200)).await;
    let input = write_file(dir.path(), "many.csv", &many_rows(40));
    let input = input.display().to_string();

    let (child, summary) = run(dir.path(), &server.uri())
        .arg("--concurrency=2")
        .arg(&input)
        .spawn();
    tokio::time::sleep(Duration::from_millis(900)).await;
    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let stopped = Sluice::collect(child, &summary).await;

    assert_eq!(stopped.code, Some(143), "{}", stopped.stderr);
    assert_eq!(stopped.summary["interrupted_by"], "SIGTERM");
    assert!(stopped.stdout.contains("interrupted"), "{}", stopped.stdout);
    let (_, entry) = ledger_entry(dir.path());
    assert_eq!(entry["completed"], false);
    let through = entry["handled_through"].as_u64().unwrap();
    assert!(
        through < 40,
        "the stop came before the end, yet the ledger is at {through}"
    );
    // Requests finish out of order, so the ledger may stay below some
    // delivered records; it never passes an undelivered one.
    let delivered = stopped.total("delivered");
    assert!(
        through <= delivered,
        "ledger at {through} but {delivered} delivered"
    );

    let resumed = run(dir.path(), &server.uri())
        .arg("--concurrency=8")
        .arg(&input)
        .run()
        .await;

    assert_eq!(resumed.code, Some(0), "{}", resumed.stderr);
    assert_eq!(resumed.total("skipped"), through);
    assert_eq!(resumed.total("delivered"), 40 - through);
    let names = names.lock().unwrap().clone();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for name in &names {
        *counts.entry(name.clone()).or_default() += 1;
    }
    assert_eq!(counts.len(), 40, "every row arrived");
    let repeats: usize = counts.values().map(|n| n - 1).sum();
    // Only records past the ledger mark can repeat: those delivered out of
    // order before the stop, and the two that were on the wire.
    let allowed = (delivered - through) as usize + 2;
    assert!(
        repeats <= allowed,
        "{repeats} repeats, {allowed} allowed: {counts:?}"
    );
    assert!(resumed.total("replayed") as usize >= repeats);
}

#[tokio::test]
async fn resumed_run_keeps_later_records_behind_an_earlier_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    let failing = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(body_string_contains("first"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&failing)
        .await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&failing)
        .await;
    let csv = "iata,name,city\nABQ,first,x\nBOS,other,x\nABQ,second,x\n";
    let input = write_file(dir.path(), "poison.csv", csv)
        .display()
        .to_string();
    let first = run(dir.path(), &failing.uri())
        .arg("--max-retries=0")
        .arg(&input)
        .run()
        .await;
    assert_eq!(first.code, Some(3), "{}", first.stderr);

    // Make it look as if the run crashed right after dead-lettering the
    // first record: drop the later record from the dead-letter file and
    // reset the ledger.
    let dead = &dead_letter_files(&dir.path().join("dead-letters"), "dead")[0];
    std::fs::write(&dead.path, "iata,name,city\nABQ,first,x\n").unwrap();
    let mut sidecar = dead.path.clone().into_os_string();
    sidecar.push(".meta.jsonl");
    let first_line = serde_json::to_string(&dead.sidecar[0]).unwrap();
    std::fs::write(&sidecar, format!("{first_line}\n")).unwrap();
    let (ledger_path, mut entry) = ledger_entry(dir.path());
    entry["handled_through"] = Value::from(0);
    entry["completed"] = Value::from(false);
    std::fs::write(&ledger_path, serde_json::to_vec(&entry).unwrap()).unwrap();

    let healthy = answering(200).await;
    let resumed = run(dir.path(), &healthy.uri()).arg(&input).run().await;

    assert_eq!(resumed.code, Some(3), "{}", resumed.stderr);
    let bodies: Vec<String> = healthy
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert!(!bodies.iter().any(|b| b.contains("first")), "{bodies:?}");
    assert!(!bodies.iter().any(|b| b.contains("second")), "{bodies:?}");
    assert!(bodies.iter().any(|b| b.contains("other")), "{bodies:?}");
    let files = dead_letter_files(&dir.path().join("dead-letters"), "dead");
    let behind = files
        .iter()
        .find(|f| f.contents.contains("second"))
        .expect("dead-lettered");
    assert_eq!(behind.sidecar[0]["attempts"], 0);
}

#[tokio::test]
async fn orphaned_dead_letter_record_is_not_sent() {
    let dir = tempfile::tempdir().unwrap();
    let down = answering(503).await;
    let input = write_file(dir.path(), "one.csv", "iata,name\nABQ,x\n");
    let first = run(dir.path(), &down.uri())
        .arg("--max-retries=0")
        .arg(input.display().to_string())
        .run()
        .await;
    assert_eq!(first.code, Some(3));
    // A crash after writing a record's bytes but before its sidecar line.
    let dead = &dead_letter_files(&dir.path().join("dead-letters"), "dead")[0];
    std::fs::write(&dead.path, format!("{}TORN,par", dead.contents)).unwrap();

    let up = answering(200).await;
    let again = reprocess(dir.path(), &up.uri()).run().await;

    assert_eq!(again.code, Some(0), "{}", again.stderr);
    let paths: Vec<String> = up
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.url.path().to_owned())
        .collect();
    assert_eq!(paths, ["/airports/ABQ"]);
    assert!(
        again.stderr.contains("without a sidecar line"),
        "{}",
        again.stderr
    );
}

#[tokio::test]
async fn file_without_sidecar_is_sent_whole() {
    let dir = tempfile::tempdir().unwrap();
    let dead_letters = dir.path().join("dead-letters");
    std::fs::create_dir(&dead_letters).unwrap();
    // Written by hand, because sluice creates a sidecar beside every file
    // it writes.
    write_file(&dead_letters, "a.20261204T120000000Z-1.dead.csv", AIRPORTS);

    let up = answering(200).await;
    let again = reprocess(dir.path(), &up.uri()).run().await;

    assert_eq!(again.code, Some(0), "{}", again.stderr);
    let mut paths: Vec<String> = up
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.url.path().to_owned())
        .collect();
    paths.sort();
    assert_eq!(paths, ["/airports/ABQ", "/airports/BOS"]);
    assert!(dead_letter_files(&dead_letters, "dead").is_empty());
}

#[tokio::test]
async fn torn_sidecar_line_is_ignored_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let down = answering(503).await;
    let input = write_file(dir.path(), "a.csv", AIRPORTS);
    let first = run(dir.path(), &down.uri())
        .arg("--max-retries=0")
        .arg(input.display().to_string())
        .run()
        .await;
    assert_eq!(first.code, Some(3));
    let dead = &dead_letter_files(&dir.path().join("dead-letters"), "dead")[0];
    let mut sidecar = dead.path.clone().into_os_string();
    sidecar.push(".meta.jsonl");
    let first_line = serde_json::to_string(&dead.sidecar[0]).unwrap();
    std::fs::write(&sidecar, format!("{first_line}\n{{\"version\":1,\"ki")).unwrap();

    let up = answering(200).await;
    let again = reprocess(dir.path(), &up.uri()).run().await;

    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert!(again.stderr.contains("cut short"), "{}", again.stderr);
    assert_eq!(up.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn verify_reports_matched_missing_and_different_records() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("target.db");
    let target = start(TargetConfig::new(&db)).await.unwrap();
    let input = write_file(dir.path(), "a.csv", AIRPORTS);
    let loaded = run(dir.path(), &target.url())
        .arg(input.display().to_string())
        .run()
        .await;
    assert_eq!(loaded.code, Some(0), "{}", loaded.stderr);

    let verify = |file: &PathBuf| {
        Sluice::new("verify", dir.path())
            .arg("--endpoint")
            .arg(target.url())
            .plugin_config("key", "iata")
            .plugin_config("path", "/airports/{iata}")
            .arg(file.display().to_string())
    };
    let exact = verify(&input).run().await;
    assert_eq!(exact.code, Some(0), "{}", exact.stdout);
    assert!(
        exact.stdout.contains("matched 2, missing 0, different 0"),
        "{}",
        exact.stdout
    );

    let edited = "iata,name,city\nABQ,Albuquerque,Albuquerque\nBOS,Logan Intl,Boston\n\
                  CHS,Charleston,Charleston\n";
    let edited = write_file(dir.path(), "edited.csv", edited);
    let drift = verify(&edited).run().await;
    assert_eq!(drift.code, Some(3), "{}", drift.stdout);
    assert!(
        drift.stdout.contains("matched 1, missing 1, different 1"),
        "{}",
        drift.stdout
    );
    assert!(
        drift.stdout.contains("record 3 (line 4)"),
        "{}",
        drift.stdout
    );
    assert!(
        drift
            .stdout
            .contains("name: expected \"Logan Intl\", found \"Logan\""),
        "{}",
        drift.stdout
    );
    target.shutdown().await;
}
