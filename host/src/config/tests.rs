use super::*;

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
    config.http.concurrency = 0;
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
    config.http.concurrency = 5000;
    let err = config.validate(no_env).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid http.concurrency = 5000: an integer from 1 to 1024"
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
