//! The CSV format plugin for sluice.
//!
//! Built for `wasm32-wasip2`, the crate is a component that exports
//! `sluice:plugin/format@0.1.0` (see `wit/plugin.wit`). The parsing and
//! mapping core is plain Rust, so native tests exercise it directly; the
//! `component` module only adapts it to the generated bindings.
//!
//! A file is RFC 4180 CSV in UTF-8 whose first non-blank row is the header.
//! Each data row becomes a request whose path comes from a template such as
//! `/flights/{carrier}/{flight}` and whose body is a JSON object from column
//! names to the row's values, all as strings (or `null` for a configured
//! null token). [`parser`] describes the parsing rules and the recovery from
//! malformed rows.
//!
//! With `id_field`, each body also carries an id derived from the row's key
//! ([`derive_id`]), so that a create repeated after a lost response hits the
//! same resource. `delivered_when` rules ([`classify`]) then mark the error
//! responses that mean the record already arrived, and `read_path` gives the
//! request with which `sluice verify` reads each row back.

pub mod classify;
pub mod config;
mod header;
mod mapping;
pub mod parser;
pub mod record;
pub mod template;
mod tokenizer;

#[cfg(target_arch = "wasm32")]
mod component;

pub use config::{Config, ConfigError, ConfigKey, CONFIG_KEYS};
pub use mapping::derive_id;
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
        name: "csv",
        version: env!("CARGO_PKG_VERSION"),
        extensions: &["csv"],
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
        assert_eq!(info.name, "csv");
        assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(info.extensions, ["csv"]);
        assert_eq!(info.record_separator, b"\n");
        let names: Vec<&str> = info.config_keys.iter().map(|k| k.name).collect();
        assert_eq!(
            names,
            [
                "path",
                "key",
                "method",
                "delimiter",
                "null",
                "max_record_bytes",
                "id_field",
                "id_length",
                "delivered_when",
                "read_path"
            ]
        );
    }
}
