//! The same checks against every shipped format plugin: chunk boundaries
//! inside records, inputs without records, malformed records, the
//! dead-letter round trip and a last record without a line end.
//!
//! Each plugin is one entry of a table ([`CSV`], [`JSONL`], [`TSV`]) that
//! describes how to configure it and how to write records in its format. The
//! [`conformance!`] macro turns every check into one test per plugin, in a
//! module named after the plugin, such as `tsv::dead_letters_round_trip`.
//! Every check runs the real `sluice` binary with the compiled component
//! against the example target on 127.0.0.1, and compares what the target
//! stored with the values that were written into the file.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sluice_target::{read_resources, start, FaultPlan, RunningTarget, TargetConfig};
use sluice_tests::{
    csv_plugin, dead_letter_files, jsonl_plugin, tsv_plugin, write_file, Finished, Sluice,
};

/// The smallest `--chunk-size` that the host accepts.
const MIN_CHUNK: usize = 1024;

/// A chunk size at least as large as every file of these checks.
const ONE_CHUNK: usize = 1024 * 1024;

/// Records in the files of the chunk and dead-letter checks.
const RECORDS: usize = 40;

/// One shipped plugin, described for the checks.
struct Format {
    /// The plugin's name, as it starts every assert message.
    name: &'static str,
    /// Returns the compiled component.
    plugin: fn() -> PathBuf,
    /// `--plugin-config` pairs that store each record at `/items/{id}`.
    config: &'static [(&'static str, &'static str)],
    /// The header row without its line end, for formats that have one.
    header: Option<&'static str>,
    /// Writes one record without its line end.
    record: fn(&Item) -> String,
    /// One malformed record without its line end.
    malformed: &'static str,
    /// The line end that files of this format get in these checks.
    line_end: &'static str,
}

const CSV: Format = Format {
    name: "csv",
    plugin: csv_plugin,
    config: &[("path", "/items/{id}")],
    header: Some("id,name,note"),
    record: csv_record,
    // Two fields where the header has three.
    malformed: "bad,row",
    line_end: "\r\n",
};

const JSONL: Format = Format {
    name: "jsonl",
    plugin: jsonl_plugin,
    config: &[("path", "/items/{id}")],
    header: None,
    record: jsonl_record,
    // A trailing comma.
    malformed: r#"{"id":"bad","name":"row",}"#,
    line_end: "\r\n",
};

const TSV: Format = Format {
    name: "tsv",
    plugin: tsv_plugin,
    config: &[("path", "/items/{id}")],
    header: Some("id\tname\tnote"),
    record: tsv_record,
    // An escape that the format does not define.
    malformed: "bad\trow\tescape \\q here",
    line_end: "\r\n",
};

/// One record's values. Every plugin stores it as a JSON object of strings
/// at `/items/{id}`.
struct Item {
    id: String,
    name: String,
    note: String,
}

impl Item {
    fn path(&self) -> String {
        format!("/items/{}", self.id)
    }

    fn body(&self) -> Value {
        json!({"id": self.id, "name": self.name, "note": self.note})
    }
}

fn csv_record(item: &Item) -> String {
    let field = |value: &str| {
        if value.contains([',', '"', '\r', '\n']) {
            format!("\"{}\"", value.replace('"', "\"\""))
        } else {
            value.to_owned()
        }
    };
    [&item.id, &item.name, &item.note]
        .map(|value| field(value))
        .join(",")
}

fn jsonl_record(item: &Item) -> String {
    item.body().to_string()
}

fn tsv_record(item: &Item) -> String {
    let field = |value: &str| {
        value
            .replace('\\', "\\\\")
            .replace('\t', "\\t")
            .replace('\n', "\\n")
            .replace('\r', "\\r")
    };
    [&item.id, &item.name, &item.note]
        .map(|value| field(value))
        .join("\t")
}

/// Builds `count` records of 100 to 900 bytes, dense with two-, three- and
/// four-byte characters, and with the characters that each format must
/// quote or escape: quotes, commas, tabs, backslashes and line feeds.
fn items(count: usize) -> Vec<Item> {
    (0..count)
        .map(|index| {
            let words = "café € 日本 😀 ".repeat(4 * (index % 7 + 1));
            Item {
                id: format!("r{index:03}"),
                name: format!("Zoë {index}"),
                note: format!(
                    "{index}: \"quoted\", comma\ttab back\\slash\nsecond line {words}end"
                ),
            }
        })
        .collect()
}

/// One line of a file under construction.
enum Line<'a> {
    Good(&'a Item),
    Malformed,
}

/// A rendered input file and what the plugin must make of it.
struct Input {
    text: String,
    /// The bodies that the target must store, by path.
    expected: BTreeMap<String, Value>,
    /// Byte ranges of the records, without their line ends.
    record_spans: Vec<Range<usize>>,
    /// The 1-based line on which each record starts.
    record_lines: Vec<u64>,
    /// Each malformed record's 1-based record number and line.
    malformed: Vec<(u64, u64)>,
}

/// Writes the format's header, if any, and `lines`, each ended by the
/// format's line end except the last one when `last_line_end` is false.
fn render(format: &Format, lines: &[Line], last_line_end: bool) -> Input {
    let mut input = Input {
        text: String::new(),
        expected: BTreeMap::new(),
        record_spans: Vec::new(),
        record_lines: Vec::new(),
        malformed: Vec::new(),
    };
    if let Some(header) = format.header {
        input.text.push_str(header);
        input.text.push_str(format.line_end);
    }

    for (index, line) in lines.iter().enumerate() {
        let record_number = index as u64 + 1;
        let line_number = input.text.matches('\n').count() as u64 + 1;
        let start = input.text.len();
        match line {
            Line::Good(item) => {
                input.text.push_str(&(format.record)(item));
                input.expected.insert(item.path(), item.body());
            }
            Line::Malformed => {
                input.text.push_str(format.malformed);
                input.malformed.push((record_number, line_number));
            }
        }
        input.record_spans.push(start..input.text.len());
        input.record_lines.push(line_number);
        if last_line_end || index + 1 < lines.len() {
            input.text.push_str(format.line_end);
        }
    }
    input
}

fn good_lines(items: &[Item]) -> Vec<Line<'_>> {
    items.iter().map(Line::Good).collect()
}

/// Returns a `sluice` command for `format` against `endpoint`, run in `dir`.
fn sluice(format: &Format, subcommand: &str, dir: &Path, endpoint: &str) -> Sluice {
    let mut sluice = Sluice::new(subcommand, dir)
        .plugin((format.plugin)())
        .arg("--endpoint")
        .arg(endpoint)
        .arg("--timeout=5s");
    for (key, value) in format.config {
        sluice = sluice.plugin_config(key, value);
    }
    sluice
}

async fn target(db: &Path, faults: FaultPlan) -> RunningTarget {
    let mut config = TargetConfig::new(db);
    config.faults = faults;
    start(config).await.unwrap()
}

/// Lists the names of the files left in `dir/dead-letters`. A missing
/// directory has none.
fn dead_letter_dir_entries(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir.join("dead-letters")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Ingests `text` into a new fault-free target and returns the finished
/// run and what the target stored.
async fn ingest(
    format: &Format,
    dir: &Path,
    text: &str,
    chunk_size: usize,
) -> (Finished, BTreeMap<String, Value>) {
    std::fs::create_dir_all(dir).unwrap();
    let db = dir.join("target.db");
    let target = target(&db, FaultPlan::default()).await;
    let file_name = format!("items.{}", format.name);
    let input = write_file(dir, &file_name, text);

    let run = sluice(format, "run", dir, &target.url())
        .arg(format!("--chunk-size={chunk_size}"))
        .arg(input.display().to_string())
        .run()
        .await;

    target.shutdown().await;
    let stored = read_resources(&db).unwrap();
    (run, stored)
}

/// Where the chunk ends of one `--chunk-size` fall in a file.
#[derive(Default)]
struct Boundaries {
    inside_record: usize,
    inside_character: usize,
    between_cr_and_lf: usize,
}

fn boundaries(input: &Input, chunk_size: usize) -> Boundaries {
    let bytes = input.text.as_bytes();
    let mut found = Boundaries::default();
    for end in (chunk_size..bytes.len()).step_by(chunk_size) {
        let inside = |span: &Range<usize>| span.start < end && end < span.end;
        if input.record_spans.iter().any(inside) {
            found.inside_record += 1;
        }
        if !input.text.is_char_boundary(end) {
            found.inside_character += 1;
        }
        if bytes[end - 1] == b'\r' && bytes[end] == b'\n' {
            found.between_cr_and_lf += 1;
        }
    }
    found
}

/// Returns the chunk sizes to test: the smallest, a prime, one whose first
/// chunk ends inside a four-byte character and one whose first chunk ends
/// between CR and LF.
fn chunk_sizes(input: &Input) -> Vec<usize> {
    let bytes = input.text.as_bytes();
    let inside_wide_character = (MIN_CHUNK..bytes.len())
        .find(|&end| bytes[end - 1] >= 0xF0 && bytes[end - 1] < 0xF8)
        .map(|end| end + 1);
    let between_cr_and_lf =
        (MIN_CHUNK..bytes.len()).find(|&end| bytes[end - 1] == b'\r' && bytes[end] == b'\n');

    let mut sizes = vec![MIN_CHUNK, 1031];
    sizes.extend(inside_wide_character);
    sizes.extend(between_cr_and_lf);
    sizes
}

async fn chunk_boundaries_change_nothing(format: &Format) {
    let name = format.name;
    let items = items(RECORDS);
    let input = render(format, &good_lines(&items), true);
    let dir = tempfile::tempdir().unwrap();
    let sizes = chunk_sizes(&input);

    // The checks below are only as strong as the chunk ends they get.
    let mut covered = Boundaries::default();
    for &size in &sizes {
        let found = boundaries(&input, size);
        covered.inside_record += found.inside_record;
        covered.inside_character += found.inside_character;
        covered.between_cr_and_lf += found.between_cr_and_lf;
    }
    assert!(covered.inside_record > 0, "{name}: sizes {sizes:?}");
    assert!(covered.inside_character > 0, "{name}: sizes {sizes:?}");
    assert!(covered.between_cr_and_lf > 0, "{name}: sizes {sizes:?}");

    let (whole_run, whole) = ingest(format, &dir.path().join("one"), &input.text, ONE_CHUNK).await;
    assert_eq!(whole_run.code, Some(0), "{name}: {}", whole_run.stderr);
    assert_eq!(whole, input.expected, "{name}: one chunk");

    for size in sizes {
        let run_dir = dir.path().join(format!("chunk-{size}"));
        let (run, stored) = ingest(format, &run_dir, &input.text, size).await;
        assert_eq!(
            run.code,
            Some(0),
            "{name}, --chunk-size={size}: {}",
            run.stderr
        );
        assert_eq!(
            run.total("records"),
            RECORDS as u64,
            "{name}, --chunk-size={size}"
        );
        assert_eq!(stored, whole, "{name}, --chunk-size={size}");
    }
}

async fn inputs_without_records_send_nothing(format: &Format) {
    let name = format.name;
    let line_end = format.line_end;
    let mut inputs = vec![
        ("empty", String::new()),
        ("a byte order mark only", "\u{feff}".to_owned()),
        ("blank lines only", format!("{line_end}{line_end}")),
    ];
    if let Some(header) = format.header {
        inputs.push(("header only", format!("{header}{line_end}")));
        inputs.push(("header without a line end", header.to_owned()));
        inputs.push((
            "header after a byte order mark",
            format!("\u{feff}{header}{line_end}"),
        ));
        inputs.push((
            "header and blank lines",
            format!("{header}{line_end}{line_end}\n"),
        ));
    }

    let dir = tempfile::tempdir().unwrap();
    for (index, (what, text)) in inputs.iter().enumerate() {
        let run_dir = dir.path().join(index.to_string());
        std::fs::create_dir_all(&run_dir).unwrap();
        let db = run_dir.join("target.db");
        let target = target(&db, FaultPlan::default()).await;
        let input = write_file(&run_dir, &format!("items.{name}"), text);

        let run = sluice(format, "run", &run_dir, &target.url())
            .arg(input.display().to_string())
            .run()
            .await;

        assert_eq!(run.code, Some(0), "{name}, {what}: {}", run.stderr);
        assert_eq!(run.total("records"), 0, "{name}, {what}: {}", run.stdout);
        assert_eq!(target.stats().requests, 0, "{name}, {what}");
        assert_eq!(
            dead_letter_dir_entries(&run_dir),
            Vec::<String>::new(),
            "{name}, {what}"
        );
        target.shutdown().await;
        assert!(read_resources(&db).unwrap().is_empty(), "{name}, {what}");
    }
}

async fn malformed_records_rejected_with_their_lines(format: &Format) {
    let name = format.name;
    let items = items(6);
    let lines = [
        Line::Good(&items[0]),
        Line::Good(&items[1]),
        Line::Malformed,
        Line::Good(&items[2]),
        Line::Malformed,
        Line::Malformed,
        Line::Good(&items[3]),
        Line::Good(&items[4]),
        Line::Malformed,
        Line::Good(&items[5]),
    ];
    let input = render(format, &lines, true);
    let dir = tempfile::tempdir().unwrap();

    let (run, stored) = ingest(format, dir.path(), &input.text, ONE_CHUNK).await;

    assert_eq!(run.code, Some(3), "{name}: {}", run.stderr);
    assert_eq!(run.total("records"), 10, "{name}: {}", run.stdout);
    assert_eq!(run.total("delivered"), 6, "{name}: {}", run.stdout);
    assert_eq!(run.total("rejected"), 4, "{name}: {}", run.stdout);
    assert_eq!(stored, input.expected, "{name}");

    assert!(
        dead_letter_files(&dir.path().join("dead-letters"), "dead").is_empty(),
        "{name}"
    );
    let rejected = dead_letter_files(&dir.path().join("dead-letters"), "rejected");
    assert_eq!(rejected.len(), 1, "{name}: {rejected:?}");
    let positions: Vec<(u64, u64)> = rejected[0]
        .sidecar
        .iter()
        .map(|entry| {
            (
                entry["record"].as_u64().unwrap(),
                entry["line"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(positions, input.malformed, "{name}: record and line");
    // The rejected file is a valid input: the header row, then each
    // malformed record's bytes and the record separator.
    let mut contents = format
        .header
        .map_or(String::new(), |header| format!("{header}\n"));
    for _ in &input.malformed {
        contents.push_str(format.malformed);
        contents.push('\n');
    }
    assert_eq!(rejected[0].contents, contents, "{name}");
}

async fn dead_letters_round_trip(format: &Format) {
    let name = format.name;
    let items = items(RECORDS);
    let input = render(format, &good_lines(&items), true);
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), &format!("items.{name}"), &input.text);

    let all_503 = FaultPlan {
        rate_503: 1.0,
        ..FaultPlan::default()
    };
    let down = target(&dir.path().join("down.db"), all_503).await;
    let first = sluice(format, "run", dir.path(), &down.url())
        .arg("--max-retries=1")
        .arg("--failure-threshold=3")
        .arg("--open-duration=20ms")
        .arg(file.display().to_string())
        .run()
        .await;
    down.shutdown().await;

    assert_eq!(first.code, Some(3), "{name}: {}", first.stderr);
    assert_eq!(first.total("delivered"), 0, "{name}: {}", first.stdout);
    assert_eq!(
        first.total("dead_lettered"),
        RECORDS as u64,
        "{name}: {}",
        first.stdout
    );
    let dead = dead_letter_files(&dir.path().join("dead-letters"), "dead");
    let mut lines: Vec<u64> = dead
        .iter()
        .flat_map(|file| &file.sidecar)
        .map(|entry| entry["line"].as_u64().unwrap())
        .collect();
    lines.sort_unstable();
    assert_eq!(lines, input.record_lines, "{name}: sidecar lines");
    assert!(
        dead_letter_files(&dir.path().join("dead-letters"), "rejected").is_empty(),
        "{name}"
    );

    let up_db = dir.path().join("up.db");
    let up = target(&up_db, FaultPlan::default()).await;
    let again = sluice(format, "reprocess", dir.path(), &up.url())
        .arg("dead-letters")
        .run()
        .await;
    up.shutdown().await;

    assert_eq!(again.code, Some(0), "{name}: {}", again.stderr);
    assert_eq!(
        again.total("delivered"),
        RECORDS as u64,
        "{name}: {}",
        again.stdout
    );
    assert_eq!(read_resources(&up_db).unwrap(), input.expected, "{name}");
    assert_eq!(
        dead_letter_dir_entries(dir.path()),
        Vec::<String>::new(),
        "{name}"
    );
}

async fn last_record_without_line_end_delivered(format: &Format) {
    let name = format.name;
    let items = items(3);
    let input = render(format, &good_lines(&items), false);
    assert!(!input.text.ends_with('\n'), "{name}");
    let dir = tempfile::tempdir().unwrap();

    let (run, stored) = ingest(format, dir.path(), &input.text, ONE_CHUNK).await;

    assert_eq!(run.code, Some(0), "{name}: {}", run.stderr);
    assert_eq!(run.total("delivered"), 3, "{name}: {}", run.stdout);
    assert_eq!(stored, input.expected, "{name}");
}

/// Defines every check as one test for each plugin, in a module named
/// after the plugin.
macro_rules! conformance {
    ($($plugin:ident => $format:expr),* $(,)?) => {$(
        mod $plugin {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn chunk_boundaries_change_nothing() {
                super::chunk_boundaries_change_nothing(&$format).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn inputs_without_records_send_nothing() {
                super::inputs_without_records_send_nothing(&$format).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn malformed_records_rejected_with_their_lines() {
                super::malformed_records_rejected_with_their_lines(&$format).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn dead_letters_round_trip() {
                super::dead_letters_round_trip(&$format).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn last_record_without_line_end_delivered() {
                super::last_record_without_line_end_delivered(&$format).await;
            }
        }
    )*};
}

conformance! {
    csv => CSV,
    jsonl => JSONL,
    tsv => TSV,
}
