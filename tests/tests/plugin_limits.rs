//! A misbehaving plugin against the host's limits. A call that never
//! returns and unbounded allocation stop the file with an error that names
//! the plugin, the limit and the position, never a hang or a host crash,
//! and records before it are delivered. A panic rejects only the record
//! being handled, until panics come too often in a row.

use sluice_tests::{dead_letter_files, hostile_plugin, write_file, Sluice};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn accepting() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    server
}

fn hostile(dir: &std::path::Path, server: &MockServer, mode: &str) -> Sluice {
    Sluice::new("run", dir)
        .plugin(hostile_plugin())
        .arg("--endpoint")
        .arg(server.uri())
        .plugin_config("mode", mode)
        .plugin_config("trigger", "bad")
}

/// Writes a file whose first chunk ends before the trigger line, so the
/// lines before it are parsed and sent first.
fn lines(dir: &std::path::Path) -> (String, String) {
    let before: String = (0..2000).map(|n| format!("line{n:04}\n")).collect();
    let path = write_file(dir, "lines.txt", &format!("{before}bad\nafter\n"));
    let good = write_file(dir, "good.txt", "fine\n");
    (path.display().to_string(), good.display().to_string())
}

fn file_error(finished: &sluice_tests::Finished) -> String {
    finished.summary["files"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn endless_call_hits_the_call_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = accepting().await;
    let (input, good) = lines(dir.path());

    let started = std::time::Instant::now();
    let finished = hostile(dir.path(), &server, "loop")
        .arg("--plugin-call-timeout=500ms")
        .arg("--chunk-size=4096")
        .arg(&input)
        .arg(&good)
        .run()
        .await;

    assert!(
        started.elapsed().as_secs() < 30,
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(finished.code, Some(1), "{}", finished.stderr);
    let error = file_error(&finished);
    assert!(error.contains("plugin hostile failed in feed"), "{error}");
    assert!(error.contains("plugin.call_timeout (500ms)"), "{error}");
    assert!(error.contains("after record"), "{error}");
    assert!(
        finished.total("delivered") > 0,
        "records before the loop are delivered"
    );
    let second = &finished.summary["files"][1];
    assert_eq!(second["delivered"], 1, "later files still run");
}

#[tokio::test]
async fn runaway_allocation_hits_the_memory_limit() {
    let dir = tempfile::tempdir().unwrap();
    let server = accepting().await;
    let (input, _) = lines(dir.path());

    let finished = hostile(dir.path(), &server, "allocate")
        .arg("--plugin-max-memory-mib=32")
        .arg(&input)
        .run()
        .await;

    assert_eq!(finished.code, Some(1), "{}", finished.stderr);
    let error = file_error(&finished);
    assert!(error.contains("plugin.max_memory_mib (32 MiB)"), "{error}");
}

/// Returns the paths of the PUT requests the server received.
async fn put_paths(server: &MockServer) -> Vec<String> {
    let requests = server.received_requests().await.unwrap();
    requests.iter().map(|r| r.url.path().to_owned()).collect()
}

/// Returns the one rejected file's contents and its sidecar's only entry.
fn only_rejected(dir: &std::path::Path) -> (String, serde_json::Value) {
    let rejected = dead_letter_files(&dir.join("dead-letters"), "rejected");
    assert_eq!(rejected.len(), 1, "one rejected file");
    let file = &rejected[0];
    assert_eq!(file.sidecar.len(), 1, "{:?}", file.sidecar);
    (file.contents.clone(), file.sidecar[0].clone())
}

#[tokio::test]
async fn panic_in_mapping_rejects_only_that_record() {
    let dir = tempfile::tempdir().unwrap();
    let server = accepting().await;
    let (input, good) = lines(dir.path());

    let finished = hostile(dir.path(), &server, "panic")
        .arg("--chunk-size=4096")
        .arg(&input)
        .arg(&good)
        .run()
        .await;

    assert_eq!(finished.code, Some(3), "{}", finished.stderr);
    assert_eq!(finished.total("delivered"), 2002, "{}", finished.stdout);
    assert_eq!(finished.total("rejected"), 1);
    let paths = put_paths(&server).await;
    assert!(paths.contains(&"/lines/after".to_owned()));
    assert!(!paths.contains(&"/lines/bad".to_owned()));

    let (contents, entry) = only_rejected(dir.path());
    assert_eq!(contents, "bad\n");
    assert_eq!(entry["record"], 2001);
    let error = entry["error"].as_str().unwrap();
    assert!(error.contains("plugin hostile failed in map"), "{error}");
    assert!(error.contains("panics on line \"bad\""), "{error}");
    assert!(finished.summary["files"][0]["error"].is_null());
}

#[tokio::test]
async fn panic_in_parsing_rejects_only_those_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let server = accepting().await;
    let (input, good) = lines(dir.path());

    let finished = hostile(dir.path(), &server, "panic-feed")
        .arg("--chunk-size=4096")
        .arg(&input)
        .arg(&good)
        .run()
        .await;

    assert_eq!(finished.code, Some(3), "{}", finished.stderr);
    assert_eq!(finished.total("delivered"), 2002, "{}", finished.stdout);
    assert_eq!(finished.total("rejected"), 1);
    let paths = put_paths(&server).await;
    assert!(paths.contains(&"/lines/line1999".to_owned()));
    assert!(paths.contains(&"/lines/after".to_owned()));

    let (contents, entry) = only_rejected(dir.path());
    assert_eq!(contents, "bad\n");
    assert_eq!(entry["record"], 2001);
    assert_eq!(entry["line"], 2001);
    let error = entry["error"].as_str().unwrap();
    assert!(error.contains("trapped while parsing"), "{error}");
    assert!(
        error.contains("panics while parsing the trigger"),
        "{error}"
    );
}

#[tokio::test]
async fn trap_on_first_record_after_header() {
    let dir = tempfile::tempdir().unwrap();
    let server = accepting().await;
    let after: String = (0..500).map(|n| format!("line{n:04}\n")).collect();
    let input = write_file(dir.path(), "h.txt", &format!("name\nbad\n{after}"));

    let finished = hostile(dir.path(), &server, "panic-feed")
        .plugin_config("header", "true")
        .arg("--chunk-size=1024")
        .arg(input.display().to_string())
        .run()
        .await;

    assert_eq!(finished.code, Some(3), "{}", finished.stderr);
    assert_eq!(finished.total("delivered"), 500, "{}", finished.stdout);
    let (contents, entry) = only_rejected(dir.path());
    // A valid input for the same plugin: its header, then the record.
    assert_eq!(contents, "name\nbad\n");
    assert_eq!(entry["record"], 1);
    assert_eq!(entry["line"], 2);

    // Once the plugin is fixed, the rejected record goes through it again.
    let resent = Sluice::new("reprocess", dir.path())
        .plugin(hostile_plugin())
        .arg("--endpoint")
        .arg(server.uri())
        .plugin_config("header", "true")
        .arg("--include-rejected")
        .arg("dead-letters")
        .run()
        .await;
    assert_eq!(resent.code, Some(0), "{}", resent.stderr);
    assert!(put_paths(&server).await.contains(&"/lines/bad".to_owned()));
}

#[tokio::test]
async fn repeated_traps_stop_only_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = accepting().await;
    let input = write_file(dir.path(), "few.txt", "one\ntwo\nthree\nfour\n");
    let other = write_file(dir.path(), "other.txt", "five\n");

    let finished = hostile(dir.path(), &server, "panic-always")
        .arg("--plugin-max-consecutive-traps=3")
        .arg(input.display().to_string())
        .arg(other.display().to_string())
        .run()
        .await;

    assert_eq!(finished.code, Some(1), "{}", finished.stderr);
    let error = file_error(&finished);
    assert!(error.contains("trapped 3 times in a row"), "{error}");
    assert!(error.contains("plugin.max_consecutive_traps"), "{error}");
    // The records before the limit are rejected, not lost, and the rest
    // of the file stays for a rerun: the ledger keeps it incomplete.
    let rejected = dead_letter_files(&dir.path().join("dead-letters"), "rejected");
    let rejected_lines: usize = rejected.iter().map(|f| f.sidecar.len()).sum();
    assert_eq!(rejected_lines, 2 + 1, "{rejected:?}");
    assert_eq!(finished.summary["files"][0]["completed"], false);
    assert!(put_paths(&server).await.is_empty());
    assert_eq!(finished.summary["files"][1]["rejected"], 1);
}

#[tokio::test]
async fn single_allowed_trap_keeps_earlier_records() {
    let dir = tempfile::tempdir().unwrap();
    let server = accepting().await;
    let (input, _) = lines(dir.path());

    let finished = hostile(dir.path(), &server, "panic")
        .arg("--plugin-max-consecutive-traps=1")
        .arg("--chunk-size=4096")
        .arg(&input)
        .run()
        .await;

    assert_eq!(finished.code, Some(1), "{}", finished.stderr);
    let error = file_error(&finished);
    assert!(error.contains("one trap stops the file"), "{error}");
    assert!(error.contains("after record 2000"), "{error}");
    // Every record before the trap is delivered, in the trapped batch too.
    assert_eq!(finished.total("delivered"), 2000, "{}", finished.stdout);
    assert_eq!(put_paths(&server).await.len(), 2000);
}

#[tokio::test]
async fn record_over_the_size_limit_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let server = accepting().await;
    let (input, _) = lines(dir.path());

    let finished = hostile(dir.path(), &server, "huge")
        .arg("--plugin-max-record-bytes=1048576")
        .arg(&input)
        .run()
        .await;

    assert_eq!(finished.code, Some(3), "{}", finished.stderr);
    assert_eq!(finished.total("delivered"), 2001);
    let rejected = dead_letter_files(&dir.path().join("dead-letters"), "rejected");
    let error = rejected[0].sidecar[0]["error"].as_str().unwrap().to_owned();
    assert!(error.contains("2097152 bytes"), "{error}");
    assert!(
        error.contains("plugin.max_record_bytes (1048576)"),
        "{error}"
    );
}

#[tokio::test]
async fn plugin_stderr_is_logged_with_a_rate_limit() {
    let dir = tempfile::tempdir().unwrap();
    let server = accepting().await;
    let (input, _) = lines(dir.path());

    let finished = hostile(dir.path(), &server, "chatty")
        .arg(&input)
        .run()
        .await;

    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    let logged: Vec<&str> = finished
        .stderr
        .lines()
        .filter(|line| line.contains("hostile: record"))
        .collect();
    assert!(logged[0].contains("plugin=hostile"), "{}", logged[0]);
    assert!(logged[0].contains("hostile: record 1 is"), "{}", logged[0]);
    // 2,002 lines, of which one budget of 100 is logged within the run.
    assert_eq!(logged.len(), 100, "{}", finished.stderr);
    assert!(
        finished.stderr.contains("dropped by the rate limit"),
        "{}",
        finished.stderr
    );
}

#[tokio::test]
async fn well_behaved_hostile_plugin_delivers_everything() {
    let dir = tempfile::tempdir().unwrap();
    let server = accepting().await;
    let (input, _) = lines(dir.path());

    let finished = hostile(dir.path(), &server, "none").arg(&input).run().await;

    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    assert_eq!(finished.total("delivered"), 2002);
}

#[tokio::test]
async fn other_interface_version_is_rejected_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let server = accepting().await;
    let (input, _) = lines(dir.path());

    let finished = Sluice::new("run", dir.path())
        .plugin(sluice_tests::wrong_version_plugin())
        .arg("--endpoint")
        .arg(server.uri())
        .arg(&input)
        .run()
        .await;

    assert_eq!(finished.code, Some(1), "{}", finished.stderr);
    assert!(
        finished.stderr.contains("sluice:plugin/format@9.0.0"),
        "{}",
        finished.stderr
    );
    assert!(
        finished.stderr.contains("sluice:plugin/format@0.1.0"),
        "{}",
        finished.stderr
    );
    assert!(server.received_requests().await.unwrap().is_empty());
}
