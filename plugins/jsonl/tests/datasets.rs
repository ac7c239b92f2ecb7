//! Parses the real JSON Lines files bundled in `examples/data` and compares
//! every record with serde_json's reading of the same line.

use std::path::Path;
use std::sync::Arc;

use sluice_plugin_jsonl::{Config, Parsed, Parser, Record};

const DATASETS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/data");

/// Chunk sizes that split lines and multi-byte characters anywhere, and the
/// host's default chunk size of 64 KiB.
const CHUNK_SIZES: [usize; 4] = [1, 3, 1000, 64 * 1024];

fn read_dataset(file: &str) -> Vec<u8> {
    let path = Path::new(DATASETS).join(file);
    std::fs::read(&path)
        .unwrap_or_else(|err| panic!("cannot read bundled dataset {}: {err}", path.display()))
}

/// Parses `bytes` in chunks of `chunk_size` bytes and checks that every
/// line is a record with the right position and raw bytes.
fn parse(bytes: &[u8], config: &Arc<Config>, chunk_size: usize) -> (Parser, Vec<Record>) {
    let mut parser = Parser::new(config.clone());
    let mut parsed = Vec::new();
    for chunk in bytes.chunks(chunk_size) {
        parsed.extend(parser.feed(chunk).unwrap());
    }
    parsed.extend(parser.finish().unwrap());

    let lines: Vec<&[u8]> = bytes
        .strip_suffix(b"\n")
        .unwrap()
        .split(|&b| b == b'\n')
        .collect();
    assert_eq!(parsed.len(), lines.len(), "chunks of {chunk_size}");

    let mut offset = 0;
    let mut records = Vec::new();
    for (index, (item, line)) in parsed.into_iter().zip(lines).enumerate() {
        let Parsed::Record(record) = item else {
            panic!("line {}, chunks of {chunk_size}: {item:?}", index + 1);
        };
        assert_eq!(record.position.record_number, index as u64 + 1);
        assert_eq!(record.position.line, index as u64 + 1);
        assert_eq!(record.position.offset, offset, "line {}", index + 1);
        assert_eq!(record.raw, line, "line {}", index + 1);
        offset += line.len() as u64 + 1;
        records.push(record);
    }
    (parser, records)
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

#[test]
fn earthquakes_parse_and_map() {
    let bytes = read_dataset("earthquakes.jsonl");
    let config = Arc::new(Config::from_pairs(&[("path", "/quakes/{id}")]).unwrap());

    for chunk_size in CHUNK_SIZES {
        let (parser, records) = parse(&bytes, &config, chunk_size);
        assert_eq!(records.len(), 1_707, "chunks of {chunk_size}");

        for record in &records {
            let value = json(&record.raw);
            let id = value["id"].as_str().unwrap();
            assert_eq!(record.key, id);

            let request = parser.map_record(&record.raw).unwrap();
            assert_eq!(request.method, "PUT");
            assert_eq!(request.path, format!("/quakes/{id}"));
            assert_eq!(request.body, record.raw);
        }

        assert_eq!(records[0].key, "ci37868143");
        assert_eq!(records[1_706].key, "uw61345682");
    }
}

#[test]
fn earthquake_pointers_and_fields() {
    let bytes = read_dataset("earthquakes.jsonl");
    let config = Config::from_pairs(&[
        ("path", "/nets/{/properties/net}/quakes/{/properties/code}"),
        ("key", "/properties/net,/properties/code"),
        ("fields", "id,geometry"),
    ])
    .unwrap();
    let (parser, records) = parse(&bytes, &Arc::new(config), 64 * 1024);

    let first = &records[0];
    assert_eq!(first.key, r#"["ci","37868143"]"#);
    let request = parser.map_record(&first.raw).unwrap();
    assert_eq!(request.path, "/nets/ci/quakes/37868143");
    assert_eq!(
        String::from_utf8(request.body).unwrap(),
        concat!(
            r#"{"id":"ci37868143","#,
            r#""geometry":{"type":"Point","coordinates":[-118.6671667,34.4945,26.49]}}"#
        )
    );
}

#[test]
fn movies_parse_and_map() {
    let bytes = read_dataset("movies.jsonl");
    let config = Arc::new(Config::from_pairs(&[("path", "/movies/{/Title}")]).unwrap());

    for chunk_size in CHUNK_SIZES {
        let (parser, records) = parse(&bytes, &config, chunk_size);
        assert_eq!(records.len(), 3_201, "chunks of {chunk_size}");

        let mut failures = Vec::new();
        for record in &records {
            match parser.map_record(&record.raw) {
                Ok(request) => assert_eq!(request.body, record.raw),
                Err(message) => failures.push((record.position.line, message)),
            }
        }
        // The one movie whose title is null.
        let expected = (
            3_054,
            "field \"/Title\" is null but the path template needs it".to_owned(),
        );
        assert_eq!(failures, [expected], "chunks of {chunk_size}");

        assert_eq!(records[0].key, "The Land Girls");
        // Some titles are numbers, such as the film 1776.
        assert_eq!(records[21].key, "1776");
        let request = parser.map_record(&records[21].raw).unwrap();
        assert_eq!(request.path, "/movies/1776");
        assert_eq!(json(&records[21].raw)["Title"], 1776);
    }
}

#[test]
fn movie_projection_keeps_number_text() {
    let bytes = read_dataset("movies.jsonl");
    let config = Config::from_pairs(&[
        ("path", "/movies/{/Title}"),
        ("fields", "Title,IMDB Rating,Running Time min,Not a field"),
    ])
    .unwrap();
    let (parser, records) = parse(&bytes, &Arc::new(config), 64 * 1024);

    let request = parser.map_record(&records[0].raw).unwrap();
    assert_eq!(request.path, "/movies/The%20Land%20Girls");
    assert_eq!(
        String::from_utf8(request.body).unwrap(),
        r#"{"Title":"The Land Girls","IMDB Rating":6.1,"Running Time min":null}"#
    );

    for record in &records[..100] {
        let value = json(&record.raw);
        let body = json(&parser.map_record(&record.raw).unwrap().body);
        let object = body.as_object().unwrap();
        assert_eq!(object.len(), 3);
        for field in ["Title", "IMDB Rating", "Running Time min"] {
            assert_eq!(body[field], value[field], "line {}", record.position.line);
        }
    }
}
