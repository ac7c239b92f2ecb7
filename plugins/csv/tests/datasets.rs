//! Parses the real data files bundled in `examples/data` and compares every
//! field with the `csv` crate's reading of the same file.

use std::path::Path;
use std::sync::Arc;

use sluice_plugin_csv::{Config, Parsed, Parser};

const DATASETS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/data");

struct Dataset {
    file: &'static str,
    rows: usize,
    config: &'static [(&'static str, &'static str)],
}

/// Parses `dataset` in chunks of `chunk_size` bytes and checks every record
/// against the `csv` crate: position, key, path and the body's values.
fn check(dataset: &Dataset, chunk_size: usize) {
    let path = Path::new(DATASETS).join(dataset.file);
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|err| panic!("cannot read bundled dataset {}: {err}", path.display()));
    let config = Arc::new(Config::from_pairs(dataset.config).unwrap());

    let mut parser = Parser::new(config.clone());
    let mut parsed = Vec::new();
    for chunk in bytes.chunks(chunk_size) {
        parsed.extend(parser.feed(chunk).unwrap());
    }
    parsed.extend(parser.finish().unwrap());

    let mut reader = csv::Reader::from_reader(bytes.as_slice());
    let headers: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(parser.columns().unwrap(), headers.as_slice());
    let first_line = bytes.split(|&b| b == b'\n').next().unwrap();
    assert_eq!(parser.preamble(), [first_line, b"\n"].concat());

    let expected: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(parsed.len(), dataset.rows, "{}", dataset.file);
    assert_eq!(expected.len(), dataset.rows, "{}", dataset.file);

    let key_column = config.key_columns.first().map(String::as_str);
    let key_index = key_column.and_then(|k| headers.iter().position(|h| h == k));
    let null = config.null.as_deref();

    for (index, (item, want)) in parsed.iter().zip(&expected).enumerate() {
        let Parsed::Record(record) = item else {
            panic!("{} row {}: {item:?}", dataset.file, index + 1);
        };
        let csv_position = want.position().unwrap();
        assert_eq!(record.position.record_number, index as u64 + 1);
        assert_eq!(
            record.position.offset,
            csv_position.byte(),
            "row {}",
            index + 1
        );
        assert_eq!(
            record.position.line,
            csv_position.line(),
            "row {}",
            index + 1
        );
        if let Some(key_index) = key_index {
            assert_eq!(record.key, want[key_index], "row {}", index + 1);
        }

        let request = parser.map_record(&record.raw).unwrap();
        let body: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body.len(), headers.len());
        for (name, value) in headers.iter().zip(want.iter()) {
            let expected_value = if null == Some(value) {
                serde_json::Value::Null
            } else {
                serde_json::Value::String(value.to_owned())
            };
            assert_eq!(
                body[name],
                expected_value,
                "row {} column {name}",
                index + 1
            );
        }
    }
}

const AIRPORTS: Dataset = Dataset {
    file: "airports.csv",
    rows: 3376,
    config: &[("path", "/airports/{iata}")],
};

const ZIPCODES: Dataset = Dataset {
    file: "zipcodes.csv",
    rows: 42049,
    config: &[("path", "/zipcodes/{zip_code}"), ("method", "post")],
};

const PLANES: Dataset = Dataset {
    file: "planes.csv",
    rows: 3322,
    config: &[("path", "/planes/{tailnum}"), ("null", "NA")],
};

#[test]
fn airports_match_csv_crate() {
    check(&AIRPORTS, 64 * 1024);
    check(&AIRPORTS, 4093);
}

#[test]
fn zipcodes_match_csv_crate() {
    check(&ZIPCODES, 64 * 1024);
    check(&ZIPCODES, 997);
}

#[test]
fn planes_match_csv_crate() {
    check(&PLANES, 64 * 1024);
    check(&PLANES, 1);
}
