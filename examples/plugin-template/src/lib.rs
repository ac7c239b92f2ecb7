//! A small, complete sluice format plugin, written to be copied.
//!
//! The format is newline-delimited text. Each line that is not blank is one
//! record, and its first whitespace-separated word is the record's key. The
//! record `alpha some text` becomes
//!
//! ```text
//! PUT {prefix}/alpha
//! content-type: application/json
//!
//! {"key":"alpha","text":"alpha some text"}
//! ```
//!
//! and `sluice verify` reads it back with a GET of the same path. Lines end
//! with LF or CRLF, and the last line needs no terminator. A line longer
//! than `max_line_bytes`, or one that is not valid UTF-8, is a malformed
//! record. Nothing else is skipped or translated: a UTF-8 byte order mark,
//! for instance, becomes part of the first key.
//!
//! The crate has two halves, and a new plugin can keep the split:
//!
//! - [`config`], [`parser`] and [`mapping`] are plain Rust with no
//!   WebAssembly types, so `cargo test -p sluice-plugin-template` runs
//!   their unit tests on the build machine;
//! - `component` is compiled only for `wasm32`. It implements the
//!   `sluice:plugin/format` interface of `wit/plugin.wit` by converting
//!   between the generated bindings and the plain Rust types, and its
//!   comments state what the host expects from each function.

pub mod config;
pub mod mapping;
pub mod parser;

#[cfg(target_arch = "wasm32")]
mod component;

pub use config::{Config, ConfigError, ConfigKey, CONFIG_KEYS};
pub use parser::Parser;

/// The plugin's name, which the host puts in its logs and error messages.
pub const NAME: &str = "template";

/// File extensions that `sluice plugin info` lists for the plugin.
pub const EXTENSIONS: &[&str] = &["txt"];

/// The bytes that the host writes after each record's raw bytes in a
/// dead-letter file. The parser must read such a file back as the same
/// records, which LF gives here.
pub const RECORD_SEPARATOR: &[u8] = b"\n";

/// The position of a record's first byte in its input file, as in the WIT
/// `position`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// 1-based number among the file's records, malformed ones included and
    /// blank lines not counted.
    pub record_number: u64,
    /// 1-based line number, blank lines counted.
    pub line: u64,
    /// 0-based byte offset of the line's first byte.
    pub offset: u64,
}

/// One item that the parser returns, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    Record {
        position: Position,
        /// The line's first word.
        key: String,
        /// The line without its LF.
        raw: Vec<u8>,
    },
    Malformed {
        position: Position,
        /// The line without its LF, cut short when it is longer than
        /// `max_line_bytes`.
        raw: Vec<u8>,
        /// A description of the problem, for a person to read.
        message: String,
    },
}

/// An HTTP request, as in the WIT `request`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// Path relative to the host's endpoint, starting with `/`.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A request that reads a record back and the JSON that its response must
/// contain, as in the WIT `read-back`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadBack {
    pub request: Request,
    pub expected: Vec<u8>,
}
