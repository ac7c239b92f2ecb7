use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;

use super::*;
use crate::delivery::breaker::{BreakerSettings, Role};
use crate::delivery::InFlight;

/// One sample line of the exposition.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The exposition, parsed.
#[derive(Debug, Default)]
struct Exposition {
    help: BTreeMap<String, String>,
    types: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

impl Exposition {
    /// Returns the value of the sample with `name` and exactly `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|sample| sample.name == name && sample.labels == labels)
            .collect();
        assert_eq!(found.len(), 1, "{name} {labels:?} in {self:#?}");
        found[0].value
    }
}

/// Parses the Prometheus text format strictly enough to catch a malformed
/// line: `# HELP name text`, `# TYPE name type`, and
/// `name{label="value",...} number`.
fn parse(text: &str) -> Exposition {
    let mut exposition = Exposition::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP has a name and a text");
            exposition.help.insert(name.to_owned(), help.to_owned());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a name and a type");
            exposition.types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line:?}");
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            number => number
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let inner = rest.strip_suffix('}').expect("labels end with }");
                let labels = inner
                    .split(',')
                    .map(|pair| {
                        let (key, quoted) = pair.split_once('=').expect("label=value");
                        let value = quoted.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
                        let value = value.unwrap_or_else(|| panic!("unquoted label in {line:?}"));
                        (key.to_owned(), value.to_owned())
                    })
                    .collect();
                (name, labels)
            }
        };
        let valid_name = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        assert!(valid_name, "invalid metric name in {line:?}");
        exposition.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    exposition
}

/// Returns the family that a sample belongs to: its name without the
/// histogram suffixes.
fn family(exposition: &Exposition, sample: &str) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = sample.strip_suffix(suffix) {
            if exposition.types.get(base).map(String::as_str) == Some("histogram") {
                return base.to_owned();
            }
        }
    }
    sample.to_owned()
}

fn write_dead_letter(dir: &Path, name: &str, sidecar: &str) {
    std::fs::write(dir.join(name), "iata\n").unwrap();
    std::fs::write(dir.join(format!("{name}.meta.jsonl")), sidecar).unwrap();
}

fn open_breaker() -> Arc<Breaker> {
    let breaker = Arc::new(Breaker::new(BreakerSettings {
        failure_threshold: NonZeroU32::new(1).unwrap(),
        open_duration: Duration::from_secs(30),
    }));
    breaker.record_exhausted(Role::Normal);
    breaker
}

#[test]
fn exposition_reports_every_metric_with_its_value() {
    let dir = tempfile::tempdir().unwrap();
    write_dead_letter(dir.path(), "a.R1.dead.csv", "{}\n{}\n{}\n{\"torn");
    write_dead_letter(dir.path(), "b.R2.dead.csv", "{}\n");
    write_dead_letter(dir.path(), "a.R1.rejected.csv", "{}\n{}\n{}\n{}\n{}\n");
    let counters = Arc::new(Counters::default());
    counters.read.store(10, Relaxed);
    counters.delivered.store(6, Relaxed);
    counters.dead_lettered.store(3, Relaxed);
    counters.rejected.store(1, Relaxed);
    counters.retrying.store(2, Relaxed);
    for cause in [
        Fault::Status(StatusCode::SERVICE_UNAVAILABLE),
        Fault::Status(StatusCode::BAD_GATEWAY),
        Fault::Status(StatusCode::TOO_MANY_REQUESTS),
        Fault::Timeout,
        Fault::Connection("reset".to_owned()),
        Fault::Plugin {
            status: StatusCode::OK,
            transient: true,
            reason: "busy".to_owned(),
        },
        // Never retried, so counted nowhere.
        Fault::Status(StatusCode::NOT_FOUND),
    ] {
        counters.retrying(&cause);
    }
    counters.started();
    counters.started();
    counters.started();
    counters.finished(Duration::from_millis(3));
    counters.finished(Duration::from_secs(2));
    counters
        .plugin_calls
        .observe(PluginCall::Map, Duration::from_micros(700));
    counters.files.pending.set(2);
    counters.files.active.set(1);
    counters.files.done.set(4);
    counters.files.stopped.set(3);
    let metrics = Metrics::new(counters, dir.path());
    metrics.watch_breaker(open_breaker());

    let text = metrics.encode();
    let exposition = parse(&text);

    let value = |name: &str| exposition.value(name, &[]);
    assert_eq!(value("sluice_records_read_total"), 10.0);
    assert_eq!(value("sluice_records_delivered_total"), 6.0);
    assert_eq!(value("sluice_records_dead_lettered_total"), 3.0);
    assert_eq!(value("sluice_records_rejected_total"), 1.0);
    assert_eq!(value("sluice_records_retrying"), 2.0);
    assert_eq!(value("sluice_requests_in_flight"), 1.0);
    // Three complete sidecar lines and one, not the torn line or the
    // rejected file's lines.
    assert_eq!(value("sluice_dead_letter_records"), 4.0);
    assert_eq!(value("sluice_breaker_openings_total"), 1.0);

    let retries = |class: &str| exposition.value("sluice_retries_total", &[("class", class)]);
    assert_eq!(retries("5xx"), 2.0);
    assert_eq!(retries("429"), 1.0);
    assert_eq!(retries("408"), 0.0);
    assert_eq!(retries("409"), 0.0);
    assert_eq!(retries("timeout"), 1.0);
    assert_eq!(retries("connection"), 1.0);
    assert_eq!(retries("plugin"), 1.0);

    let state = |state: &str| exposition.value("sluice_breaker_state", &[("state", state)]);
    assert_eq!(state("closed"), 0.0);
    assert_eq!(state("open"), 1.0);
    assert_eq!(state("half-open"), 0.0);

    let files = |state: &str| exposition.value("sluice_files", &[("state", state)]);
    assert_eq!(files("pending"), 2.0);
    assert_eq!(files("active"), 1.0);
    assert_eq!(files("done"), 4.0);
    assert_eq!(files("stopped"), 3.0);

    let request = |suffix: &str, labels: &[(&str, &str)]| {
        exposition.value(&format!("sluice_request_duration_seconds{suffix}"), labels)
    };
    assert_eq!(request("_count", &[]), 2.0);
    assert!((request("_sum", &[]) - 2.003).abs() < 1e-9, "{text}");
    assert_eq!(request("_bucket", &[("le", "0.0025")]), 0.0);
    assert_eq!(request("_bucket", &[("le", "0.005")]), 1.0);
    assert_eq!(request("_bucket", &[("le", "1")]), 1.0);
    assert_eq!(request("_bucket", &[("le", "2.5")]), 2.0);
    assert_eq!(request("_bucket", &[("le", "+Inf")]), 2.0);

    let calls = |call: &str, suffix: &str| {
        let name = format!("sluice_plugin_call_duration_seconds{suffix}");
        exposition.value(&name, &[("call", call)])
    };
    assert_eq!(calls("map", "_count"), 1.0);
    assert_eq!(calls("feed", "_count"), 0.0);
    assert_eq!(calls("finish", "_count"), 0.0);
    assert_eq!(calls("classify", "_count"), 0.0);
    let map_bucket = [("call", "map"), ("le", "0.001")];
    let name = "sluice_plugin_call_duration_seconds_bucket";
    assert_eq!(exposition.value(name, &map_bucket), 1.0);
}

#[test]
fn exposition_follows_prometheus_naming() {
    let metrics = Metrics::new(Arc::new(Counters::default()), Path::new("/nonexistent"));
    let exposition = parse(&metrics.encode());

    let families: BTreeSet<String> = exposition
        .samples
        .iter()
        .map(|sample| family(&exposition, &sample.name))
        .collect();
    let expected = [
        "sluice_breaker_openings_total",
        "sluice_breaker_state",
        "sluice_concurrency_limit",
        "sluice_dead_letter_records",
        "sluice_files",
        "sluice_plugin_call_duration_seconds",
        "sluice_records_dead_lettered_total",
        "sluice_records_delivered_total",
        "sluice_records_read_total",
        "sluice_records_rejected_total",
        "sluice_records_retrying",
        "sluice_request_duration_seconds",
        "sluice_requests_in_flight",
        "sluice_retries_total",
    ];
    assert_eq!(families, expected.map(str::to_owned).into());

    for name in &families {
        let help = exposition.help.get(name);
        assert!(
            help.is_some_and(|help| help.len() > 10),
            "{name} has no help"
        );
        let kind = exposition.types[name].as_str();
        match kind {
            "counter" => assert!(name.ends_with("_total"), "{name}"),
            "histogram" => assert!(name.ends_with("_seconds"), "{name}"),
            "gauge" => assert!(!name.ends_with("_total"), "{name}"),
            other => panic!("{name} has type {other}"),
        }
    }
}

#[test]
fn histogram_buckets_are_cumulative() {
    let counters = Arc::new(Counters::default());
    for millis in [0, 1, 4, 40, 400, 4_000, 40_000] {
        counters.finished(Duration::from_millis(millis));
    }
    let metrics = Metrics::new(counters, Path::new("/nonexistent"));
    let exposition = parse(&metrics.encode());

    let buckets: Vec<&Sample> = exposition
        .samples
        .iter()
        .filter(|sample| sample.name == "sluice_request_duration_seconds_bucket")
        .collect();
    let counts: Vec<f64> = buckets.iter().map(|sample| sample.value).collect();
    assert!(
        counts.windows(2).all(|pair| pair[0] <= pair[1]),
        "{counts:?}"
    );
    let last = buckets.last().unwrap();
    assert_eq!(last.labels["le"], "+Inf");
    assert_eq!(last.value, 7.0);
    // 40 s is above every finite bound.
    assert_eq!(counts[counts.len() - 2], 6.0);
    assert_eq!(
        exposition.value("sluice_request_duration_seconds_count", &[]),
        7.0
    );
}

#[test]
fn dead_letter_count_follows_appends_and_removals() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new(Arc::new(Counters::default()), dir.path());
    let count = || parse(&metrics.encode()).value("sluice_dead_letter_records", &[]);
    assert_eq!(count(), 0.0);

    write_dead_letter(dir.path(), "a.R1.dead.csv", "{}\n{\"half");
    assert_eq!(count(), 1.0);

    let sidecar = dir.path().join("a.R1.dead.csv.meta.jsonl");
    std::fs::write(&sidecar, "{}\n{\"whole\":1}\n{}\n").unwrap();
    assert_eq!(count(), 3.0);

    std::fs::write(&sidecar, "{}\n").unwrap();
    assert_eq!(count(), 1.0, "a shorter sidecar is counted again");

    std::fs::remove_file(dir.path().join("a.R1.dead.csv")).unwrap();
    assert_eq!(count(), 0.0);
}

#[test]
fn readiness_is_ready_only_while_closed() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let status = |state, next_probe_in| BreakerStatus {
        state,
        since: Duration::from_secs(12),
        next_probe_in,
        openings: 2,
    };

    let closed = Readiness::of(status(BreakerState::Closed, None), now);
    assert!(closed.ready);
    assert_eq!(
        closed.body.lines().next(),
        Some("ready: the circuit breaker is closed")
    );

    let open = Readiness::of(
        status(BreakerState::Open, Some(Duration::from_millis(17_500))),
        now,
    );
    assert!(!open.ready);
    let lines: Vec<&str> = open.body.lines().collect();
    assert!(lines[0].starts_with("not ready: the circuit breaker is open"));
    assert_eq!(lines[1], "state: open");
    assert_eq!(lines[2], "since: 2023-11-14T22:13:08Z (12.0s ago)");
    assert_eq!(lines[3], "next probe: 2023-11-14T22:13:37Z (in 17.5s)");
    assert_eq!(lines[4], "openings: 2");

    let due = Readiness::of(status(BreakerState::Open, Some(Duration::ZERO)), now);
    assert!(!due.ready);
    assert!(due.body.contains("next probe: due now"), "{}", due.body);

    let half_open = Readiness::of(status(BreakerState::HalfOpen, None), now);
    assert!(!half_open.ready);
    assert!(half_open.body.contains("state: half-open\n"));
    assert!(half_open.body.contains("next probe: in flight\n"));
}

#[test]
fn readiness_without_a_breaker_is_ready() {
    let metrics = Metrics::new(Arc::new(Counters::default()), Path::new("/nonexistent"));
    assert!(metrics.readiness().ready);
    metrics.watch_breaker(open_breaker());
    let readiness = metrics.readiness();
    assert!(!readiness.ready);
    assert!(
        readiness.body.contains("state: open\n"),
        "{}",
        readiness.body
    );
}

#[test]
fn concurrency_limit_is_set_before_sending() {
    let counters = Arc::new(Counters::with_limit(16));
    let metrics = Metrics::new(counters, Path::new("/nonexistent"));
    let exposition = parse(&metrics.encode());
    assert_eq!(exposition.value("sluice_concurrency_limit", &[]), 16.0);
}
