//! The `sluice-target` binary: `serve` and `compare`.

mod common;

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::TestTarget;
use reqwest::StatusCode;
use sluice_target::{read_resources, FaultPlan};

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
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sluice-target serve");

    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let url = line
        .trim_end()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let client = common::client(Some(Duration::from_secs(10)));
    let response = client
        .put(format!("{url}/items/1"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);

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
            "serve did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "serve exited with {exit}");

    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    assert!(stderr.contains("requests=1"), "{stderr}");
    assert_eq!(read_resources(&db).unwrap().len(), 1);
}

#[test]
fn serve_rejects_invalid_fault_options() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("never.db");
    let cases: [&[&str]; 3] = [
        &["--rate-500", "1.5"],
        &["--rate-500", "0.7", "--rate-503", "0.7"],
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
