//! Resource path templates such as `/airports/{iata}`.

use anyhow::{bail, Context as _};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Bytes that are percent-encoded in a path value: everything except the
/// unreserved characters of RFC 3986 (letters, digits, `-`, `.`, `_`, `~`).
const PATH_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes a value for use in a path, with uppercase hex digits.
/// UTF-8 bytes outside ASCII are encoded one by one.
pub fn encode_path_value(value: &str) -> String {
    utf8_percent_encode(value, PATH_VALUE).to_string()
}

/// Parsed path template: literal text with `{column}` placeholders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathTemplate {
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Column(String),
}

impl PathTemplate {
    /// Parses a template. Literal text is used as written; each `{name}`
    /// names a column.
    ///
    /// # Errors
    ///
    /// Fails when the template does not start with `/`, has an empty or
    /// unclosed placeholder, or has a `}` without a `{`.
    pub fn parse(template: &str) -> anyhow::Result<Self> {
        if !template.starts_with('/') {
            bail!("path template {template:?} must start with /");
        }

        let mut parts = Vec::new();
        let mut rest = template;
        while !rest.is_empty() {
            let Some(open) = rest.find(['{', '}']) else {
                parts.push(Part::Literal(rest.to_owned()));
                break;
            };
            if rest.as_bytes()[open] == b'}' {
                bail!("path template {template:?} has a }} without a matching {{");
            }
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_owned()));
            }

            let after_open = &rest[open + 1..];
            let close = after_open
                .find(['{', '}'])
                .filter(|&end| after_open.as_bytes()[end] == b'}')
                .with_context(|| format!("path template {template:?} has an unclosed {{"))?;
            let name = &after_open[..close];
            if name.is_empty() {
                bail!("path template {template:?} has an empty placeholder {{}}; name a column");
            }
            parts.push(Part::Column(name.to_owned()));
            rest = &after_open[close + 1..];
        }
        Ok(Self { parts })
    }

    /// Returns the column names of the placeholders, in template order.
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|part| match part {
            Part::Column(name) => Some(name.as_str()),
            Part::Literal(_) => None,
        })
    }

    /// Builds a path, replacing each placeholder with the percent-encoded
    /// value that `value_of` returns for its column.
    pub fn render<'a>(&self, mut value_of: impl FnMut(&str) -> &'a str) -> String {
        let mut path = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => path.push_str(text),
                Part::Column(name) => path.push_str(&encode_path_value(value_of(name))),
            }
        }
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_keeps_unreserved_characters() {
        assert_eq!(encode_path_value("AZaz09-._~"), "AZaz09-._~");
        assert_eq!(encode_path_value("a b/c?d#e%f"), "a%20b%2Fc%3Fd%23e%25f");
        assert_eq!(encode_path_value("São"), "S%C3%A3o");
        assert_eq!(
            encode_path_value("+&=:@!$'()*,;"),
            "%2B%26%3D%3A%40%21%24%27%28%29%2A%2C%3B"
        );
        assert_eq!(encode_path_value(""), "");
    }

    #[test]
    fn render_fills_placeholders() {
        let template = PathTemplate::parse("/countries/{country}/cities/{name}.json").unwrap();
        assert_eq!(template.columns().collect::<Vec<_>>(), ["country", "name"]);

        let path = template.render(|column| {
            if column == "country" {
                "BR"
            } else {
                "São Paulo"
            }
        });
        assert_eq!(path, "/countries/BR/cities/S%C3%A3o%20Paulo.json");
    }

    #[test]
    fn template_without_placeholders_is_literal() {
        let template = PathTemplate::parse("/only/one").unwrap();
        assert_eq!(template.columns().count(), 0);
        assert_eq!(template.render(|_| unreachable!()), "/only/one");
    }

    #[test]
    fn parse_rejects_malformed_templates() {
        for (template, expected) in [
            ("airports/{iata}", "must start with /"),
            ("/airports/{iata", "unclosed {"),
            ("/airports/{ia{ta}", "unclosed {"),
            ("/airports/iata}", "} without a matching {"),
            ("/airports/{}", "empty placeholder"),
        ] {
            let err = PathTemplate::parse(template).unwrap_err().to_string();
            assert!(err.contains(expected), "{template}: {err}");
        }
    }
}
