//! Display of one record in a dry run: header masking, the
//! human-readable form and the JSON Lines form.

use std::io::{self, Write};

use reqwest::header::{HeaderMap, HeaderName};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::config::mask_url;
use crate::delivery::PreparedRequest;

/// Headers whose values a dry run shows. Every other value is masked,
/// because configured headers often carry credentials. The idempotency
/// header, when turned on, is shown as well.
pub const SHOWN_HEADERS: [&str; 3] = ["content-type", "content-length", "accept"];

/// Text shown in place of a masked header value.
pub const MASK: &str = "***";

/// Bytes of a binary body shown as hex in the human-readable form.
const HEX_PREVIEW_BYTES: usize = 32;

/// One record as a dry run shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The input file, as given on the command line.
    pub file: String,
    pub record: u64,
    pub line: u64,
    /// 0-based byte offset of the record in the file.
    pub offset: u64,
    /// The plugin's record key, or `None` for a malformed record.
    pub key: Option<String>,
    pub outcome: Outcome,
}

/// The request a record maps to, or why it maps to none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Request(MaskedRequest),
    Error { kind: ErrorKind, message: String },
}

/// The reason a record has no request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorKind {
    /// The plugin could not parse the record.
    Malformed,
    /// The plugin parsed the record but could not map it to a request.
    Unmappable,
    /// The plugin mapped the record, but the host cannot send the request,
    /// such as one with an invalid header name.
    Unsendable,
}

impl ErrorKind {
    fn name(self) -> &'static str {
        match self {
            ErrorKind::Malformed => "malformed",
            ErrorKind::Unmappable => "unmappable",
            ErrorKind::Unsendable => "unsendable",
        }
    }
}

/// A request with its secrets masked: the URL's password and every header
/// value outside the allow-list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaskedRequest {
    pub method: String,
    pub url: String,
    /// Header names and values in the order the request carries them.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl MaskedRequest {
    /// Masks `request` for display. `idempotency_header` is shown
    /// unmasked along with [`SHOWN_HEADERS`].
    pub fn new(request: &PreparedRequest, idempotency_header: Option<&HeaderName>) -> Self {
        MaskedRequest {
            method: request.method.to_string(),
            url: mask_url(request.url.as_str()),
            headers: mask_headers(&request.headers, idempotency_header),
            body: request.body.to_vec(),
        }
    }
}

/// Returns the headers as text, with every value masked except those of
/// [`SHOWN_HEADERS`] and `idempotency_header`.
pub fn mask_headers(
    headers: &HeaderMap,
    idempotency_header: Option<&HeaderName>,
) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            let unmasked =
                SHOWN_HEADERS.contains(&name.as_str()) || Some(name) == idempotency_header;
            let value = if unmasked {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            } else {
                MASK.to_owned()
            };
            (name.as_str().to_owned(), value)
        })
        .collect()
}

/// Writes `entry` in the human-readable form, followed by a blank line.
///
/// # Errors
///
/// Fails when `out` cannot be written.
pub fn write_human(entry: &Entry, out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "{} record {} (line {})",
        entry.file, entry.record, entry.line
    )?;
    if let Some(key) = &entry.key {
        let key = if key.is_empty() { "(none)" } else { key };
        writeln!(out, "  key: {key}")?;
    }
    match &entry.outcome {
        Outcome::Error { kind, message } => writeln!(out, "  {}: {message}", kind.name())?,
        Outcome::Request(request) => write_human_request(request, out)?,
    }
    writeln!(out)
}

fn write_human_request(request: &MaskedRequest, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "  {} {}", request.method, request.url)?;
    for (name, value) in &request.headers {
        writeln!(out, "  {name}: {value}")?;
    }

    let body = &request.body;
    match std::str::from_utf8(body) {
        _ if body.is_empty() => writeln!(out, "  body: empty"),
        Ok(text) => {
            writeln!(out, "  body ({} bytes):", body.len())?;
            for line in text.lines() {
                writeln!(out, "    {line}")?;
            }
            Ok(())
        }
        Err(_) => {
            let preview = &body[..body.len().min(HEX_PREVIEW_BYTES)];
            let more = if body.len() > preview.len() {
                " ..."
            } else {
                ""
            };
            writeln!(out, "  body ({} bytes, not UTF-8):", body.len())?;
            writeln!(out, "    {}{more}", spaced_hex(preview))
        }
    }
}

/// Writes `entry` as one JSON line.
///
/// The object has `file`, `record`, `line`, `offset` and `key` (`null`
/// for a malformed record). Then follows either `request`, with `method`,
/// `url`, `headers`, `body` and `body_encoding`, or `error`, with `kind`
/// and `message`. `headers` is an object, and a repeated header's values
/// are joined with ", ". The body is the text itself when it is UTF-8
/// (`body_encoding` "utf-8"), and lowercase hex otherwise ("hex").
///
/// # Errors
///
/// Fails when `out` cannot be written.
pub fn write_json(entry: &Entry, out: &mut dyn Write) -> io::Result<()> {
    serde_json::to_writer(&mut *out, &to_json(entry))?;
    writeln!(out)
}

/// The JSON Lines form of an [`Entry`], fields in this order.
#[derive(Serialize)]
struct JsonEntry<'a> {
    file: &'a str,
    record: u64,
    line: u64,
    offset: u64,
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request: Option<JsonRequest<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<JsonError<'a>>,
}

#[derive(Serialize)]
struct JsonRequest<'a> {
    method: &'a str,
    url: &'a str,
    headers: Map<String, Value>,
    body: String,
    body_encoding: &'static str,
}

#[derive(Serialize)]
struct JsonError<'a> {
    kind: ErrorKind,
    message: &'a str,
}

fn to_json(entry: &Entry) -> JsonEntry<'_> {
    let (request, error) = match &entry.outcome {
        Outcome::Request(request) => (Some(request_json(request)), None),
        Outcome::Error { kind, message } => {
            let error = JsonError {
                kind: *kind,
                message,
            };
            (None, Some(error))
        }
    };
    JsonEntry {
        file: &entry.file,
        record: entry.record,
        line: entry.line,
        offset: entry.offset,
        key: entry.key.as_deref(),
        request,
        error,
    }
}

fn request_json(request: &MaskedRequest) -> JsonRequest<'_> {
    let mut headers = Map::new();
    for (name, value) in &request.headers {
        match headers.get_mut(name) {
            Some(Value::String(joined)) => {
                joined.push_str(", ");
                joined.push_str(value);
            }
            _ => {
                headers.insert(name.clone(), value.clone().into());
            }
        }
    }
    let (body, body_encoding) = match std::str::from_utf8(&request.body) {
        Ok(text) => (text.to_owned(), "utf-8"),
        Err(_) => (hex(&request.body), "hex"),
    };
    JsonRequest {
        method: &request.method,
        url: &request.url,
        headers,
        body,
        body_encoding,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn spaced_hex(bytes: &[u8]) -> String {
    let pairs: Vec<String> = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    pairs.join(" ")
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use reqwest::header::HeaderValue;
    use reqwest::{Method, Url};

    use super::*;

    fn request(headers: &[(&str, &str)], body: &[u8]) -> PreparedRequest {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
            map.append(name, HeaderValue::from_str(value).unwrap());
        }
        PreparedRequest {
            method: Method::PUT,
            url: Url::parse("http://user:secret@127.0.0.1:9/airports/JFK").unwrap(),
            headers: map,
            body: Bytes::copy_from_slice(body),
        }
    }

    fn entry(outcome: Outcome) -> Entry {
        Entry {
            file: "a.csv".to_owned(),
            record: 3,
            line: 4,
            offset: 57,
            key: Some("JFK".to_owned()),
            outcome,
        }
    }

    fn human(entry: &Entry) -> String {
        let mut out = Vec::new();
        write_human(entry, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn json(entry: &Entry) -> Value {
        let mut out = Vec::new();
        write_json(entry, &mut out).unwrap();
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(out.iter().filter(|&&byte| byte == b'\n').count(), 1);
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn masking_keeps_only_allowed_header_values() {
        let idempotency = HeaderName::from_static("idempotency-key");
        let request = request(
            &[
                ("Authorization", "Bearer secret"),
                ("X-Api-Key", "k"),
                ("Content-Type", "application/json"),
                ("Accept", "*/*"),
                ("Content-Length", "2"),
                ("Idempotency-Key", "abc-1"),
            ],
            b"{}",
        );

        let headers = mask_headers(&request.headers, Some(&idempotency));

        let value = |name: &str| {
            let found = headers.iter().find(|(n, _)| n == name);
            found.map(|(_, v)| v.as_str()).unwrap()
        };
        assert_eq!(value("authorization"), "***");
        assert_eq!(value("x-api-key"), "***");
        assert_eq!(value("content-type"), "application/json");
        assert_eq!(value("accept"), "*/*");
        assert_eq!(value("content-length"), "2");
        assert_eq!(value("idempotency-key"), "abc-1");
    }

    #[test]
    fn masking_hides_idempotency_header_when_keys_are_off() {
        let request = request(&[("Idempotency-Key", "abc-1")], b"");
        let headers = mask_headers(&request.headers, None);
        assert_eq!(headers, [("idempotency-key".to_owned(), "***".to_owned())]);
    }

    #[test]
    fn masked_request_hides_url_password() {
        let masked = MaskedRequest::new(&request(&[], b""), None);
        assert!(!masked.url.contains("secret"), "{}", masked.url);
        assert!(masked.url.contains("***"), "{}", masked.url);
        assert_eq!(masked.method, "PUT");
    }

    #[test]
    fn human_form_shows_request_lines() {
        let request = request(&[("Authorization", "t"), ("Content-Type", "x/y")], b"a\nb");
        let masked = MaskedRequest::new(&request, None);

        let text = human(&entry(Outcome::Request(masked)));

        let expected = "a.csv record 3 (line 4)\n  key: JFK\n  \
                        PUT http://user:***@127.0.0.1:9/airports/JFK\n  \
                        authorization: ***\n  content-type: x/y\n  \
                        body (3 bytes):\n    a\n    b\n\n";
        assert_eq!(text, expected);
    }

    #[test]
    fn human_form_previews_binary_body_as_hex() {
        let mut body = vec![0xff, 0x00, 0x10];
        body.extend(std::iter::repeat_n(0xab, 40));
        let masked = MaskedRequest::new(&request(&[], &body), None);

        let text = human(&entry(Outcome::Request(masked)));

        assert!(text.contains("  body (43 bytes, not UTF-8):\n"), "{text}");
        let preview = format!("    ff 00 10{} ...\n", " ab".repeat(29));
        assert!(text.contains(&preview), "{text}");
    }

    #[test]
    fn human_form_lists_errors_in_place() {
        let mut malformed = entry(Outcome::Error {
            kind: ErrorKind::Malformed,
            message: "expected 7 fields, found 5".to_owned(),
        });
        malformed.key = None;
        let unmappable = entry(Outcome::Error {
            kind: ErrorKind::Unmappable,
            message: "column \"iata\" is empty".to_owned(),
        });

        assert_eq!(
            human(&malformed),
            "a.csv record 3 (line 4)\n  malformed: expected 7 fields, found 5\n\n"
        );
        assert_eq!(
            human(&unmappable),
            "a.csv record 3 (line 4)\n  key: JFK\n  unmappable: column \"iata\" is empty\n\n"
        );
    }

    #[test]
    fn human_form_names_empty_key_and_body() {
        let mut empty = entry(Outcome::Request(MaskedRequest::new(
            &request(&[], b""),
            None,
        )));
        empty.key = Some(String::new());
        let text = human(&empty);
        assert!(text.contains("  key: (none)\n"), "{text}");
        assert!(text.contains("  body: empty\n"), "{text}");
    }

    #[test]
    fn json_form_has_position_and_request() {
        let request = request(
            &[("Authorization", "t"), ("Content-Type", "x/y")],
            b"{\"a\":1}",
        );
        let masked = MaskedRequest::new(&request, None);

        let value = json(&entry(Outcome::Request(masked)));

        assert_eq!(value["file"], "a.csv");
        assert_eq!(value["record"], 3);
        assert_eq!(value["line"], 4);
        assert_eq!(value["offset"], 57);
        assert_eq!(value["key"], "JFK");
        assert_eq!(value["request"]["method"], "PUT");
        assert_eq!(
            value["request"]["url"],
            "http://user:***@127.0.0.1:9/airports/JFK"
        );
        assert_eq!(value["request"]["headers"]["authorization"], "***");
        assert_eq!(value["request"]["headers"]["content-type"], "x/y");
        assert_eq!(value["request"]["body"], "{\"a\":1}");
        assert_eq!(value["request"]["body_encoding"], "utf-8");
        assert!(value.get("error").is_none());
    }

    #[test]
    fn json_form_encodes_binary_body_as_hex() {
        let masked = MaskedRequest::new(&request(&[], &[0xff, 0x00, 0x7f]), None);
        let value = json(&entry(Outcome::Request(masked)));
        assert_eq!(value["request"]["body"], "ff007f");
        assert_eq!(value["request"]["body_encoding"], "hex");
    }

    #[test]
    fn json_form_joins_repeated_headers() {
        let request = request(&[("Accept", "a/b"), ("Accept", "c/d")], b"");
        let value = json(&entry(Outcome::Request(MaskedRequest::new(&request, None))));
        assert_eq!(value["request"]["headers"]["accept"], "a/b, c/d");
    }

    #[test]
    fn json_form_has_error_kind_and_message() {
        let mut malformed = entry(Outcome::Error {
            kind: ErrorKind::Malformed,
            message: "bad row".to_owned(),
        });
        malformed.key = None;

        let value = json(&malformed);

        assert_eq!(value["key"], Value::Null);
        assert_eq!(value["error"]["kind"], "malformed");
        assert_eq!(value["error"]["message"], "bad row");
        assert!(value.get("request").is_none());
    }
}
