//! `sluice watch` through the real binary and CSV plugin: files renamed or
//! written into an inbox on disk, the example target or wiremock on
//! 127.0.0.1, and signals, including SIGKILL.
//!
//! Every test reads the service's JSON log as it runs, to know when a file
//! was taken and what became of it.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use sluice_target::{read_posts, read_resources, start, RunningTarget, TargetConfig};
use sluice_tests::prometheus::Scrape;
use sluice_tests::{dead_letter_files, slow_server, switchable_server, write_file, Sluice};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};

/// Time within which an expected log line must appear.
const WAIT: Duration = Duration::from_secs(30);

const AIRPORTS: &str = "iata,name\nAAA,Alpha\nBBB,Bravo\n";

/// A running `sluice watch`, with its log lines collected as they come.
struct Watching {
    child: tokio::process::Child,
    log: Arc<Mutex<Vec<Value>>>,
    stderr: tokio::task::JoinHandle<()>,
    stdout: tokio::task::JoinHandle<String>,
    summary: PathBuf,
}

/// What a stopped `sluice watch` left behind.
struct Stopped {
    code: Option<i32>,
    stdout: String,
    log: Vec<Value>,
    summary: Value,
}

impl Watching {
    /// Starts the command and waits until it watches its inbox.
    async fn start(sluice: Sluice) -> Watching {
        let (mut child, summary) = sluice.arg("--log-format=json").spawn();
        let log: Arc<Mutex<Vec<Value>>> = Arc::default();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let collected = log.clone();
        let stderr = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let value = serde_json::from_str(&line).unwrap_or(Value::String(line));
                collected.lock().unwrap().push(value);
            }
        });
        let mut stdout = child.stdout.take().unwrap();
        let stdout = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text).await;
            text
        });
        let watching = Watching {
            child,
            log,
            stderr,
            stdout,
            summary,
        };
        watching.wait_for("watching the inbox", None, 1).await;
        watching
    }

    fn lines(&self) -> Vec<Value> {
        self.log.lock().unwrap().clone()
    }

    /// Counts the log lines with `message`, about `file` when given.
    fn count(&self, message: &str, file: Option<&Path>) -> usize {
        let lines = self.lines();
        lines
            .iter()
            .filter(|line| matches(line, message, file))
            .count()
    }

    /// Waits until `count` log lines with `message`, about `file` when
    /// given, were written, and returns the last of them.
    async fn wait_for(&self, message: &str, file: Option<&Path>, count: usize) -> Value {
        let started = Instant::now();
        loop {
            let lines = self.lines();
            let found: Vec<&Value> = lines
                .iter()
                .filter(|line| matches(line, message, file))
                .collect();
            if found.len() >= count {
                return found[count - 1].clone();
            }
            assert!(
                started.elapsed() < WAIT,
                "no {count} log lines {message:?} about {file:?}; the log:\n{}",
                render(&lines)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn signal(&self, name: &str) {
        let pid = self.child.id().expect("still running").to_string();
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(&pid)
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} {pid} failed");
    }

    /// Sends SIGTERM and collects what the process left.
    async fn stop(self) -> Stopped {
        self.stop_with("TERM").await
    }

    /// Sends the signal `name`, such as `INT`, and collects what the
    /// process left.
    async fn stop_with(self, name: &str) -> Stopped {
        self.signal(name);
        self.wait().await
    }

    async fn wait(mut self) -> Stopped {
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("sluice watch stops in time")
            .unwrap();
        let stdout = self.stdout.await.unwrap();
        self.stderr.await.unwrap();
        let summary = std::fs::read(&self.summary)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or(Value::Null);
        Stopped {
            code: status.code(),
            stdout,
            log: self.log.lock().unwrap().clone(),
            summary,
        }
    }

    /// Kills the process with SIGKILL, which it cannot catch.
    async fn kill(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }
}

/// Returns whether a log line has `message` and, when `file` is given,
/// names that file in a field or in its span.
fn matches(line: &Value, message: &str, file: Option<&Path>) -> bool {
    if line["message"] != message {
        return false;
    }
    let Some(file) = file else {
        return true;
    };
    let file = file.display().to_string();
    let in_span = line["spans"]
        .as_array()
        .is_some_and(|spans| spans.iter().any(|span| span["file"] == file.as_str()));
    line["file"] == file.as_str() || in_span
}

fn render(lines: &[Value]) -> String {
    let lines: Vec<String> = lines.iter().map(Value::to_string).collect();
    lines.join("\n")
}

/// Returns the time a JSON log line was written.
fn logged_at(line: &Value) -> SystemTime {
    let text = line["timestamp"].as_str().expect("a timestamp");
    humantime::parse_rfc3339(text).expect("an RFC 3339 timestamp")
}

/// Creates `dir/inbox` and returns it without symbolic links, as the
/// service names its files.
fn inbox(dir: &Path) -> PathBuf {
    let inbox = dir.join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    std::fs::canonicalize(inbox).unwrap()
}

/// Writes `contents` under a name the inbox ignores, then renames it to
/// `name`, as a writer that follows the protocol does.
fn rename_in(inbox: &Path, name: &str, contents: &str) -> PathBuf {
    let partial = write_file(inbox, &format!("{name}.part"), contents);
    let path = inbox.join(name);
    std::fs::rename(partial, &path).unwrap();
    path
}

/// `sluice watch` with the CSV plugin, PUT by IATA code, and the settle
/// time and listing interval given; tests add their options and the inbox.
fn watch_every(dir: &Path, endpoint: &str, settle_time: &str, rescan_interval: &str) -> Sluice {
    Sluice::new("watch", dir)
        .arg("--endpoint")
        .arg(endpoint)
        .plugin_config("key", "iata")
        .plugin_config("path", "/airports/{iata}")
        .arg(format!("--settle-time={settle_time}"))
        .arg(format!("--rescan-interval={rescan_interval}"))
}

/// [`watch_every`] with quick settling and listing.
fn watch(dir: &Path, endpoint: &str) -> Sluice {
    watch_every(dir, endpoint, "300ms", "200ms")
}

fn run(dir: &Path, endpoint: &str) -> Sluice {
    Sluice::new("run", dir)
        .arg("--endpoint")
        .arg(endpoint)
        .plugin_config("key", "iata")
        .plugin_config("path", "/airports/{iata}")
}

async fn target(dir: &Path) -> (RunningTarget, PathBuf) {
    let db = dir.join("target.db");
    let target = start(TargetConfig::new(&db)).await.unwrap();
    (target, db)
}

/// Returns the resources that PUTs of `(iata, name)` rows leave.
fn airports(rows: &[(&str, &str)]) -> BTreeMap<String, Value> {
    rows.iter()
        .map(|(iata, name)| {
            let body = json!({"iata": iata, "name": name});
            (format!("/airports/{iata}"), body)
        })
        .collect()
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn renamed_file_is_taken_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = inbox(dir.path());
    let (target, db) = target(dir.path()).await;
    // Neither settling nor listing can find the file in time: only the
    // rename event can.
    let watching = Watching::start(
        watch_every(dir.path(), &target.url(), "1h", "1h").arg(inbox.display().to_string()),
    )
    .await;
    let renamed_at = Instant::now();

    let path = rename_in(&inbox, "a.csv", AIRPORTS);

    watching
        .wait_for("file moved to the done directory", Some(&path), 1)
        .await;
    assert!(
        renamed_at.elapsed() < Duration::from_secs(15),
        "taken after {:?}",
        renamed_at.elapsed()
    );
    let stopped = watching.stop().await;
    assert_eq!(stopped.code, Some(143), "{}", render(&stopped.log));
    assert_eq!(
        read_resources(&db).unwrap(),
        airports(&[("AAA", "Alpha"), ("BBB", "Bravo")])
    );
    assert_eq!(names_in(&inbox), ["done"]);
    assert_eq!(names_in(&inbox.join("done")), ["a.csv"]);
    assert_eq!(stopped.summary["files_completed"], 1);
    assert_eq!(stopped.summary["files"]["delivered"], 2);
    assert!(stopped.stdout.contains("1 completed"), "{}", stopped.stdout);
}

#[tokio::test]
async fn slow_write_is_taken_once_settled() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = inbox(dir.path());
    let (target, db) = target(dir.path()).await;
    let watching = Watching::start(
        watch_every(dir.path(), &target.url(), "1s", "200ms").arg(inbox.display().to_string()),
    )
    .await;
    let path = inbox.join("slow.csv");
    let mut expected = Vec::new();

    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(b"iata,name\n").unwrap();
    for piece in 0..5 {
        let mut rows = String::new();
        for row in 0..20 {
            let iata = format!("S{piece}{row:02}");
            rows.push_str(&format!("{iata},piece {piece}\n"));
            expected.push((iata, format!("piece {piece}")));
        }
        // A row split across two writes must not be taken half-written.
        let (head, tail) = rows.split_at(rows.len() - 5);
        file.write_all(head.as_bytes()).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        file.write_all(tail.as_bytes()).unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    drop(file);
    let last_write = std::fs::metadata(&path).unwrap().modified().unwrap();

    watching
        .wait_for("file moved to the done directory", Some(&path), 1)
        .await;
    let stopped = watching.stop().await;
    let lines = &stopped.log;
    let taken: Vec<&Value> = lines
        .iter()
        .filter(|line| matches(line, "ingesting file", Some(&path)))
        .collect();
    assert_eq!(taken.len(), 1, "{}", render(lines));
    let waited = logged_at(taken[0]).duration_since(last_write);
    assert!(
        waited
            .as_ref()
            .is_ok_and(|waited| *waited >= Duration::from_millis(900)),
        "taken {waited:?} after the last write, before the file settled"
    );
    assert_eq!(stopped.summary["files"]["records"], 100);
    let rows: Vec<(&str, &str)> = expected
        .iter()
        .map(|(iata, name)| (iata.as_str(), name.as_str()))
        .collect();
    assert_eq!(read_resources(&db).unwrap(), airports(&rows));
}

#[tokio::test]
async fn ignored_names_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = inbox(dir.path());
    let (target, db) = target(dir.path()).await;
    std::fs::create_dir(inbox.join("done")).unwrap();
    write_file(&inbox.join("done"), "old.csv", "iata,name\nOLD,Done\n");
    let skipped = [
        (".hidden.csv", "HID"),
        ("upload.tmp", "TMP"),
        ("upload.csv.part", "PRT"),
        ("notes.skip", "SKP"),
    ];
    for (name, iata) in skipped {
        write_file(&inbox, name, &format!("iata,name\n{iata},Skipped\n"));
    }
    let watching = Watching::start(
        watch(dir.path(), &target.url())
            .arg("--ignore=.*")
            .arg("--ignore={*.tmp,*.part}")
            .arg("--ignore=*.skip")
            .arg(inbox.display().to_string()),
    )
    .await;

    let path = rename_in(&inbox, "ok.csv", "iata,name\nOKK,Taken\n");

    watching
        .wait_for("file moved to the done directory", Some(&path), 1)
        .await;
    // Long enough for the skipped files to settle several times over.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stopped = watching.stop().await;
    let taken = stopped
        .log
        .iter()
        .filter(|line| matches(line, "ingesting file", None))
        .count();
    assert_eq!(taken, 1, "{}", render(&stopped.log));
    assert_eq!(read_resources(&db).unwrap(), airports(&[("OKK", "Taken")]));
    let mut left: Vec<&str> = skipped.iter().map(|(name, _)| *name).collect();
    left.push("done");
    left.sort_unstable();
    assert_eq!(names_in(&inbox), left);
    assert_eq!(names_in(&inbox.join("done")), ["ok.csv", "old.csv"]);
}

#[tokio::test]
async fn move_mode_never_overwrites_or_resends() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = inbox(dir.path());
    let done = inbox.join("done");
    let (target, db) = target(dir.path()).await;
    std::fs::create_dir(&done).unwrap();
    write_file(&done, "a.csv", "an earlier a.csv\n");
    // A completed file whose move a crash prevented: the ledger shows it
    // as completed, so it must be moved without being sent again.
    let earlier = write_file(&inbox, "b.csv", "iata,name\nCCC,Charlie\n");
    let finished = run(dir.path(), &target.url())
        .arg(earlier.display().to_string())
        .run()
        .await;
    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    let requests_before = target.stats().requests;

    let watching =
        Watching::start(watch(dir.path(), &target.url()).arg(inbox.display().to_string())).await;
    let path = rename_in(&inbox, "a.csv", AIRPORTS);

    watching
        .wait_for("file moved to the done directory", Some(&path), 1)
        .await;
    watching
        .wait_for("file moved to the done directory", Some(&earlier), 1)
        .await;
    let stopped = watching.stop().await;
    assert_eq!(target.stats().requests, requests_before + 2);
    assert_eq!(
        stopped
            .log
            .iter()
            .filter(|line| matches(line, "ingesting file", Some(&earlier)))
            .count(),
        0,
        "{}",
        render(&stopped.log)
    );
    assert_eq!(names_in(&done), ["a.1.csv", "a.csv", "b.csv"]);
    assert_eq!(
        std::fs::read_to_string(done.join("a.csv")).unwrap(),
        "an earlier a.csv\n"
    );
    assert_eq!(
        std::fs::read_to_string(done.join("a.1.csv")).unwrap(),
        AIRPORTS
    );
    assert_eq!(
        read_resources(&db).unwrap(),
        airports(&[("AAA", "Alpha"), ("BBB", "Bravo"), ("CCC", "Charlie")])
    );
    assert_eq!(stopped.summary["files_completed"], 2);
}

#[tokio::test]
async fn delete_mode_never_resends() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = inbox(dir.path());
    let (target, db) = target(dir.path()).await;
    let earlier = write_file(&inbox, "b.csv", "iata,name\nCCC,Charlie\n");
    let finished = run(dir.path(), &target.url())
        .arg(earlier.display().to_string())
        .run()
        .await;
    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    let requests_before = target.stats().requests;

    let watching = Watching::start(
        watch(dir.path(), &target.url())
            .arg("--on-complete=delete")
            .arg(inbox.display().to_string()),
    )
    .await;
    let path = rename_in(&inbox, "a.csv", AIRPORTS);

    watching.wait_for("file deleted", Some(&path), 1).await;
    watching.wait_for("file deleted", Some(&earlier), 1).await;
    let stopped = watching.stop().await;
    assert_eq!(stopped.code, Some(143));
    assert_eq!(target.stats().requests, requests_before + 2);
    assert_eq!(names_in(&inbox), Vec::<String>::new());
    assert_eq!(
        read_resources(&db).unwrap(),
        airports(&[("AAA", "Alpha"), ("BBB", "Bravo"), ("CCC", "Charlie")])
    );
}

#[tokio::test]
async fn keep_mode_resends_only_changed_files() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = inbox(dir.path());
    let (target, db) = target(dir.path()).await;
    let keep = |dir: &Path| {
        watch(dir, &target.url())
            .arg("--on-complete=keep")
            .arg("--log-level=debug")
            .arg(inbox.display().to_string())
    };
    let watching = Watching::start(keep(dir.path())).await;
    let path = rename_in(&inbox, "a.csv", AIRPORTS);
    watching.wait_for("file done", Some(&path), 1).await;
    // Listings and settle times pass several times over.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let first = watching.stop().await;
    assert_eq!(target.stats().requests, 2, "{}", render(&first.log));
    assert_eq!(names_in(&inbox), ["a.csv"]);

    let watching = Watching::start(keep(dir.path())).await;
    watching
        .wait_for(
            "file completed by an earlier run; keeping it",
            Some(&path),
            1,
        )
        .await;
    assert_eq!(watching.count("ingesting file", Some(&path)), 0);
    assert_eq!(target.stats().requests, 2);

    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    file.write_all(b"DDD,Delta\n").unwrap();
    drop(file);
    watching.wait_for("file done", Some(&path), 1).await;
    let second = watching.stop().await;
    assert_eq!(target.stats().requests, 5, "{}", render(&second.log));
    let changed =
        "file content changed since the ledger entry was written; ingesting it as a new file";
    assert_eq!(
        second
            .log
            .iter()
            .filter(|line| matches(line, changed, Some(&path)))
            .count(),
        1,
        "{}",
        render(&second.log)
    );
    assert_eq!(names_in(&inbox), ["a.csv"]);
    assert_eq!(
        read_resources(&db).unwrap(),
        airports(&[("AAA", "Alpha"), ("BBB", "Bravo"), ("DDD", "Delta")])
    );
}

#[tokio::test]
async fn stopped_file_waits_for_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = inbox(dir.path());
    let (target, db) = target(dir.path()).await;
    let watching =
        Watching::start(watch(dir.path(), &target.url()).arg(inbox.display().to_string())).await;
    let stays = "file stays in the inbox until it changes or sluice restarts; fix the cause in \
                 the error, then replace the file";

    // CR-only line ends stop the CSV plugin at the header.
    let bad = rename_in(&inbox, "bad.csv", "iata,name\rEEE,Echo\r");
    let warning = watching.wait_for(stays, Some(&bad), 1).await;
    let good = rename_in(&inbox, "good.csv", "iata,name\nFFF,Foxtrot\n");
    watching
        .wait_for("file moved to the done directory", Some(&good), 1)
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    assert!(
        warning["error"]
            .as_str()
            .is_some_and(|error| error.contains("convert the file to LF")),
        "{warning}"
    );
    assert_eq!(watching.count("ingesting file", Some(&bad)), 1);
    assert_eq!(names_in(&inbox), ["bad.csv", "done"]);

    let fixed = write_file(&inbox, "fixed.part", "iata,name\nEEE,Echo\n");
    std::fs::rename(fixed, &bad).unwrap();
    watching
        .wait_for("file moved to the done directory", Some(&bad), 1)
        .await;
    let stopped = watching.stop().await;
    assert_eq!(stopped.summary["files_stopped"], 1);
    assert_eq!(stopped.summary["files_completed"], 2);
    assert_eq!(
        read_resources(&db).unwrap(),
        airports(&[("EEE", "Echo"), ("FFF", "Foxtrot")])
    );
}

#[tokio::test]
async fn stopped_file_retried_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = inbox(dir.path());
    let (target, _db) = target(dir.path()).await;
    let command = || watch(dir.path(), &target.url()).arg(inbox.display().to_string());
    let bad = rename_in(&inbox, "bad.csv", "iata,name\rEEE,Echo\r");
    let stays = "file stays in the inbox until it changes or sluice restarts; fix the cause in \
                 the error, then replace the file";

    let watching = Watching::start(command()).await;
    watching.wait_for(stays, Some(&bad), 1).await;
    let interrupted = watching.stop_with("INT").await;
    let watching = Watching::start(command()).await;
    watching.wait_for(stays, Some(&bad), 1).await;
    let stopped = watching.stop().await;

    assert_eq!(interrupted.code, Some(130));
    assert_eq!(interrupted.summary["interrupted_by"], "SIGINT");
    assert_eq!(stopped.code, Some(143));
    assert_eq!(names_in(&inbox), ["bad.csv", "done"]);
    assert_eq!(target.stats().requests, 0);
}

/// Returns a free address on 127.0.0.1 with nothing listening on it, so
/// that connections to it are refused until a server starts there.
fn unused_address() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// Fetches `path` from the metrics server at `address` and returns the
/// status and body.
async fn fetch(address: &str, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{address}{path}"))
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

async fn scrape(address: &str) -> Scrape {
    let (status, body) = fetch(address, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    Scrape::parse(&body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_holds_files_then_reprocesses() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = inbox(dir.path());
    let db = dir.path().join("target.db");
    let address = unused_address();
    let endpoint = format!("http://{address}");
    let watching = Watching::start(
        watch(dir.path(), &endpoint)
            .arg("--metrics-addr=127.0.0.1:0")
            .arg("--max-retries=1")
            .arg("--failure-threshold=2")
            .arg("--open-duration=1500ms")
            .arg("--timeout=500ms")
            .arg("--reprocess-dead-letters")
            // Long enough that the second file goes before the round, so
            // that one of its records waits behind a dead letter.
            .arg("--reprocess-after=2500ms")
            .arg(inbox.display().to_string()),
    )
    .await;

    // Both records run out of retries and go to a dead-letter file; the
    // second opens the breaker.
    let first = rename_in(&inbox, "1-first.csv", "iata,name\nGGG,Golf v1\nHHH,Hotel\n");
    let opened = watching
        .wait_for(
            "circuit breaker opened: requests and reading paused",
            None,
            1,
        )
        .await;
    watching
        .wait_for("file moved to the done directory", Some(&first), 1)
        .await;
    let second = rename_in(
        &inbox,
        "2-second.csv",
        "iata,name\nGGG,Golf v2\nIII,India\n",
    );
    watching
        .wait_for(
            "circuit breaker open: the next file starts once its open time has passed",
            None,
            1,
        )
        .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(watching.count("ingesting file", Some(&second)), 0);

    // While the breaker is open, /readyz and /metrics report it, and no
    // file is active.
    let serving = watching
        .wait_for(
            "serving metrics at /metrics and health checks at /healthz and /readyz",
            None,
            1,
        )
        .await;
    let metrics = serving["address"].as_str().expect("the bound address");
    let (status, body) = fetch(metrics, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("state: open"), "{body}");
    let (status, _) = fetch(metrics, "/healthz").await;
    assert_eq!(status, 200);
    let during = scrape(metrics).await;
    assert_eq!(
        during.value("sluice_breaker_state", &[("state", "open")]),
        1.0
    );
    assert_eq!(
        during.value("sluice_breaker_state", &[("state", "closed")]),
        0.0
    );
    assert_eq!(during.count("sluice_breaker_openings_total"), 1);
    assert_eq!(during.value("sluice_files", &[("state", "active")]), 0.0);
    assert_eq!(during.value("sluice_files", &[("state", "pending")]), 1.0);
    assert_eq!(during.count("sluice_dead_letter_records"), 2);
    assert_eq!(during.count("sluice_records_dead_lettered_total"), 2);
    assert_eq!(during.count("sluice_records_delivered_total"), 0);

    let target = start(TargetConfig {
        addr: address,
        ..TargetConfig::new(&db)
    })
    .await
    .unwrap();

    let started = watching.wait_for("ingesting file", Some(&second), 1).await;
    watching
        .wait_for("file moved to the done directory", Some(&second), 1)
        .await;
    watching
        .wait_for("dead-letter reprocessing done", None, 1)
        .await;

    // After recovery: ready again, nothing waiting, every record counted.
    let (status, body) = fetch(metrics, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    let after = scrape(metrics).await;
    assert_eq!(
        after.value("sluice_breaker_state", &[("state", "closed")]),
        1.0
    );
    assert_eq!(after.count("sluice_dead_letter_records"), 0);
    assert_eq!(after.value("sluice_files", &[("state", "pending")]), 0.0);
    assert_eq!(after.value("sluice_files", &[("state", "active")]), 0.0);
    // III from the second file, then GGG v1, HHH and GGG v2 from the
    // dead letters.
    assert_eq!(after.count("sluice_records_delivered_total"), 4);
    assert_eq!(after.count("sluice_records_dead_lettered_total"), 3);
    let stopped = watching.stop().await;

    let held_for = logged_at(&started).duration_since(logged_at(&opened));
    assert!(
        held_for
            .as_ref()
            .is_ok_and(|held| *held >= Duration::from_millis(1400)),
        "the second file started {held_for:?} after the breaker opened"
    );
    assert_eq!(
        read_resources(&db).unwrap(),
        airports(&[("GGG", "Golf v2"), ("HHH", "Hotel"), ("III", "India")])
    );
    let left = dead_letter_files(&dir.path().join("dead-letters"), "dead");
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(stopped.summary["reprocess_rounds"], 1);
    assert_eq!(stopped.summary["reprocessed"]["delivered"], 3);
    assert_eq!(stopped.summary["breaker_openings"], 1);
    target.shutdown().await;
}

/// Returns the ledger's mark for `input` while the file is not completed.
fn handled_through(ledger: &Path, input: &Path) -> Option<u64> {
    for entry in std::fs::read_dir(ledger).ok()? {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|extension| extension != "json") {
            continue;
        }
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let Ok(entry) = serde_json::from_slice::<Value>(&bytes) else {
            continue;
        };
        if entry["path"] == input.display().to_string().as_str() && entry["completed"] == false {
            return entry["handled_through"].as_u64();
        }
    }
    None
}

#[tokio::test]
async fn failed_round_keeps_dead_letters_and_waits() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = inbox(dir.path());
    let dead_letters = dir.path().join("dead-letters");
    let (server, down) = switchable_server().await;
    // The breaker never opens, so only the wait without failures gates
    // the rounds.
    let watching = Watching::start(
        watch(dir.path(), &server.uri())
            .arg("--max-retries=0")
            .arg("--failure-threshold=100")
            .arg("--reprocess-dead-letters")
            .arg("--reprocess-after=500ms")
            .arg(inbox.display().to_string()),
    )
    .await;
    let path = rename_in(&inbox, "a.csv", "iata,name\nJJJ,Juliett\n");
    watching
        .wait_for("file moved to the done directory", Some(&path), 1)
        .await;
    let failed = watching
        .wait_for("dead-letter reprocessing done", None, 1)
        .await;
    down.store(false, Ordering::SeqCst);

    assert_eq!(failed["delivered"], 0, "{failed}");
    assert_eq!(failed["dead_lettered"], 1, "{failed}");
    let left = dead_letter_files(&dead_letters, "dead");
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].contents.contains("JJJ,Juliett"), "{left:?}");
    let name = left[0].path.file_name().unwrap().to_string_lossy();
    assert!(
        name.contains('~'),
        "not a file written by reprocessing: {name}"
    );

    let started = Instant::now();
    let delivered = loop {
        let lines = watching.lines();
        let done = lines.iter().find(|line| {
            line["message"] == "dead-letter reprocessing done" && line["delivered"] == 1
        });
        if let Some(done) = done {
            break done.clone();
        }
        assert!(started.elapsed() < WAIT, "{}", render(&lines));
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let second_round = watching
        .wait_for("reprocessing dead-letter files", None, 2)
        .await;
    let stopped = watching.stop().await;

    let waited = logged_at(&second_round).duration_since(logged_at(&failed));
    assert!(
        waited
            .as_ref()
            .is_ok_and(|waited| *waited >= Duration::from_millis(450)),
        "the next round started {waited:?} after the failed one"
    );
    assert_eq!(delivered["dead_lettered"], 0, "{delivered}");
    assert!(dead_letter_files(&dead_letters, "dead").is_empty());
    let rounds = stopped.summary["reprocess_rounds"].as_u64().unwrap();
    assert!(rounds >= 2, "{}", stopped.summary);
    // One attempt from the file and one from each round.
    let requests = server.received_requests().await.unwrap().len() as u64;
    assert_eq!(requests, 1 + rounds);
}

/// Writes `count` rows of `key,version` with keys `K0000`... at `version`.
fn versions(count: usize, version: &str) -> String {
    let rows: String = (0..count).map(|n| format!("K{n:04},{version}\n")).collect();
    format!("key,version\n{rows}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_file_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = inbox(dir.path());
    let (target, db) = target(dir.path()).await;
    // The newer file is long enough for the kill to land inside it; its
    // first rows have an older version in the older file.
    const OLDER_ROWS: usize = 300;
    const ROWS: usize = 5000;
    let older = write_file(&inbox, "older.csv", &versions(OLDER_ROWS, "v1"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let newer = write_file(&inbox, "newer.csv", &versions(ROWS, "v2"));
    // POST with idempotency keys, which the target deduplicates: every
    // row arrives exactly once, and the order of a key's rows shows
    // whether an older version came last.
    let command = || {
        Sluice::new("watch", dir.path())
            .arg("--endpoint")
            .arg(target.url())
            .plugin_config("key", "key")
            .plugin_config("path", "/rows")
            .plugin_config("method", "POST")
            .arg("--concurrency=1")
            .arg("--settle-time=300ms")
            .arg("--rescan-interval=200ms")
            .arg(inbox.display().to_string())
    };

    let watching = Watching::start(command()).await;
    let started = Instant::now();
    // Kill once the ledger shows part of the newer file handled.
    let ledger = dir.path().join(".sluice/ledger");
    while handled_through(&ledger, &newer).is_none_or(|through| through == 0) {
        assert!(started.elapsed() < WAIT, "the newer file never started");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    watching.kill().await;
    let through = handled_through(&ledger, &newer);
    assert!(
        through.is_some_and(|through| through < ROWS as u64),
        "the kill came after the newer file ended: {through:?}"
    );
    assert_eq!(names_in(&inbox), ["done", "newer.csv"]);

    let watching = Watching::start(command()).await;
    watching
        .wait_for("file moved to the done directory", Some(&newer), 1)
        .await;
    let stopped = watching.stop().await;

    assert_eq!(stopped.code, Some(143), "{}", render(&stopped.log));
    assert_eq!(names_in(&inbox.join("done")), ["newer.csv", "older.csv"]);
    assert!(!older.exists());
    let posts = read_posts(&db).unwrap();
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    for post in &posts {
        let key = post.body["key"].as_str().unwrap().to_owned();
        let version = post.body["version"].as_str().unwrap().to_owned();
        *seen.entry((key.clone(), version.clone())).or_default() += 1;
        last.insert(key, version);
    }
    assert_eq!(seen.len(), OLDER_ROWS + ROWS, "every row arrived");
    let repeated: Vec<_> = seen.iter().filter(|(_, count)| **count > 1).collect();
    assert!(repeated.is_empty(), "rows stored twice: {repeated:?}");
    let stale: Vec<_> = last
        .iter()
        .filter(|(_, version)| *version != "v2")
        .collect();
    assert!(stale.is_empty(), "keys whose last row is old: {stale:?}");
    assert!(
        stopped.summary["files"]["skipped"].as_u64().unwrap() > 0,
        "the restart did not resume: {}\n{}",
        stopped.summary,
        render(&stopped.log)
    );
}

fn config_file(dir: &Path, endpoint: &str, extra: &str) -> PathBuf {
    let text = format!(
        "endpoint = \"{endpoint}\"\n{extra}\n\n[watch]\nsettle_time = \"300ms\"\n\
         rescan_interval = \"200ms\"\n"
    );
    write_file(dir, "sluice.toml", &text)
}

#[tokio::test]
async fn sighup_reloads_good_rejects_bad() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = inbox(dir.path());
    let (target, db) = target(dir.path()).await;
    let plugin = |path: &str| format!("[plugin.config]\nkey = \"iata\"\npath = \"{path}\"");
    let config = config_file(dir.path(), &target.url(), &plugin("/v1/{iata}"));
    let watching = Watching::start(
        Sluice::new("watch", dir.path())
            .env("API_TOKEN", "s3cret-token")
            .arg("--config")
            .arg(config.display().to_string())
            .arg(inbox.display().to_string()),
    )
    .await;
    let a = rename_in(&inbox, "a.csv", "iata,name\nAAA,Alpha\n");
    watching
        .wait_for("file moved to the done directory", Some(&a), 1)
        .await;

    let good = format!(
        "{}\n[http.headers]\nAuthorization = \"Bearer ${{API_TOKEN}}\"",
        plugin("/v2/{iata}")
    );
    config_file(dir.path(), &target.url(), &good);
    watching.signal("HUP");
    watching
        .wait_for(
            "configuration reloaded; it applies from the next file on",
            None,
            1,
        )
        .await;
    let b = rename_in(&inbox, "b.csv", "iata,name\nBBB,Bravo\n");
    watching
        .wait_for("file moved to the done directory", Some(&b), 1)
        .await;

    let bad = format!(
        "{}\n[retry]\nmultiplier = 0.5\n[http]\nconcurrency = 0",
        plugin("/v3/{iata}")
    );
    config_file(dir.path(), &target.url(), &bad);
    watching.signal("HUP");
    watching
        .wait_for(
            "configuration reload rejected; the running configuration stays",
            None,
            1,
        )
        .await;
    let c = rename_in(&inbox, "c.csv", "iata,name\nCCC,Charlie\n");
    watching
        .wait_for("file moved to the done directory", Some(&c), 1)
        .await;
    let stopped = watching.stop().await;

    let resources: Vec<String> = read_resources(&db).unwrap().into_keys().collect();
    assert_eq!(resources, ["/v1/AAA", "/v2/BBB", "/v2/CCC"]);
    let changed: BTreeMap<String, (String, String)> = stopped
        .log
        .iter()
        .filter(|line| line["message"] == "configuration key changed")
        .map(|line| {
            let value = |name: &str| line[name].as_str().unwrap().to_owned();
            (value("key"), (value("old"), value("new")))
        })
        .collect();
    let expected: BTreeMap<String, (String, String)> = [
        ("http.headers.Authorization", ("(unset)", "\"***\"")),
        ("plugin.config.path", ("\"/v1/{iata}\"", "\"/v2/{iata}\"")),
    ]
    .into_iter()
    .map(|(key, (old, new))| (key.to_owned(), (old.to_owned(), new.to_owned())))
    .collect();
    assert_eq!(changed, expected);
    let problems: Vec<&str> = stopped
        .log
        .iter()
        .filter(|line| line["message"] == "invalid configuration on reload")
        .map(|line| line["error"].as_str().unwrap())
        .collect();
    assert_eq!(
        problems,
        [
            "invalid http.concurrency = 0: an integer from 1 to 1024, or \"adaptive\"",
            "invalid retry.multiplier = 0.5: a number from 1.0 to 100.0"
        ]
    );
    let log = render(&stopped.log);
    assert!(!log.contains("s3cret"), "{log}");
    let requests = target.stats().requests;
    assert_eq!(requests, 3);
}

#[tokio::test]
async fn sigterm_drains_then_restart_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = inbox(dir.path());
    let (server, codes) = slow_server(Duration::from_millis(150)).await;
    let rows: String = (0..40).map(|n| format!("K{n:02},name {n}\n")).collect();
    let command = || {
        watch(dir.path(), &server.uri())
            .arg("--concurrency=2")
            .arg(inbox.display().to_string())
    };
    let watching = Watching::start(command()).await;
    let path = rename_in(&inbox, "many.csv", &format!("iata,name\n{rows}"));
    watching.wait_for("ingesting file", Some(&path), 1).await;
    tokio::time::sleep(Duration::from_millis(600)).await;

    let stopped = watching.stop().await;

    assert_eq!(stopped.code, Some(143), "{}", render(&stopped.log));
    assert_eq!(stopped.summary["interrupted_by"], "SIGTERM");
    assert!(stopped.stdout.contains("interrupted"), "{}", stopped.stdout);
    let sent = codes.lock().unwrap().len();
    assert!(sent < 40, "the stop came after the file ended");
    // Requests on the wire finished: every request sent got its response
    // before the process ended, so the summary counts each as delivered.
    let delivered = stopped.summary["files"]["delivered"].as_u64().unwrap();
    assert_eq!(delivered as usize, sent);
    assert_eq!(names_in(&inbox), ["done", "many.csv"]);

    let watching = Watching::start(command()).await;
    watching
        .wait_for("file moved to the done directory", Some(&path), 1)
        .await;
    watching.stop().await;
    let mut codes = codes.lock().unwrap().clone();
    codes.sort();
    codes.dedup();
    assert_eq!(codes.len(), 40, "every row arrived");
}

#[tokio::test]
async fn file_replaced_while_read_is_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = inbox(dir.path());
    let (server, codes) = slow_server(Duration::from_millis(100)).await;
    let watching = Watching::start(
        watch(dir.path(), &server.uri())
            .arg("--concurrency=1")
            .arg(inbox.display().to_string()),
    )
    .await;
    let first: String = (0..10).map(|n| format!("A{n:02},first {n}\n")).collect();
    let path = rename_in(&inbox, "daily.csv", &format!("iata,name\n{first}"));
    watching.wait_for("ingesting file", Some(&path), 1).await;
    // The writer renames the next day's file over the one being read.
    let second: String = (0..3).map(|n| format!("B{n:02},second {n}\n")).collect();
    rename_in(&inbox, "daily.csv", &format!("iata,name\n{second}"));

    watching
        .wait_for("file changed while it was read, by a writer that was not done or by another file renamed over it; it stays in the inbox and is read again from the start once it settles. Write files under an ignored name such as NAME.part and rename them into the inbox when complete", Some(&path), 1)
        .await;
    watching
        .wait_for("file moved to the done directory", Some(&path), 1)
        .await;
    watching.stop().await;

    let mut sent = codes.lock().unwrap().clone();
    sent.sort();
    let mut expected: Vec<String> = (0..10).map(|n| format!("A{n:02}")).collect();
    expected.extend((0..3).map(|n| format!("B{n:02}")));
    assert_eq!(sent, expected, "both files were sent, each once");
    let done = std::fs::read_to_string(inbox.join("done").join("daily.csv")).unwrap();
    assert!(done.contains("B02,second 2"), "{done}");
    assert_eq!(names_in(&inbox), ["done"]);
}

#[tokio::test]
async fn file_removed_while_read_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = inbox(dir.path());
    let (server, codes) = slow_server(Duration::from_millis(100)).await;
    let watching = Watching::start(
        watch(dir.path(), &server.uri())
            .arg("--concurrency=1")
            .arg(inbox.display().to_string()),
    )
    .await;
    let rows: String = (0..6).map(|n| format!("C{n:02},gone {n}\n")).collect();
    let path = rename_in(&inbox, "gone.csv", &format!("iata,name\n{rows}"));
    watching.wait_for("ingesting file", Some(&path), 1).await;
    std::fs::remove_file(&path).unwrap();

    watching
        .wait_for(
            "file removed from the inbox while it was read; every record it held when read is handled",
            Some(&path),
            1,
        )
        .await;
    let stopped = watching.stop().await;

    assert_eq!(
        codes.lock().unwrap().len(),
        6,
        "the open file was read to its end"
    );
    let errors = stopped
        .log
        .iter()
        .filter(|line| line["level"] == "ERROR")
        .count();
    assert_eq!(errors, 0, "{}", render(&stopped.log));
    assert_eq!(names_in(&inbox.join("done")), Vec::<String>::new());
}

#[tokio::test]
async fn dead_letters_retire_after_many_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = inbox(dir.path());
    let (target, db) = target(dir.path()).await;
    let dead_letters = dir.path().join("dead-letters");
    std::fs::create_dir(&dead_letters).unwrap();
    // Written by hand, as eight failed rounds would have named them.
    let worn = "airports.r0~a~b~c~d~e~f~g~h.dead.csv";
    write_file(&dead_letters, worn, "iata,name\nWWW,Worn\n");
    write_file(
        &dead_letters,
        "airports.r1.dead.csv",
        "iata,name\nFFF,Fresh\n",
    );
    let watching = Watching::start(
        watch(dir.path(), &target.url())
            .arg("--reprocess-dead-letters")
            .arg("--reprocess-after=200ms")
            .arg(inbox.display().to_string()),
    )
    .await;

    // The service logs dead-letter paths relative to its working
    // directory.
    let named = Path::new("dead-letters").join(worn);
    watching
        .wait_for(
            "dead-letter file failed every automatic reprocessing round; watch no longer sends it, and later records of its keys are held behind it. Fix the cause its sidecar names, then run sluice reprocess on the dead-letter directory",
            Some(&named),
            1,
        )
        .await;
    watching
        .wait_for("dead-letter reprocessing done", None, 1)
        .await;
    // No further round starts for the retired file alone.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let stopped = watching.stop().await;

    assert_eq!(read_resources(&db).unwrap(), airports(&[("FFF", "Fresh")]));
    assert!(dead_letters.join(worn).exists(), "the retired file stays");
    let rounds = stopped.summary["reprocess_rounds"].as_u64();
    assert_eq!(rounds, Some(1), "{}", render(&stopped.log));
    target.shutdown().await;
}

#[tokio::test]
async fn directories_that_overlap_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = inbox(dir.path());
    let cases = [
        (
            "--dead-letter-dir",
            inbox.display().to_string(),
            "dead_letter_dir",
        ),
        ("--done-dir", "dead-letters".to_owned(), "watch.done_dir"),
        ("--done-dir", ".sluice".to_owned(), "watch.done_dir"),
    ];
    for (flag, value, key) in cases {
        let finished = watch(dir.path(), "http://127.0.0.1:9")
            .arg(format!("{flag}={value}"))
            .arg(inbox.display().to_string())
            .run()
            .await;
        assert_eq!(
            finished.code,
            Some(2),
            "{flag} {value}: {}",
            finished.stderr
        );
        assert!(finished.stderr.contains(key), "{}", finished.stderr);
        assert!(finished.stderr.contains("pass "), "{}", finished.stderr);
    }
}
