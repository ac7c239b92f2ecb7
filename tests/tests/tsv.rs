//! The TSV plugin, written in Python and built with componentize-py,
//! through the real host: a real dataset into the example target with
//! faults, malformed lines, the dead-letter round trip, `sluice verify` and
//! `sluice plugin info`.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};
use sluice_target::{
    compare_csv, read_resources, start, CompareOptions, FaultPlan, RunningTarget, TargetConfig,
};
use sluice_tests::{dataset, dead_letter_files, plugin_info_lines, tsv_plugin, write_file, Sluice};

const WEATHER_PATH: &str = "/weather/{origin}/{time_hour}";

/// Rows in `examples/data/weather.tsv`, without the header.
const WEATHER_ROWS: u64 = 2226;

/// The smallest `--chunk-size` that the host accepts.
const MIN_CHUNK: usize = 1024;

fn faults() -> FaultPlan {
    FaultPlan {
        seed: 57,
        rate_500: 0.03,
        rate_503: 0.03,
        rate_429: 0.02,
        retry_after_secs: 1,
        rate_reset: 0.02,
        rate_lost_response: 0.02,
        ..FaultPlan::default()
    }
}

fn tsv(subcommand: &str, dir: &Path, target: &RunningTarget, path: &str) -> Sluice {
    Sluice::new(subcommand, dir)
        .plugin(tsv_plugin())
        .arg("--endpoint")
        .arg(target.url())
        .arg("--timeout=2s")
        .arg("--max-retry-after=1s")
        .plugin_config("path", path)
}

async fn target_with(dir: &Path, db: &str, faults: FaultPlan) -> RunningTarget {
    let mut config = TargetConfig::new(dir.join(db));
    config.faults = faults;
    start(config).await.unwrap()
}

fn dead_letter_dir_is_empty(dir: &Path) -> bool {
    match std::fs::read_dir(dir.join("dead-letters")) {
        Ok(mut entries) => entries.next().is_none(),
        Err(_) => true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weather_arrives_exactly_despite_faults() {
    let dir = tempfile::tempdir().unwrap();
    let target = target_with(dir.path(), "t.db", faults()).await;
    let input = dataset("weather.tsv");
    let weather = |subcommand: &str| {
        tsv(subcommand, dir.path(), &target, WEATHER_PATH)
            .arg("--concurrency=16")
            .plugin_config("null", "NA")
    };

    // An odd chunk size makes chunks end inside lines and CRLFs.
    let first = weather("run")
        .arg("--max-retries=8")
        .arg("--chunk-size=4093")
        .arg(input.display().to_string())
        .run()
        .await;

    assert!(matches!(first.code, Some(0 | 3)), "{}", first.stderr);
    assert_eq!(first.total("records"), WEATHER_ROWS);
    assert_eq!(first.total("rejected"), 0, "{}", first.stdout);
    assert_eq!(
        first.total("delivered") + first.total("dead_lettered"),
        WEATHER_ROWS
    );
    assert!(first.total("retries") > 0, "faults should force retries");
    assert!(target.stats().requests > WEATHER_ROWS);

    if first.total("dead_lettered") > 0 {
        let again = weather("reprocess")
            .arg("--max-retries=30")
            .arg("dead-letters")
            .run()
            .await;
        assert_eq!(again.code, Some(0), "{}", again.stderr);
    }
    assert!(dead_letter_dir_is_empty(dir.path()));

    // The target's comparison reads the file with a CSV reader set to tabs,
    // which fits because weather.tsv has no quotes or backslashes.
    let mut options = CompareOptions::new(WEATHER_PATH);
    options.delimiter = b'\t';
    options.null_token = Some("NA".to_owned());
    let comparison = compare_csv(&dir.path().join("t.db"), &input, &options).unwrap();
    assert!(comparison.is_exact(), "{comparison}");
    assert_eq!(comparison.matched as u64, WEATHER_ROWS);

    let verify = weather("verify")
        .arg(input.display().to_string())
        .run()
        .await;
    assert_eq!(verify.code, Some(0), "{}", verify.stdout);
    let expected = format!("matched {WEATHER_ROWS}, missing 0, different 0, unchecked 0");
    assert!(verify.stdout.contains(&expected), "{}", verify.stdout);
    target.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_a_changed_and_a_missing_row() {
    let dir = tempfile::tempdir().unwrap();
    let target = target_with(dir.path(), "t.db", FaultPlan::default()).await;
    let text = "origin\ttime_hour\ttemp\n\
                EWR\t2013-01-01T06:00:00Z\t39.02\n\
                JFK\t2013-01-01T06:00:00Z\t39.92\n";
    let loaded = write_file(dir.path(), "loaded.tsv", text);
    let run = tsv("run", dir.path(), &target, WEATHER_PATH)
        .arg(loaded.display().to_string())
        .run()
        .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);

    let changed = text.replace("39.92", "40.00") + "LGA\t2013-01-01T06:00:00Z\t41.00\n";
    let changed = write_file(dir.path(), "changed.tsv", &changed);
    let verify = tsv("verify", dir.path(), &target, WEATHER_PATH)
        .arg(changed.display().to_string())
        .run()
        .await;

    assert_eq!(verify.code, Some(3), "{}", verify.stdout);
    assert!(
        verify
            .stdout
            .contains("matched 1, missing 1, different 1, unchecked 0"),
        "{}",
        verify.stdout
    );
    assert!(
        verify.stdout.contains("record 2 (line 3)"),
        "{}",
        verify.stdout
    );
    assert!(
        verify.stdout.contains("record 3 (line 4)"),
        "{}",
        verify.stdout
    );
    target.shutdown().await;
}

/// A file with one header, good lines that use every escape, CRLF, a byte
/// order mark, blank lines and non-ASCII text, and three malformed lines.
const MIXED: &str = "\u{feff}id\tname\tnote\r\n\
                     1\tZoë\ttab\\there\r\n\
                     \r\n\
                     2\tshort\n\
                     3\t日本\tline\\nbreak and back\\\\slash\n\
                     4\tbad\tescape \\q here\n\
                     5\t\\N\tcr\\r\n\
                     6\tlone\tends with \\\n\
                     \n\
                     7\tlast\tno newline";

/// The bodies that the good lines of [`MIXED`] must arrive with, by path.
fn mixed_expected() -> BTreeMap<String, Value> {
    BTreeMap::from([
        (
            "/items/1".to_owned(),
            json!({"id": "1", "name": "Zoë", "note": "tab\there"}),
        ),
        (
            "/items/3".to_owned(),
            json!({"id": "3", "name": "日本", "note": "line\nbreak and back\\slash"}),
        ),
        (
            "/items/5".to_owned(),
            json!({"id": "5", "name": null, "note": "cr\r"}),
        ),
        (
            "/items/7".to_owned(),
            json!({"id": "7", "name": "last", "note": "no newline"}),
        ),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_lines_are_rejected_with_their_lines() {
    let dir = tempfile::tempdir().unwrap();
    let target = target_with(dir.path(), "t.db", FaultPlan::default()).await;
    let input = write_file(dir.path(), "mixed.tsv", MIXED);

    let run = tsv("run", dir.path(), &target, "/items/{id}")
        .plugin_config("null", "\\N")
        .arg(input.display().to_string())
        .run()
        .await;

    assert_eq!(run.code, Some(3), "{}", run.stderr);
    assert_eq!(run.total("records"), 7);
    assert_eq!(run.total("delivered"), 4);
    assert_eq!(run.total("rejected"), 3);
    let stored = read_resources(&dir.path().join("t.db")).unwrap();
    assert_eq!(stored, mixed_expected());

    let rejected = dead_letter_files(&dir.path().join("dead-letters"), "rejected");
    assert_eq!(rejected.len(), 1);
    assert_eq!(
        rejected[0].contents,
        "id\tname\tnote\n\
         2\tshort\n\
         4\tbad\tescape \\q here\n\
         6\tlone\tends with \\\n"
    );
    let sidecar = &rejected[0].sidecar;
    let positions: Vec<(u64, u64)> = sidecar
        .iter()
        .map(|entry| {
            (
                entry["record"].as_u64().unwrap(),
                entry["line"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(positions, [(2, 4), (4, 6), (6, 8)]);
    let errors: Vec<&str> = sidecar
        .iter()
        .map(|entry| entry["error"].as_str().unwrap())
        .collect();
    assert!(
        errors[0].contains("expected 3 fields, found 2"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].contains(r#"unknown escape "\q" in field 3 ("note") at byte 13"#),
        "{}",
        errors[1]
    );
    assert!(
        errors[2].contains(r#"field 3 ("note") ends with a lone backslash"#),
        "{}",
        errors[2]
    );
    for error in &errors[1..] {
        assert!(
            error.contains(r"write a literal backslash as \\"),
            "{error}"
        );
    }
    target.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_reprocess_through_the_same_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let down = FaultPlan {
        rate_503: 1.0,
        ..FaultPlan::default()
    };
    let down = target_with(dir.path(), "down.db", down).await;
    let input = write_file(dir.path(), "mixed.tsv", MIXED);

    let first = tsv("run", dir.path(), &down, "/items/{id}")
        .plugin_config("null", "\\N")
        .arg("--max-retries=0")
        .arg("--failure-threshold=1000")
        .arg(input.display().to_string())
        .run()
        .await;
    assert_eq!(first.code, Some(3), "{}", first.stderr);
    assert_eq!(first.total("dead_lettered"), 4);
    assert_eq!(first.total("rejected"), 3);
    down.shutdown().await;

    // The dead-letter file is the plugin's preamble, the header row without
    // its byte order mark, then each record's raw bytes and an LF, in the
    // order in which the records ran out of retries.
    let dead = dead_letter_files(&dir.path().join("dead-letters"), "dead");
    assert_eq!(dead.len(), 1);
    let (preamble, records) = dead[0].contents.split_once('\n').unwrap();
    assert_eq!(preamble, "id\tname\tnote");
    let mut records: Vec<&str> = records.split_terminator('\n').collect();
    records.sort();
    assert_eq!(
        records,
        [
            "1\tZoë\ttab\\there",
            "3\t日本\tline\\nbreak and back\\\\slash",
            "5\t\\N\tcr\\r",
            "7\tlast\tno newline",
        ]
    );
    assert!(dead[0].contents.ends_with('\n'));
    let mut lines: Vec<u64> = dead[0]
        .sidecar
        .iter()
        .map(|entry| entry["line"].as_u64().unwrap())
        .collect();
    lines.sort();
    assert_eq!(lines, [2, 5, 7, 10]);

    let up = target_with(dir.path(), "up.db", FaultPlan::default()).await;
    let again = tsv("reprocess", dir.path(), &up, "/items/{id}")
        .plugin_config("null", "\\N")
        .arg("--include-rejected")
        .arg("dead-letters")
        .run()
        .await;

    // The malformed lines fail again, into a new rejected file that keeps
    // their original lines.
    assert_eq!(again.code, Some(3), "{}", again.stderr);
    assert_eq!(again.total("delivered"), 4);
    assert_eq!(again.total("rejected"), 3);
    let stored = read_resources(&dir.path().join("up.db")).unwrap();
    assert_eq!(stored, mixed_expected());
    assert!(dead_letter_files(&dir.path().join("dead-letters"), "dead").is_empty());
    let rejected = dead_letter_files(&dir.path().join("dead-letters"), "rejected");
    assert_eq!(rejected.len(), 1);
    let lines: Vec<u64> = rejected[0]
        .sidecar
        .iter()
        .map(|entry| entry["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [4, 6, 8]);
    assert_eq!(
        rejected[0].sidecar[1]["source"],
        input.display().to_string()
    );
    up.shutdown().await;
}

/// Pieces that must survive a chunk boundary: each one's raw bytes, its
/// decoded text, and the chunk boundary that it straddles.
const SPLIT_PIECES: [(&str, &str, usize); 3] = [
    ("€", "€", MIN_CHUNK),
    ("\\t", "\t", 2 * MIN_CHUNK),
    ("\r\n", "", 3 * MIN_CHUNK),
];

/// Builds a file in which each of [`SPLIT_PIECES`] starts on the last byte
/// of a chunk of [`MIN_CHUNK`] bytes, and the bodies its lines must arrive
/// with. A filler line before each piece's line puts the piece there.
fn file_with_split_pieces() -> (String, BTreeMap<String, Value>) {
    let mut text = String::from("id\tvalue\n");
    let mut expected = BTreeMap::new();
    let mut id = 0;
    for (raw, decoded, boundary) in SPLIT_PIECES {
        id += 1;
        let filler_prefix = format!("{id}\t");
        let piece_prefix = format!("{}\tv", id + 1);
        let filler_len = boundary - 1 - text.len() - filler_prefix.len() - 1 - piece_prefix.len();
        let filler = "x".repeat(filler_len);
        text.push_str(&format!("{filler_prefix}{filler}\n"));
        expected.insert(
            format!("/split/{id}"),
            json!({"id": id.to_string(), "value": filler}),
        );

        id += 1;
        text.push_str(&piece_prefix);
        let value = if raw == "\r\n" {
            text.push_str("\r\n");
            "v".to_owned()
        } else {
            text.push_str(&format!("{raw}w\n"));
            format!("v{decoded}w")
        };
        expected.insert(
            format!("/split/{id}"),
            json!({"id": id.to_string(), "value": value}),
        );
    }
    (text, expected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_may_split_characters_escapes_and_crlf() {
    let (text, expected) = file_with_split_pieces();
    for (raw, _, boundary) in SPLIT_PIECES {
        let starts_at = &text.as_bytes()[boundary - 1..];
        assert!(
            starts_at.starts_with(raw.as_bytes()),
            "{raw:?} at {boundary}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let target = target_with(dir.path(), "t.db", FaultPlan::default()).await;
    let input = write_file(dir.path(), "split.tsv", &text);

    let run = tsv("run", dir.path(), &target, "/split/{id}")
        .arg(format!("--chunk-size={MIN_CHUNK}"))
        .arg(input.display().to_string())
        .run()
        .await;

    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.total("delivered"), expected.len() as u64);
    let stored = read_resources(&dir.path().join("t.db")).unwrap();
    assert_eq!(stored, expected);
    target.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_without_key_column_stops_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let target = target_with(dir.path(), "t.db", FaultPlan::default()).await;
    let input = write_file(dir.path(), "w.tsv", "origin\ttemp\nEWR\t39\n");

    let run = tsv("run", dir.path(), &target, WEATHER_PATH)
        .arg(input.display().to_string())
        .run()
        .await;

    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stdout.contains(
            "path template column \"time_hour\" is not in the header row; the header has \
             origin, temp"
        ),
        "{}",
        run.stdout
    );
    assert_eq!(run.total("delivered"), 0);
    target.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let target = target_with(dir.path(), "t.db", FaultPlan::default()).await;
    let input = write_file(dir.path(), "w.tsv", "id\n1\n");
    let cases = [
        (
            "delimiter",
            ",",
            "unknown key \"delimiter\"; accepted keys are path, key",
        ),
        (
            "max_record_bytes",
            "10",
            "max_record_bytes 10 is out of range",
        ),
        ("read_path", "items/{id}", "must start with \"/\""),
    ];

    for (key, value, expected) in cases {
        let run = tsv("run", dir.path(), &target, "/items/{id}")
            .plugin_config(key, value)
            .arg(input.display().to_string())
            .run()
            .await;

        assert_eq!(run.code, Some(2), "{key}: {}", run.stderr);
        assert!(
            run.stderr
                .contains(&format!("invalid --plugin-config {key}: ")),
            "{}",
            run.stderr
        );
        assert!(run.stderr.contains(expected), "{}", run.stderr);
    }
    target.shutdown().await;
}

#[test]
fn plugin_info_lists_the_tsv_keys() {
    let lines = plugin_info_lines(&tsv_plugin());
    assert_eq!(lines[0], "name        tsv");
    assert_eq!(lines[1], "version     0.1.0");
    assert_eq!(lines[2], "extensions  tsv");
    assert_eq!(lines[3], "config keys");
    let keys: Vec<&str> = lines[4..]
        .iter()
        .map(|line| line.trim_start().split(':').next().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "path (required)",
            "key",
            "method",
            "null",
            "max_record_bytes",
            "read_path"
        ]
    );
    for line in &lines[4..] {
        let description = line.split_once(": ").map_or("", |(_, d)| d);
        assert!(!description.is_empty(), "{line}");
    }
}
