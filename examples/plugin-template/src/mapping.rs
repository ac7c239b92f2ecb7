//! Records to requests: the request that delivers a record, and the one
//! with which `sluice verify` reads it back.
//!
//! Both work from the record's raw bytes and the configuration alone. The
//! host may map a record long after it was parsed, or in another instance
//! of the plugin, so mapping must not depend on the parser's progress.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::{Config, ReadBack, Request};

/// Bytes that are percent-encoded in a key: all but the RFC 3986
/// unreserved characters (`ALPHA / DIGIT / "-" / "." / "_" / "~"`), so a
/// key can never add a path segment, a query or a fragment.
const KEY_ENCODE_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

const JSON: &str = "application/json";

/// Returns a record's line without the CR of a CRLF, which `raw` keeps.
pub fn line_text(raw: &[u8]) -> &[u8] {
    raw.strip_suffix(b"\r").unwrap_or(raw)
}

/// Returns a line's record key, its first whitespace-separated word, or
/// `None` for a blank line.
pub fn record_key(text: &str) -> Option<&str> {
    text.split_whitespace().next()
}

/// Builds the request that delivers a record: `PUT {prefix}/{key}` with
/// the body `{"key": KEY, "text": LINE}`.
///
/// # Errors
///
/// Returns a message when `raw` is not a record that the parser returns,
/// or when the key is `.` or `..`, which cannot name a resource.
pub fn map_record(config: &Config, raw: &[u8]) -> Result<Request, String> {
    let text = std::str::from_utf8(line_text(raw))
        .map_err(|error| format!("record is not valid UTF-8: {error}"))?;
    let key = record_key(text).ok_or("record is blank")?;

    // URL parsers resolve `.` and `..` segments, even percent-encoded, so
    // such a key would address another resource than its own. The host
    // would reject the request too, but this message names the fix.
    if key == "." || key == ".." {
        return Err(format!(
            "key {key:?} cannot be a path segment, because URLs resolve it to another \
             resource; change the line's first word"
        ));
    }

    let path = format!(
        "{}/{}",
        config.prefix,
        utf8_percent_encode(key, KEY_ENCODE_SET)
    );
    let body = serde_json::json!({ "key": key, "text": text });
    Ok(Request {
        method: "PUT".to_owned(),
        path,
        headers: vec![("content-type".to_owned(), JSON.to_owned())],
        body: serde_json::to_vec(&body).expect("a JSON value serializes"),
    })
}

/// Builds the check for `sluice verify`: a GET of the record's path,
/// whose response must contain the body that the PUT sent.
///
/// # Errors
///
/// As for [`map_record`].
pub fn read_back(config: &Config, raw: &[u8]) -> Result<ReadBack, String> {
    let put = map_record(config, raw)?;
    Ok(ReadBack {
        request: Request {
            method: "GET".to_owned(),
            path: put.path,
            headers: vec![("accept".to_owned(), JSON.to_owned())],
            body: Vec::new(),
        },
        expected: put.body,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn config(prefix: &str) -> Config {
        Config {
            prefix: prefix.to_owned(),
            max_line_bytes: 100,
        }
    }

    fn body(request: &Request) -> Value {
        serde_json::from_slice(&request.body).unwrap()
    }

    #[test]
    fn record_becomes_put_with_json_body() {
        let request = map_record(&config("/notes"), b"alpha  some text").unwrap();
        assert_eq!(request.method, "PUT");
        assert_eq!(request.path, "/notes/alpha");
        assert_eq!(
            request.headers,
            [("content-type".to_owned(), "application/json".to_owned())]
        );
        assert_eq!(
            body(&request),
            json!({"key": "alpha", "text": "alpha  some text"})
        );
    }

    #[test]
    fn key_is_percent_encoded() {
        let cases = [
            ("a/b", "/n/a%2Fb"),
            ("q?x=1#f", "/n/q%3Fx%3D1%23f"),
            ("Zoë", "/n/Zo%C3%AB"),
            ("50%", "/n/50%25"),
            ("a.b-c_d~e", "/n/a.b-c_d~e"),
            ("...", "/n/..."),
        ];
        for (key, path) in cases {
            let request = map_record(&config("/n"), format!("{key} text").as_bytes()).unwrap();
            assert_eq!(request.path, path, "{key:?}");
            assert_eq!(body(&request)["key"], key, "{key:?}");
        }
    }

    #[test]
    fn root_prefix_gives_one_segment() {
        let request = map_record(&config(""), b"alpha").unwrap();
        assert_eq!(request.path, "/alpha");
    }

    #[test]
    fn dot_segment_keys_are_errors() {
        for raw in [&b". text"[..], b".. text"] {
            let message = map_record(&config("/n"), raw).unwrap_err();
            assert!(message.contains("cannot be a path segment"), "{message}");
        }
    }

    #[test]
    fn bytes_that_are_not_a_record_are_errors() {
        assert!(map_record(&config("/n"), b"\xff").is_err());
        assert!(map_record(&config("/n"), b"  ").is_err());
    }

    #[test]
    fn read_back_gets_the_same_path() {
        let check = read_back(&config("/notes"), b"alpha one").unwrap();
        assert_eq!(check.request.method, "GET");
        assert_eq!(check.request.path, "/notes/alpha");
        assert!(check.request.body.is_empty());
        let expected: Value = serde_json::from_slice(&check.expected).unwrap();
        assert_eq!(expected, json!({"key": "alpha", "text": "alpha one"}));
    }
}
