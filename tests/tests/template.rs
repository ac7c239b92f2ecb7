//! The plugin template (`examples/plugin-template`) through the real host:
//! a small file into the example target with faults and small chunks,
//! malformed lines, `sluice verify`, the dead-letter round trip,
//! configuration errors and `sluice plugin info`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sluice_target::{read_resources, start, FaultPlan, RunningTarget, TargetConfig};
use sluice_tests::{plugin_info_lines, template_plugin, Sluice};

/// The `max_line_bytes` that the tests configure.
const MAX_LINE_BYTES: usize = 256;

/// Lines of generated notes in [`mixed_file`], enough for several chunks.
const NOTES: usize = 150;

fn faults() -> FaultPlan {
    FaultPlan {
        seed: 73,
        rate_500: 0.03,
        rate_503: 0.04,
        rate_reset: 0.03,
        rate_lost_response: 0.03,
        ..FaultPlan::default()
    }
}

fn template(subcommand: &str, dir: &Path, target: &RunningTarget) -> Sluice {
    Sluice::new(subcommand, dir)
        .plugin(template_plugin())
        .arg("--endpoint")
        .arg(target.url())
        .arg("--timeout=2s")
        .plugin_config("prefix", "/notes")
        .plugin_config("max_line_bytes", &MAX_LINE_BYTES.to_string())
}

async fn target_with(dir: &Path, db: &str, faults: FaultPlan) -> RunningTarget {
    let mut config = TargetConfig::new(dir.join(db));
    config.faults = faults;
    start(config).await.unwrap()
}

fn write_bytes(dir: &Path, name: &str, contents: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn note(key: &str, text: &str) -> Value {
    json!({"key": key, "text": text})
}

/// A rejected or dead-letter file, read as bytes because a malformed line
/// need not be UTF-8, with its sidecar.
struct Written {
    contents: Vec<u8>,
    sidecar: Vec<Value>,
}

/// Reads the files in `dead-letters` whose names contain `.{infix}.`.
fn written(dir: &Path, infix: &str) -> Vec<Written> {
    let Ok(entries) = std::fs::read_dir(dir.join("dead-letters")) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            name.contains(&format!(".{infix}.")) && !name.ends_with(".meta.jsonl")
        })
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let mut sidecar_path = path.clone().into_os_string();
            sidecar_path.push(".meta.jsonl");
            let sidecar = std::fs::read_to_string(sidecar_path)
                .unwrap()
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect();
            Written {
                contents: std::fs::read(&path).unwrap(),
                sidecar,
            }
        })
        .collect()
}

fn sidecar_lines(file: &Written) -> Vec<u64> {
    let mut lines: Vec<u64> = file
        .sidecar
        .iter()
        .map(|entry| entry["line"].as_u64().unwrap())
        .collect();
    lines.sort();
    lines
}

/// Returns the long line of [`mixed_file`], over `max_line_bytes`.
fn long_line() -> Vec<u8> {
    let mut line = b"long ".to_vec();
    line.resize(MAX_LINE_BYTES + 50, b'x');
    line
}

/// Builds a file with CRLF and LF lines, blank lines, keys that need
/// percent-encoding, an invalid UTF-8 line (line 6), a line over
/// `max_line_bytes` (line 8), many short notes, and a last line without a
/// terminator. Returns it with the resources that its good lines make.
fn mixed_file() -> (Vec<u8>, BTreeMap<String, Value>) {
    let mut file = Vec::new();
    file.extend_from_slice("Zoë umlaut in the key\r\n".as_bytes());
    file.extend_from_slice(b"a/b a slash in the key\n");
    file.extend_from_slice(b"\n");
    file.extend_from_slice(b"50% a percent sign\n");
    file.extend_from_slice(b"   indented   words keep their spaces\r\n");
    file.extend_from_slice(b"bad \xff is not UTF-8\n");
    file.extend_from_slice(b" \t \r\n");
    file.extend_from_slice(&long_line());
    file.push(b'\n');

    let mut expected = BTreeMap::from([
        (
            "/notes/Zo%C3%AB".to_owned(),
            note("Zoë", "Zoë umlaut in the key"),
        ),
        (
            "/notes/a%2Fb".to_owned(),
            note("a/b", "a/b a slash in the key"),
        ),
        ("/notes/50%25".to_owned(), note("50%", "50% a percent sign")),
        (
            "/notes/indented".to_owned(),
            note("indented", "   indented   words keep their spaces"),
        ),
    ]);
    for i in 0..NOTES {
        let key = format!("note-{i:03}");
        let text = format!("{key} is note number {i} of the file");
        file.extend_from_slice(text.as_bytes());
        file.push(b'\n');
        expected.insert(format!("/notes/{key}"), note(&key, &text));
    }
    file.extend_from_slice(b"last line without a newline");
    expected.insert(
        "/notes/last".to_owned(),
        note("last", "last line without a newline"),
    );
    (file, expected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_arrive_and_verify_despite_faults() {
    let dir = tempfile::tempdir().unwrap();
    let target = target_with(dir.path(), "t.db", faults()).await;
    let (contents, expected) = mixed_file();
    let input = write_bytes(dir.path(), "notes.txt", &contents);
    let records = expected.len() as u64 + 2;

    // The smallest chunk size makes most lines end in a later chunk than
    // they start in.
    let run = template("run", dir.path(), &target)
        .arg("--max-retries=10")
        .arg("--chunk-size=1024")
        .arg(input.display().to_string())
        .run()
        .await;

    assert_eq!(run.code, Some(3), "{}", run.stderr);
    assert_eq!(run.total("records"), records);
    assert_eq!(run.total("delivered"), records - 2);
    assert_eq!(run.total("rejected"), 2);
    assert_eq!(run.total("dead_lettered"), 0);
    assert!(run.total("retries") > 0, "faults should force retries");
    let stored = read_resources(&dir.path().join("t.db")).unwrap();
    assert_eq!(stored, expected);

    let rejected = written(dir.path(), "rejected");
    assert_eq!(rejected.len(), 1);
    let mut rejected_bytes = b"bad \xff is not UTF-8\n".to_vec();
    rejected_bytes.extend_from_slice(&long_line()[..MAX_LINE_BYTES + 1]);
    rejected_bytes.push(b'\n');
    assert_eq!(rejected[0].contents, rejected_bytes);
    let sidecar = &rejected[0].sidecar;
    assert_eq!(sidecar[0]["record"], 5);
    assert_eq!(sidecar[0]["line"], 6);
    assert_eq!(sidecar[1]["record"], 6);
    assert_eq!(sidecar[1]["line"], 8);
    let utf8_error = sidecar[0]["error"].as_str().unwrap();
    assert!(
        utf8_error.contains("line is not valid UTF-8"),
        "{utf8_error}"
    );
    let length_error = sidecar[1]["error"].as_str().unwrap();
    assert!(
        length_error.contains("line is longer than max_line_bytes (256 bytes)"),
        "{length_error}"
    );

    let verify = template("verify", dir.path(), &target)
        .arg("--max-retries=10")
        .arg(input.display().to_string())
        .run()
        .await;
    assert_eq!(verify.code, Some(0), "{}", verify.stdout);
    let summary = format!(
        "matched {}, missing 0, different 0, unchecked 0",
        records - 2
    );
    assert!(verify.stdout.contains(&summary), "{}", verify.stdout);
    target.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_a_changed_note() {
    let dir = tempfile::tempdir().unwrap();
    let target = target_with(dir.path(), "t.db", FaultPlan::default()).await;
    let loaded = write_bytes(dir.path(), "loaded.txt", b"one first\ntwo second\n");
    let run = template("run", dir.path(), &target)
        .arg(loaded.display().to_string())
        .run()
        .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);

    let changed = write_bytes(dir.path(), "changed.txt", b"one first\ntwo changed\n");
    let verify = template("verify", dir.path(), &target)
        .arg(changed.display().to_string())
        .run()
        .await;

    assert_eq!(verify.code, Some(3), "{}", verify.stdout);
    assert!(
        verify
            .stdout
            .contains("matched 1, missing 0, different 1, unchecked 0"),
        "{}",
        verify.stdout
    );
    assert!(
        verify.stdout.contains("record 2 (line 2)"),
        "{}",
        verify.stdout
    );
    target.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_reprocess_through_the_template() {
    let dir = tempfile::tempdir().unwrap();
    let down = FaultPlan {
        rate_503: 1.0,
        ..FaultPlan::default()
    };
    let down = target_with(dir.path(), "down.db", down).await;
    let input = write_bytes(
        dir.path(),
        "notes.txt",
        b"one first\r\n. a dot key\ntwo \xff\nthree last",
    );

    let first = template("run", dir.path(), &down)
        .arg("--max-retries=0")
        .arg("--failure-threshold=1000")
        .arg(input.display().to_string())
        .run()
        .await;
    assert_eq!(first.code, Some(3), "{}", first.stderr);
    assert_eq!(first.total("dead_lettered"), 2);
    assert_eq!(first.total("rejected"), 2);
    down.shutdown().await;

    // The dead-letter file is each record's raw bytes, CR included, and
    // the LF record separator; the template has no preamble.
    let dead = written(dir.path(), "dead");
    assert_eq!(dead.len(), 1);
    let mut lines: Vec<&[u8]> = dead[0].contents.split_inclusive(|&b| b == b'\n').collect();
    lines.sort();
    assert_eq!(lines, [&b"one first\r\n"[..], b"three last\n"]);
    assert_eq!(sidecar_lines(&dead[0]), [1, 4]);

    // The key "." cannot be a path segment, so map-records rejects it.
    let rejected = written(dir.path(), "rejected");
    assert_eq!(rejected.len(), 1);
    assert_eq!(sidecar_lines(&rejected[0]), [2, 3]);
    let errors: Vec<&str> = rejected[0]
        .sidecar
        .iter()
        .map(|entry| entry["error"].as_str().unwrap())
        .collect();
    assert!(
        errors
            .iter()
            .any(|error| error.contains("key \".\" cannot be a path segment")),
        "{errors:?}"
    );

    let up = target_with(dir.path(), "up.db", FaultPlan::default()).await;
    let again = template("reprocess", dir.path(), &up)
        .arg("--include-rejected")
        .arg("dead-letters")
        .run()
        .await;

    // The rejected lines fail again, into a new rejected file that keeps
    // their original lines.
    assert_eq!(again.code, Some(3), "{}", again.stderr);
    assert_eq!(again.total("delivered"), 2);
    assert_eq!(again.total("rejected"), 2);
    let stored = read_resources(&dir.path().join("up.db")).unwrap();
    let expected = BTreeMap::from([
        ("/notes/one".to_owned(), note("one", "one first")),
        ("/notes/three".to_owned(), note("three", "three last")),
    ]);
    assert_eq!(stored, expected);
    assert!(written(dir.path(), "dead").is_empty());
    let rejected = written(dir.path(), "rejected");
    assert_eq!(rejected.len(), 1);
    assert_eq!(sidecar_lines(&rejected[0]), [2, 3]);
    up.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let target = target_with(dir.path(), "t.db", FaultPlan::default()).await;
    let input = write_bytes(dir.path(), "notes.txt", b"one\n");
    let cases = [
        (
            "max_line_byte",
            "10",
            "unknown key \"max_line_byte\"; accepted keys are prefix, max_line_bytes",
        ),
        ("max_line_bytes", "0", "is not a whole number from 1 to"),
        ("prefix", "notes", "does not start with \"/\""),
    ];

    for (key, value, expected) in cases {
        let run = template("run", dir.path(), &target)
            .plugin_config(key, value)
            .arg(input.display().to_string())
            .run()
            .await;

        assert_eq!(run.code, Some(2), "{key}: {}", run.stderr);
        let prefix = format!("invalid --plugin-config {key}: ");
        assert!(run.stderr.contains(&prefix), "{}", run.stderr);
        assert!(run.stderr.contains(expected), "{}", run.stderr);
    }
    target.shutdown().await;
}

#[test]
fn plugin_info_lists_the_template_keys() {
    let lines = plugin_info_lines(&template_plugin());
    assert_eq!(lines[0], "name        template");
    assert_eq!(lines[1], "version     0.1.0");
    assert_eq!(lines[2], "extensions  txt");
    assert_eq!(lines[3], "config keys");
    let keys: Vec<&str> = lines[4..]
        .iter()
        .map(|line| line.trim_start().split(':').next().unwrap())
        .collect();
    assert_eq!(keys, ["prefix (required)", "max_line_bytes"]);
    for line in &lines[4..] {
        let description = line.split_once(": ").map_or("", |(_, d)| d);
        assert!(!description.is_empty(), "{line}");
    }
}
