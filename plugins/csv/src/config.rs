//! The plugin configuration: the key/value pairs that the host passes to
//! `configure`, validated once into a [`Config`].

use crate::classify::{parse_rules, DeliveredRule};
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

/// Default number of hex digits in a derived record id. PocketBase's default
/// `id` field accepts exactly 15 characters.
pub const DEFAULT_ID_LENGTH: usize = 15;

/// Smallest accepted `id_length`. By the birthday bound, 8 hex digits (32
/// bits) already give a 50 % chance of a collision at about 77,000 keys.
pub const MIN_ID_LENGTH: usize = 8;

/// Largest accepted `id_length`: the length of a whole SHA-256 digest in hex.
pub const MAX_ID_LENGTH: usize = 64;

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
    ConfigKey {
        name: "id_field",
        description: "body field that receives an id derived from the row's key (hex \
                      SHA-256, truncated to id_length), also a template placeholder such \
                      as {id}; default none",
        required: false,
    },
    ConfigKey {
        name: "id_length",
        description: "number of hex digits in each id_field value, from 8 to 64; default 15",
        required: false,
    },
    ConfigKey {
        name: "delivered_when",
        description: "comma-separated STATUS:TEXT rules such as 400:validation_not_unique; \
                      a response with that status whose body contains TEXT counts as \
                      delivered; default none",
        required: false,
    },
    ConfigKey {
        name: "read_path",
        description: "path template that reads a row back for sluice verify, such as \
                      /items/{id}; default: the row's own path when method is PUT, none \
                      otherwise",
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
    /// Name of the body field that receives the id derived from the key.
    /// The header must not have a column of that name.
    pub id_field: Option<String>,
    /// Number of hex digits in a derived id.
    pub id_length: usize,
    /// Rules under which a non-2xx response means the record is delivered.
    pub delivered_when: Vec<DeliveredRule>,
    /// Path template of the request that reads a record back.
    pub read_path: Option<PathTemplate>,
}

impl Config {
    /// Validates the key/value pairs from the host's plugin configuration.
    ///
    /// # Errors
    ///
    /// Returns a [`ConfigError`] for an unknown or repeated key, a missing
    /// `path`, a value that the key does not accept, or an `id_field`
    /// without key columns to derive ids from.
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
        let mut id_field = None;
        let mut id_length = None;
        let mut delivered_when = None;
        let mut read_path = None;

        for (name, value) in pairs {
            let (name, value) = (name.as_ref(), value.as_ref());
            let slot = match name {
                "path" => &mut path,
                "key" => &mut key,
                "method" => &mut method,
                "delimiter" => &mut delimiter,
                "null" => &mut null,
                "max_record_bytes" => &mut max_record_bytes,
                "id_field" => &mut id_field,
                "id_length" => &mut id_length,
                "delivered_when" => &mut delivered_when,
                "read_path" => &mut read_path,
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

        let id_field = match id_field {
            Some(value) => {
                Some(parse_id_field(value).map_err(|m| ConfigError::new("id_field", m))?)
            }
            None => None,
        };
        let key_columns = match key {
            Some(value) => parse_key(value).map_err(|message| ConfigError::new("key", message))?,
            // The id comes from the key, so the id field's placeholder cannot
            // be part of the default key.
            None => path
                .columns()
                .into_iter()
                .filter(|column| Some(column) != id_field.as_ref())
                .collect(),
        };
        if let Some(id_field) = &id_field {
            check_id_key(id_field, &key_columns)?;
        }
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
        let id_length = match (id_length, &id_field) {
            (Some(value), Some(_)) => {
                parse_id_length(value).map_err(|m| ConfigError::new("id_length", m))?
            }
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "id_length",
                    "id_length applies only to derived ids; set id_field or remove id_length",
                ))
            }
            (None, _) => DEFAULT_ID_LENGTH,
        };
        let delivered_when = match delivered_when {
            Some(value) => parse_rules(value).map_err(|m| ConfigError::new("delivered_when", m))?,
            None => Vec::new(),
        };
        let read_path = match read_path {
            Some(value) => {
                Some(PathTemplate::parse(value).map_err(|m| ConfigError::new("read_path", m))?)
            }
            None => None,
        };

        Ok(Config {
            path,
            key_columns,
            method,
            delimiter,
            null: null.map(str::to_owned),
            max_record_bytes,
            id_field,
            id_length,
            delivered_when,
            read_path,
        })
    }
}

/// Parses `id_field`: any non-empty field name.
fn parse_id_field(value: &str) -> Result<String, String> {
    if value.is_empty() {
        return Err(
            "empty id_field; name the body field that receives the id, such as id".to_owned(),
        );
    }
    Ok(value.to_owned())
}

/// Checks that ids can be derived: the key has columns, and none of them is
/// the id field itself.
fn check_id_key(id_field: &str, key_columns: &[String]) -> Result<(), ConfigError> {
    if key_columns.is_empty() {
        return Err(ConfigError::new(
            "id_field",
            format!(
                "id_field {id_field:?} needs key columns to derive ids from, but the key is \
                 empty; set key to the column or columns that identify a row"
            ),
        ));
    }
    if key_columns.iter().any(|column| column == id_field) {
        return Err(ConfigError::new(
            "key",
            format!(
                "key column {id_field:?} is the id_field, whose value is derived from the \
                 key; set key to the column or columns that identify a row"
            ),
        ));
    }
    Ok(())
}

fn parse_id_length(value: &str) -> Result<usize, String> {
    let range = format!("{MIN_ID_LENGTH} to {MAX_ID_LENGTH}");
    match value.parse::<usize>() {
        Ok(length) if (MIN_ID_LENGTH..=MAX_ID_LENGTH).contains(&length) => Ok(length),
        Ok(length) => Err(format!(
            "id_length {length} is out of range; use a value from {range}"
        )),
        Err(_) => Err(format!(
            "invalid id_length {value:?}; use a whole number of hex digits from {range}"
        )),
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
             max_record_bytes, id_field, id_length, delivered_when, read_path"
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
            "/items/../{id}",
        ] {
            let error = error(&[("path", path)]);
            assert_eq!(error.key, "path", "{path}");
        }

        let error = error(&[("path", "/r"), ("read_path", "/r/./{id}")]);
        assert_eq!(error.key, "read_path");
        assert!(
            error.message.contains("dot segment \".\""),
            "{}",
            error.message
        );
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
    fn id_options_default_off() {
        let config = config(&[("path", "/x/{iata}")]).unwrap();
        assert_eq!(config.id_field, None);
        assert_eq!(config.id_length, 15);
        assert!(config.delivered_when.is_empty());
        assert_eq!(config.read_path, None);
    }

    #[test]
    fn id_field_and_length() {
        let config = config(&[
            ("path", "/r"),
            ("key", "iata"),
            ("id_field", "id"),
            ("id_length", "64"),
        ])
        .unwrap();
        assert_eq!(config.id_field.as_deref(), Some("id"));
        assert_eq!(config.id_length, 64);

        let config =
            Config::from_pairs(&[("path", "/r"), ("key", "iata"), ("id_field", "id")]).unwrap();
        assert_eq!(config.id_length, 15);
    }

    #[test]
    fn id_length_range() {
        for (value, expected) in [("8", 8), ("15", 15), ("64", 64)] {
            let pairs = [
                ("path", "/r"),
                ("key", "k"),
                ("id_field", "id"),
                ("id_length", value),
            ];
            assert_eq!(config(&pairs).unwrap().id_length, expected, "{value:?}");
        }
        for value in ["7", "65", "0", "-1", "", "15.0", "fifteen"] {
            let pairs = [
                ("path", "/r"),
                ("key", "k"),
                ("id_field", "id"),
                ("id_length", value),
            ];
            let error = error(&pairs);
            assert_eq!(error.key, "id_length", "{value:?}");
            assert!(error.message.contains("8 to 64"), "{}", error.message);
        }
    }

    #[test]
    fn id_length_needs_id_field() {
        let error = error(&[("path", "/r"), ("id_length", "20")]);
        assert_eq!(error.key, "id_length");
        assert!(error.message.contains("set id_field"), "{}", error.message);
    }

    #[test]
    fn empty_id_field_rejected() {
        let error = error(&[("path", "/r"), ("key", "k"), ("id_field", "")]);
        assert_eq!(error.key, "id_field");
    }

    #[test]
    fn id_placeholder_left_out_of_default_key() {
        let pairs = [("path", "/r/{state}/{id}"), ("id_field", "id")];
        let config = config(&pairs).unwrap();
        assert_eq!(config.key_columns, vec!["state"]);
    }

    #[test]
    fn id_field_needs_key() {
        let error1 = error(&[("path", "/r/{id}"), ("id_field", "id")]);
        assert_eq!(error1.key, "id_field");
        assert!(
            error1.message.contains("needs key columns"),
            "{}",
            error1.message
        );

        let error2 = error(&[("path", "/r/{iata}"), ("key", ""), ("id_field", "id")]);
        assert_eq!(error2.key, "id_field");
    }

    #[test]
    fn key_cannot_be_id_field() {
        let error = error(&[("path", "/r"), ("key", "iata,id"), ("id_field", "id")]);
        assert_eq!(error.key, "key");
        assert!(
            error.message.contains("\"id\" is the id_field"),
            "{}",
            error.message
        );
    }

    #[test]
    fn delivered_when_parsed() {
        let pairs = [
            ("path", "/r"),
            ("delivered_when", "400:validation_not_unique"),
        ];
        let config = config(&pairs).unwrap();
        assert_eq!(
            config.delivered_when,
            [DeliveredRule {
                status: 400,
                text: "validation_not_unique".to_owned()
            }]
        );

        let error = error(&[("path", "/r"), ("delivered_when", "400")]);
        assert_eq!(error.key, "delivered_when");
        assert!(error.message.contains("STATUS:TEXT"), "{}", error.message);
    }

    #[test]
    fn read_path_parsed() {
        let config = config(&[("path", "/r"), ("read_path", "/r/{id}")]).unwrap();
        let read_path = config.read_path.unwrap();
        assert_eq!(read_path.columns(), vec!["id"]);

        let error = error(&[("path", "/r"), ("read_path", "r/{id}")]);
        assert_eq!(error.key, "read_path");
        assert!(
            error.message.contains("must start with"),
            "{}",
            error.message
        );
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
