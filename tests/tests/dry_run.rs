//! `sluice run --dry-run` with the real binary and plugins: the requests a
//! run would send are shown, with secrets masked, while the wiremock server
//! on 127.0.0.1 receives nothing and no ledger, dead-letter file or
//! directory is written.

use std::path::{Path, PathBuf};

use serde_json::Value;
use sluice_tests::{dataset, jsonl_plugin, write_file, Finished, Sluice};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const AIRPORTS: &str = "iata,name,city\n\
                        ABQ,Albuquerque International,Albuquerque\n\
                        BOS,Logan International,Boston\n\
                        CHS,Charleston,Charleston\n";

/// Starts a server that accepts every request, so that a request sent by
/// mistake would succeed quietly and only `assert_nothing_sent` catches it.
async fn server() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    server
}

fn dry_run(dir: &Path, server: &MockServer) -> Sluice {
    Sluice::new("run", dir)
        .arg("--dry-run")
        .arg("--endpoint")
        .arg(server.uri())
        .plugin_config("key", "iata")
        .plugin_config("path", "/airports/{iata}")
}

async fn assert_nothing_sent(server: &MockServer) {
    let received = server.received_requests().await.unwrap();
    assert!(received.is_empty(), "received {} requests", received.len());
}

/// Asserts that the run left no state behind in `dir`: no ledger, no
/// dead-letter directory, nothing besides the inputs and test outputs.
fn assert_no_state_written(dir: &Path, expected: &[&str]) {
    assert!(!dir.join(".sluice").exists(), "state directory created");
    assert!(
        !dir.join("dead-letters").exists(),
        "dead-letter directory created"
    );
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with("summary-"))
        .collect();
    names.sort();
    let mut expected: Vec<String> = expected.iter().map(|name| name.to_string()).collect();
    expected.sort();
    assert_eq!(names, expected);
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}")))
        .collect()
}

/// Returns the header lines of the human form, `NAME record N (line L)`.
fn record_headers(run: &Finished) -> Vec<&str> {
    run.stdout
        .lines()
        .filter(|line| line.contains(" record ") && line.ends_with(')'))
        .collect()
}

#[tokio::test]
async fn human_output_shows_masked_request() {
    let dir = tempfile::tempdir().unwrap();
    let server = server().await;
    let input = write_file(dir.path(), "airports.csv", AIRPORTS);

    let run = dry_run(dir.path(), &server)
        .arg("--header")
        .arg("Authorization: Bearer s3cret-token")
        .arg(input.display().to_string())
        .run()
        .await;

    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    let out = &run.stdout;
    assert!(
        out.contains(&format!("{} record 1 (line 2)\n", input.display())),
        "{out}"
    );
    assert!(out.contains("  key: ABQ\n"), "{out}");
    assert!(
        out.contains(&format!("  PUT {}/airports/ABQ\n", server.uri())),
        "{out}"
    );
    assert!(out.contains("  authorization: ***\n"), "{out}");
    assert!(!out.contains("s3cret"), "{out}");
    assert!(!run.stderr.contains("s3cret"), "{}", run.stderr);
    assert!(out.contains("  content-type: application/json\n"), "{out}");
    assert!(out.contains("  idempotency-key: "), "{out}");
    let body = r#"    {"iata":"ABQ","name":"Albuquerque International","city":"Albuquerque"}"#;
    assert!(out.contains(body), "{out}");
    assert_eq!(record_headers(&run).len(), 3, "{out}");
    assert!(
        out.contains("parsed 3, mappable 3, malformed 0, unmappable 0"),
        "{out}"
    );
    assert_nothing_sent(&server).await;
    assert_no_state_written(dir.path(), &["airports.csv"]);
}

#[tokio::test]
async fn json_lines_output_has_one_line_per_record() {
    let dir = tempfile::tempdir().unwrap();
    let server = server().await;
    write_file(dir.path(), "airports.csv", AIRPORTS);

    let run = dry_run(dir.path(), &server)
        .arg("--header")
        .arg("X-Api-Key: k3y")
        .arg("--dry-run-output")
        .arg("records.jsonl")
        .arg("airports.csv")
        .run()
        .await;

    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let text = std::fs::read_to_string(dir.path().join("records.jsonl")).unwrap();
    let records = json_lines(&text);
    assert_eq!(records.len(), 3);
    for (index, (record, iata)) in records.iter().zip(["ABQ", "BOS", "CHS"]).enumerate() {
        let number = index as u64 + 1;
        assert_eq!(record["file"], "airports.csv");
        assert_eq!(record["record"], number);
        assert_eq!(record["line"], number + 1);
        assert_eq!(record["key"], iata);
        let request = &record["request"];
        assert_eq!(request["method"], "PUT");
        assert_eq!(request["url"], format!("{}/airports/{iata}", server.uri()));
        assert_eq!(request["headers"]["x-api-key"], "***");
        assert_eq!(request["headers"]["content-type"], "application/json");
        assert_eq!(request["body_encoding"], "utf-8");
        let body: Value = serde_json::from_str(request["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["iata"], iata);
    }
    // The first record starts after the header row.
    assert_eq!(records[0]["offset"], 15);
    assert!(!text.contains("k3y"), "{text}");
    assert!(run.stdout.contains("dry run summary"), "{}", run.stdout);
    assert_eq!(run.total("records"), 3);
    assert_nothing_sent(&server).await;
    assert_no_state_written(dir.path(), &["airports.csv", "records.jsonl"]);
}

#[tokio::test]
async fn json_lines_on_stdout_moves_summary_to_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let server = server().await;
    write_file(dir.path(), "airports.csv", AIRPORTS);

    let run = dry_run(dir.path(), &server)
        .arg("--dry-run-output=-")
        .arg("airports.csv")
        .run()
        .await;

    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let records = json_lines(&run.stdout);
    assert_eq!(records.len(), 3);
    assert!(run.stderr.contains("dry run summary"), "{}", run.stderr);
    assert_nothing_sent(&server).await;
}

#[tokio::test]
async fn malformed_row_is_listed_and_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let server = server().await;
    let csv = "iata,name,city\n\
               ABQ,Albuquerque International,Albuquerque\n\
               BOS,Logan International\n\
               CHS,Charleston,Charleston\n";
    write_file(dir.path(), "airports.csv", csv);

    let run = dry_run(dir.path(), &server).arg("airports.csv").run().await;

    assert_eq!(run.code, Some(3), "{}", run.stderr);
    let out = &run.stdout;
    let listed = "airports.csv record 2 (line 3)\n  malformed: expected 3 fields, found 2\n";
    assert!(out.contains(listed), "{out}");
    assert!(
        out.contains("airports.csv record 3 (line 4)\n  key: CHS\n"),
        "{out}"
    );
    assert!(
        out.contains("parsed 3, mappable 2, malformed 1, unmappable 0"),
        "{out}"
    );
    assert_eq!(run.summary["files"][0]["malformed"], 1);
    assert_nothing_sent(&server).await;
    // A real run writes the malformed row to a rejected file.
    assert_no_state_written(dir.path(), &["airports.csv"]);
}

#[tokio::test]
async fn unmappable_row_is_listed_with_plugin_message() {
    let dir = tempfile::tempdir().unwrap();
    let server = server().await;
    let csv = "iata,name,city\n,Nameless,Nowhere\nBOS,Logan International,Boston\n";
    write_file(dir.path(), "airports.csv", csv);

    let run = dry_run(dir.path(), &server)
        .arg("--dry-run-output=-")
        .arg("airports.csv")
        .run()
        .await;

    assert_eq!(run.code, Some(3), "{}", run.stderr);
    let records = json_lines(&run.stdout);
    assert_eq!(records.len(), 2);
    let error = &records[0]["error"];
    assert_eq!(error["kind"], "unmappable");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("column \"iata\" is empty"), "{message}");
    assert_eq!(records[0]["line"], 2);
    assert!(records[0].get("request").is_none());
    assert_eq!(records[1]["request"]["method"], "PUT");
    assert!(run.stderr.contains("unmappable 1"), "{}", run.stderr);
    assert_nothing_sent(&server).await;
}

#[tokio::test]
async fn records_limit_counts_and_zero_lists_all() {
    let dir = tempfile::tempdir().unwrap();
    let server = server().await;
    let input = dataset("airports.csv").display().to_string();

    let default = dry_run(dir.path(), &server).arg(&input).run().await;
    let two = dry_run(dir.path(), &server)
        .arg("--dry-run-records=2")
        .arg(&input)
        .run()
        .await;
    let all = dry_run(dir.path(), &server)
        .arg("--dry-run-records=0")
        .arg("--dry-run-output=all.jsonl")
        .arg(&input)
        .run()
        .await;

    assert_eq!(default.code, Some(0), "{}", default.stderr);
    assert_eq!(record_headers(&default).len(), 10);
    assert!(
        default.stdout.contains("3366 more records not shown"),
        "{}",
        default.stdout
    );
    assert_eq!(default.total("records"), 3376);
    assert_eq!(default.total("mappable"), 3376);
    assert_eq!(record_headers(&two).len(), 2);
    assert_eq!(all.code, Some(0), "{}", all.stderr);
    let text = std::fs::read_to_string(dir.path().join("all.jsonl")).unwrap();
    let records = json_lines(&text);
    assert_eq!(records.len(), 3376);
    assert_eq!(records.last().unwrap()["record"], 3376);
    assert_eq!(all.total("shown"), 3376);
    assert_nothing_sent(&server).await;
}

#[tokio::test]
async fn chosen_state_directories_are_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let server = server().await;
    let csv = "iata,name,city\nABQ,Albuquerque International,Albuquerque\nBOS,short\n";
    write_file(dir.path(), "airports.csv", csv);

    let run = dry_run(dir.path(), &server)
        .arg("--state-dir=state")
        .arg("--dead-letter-dir=letters")
        .arg("airports.csv")
        .run()
        .await;

    assert_eq!(run.code, Some(3), "{}", run.stderr);
    assert!(!dir.path().join("state").exists());
    assert!(!dir.path().join("letters").exists());
    assert_no_state_written(dir.path(), &["airports.csv"]);
    assert_nothing_sent(&server).await;
}

#[tokio::test]
async fn unreadable_file_stops_alone_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let server = server().await;
    write_file(dir.path(), "duplicate.csv", "iata,iata\nABQ,BOS\n");
    write_file(dir.path(), "airports.csv", AIRPORTS);

    let run = dry_run(dir.path(), &server)
        .arg("duplicate.csv")
        .arg("airports.csv")
        .run()
        .await;

    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let out = &run.stdout;
    let stopped = "duplicate.csv: reading stopped: duplicate column \"iata\"";
    assert!(out.contains(stopped), "{out}");
    assert!(out.contains("(before the first record)"), "{out}");
    assert!(
        out.contains("  stopped   duplicate.csv: duplicate column"),
        "{out}"
    );
    assert!(out.contains("airports.csv record 3 (line 4)"), "{out}");
    assert!(out.contains("airports.csv: parsed 3, mappable 3"), "{out}");
    assert!(run.stderr.contains("file stopped early"), "{}", run.stderr);
    assert_nothing_sent(&server).await;
}

#[tokio::test]
async fn dry_run_requests_match_a_real_run() {
    let dir = tempfile::tempdir().unwrap();
    let server = server().await;
    write_file(dir.path(), "airports.csv", AIRPORTS);

    let dry = dry_run(dir.path(), &server)
        .arg("--dry-run-output=-")
        .arg("airports.csv")
        .run()
        .await;
    assert_eq!(dry.code, Some(0), "{}", dry.stderr);
    assert_nothing_sent(&server).await;
    let real = Sluice::new("run", dir.path())
        .arg("--endpoint")
        .arg(server.uri())
        .arg("--concurrency=1")
        .plugin_config("key", "iata")
        .plugin_config("path", "/airports/{iata}")
        .arg("airports.csv")
        .run()
        .await;
    assert_eq!(real.code, Some(0), "{}", real.stderr);

    let shown = json_lines(&dry.stdout);
    let mut sent = server.received_requests().await.unwrap();
    sent.sort_by_key(|request| request.url.path().to_owned());
    assert_eq!(shown.len(), sent.len());
    for (shown, sent) in shown.iter().zip(&sent) {
        let request = &shown["request"];
        assert_eq!(request["method"], sent.method.as_str());
        // wiremock rebuilds the URL with another host, so compare paths.
        let url = format!("{}{}", server.uri(), sent.url.path());
        assert_eq!(request["url"], url);
        assert_eq!(
            request["body"],
            String::from_utf8_lossy(&sent.body).as_ref()
        );
        let key = sent
            .headers
            .get("idempotency-key")
            .unwrap()
            .to_str()
            .unwrap();
        assert_eq!(request["headers"]["idempotency-key"], key);
    }
}

#[tokio::test]
async fn ledger_note_names_completed_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = server().await;
    write_file(dir.path(), "airports.csv", AIRPORTS);
    let real = Sluice::new("run", dir.path())
        .arg("--endpoint")
        .arg(server.uri())
        .plugin_config("path", "/airports/{iata}")
        .arg("airports.csv")
        .run()
        .await;
    assert_eq!(real.code, Some(0), "{}", real.stderr);
    let sent = server.received_requests().await.unwrap().len();

    let dry = dry_run(dir.path(), &server).arg("airports.csv").run().await;
    let forced = dry_run(dir.path(), &server)
        .arg("--force")
        .arg("airports.csv")
        .run()
        .await;

    assert_eq!(dry.code, Some(0), "{}", dry.stderr);
    let note = "  ledger    airports.csv: completed by an earlier run; a run skips it";
    assert!(dry.stdout.contains(note), "{}", dry.stdout);
    assert!(!forced.stdout.contains("  ledger "), "{}", forced.stdout);
    assert_eq!(server.received_requests().await.unwrap().len(), sent);
}

#[tokio::test]
async fn jsonl_plugin_maps_earthquakes() {
    let dir = tempfile::tempdir().unwrap();
    let server = server().await;
    let input: PathBuf = dataset("earthquakes.jsonl");

    let run = Sluice::new("run", dir.path())
        .plugin(jsonl_plugin())
        .arg("--dry-run")
        .arg("--dry-run-records=0")
        .arg("--dry-run-output=-")
        .arg("--endpoint")
        .arg(server.uri())
        .plugin_config("path", "/quakes/{id}")
        .arg(input.display().to_string())
        .run()
        .await;

    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let records = json_lines(&run.stdout);
    assert_eq!(records.len(), 1707);
    let first = &records[0]["request"];
    assert_eq!(first["method"], "PUT");
    let prefix = format!("{}/quakes/", server.uri());
    assert!(
        first["url"].as_str().unwrap().starts_with(&prefix),
        "{first}"
    );
    let body: Value = serde_json::from_str(first["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["type"], "Feature");
    assert!(records.iter().all(|record| record.get("request").is_some()));
    assert_eq!(run.total("mappable"), 1707);
    assert_nothing_sent(&server).await;
    assert_no_state_written(dir.path(), &[]);
}

#[tokio::test]
async fn missing_endpoint_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    write_file(dir.path(), "airports.csv", AIRPORTS);

    let run = Sluice::new("run", dir.path())
        .arg("--dry-run")
        .plugin_config("path", "/airports/{iata}")
        .arg("airports.csv")
        .run()
        .await;

    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("endpoint"), "{}", run.stderr);
}
