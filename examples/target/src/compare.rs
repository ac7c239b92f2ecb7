//! Comparison of a target database with the CSV file that was loaded into
//! it.
//!
//! Each CSV row is expected as one PUT resource: the path comes from the
//! template with percent-encoded column values, and the body is a JSON
//! object of header name to value string, or `null` where the value equals
//! the null token. This is an oracle written from that description alone,
//! independent of sluice's CSV plugin.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use anyhow::{bail, Context as _};
use csv::StringRecord;
use serde_json::{Map, Value};

use crate::db;
use crate::path_template::PathTemplate;

/// Number of problems of each kind that `Display` for [`Comparison`] lists.
pub const LISTED_PROBLEMS: usize = 10;

/// How to read the CSV file and build the expected resources.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompareOptions {
    /// Path template such as `/airports/{iata}`; each `{column}` is
    /// replaced by the row's percent-encoded value of that column.
    pub path_template: String,
    /// Value that stands for JSON `null` in the body, such as `NA`.
    pub null_token: Option<String>,
    /// Field delimiter byte.
    pub delimiter: u8,
}

impl CompareOptions {
    /// Returns options for a comma-separated file without a null token.
    pub fn new(path_template: impl Into<String>) -> Self {
        Self {
            path_template: path_template.into(),
            null_token: None,
            delimiter: b',',
        }
    }
}

/// Result of [`compare_csv`]. Line numbers are 1-based lines of the CSV
/// file where a row starts; the header is line 1.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Comparison {
    /// Rows whose resource exists with the expected body.
    pub matched: usize,
    /// Rows without a resource at their path, in file order.
    pub missing: Vec<RowRef>,
    /// Stored paths that no row produces, in path order.
    pub extra: Vec<String>,
    /// Rows whose resource has another body, in file order.
    pub different: Vec<Difference>,
    /// Rows that could not be read, such as rows with the wrong number of
    /// fields. They are not expected in the database and do not count
    /// against an exact match.
    pub invalid: Vec<InvalidRow>,
    /// Rows whose path a later row also produces. Only the last row with a
    /// path is compared, as with PUTs applied in file order.
    pub superseded: Vec<RowRef>,
}

/// CSV row identified by its line and expected path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowRef {
    /// Line where the row starts.
    pub line: u64,
    /// Expected resource path.
    pub path: String,
}

/// Row whose stored body differs from the expected one.
#[derive(Clone, Debug, PartialEq)]
pub struct Difference {
    /// Line where the row starts.
    pub line: u64,
    /// Resource path.
    pub path: String,
    /// Body built from the row.
    pub expected: Value,
    /// Body found in the database.
    pub actual: Value,
}

/// Row that could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidRow {
    /// Line where the row starts, or 0 when the reader did not report one.
    pub line: u64,
    /// Reason from the CSV reader.
    pub error: String,
}

impl Comparison {
    /// Returns true when every readable row matched and the database has no
    /// extra resources.
    pub fn is_exact(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.different.is_empty()
    }
}

impl Difference {
    /// Describes how the bodies differ, field by field when both are
    /// objects.
    pub fn describe(&self) -> String {
        let (Value::Object(expected), Value::Object(actual)) = (&self.expected, &self.actual)
        else {
            return format!("expected {}, found {}", self.expected, self.actual);
        };

        let keys: BTreeSet<&String> = expected.keys().chain(actual.keys()).collect();
        let mut problems = Vec::new();
        for key in keys {
            match (expected.get(key), actual.get(key)) {
                (Some(want), Some(found)) if want != found => {
                    problems.push(format!("field {key:?}: expected {want}, found {found}"));
                }
                (Some(_), None) => problems.push(format!("field {key:?} is missing")),
                (None, Some(found)) => problems.push(format!("unexpected field {key:?}: {found}")),
                _ => {}
            }
        }
        problems.join("; ")
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "matched {}, missing {}, extra {}, different {}",
            self.matched,
            self.missing.len(),
            self.extra.len(),
            self.different.len()
        )?;
        if !self.invalid.is_empty() || !self.superseded.is_empty() {
            write!(
                f,
                "\ninvalid rows {} (not compared), superseded rows {}",
                self.invalid.len(),
                self.superseded.len()
            )?;
        }

        let missing = self
            .missing
            .iter()
            .map(|row| format!("line {}: {}", row.line, row.path));
        list_problems(f, "missing", missing)?;
        list_problems(f, "extra", self.extra.iter().cloned())?;
        let different = self
            .different
            .iter()
            .map(|diff| format!("line {}: {}: {}", diff.line, diff.path, diff.describe()));
        list_problems(f, "different", different)?;
        let invalid = self
            .invalid
            .iter()
            .map(|row| format!("line {}: {}", row.line, row.error));
        list_problems(f, "invalid", invalid)?;
        let superseded = self.superseded.iter().map(|row| {
            format!(
                "line {}: {} (a later row has the same path)",
                row.line, row.path
            )
        });
        list_problems(f, "superseded", superseded)
    }
}

fn list_problems(
    f: &mut fmt::Formatter<'_>,
    kind: &str,
    problems: impl ExactSizeIterator<Item = String>,
) -> fmt::Result {
    let total = problems.len();
    for problem in problems.take(LISTED_PROBLEMS) {
        write!(f, "\n{kind}: {problem}")?;
    }
    if total > LISTED_PROBLEMS {
        write!(f, "\n{kind}: ... and {} more", total - LISTED_PROBLEMS)?;
    }
    Ok(())
}

/// Compares the PUT resources of a target database with the rows of a CSV
/// file. POSTed rows are ignored.
///
/// The CSV file must have a header row; a UTF-8 byte order mark before it is
/// skipped. Values are compared as exact strings, so `00501` only matches
/// `"00501"`.
///
/// # Errors
///
/// Fails when the template is malformed or names a column the header lacks,
/// the header has duplicate names, or either file cannot be read.
pub fn compare_csv(
    db_path: &Path,
    csv_path: &Path,
    opts: &CompareOptions,
) -> anyhow::Result<Comparison> {
    let template = PathTemplate::parse(&opts.path_template)?;
    let mut expected = read_expected(csv_path, &template, opts)?;
    let mut comparison = Comparison {
        invalid: std::mem::take(&mut expected.invalid),
        superseded: std::mem::take(&mut expected.superseded),
        ..Comparison::default()
    };

    let conn = db::open_read_only(db_path)?;
    db::for_each_resource(&conn, |path, actual| {
        let Some(row) = expected.rows.remove(&path) else {
            comparison.extra.push(path);
            return Ok(());
        };
        if row.matches(&expected.headers, &actual) {
            comparison.matched += 1;
        } else {
            let expected_body = row.to_json(&expected.headers);
            comparison.different.push(Difference {
                line: row.line,
                path,
                expected: expected_body,
                actual,
            });
        }
        Ok(())
    })
    .with_context(|| format!("failed to read resources from {}", db_path.display()))?;

    comparison.missing = expected
        .rows
        .into_iter()
        .map(|(path, row)| RowRef {
            line: row.line,
            path,
        })
        .collect();
    comparison.missing.sort_by_key(|row| row.line);
    comparison.different.sort_by_key(|diff| diff.line);
    Ok(comparison)
}

/// Expected resources built from a CSV file.
struct Expected {
    headers: Vec<String>,
    /// Expected path to the last row that produces it.
    rows: HashMap<String, ExpectedRow>,
    invalid: Vec<InvalidRow>,
    superseded: Vec<RowRef>,
}

/// Row kept in compact form: one value per header, `None` for null.
struct ExpectedRow {
    line: u64,
    values: Vec<Option<Box<str>>>,
}

impl ExpectedRow {
    fn matches(&self, headers: &[String], actual: &Value) -> bool {
        let Value::Object(fields) = actual else {
            return false;
        };
        fields.len() == headers.len()
            && headers.iter().zip(&self.values).all(|(name, value)| {
                match (value.as_deref(), fields.get(name)) {
                    (Some(value), Some(Value::String(found))) => found == value,
                    (None, Some(Value::Null)) => true,
                    _ => false,
                }
            })
    }

    fn to_json(&self, headers: &[String]) -> Value {
        let fields: Map<String, Value> = headers
            .iter()
            .zip(&self.values)
            .map(|(name, value)| {
                let value = value
                    .as_deref()
                    .map_or(Value::Null, |v| Value::String(v.to_owned()));
                (name.clone(), value)
            })
            .collect();
        Value::Object(fields)
    }
}

fn read_expected(
    csv_path: &Path,
    template: &PathTemplate,
    opts: &CompareOptions,
) -> anyhow::Result<Expected> {
    let file =
        File::open(csv_path).with_context(|| format!("failed to open {}", csv_path.display()))?;
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(opts.delimiter)
        .has_headers(true)
        .from_reader(LineStarts::new(file));
    let headers: Vec<String> = reader
        .headers()
        .with_context(|| format!("failed to read the header row of {}", csv_path.display()))?
        .iter()
        .map(str::to_owned)
        .collect();

    let mut seen = BTreeSet::new();
    for name in &headers {
        if !seen.insert(name.as_str()) {
            bail!(
                "header of {} has the column name {name:?} twice; \
                 rename one so that each body field has its own name",
                csv_path.display()
            );
        }
    }

    let mut column_index = HashMap::new();
    for column in template.columns() {
        let Some(index) = headers.iter().position(|name| name == column) else {
            bail!(
                "path template names column {column:?}, which {} lacks; its columns are: {}",
                csv_path.display(),
                quoted_list(&headers)
            );
        };
        column_index.insert(column.to_owned(), index);
    }

    let mut expected = Expected {
        headers,
        rows: HashMap::new(),
        invalid: Vec::new(),
        superseded: Vec::new(),
    };
    let mut record = StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(err) if err.is_io_error() => {
                return Err(err).with_context(|| format!("failed to read {}", csv_path.display()));
            }
            Err(err) => {
                let line = err
                    .position()
                    .map_or(0, |position| reader.get_mut().line_at(position));
                expected.invalid.push(InvalidRow {
                    line,
                    error: err.to_string(),
                });
                continue;
            }
        }

        let line = record
            .position()
            .map_or(0, |position| reader.get_mut().line_at(position));
        // NOTE: a placeholder whose value equals the null token is filled
        // with the token's text; a loader may reject such a row instead.
        let path = template.render(|column| &record[column_index[column]]);
        let values = record
            .iter()
            .map(|value| match &opts.null_token {
                Some(token) if token == value => None,
                _ => Some(Box::from(value)),
            })
            .collect();

        if let Some(previous) = expected
            .rows
            .insert(path.clone(), ExpectedRow { line, values })
        {
            expected.superseded.push(RowRef {
                line: previous.line,
                path,
            });
        }
    }
    Ok(expected)
}

fn quoted_list(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|name| format!("{name:?}")).collect();
    quoted.join(", ")
}

/// Reader that notes the offset and line number where each non-blank line
/// starts, so that a record's line can be found from its byte offset.
///
/// The position that the csv crate (1.4) reports for a record is where the
/// reader stood before the record: after a CRLF row that is the `\n` of the
/// previous line, and before any blank lines it skips, so its line number can
/// be one or more lines short. The record really starts at the first
/// non-blank line at or after that offset.
struct LineStarts<R> {
    inner: R,
    /// Offset of the next byte to be read.
    offset: u64,
    /// Line of the next byte to be read, counting `\n` bytes.
    line: u64,
    at_line_start: bool,
    /// Starts of non-blank lines not yet passed by the CSV records, as
    /// (offset, line).
    starts: VecDeque<(u64, u64)>,
}

impl<R: Read> LineStarts<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            offset: 0,
            line: 1,
            at_line_start: true,
            starts: VecDeque::new(),
        }
    }

    /// Returns the line where the record at `position` starts. Positions
    /// must be passed in increasing order.
    fn line_at(&mut self, position: &csv::Position) -> u64 {
        while self
            .starts
            .front()
            .is_some_and(|&(offset, _)| offset < position.byte())
        {
            self.starts.pop_front();
        }
        self.starts
            .front()
            .map_or(position.line(), |&(_, line)| line)
    }
}

impl<R: Read> Read for LineStarts<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let count = self.inner.read(buf)?;
        for &byte in &buf[..count] {
            if byte == b'\n' {
                self.line += 1;
                self.at_line_start = true;
            } else if byte != b'\r' && self.at_line_start {
                self.starts.push_back((self.offset, self.line));
                self.at_line_start = false;
            }
            self.offset += 1;
        }
        Ok(count)
    }
}
