//! The real `sluice` binary and CSV plugin against scripted HTTP servers on
//! 127.0.0.1: retries, permanent faults, timeouts, resets, the circuit
//! breaker, per-key ordering, dead letters and exit statuses.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_tests::{dead_letter_files, write_file, Sluice};
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const AIRPORTS: &str = "iata,name,city\n\
                        ABQ,Albuquerque International,Albuquerque\n\
                        BOS,Logan International,Boston\n\
                        CHS,Charleston,Charleston\n";

/// Responds with the given statuses in turn, then repeats the last one,
/// and records when each request arrived and its body.
#[derive(Clone)]
struct Script {
    statuses: Arc<Vec<u16>>,
    delay: Duration,
    retry_after: Option<&'static str>,
    log: Arc<Mutex<Vec<(Instant, Value)>>>,
}

impl Script {
    fn new(statuses: &[u16]) -> Script {
        Script {
            statuses: Arc::new(statuses.to_vec()),
            delay: Duration::ZERO,
            retry_after: None,
            log: Arc::default(),
        }
    }

    fn arrivals(&self) -> Vec<(Instant, Value)> {
        self.log.lock().unwrap().clone()
    }
}

impl Respond for Script {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut log = self.log.lock().unwrap();
        let body = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        log.push((Instant::now(), body));
        let status = self.statuses[(log.len() - 1).min(self.statuses.len() - 1)];
        let mut response = ResponseTemplate::new(status).set_delay(self.delay);
        if let Some(value) = self.retry_after {
            response = response.insert_header("Retry-After", value);
        }
        response
    }
}

async fn serve(script: Script) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(script)
        .mount(&server)
        .await;
    server
}

fn run(dir: &std::path::Path, server: &MockServer) -> Sluice {
    Sluice::new("run", dir)
        .arg("--endpoint")
        .arg(server.uri())
        .plugin_config("key", "iata")
        .plugin_config("path", "/airports/{iata}")
}

fn one_airport(dir: &std::path::Path) -> String {
    let csv = "iata,name,city\nABQ,Albuquerque International,Albuquerque\n";
    write_file(dir, "one.csv", csv).display().to_string()
}

#[tokio::test]
async fn transient_statuses_are_retried_until_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let script = Script::new(&[503, 500, 200]);
    let server = serve(script.clone()).await;

    let finished = run(dir.path(), &server)
        .arg(one_airport(dir.path()))
        .run()
        .await;

    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    assert_eq!(finished.total("delivered"), 1);
    assert_eq!(finished.total("delivered_after_retries"), 1);
    assert_eq!(finished.total("retries"), 2);
    let arrivals = script.arrivals();
    assert_eq!(arrivals.len(), 3);
    let expected =
        json!({"iata": "ABQ", "name": "Albuquerque International", "city": "Albuquerque"});
    assert_eq!(arrivals[2].1, expected);
}

#[tokio::test]
async fn every_record_arrives_at_its_path_with_its_body() {
    let dir = tempfile::tempdir().unwrap();
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let input = write_file(dir.path(), "airports.csv", AIRPORTS);

    let finished = run(dir.path(), &server)
        .arg(input.display().to_string())
        .run()
        .await;

    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    let mut received: Vec<(String, Value)> = server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                r.url.path().to_owned(),
                serde_json::from_slice(&r.body).unwrap(),
            )
        })
        .collect();
    received.sort_by(|a, b| a.0.cmp(&b.0));
    let paths: Vec<&str> = received.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, ["/airports/ABQ", "/airports/BOS", "/airports/CHS"]);
    assert_eq!(received[1].1["name"], "Logan International");
}

#[tokio::test]
async fn permanent_status_goes_to_the_rejected_file_without_retry() {
    let dir = tempfile::tempdir().unwrap();
    let script = Script::new(&[400]);
    let server = serve(script.clone()).await;

    let finished = run(dir.path(), &server)
        .arg(one_airport(dir.path()))
        .run()
        .await;

    assert_eq!(finished.code, Some(3), "{}", finished.stderr);
    assert_eq!(script.arrivals().len(), 1);
    assert!(dead_letter_files(&dir.path().join("dead-letters"), "dead").is_empty());
    let rejected = dead_letter_files(&dir.path().join("dead-letters"), "rejected");
    assert_eq!(rejected.len(), 1);
    assert_eq!(
        rejected[0].contents,
        "iata,name,city\nABQ,Albuquerque International,Albuquerque\n"
    );
    let entry = &rejected[0].sidecar[0];
    assert_eq!(entry["status"], 400);
    assert_eq!(entry["attempts"], 1);
    assert_eq!(entry["kind"], "rejected");
    assert_eq!(entry["line"], 2);
}

#[tokio::test]
async fn exhausted_record_is_dead_lettered_with_its_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let script = Script::new(&[503]);
    let server = serve(script.clone()).await;
    let input = one_airport(dir.path());

    let finished = run(dir.path(), &server)
        .arg("--max-retries=2")
        .arg(&input)
        .run()
        .await;

    assert_eq!(finished.code, Some(3), "{}", finished.stderr);
    assert_eq!(script.arrivals().len(), 3);
    let dead = dead_letter_files(&dir.path().join("dead-letters"), "dead");
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].contents,
        "iata,name,city\nABQ,Albuquerque International,Albuquerque\n"
    );
    let entry = &dead[0].sidecar[0];
    assert_eq!(entry["source"], input);
    assert_eq!(entry["record"], 1);
    assert_eq!(entry["key"], "ABQ");
    assert_eq!(entry["attempts"], 3);
    assert_eq!(entry["status"], 503);
    assert!(entry["time"].as_str().unwrap().ends_with('Z'));
    assert!(
        finished.stderr.contains("record dead-lettered"),
        "{}",
        finished.stderr
    );
}

#[tokio::test]
async fn zero_max_retries_sends_once() {
    let dir = tempfile::tempdir().unwrap();
    let script = Script::new(&[503]);
    let server = serve(script.clone()).await;

    let finished = run(dir.path(), &server)
        .arg("--max-retries=0")
        .arg(one_airport(dir.path()))
        .run()
        .await;

    assert_eq!(finished.code, Some(3));
    assert_eq!(script.arrivals().len(), 1);
}

#[tokio::test]
async fn retry_after_seconds_delay_the_next_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let mut script = Script::new(&[429, 200]);
    script.retry_after = Some("1");
    let server = serve(script.clone()).await;

    let finished = run(dir.path(), &server)
        .arg(one_airport(dir.path()))
        .run()
        .await;

    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    let arrivals = script.arrivals();
    assert_eq!(arrivals.len(), 2);
    let gap = arrivals[1].0 - arrivals[0].0;
    assert!(gap >= Duration::from_millis(950), "retried after {gap:?}");
}

#[tokio::test]
async fn retry_after_is_capped_by_max_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut script = Script::new(&[503, 200]);
    script.retry_after = Some("3600");
    let server = serve(script.clone()).await;

    let finished = run(dir.path(), &server)
        .arg("--max-retry-after=100ms")
        .arg(one_airport(dir.path()))
        .run()
        .await;

    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    let arrivals = script.arrivals();
    let gap = arrivals[1].0 - arrivals[0].0;
    assert!(gap >= Duration::from_millis(90), "retried after {gap:?}");
    assert!(gap < Duration::from_secs(5), "retried after {gap:?}");
}

#[tokio::test]
async fn slow_response_times_out_and_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;

    let finished = run(dir.path(), &server)
        .arg("--timeout=300ms")
        .arg(one_airport(dir.path()))
        .run()
        .await;

    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    assert_eq!(finished.total("retries"), 1);
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

/// Accepts connections on 127.0.0.1; resets the first `resets` of them
/// with a TCP RST and responds to every later request with 204.
async fn resetting_server(resets: usize) -> (String, Arc<Mutex<usize>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(Mutex::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let n = {
                let mut count = counter.lock().unwrap();
                *count += 1;
                *count
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                if n <= resets {
                    let _ = stream.read(&mut buf).await;
                    let socket = socket2::SockRef::from(&stream);
                    socket.set_linger(Some(Duration::ZERO)).unwrap();
                    drop(stream);
                    return;
                }
                while let Ok(read) = stream.read(&mut buf).await {
                    if read == 0 {
                        return;
                    }
                    let reply = b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n";
                    if stream.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, accepted)
}

#[tokio::test]
async fn connection_reset_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (url, accepted) = resetting_server(2).await;

    let finished = Sluice::new("run", dir.path())
        .arg("--endpoint")
        .arg(url)
        .plugin_config("path", "/airports/{iata}")
        .arg(one_airport(dir.path()))
        .run()
        .await;

    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    assert_eq!(finished.total("retries"), 2);
    assert_eq!(*accepted.lock().unwrap(), 3);
}

#[tokio::test]
async fn refused_connection_is_dead_lettered_after_retries() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);

    let finished = Sluice::new("run", dir.path())
        .arg("--endpoint")
        .arg(url)
        .arg("--max-retries=1")
        .plugin_config("path", "/airports/{iata}")
        .arg(one_airport(dir.path()))
        .run()
        .await;

    assert_eq!(finished.code, Some(3), "{}", finished.stderr);
    let dead = dead_letter_files(&dir.path().join("dead-letters"), "dead");
    let error = dead[0].sidecar[0]["error"].as_str().unwrap().to_owned();
    assert!(error.starts_with("connection failed"), "{error}");
    assert_eq!(dead[0].sidecar[0]["status"], Value::Null);
}

#[tokio::test]
async fn dead_letters_reprocess_once_the_api_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let down = serve(Script::new(&[503])).await;
    let input = write_file(dir.path(), "airports.csv", AIRPORTS);

    let first = run(dir.path(), &down)
        .arg("--max-retries=0")
        .arg("--failure-threshold=100")
        .arg(input.display().to_string())
        .run()
        .await;
    assert_eq!(first.code, Some(3), "{}", first.stderr);
    assert_eq!(first.total("dead_lettered"), 3);

    let up = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(201))
        .mount(&up)
        .await;
    let second = Sluice::new("reprocess", dir.path())
        .arg("--endpoint")
        .arg(up.uri())
        .plugin_config("key", "iata")
        .plugin_config("path", "/airports/{iata}")
        .arg("dead-letters")
        .run()
        .await;

    assert_eq!(second.code, Some(0), "{}", second.stderr);
    assert_eq!(second.total("delivered"), 3);
    let mut paths: Vec<String> = up
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.url.path().to_owned())
        .collect();
    paths.sort();
    assert_eq!(paths, ["/airports/ABQ", "/airports/BOS", "/airports/CHS"]);
    let left: Vec<_> = std::fs::read_dir(dir.path().join("dead-letters"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "dead-letter files left behind: {left:?}");
}

#[tokio::test]
async fn reprocess_keeps_failures_in_a_new_file_with_the_original_origin() {
    let dir = tempfile::tempdir().unwrap();
    let down = serve(Script::new(&[503])).await;
    let input = one_airport(dir.path());
    let first = run(dir.path(), &down)
        .arg("--max-retries=0")
        .arg(&input)
        .run()
        .await;
    assert_eq!(first.code, Some(3));
    let before = dead_letter_files(&dir.path().join("dead-letters"), "dead");

    let second = Sluice::new("reprocess", dir.path())
        .arg("--endpoint")
        .arg(down.uri())
        .arg("--max-retries=0")
        .plugin_config("key", "iata")
        .plugin_config("path", "/airports/{iata}")
        .arg("dead-letters")
        .run()
        .await;

    assert_eq!(second.code, Some(3), "{}", second.stderr);
    let after = dead_letter_files(&dir.path().join("dead-letters"), "dead");
    assert_eq!(after.len(), 1);
    assert_ne!(
        after[0].path, before[0].path,
        "the input file should be replaced"
    );
    assert_eq!(after[0].contents, before[0].contents);
    assert_eq!(after[0].sidecar[0]["source"], input);
    assert_eq!(after[0].sidecar[0]["line"], 2);
}

#[tokio::test]
async fn rejected_files_are_reprocessed_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let csv = "iata,name,city\nABQ,Albuquerque,Albuquerque\nBAD,row\n";
    let input = write_file(dir.path(), "mixed.csv", csv);
    let up = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&up)
        .await;
    let first = run(dir.path(), &up)
        .arg(input.display().to_string())
        .run()
        .await;
    assert_eq!(first.code, Some(3));
    assert_eq!(first.total("rejected"), 1);

    let without = Sluice::new("reprocess", dir.path())
        .arg("--endpoint")
        .arg(up.uri())
        .plugin_config("path", "/airports/{iata}")
        .arg("dead-letters")
        .run()
        .await;
    assert_eq!(without.code, Some(0), "{}", without.stderr);
    assert_eq!(without.total("records"), 0);

    let with = Sluice::new("reprocess", dir.path())
        .arg("--endpoint")
        .arg(up.uri())
        .arg("--include-rejected")
        .plugin_config("path", "/airports/{iata}")
        .arg("dead-letters")
        .run()
        .await;
    // The row is still malformed, so it is rejected again into a new file.
    assert_eq!(with.code, Some(3), "{}", with.stderr);
    assert_eq!(with.total("rejected"), 1);
    let rejected = dead_letter_files(&dir.path().join("dead-letters"), "rejected");
    assert_eq!(rejected.len(), 1);
    assert_eq!(
        rejected[0].sidecar[0]["source"],
        input.display().to_string()
    );
    assert_eq!(rejected[0].sidecar[0]["line"], 3);
}

#[tokio::test]
async fn malformed_rows_are_rejected_without_shifting_later_rows() {
    let dir = tempfile::tempdir().unwrap();
    let csv = "iata,name,city\nABQ,A,B\nshort,row\nBOS,\"Logan, Intl\",Boston\n";
    let input = write_file(dir.path(), "bad.csv", csv);
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;

    let finished = run(dir.path(), &server)
        .arg(input.display().to_string())
        .run()
        .await;

    assert_eq!(finished.code, Some(3));
    assert_eq!(finished.total("delivered"), 2);
    assert_eq!(finished.total("rejected"), 1);
    let bos = server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.url.path() == "/airports/BOS")
        .expect("BOS was sent");
    let body: Value = serde_json::from_slice(&bos.body).unwrap();
    assert_eq!(body["name"], "Logan, Intl");
    let rejected = dead_letter_files(&dir.path().join("dead-letters"), "rejected");
    let error = rejected[0].sidecar[0]["error"].as_str().unwrap();
    assert!(error.contains("expected 3 fields, found 2"), "{error}");
}

#[tokio::test]
async fn breaker_opens_pauses_and_probes_once() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<Mutex<Vec<(Instant, u16)>>> = Arc::default();
    let outage_until = Instant::now() + Duration::from_millis(1500);
    let responder = {
        let log = log.clone();
        move |_: &Request| {
            let status = if Instant::now() < outage_until {
                503
            } else {
                200
            };
            log.lock().unwrap().push((Instant::now(), status));
            ResponseTemplate::new(status).set_delay(Duration::from_millis(50))
        }
    };
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(responder)
        .mount(&server)
        .await;
    let rows: String = (0..40)
        .map(|n| format!("K{n:02},name {n},city\n"))
        .collect();
    let input = write_file(dir.path(), "many.csv", &format!("iata,name,city\n{rows}"));

    let finished = run(dir.path(), &server)
        .arg("--max-retries=0")
        .arg("--concurrency=4")
        .arg("--failure-threshold=3")
        .arg("--open-duration=1s")
        .arg(input.display().to_string())
        .run()
        .await;

    assert_eq!(finished.code, Some(3), "{}", finished.stderr);
    assert!(finished.summary["breaker_openings"].as_u64().unwrap() >= 1);
    assert!(
        finished.stderr.contains("circuit breaker opened"),
        "{}",
        finished.stderr
    );
    assert!(
        finished.stderr.contains("circuit breaker closed"),
        "{}",
        finished.stderr
    );
    assert_eq!(
        finished.total("delivered") + finished.total("dead_lettered"),
        40
    );

    let log = log.lock().unwrap().clone();
    // The open breaker leaves a gap of at least its open duration.
    let gaps: Vec<Duration> = log.windows(2).map(|w| w[1].0 - w[0].0).collect();
    let pause = gaps
        .iter()
        .position(|gap| *gap >= Duration::from_millis(900));
    let pause = pause.expect("no pause of the open duration between requests");
    // The first request after the pause is the probe: it is alone on the
    // wire, so the next one starts after its 50 ms response.
    assert!(
        gaps[pause + 1] >= Duration::from_millis(45),
        "gaps {gaps:?}"
    );
    // Requests that were in flight when it opened were not dead-lettered
    // for that reason: only the threshold's failures and failed probes are.
    let failed_probes = finished.summary["breaker_openings"].as_u64().unwrap() - 1;
    assert!(
        finished.total("dead_lettered") <= 3 + failed_probes,
        "{}",
        finished.stdout
    );
}

#[tokio::test]
async fn same_key_records_are_sent_one_at_a_time_in_file_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut script = Script::new(&[200]);
    script.delay = Duration::from_millis(40);
    let server = serve(script.clone()).await;
    let rows: String = (1..=6).map(|n| format!("ABQ,version {n},x\n")).collect();
    let input = write_file(dir.path(), "same.csv", &format!("iata,name,city\n{rows}"));

    let finished = run(dir.path(), &server)
        .arg("--concurrency=8")
        .arg(input.display().to_string())
        .run()
        .await;

    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    let arrivals = script.arrivals();
    let names: Vec<&str> = arrivals
        .iter()
        .map(|(_, b)| b["name"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (1..=6).map(|n| format!("version {n}")).collect();
    assert_eq!(names, expected);
    for pair in arrivals.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(
            gap >= Duration::from_millis(35),
            "overlapping same-key requests: {gap:?}"
        );
    }
}

#[tokio::test]
async fn later_records_of_a_dead_lettered_key_follow_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(body_string_contains("first"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let csv = "iata,name,city\nABQ,first,x\nBOS,other,x\nABQ,second,x\n";
    let input = write_file(dir.path(), "poison.csv", csv);

    let finished = run(dir.path(), &server)
        .arg("--max-retries=1")
        .arg(input.display().to_string())
        .run()
        .await;

    assert_eq!(finished.code, Some(3), "{}", finished.stderr);
    let sent: Vec<String> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert!(
        !sent.iter().any(|body| body.contains("second")),
        "stale order risk: {sent:?}"
    );
    let dead = dead_letter_files(&dir.path().join("dead-letters"), "dead");
    assert_eq!(
        dead[0].contents,
        "iata,name,city\nABQ,first,x\nABQ,second,x\n"
    );
    assert_eq!(dead[0].sidecar[1]["attempts"], 0);
}

#[tokio::test]
async fn header_values_come_from_the_environment_and_stay_out_of_logs() {
    let dir = tempfile::tempdir().unwrap();
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(wiremock::matchers::header(
            "authorization",
            "Bearer t0ps3cret",
        ))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;

    let finished = run(dir.path(), &server)
        .arg("--header")
        .arg("Authorization: Bearer ${API_TOKEN}")
        .arg("--max-retries=1")
        .arg("--log-level=debug")
        .env("API_TOKEN", "t0ps3cret")
        .arg(one_airport(dir.path()))
        .run()
        .await;

    assert_eq!(
        server.received_requests().await.unwrap().len(),
        2,
        "{}",
        finished.stderr
    );
    assert!(!finished.stderr.contains("t0ps3cret"));
    assert!(!finished.stdout.contains("t0ps3cret"));
    let sidecars = dead_letter_files(&dir.path().join("dead-letters"), "dead");
    assert!(!format!("{:?}", sidecars[0].sidecar).contains("t0ps3cret"));
}

#[tokio::test]
async fn endpoint_credentials_stay_out_of_logs() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);

    let finished = Sluice::new("run", dir.path())
        .arg("--endpoint")
        .arg(format!("http://user:hunter2@{addr}"))
        .arg("--max-retries=1")
        .arg("--log-level=debug")
        .plugin_config("path", "/airports/{iata}")
        .arg(one_airport(dir.path()))
        .run()
        .await;

    assert_eq!(finished.code, Some(3));
    assert!(!finished.stderr.contains("hunter2"), "{}", finished.stderr);
    let dead = dead_letter_files(&dir.path().join("dead-letters"), "dead");
    assert!(!format!("{:?}", dead[0].sidecar).contains("hunter2"));
}

#[tokio::test]
async fn post_method_and_paths_with_reserved_characters() {
    let dir = tempfile::tempdir().unwrap();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/places/a%2Fb%20c"))
        .respond_with(ResponseTemplate::new(201))
        .mount(&server)
        .await;
    let input = write_file(dir.path(), "odd.csv", "id,name\na/b c,x\n");

    let finished = Sluice::new("run", dir.path())
        .arg("--endpoint")
        .arg(server.uri())
        .plugin_config("path", "/places/{id}")
        .plugin_config("method", "post")
        .arg(input.display().to_string())
        .run()
        .await;

    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
}

/// Returns the URL of a port on 127.0.0.1 that refuses connections.
fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

#[tokio::test]
async fn proxy_from_the_environment_carries_the_requests() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path("/airports/ABQ"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&proxy)
        .await;
    // The endpoint refuses connections, so only the proxy can deliver.
    let endpoint = closed_port();

    let finished = Sluice::new("run", dir.path())
        .arg("--endpoint")
        .arg(endpoint.clone())
        .plugin_config("path", "/airports/{iata}")
        .env("HTTP_PROXY", &proxy.uri())
        .env("NO_PROXY", "")
        .arg(one_airport(dir.path()))
        .run()
        .await;

    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    let received = proxy.received_requests().await.unwrap();
    assert_eq!(received.len(), 1);
    // A proxy gets the whole URL in the request line.
    assert_eq!(received[0].url.as_str(), format!("{endpoint}/airports/ABQ"));
}

#[tokio::test]
async fn no_proxy_sends_around_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let script = Script::new(&[204]);
    let server = serve(script.clone()).await;

    let finished = run(dir.path(), &server)
        .env("HTTP_PROXY", &closed_port())
        .env("NO_PROXY", "127.0.0.1")
        .arg(one_airport(dir.path()))
        .run()
        .await;

    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}
