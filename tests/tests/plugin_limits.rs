//! A misbehaving plugin against the host's limits: a call that never
//! returns, unbounded allocation and a panic each stop the file with an
//! error that names the plugin, the limit and the position, never a hang
//! or a host crash, and records before it are delivered.

use sluice_tests::{hostile_plugin, write_file, Sluice};
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
    assert!(error.contains("plugin.max_memory (32 MiB)"), "{error}");
}

#[tokio::test]
async fn panic_in_mapping_stops_the_file_not_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let server = accepting().await;
    let (input, good) = lines(dir.path());

    let finished = hostile(dir.path(), &server, "panic")
        .arg("--chunk-size=4096")
        .arg(&input)
        .arg(&good)
        .run()
        .await;

    assert_eq!(finished.code, Some(1), "{}", finished.stderr);
    let error = file_error(&finished);
    assert!(error.contains("plugin hostile failed in map"), "{error}");
    assert_eq!(finished.summary["files"][1]["delivered"], 1);
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
