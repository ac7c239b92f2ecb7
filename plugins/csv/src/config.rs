//! The plugin configuration: the key/value pairs that the host passes to
//! `configure`, validated once into a [`Config`].

use crate::template::PathTemplate;

/// Default HTTP method of each request.
pub const DEFAULT_METHOD: &str = "PUT";

/// Default field delimiter.
pub const DEFAULT_DELIMITER: u8 = b',';

/// Default limit on the size of one record, in bytes, counting its line
/// terminator.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1024 * 1024;

/// Smallest accepted `max_record_bytes`.
pub const MIN_MAX_RECORD_BYTES: usize = 1024;

/// Largest accepted `max_record_bytes`. The parser buffers up to this many
/// bytes plus one chunk inside a 32-bit guest, so values near 4 GiB could
/// never be honoured.
pub const MAX_MAX_RECORD_BYTES: usize = 1024 * 1024 * 1024;

/// A configuration key that the plugin accepts, as reported by `info`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigKey {
    pub name: &'static str,
    /// One line that states what the key sets and its default.
    pub description: &'static str,
    pub required: bool,
}

/// Every accepted configuration key, in the order `info` lists them.
pub const CONFIG_KEYS: &[ConfigKey] = &[
    ConfigKey {
        name: "path",
        description: "request path template such as /flights/{carrier}/{flight}; \
                      each {column} is replaced by the row's percent-encoded value",
        required: true,
    },
    ConfigKey {
        name: "key",
        description: "column, or comma-separated columns, whose values order the \
                      deliveries of a row; default: the path's columns, empty for none",
        required: false,
    },
    ConfigKey {
        name: "method",
        description: "HTTP method of each request; default PUT",
        required: false,
    },
    ConfigKey {
        name: "delimiter",
        description: "field delimiter, one ASCII character or tab; default ,",
        required: false,
    },
    ConfigKey {
        name: "null",
        description: "field value sent as JSON null, such as NA; default none, \
                      so every value is a string",
        required: false,
    },
    ConfigKey {
        name: "max_record_bytes",
        description: "max bytes of one record, at least 1024, before it is reported \
                      as malformed; default 1048576",
        required: false,
    },
];

/// A rejected configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The key at fault, or empty when the problem is not one key.
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn new(key: &str, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// A validated plugin configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub path: PathTemplate,
    /// Columns whose values form each record's key, in order. Empty means
    /// every record gets an empty key.
    pub key_columns: Vec<String>,
    /// An HTTP method token in upper case.
    pub method: String,
    pub delimiter: u8,
    /// A field value that becomes JSON null in the request body.
    pub null: Option<String>,
    pub max_record_bytes: usize,
}

impl Config {
    /// Validates the key/value pairs from the host's plugin configuration.
    ///
    /// # Errors
    ///
    /// Returns a [`ConfigError`] for an unknown or repeated key, a missing
    /// `path` or a value that the key does not accept.
    pub fn from_pairs<K, V>(pairs: &[(K, V)]) -> Result<Config, ConfigError>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut path = None;
        let mut key = None;
        let mut method = None;
        let mut delimiter = None;
        let mut null = None;
        let mut max_record_bytes = None;

        for (name, value) in pairs {
            let (name, value) = (name.as_ref(), value.as_ref());
            let slot = match name {
                "path" => &mut path,
                "key" => &mut key,
                "method" => &mut method,
                "delimiter" => &mut delimiter,
                "null" => &mut null,
                "max_record_bytes" => &mut max_record_bytes,
                _ => {
                    let accepted: Vec<&str> = CONFIG_KEYS.iter().map(|k| k.name).collect();
                    return Err(ConfigError::new(
                        name,
                        format!(
                            "unknown key {name:?}; accepted keys are {}",
                            accepted.join(", ")
                        ),
                    ));
                }
            };
            if slot.is_some() {
                return Err(ConfigError::new(
                    name,
                    format!("key {name:?} is given more than once; keep one value"),
                ));
            }
            *slot = Some(value);
        }

        let Some(path) = path else {
            return Err(ConfigError::new(
                "path",
                "missing required key \"path\"; set it to a template such as /items/{id}",
            ));
        };
        let path =
            PathTemplate::parse(path).map_err(|message| ConfigError::new("path", message))?;

        let key_columns = match key {
            Some(value) => parse_key(value).map_err(|message| ConfigError::new("key", message))?,
            None => path.columns(),
        };
        let method = match method {
            Some(value) => parse_method(value).map_err(|m| ConfigError::new("method", m))?,
            None => DEFAULT_METHOD.to_owned(),
        };
        let delimiter = match delimiter {
            Some(value) => parse_delimiter(value).map_err(|m| ConfigError::new("delimiter", m))?,
            None => DEFAULT_DELIMITER,
        };
        let max_record_bytes = match max_record_bytes {
            Some(value) => parse_max_record_bytes(value)
                .map_err(|message| ConfigError::new("max_record_bytes", message))?,
            None => DEFAULT_MAX_RECORD_BYTES,
        };

        Ok(Config {
            path,
            key_columns,
            method,
            delimiter,
            null: null.map(str::to_owned),
            max_record_bytes,
        })
    }
}

/// Parses `key`: one column or a comma-separated list. An empty or blank
/// value means no key columns. Spaces around each name are trimmed.
fn parse_key(value: &str) -> Result<Vec<String>, String> {
    if value.trim().is_empty() {
        return Ok(Vec::new());
    }

    let mut columns: Vec<String> = Vec::new();
    for part in value.split(',') {
        let column = part.trim();
        if column.is_empty() {
            return Err(format!(
                "empty column name in {value:?}; separate column names with single commas"
            ));
        }
        if columns.iter().any(|c| c == column) {
            return Err(format!(
                "column {column:?} appears more than once in {value:?}"
            ));
        }
        columns.push(column.to_owned());
    }
    Ok(columns)
}

/// Parses `method`: an HTTP method token (RFC 9110, section 5.6.2),
/// returned in upper case.
fn parse_method(value: &str) -> Result<String, String> {
    if value.is_empty() {
        return Err("empty method; use a method such as PUT or POST".to_owned());
    }
    if let Some(c) = value.chars().find(|&c| !is_token_char(c)) {
        return Err(format!(
            "invalid method {value:?}: {c:?} is not allowed in an HTTP method; \
             use a method such as PUT or POST"
        ));
    }
    Ok(value.to_ascii_uppercase())
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// Parses `delimiter`: one ASCII character, or `tab` or `\t` for a tab.
fn parse_delimiter(value: &str) -> Result<u8, String> {
    if value.eq_ignore_ascii_case("tab") || value == "\\t" {
        return Ok(b'\t');
    }

    let bytes = value.as_bytes();
    if bytes.len() != 1 || !bytes[0].is_ascii() {
        return Err(format!(
            "invalid delimiter {value:?}; use one ASCII character such as , or ; or the word tab"
        ));
    }
    match bytes[0] {
        b'"' => Err("the delimiter cannot be the quote character \"".to_owned()),
        b'\r' | b'\n' => Err(format!(
            "the delimiter cannot be a line terminator ({value:?}); use , or ; or tab"
        )),
        byte => Ok(byte),
    }
}

fn parse_max_record_bytes(value: &str) -> Result<usize, String> {
    let range = format!("{MIN_MAX_RECORD_BYTES} to {MAX_MAX_RECORD_BYTES}");
    let Ok(bytes) = value.parse::<u64>() else {
        return Err(format!(
            "invalid max_record_bytes {value:?}; use a whole number of bytes from {range}"
        ));
    };
    match usize::try_from(bytes) {
        Ok(bytes) if (MIN_MAX_RECORD_BYTES..=MAX_MAX_RECORD_BYTES).contains(&bytes) => Ok(bytes),
        _ => Err(format!(
            "max_record_bytes {bytes} is out of range; use a value from {range}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_pairs(pairs)
    }

    fn error(pairs: &[(&str, &str)]) -> ConfigError {
        match config(pairs) {
            Ok(config) => panic!("expected an error, got {config:?}"),
            Err(error) => error,
        }
    }

    #[test]
    fn defaults_apply() {
        let config = config(&[("path", "/airports/{iata}")]).unwrap();
        assert_eq!(config.method, "PUT");
        assert_eq!(config.delimiter, b',');
        assert_eq!(config.null, None);
        assert_eq!(config.max_record_bytes, 1_048_576);
        assert_eq!(config.key_columns, vec!["iata"]);
    }

    #[test]
    fn key_defaults_to_path_columns() {
        let config = config(&[("path", "/f/{carrier}/{flight}/{carrier}")]).unwrap();
        assert_eq!(config.key_columns, vec!["carrier", "flight"]);

        let config = Config::from_pairs(&[("path", "/all")]).unwrap();
        assert!(config.key_columns.is_empty());
    }

    #[test]
    fn key_list_is_trimmed() {
        let config = config(&[("path", "/x"), ("key", "year, month ,day")]).unwrap();
        assert_eq!(config.key_columns, vec!["year", "month", "day"]);
    }

    #[test]
    fn empty_key_means_no_key() {
        let config = config(&[("path", "/x/{id}"), ("key", "")]).unwrap();
        assert!(config.key_columns.is_empty());
    }

    #[test]
    fn key_errors() {
        let error1 = error(&[("path", "/x"), ("key", "a,,b")]);
        assert_eq!(error1.key, "key");
        assert!(
            error1.message.contains("empty column name"),
            "{}",
            error1.message
        );

        let error2 = error(&[("path", "/x"), ("key", "a,b,a")]);
        assert!(
            error2.message.contains("\"a\" appears more than once"),
            "{}",
            error2.message
        );
    }

    #[test]
    fn unknown_key_lists_accepted() {
        let error = error(&[("path", "/x"), ("pth", "/y")]);
        assert_eq!(error.key, "pth");
        assert_eq!(
            error.message,
            "unknown key \"pth\"; accepted keys are path, key, method, delimiter, null, \
             max_record_bytes"
        );
    }

    #[test]
    fn repeated_key_rejected() {
        let error = error(&[("path", "/x"), ("method", "PUT"), ("method", "POST")]);
        assert_eq!(error.key, "method");
        assert!(
            error.message.contains("more than once"),
            "{}",
            error.message
        );
    }

    #[test]
    fn missing_path_rejected() {
        let error = error(&[("method", "POST")]);
        assert_eq!(error.key, "path");
        assert!(
            error.message.contains("missing required key"),
            "{}",
            error.message
        );
    }

    #[test]
    fn bad_path_rejected() {
        for path in [
            "items/{id}",
            "/items/{id",
            "/items/id}",
            "/items/{}",
            "/a b",
        ] {
            let error = error(&[("path", path)]);
            assert_eq!(error.key, "path", "{path}");
        }
    }

    #[test]
    fn method_is_normalised() {
        let config = config(&[("path", "/x"), ("method", "post")]).unwrap();
        assert_eq!(config.method, "POST");
        let config = Config::from_pairs(&[("path", "/x"), ("method", "M-SEARCH")]).unwrap();
        assert_eq!(config.method, "M-SEARCH");
    }

    #[test]
    fn method_must_be_token() {
        for method in ["", "PU T", "GET\r\n", "PÜT", "(PUT)"] {
            let error = error(&[("path", "/x"), ("method", method)]);
            assert_eq!(error.key, "method", "{method:?}");
        }
    }

    #[test]
    fn delimiter_values() {
        let cases = [
            (";", b';'),
            ("|", b'|'),
            ("tab", b'\t'),
            ("TAB", b'\t'),
            ("\\t", b'\t'),
        ];
        for (value, expected) in cases {
            let config = config(&[("path", "/x"), ("delimiter", value)]).unwrap();
            assert_eq!(config.delimiter, expected, "{value:?}");
        }
        let config = Config::from_pairs(&[("path", "/x"), ("delimiter", "\t")]).unwrap();
        assert_eq!(config.delimiter, b'\t');
    }

    #[test]
    fn delimiter_rejects_bad_values() {
        for value in ["\"", "\r", "\n", ";;", "", "é", "tabs"] {
            let error = error(&[("path", "/x"), ("delimiter", value)]);
            assert_eq!(error.key, "delimiter", "{value:?}");
        }
    }

    #[test]
    fn null_token_kept() {
        let config = config(&[("path", "/x"), ("null", "NA")]).unwrap();
        assert_eq!(config.null.as_deref(), Some("NA"));
    }

    #[test]
    fn max_record_bytes_range() {
        let config = config(&[("path", "/x"), ("max_record_bytes", "1024")]).unwrap();
        assert_eq!(config.max_record_bytes, 1024);

        for value in [
            "1023",
            "0",
            "-5",
            "1k",
            "",
            "99999999999999999999",
            "1073741825",
        ] {
            let error = error(&[("path", "/x"), ("max_record_bytes", value)]);
            assert_eq!(error.key, "max_record_bytes", "{value:?}");
        }
    }

    #[test]
    fn every_key_has_description() {
        for key in CONFIG_KEYS {
            assert!(!key.description.is_empty(), "{}", key.name);
            assert!(!key.description.contains('\n'), "{}", key.name);
        }
        let required: Vec<&str> = CONFIG_KEYS
            .iter()
            .filter(|k| k.required)
            .map(|k| k.name)
            .collect();
        assert_eq!(required, vec!["path"]);
    }
}
