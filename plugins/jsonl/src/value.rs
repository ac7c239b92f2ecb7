//! Parsing one line as JSON, and selecting values from it by field name or
//! JSON pointer.
//!
//! Values stay [`RawValue`]s, slices of the line's own text, so a number
//! such as `1.10` or `1e400` keeps its exact text in paths, keys and bodies.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::value::RawValue;

/// The source of a placeholder's or key part's value in a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Locator {
    /// A member of the top-level object, by name.
    Field(String),
    /// A JSON pointer (RFC 6901), such as `/properties/code`.
    Pointer {
        /// The pointer as written, for messages.
        text: String,
        /// The reference tokens with `~1` and `~0` unescaped.
        tokens: Vec<String>,
    },
}

impl Locator {
    /// Parses a field name, or a JSON pointer when `text` starts with `/`.
    ///
    /// # Errors
    ///
    /// Returns a message when `text` is empty, or when a pointer contains a
    /// `~` that is not followed by `0` or `1`.
    pub fn parse(text: &str) -> Result<Locator, String> {
        if text.is_empty() {
            return Err(
                "empty field name; use a field name such as id or a JSON pointer \
                        such as /properties/code"
                    .to_owned(),
            );
        }
        let Some(pointer) = text.strip_prefix('/') else {
            return Ok(Locator::Field(text.to_owned()));
        };

        let mut tokens = Vec::new();
        for token in pointer.split('/') {
            tokens.push(unescape_token(token).ok_or_else(|| {
                format!(
                    "invalid JSON pointer {text:?}: \"~\" must be followed by 0 (for ~) or 1 \
                     (for /)"
                )
            })?);
        }
        Ok(Locator::Pointer {
            text: text.to_owned(),
            tokens,
        })
    }

    /// Returns the field name or pointer as written.
    pub fn text(&self) -> &str {
        match self {
            Locator::Field(name) => name,
            Locator::Pointer { text, .. } => text,
        }
    }

    /// Returns the value that the locator selects in `root`, or `None` when
    /// the record has no such value.
    pub fn find<'a>(&self, root: &'a RawValue) -> Option<&'a RawValue> {
        match self {
            Locator::Field(name) => member(root, name),
            Locator::Pointer { tokens, .. } => {
                let mut value = root;
                for token in tokens {
                    value = child(value, token)?;
                }
                Some(value)
            }
        }
    }
}

/// Unescapes one reference token of a JSON pointer: `~1` is `/` and `~0` is
/// `~`. Returns `None` for any other `~` sequence.
fn unescape_token(token: &str) -> Option<String> {
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        if c != '~' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('0') => out.push('~'),
            Some('1') => out.push('/'),
            _ => return None,
        }
    }
    Some(out)
}

/// The type of a JSON value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Object,
    Array,
    String,
    Number,
    Boolean,
    Null,
}

impl Kind {
    /// Returns the type's name with its article, for messages: "an object".
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Object => "an object",
            Kind::Array => "an array",
            Kind::String => "a string",
            Kind::Number => "a number",
            Kind::Boolean => "a boolean",
            Kind::Null => "null",
        }
    }
}

/// Returns the type of `value`, from its first byte.
pub fn kind(value: &RawValue) -> Kind {
    match value.get().trim_start().as_bytes().first() {
        Some(b'{') => Kind::Object,
        Some(b'[') => Kind::Array,
        Some(b'"') => Kind::String,
        Some(b't' | b'f') => Kind::Boolean,
        Some(b'n') => Kind::Null,
        _ => Kind::Number,
    }
}

/// Parses one line as a single JSON value.
///
/// # Errors
///
/// Returns a message for invalid UTF-8, with the byte offset in the line, or
/// for invalid JSON, with serde_json's description and column. serde_json
/// (1.0.154) counts the column in bytes from the start of the line.
pub fn parse_line(line: &[u8]) -> Result<&RawValue, String> {
    let text = std::str::from_utf8(line)
        .map_err(|error| format!("invalid UTF-8 at byte {} of the line", error.valid_up_to()))?;

    serde_json::from_str::<&RawValue>(text).map_err(|error| {
        let message = error.to_string();
        let suffix = format!(" at line {} column {}", error.line(), error.column());
        let description = message.strip_suffix(&suffix).unwrap_or(&message);
        format!("invalid JSON at column {}: {description}", error.column())
    })
}

/// Returns the members of an object, or `None` when `value` is not an
/// object. A name that appears more than once keeps its last value, as in
/// `serde_json::Value`.
pub fn members(value: &RawValue) -> Option<HashMap<String, &RawValue>> {
    if kind(value) != Kind::Object {
        return None;
    }
    serde_json::from_str(value.get()).ok()
}

/// Returns the member `name` of an object.
fn member<'a>(value: &'a RawValue, name: &str) -> Option<&'a RawValue> {
    members(value)?.get(name).copied()
}

/// Returns the child that one reference token selects: a member of an
/// object, or an element of an array for a token such as `0` or `12`.
fn child<'a>(value: &'a RawValue, token: &str) -> Option<&'a RawValue> {
    match kind(value) {
        Kind::Object => member(value, token),
        Kind::Array => {
            // RFC 6901 allows no sign and no leading zeros in an index.
            let digits = token.bytes().all(|b| b.is_ascii_digit());
            if token.is_empty() || !digits || (token.len() > 1 && token.starts_with('0')) {
                return None;
            }
            let index: usize = token.parse().ok()?;
            let elements: Vec<&RawValue> = serde_json::from_str(value.get()).ok()?;
            elements.get(index).copied()
        }
        _ => None,
    }
}

/// Returns the text of a string, number or boolean as it goes into a path
/// or key: a string's decoded characters, or a number's or boolean's JSON
/// text exactly as in the line. Returns the kind of any other value.
pub fn scalar_text(value: &RawValue) -> Result<Cow<'_, str>, Kind> {
    match kind(value) {
        Kind::String => {
            // A `RawValue` is always valid JSON, so decoding its string cannot fail.
            let text: String = serde_json::from_str(value.get()).map_err(|_| Kind::String)?;
            Ok(Cow::Owned(text))
        }
        Kind::Number | Kind::Boolean => Ok(Cow::Borrowed(value.get().trim())),
        other => Err(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> &RawValue {
        parse_line(text.as_bytes()).unwrap()
    }

    fn found<'a>(locator: &str, root: &'a RawValue) -> Option<&'a str> {
        Locator::parse(locator)
            .unwrap()
            .find(root)
            .map(RawValue::get)
    }

    #[test]
    fn parses_field_names() {
        assert_eq!(
            Locator::parse("US Gross").unwrap(),
            Locator::Field("US Gross".to_owned())
        );
    }

    #[test]
    fn parses_pointer_escapes() {
        let locator = Locator::parse("/a~1b/c~0d/~01").unwrap();
        let Locator::Pointer { text, tokens } = locator else {
            panic!("expected a pointer");
        };
        assert_eq!(text, "/a~1b/c~0d/~01");
        assert_eq!(tokens, ["a/b", "c~d", "~1"]);
    }

    #[test]
    fn parses_root_member_pointer() {
        let locator = Locator::parse("/").unwrap();
        assert_eq!(
            locator,
            Locator::Pointer {
                text: "/".to_owned(),
                tokens: vec![String::new()]
            }
        );
    }

    #[test]
    fn rejects_bad_locators() {
        let message = Locator::parse("").unwrap_err();
        assert!(message.starts_with("empty field name"), "{message}");

        for pointer in ["/a~", "/a~2", "/~x/b"] {
            let message = Locator::parse(pointer).unwrap_err();
            assert!(
                message.starts_with(&format!("invalid JSON pointer {pointer:?}")),
                "{message}"
            );
        }
    }

    #[test]
    fn finds_members_and_elements() {
        let root = raw(r#"{"id":"a","p":{"c":[10, 11.50 ,{"x/y":true,"~":null}]},"":0}"#);
        assert_eq!(found("id", root), Some(r#""a""#));
        assert_eq!(found("/id", root), Some(r#""a""#));
        assert_eq!(found("/p/c/0", root), Some("10"));
        assert_eq!(found("/p/c/1", root), Some("11.50"));
        assert_eq!(found("/p/c/2/x~1y", root), Some("true"));
        assert_eq!(found("/p/c/2/~0", root), Some("null"));
        assert_eq!(found("/", root), Some("0"));
        assert_eq!(
            found("/p/c", root),
            Some(r#"[10, 11.50 ,{"x/y":true,"~":null}]"#)
        );
    }

    #[test]
    fn missing_values_are_none() {
        let root = raw(r#"{"id":"a","p":{"c":[10,11]}}"#);
        let missing = [
            "name", "/name", "/p/c/2", "/p/c/01", "/p/c/-", "/p/c/+1", "/p/c/", "/id/0", "/p/c/0/x",
        ];
        for locator in missing {
            assert_eq!(found(locator, root), None, "{locator}");
        }
        // A field name never indexes an array.
        assert_eq!(found("0", raw("[1]")), None);
        assert_eq!(found("/0", raw("[1]")), Some("1"));
    }

    #[test]
    fn duplicate_member_keeps_last() {
        let root = raw(r#"{"id":1,"id":2}"#);
        assert_eq!(found("id", root), Some("2"));
    }

    #[test]
    fn escaped_member_names_match() {
        let root = raw(r#"{"caf\u00e9":1,"a\"b":2}"#);
        assert_eq!(found("café", root), Some("1"));
        assert_eq!(found("a\"b", root), Some("2"));
    }

    #[test]
    fn kinds_follow_first_byte() {
        let cases = [
            ("{}", Kind::Object),
            ("[]", Kind::Array),
            (r#""x""#, Kind::String),
            ("-1", Kind::Number),
            ("0.5", Kind::Number),
            ("true", Kind::Boolean),
            ("false", Kind::Boolean),
            ("null", Kind::Null),
        ];
        for (text, expected) in cases {
            assert_eq!(kind(raw(text)), expected, "{text}");
        }
    }

    #[test]
    fn scalar_text_keeps_number_text() {
        let text = |json: &str| scalar_text(raw(json)).map(Cow::into_owned);
        assert_eq!(text(r#""a\/b \u00e9""#), Ok("a/b é".to_owned()));
        assert_eq!(text("1.10"), Ok("1.10".to_owned()));
        assert_eq!(text("1e400"), Ok("1e400".to_owned()));
        assert_eq!(text("-0"), Ok("-0".to_owned()));
        assert_eq!(
            text("12345678901234567890123"),
            Ok("12345678901234567890123".to_owned())
        );
        assert_eq!(text("true"), Ok("true".to_owned()));
        assert_eq!(text("null"), Err(Kind::Null));
        assert_eq!(text("{}"), Err(Kind::Object));
        assert_eq!(text("[1]"), Err(Kind::Array));
    }

    #[test]
    fn parse_line_trims_whitespace() {
        assert_eq!(raw(" \t{\"a\": 1} \r").get(), "{\"a\": 1}");
    }

    #[test]
    fn parse_line_reports_column() {
        let message = parse_line(br#"{"a":1,}"#).unwrap_err();
        assert_eq!(message, "invalid JSON at column 8: key must be a string");

        let message = parse_line(br#"{"a":1"#).unwrap_err();
        assert_eq!(
            message,
            "invalid JSON at column 6: EOF while parsing an object"
        );

        let message = parse_line(b"{} {}").unwrap_err();
        assert_eq!(message, "invalid JSON at column 4: trailing characters");
    }

    #[test]
    fn parse_line_rejects_invalid_utf8() {
        let message = parse_line(b"{\"a\":\"\xff\"}").unwrap_err();
        assert_eq!(message, "invalid UTF-8 at byte 6 of the line");
    }
}
