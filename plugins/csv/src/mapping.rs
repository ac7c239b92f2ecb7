//! Mapping one record to its HTTP request and to the request that reads it
//! back.

use std::borrow::Cow;
use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::header::{Header, PathPart};
use crate::parser::{check_record, record_key};
use crate::record::{ReadBack, Request};
use crate::template::{is_dot_segment, push_encoded};
use crate::tokenizer::{Field, Step, Tokenizer};

/// The content type of every request body.
pub const CONTENT_TYPE: &str = "application/json";

/// The method of every read-back request.
const READ_METHOD: &str = "GET";

/// A record split into fields and checked against the header.
struct Row<'a> {
    text: &'a str,
    fields: &'a [Field],
    header: &'a Header,
    null: Option<&'a str>,
    /// The id derived from the key, when `id_field` is set.
    id: Option<String>,
}

/// Splits `raw` again with `tokenizer` and builds the record's request.
///
/// # Errors
///
/// Returns a message when `raw` is not exactly one well-formed record with
/// the header's number of fields, or when `id_field` is set and every key
/// column is empty. Also when a path placeholder's value is empty, null or
/// makes a dot segment such as `..`.
pub fn map_record(
    raw: &[u8],
    header: &Header,
    config: &Config,
    tokenizer: &mut Tokenizer,
) -> Result<Request, String> {
    let row = split(raw, header, config, tokenizer)?;
    build_request(&row, config)
}

/// Splits `raw` again with `tokenizer` and builds the request that reads the
/// record back: a GET of `read_path`, or of the record's own path when the
/// method is PUT and no `read_path` is set. Returns `None` for other methods
/// without a `read_path`, because the record's path then does not name it.
///
/// # Errors
///
/// As for [`map_record`], and when a `read_path` placeholder's value is
/// empty, null or makes a dot segment.
pub fn read_back(
    raw: &[u8],
    header: &Header,
    config: &Config,
    tokenizer: &mut Tokenizer,
) -> Result<Option<ReadBack>, String> {
    if header.read_path().is_none() && config.method != "PUT" {
        return Ok(None);
    }

    let row = split(raw, header, config, tokenizer)?;
    let request = build_request(&row, config)?;
    let path = match header.read_path() {
        Some(parts) => build_path(&row, parts, "read_path template")?,
        None => request.path,
    };
    Ok(Some(ReadBack {
        request: Request {
            method: READ_METHOD.to_owned(),
            path,
            headers: vec![("accept".to_owned(), CONTENT_TYPE.to_owned())],
            body: Vec::new(),
        },
        expected: request.body,
    }))
}

/// Returns the lowercase hex SHA-256 digest of `key`, truncated to `length`
/// digits (at most 64).
pub fn derive_id(key: &str, length: usize) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let mut id = String::with_capacity(2 * digest.len());
    for byte in digest {
        // Writing to a String cannot fail.
        let _ = write!(id, "{byte:02x}");
    }
    id.truncate(length);
    id
}

fn split<'a>(
    raw: &'a [u8],
    header: &'a Header,
    config: &'a Config,
    tokenizer: &'a mut Tokenizer,
) -> Result<Row<'a>, String> {
    tokenizer.reset();
    let mut step = tokenizer.advance(raw, usize::MAX);
    if step == Step::Incomplete {
        step = tokenizer.finish(raw);
    }

    let len = match step {
        Step::Record { len: 0, .. } => return Err("the record is empty".to_owned()),
        Step::Record { len, next } if next == raw.len() => len,
        Step::Record { .. } => {
            return Err(
                "the record holds a line break outside quotes, so it is more than \
                        one record"
                    .to_owned(),
            )
        }
        Step::Unterminated | Step::BrokenQuote => {
            return Err("the record has an unterminated quoted field".to_owned())
        }
        Step::Overflow | Step::Incomplete => {
            return Err("the record could not be split into fields".to_owned())
        }
    };

    let quote_error = tokenizer.quote_error();
    let fields = tokenizer.fields();
    let text = check_record(&raw[..len], fields, quote_error, header)?;
    let id = match &config.id_field {
        Some(id_field) => Some(record_id(text, fields, header, id_field, config.id_length)?),
        None => None,
    };
    Ok(Row {
        text,
        fields,
        header,
        null: config.null.as_deref(),
        id,
    })
}

/// Derives the record's id from its key.
fn record_id(
    text: &str,
    fields: &[Field],
    header: &Header,
    id_field: &str,
    length: usize,
) -> Result<String, String> {
    let key_columns = header.key_columns();
    let all_empty = key_columns
        .iter()
        .all(|&index| fields.get(index).is_none_or(|f| f.start == f.end));
    if all_empty {
        let names: Vec<String> = key_columns
            .iter()
            .map(|&index| format!("{:?}", header.names()[index]))
            .collect();
        let columns = match names.as_slice() {
            [name] => format!("key column {name} is"),
            names => format!("key columns {} are all", names.join(", ")),
        };
        return Err(format!(
            "{columns} empty, so no id can be derived for id_field {id_field:?}"
        ));
    }

    let key = record_key(text, fields, header)?;
    Ok(derive_id(&key, length))
}

fn build_request(row: &Row<'_>, config: &Config) -> Result<Request, String> {
    Ok(Request {
        method: config.method.clone(),
        path: build_path(row, row.header.path(), "path template")?,
        headers: vec![("content-type".to_owned(), CONTENT_TYPE.to_owned())],
        body: build_body(row, config.id_field.as_deref())?,
    })
}

/// A placeholder's value as written into a path.
struct PathValue<'a> {
    /// The byte range of the encoded value in the path.
    start: usize,
    end: usize,
    column: &'a str,
    value: Cow<'a, str>,
}

/// Fills a path template with the record's percent-encoded values and id.
/// `template` names the template in messages.
fn build_path(row: &Row<'_>, parts: &[PathPart], template: &str) -> Result<String, String> {
    let mut path = String::with_capacity(64);
    let mut values = Vec::new();
    for part in parts {
        let index = match part {
            PathPart::Literal(literal) => {
                path.push_str(literal);
                continue;
            }
            PathPart::Id => {
                // The header resolves `Id` parts only when `id_field` is set,
                // and `split` then always derives an id. The dot-segment
                // check needs no `PathValue` for it, because an id has at
                // least 8 hex digits and a dot segment at most 6 bytes.
                let id = row
                    .id
                    .as_deref()
                    .ok_or("no id was derived for the id placeholder")?;
                path.push_str(id);
                continue;
            }
            PathPart::Column(index) => *index,
        };

        let name = row.header.names().get(index).map_or("", String::as_str);
        let value = row
            .fields
            .get(index)
            .map(|f| f.value(row.text))
            .unwrap_or_default();
        if value.is_empty() {
            return Err(format!(
                "column {name:?} is empty but the {template} needs it"
            ));
        }
        if row.null == Some(value.as_ref()) {
            return Err(format!(
                "column {name:?} is null ({value:?}) but the {template} needs it"
            ));
        }
        let start = path.len();
        push_encoded(&mut path, &value);
        values.push(PathValue {
            start,
            end: path.len(),
            column: name,
            value,
        });
    }
    check_dot_segments(&path, &values, template)?;
    Ok(path)
}

/// Rejects a built path with a dot segment, such as `/r/..` from the value
/// `..`, because URL normalisation would send the request to another
/// resource. Only segments of the path count, not the query.
fn check_dot_segments(path: &str, values: &[PathValue<'_>], template: &str) -> Result<(), String> {
    // Values percent-encode `?` and the template rejects `#`, so the first
    // `?` ends the path.
    let path_end = path.find('?').unwrap_or(path.len());
    let mut segment_start = 0;
    for segment in path[..path_end].split('/') {
        let segment_end = segment_start + segment.len();
        if is_dot_segment(segment) {
            let mut sources: Vec<&PathValue> = values
                .iter()
                .filter(|v| v.start < segment_end && segment_start < v.end)
                .collect();
            sources.dedup_by_key(|v| v.column);
            return Err(dot_segment_message(segment, &sources, template));
        }
        segment_start = segment_end + 1;
    }
    Ok(())
}

/// Describes a dot segment by the placeholder values that built it.
fn dot_segment_message(segment: &str, sources: &[&PathValue<'_>], template: &str) -> String {
    const REASON: &str = "URL normalisation would remove it and send the request to another path";
    match sources {
        [source] if source.value == segment => format!(
            "column {:?} has value {:?} which cannot be a path segment in the {template}, \
             because {REASON}; change the value or move the placeholder into the query",
            source.column, source.value
        ),
        [source] => format!(
            "column {:?} has value {:?} which makes the path segment {segment:?} in the \
             {template} a dot segment, so {REASON}; change the value or the {template}",
            source.column, source.value
        ),
        // `PathTemplate::parse` rejects dot segments without placeholders.
        [] => format!(
            "the {template} contains the dot segment {segment:?}, so {REASON}; change the \
             {template}"
        ),
        sources => {
            let columns: Vec<String> = sources.iter().map(|v| format!("{:?}", v.column)).collect();
            let values: Vec<String> = sources.iter().map(|v| format!("{:?}", v.value)).collect();
            format!(
                "columns {} have values {} which make the path segment {segment:?} in the \
                 {template} a dot segment, so {REASON}; change the values or the {template}",
                columns.join(", "),
                values.join(", ")
            )
        }
    }
}

/// Builds the JSON object from column names to the record's values, in
/// header order, with `null` for values equal to the null token. The id
/// comes first when `id_field` is set.
fn build_body(row: &Row<'_>, id_field: Option<&str>) -> Result<Vec<u8>, String> {
    // Names, quotes and separators add roughly as much as the values.
    let mut body = Vec::with_capacity(2 * row.text.len() + 2);
    body.push(b'{');
    if let (Some(id_field), Some(id)) = (id_field, &row.id) {
        write_json(&mut body, id_field)?;
        body.push(b':');
        write_json(&mut body, id)?;
        if !row.fields.is_empty() {
            body.push(b',');
        }
    }

    for (index, field) in row.fields.iter().enumerate() {
        if index > 0 {
            body.push(b',');
        }
        body.extend_from_slice(row.header.json_name(index));

        let value = field.value(row.text);
        if row.null == Some(value.as_ref()) {
            body.extend_from_slice(b"null");
        } else {
            write_json(&mut body, &value).map_err(|error| {
                let label = row.header.field_label(index);
                format!("cannot write field {label} as JSON: {error}")
            })?;
        }
    }
    body.push(b'}');
    Ok(body)
}

fn write_json(body: &mut Vec<u8>, value: &str) -> Result<(), String> {
    serde_json::to_writer(body, value).map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derive_id_is_truncated_sha256_hex() {
        // SHA-256("abc") from FIPS 180-2, appendix B.1.
        let full = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(derive_id("abc", 64), full);
        assert_eq!(derive_id("abc", 15), &full[..15]);
        assert_eq!(derive_id("abc", 8), &full[..8]);
    }

    #[test]
    fn derive_id_differs_by_key() {
        assert_ne!(derive_id("00M", 15), derive_id("00R", 15));
        assert_eq!(derive_id("00M", 15), derive_id("00M", 15));
    }
}
