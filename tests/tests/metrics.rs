//! `--metrics-addr`: the real `sluice` binary serves `/metrics`,
//! `/healthz` and `/readyz` on 127.0.0.1 while it loads a CSV file into a
//! wiremock API that the tests switch between failing and healthy.
//!
//! A run ends right after its summary, so these tests hold it there: the
//! summary JSON goes to a named pipe, and writing it blocks until the test
//! opens the pipe. In between, the test scrapes the final values.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_tests::prometheus::Scrape;
use sluice_tests::{csv_plugin, dataset, sluice_bin, switchable_server, write_file, Sluice};
use tokio::io::{AsyncBufReadExt, BufReader};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// Rows in the test file, each with its own key.
const ROWS: u64 = 40;

fn airports(dir: &Path) -> PathBuf {
    let mut csv = String::from("iata,name\n");
    for n in 0..ROWS {
        csv.push_str(&format!("A{n:02},Airport {n}\n"));
    }
    write_file(dir, "airports.csv", &csv)
}

/// A `sluice run` with `--metrics-addr 127.0.0.1:0`, whose summary JSON
/// goes to a named pipe so that the process waits after its summary.
struct Running {
    child: tokio::process::Child,
    address: SocketAddr,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    summary_pipe: PathBuf,
    client: reqwest::Client,
}

impl Running {
    async fn start(dir: &Path, server: &MockServer, extra: &[&str]) -> Running {
        Running::start_with(dir, server, extra, &airports(dir)).await
    }

    /// Starts like [`Running::start`], but sends `input`, whose rows
    /// contain the airport CSV's `iata` column.
    async fn start_with(dir: &Path, server: &MockServer, extra: &[&str], input: &Path) -> Running {
        let summary_pipe = dir.join("summary.pipe");
        let mkfifo = std::process::Command::new("mkfifo")
            .arg(&summary_pipe)
            .status()
            .expect("mkfifo runs");
        assert!(mkfifo.success(), "mkfifo failed");

        let mut command = tokio::process::Command::new(sluice_bin());
        command
            .arg("run")
            .arg("--plugin")
            .arg(csv_plugin())
            .arg("--endpoint")
            .arg(server.uri())
            .args(["--plugin-config", "key=iata"])
            .args(["--plugin-config", "path=/airports/{iata}"])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(["--progress=never", "--jitter-seed=1"])
            .args(["--initial-backoff=5ms", "--max-backoff=20ms"])
            .arg("--summary-json")
            .arg(&summary_pipe)
            .args(extra)
            .arg(input)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("RUST_LOG")
            .env_remove("SLUICE_METRICS_ADDRESS")
            .kill_on_drop(true);
        let mut child = command.spawn().expect("sluice starts");
        let stdout = collect_lines(child.stdout.take().expect("piped stdout"));
        let stderr = collect_lines(child.stderr.take().expect("piped stderr"));

        let line = wait_for_line(&stderr, "serving metrics", Duration::from_secs(30)).await;
        let address = line
            .split_whitespace()
            .find_map(|field| field.strip_prefix("address="))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .parse()
            .expect("the logged address is IP:PORT");
        Running {
            child,
            address,
            stdout,
            stderr,
            summary_pipe,
            client: reqwest::Client::new(),
        }
    }

    /// Sends `method` to `path` on the metrics server and returns the
    /// status, the content type and the body.
    async fn request(&self, method: reqwest::Method, path: &str) -> (u16, String, String) {
        let url = format!("http://{}{path}", self.address);
        let response = self
            .client
            .request(method, &url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap_or_else(|err| panic!("{url}: {err}"));
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .map(|value| value.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = response.text().await.expect("a text body");
        (status, content_type, body)
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let (status, _, body) = self.request(reqwest::Method::GET, path).await;
        (status, body)
    }

    async fn scrape(&self) -> Scrape {
        let (status, body) = self.get("/metrics").await;
        assert_eq!(status, 200, "{body}");
        Scrape::parse(&body)
    }

    /// Scrapes until `done` holds, or fails after `limit`.
    async fn scrape_until(&self, limit: Duration, done: impl Fn(&Scrape) -> bool) -> Scrape {
        let started = Instant::now();
        loop {
            let scrape = self.scrape().await;
            if done(&scrape) {
                return scrape;
            }
            assert!(
                started.elapsed() < limit,
                "condition not met within {limit:?}; last scrape {scrape:#?}\nstderr:\n{}",
                self.stderr.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the summary is printed; the process then blocks on the
    /// summary pipe with its final values.
    async fn wait_for_summary(&self) {
        wait_for_line(&self.stdout, "  elapsed", Duration::from_secs(60)).await;
    }

    /// Reads the summary JSON from the pipe, which lets the process exit,
    /// and returns its exit status and the summary.
    async fn finish(mut self) -> (Option<i32>, Value, String) {
        let pipe = self.summary_pipe.clone();
        let json = tokio::task::spawn_blocking(move || std::fs::read(pipe))
            .await
            .unwrap()
            .expect("the summary pipe is readable");
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("sluice exits once the summary is read")
            .expect("sluice's status is readable");
        let summary = serde_json::from_slice(&json).expect("the summary is JSON");
        let stderr = self.stderr.lock().unwrap().clone();
        (status.code(), summary, stderr)
    }
}

/// Reads `stream` line by line into a shared string, so that the pipe
/// never fills up and blocks the process.
fn collect_lines(stream: impl tokio::io::AsyncRead + Unpin + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut text = sink.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
        }
    });
    text
}

/// Waits for a line that contains `needle` and returns it.
async fn wait_for_line(text: &Arc<Mutex<String>>, needle: &str, limit: Duration) -> String {
    let started = Instant::now();
    loop {
        if let Some(line) = text
            .lock()
            .unwrap()
            .lines()
            .find(|line| line.contains(needle))
        {
            return line.to_owned();
        }
        assert!(
            started.elapsed() < limit,
            "no line with {needle:?} within {limit:?} in:\n{}",
            text.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Returns a summary total over every file, such as `delivered`.
fn total(summary: &Value, field: &str) -> u64 {
    let files = summary["files"].as_array().expect("files in the summary");
    files.iter().map(|file| file[field].as_u64().unwrap()).sum()
}

/// Returns the line of `body` that starts with `name: `, without it.
fn field<'a>(body: &'a str, name: &str) -> &'a str {
    let prefix = format!("{name}: ");
    body.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name:?} line in {body:?}"))
}

#[tokio::test]
async fn breaker_outage_shows_in_metrics_and_readyz() {
    let dir = tempfile::tempdir().unwrap();
    let (server, down) = switchable_server().await;
    let extra = [
        "--concurrency=2",
        "--max-retries=1",
        "--failure-threshold=2",
        "--open-duration=3s",
    ];
    let run = Running::start(dir.path(), &server, &extra).await;

    // The API fails every request, so the breaker opens and the run waits.
    let open = run
        .scrape_until(Duration::from_secs(30), |scrape| {
            scrape.value("sluice_breaker_state", &[("state", "open")]) == 1.0
        })
        .await;
    let (status, body) = run.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with("not ready: the circuit breaker is open"),
        "{body}"
    );
    assert_eq!(field(&body, "state"), "open", "{body}");
    assert!(field(&body, "since").ends_with(" ago)"), "{body}");
    let probe = field(&body, "next probe");
    let wait = probe
        .rsplit_once("(in ")
        .and_then(|(_, rest)| rest.strip_suffix("s)"))
        .unwrap_or_else(|| panic!("no wait in {probe:?}"));
    let wait: f64 = wait.parse().expect("seconds");
    assert!((0.0..=3.0).contains(&wait), "{body}");
    assert_eq!(
        open.value("sluice_breaker_state", &[("state", "closed")]),
        0.0
    );
    assert_eq!(
        open.value("sluice_breaker_state", &[("state", "half-open")]),
        0.0
    );
    assert!(open.count("sluice_breaker_openings_total") >= 1);
    assert!(open.value("sluice_retries_total", &[("class", "5xx")]) >= 2.0);
    assert_eq!(open.value("sluice_files", &[("state", "active")]), 1.0);
    let (status, body) = run.get("/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    // The API recovers; the next probe closes the breaker and the rest of
    // the file goes through.
    down.store(false, Ordering::SeqCst);
    run.wait_for_summary().await;
    let (status, body) = run.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body.lines().next(),
        Some("ready: the circuit breaker is closed")
    );
    let last = run.scrape().await;
    let requests = server.received_requests().await.unwrap().len() as u64;
    let (code, summary, stderr) = run.finish().await;

    assert_eq!(code, Some(3), "some records were dead-lettered\n{stderr}");
    let delivered = total(&summary, "delivered");
    let dead_lettered = total(&summary, "dead_lettered");
    let retries = total(&summary, "retries");
    assert_eq!(total(&summary, "records"), ROWS);
    assert_eq!(delivered + dead_lettered, ROWS);
    assert!(dead_lettered >= 2, "{summary}");

    assert_eq!(last.count("sluice_records_read_total"), ROWS);
    assert_eq!(last.count("sluice_records_delivered_total"), delivered);
    assert_eq!(
        last.count("sluice_records_dead_lettered_total"),
        dead_lettered
    );
    assert_eq!(last.count("sluice_records_rejected_total"), 0);
    assert_eq!(last.sum("sluice_retries_total"), retries);
    let server_errors = last.value("sluice_retries_total", &[("class", "5xx")]);
    assert_eq!(server_errors as u64, retries);
    assert_eq!(
        last.count("sluice_breaker_openings_total"),
        summary["breaker_openings"].as_u64().unwrap()
    );
    assert_eq!(
        last.value("sluice_breaker_state", &[("state", "closed")]),
        1.0
    );
    assert_eq!(
        last.value("sluice_breaker_state", &[("state", "open")]),
        0.0
    );
    assert_eq!(last.count("sluice_requests_in_flight"), 0);
    assert_eq!(last.count("sluice_records_retrying"), 0);
    assert_eq!(last.count("sluice_dead_letter_records"), dead_lettered);
    assert_eq!(last.value("sluice_files", &[("state", "pending")]), 0.0);
    assert_eq!(last.value("sluice_files", &[("state", "active")]), 0.0);
    assert_eq!(last.value("sluice_files", &[("state", "done")]), 1.0);

    // Every record was sent once, plus its retries, and the server saw
    // each attempt.
    let attempts = last.count("sluice_request_duration_seconds_count");
    assert_eq!(attempts, ROWS + retries);
    assert_eq!(attempts, requests);
    let infinite = [("le", "+Inf")];
    let bucket = "sluice_request_duration_seconds_bucket";
    assert_eq!(last.value(bucket, &infinite) as u64, attempts);

    // The plugin classified every response that was not a success.
    let calls = |call: &str| {
        let name = "sluice_plugin_call_duration_seconds_count";
        last.value(name, &[("call", call)]) as u64
    };
    assert_eq!(calls("classify"), attempts - delivered);
    assert_eq!(calls("finish"), 1);
    assert!(calls("feed") >= 1);
    assert!(calls("map") >= 1);
}

/// Responds with 503 to a fixed, scattered eighth of the requests,
/// whatever their number in flight, and with 204 to the rest.
struct BackgroundFaults {
    requests: std::sync::atomic::AtomicU64,
}

impl Respond for BackgroundFaults {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        // The top three bits of the product with an odd constant pick one
        // request in eight, scattered over the run.
        if n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 61 == 0 {
            ResponseTemplate::new(503)
        } else {
            ResponseTemplate::new(204)
        }
    }
}

#[tokio::test]
async fn adaptive_limit_survives_steady_faults() {
    let dir = tempfile::tempdir().unwrap();
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(BackgroundFaults {
            requests: Default::default(),
        })
        .mount(&server)
        .await;
    let extra = [
        "--concurrency=adaptive",
        "--max-retries=20",
        "--failure-threshold=1000",
    ];
    let input = dataset("airports.csv");
    let run = Running::start_with(dir.path(), &server, &extra, &input).await;
    run.wait_for_summary().await;
    let last = run.scrape().await;
    let requests = server.received_requests().await.unwrap().len() as u64;
    let (code, summary, stderr) = run.finish().await;
    assert_eq!(code, Some(0), "{stderr}");
    let delivered = total(&summary, "delivered");
    assert_eq!(delivered, 3376, "{summary}");

    // One request in eight fails at any load, and each failure is retried.
    let failed = requests - delivered;
    assert!(
        failed * 10 > delivered && failed * 6 < delivered,
        "{failed} failed requests for {delivered} records"
    );
    // Shrinking on those would not help, and a limit that did would sink
    // toward one, so the limit must end no lower than its start of 16.
    let limit = last.value("sluice_concurrency_limit", &[]);
    assert!(limit >= 16.0, "the limit sank to {limit}");
    assert_eq!(
        summary["adaptive_limit"]["last"].as_f64(),
        Some(limit),
        "{summary}"
    );
}

#[tokio::test]
async fn server_answers_health_checks_and_unknown_paths() {
    let dir = tempfile::tempdir().unwrap();
    let (server, down) = switchable_server().await;
    down.store(false, Ordering::SeqCst);
    let run = Running::start(dir.path(), &server, &[]).await;
    run.wait_for_summary().await;

    let (status, body) = run.get("/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, body) = run.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    for path in ["/", "/nope", "/metrics/extra", "/healthz/"] {
        let (status, body) = run.get(path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(body.contains("/metrics, /healthz and /readyz"), "{body}");
    }
    let (status, _, body) = run.request(reqwest::Method::POST, "/readyz").await;
    assert_eq!(status, 405, "{body}");

    let (status, content_type, body) = run.request(reqwest::Method::GET, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let scrape = Scrape::parse(&body);
    assert_eq!(
        scrape
            .types
            .get("sluice_records_delivered_total")
            .map(String::as_str),
        Some("counter")
    );
    assert_eq!(
        scrape
            .types
            .get("sluice_request_duration_seconds")
            .map(String::as_str),
        Some("histogram")
    );
    let (status, _, body) = run.request(reqwest::Method::HEAD, "/metrics").await;
    assert_eq!((status, body.as_str()), (200, ""));

    let (code, summary, stderr) = run.finish().await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(scrape.count("sluice_records_delivered_total"), ROWS);
    assert_eq!(total(&summary, "delivered"), ROWS);
    assert_eq!(scrape.sum("sluice_retries_total"), 0);
    assert_eq!(scrape.count("sluice_breaker_openings_total"), 0);
    assert_eq!(scrape.count("sluice_dead_letter_records"), 0);
}

#[tokio::test]
async fn address_in_use_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _down) = switchable_server().await;
    let input = airports(dir.path()).display().to_string();
    let occupant = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = occupant.local_addr().unwrap().to_string();
    let config = write_file(
        dir.path(),
        "sluice.toml",
        &format!("[metrics]\naddress = \"{address}\"\n"),
    );

    let base = || {
        Sluice::new("run", dir.path())
            .arg("--endpoint")
            .arg(server.uri())
            .plugin_config("key", "iata")
            .plugin_config("path", "/airports/{iata}")
    };
    let runs = [
        ("flag", base().arg("--metrics-addr").arg(&address)),
        ("variable", base().env("SLUICE_METRICS_ADDRESS", &address)),
        (
            "file",
            base().arg("--config").arg(config.display().to_string()),
        ),
    ];
    for (layer, sluice) in runs {
        let finished = sluice.arg(&input).run().await;

        assert_eq!(finished.code, Some(2), "{layer}: {}", finished.stderr);
        let expected = format!("error: cannot serve metrics on {address}: ");
        assert!(
            finished.stderr.contains(&expected),
            "{layer}: {}",
            finished.stderr
        );
        assert!(
            finished.stderr.contains("pass --metrics-addr"),
            "{layer}: {}",
            finished.stderr
        );
    }
    let requests = server.received_requests().await.unwrap();
    assert!(requests.is_empty(), "nothing is sent after a bind failure");
    drop(occupant);
}

#[tokio::test]
async fn invalid_address_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let input = airports(dir.path()).display().to_string();

    let finished = Sluice::new("run", dir.path())
        .arg("--endpoint=http://127.0.0.1:9")
        .plugin_config("path", "/airports/{iata}")
        .arg("--metrics-addr=localhost:9464")
        .arg(&input)
        .run()
        .await;

    assert_eq!(finished.code, Some(2), "{}", finished.stderr);
    assert!(
        finished
            .stderr
            .contains("invalid metrics.address = localhost:9464: an IP address and port"),
        "{}",
        finished.stderr
    );
}
