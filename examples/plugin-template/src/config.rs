//! The plugin configuration: the `--plugin-config KEY=VALUE` pairs that
//! the host passes to `configure`, validated once into a [`Config`].
//!
//! The host prints a rejected configuration as
//! `invalid --plugin-config KEY: MESSAGE` and exits with status 2 before it
//! opens any file, so each message names the value and what is allowed.

/// Default for `max_line_bytes`.
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024;

/// Largest accepted `max_line_bytes`: 16 MiB, the host's default
/// `plugin.max_record_bytes`, above which the host rejects a record anyway.
pub const MAX_MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// A configuration key, as `info` reports it to the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigKey {
    pub name: &'static str,
    /// One line: what the key sets and its default.
    pub description: &'static str,
    pub required: bool,
}

/// Every accepted key, in the order that `sluice plugin info` lists them.
pub const CONFIG_KEYS: &[ConfigKey] = &[
    ConfigKey {
        name: "prefix",
        description: "path that each record's resource sits under, such as /notes; a record \
                      is sent as PUT {prefix}/{key} with its key percent-encoded",
        required: true,
    },
    ConfigKey {
        name: "max_line_bytes",
        description: "max bytes of one line without its terminator, from 1 to 16777216, \
                      before it is reported as malformed; default 65536",
        required: false,
    },
];

/// A rejected configuration, as in the WIT `config-error`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The key at fault.
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn new(key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// A validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// A path that starts with `/` and has no trailing `/`, so that
    /// `{prefix}/{key}` is a path. An empty prefix is the root.
    pub prefix: String,
    pub max_line_bytes: usize,
}

impl Config {
    /// Validates the key/value pairs from the host.
    ///
    /// # Errors
    ///
    /// Returns a [`ConfigError`] naming the key for an unknown key, a
    /// missing `prefix`, or a value that the key does not accept.
    pub fn from_pairs<K, V>(pairs: &[(K, V)]) -> Result<Config, ConfigError>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut prefix = None;
        let mut max_line_bytes = DEFAULT_MAX_LINE_BYTES;

        // Rejecting unknown keys catches typos such as `max_line_byte`,
        // which would otherwise leave the default in force silently.
        for (name, value) in pairs {
            match (name.as_ref(), value.as_ref()) {
                ("prefix", value) => prefix = Some(parse_prefix(value)?),
                ("max_line_bytes", value) => max_line_bytes = parse_max_line_bytes(value)?,
                (name, _) => {
                    let accepted: Vec<&str> = CONFIG_KEYS.iter().map(|key| key.name).collect();
                    let message = format!(
                        "unknown key {name:?}; accepted keys are {}",
                        accepted.join(", ")
                    );
                    return Err(ConfigError::new(name, message));
                }
            }
        }

        let Some(prefix) = prefix else {
            return Err(ConfigError::new(
                "prefix",
                "missing required key \"prefix\"; set it to a path such as /notes",
            ));
        };
        Ok(Config {
            prefix,
            max_line_bytes,
        })
    }
}

fn parse_prefix(value: &str) -> Result<String, ConfigError> {
    if !value.starts_with('/') {
        let message = format!("{value:?} does not start with \"/\"; use a path such as /notes");
        return Err(ConfigError::new("prefix", message));
    }
    // The key follows the prefix, so a query or fragment would swallow it.
    if value.contains(['?', '#']) {
        let message = format!("{value:?} contains \"?\" or \"#\"; use a path such as /notes");
        return Err(ConfigError::new("prefix", message));
    }
    Ok(value.trim_end_matches('/').to_owned())
}

fn parse_max_line_bytes(value: &str) -> Result<usize, ConfigError> {
    match value.parse::<usize>() {
        Ok(bytes @ 1..=MAX_MAX_LINE_BYTES) => Ok(bytes),
        _ => {
            let message = format!("{value:?} is not a whole number from 1 to {MAX_MAX_LINE_BYTES}");
            Err(ConfigError::new("max_line_bytes", message))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(pairs: &[(&str, &str)]) -> ConfigError {
        Config::from_pairs(pairs).unwrap_err()
    }

    #[test]
    fn defaults_apply() {
        let config = Config::from_pairs(&[("prefix", "/notes")]).unwrap();
        assert_eq!(config.prefix, "/notes");
        assert_eq!(config.max_line_bytes, 65536);
    }

    #[test]
    fn trailing_slashes_are_trimmed() {
        let config = Config::from_pairs(&[("prefix", "/notes/")]).unwrap();
        assert_eq!(config.prefix, "/notes");
        let root = Config::from_pairs(&[("prefix", "/")]).unwrap();
        assert_eq!(root.prefix, "");
    }

    #[test]
    fn max_line_bytes_is_read() {
        let config = Config::from_pairs(&[("max_line_bytes", "10"), ("prefix", "/n")]).unwrap();
        assert_eq!(config.max_line_bytes, 10);
    }

    #[test]
    fn unknown_key_is_named() {
        let error = error(&[("prefix", "/n"), ("max_line_byte", "10")]);
        assert_eq!(error.key, "max_line_byte");
        assert_eq!(
            error.message,
            "unknown key \"max_line_byte\"; accepted keys are prefix, max_line_bytes"
        );
    }

    #[test]
    fn missing_prefix_is_named() {
        let error = error(&[("max_line_bytes", "10")]);
        assert_eq!(error.key, "prefix");
        assert!(
            error.message.contains("missing required key"),
            "{}",
            error.message
        );
    }

    #[test]
    fn bad_prefixes_are_rejected() {
        for prefix in ["notes", "", "/notes?x=1", "/notes#top"] {
            let error = error(&[("prefix", prefix)]);
            assert_eq!(error.key, "prefix", "{prefix:?}");
            assert!(error.message.contains("/notes"), "{}", error.message);
        }
    }

    #[test]
    fn bad_max_line_bytes_are_rejected() {
        for value in ["0", "-1", "ten", "16777217", ""] {
            let error = error(&[("prefix", "/n"), ("max_line_bytes", value)]);
            assert_eq!(error.key, "max_line_bytes", "{value:?}");
            assert!(
                error.message.contains("from 1 to 16777216"),
                "{}",
                error.message
            );
        }
    }
}
