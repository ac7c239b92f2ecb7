//! The request path template, such as `/quakes/{id}` or
//! `/movies/{/Title}?year={/Release Date}`. The percent-encoding and
//! dot-segment rules are the same as in the CSV plugin.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::value::Locator;

/// Bytes that are percent-encoded in a value substituted into the path or
/// query: everything except the RFC 3986 unreserved characters
/// (`ALPHA / DIGIT / "-" / "." / "_" / "~"`), so a value can never add a
/// path segment, a query parameter or a fragment.
const VALUE_ENCODE_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// One piece of a path template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// Text copied into the path as is.
    Literal(String),
    /// A `{field}` or `{/json/pointer}` placeholder, replaced by the
    /// percent-encoded value.
    Placeholder(Locator),
}

/// A parsed path template: literal text and placeholders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathTemplate {
    segments: Vec<Segment>,
}

impl PathTemplate {
    /// Parses a template that starts with `/`.
    ///
    /// # Errors
    ///
    /// Returns a message when the template does not start with `/`, when a
    /// brace is unbalanced or nested, or when a placeholder is empty or an
    /// invalid JSON pointer. Also when a path segment without a placeholder
    /// is a dot segment such as `..`.
    /// Literal text must not contain a character that is invalid in a URL
    /// path or query, such as a space or `#`.
    pub fn parse(template: &str) -> Result<PathTemplate, String> {
        if !template.starts_with('/') {
            return Err(format!(
                "path template {template:?} must start with \"/\", such as /items/{{id}}"
            ));
        }

        let mut segments = Vec::new();
        let mut literal = String::new();
        // Byte offset of the `{` that opened the current placeholder.
        let mut open: Option<usize> = None;

        for (index, c) in template.char_indices() {
            match (c, open) {
                ('{', Some(start)) => {
                    return Err(format!(
                        "nested \"{{\" at byte {index} of path template {template:?}; \
                         the placeholder opened at byte {start} is not closed"
                    ));
                }
                ('{', None) => {
                    if !literal.is_empty() {
                        segments.push(Segment::Literal(std::mem::take(&mut literal)));
                    }
                    open = Some(index);
                }
                ('}', Some(start)) => {
                    let placeholder = &template[start + 1..index];
                    if placeholder.is_empty() {
                        return Err(format!(
                            "empty placeholder \"{{}}\" at byte {start} of path template \
                             {template:?}; put a field name or JSON pointer inside the braces"
                        ));
                    }
                    let locator = Locator::parse(placeholder).map_err(|message| {
                        format!(
                            "placeholder at byte {start} of path template {template:?}: {message}"
                        )
                    })?;
                    segments.push(Segment::Placeholder(locator));
                    open = None;
                }
                ('}', None) => {
                    return Err(format!(
                        "unbalanced \"}}\" at byte {index} of path template {template:?}; \
                         placeholders look like {{field}} or {{/json/pointer}}"
                    ));
                }
                (_, Some(_)) => {}
                (c, None) => {
                    if !is_literal_char(c) {
                        return Err(format!(
                            "invalid character {c:?} at byte {index} of path template \
                             {template:?}; percent-encode it"
                        ));
                    }
                    literal.push(c);
                }
            }
        }

        if let Some(start) = open {
            return Err(format!(
                "unclosed \"{{\" at byte {start} of path template {template:?}; \
                 close the placeholder with \"}}\""
            ));
        }
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        check_literal_dot_segments(template, &segments)?;
        Ok(PathTemplate { segments })
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Returns the placeholders in order of first appearance, without
    /// repeats.
    pub fn placeholders(&self) -> Vec<Locator> {
        let mut placeholders: Vec<Locator> = Vec::new();
        for segment in &self.segments {
            if let Segment::Placeholder(locator) = segment {
                if !placeholders.contains(locator) {
                    placeholders.push(locator.clone());
                }
            }
        }
        placeholders
    }
}

/// Appends `value` to `out`, percent-encoding every byte outside the RFC 3986
/// unreserved set.
pub fn push_encoded(out: &mut String, value: &str) {
    for piece in utf8_percent_encode(value, VALUE_ENCODE_SET) {
        out.push_str(piece);
    }
}

/// Returns whether `segment` is a dot segment: `.` or `..`, where each dot
/// may also be written `%2e` or `%2E`. URL parsers that follow the WHATWG URL
/// Standard, such as the `url` crate (2.5.9) that the host uses, remove such a
/// segment (and for `..` the one before it) from a path, so the request goes
/// to another resource. Percent-encoding the dots does not prevent that.
pub fn is_dot_segment(segment: &str) -> bool {
    const DOT_SEGMENTS: [&str; 6] = [".", "%2e", "..", ".%2e", "%2e.", "%2e%2e"];
    DOT_SEGMENTS
        .iter()
        .any(|dots| segment.eq_ignore_ascii_case(dots))
}

/// Rejects a path segment of the template that is a dot segment without any
/// placeholder in it, such as the `..` in `/a/../b`. Segments with a
/// placeholder depend on the record, so mapping checks them.
fn check_literal_dot_segments(template: &str, segments: &[Segment]) -> Result<(), String> {
    // The literal text of each path segment, and whether a placeholder is in
    // it. The path ends at the first `?`, because `#` is rejected above.
    let mut path_segments = vec![(String::new(), false)];
    'pieces: for piece in segments {
        match piece {
            Segment::Placeholder(_) => {
                if let Some(last) = path_segments.last_mut() {
                    last.1 = true;
                }
            }
            Segment::Literal(text) => {
                for c in text.chars() {
                    match c {
                        '?' => break 'pieces,
                        '/' => path_segments.push((String::new(), false)),
                        c => {
                            if let Some(last) = path_segments.last_mut() {
                                last.0.push(c);
                            }
                        }
                    }
                }
            }
        }
    }

    let dot_segment = path_segments
        .iter()
        .find(|(text, has_placeholder)| !has_placeholder && is_dot_segment(text));
    match dot_segment {
        Some((text, _)) => Err(format!(
            "path template {template:?} contains the dot segment {text:?}, which URL \
             normalisation would remove; write the path without it"
        )),
        None => Ok(()),
    }
}

/// Returns whether `c` may appear unencoded in the literal text of a path or
/// query: printable ASCII except the characters that RFC 3986 excludes from
/// URLs (space, `"`, `<`, `>`, `\`, `^`, `` ` ``, `|`) and `#`, which would
/// start a fragment that is never sent.
fn is_literal_char(c: char) -> bool {
    c.is_ascii_graphic() && !matches!(c, '"' | '#' | '<' | '>' | '\\' | '^' | '`' | '|')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn literal(text: &str) -> Segment {
        Segment::Literal(text.to_owned())
    }

    fn field(name: &str) -> Segment {
        Segment::Placeholder(Locator::Field(name.to_owned()))
    }

    #[test]
    fn parses_placeholders() {
        let template = PathTemplate::parse("/flights/{carrier}/{flight}").unwrap();
        let expected = [
            literal("/flights/"),
            field("carrier"),
            literal("/"),
            field("flight"),
        ];
        assert_eq!(template.segments(), expected);
    }

    #[test]
    fn parses_query_placeholders() {
        let template = PathTemplate::parse("/z/{zip}?city={city}&x=1").unwrap();
        let expected = [
            literal("/z/"),
            field("zip"),
            literal("?city="),
            field("city"),
            literal("&x=1"),
        ];
        assert_eq!(template.segments(), expected);
    }

    #[test]
    fn field_names_may_contain_spaces() {
        let template = PathTemplate::parse("/p/{tail num}").unwrap();
        assert_eq!(
            template.placeholders(),
            vec![Locator::Field("tail num".to_owned())]
        );
    }

    #[test]
    fn parses_pointer_placeholders() {
        let template = PathTemplate::parse("/m/{/Title}/{/a~1b/0}/{/Title}").unwrap();
        let pointer = |text: &str| Locator::parse(text).unwrap();
        assert_eq!(
            template.segments(),
            [
                literal("/m/"),
                Segment::Placeholder(pointer("/Title")),
                literal("/"),
                Segment::Placeholder(pointer("/a~1b/0")),
                literal("/"),
                Segment::Placeholder(pointer("/Title")),
            ]
        );
        assert_eq!(
            template.placeholders(),
            vec![pointer("/Title"), pointer("/a~1b/0")]
        );
    }

    #[test]
    fn literal_only_template() {
        let template = PathTemplate::parse("/").unwrap();
        assert_eq!(template.segments(), [literal("/")]);
        assert!(template.placeholders().is_empty());
    }

    #[test]
    fn rejects_bad_templates() {
        let cases = [
            ("flights/{id}", "must start with \"/\""),
            ("", "must start with \"/\""),
            ("/a/{id", "unclosed \"{\" at byte 3"),
            ("/a/id}", "unbalanced \"}\" at byte 5"),
            ("/a/{b{c}}", "nested \"{\" at byte 5"),
            ("/a/{}", "empty placeholder"),
            ("/a b", "invalid character ' '"),
            ("/a#frag", "invalid character '#'"),
            ("/é", "invalid character 'é'"),
            (
                "/a/{/x~2}",
                "placeholder at byte 3 of path template \"/a/{/x~2}\": invalid JSON pointer",
            ),
        ];
        for (template, expected) in cases {
            let message = PathTemplate::parse(template).unwrap_err();
            assert!(message.contains(expected), "{template:?}: {message}");
        }
    }

    #[test]
    fn dot_segments_follow_whatwg() {
        let dot_segments = [
            ".", "..", "%2e", "%2E", ".%2e", ".%2E", "%2e.", "%2E.", "%2e%2e", "%2e%2E", "%2E%2e",
            "%2E%2E",
        ];
        for segment in dot_segments {
            assert!(is_dot_segment(segment), "{segment:?}");
        }

        let other_segments = [
            "",
            "...",
            ".x",
            "x.",
            "a..b",
            ". ",
            "%2e%2e%2e",
            "%2e..",
            "%252e",
            "%2",
            "%2f",
            "%2e/",
            ".e",
            "e",
        ];
        for segment in other_segments {
            assert!(!is_dot_segment(segment), "{segment:?}");
        }
    }

    #[test]
    fn rejects_literal_dot_segments() {
        let cases = [
            ("/a/../b", ".."),
            ("/a/./b", "."),
            ("/a/..", ".."),
            ("/.", "."),
            ("/a/%2e%2E/b", "%2e%2E"),
            ("/a/.%2e", ".%2e"),
            ("/a/%2E", "%2E"),
            ("/a/..?x={id}", ".."),
            ("/{id}/./x", "."),
        ];
        for (template, segment) in cases {
            let message = PathTemplate::parse(template).unwrap_err();
            let expected = format!(
                "path template {template:?} contains the dot segment {segment:?}, which URL \
                 normalisation would remove; write the path without it"
            );
            assert_eq!(message, expected, "{template:?}");
        }
    }

    #[test]
    fn accepts_dots_outside_dot_segments() {
        // Segments with a placeholder depend on the record, so mapping
        // checks them. Dots in the query are not path segments.
        let templates = [
            "/a/...",
            "/a/..b",
            "/a/.x/x.",
            "/a/.{id}",
            "/a/{id}..",
            "/a/%2e{id}",
            "/a/x?y=..",
            "/a?../..",
            "/a/x?./{id}",
        ];
        for template in templates {
            assert!(PathTemplate::parse(template).is_ok(), "{template:?}");
        }
    }

    #[test]
    fn encodes_all_but_unreserved() {
        let mut out = String::new();
        push_encoded(&mut out, "a-Z_0.9~");
        assert_eq!(out, "a-Z_0.9~");

        let mut out = String::new();
        push_encoded(&mut out, "a/b?c=d&e#f g%h+i");
        assert_eq!(out, "a%2Fb%3Fc%3Dd%26e%23f%20g%25h%2Bi");

        let mut out = String::new();
        push_encoded(&mut out, "Zürich");
        assert_eq!(out, "Z%C3%BCrich");
    }
}
