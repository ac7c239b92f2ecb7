//! The JSON Lines format plugin for sluice.
//!
//! Built for `wasm32-wasip2`, the crate is a component that exports
//! `sluice:plugin/format@0.1.0` (see `wit/plugin.wit`). The parsing and
//! mapping core is plain Rust, so native tests exercise it directly; the
//! `component` module only adapts it to the generated bindings.
//!
//! A file contains one JSON value per line, in UTF-8 (also known as NDJSON).
//! [`parser`] describes the line rules and the recovery from malformed
//! lines. Each record becomes a request whose path comes from a template
//! such as `/quakes/{id}` or `/movies/{/Title}`, where a placeholder is a
//! top-level field name or a JSON pointer. The body is the record's value
//! exactly as in its line, or with `fields`, an object with only those
//! top-level members. `read_path` gives the request with which
//! `sluice verify` reads each record back.

pub mod config;
mod mapping;
pub mod parser;
pub mod record;
pub mod template;
pub mod value;

#[cfg(target_arch = "wasm32")]
mod component;

pub use config::{Config, ConfigError, ConfigKey, CONFIG_KEYS};
pub use parser::Parser;
pub use record::{Malformed, Parsed, Position, ReadBack, Record, Request};

/// The bytes that end each record in a dead-letter file.
pub const RECORD_SEPARATOR: &[u8] = b"\n";

/// A description of the plugin, as `info` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Info {
    pub name: &'static str,
    pub version: &'static str,
    pub extensions: &'static [&'static str],
    pub config_keys: &'static [ConfigKey],
    pub record_separator: &'static [u8],
}

/// Describes the plugin.
pub fn info() -> Info {
    Info {
        name: "jsonl",
        version: env!("CARGO_PKG_VERSION"),
        extensions: &["jsonl", "ndjson"],
        config_keys: CONFIG_KEYS,
        record_separator: RECORD_SEPARATOR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_describes_plugin() {
        let info = info();
        assert_eq!(info.name, "jsonl");
        assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(info.extensions, ["jsonl", "ndjson"]);
        assert_eq!(info.record_separator, b"\n");
        let names: Vec<&str> = info.config_keys.iter().map(|k| k.name).collect();
        assert_eq!(
            names,
            [
                "path",
                "key",
                "method",
                "fields",
                "max_record_bytes",
                "read_path"
            ]
        );
        let required: Vec<&str> = info
            .config_keys
            .iter()
            .filter(|k| k.required)
            .map(|k| k.name)
            .collect();
        assert_eq!(required, ["path"]);
        for key in info.config_keys {
            assert!(!key.description.is_empty(), "{}", key.name);
            assert!(!key.description.contains('\n'), "{}", key.name);
        }
    }
}
