//! The input files: nycflights13 `flights.csv.gz`, decompressed once before
//! any timing, optionally cut to its first rows, and a larger copy made by
//! repeating it with new keys.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// Key columns to try, in order; the first set that is unique over the
/// whole input becomes the request path, one path segment per column.
const KEY_CANDIDATES: [&[&str]; 2] = [
    &["year", "month", "day", "carrier", "flight", "origin"],
    &[
        "year",
        "month",
        "day",
        "carrier",
        "flight",
        "origin",
        "sched_dep_time",
    ],
];

/// The column that the repeated copies change to get new keys.
const REPEAT_COLUMN: &str = "year";

/// A decompressed input file.
#[derive(Clone, Debug)]
pub struct Input {
    pub path: PathBuf,
    pub rows: u64,
    pub bytes: u64,
}

/// The prepared inputs and the request path that makes every row's key
/// unique.
pub struct Dataset {
    pub input: Input,
    /// A path template for the CSV plugin, such as
    /// `/flights/{year}/{month}/...`.
    pub path_template: String,
    /// The key columns the template uses.
    pub key_columns: Vec<String>,
    /// The input's bytes, kept for the parsing measurements.
    pub contents: Vec<u8>,
}

/// Decompresses `gz` into `dir/flights.csv`, keeping the header and at most
/// `limit` rows, and picks key columns that are unique over the result.
///
/// # Errors
///
/// Fails when the file is missing or unreadable, is not CSV, or no
/// candidate set of key columns is unique.
pub fn prepare(gz: &Path, dir: &Path, limit: Option<u64>) -> anyhow::Result<Dataset> {
    if !gz.is_file() {
        anyhow::bail!(
            "dataset not found: {} (nycflights13 flights.csv.gz, 336,776 rows); \
             place it there or pass --dataset PATH",
            gz.display()
        );
    }
    let file = File::open(gz).with_context(|| format!("failed to open {}", gz.display()))?;
    let mut contents = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut contents)
        .with_context(|| format!("failed to decompress {}", gz.display()))?;

    let (rows, end) = count_rows(&contents, limit)?;
    contents.truncate(end);
    let key_columns = pick_key(&contents)?;
    let path_template = format!(
        "/flights/{}",
        key_columns
            .iter()
            .map(|column| format!("{{{column}}}"))
            .collect::<Vec<_>>()
            .join("/")
    );

    let path = dir.join("flights.csv");
    std::fs::write(&path, &contents)
        .with_context(|| format!("failed to write {}", path.display()))?;
    Ok(Dataset {
        input: Input {
            path,
            rows,
            bytes: contents.len() as u64,
        },
        path_template,
        key_columns,
        contents,
    })
}

/// Counts rows up to `limit` and returns the count and the byte offset just
/// past the last row kept.
fn count_rows(contents: &[u8], limit: Option<u64>) -> anyhow::Result<(u64, usize)> {
    let mut reader = csv::Reader::from_reader(contents);
    let mut record = csv::ByteRecord::new();
    let mut rows = 0;
    while reader.read_byte_record(&mut record)? {
        rows += 1;
        if limit == Some(rows) {
            let end = usize::try_from(reader.position().byte())?;
            // The position is the start of the next record, past this
            // record's line end.
            return Ok((rows, end));
        }
    }
    Ok((rows, contents.len()))
}

/// Returns the first candidate set of key columns whose values are unique
/// across all rows.
fn pick_key(contents: &[u8]) -> anyhow::Result<Vec<String>> {
    let mut reader = csv::Reader::from_reader(contents);
    let header = reader.byte_headers()?.clone();
    let mut tried = Vec::new();
    for candidate in KEY_CANDIDATES {
        let indexes = candidate
            .iter()
            .map(|column| {
                header
                    .iter()
                    .position(|name| name == column.as_bytes())
                    .with_context(|| format!("the input has no column {column:?}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if let Some(duplicate) = first_duplicate(contents, &indexes)? {
            tried.push(format!(
                "{} (row {duplicate} repeats a key)",
                candidate.join(",")
            ));
            continue;
        }
        return Ok(candidate
            .iter()
            .map(|column| (*column).to_owned())
            .collect());
    }
    anyhow::bail!(
        "no unique key among the candidate key columns: {}",
        tried.join("; ")
    )
}

/// Returns the 1-based number of the first row whose key repeats an
/// earlier row's, if any.
fn first_duplicate(contents: &[u8], indexes: &[usize]) -> anyhow::Result<Option<u64>> {
    let mut reader = csv::Reader::from_reader(contents);
    let mut record = csv::ByteRecord::new();
    let mut seen = HashSet::new();
    let mut row = 0;
    while reader.read_byte_record(&mut record)? {
        row += 1;
        let mut key = Vec::with_capacity(48);
        for &index in indexes {
            key.extend_from_slice(record.get(index).unwrap_or_default());
            key.push(0x1f);
        }
        if !seen.insert(key) {
            return Ok(Some(row));
        }
    }
    Ok(None)
}

/// Writes the header and the first `rows` rows of the dataset to `path`.
///
/// # Errors
///
/// Fails when the file cannot be written.
pub fn head(dataset: &Dataset, rows: u64, path: &Path) -> anyhow::Result<Input> {
    let (rows, end) = count_rows(&dataset.contents, Some(rows))?;
    std::fs::write(path, &dataset.contents[..end])
        .with_context(|| format!("failed to write {}", path.display()))?;
    Ok(Input {
        path: path.to_owned(),
        rows,
        bytes: end as u64,
    })
}

/// Writes `copies` copies of the dataset's rows, under one header, to
/// `path`. Copy `i` adds `i` to the `year` column, so that every copy's
/// keys are new.
///
/// # Errors
///
/// Fails when the file cannot be written or the input has no `year`
/// column.
pub fn repeat(dataset: &Dataset, copies: u32, path: &Path) -> anyhow::Result<Input> {
    let file =
        File::create(path).with_context(|| format!("failed to create {}", path.display()))?;
    let mut writer = csv::Writer::from_writer(BufWriter::with_capacity(1 << 20, file));
    let mut reader = csv::Reader::from_reader(dataset.contents.as_slice());
    let header = reader.byte_headers()?.clone();
    let year_index = header
        .iter()
        .position(|name| name == REPEAT_COLUMN.as_bytes())
        .with_context(|| format!("the input has no column {REPEAT_COLUMN:?}"))?;
    writer.write_byte_record(&header)?;

    let mut rows = 0;
    let mut record = csv::ByteRecord::new();
    let mut changed = csv::ByteRecord::new();
    for copy in 0..copies {
        let mut reader = csv::Reader::from_reader(dataset.contents.as_slice());
        while reader.read_byte_record(&mut record)? {
            changed.clear();
            for (index, field) in record.iter().enumerate() {
                if index == year_index {
                    let year: u32 = std::str::from_utf8(field)?.parse()?;
                    changed.push_field((year + copy).to_string().as_bytes());
                } else {
                    changed.push_field(field);
                }
            }
            writer.write_byte_record(&changed)?;
            rows += 1;
        }
    }
    let mut inner = writer.into_inner().map_err(|err| err.into_error())?;
    inner.flush()?;
    let bytes = std::fs::metadata(path)?.len();
    Ok(Input {
        path: path.to_owned(),
        rows,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = b"year,month,day,carrier,flight,origin,sched_dep_time,x\n\
        2013,1,1,UA,1,EWR,500,a\n\
        2013,1,1,UA,1,EWR,600,b\n\
        2013,1,1,UA,2,EWR,500,c\n";

    #[test]
    fn key_falls_back_to_scheduled_time() {
        let key = pick_key(SAMPLE).unwrap();
        assert_eq!(key.last().map(String::as_str), Some("sched_dep_time"));
    }

    #[test]
    fn limit_keeps_whole_rows() {
        let (rows, end) = count_rows(SAMPLE, Some(2)).unwrap();
        assert_eq!(rows, 2);
        assert!(SAMPLE[..end].ends_with(b"600,b\n"));
    }

    #[test]
    fn repeated_copies_get_new_years() {
        let dir = tempfile::tempdir().unwrap();
        let dataset = Dataset {
            input: Input {
                path: dir.path().join("in.csv"),
                rows: 3,
                bytes: SAMPLE.len() as u64,
            },
            path_template: String::new(),
            key_columns: Vec::new(),
            contents: SAMPLE.to_vec(),
        };
        let out = dir.path().join("out.csv");
        let input = repeat(&dataset, 3, &out).unwrap();
        assert_eq!(input.rows, 9);
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(text.starts_with("year,month,day"));
        assert_eq!(text.matches("\n2015,1,1,UA,2,EWR,500,c\n").count(), 1);
        assert_eq!(text.lines().count(), 10);
    }
}
