//! Configuration layering, `sluice config check` and `config show`,
//! `--log-format`, and the exit statuses of bad input, through the real
//! binary.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::Value;
use sluice_tests::{csv_plugin, write_file, Sluice};
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
        stderr.contains("invalid http.concurrency = 0: an integer from 1 to 1024, or \"adaptive\""),
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

/// What a finished `sluice config` command left.
struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `sluice config ARGS...` in `dir` with the variables `envs` and no
/// other `SLUICE_*` variable.
async fn config(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(sluice_tests::sluice_bin());
    command
        .arg("config")
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .kill_on_drop(true);
    for (name, _) in std::env::vars() {
        if name.starts_with("SLUICE_") {
            command.env_remove(name);
        }
    }
    for (name, value) in envs {
        command.env(name, value);
    }
    let output = command.output().await.expect("sluice starts");
    Output {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Writes `sluice.toml` in `dir`: a valid configuration with the CSV
/// plugin, followed by `extra` lines.
fn config_file(dir: &Path, extra: &str) -> String {
    let text = format!(
        "endpoint = \"http://127.0.0.1:9\"\n\
         [plugin]\n\
         path = {:?}\n\
         [plugin.config]\n\
         key = \"iata\"\n\
         path = \"/airports/{{iata}}\"\n\
         {extra}",
        csv_plugin().display().to_string()
    );
    write_file(dir, "sluice.toml", &text).display().to_string()
}

/// Returns the lines of `text` that start with `error: `.
fn error_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|line| line.starts_with("error: "))
        .collect()
}

#[tokio::test]
async fn config_check_accepts_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = config_file(dir.path(), "");

    let checked = config(dir.path(), &["check", "--config", &file], &[]).await;

    assert_eq!(checked.code, Some(0), "{}", checked.stderr);
    let line = checked.stdout.trim_end();
    assert!(line.starts_with("configuration is valid ("), "{line}");
    assert!(line.contains("sluice.toml"), "{line}");
    assert!(line.contains("plugin csv"), "{line}");
    assert!(line.contains("accepted plugin.config"), "{line}");
    assert_eq!(checked.stdout.lines().count(), 1, "{}", checked.stdout);
}

#[tokio::test]
async fn config_check_lists_every_bad_value() {
    let dir = tempfile::tempdir().unwrap();
    let file = config_file(
        dir.path(),
        "[http]\nconcurrency = 0\n[retry]\nmultiplier = 0.5\n[breaker]\nfailure_threshold = 0\n",
    );

    let checked = config(dir.path(), &["check", "--config", &file], &[]).await;

    assert_eq!(checked.code, Some(2), "{}", checked.stderr);
    let errors = error_lines(&checked.stderr);
    assert_eq!(errors.len(), 3, "{}", checked.stderr);
    assert!(
        errors[0]
            .contains("invalid http.concurrency = 0: an integer from 1 to 1024, or \"adaptive\""),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].contains("invalid retry.multiplier = 0.5: a number from 1.0 to 100.0"),
        "{}",
        errors[1]
    );
    assert!(
        errors[2].contains("invalid breaker.failure_threshold = 0"),
        "{}",
        errors[2]
    );
    for line in &errors {
        assert!(line.ends_with("/sluice.toml)"), "{line}");
    }
    assert!(
        checked
            .stderr
            .contains("configuration is invalid: 3 problems"),
        "{}",
        checked.stderr
    );
    assert!(checked.stdout.is_empty(), "{}", checked.stdout);
}

#[tokio::test]
async fn config_check_names_syntax_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(
        dir.path(),
        "broken.toml",
        "endpoint = \"http://127.0.0.1:9\"\n[retry]\nmax_retries = = 3\n",
    );
    let file = file.display().to_string();

    let checked = config(dir.path(), &["check", "--config", &file], &[]).await;

    assert_eq!(checked.code, Some(2), "{}", checked.stderr);
    let first = checked.stderr.lines().next().unwrap_or_default();
    assert!(first.contains("broken.toml"), "{first}");
    assert!(first.contains("line 3"), "{first}");
    assert!(
        checked.stderr.contains("3 | max_retries = = 3"),
        "{}",
        checked.stderr
    );
}

#[tokio::test]
async fn config_check_names_an_unknown_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = config_file(dir.path(), "[retry]\nmax_retires = 3\n");

    let checked = config(dir.path(), &["check", "--config", &file], &[]).await;

    assert_eq!(checked.code, Some(2), "{}", checked.stderr);
    let first = checked.stderr.lines().next().unwrap_or_default();
    assert!(first.contains("sluice.toml, line 8"), "{first}");
    assert!(first.contains("key retry.max_retires"), "{first}");
}

#[tokio::test]
async fn config_check_layers_env_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let bad_file = config_file(
        dir.path(),
        "[http]\nconcurrency = 0\n[retry]\nmultiplier = 0.5\n",
    );

    // The variable fixes one bad value of the file, and the flag the other.
    let fixed = config(
        dir.path(),
        &["check", "--config", &bad_file, "--backoff-multiplier", "3"],
        &[("SLUICE_HTTP_CONCURRENCY", "4")],
    )
    .await;
    assert_eq!(fixed.code, Some(0), "{}", fixed.stderr);

    // A flag beats a valid variable with a bad value, and a bad variable
    // beats a valid file.
    let good_file = config_file(dir.path(), "[http]\nconcurrency = 8\n");
    let broken = config(
        dir.path(),
        &["check", "--config", &good_file, "--max-retries", "500"],
        &[
            ("SLUICE_RETRY_MAX_RETRIES", "2"),
            ("SLUICE_HTTP_CONCURRENCY", "5000"),
        ],
    )
    .await;
    assert_eq!(broken.code, Some(2), "{}", broken.stderr);
    let errors = error_lines(&broken.stderr);
    assert_eq!(errors.len(), 2, "{}", broken.stderr);
    assert_eq!(
        errors[0],
        "error: invalid http.concurrency = 5000: an integer from 1 to 1024, or \"adaptive\" \
         (set by SLUICE_HTTP_CONCURRENCY)"
    );
    assert_eq!(
        errors[1],
        "error: invalid retry.max_retries = 500: an integer from 0 to 100 (set by a flag)"
    );
}

#[tokio::test]
async fn config_check_reports_what_the_plugin_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let file = config_file(dir.path(), "");
    let args = [
        "check",
        "--config",
        &file,
        "--plugin-config",
        "path=no-leading-slash",
    ];

    let checked = config(dir.path(), &args, &[]).await;

    assert_eq!(checked.code, Some(2), "{}", checked.stderr);
    let errors = error_lines(&checked.stderr);
    assert_eq!(errors.len(), 1, "{}", checked.stderr);
    assert!(
        errors[0].contains("plugin csv rejected its configuration"),
        "{}",
        errors[0]
    );
    assert!(errors[0].contains("no-leading-slash"), "{}", errors[0]);
    assert!(
        checked.stderr.contains("1 problem (file "),
        "{}",
        checked.stderr
    );
    assert!(
        checked.stderr.contains("rejected plugin.config)"),
        "{}",
        checked.stderr
    );

    let mut skipped_args = args.to_vec();
    skipped_args.push("--no-plugin-check");
    let skipped = config(dir.path(), &skipped_args, &[]).await;
    assert_eq!(skipped.code, Some(0), "{}", skipped.stderr);
    assert!(
        skipped
            .stdout
            .contains("plugin not checked: --no-plugin-check"),
        "{}",
        skipped.stdout
    );
}

#[tokio::test]
async fn config_check_reports_a_missing_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let file = config_file(dir.path(), "");

    let checked = config(
        dir.path(),
        &["check", "--config", &file, "--plugin", "missing.wasm"],
        &[],
    )
    .await;

    assert_eq!(checked.code, Some(2), "{}", checked.stderr);
    assert!(
        checked.stderr.contains("plugin missing.wasm not found"),
        "{}",
        checked.stderr
    );
    assert!(
        checked.stderr.contains("plugin failed to load"),
        "{}",
        checked.stderr
    );
}

/// Returns the arguments and variables of the provenance tests, in which
/// each layer sets some keys, a few of them to the value of the layer below.
fn layered(dir: &Path) -> (Vec<String>, Vec<(&'static str, &'static str)>) {
    let file = config_file(
        dir,
        "[http]\nconcurrency = 16\ntimeout = \"20s\"\n[retry]\nmax_retries = 1\n",
    );
    let args = [
        "--config",
        &file,
        "--max-retries",
        "2",
        "--open-duration",
        "30s",
        "--plugin-config",
        "null=NA",
    ];
    let envs = vec![
        ("SLUICE_HTTP_TIMEOUT", "5s"),
        ("SLUICE_RETRY_MAX_RETRIES", "3"),
        ("SLUICE_PLUGIN_CONFIG_PATH", "/env/{iata}"),
        ("SLUICE_INPUT_CHUNK_SIZE", "65536"),
    ];
    (args.map(str::to_owned).to_vec(), envs)
}

#[tokio::test]
async fn config_show_json_names_sources() {
    let dir = tempfile::tempdir().unwrap();
    let (args, envs) = layered(dir.path());
    let mut show_args = vec!["show", "--format", "json"];
    show_args.extend(args.iter().map(String::as_str));

    let printed = config(dir.path(), &show_args, &envs).await;

    assert_eq!(printed.code, Some(0), "{}", printed.stderr);
    let keys: Value = serde_json::from_str(&printed.stdout).expect("config show prints JSON");
    let entry = |key: &str| keys[key].clone();
    assert_eq!(
        entry("breaker.failure_threshold"),
        serde_json::json!({"value": 5, "source": "default"})
    );
    // The file repeats the default, and still counts.
    assert_eq!(
        entry("http.concurrency"),
        serde_json::json!({"value": 16, "source": "file"})
    );
    assert_eq!(
        entry("plugin.config.key"),
        serde_json::json!({"value": "iata", "source": "file"})
    );
    assert_eq!(
        entry("http.timeout"),
        serde_json::json!({"value": "5s", "source": "env", "variable": "SLUICE_HTTP_TIMEOUT"})
    );
    assert_eq!(
        entry("plugin.config.path"),
        serde_json::json!({
            "value": "/env/{iata}",
            "source": "env",
            "variable": "SLUICE_PLUGIN_CONFIG_PATH"
        })
    );
    // The variable repeats the default, and still counts.
    assert_eq!(
        entry("input.chunk_size"),
        serde_json::json!({
            "value": 65536,
            "source": "env",
            "variable": "SLUICE_INPUT_CHUNK_SIZE"
        })
    );
    assert_eq!(
        entry("retry.max_retries"),
        serde_json::json!({"value": 2, "source": "flag"})
    );
    assert_eq!(
        entry("breaker.open_duration"),
        serde_json::json!({"value": "30s", "source": "flag"})
    );
    assert_eq!(
        entry("plugin.config.null"),
        serde_json::json!({"value": "NA", "source": "flag"})
    );
    assert_eq!(
        entry("retry.jitter_seed"),
        serde_json::json!({"value": null, "source": "default"})
    );
    assert_eq!(
        entry("dead_letter_dir"),
        serde_json::json!({"value": "dead-letters", "source": "default"})
    );
}

#[tokio::test]
async fn config_show_toml_is_the_effective_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let (args, envs) = layered(dir.path());
    let mut show_args = vec!["show"];
    show_args.extend(args.iter().map(String::as_str));

    let printed = config(dir.path(), &show_args, &envs).await;

    assert_eq!(printed.code, Some(0), "{}", printed.stderr);
    let text = &printed.stdout;
    let lines: Vec<&str> = text.lines().collect();
    let line = |start: &str| -> String {
        let found = lines.iter().find(|line| line.starts_with(start));
        found
            .unwrap_or_else(|| panic!("no line {start:?} in\n{text}"))
            .to_string()
    };
    assert!(line("concurrency = 16 ").ends_with("# file"), "{text}");
    assert!(
        line("timeout = \"5s\" ").ends_with("# env SLUICE_HTTP_TIMEOUT"),
        "{text}"
    );
    assert!(line("max_retries = 2 ").ends_with("# flag"), "{text}");
    assert!(line("null = \"NA\" ").ends_with("# flag"), "{text}");
    assert!(
        line("chunk_size = 65536 ").ends_with("# env SLUICE_INPUT_CHUNK_SIZE"),
        "{text}"
    );
    assert!(
        line("failure_threshold = 5 ").ends_with("# default"),
        "{text}"
    );
    assert!(
        line("# jitter_seed (unset) ").ends_with("# default"),
        "{text}"
    );

    // The output is a configuration file that gives the same values.
    let parsed: toml::Table = toml::from_str(text).expect("config show prints TOML");
    assert_eq!(parsed["http"]["concurrency"].as_integer(), Some(16));
    assert_eq!(parsed["retry"]["max_retries"].as_integer(), Some(2));
    assert_eq!(
        parsed["plugin"]["config"]["path"].as_str(),
        Some("/env/{iata}")
    );
    let copy = write_file(dir.path(), "copy.toml", text);
    let copy = copy.display().to_string();
    let checked = config(dir.path(), &["check", "--config", &copy], &[]).await;
    assert_eq!(checked.code, Some(0), "{}", checked.stderr);
}

#[tokio::test]
async fn config_show_masks_header_values_and_url_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let file = config_file(
        dir.path(),
        "[http.headers]\nAuthorization = \"Bearer file-secret\"\n",
    );
    let args = [
        "--config",
        &file,
        "--endpoint",
        "http://user:url-secret@127.0.0.1:9/api",
        "--header",
        "X-Flag: flag-secret",
    ];
    let envs = [("SLUICE_HTTP_HEADER_X_API_KEY", "env-secret")];

    for format in ["toml", "json"] {
        let mut show_args = vec!["show", "--format", format];
        show_args.extend(args);

        let printed = config(dir.path(), &show_args, &envs).await;

        assert_eq!(printed.code, Some(0), "{}", printed.stderr);
        let out = &printed.stdout;
        for secret in ["file-secret", "url-secret", "flag-secret", "env-secret"] {
            assert!(!out.contains(secret), "{format} shows {secret}:\n{out}");
        }
        assert!(out.contains("http://user:***@127.0.0.1:9/api"), "{out}");
        if format == "json" {
            let keys: Value = serde_json::from_str(out).unwrap();
            for key in ["Authorization", "x-api-key", "X-Flag"] {
                let value = &keys[format!("http.headers.{key}")]["value"];
                assert_eq!(value, "***", "{key} in\n{out}");
            }
            let source = &keys["http.headers.x-api-key"]["variable"];
            assert_eq!(source, "SLUICE_HTTP_HEADER_X_API_KEY");
        } else {
            assert!(out.contains("Authorization = \"***\""), "{out}");
            assert!(out.contains("x-api-key = \"***\""), "{out}");
            assert!(out.contains("X-Flag = \"***\""), "{out}");
        }
    }
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
