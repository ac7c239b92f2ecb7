//! Mapping one record to its request, its read-back request and its key.

use std::borrow::Cow;

use serde_json::value::RawValue;

use crate::config::Config;
use crate::record::{ReadBack, Request};
use crate::template::{is_dot_segment, push_encoded, PathTemplate, Segment};
use crate::value::{self, kind, scalar_text, Kind, Locator};

/// The content type of every request body.
pub const CONTENT_TYPE: &str = "application/json";

/// The method of every read-back request.
const READ_METHOD: &str = "GET";

/// Parses `raw` again and builds the record's request.
///
/// # Errors
///
/// Returns a message when `raw` is not one JSON value, when a path
/// placeholder's value is missing, null, an empty string, an object or an
/// array, or makes a dot segment such as `..`. Also when `fields` is set and
/// the record is not an object.
pub fn map_record(raw: &[u8], config: &Config) -> Result<Request, String> {
    let root = parse_record(raw)?;
    build_request(root, config)
}

/// Parses `raw` again and builds the request that reads the record back: a
/// GET of `read_path`, or of the record's own path when the method is PUT
/// and no `read_path` is set. The expected JSON is the request body. Returns
/// `None` for other methods without a `read_path`, because the record's path
/// then does not name it.
///
/// # Errors
///
/// As for [`map_record`], and when a `read_path` placeholder's value cannot
/// be a path segment.
pub fn read_back(raw: &[u8], config: &Config) -> Result<Option<ReadBack>, String> {
    if config.read_path.is_none() && config.method != "PUT" {
        return Ok(None);
    }

    let root = parse_record(raw)?;
    let request = build_request(root, config)?;
    let path = match &config.read_path {
        Some(read_path) => build_path(root, read_path, "read_path template")?,
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

/// Builds a record's key from the values that `key` selects: the text of a
/// single value, or a JSON array of the texts of several.
///
/// A string contributes its decoded characters, and a number or boolean its
/// JSON text, the same text as in a path, so records that map to the same
/// path share a key. An object or array contributes its JSON text as in the
/// line. A missing or null value contributes an empty string, so with a
/// single key the record has no ordering constraint.
pub fn record_key(root: &RawValue, key: &[Locator]) -> String {
    let part = |locator: &Locator| -> Cow<'_, str> {
        let Some(value) = locator.find(root) else {
            return Cow::Borrowed("");
        };
        match scalar_text(value) {
            Ok(text) => text,
            Err(Kind::Null) => Cow::Borrowed(""),
            Err(_) => Cow::Borrowed(value.get()),
        }
    };
    match key {
        [] => String::new(),
        [locator] => part(locator).into_owned(),
        locators => {
            let parts: Vec<Cow<'_, str>> = locators.iter().map(part).collect();
            // Serialising a list of strings cannot fail.
            serde_json::to_string(&parts).unwrap_or_default()
        }
    }
}

fn parse_record(raw: &[u8]) -> Result<&RawValue, String> {
    value::parse_line(raw).map_err(|message| format!("the record is not one JSON value: {message}"))
}

fn build_request(root: &RawValue, config: &Config) -> Result<Request, String> {
    Ok(Request {
        method: config.method.clone(),
        path: build_path(root, &config.path, "path template")?,
        headers: vec![("content-type".to_owned(), CONTENT_TYPE.to_owned())],
        body: build_body(root, config.fields.as_deref())?,
    })
}

/// A placeholder's value as written into a path.
struct PathValue<'a> {
    /// The byte range of the encoded value in the path.
    start: usize,
    end: usize,
    placeholder: &'a str,
    value: Cow<'a, str>,
}

/// Fills a path template with the record's percent-encoded values.
/// `template` names the template in messages.
fn build_path(
    root: &RawValue,
    path_template: &PathTemplate,
    template: &str,
) -> Result<String, String> {
    let mut path = String::with_capacity(64);
    let mut values = Vec::new();
    for segment in path_template.segments() {
        let locator = match segment {
            Segment::Literal(literal) => {
                path.push_str(literal);
                continue;
            }
            Segment::Placeholder(locator) => locator,
        };

        let value = placeholder_value(root, locator, template)?;
        let start = path.len();
        push_encoded(&mut path, &value);
        values.push(PathValue {
            start,
            end: path.len(),
            placeholder: locator.text(),
            value,
        });
    }
    check_dot_segments(&path, &values, template)?;
    Ok(path)
}

/// Returns the text that replaces a placeholder.
fn placeholder_value<'a>(
    root: &'a RawValue,
    locator: &'a Locator,
    template: &str,
) -> Result<Cow<'a, str>, String> {
    let name = locator.text();
    let root_kind = kind(root);
    if matches!(locator, Locator::Field(_)) && root_kind != Kind::Object {
        return Err(format!(
            "the record is {}, not an object, so it has no field {name:?} for the {template}; \
             use a JSON pointer such as /0 for arrays",
            root_kind.describe()
        ));
    }

    let Some(value) = locator.find(root) else {
        return Err(format!(
            "field {name:?} is missing but the {template} needs it"
        ));
    };
    match scalar_text(value) {
        Ok(text) if text.is_empty() => Err(format!(
            "field {name:?} is an empty string but the {template} needs a value"
        )),
        Ok(text) => Ok(text),
        Err(Kind::Null) => Err(format!(
            "field {name:?} is null but the {template} needs it"
        )),
        Err(other) => Err(format!(
            "field {name:?} is {} but the {template} needs a string, number or boolean; \
             point the placeholder at a member inside it",
            other.describe()
        )),
    }
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
            sources.dedup_by_key(|v| v.placeholder);
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
            "field {:?} has value {:?} which cannot be a path segment in the {template}, \
             because {REASON}; change the value or move the placeholder into the query",
            source.placeholder, source.value
        ),
        [source] => format!(
            "field {:?} has value {:?} which makes the path segment {segment:?} in the \
             {template} a dot segment, so {REASON}; change the value or the {template}",
            source.placeholder, source.value
        ),
        // `PathTemplate::parse` rejects dot segments without placeholders.
        [] => format!(
            "the {template} contains the dot segment {segment:?}, so {REASON}; change the \
             {template}"
        ),
        sources => {
            let names: Vec<String> = sources
                .iter()
                .map(|v| format!("{:?}", v.placeholder))
                .collect();
            let values: Vec<String> = sources.iter().map(|v| format!("{:?}", v.value)).collect();
            format!(
                "fields {} have values {} which make the path segment {segment:?} in the \
                 {template} a dot segment, so {REASON}; change the values or the {template}",
                names.join(", "),
                values.join(", ")
            )
        }
    }
}

/// Builds the body: the record's value exactly as in its line, or with
/// `fields`, an object with those members of the record in the order of
/// `fields`, leaving out the missing ones.
fn build_body(root: &RawValue, fields: Option<&[String]>) -> Result<Vec<u8>, String> {
    let Some(fields) = fields else {
        return Ok(root.get().as_bytes().to_vec());
    };
    let Some(members) = value::members(root) else {
        return Err(format!(
            "the record is {}, not an object, so fields cannot select its members; remove \
             fields to send the whole record",
            kind(root).describe()
        ));
    };

    let mut body = Vec::with_capacity(root.get().len() + 2);
    body.push(b'{');
    for field in fields {
        let Some(value) = members.get(field) else {
            continue;
        };
        if body.len() > 1 {
            body.push(b',');
        }
        // Serialising a string cannot fail.
        serde_json::to_writer(&mut body, field).map_err(|error| error.to_string())?;
        body.push(b':');
        body.extend_from_slice(value.get().as_bytes());
    }
    body.push(b'}');
    Ok(body)
}

#[cfg(test)]
mod tests;
