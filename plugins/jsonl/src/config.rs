//! The plugin configuration: the key/value pairs that the host passes to
//! `configure`, validated once into a [`Config`].

use crate::template::PathTemplate;
use crate::value::Locator;

/// Default HTTP method of each request.
pub const DEFAULT_METHOD: &str = "PUT";

/// Default limit on the length of one line, in bytes, without its line
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
        description: "request path template such as /quakes/{id} or /movies/{/Title}; each \
                      {field} or {/json/pointer} is replaced by the record's percent-encoded \
                      value",
        required: true,
    },
    ConfigKey {
        name: "key",
        description: "field or JSON pointer, or comma-separated list of them, whose values \
                      order the deliveries of a record; default: the path's placeholders, \
                      empty for none",
        required: false,
    },
    ConfigKey {
        name: "method",
        description: "HTTP method of each request; default PUT",
        required: false,
    },
    ConfigKey {
        name: "fields",
        description: "comma-separated top-level fields that make up the body, leaving out \
                      missing ones; default: the whole record as it is in the line",
        required: false,
    },
    ConfigKey {
        name: "max_record_bytes",
        description: "max bytes of one line without its terminator, at least 1024, before it \
                      is reported as malformed; default 1048576",
        required: false,
    },
    ConfigKey {
        name: "read_path",
        description: "path template that reads a record back for sluice verify, such as \
                      /quakes/{id}; default: the record's own path when method is PUT, none \
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
    /// Fields or pointers whose values form each record's key, in order.
    /// Empty means every record gets an empty key.
    pub key: Vec<Locator>,
    /// An HTTP method token in upper case.
    pub method: String,
    /// Top-level fields that make up the body, in this order. `None` sends
    /// the whole record.
    pub fields: Option<Vec<String>>,
    pub max_record_bytes: usize,
    /// Path template of the request that reads a record back.
    pub read_path: Option<PathTemplate>,
}

impl Config {
    /// Validates the key/value pairs from the host's plugin configuration.
    ///
    /// # Errors
    ///
    /// Returns a [`ConfigError`] for an unknown or repeated key, a missing
    /// `path`, or a value that the key does not accept.
    pub fn from_pairs<K, V>(pairs: &[(K, V)]) -> Result<Config, ConfigError>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut path = None;
        let mut key = None;
        let mut method = None;
        let mut fields = None;
        let mut max_record_bytes = None;
        let mut read_path = None;

        for (name, value) in pairs {
            let (name, value) = (name.as_ref(), value.as_ref());
            let slot = match name {
                "path" => &mut path,
                "key" => &mut key,
                "method" => &mut method,
                "fields" => &mut fields,
                "max_record_bytes" => &mut max_record_bytes,
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

        let key = match key {
            Some(value) => parse_key(value).map_err(|message| ConfigError::new("key", message))?,
            None => path.placeholders(),
        };
        let method = match method {
            Some(value) => parse_method(value).map_err(|m| ConfigError::new("method", m))?,
            None => DEFAULT_METHOD.to_owned(),
        };
        let fields = match fields {
            Some(value) => Some(parse_fields(value).map_err(|m| ConfigError::new("fields", m))?),
            None => None,
        };
        let max_record_bytes = match max_record_bytes {
            Some(value) => parse_max_record_bytes(value)
                .map_err(|message| ConfigError::new("max_record_bytes", message))?,
            None => DEFAULT_MAX_RECORD_BYTES,
        };
        let read_path = match read_path {
            Some(value) => {
                Some(PathTemplate::parse(value).map_err(|m| ConfigError::new("read_path", m))?)
            }
            None => None,
        };

        Ok(Config {
            path,
            key,
            method,
            fields,
            max_record_bytes,
            read_path,
        })
    }
}

/// Parses `key`: one field name or JSON pointer, or a comma-separated list.
/// An empty or blank value means no key. Spaces around each entry are
/// trimmed.
// NOTE: a field name or pointer that contains a comma cannot be a key part,
// because the comma always separates entries and RFC 6901 has no escape
// for it.
fn parse_key(value: &str) -> Result<Vec<Locator>, String> {
    if value.trim().is_empty() {
        return Ok(Vec::new());
    }

    let mut key: Vec<Locator> = Vec::new();
    for part in value.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(format!(
                "empty entry in {value:?}; separate field names and pointers with single commas"
            ));
        }
        let locator = Locator::parse(part)?;
        if key.contains(&locator) {
            return Err(format!("{part:?} appears more than once in {value:?}"));
        }
        key.push(locator);
    }
    Ok(key)
}

/// Parses `fields`: a comma-separated list of top-level field names, with
/// spaces around each name trimmed.
fn parse_fields(value: &str) -> Result<Vec<String>, String> {
    if value.trim().is_empty() {
        return Err(
            "empty fields; list the top-level fields of the body, such as id,name, or remove \
             the key to send whole records"
                .to_owned(),
        );
    }

    let mut fields: Vec<String> = Vec::new();
    for part in value.split(',') {
        let field = part.trim();
        if field.is_empty() {
            return Err(format!(
                "empty field name in {value:?}; separate field names with single commas"
            ));
        }
        if fields.iter().any(|f| f == field) {
            return Err(format!(
                "field {field:?} appears more than once in {value:?}"
            ));
        }
        fields.push(field.to_owned());
    }
    Ok(fields)
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

    fn field(name: &str) -> Locator {
        Locator::Field(name.to_owned())
    }

    fn pointer(text: &str) -> Locator {
        Locator::parse(text).unwrap()
    }

    #[test]
    fn defaults_apply() {
        let config = config(&[("path", "/quakes/{id}")]).unwrap();
        assert_eq!(config.method, "PUT");
        assert_eq!(config.fields, None);
        assert_eq!(config.max_record_bytes, 1_048_576);
        assert_eq!(config.key, vec![field("id")]);
        assert_eq!(config.read_path, None);
    }

    #[test]
    fn key_defaults_to_placeholders() {
        let config = config(&[("path", "/m/{/Title}/{year}/{/Title}")]).unwrap();
        assert_eq!(config.key, vec![pointer("/Title"), field("year")]);

        let config = Config::from_pairs(&[("path", "/all")]).unwrap();
        assert!(config.key.is_empty());
    }

    #[test]
    fn key_accepts_pointer() {
        let config = config(&[("path", "/x"), ("key", "/properties/code")]).unwrap();
        assert_eq!(config.key, vec![pointer("/properties/code")]);
    }

    #[test]
    fn key_list_is_trimmed() {
        let config = config(&[("path", "/x"), ("key", "net, /properties/code ,id")]).unwrap();
        assert_eq!(
            config.key,
            vec![field("net"), pointer("/properties/code"), field("id")]
        );
    }

    #[test]
    fn empty_key_means_no_key() {
        let config = config(&[("path", "/x/{id}"), ("key", " ")]).unwrap();
        assert!(config.key.is_empty());
    }

    #[test]
    fn fields_list_is_trimmed() {
        let config = config(&[("path", "/x"), ("fields", "id, US Gross ,Title")]).unwrap();
        let expected = ["id", "US Gross", "Title"].map(str::to_owned).to_vec();
        assert_eq!(config.fields, Some(expected));
    }

    #[test]
    fn method_is_upper_cased() {
        let config = config(&[("path", "/x"), ("method", "post")]).unwrap();
        assert_eq!(config.method, "POST");
    }

    #[test]
    fn max_record_bytes_accepts_range() {
        let smallest = config(&[("path", "/x"), ("max_record_bytes", "1024")]).unwrap();
        assert_eq!(smallest.max_record_bytes, 1024);
        let largest = config(&[("path", "/x"), ("max_record_bytes", "1073741824")]).unwrap();
        assert_eq!(largest.max_record_bytes, 1 << 30);
    }

    #[test]
    fn read_path_is_parsed() {
        let config = config(&[("path", "/x"), ("read_path", "/r/{id}")]).unwrap();
        let read_path = config.read_path.unwrap();
        assert_eq!(read_path.placeholders(), vec![field("id")]);
    }

    /// The configuration pairs, the key at fault and part of the message.
    type ErrorCase<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);

    #[test]
    fn rejects_bad_values() {
        let cases: &[ErrorCase] = &[
            (&[], "path", "missing required key \"path\""),
            (&[("path", "x/{id}")], "path", "must start with \"/\""),
            (
                &[("path", "/x/{/a~2}")],
                "path",
                "invalid JSON pointer \"/a~2\"",
            ),
            (&[("path", "/x/../{id}")], "path", "dot segment \"..\""),
            (
                &[("path", "/x"), ("colour", "red")],
                "colour",
                "unknown key \"colour\"",
            ),
            (
                &[("path", "/x"), ("path", "/y")],
                "path",
                "key \"path\" is given more than once",
            ),
            (
                &[("path", "/x"), ("key", "a,,b")],
                "key",
                "empty entry in \"a,,b\"",
            ),
            (
                &[("path", "/x"), ("key", "a,b,a")],
                "key",
                "\"a\" appears more than once",
            ),
            (
                &[("path", "/x"), ("key", "/a~")],
                "key",
                "invalid JSON pointer \"/a~\"",
            ),
            (&[("path", "/x"), ("method", "")], "method", "empty method"),
            (
                &[("path", "/x"), ("method", "PU T")],
                "method",
                "invalid method \"PU T\"",
            ),
            (&[("path", "/x"), ("fields", "")], "fields", "empty fields"),
            (
                &[("path", "/x"), ("fields", "a, ,b")],
                "fields",
                "empty field name",
            ),
            (
                &[("path", "/x"), ("fields", "a,b,a")],
                "fields",
                "field \"a\" appears more than once",
            ),
            (
                &[("path", "/x"), ("max_record_bytes", "1023")],
                "max_record_bytes",
                "max_record_bytes 1023 is out of range; use a value from 1024 to 1073741824",
            ),
            (
                &[("path", "/x"), ("max_record_bytes", "1073741825")],
                "max_record_bytes",
                "out of range",
            ),
            (
                &[("path", "/x"), ("max_record_bytes", "1 MiB")],
                "max_record_bytes",
                "invalid max_record_bytes \"1 MiB\"",
            ),
            (
                &[("path", "/x"), ("read_path", "r")],
                "read_path",
                "must start with \"/\"",
            ),
        ];
        for (pairs, key, expected) in cases {
            let error = error(pairs);
            assert_eq!(error.key, *key, "{pairs:?}");
            assert!(
                error.message.contains(expected),
                "{pairs:?}: {}",
                error.message
            );
        }
    }

    #[test]
    fn error_display_names_key() {
        let error = error(&[("path", "/x"), ("method", "")]);
        assert_eq!(
            error.to_string(),
            "method: empty method; use a method such as PUT or POST"
        );
    }
}
