//! The `sluice-target` binary: `serve` and `compare`.

mod common;

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::TestTarget;
use reqwest::StatusCode;
use sluice_target::{read_resources, FaultPlan, Stats, PROXY_STATS_PATH};

const BINARY: &str = env!("CARGO_BIN_EXE_sluice-target");

fn compare(db: &Path, csv: &Path, template: &str) -> (Option<i32>, String, String) {
    let output = Command::new(BINARY)
        .args(["compare", "--db"])
        .arg(db)
        .arg("--file")
        .arg(csv)
        .args(["--path", template, "--null", "NA"])
        .output()
        .expect("run sluice-target compare");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    (output.status.code(), stdout, stderr)
}

/// Reads the `listening on URL` line that `serve` and `proxy` print first,
/// and returns the URL.
fn read_listening_url(child: &mut Child) -> String {
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let url = line
        .trim_end()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    url
}

/// Sends SIGTERM, checks that the process exits with success within 10 s
/// and returns what it printed on stderr.
async fn terminate(mut child: Child) -> String {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "process did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "process exited with {exit}");

    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    stderr
}

#[tokio::test]
async fn serve_prints_address_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("served.db");
    let mut child = Command::new(BINARY)
        .args(["serve", "--addr", "127.0.0.1:0", "--db"])
        .arg(&db)
        .args([
            "--seed",
            "1",
            "--rate-429",
            "0",
            "--retry-after",
            "2",
            "--stall-for",
            "1s",
            "--rate-lost-response",
            "0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sluice-target serve");
    let url = read_listening_url(&mut child);

    let client = common::client(Some(Duration::from_secs(10)));
    let response = client
        .put(format!("{url}/items/1"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);

    let stderr = terminate(child).await;
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    assert!(stderr.contains("requests=1"), "{stderr}");
    assert_eq!(read_resources(&db).unwrap().len(), 1);
}

#[tokio::test]
async fn proxy_forwards_and_stops_on_sigterm() {
    let target = TestTarget::start(FaultPlan::default()).await;
    let mut child = Command::new(BINARY)
        .args(["proxy", "--addr", "127.0.0.1:0", "--upstream"])
        .arg(target.target.url())
        .args([
            "--seed",
            "1",
            "--rate-lost-response",
            "0",
            "--stall-for",
            "1s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sluice-target proxy");
    let url = read_listening_url(&mut child);

    let client = common::client(Some(Duration::from_secs(10)));
    let response = client
        .put(format!("{url}/items/1"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(target.stats().requests, 1);

    let stats = client
        .get(format!("{url}{PROXY_STATS_PATH}"))
        .send()
        .await
        .unwrap();
    let stats: Stats = serde_json::from_str(&stats.text().await.unwrap()).unwrap();
    assert_eq!(stats.requests, 1);
    assert_eq!(stats.forwarded, 1);

    let stderr = terminate(child).await;
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    assert!(stderr.contains("forwarded=1"), "{stderr}");
    assert_eq!(read_resources(&target.db()).unwrap().len(), 1);
}

#[test]
fn serve_rejects_invalid_fault_options() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("never.db");
    let cases: [&[&str]; 4] = [
        &["--rate-500", "1.5"],
        &["--rate-500", "0.7", "--rate-503", "0.7"],
        &["--rate-reset", "0.5", "--rate-lost-response", "0.6"],
        &["--outage-after", "1s"],
    ];
    for args in cases {
        let output = Command::new(BINARY)
            .args(["serve", "--addr", "127.0.0.1:0", "--db"])
            .arg(&db)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(!output.stderr.is_empty(), "{args:?} printed no error");
    }
    assert!(!db.exists());
}

#[test]
fn proxy_rejects_invalid_options() {
    let cases: [&[&str]; 4] = [
        &["--upstream", "https://127.0.0.1:8090"],
        &["--upstream", "not a url"],
        &[
            "--upstream",
            "http://127.0.0.1:8090",
            "--rate-lost-response",
            "2",
        ],
        &["--rate-500", "0.1"],
    ];
    for args in cases {
        let output = Command::new(BINARY)
            .args(["proxy", "--addr", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(!output.stderr.is_empty(), "{args:?} printed no error");
    }
}

#[tokio::test]
async fn compare_exit_codes() {
    let target = TestTarget::start(FaultPlan::default()).await;
    for (path, body) in [
        ("/airports/JFK", r#"{"iata": "JFK", "elevation": "13"}"#),
        ("/airports/XNA", r#"{"iata": "XNA", "elevation": null}"#),
    ] {
        target.put(path, body).await.unwrap();
    }
    let csv = target.dir.path().join("airports.csv");

    std::fs::write(&csv, "iata,elevation\nJFK,13\nXNA,NA\n").unwrap();
    let (code, stdout, _) = compare(&target.db(), &csv, "/airports/{iata}");
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(stdout, "matched 2, missing 0, extra 0, different 0\n");

    std::fs::write(&csv, "iata,elevation\nJFK,13\nXNA,NA\nLAX,38\n").unwrap();
    let (code, stdout, _) = compare(&target.db(), &csv, "/airports/{iata}");
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.starts_with("matched 2, missing 1, extra 0, different 0\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("missing: line 4: /airports/LAX"),
        "{stdout}"
    );

    let (code, _, stderr) = compare(&target.db(), &csv, "/airports/{code}");
    assert_eq!(code, Some(2));
    assert!(
        stderr.starts_with("error: path template names column \"code\""),
        "{stderr}"
    );
}
