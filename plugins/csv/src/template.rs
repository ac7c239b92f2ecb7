//! The request path template, such as `/flights/{carrier}/{flight}?day={day}`.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

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
    /// A `{column}` placeholder, replaced by the percent-encoded value.
    Column(String),
}

/// A parsed path template: literal text and `{column}` placeholders.
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
    /// brace is unbalanced or nested, or when a placeholder is empty. Literal
    /// text must not contain a character that is invalid in a URL path or
    /// query, such as a space or `#`.
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
                    let column = &template[start + 1..index];
                    if column.is_empty() {
                        return Err(format!(
                            "empty placeholder \"{{}}\" at byte {start} of path template \
                             {template:?}; put a column name inside the braces"
                        ));
                    }
                    segments.push(Segment::Column(column.to_owned()));
                    open = None;
                }
                ('}', None) => {
                    return Err(format!(
                        "unbalanced \"}}\" at byte {index} of path template {template:?}; \
                         placeholders look like {{column}}"
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
        Ok(PathTemplate { segments })
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Returns the placeholder columns in order of first appearance, without
    /// repeats.
    pub fn columns(&self) -> Vec<String> {
        let mut columns: Vec<String> = Vec::new();
        for segment in &self.segments {
            if let Segment::Column(column) = segment {
                if !columns.contains(column) {
                    columns.push(column.clone());
                }
            }
        }
        columns
    }
}

/// Appends `value` to `out`, percent-encoding every byte outside the RFC 3986
/// unreserved set.
pub fn push_encoded(out: &mut String, value: &str) {
    for piece in utf8_percent_encode(value, VALUE_ENCODE_SET) {
        out.push_str(piece);
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

    fn column(name: &str) -> Segment {
        Segment::Column(name.to_owned())
    }

    #[test]
    fn parses_placeholders() {
        let template = PathTemplate::parse("/flights/{carrier}/{flight}").unwrap();
        let expected = [
            literal("/flights/"),
            column("carrier"),
            literal("/"),
            column("flight"),
        ];
        assert_eq!(template.segments(), expected);
    }

    #[test]
    fn parses_query_placeholders() {
        let template = PathTemplate::parse("/z/{zip}?city={city}&x=1").unwrap();
        let expected = [
            literal("/z/"),
            column("zip"),
            literal("?city="),
            column("city"),
            literal("&x=1"),
        ];
        assert_eq!(template.segments(), expected);
    }

    #[test]
    fn column_names_may_hold_spaces() {
        let template = PathTemplate::parse("/p/{tail num}").unwrap();
        assert_eq!(template.columns(), vec!["tail num"]);
    }

    #[test]
    fn literal_only_template() {
        let template = PathTemplate::parse("/").unwrap();
        assert_eq!(template.segments(), [literal("/")]);
        assert!(template.columns().is_empty());
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
        ];
        for (template, expected) in cases {
            let message = PathTemplate::parse(template).unwrap_err();
            assert!(message.contains(expected), "{template:?}: {message}");
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
