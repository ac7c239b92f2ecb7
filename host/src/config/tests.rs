use std::collections::BTreeSet;

use serde_json::Value;

use super::*;

/// The reference of every key, which the tests below keep in sync.
const REFERENCE: &str = include_str!("../../../docs/configuration.md");

/// Returns the cells of each row of the "Keys" table in
/// `docs/configuration.md`, with the backticks around the key removed.
pub(crate) fn documented_rows() -> Vec<Vec<String>> {
    let section = REFERENCE
        .split("\n## ")
        .find(|section| section.starts_with("Keys\n"))
        .expect("docs/configuration.md has a \"## Keys\" section");
    let mut rows: Vec<Vec<String>> = section
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells = line.trim().trim_matches('|').split('|');
            cells.map(|cell| cell.trim().to_owned()).collect()
        })
        .collect();
    for row in &mut rows {
        row[0] = row[0].trim_matches('`').to_owned();
    }
    rows
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn minimal() -> Config {
    Config {
        endpoint: Some("http://127.0.0.1:8080/api".to_owned()),
        plugin: PluginConfig {
            path: Some(PathBuf::from("plugins/csv.wasm")),
            ..PluginConfig::default()
        },
        ..Config::default()
    }
}

fn problem_keys(config: &Config) -> Vec<String> {
    match config.validate(no_env) {
        Ok(_) => Vec::new(),
        Err(ConfigErrors(problems)) => problems.into_iter().map(|p| p.key).collect(),
    }
}

#[test]
fn defaults_validate_once_required_keys_are_set() {
    let settings = minimal().validate(no_env).unwrap();
    assert_eq!(settings.http.concurrency.get(), DEFAULT_CONCURRENCY);
    assert_eq!(settings.retry.max_retries, DEFAULT_MAX_RETRIES);
    assert_eq!(settings.breaker.open_duration, DEFAULT_OPEN_DURATION);
    assert_eq!(settings.dead_letter_dir, PathBuf::from("dead-letters"));
}

#[test]
fn missing_endpoint_and_plugin_are_both_reported() {
    assert_eq!(
        problem_keys(&Config::default()),
        ["endpoint", "plugin.path"]
    );
}

#[test]
fn every_bad_value_is_reported_at_once() {
    let mut config = minimal();
    config.http.concurrency = 0.into();
    config.retry.multiplier = 0.5;
    config.retry.max_backoff = Duration::from_millis(1);
    config.breaker.failure_threshold = 0;
    config.input.chunk_size = 10;

    let keys = problem_keys(&config);

    let expected = [
        "http.concurrency",
        "retry.multiplier",
        "retry.max_backoff",
        "breaker.failure_threshold",
        "input.chunk_size",
    ];
    assert_eq!(keys, expected);
}

#[test]
fn problem_names_key_value_and_allowed_range() {
    let mut config = minimal();
    config.http.concurrency = 5000.into();
    let err = config.validate(no_env).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid http.concurrency = 5000: an integer from 1 to 1024, or \"adaptive\""
    );
}

#[test]
fn endpoint_must_be_http() {
    let mut config = minimal();
    config.endpoint = Some("ftp://example.invalid/".to_owned());
    assert_eq!(problem_keys(&config), ["endpoint"]);
    config.endpoint = Some("not a url".to_owned());
    assert_eq!(problem_keys(&config), ["endpoint"]);
    config.endpoint = Some("http://127.0.0.1:1/?q=1".to_owned());
    assert_eq!(problem_keys(&config), ["endpoint"]);
}

#[test]
fn endpoint_password_is_masked_in_problems() {
    let mut config = minimal();
    config.endpoint = Some("ftp://user:hunter2@127.0.0.1/".to_owned());
    let err = config.validate(no_env).unwrap_err().to_string();
    assert!(!err.contains("hunter2"), "{err}");
    assert!(err.contains("***"), "{err}");
}

#[test]
fn header_values_expand_environment_variables() {
    let mut config = minimal();
    config
        .http
        .headers
        .insert("Authorization".to_owned(), "Bearer ${API_TOKEN}".to_owned());
    let lookup = |name: &str| (name == "API_TOKEN").then(|| "abc".to_owned());

    let settings = config.validate(lookup).unwrap();

    let (name, value) = &settings.http.headers[0];
    assert_eq!(name.as_str(), "authorization");
    assert_eq!(value.to_str().unwrap(), "Bearer abc");
    assert!(value.is_sensitive());
}

#[test]
fn unset_header_variable_is_a_problem_without_the_value() {
    let mut config = minimal();
    config
        .http
        .headers
        .insert("Authorization".to_owned(), "Bearer ${API_TOKEN}".to_owned());
    let err = config.validate(no_env).unwrap_err();
    let problem = &err.0[0];
    assert_eq!(problem.key, "http.headers.Authorization");
    assert!(problem.allowed.contains("API_TOKEN"));
    assert!(!problem.value.contains("Bearer"));
}

#[test]
fn toml_file_fills_nested_tables() {
    let text = r#"
        endpoint = "http://127.0.0.1:9000"
        [plugin]
        path = "p.wasm"
        [plugin.config]
        key = "iata"
        [retry]
        max_retries = 2
        initial_backoff = "250ms"
        [breaker]
        open_duration = "1m"
    "#;
    let config: Config = toml::from_str(text).unwrap();
    let settings = config.validate(no_env).unwrap();
    assert_eq!(settings.retry.max_retries, 2);
    assert_eq!(settings.retry.backoff.initial, Duration::from_millis(250));
    assert_eq!(settings.breaker.open_duration, Duration::from_secs(60));
    assert_eq!(
        settings.plugin_config,
        [("key".to_owned(), "iata".to_owned())]
    );
    assert_eq!(settings.http.timeout, DEFAULT_TIMEOUT);
}

#[test]
fn concurrency_is_a_number_or_adaptive() {
    let parse = |text: &str| toml::from_str::<Config>(text).map(|c| c.http.concurrency);
    assert_eq!(parse("[http]\nconcurrency = 8\n").unwrap(), 8.into());
    let adaptive = parse("[http]\nconcurrency = \"adaptive\"\n").unwrap();
    assert_eq!(adaptive, Concurrency::Adaptive);
    for bad in ["\"many\"", "-3", "1.5"] {
        let err = parse(&format!("[http]\nconcurrency = {bad}\n")).unwrap_err();
        let message = err.to_string();
        let expected = format!("an integer from 1 to {MAX_CONCURRENCY}, or \"adaptive\"");
        assert!(message.contains(&expected), "{bad}: {message}");
    }

    let mut config = minimal();
    config.http.concurrency = Concurrency::Adaptive;
    let settings = config.validate(no_env).unwrap();
    assert!(settings.http.adaptive);
    assert_eq!(settings.http.concurrency.get(), DEFAULT_CONCURRENCY);
    assert_eq!(
        settings.http.max_concurrency(),
        crate::delivery::limiter::ADAPTIVE_MAX
    );
    let text = toml::to_string(&config).unwrap();
    assert!(text.contains("concurrency = \"adaptive\""), "{text}");
}

#[test]
fn unknown_toml_keys_are_rejected() {
    let err = toml::from_str::<Config>("[retry]\nmax_retires = 3\n").unwrap_err();
    assert!(err.to_string().contains("max_retires"), "{err}");
}

#[test]
fn plugin_config_takes_numbers_and_booleans_as_text() {
    let text = "[plugin.config]\nmax_record_bytes = 2048\nflag = true\nkey = \"iata\"\n";
    let config: Config = toml::from_str(text).unwrap();
    assert_eq!(config.plugin.config["max_record_bytes"], "2048");
    assert_eq!(config.plugin.config["flag"], "true");
    assert_eq!(config.plugin.config["key"], "iata");
}

#[test]
fn plugin_config_rejects_tables() {
    let err = toml::from_str::<Config>("[plugin.config.nested]\na = 1\n").unwrap_err();
    assert!(
        err.to_string().contains("a string, number or boolean"),
        "{err}"
    );
}

#[test]
fn plugin_limits_are_checked() {
    let mut config = minimal();
    config.plugin.max_memory_mib = 1;
    config.plugin.call_timeout = Duration::from_millis(1);
    config.plugin.max_record_bytes = 10;
    config.plugin.max_consecutive_traps = 0;
    assert_eq!(
        problem_keys(&config),
        [
            "plugin.max_memory_mib",
            "plugin.call_timeout",
            "plugin.max_record_bytes",
            "plugin.max_consecutive_traps"
        ]
    );
}

#[test]
fn metrics_address_must_be_an_ip_and_port() {
    let mut config = minimal();
    assert_eq!(config.validate(no_env).unwrap().metrics_address, None);

    config.metrics.address = Some("127.0.0.1:9464".to_owned());
    let address = config.validate(no_env).unwrap().metrics_address;
    assert_eq!(address, Some("127.0.0.1:9464".parse().unwrap()));

    for bad in ["localhost:9464", "9464", "127.0.0.1", "127.0.0.1:99999", ""] {
        config.metrics.address = Some(bad.to_owned());
        let err = config.validate(no_env).unwrap_err();
        assert_eq!(err.0.len(), 1, "{bad}: {err}");
        assert_eq!(err.0[0].key, "metrics.address", "{bad}");
        assert_eq!(err.0[0].value, bad);
        assert!(err.0[0].allowed.contains("127.0.0.1:9464"), "{err}");
    }
}

#[test]
fn reference_documents_every_key_and_no_other() {
    let rows = documented_rows();
    let documented: BTreeSet<String> = rows.iter().map(|row| row[0].clone()).collect();
    let keys: BTreeSet<String> = provenance::flatten(&Config::default())
        .into_keys()
        .collect();

    let undocumented: Vec<&String> = keys.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "keys missing from the table in docs/configuration.md: {undocumented:?}"
    );
    let unknown: Vec<&String> = documented.difference(&keys).collect();
    assert!(
        unknown.is_empty(),
        "docs/configuration.md lists keys that the configuration lacks: {unknown:?}"
    );
    assert_eq!(rows.len(), documented.len(), "a key is listed twice");
    for row in &rows {
        assert_eq!(row.len(), 7, "{} needs seven cells: {row:?}", row[0]);
    }
}

#[test]
fn reference_defaults_match_the_code() {
    let defaults = provenance::flatten(&Config::default());
    for row in documented_rows() {
        let (key, cell) = (&row[0], &row[2]);
        let documented = cell.trim_matches('`');
        match &defaults[key] {
            // Unset keys and empty tables are described in words.
            Value::Null | Value::Object(_) => {}
            Value::String(text) => {
                let durations = (
                    humantime::parse_duration(text),
                    humantime::parse_duration(documented),
                );
                match durations {
                    (Ok(code), Ok(doc)) => assert_eq!(code, doc, "default of {key}"),
                    _ => assert_eq!(documented, text, "default of {key}"),
                }
            }
            value => assert_eq!(documented, value.to_string(), "default of {key}"),
        }
    }
}
