//! Reading the TOML configuration file, with errors that name the file, the
//! line and the key at fault.

use std::ops::Range;
use std::path::Path;

use super::Config;

/// Parses the text of the configuration file at `path`.
///
/// # Errors
///
/// Fails when the text is not valid TOML or does not fit [`Config`]. The
/// message names the file, the line, the column and, when the document's
/// syntax is valid, the dotted key, followed by the line with a caret.
pub(super) fn parse(path: &Path, text: &str) -> anyhow::Result<Config> {
    toml::from_str(text).map_err(|err| describe(path, text, &err))
}

fn describe(path: &Path, text: &str, err: &toml::de::Error) -> anyhow::Error {
    let message = err.message().trim().replace('\n', "; ");
    let Some(span) = err.span() else {
        return anyhow::anyhow!("invalid config file {}: {message}", path.display());
    };

    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line_text = text[line_start..line_end].trim_end_matches('\r');
    let line = text[..start].matches('\n').count() + 1;
    let column = text[line_start..start].chars().count() + 1;
    let key = match key_at(text, start) {
        Some(key) => format!(", key {key}"),
        None => String::new(),
    };

    let marked_end = span.end.clamp(start, line_start + line_text.len());
    let carets = "^".repeat(text[start..marked_end].chars().count().max(1));
    let indent = " ".repeat(column - 1);
    let number = line.to_string();
    let gutter = " ".repeat(number.len());
    anyhow::anyhow!(
        "invalid config file {}, line {line}, column {column}{key}: {message}\n\
         {number} | {line_text}\n\
         {gutter} | {indent}{carets}",
        path.display()
    )
}

/// Returns the dotted key whose name or value covers byte `offset` of
/// `text`, or `None` when `text` is not valid TOML.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let document = toml_edit::ImDocument::parse(text).ok()?;
    find_key(&document, "", offset)
}

fn find_key(table: &toml_edit::Table, prefix: &str, offset: usize) -> Option<String> {
    let covers = |span: Option<Range<usize>>| span.is_some_and(|span| span.contains(&offset));
    for (name, item) in table.iter() {
        let key = if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}.{name}")
        };
        if covers(table.key(name).and_then(toml_edit::Key::span)) {
            return Some(key);
        }
        let found = match item {
            toml_edit::Item::Table(child) => find_key(child, &key, offset),
            toml_edit::Item::Value(toml_edit::Value::InlineTable(inline)) => {
                find_key(&inline.clone().into_table(), &key, offset)
            }
            _ => None,
        };
        if found.is_some() {
            return found;
        }
        if covers(item.span()) {
            return Some(key);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        parse(Path::new("sluice.toml"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn unknown_key_names_line_and_dotted_key() {
        let message = error("endpoint = \"x\"\n[retry]\nmax_retires = 3\n");

        let first = message.lines().next().unwrap();
        assert!(
            first.starts_with("invalid config file sluice.toml, line 3, column 1"),
            "{message}"
        );
        assert!(first.contains("key retry.max_retires"), "{message}");
        assert!(first.contains("unknown field `max_retires`"), "{message}");
        assert!(message.contains("3 | max_retires = 3"), "{message}");
    }

    #[test]
    fn wrong_type_names_the_key_of_the_value() {
        let message = error("[http]\n\nconcurrency = \"many\"\n");

        assert!(message.contains("line 3, column 15"), "{message}");
        assert!(message.contains("key http.concurrency"), "{message}");
        assert!(message.contains("\n  |               ^^^^^^"), "{message}");
    }

    #[test]
    fn keys_in_inline_and_dotted_tables_are_found() {
        let inline = error("retry = { max_retries = \"x\" }\n");
        assert!(inline.contains("key retry.max_retries"), "{inline}");

        let dotted = error("retry.multiplier = \"x\"\n");
        assert!(dotted.contains("key retry.multiplier"), "{dotted}");
    }

    #[test]
    fn syntax_error_names_the_line_without_a_key() {
        let message = error("endpoint = \"http://127.0.0.1\n[retry]\n");

        assert!(message.contains("line 1, column"), "{message}");
        assert!(!message.contains(", key "), "{message}");
        assert!(
            message.contains("1 | endpoint = \"http://127.0.0.1"),
            "{message}"
        );
    }
}
