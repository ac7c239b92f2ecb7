//! Configuration layering, `--log-format`, and the exit statuses of bad
//! input, through the real binary.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::Value;
use sluice_tests::{write_file, Sluice};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

/// A server that responds with 503 twice, then 200.
async fn flaky() -> (MockServer, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let server = MockServer::start().await;
    let responder = move |_: &Request| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        ResponseTemplate::new(if n < 2 { 503 } else { 200 })
    };
    Mock::given(method("PUT"))
        .respond_with(responder)
        .mount(&server)
        .await;
    (server, calls)
}

fn input(dir: &std::path::Path) -> String {
    write_file(dir, "in.csv", "iata,name\nABQ,x\n")
        .display()
        .to_string()
}

#[tokio::test]
async fn config_file_supplies_every_option() {
    let dir = tempfile::tempdir().unwrap();
    let (server, calls) = flaky().await;
    let config = format!(
        "endpoint = \"{}\"\n\
         [plugin.config]\n\
         path = \"/airports/{{iata}}\"\n\
         [retry]\n\
         max_retries = 3\n",
        server.uri()
    );
    let config = write_file(dir.path(), "sluice.toml", &config);

    let finished = Sluice::new("run", dir.path())
        .arg("--config")
        .arg(config.display().to_string())
        .arg(input(dir.path()))
        .run()
        .await;

    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn environment_overrides_the_file_and_flags_override_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = flaky().await;
    let config = format!(
        "endpoint = \"{}\"\n[plugin.config]\npath = \"/a/{{iata}}\"\n[retry]\nmax_retries = 0\n",
        server.uri()
    );
    let config = write_file(dir.path(), "sluice.toml", &config);
    let config = config.display().to_string();

    // The file sets no retries and the environment sets five, so the
    // record survives two 503s.
    let env_wins = Sluice::new("run", dir.path())
        .arg("--config")
        .arg(&config)
        .env("SLUICE_RETRY_MAX_RETRIES", "5")
        .arg(input(dir.path()))
        .run()
        .await;
    assert_eq!(env_wins.code, Some(0), "{}", env_wins.stderr);

    let (server, _) = flaky().await;
    let flag_wins = Sluice::new("run", dir.path())
        .arg("--config")
        .arg(&config)
        .env("SLUICE_ENDPOINT", "http://127.0.0.1:9")
        .arg("--endpoint")
        .arg(server.uri())
        .env("SLUICE_RETRY_MAX_RETRIES", "5")
        .arg("--max-retries=0")
        .arg("--force")
        .arg(input(dir.path()))
        .run()
        .await;
    assert_eq!(flag_wins.code, Some(3), "{}", flag_wins.stderr);
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn plugin_config_comes_from_prefixed_variables() {
    let dir = tempfile::tempdir().unwrap();
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(wiremock::matchers::path("/env/ABQ"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;

    let finished = Sluice::new("run", dir.path())
        .env("SLUICE_ENDPOINT", &server.uri())
        .env("SLUICE_PLUGIN_CONFIG_PATH", "/env/{iata}")
        .arg(input(dir.path()))
        .run()
        .await;

    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
}

#[tokio::test]
async fn invalid_values_exit_2_naming_key_value_and_range() {
    let dir = tempfile::tempdir().unwrap();

    let finished = Sluice::new("run", dir.path())
        .arg("--endpoint=http://127.0.0.1:9")
        .arg("--concurrency=0")
        .arg("--backoff-multiplier=0.5")
        .plugin_config("path", "/a/{iata}")
        .arg(input(dir.path()))
        .run()
        .await;

    assert_eq!(finished.code, Some(2));
    let stderr = &finished.stderr;
    assert!(
        stderr.contains("invalid http.concurrency = 0: an integer from 1 to 1024"),
        "{stderr}"
    );
    assert!(
        stderr.contains("invalid retry.multiplier = 0.5"),
        "{stderr}"
    );
}

#[tokio::test]
async fn unknown_key_in_the_config_file_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_file(dir.path(), "bad.toml", "[retry]\nmax_retires = 3\n");

    let finished = Sluice::new("run", dir.path())
        .arg("--config")
        .arg(config.display().to_string())
        .arg(input(dir.path()))
        .run()
        .await;

    assert_eq!(finished.code, Some(2));
    assert!(finished.stderr.contains("bad.toml"), "{}", finished.stderr);
    assert!(
        finished.stderr.contains("max_retires"),
        "{}",
        finished.stderr
    );
}

#[tokio::test]
async fn plugin_rejecting_its_config_exits_2_with_its_message() {
    let dir = tempfile::tempdir().unwrap();

    let finished = Sluice::new("run", dir.path())
        .arg("--endpoint=http://127.0.0.1:9")
        .plugin_config("path", "no-leading-slash")
        .arg(input(dir.path()))
        .run()
        .await;

    assert_eq!(finished.code, Some(2), "{}", finished.stderr);
    assert!(finished.stderr.contains("path"), "{}", finished.stderr);
}

#[tokio::test]
async fn missing_input_file_exits_2() {
    let dir = tempfile::tempdir().unwrap();

    let finished = Sluice::new("run", dir.path())
        .arg("--endpoint=http://127.0.0.1:9")
        .plugin_config("path", "/a/{iata}")
        .arg("nope.csv")
        .run()
        .await;

    assert_eq!(finished.code, Some(2));
    assert!(finished.stderr.contains("nope.csv"), "{}", finished.stderr);
}

#[tokio::test]
async fn missing_plugin_exits_2() {
    let dir = tempfile::tempdir().unwrap();

    let finished = Sluice::new("run", dir.path())
        .plugin("missing.wasm")
        .arg("--endpoint=http://127.0.0.1:9")
        .arg(input(dir.path()))
        .run()
        .await;

    assert_eq!(finished.code, Some(2));
    assert!(
        finished.stderr.contains("missing.wasm"),
        "{}",
        finished.stderr
    );
}

#[tokio::test]
async fn file_the_plugin_cannot_read_exits_1_and_later_files_still_run() {
    let dir = tempfile::tempdir().unwrap();
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let wrong = write_file(dir.path(), "wrong.csv", "code,name\nX,y\n");
    let good = input(dir.path());

    let finished = Sluice::new("run", dir.path())
        .arg("--endpoint")
        .arg(server.uri())
        .plugin_config("path", "/a/{iata}")
        .arg(wrong.display().to_string())
        .arg(good)
        .run()
        .await;

    assert_eq!(finished.code, Some(1), "{}", finished.stderr);
    assert_eq!(finished.total("delivered"), 1);
    let files = finished.summary["files"].as_array().unwrap();
    let error = files[0]["error"].as_str().unwrap();
    assert!(error.contains("iata"), "{error}");
    assert!(finished.stdout.contains("wrong.csv"), "{}", finished.stdout);
}

#[tokio::test]
async fn plugin_info_lists_configuration_keys() {
    let output = tokio::process::Command::new(sluice_tests::sluice_bin())
        .arg("plugin")
        .arg("info")
        .arg(sluice_tests::csv_plugin())
        .output()
        .await
        .unwrap();

    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("name        csv"), "{stdout}");
    assert!(stdout.contains("path (required)"), "{stdout}");
    assert!(stdout.contains("null"), "{stdout}");
}

#[tokio::test]
async fn log_format_json_writes_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let (server, calls) = flaky().await;

    let finished = Sluice::new("run", dir.path())
        .arg("--log-format=json")
        .arg("--log-level=debug")
        .arg("--endpoint")
        .arg(server.uri())
        .plugin_config("path", "/airports/{iata}")
        .arg(input(dir.path()))
        .run()
        .await;

    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let lines: Vec<Value> = finished
        .stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}")))
        .collect();
    assert!(!lines.is_empty(), "no log lines");
    for line in &lines {
        assert!(line["timestamp"].is_string(), "{line}");
        assert!(line["level"].is_string(), "{line}");
        assert!(line["message"].is_string(), "{line}");
    }
    let retries: Vec<&Value> = lines
        .iter()
        .filter(|line| line["message"] == "retrying request")
        .collect();
    assert_eq!(retries.len(), 2, "{}", finished.stderr);
    let retry = retries[0];
    assert_eq!(retry["level"], "DEBUG");
    assert_eq!(retry["record"], 1);
    assert_eq!(retry["key"], "ABQ");
    assert_eq!(retry["attempt"], 1);
    assert_eq!(retry["spans"][0]["name"], "file");
    assert!(
        retry["spans"][0]["file"]
            .as_str()
            .is_some_and(|file| file.ends_with("in.csv")),
        "{retry}"
    );
}

#[tokio::test]
async fn log_format_comes_from_its_variable() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = flaky().await;

    let finished = Sluice::new("run", dir.path())
        .env("SLUICE_LOG_FORMAT", "json")
        .arg("--endpoint")
        .arg(server.uri())
        .plugin_config("path", "/airports/{iata}")
        .arg(input(dir.path()))
        .run()
        .await;

    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    let messages: Vec<Value> = finished
        .stderr
        .lines()
        .map(|line| {
            let parsed: Value =
                serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}"));
            parsed["message"].clone()
        })
        .collect();
    assert!(
        messages.contains(&Value::from("ingesting file")),
        "{}",
        finished.stderr
    );
}
