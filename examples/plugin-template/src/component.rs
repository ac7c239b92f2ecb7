//! The component: exports `sluice:plugin/format` (`wit/plugin.wit`) by
//! converting between the generated bindings and the plain Rust core.
//!
//! How the host uses an instance: `info` first, then `configure` once,
//! then one `parser` for the input file. It calls `feed` for each chunk,
//! `finish` once, and `map-records`, `read-back` and `preamble` on that
//! parser as records come out. `sluice plugin info` calls `info` alone, on
//! an instance without `configure`. `classify` runs on a separate instance
//! that never creates a parser. An instance runs on one thread, so
//! thread-local state needs no locking.
//!
//! Errors that depend on the input are returned as values. A panic, in
//! this plugin's code or a library's, traps the instance: the host throws
//! it away and reports the record or bytes it was working on as rejected.
//! So nothing below unwraps on input.

use std::cell::RefCell;
use std::rc::Rc;

use crate::{Config, Parsed, Parser};

// Generates the Rust side of the WIT world: the `Guest` and `GuestParser`
// traits to implement and the `sluice::plugin::types` records. The path is
// relative to this crate's Cargo.toml; a copy outside this repository
// points it at its own copy of `wit/`.
wit_bindgen::generate!({
    path: "../../wit",
    world: "format-plugin",
});

use exports::sluice::plugin::format::{Guest, GuestParser};
use sluice::plugin::types;

thread_local! {
    /// The configuration that `configure` accepted. Parsers take a
    /// reference when they are created.
    static CONFIG: RefCell<Option<Rc<Config>>> = const { RefCell::new(None) };
}

const NOT_CONFIGURED: &str = "the template plugin is not configured; the host must call \
                              configure before creating a parser";

struct Component;

impl Guest for Component {
    type Parser = ParserResource;

    /// Describes the plugin. The host calls it before `configure` too, so
    /// it must not depend on the configuration, and it has no error case.
    fn info() -> types::PluginInfo {
        types::PluginInfo {
            name: crate::NAME.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            extensions: crate::EXTENSIONS.iter().map(|&e| e.to_owned()).collect(),
            config_keys: crate::CONFIG_KEYS
                .iter()
                .map(|key| types::ConfigKey {
                    name: key.name.to_owned(),
                    description: key.description.to_owned(),
                    required: key.required,
                })
                .collect(),
            record_separator: crate::RECORD_SEPARATOR.to_vec(),
        }
    }

    /// Validates the `--plugin-config` pairs. The host checks the
    /// configuration on a throw-away instance at startup, so a bad value
    /// stops the run before any file is read, with the key and message
    /// returned here.
    fn configure(config: Vec<(String, String)>) -> Result<(), types::ConfigError> {
        let config = Config::from_pairs(&config).map_err(|error| types::ConfigError {
            key: error.key,
            message: error.message,
        })?;
        CONFIG.with(|slot| *slot.borrow_mut() = Some(Rc::new(config)));
        Ok(())
    }

    /// Returns `none` for every response, so the host's rules decide: 5xx,
    /// 408, 409 and 429 are retried and other 4xx are permanent. A plugin
    /// overrides them for an API whose errors mean something else, and
    /// must decide from the response alone.
    fn classify(_response: types::Response) -> Option<types::Verdict> {
        None
    }
}

/// The exported `parser` resource, one per input file. The WIT methods
/// take `&self`, so the mutable parser sits in a `RefCell`. `inner` is
/// `None` when the host created the parser before a successful
/// `configure`; the constructor has no error case, so each call reports it.
struct ParserResource {
    inner: Option<RefCell<Parser>>,
}

impl GuestParser for ParserResource {
    fn new() -> Self {
        let config = CONFIG.with(|slot| slot.borrow().clone());
        ParserResource {
            inner: config.map(|config| RefCell::new(Parser::new(config))),
        }
    }

    /// Returns the records that this chunk completes, which may be none.
    /// An `Err` stops the whole file, so it is only for input that cannot
    /// be read on, such as a header row without a required column. This
    /// format has no such case. A bad line is a `malformed` item instead.
    fn feed(&self, chunk: Vec<u8>) -> Result<Vec<types::Parsed>, String> {
        let parser = self.inner.as_ref().ok_or(NOT_CONFIGURED)?;
        let parsed = parser.borrow_mut().feed(&chunk);
        Ok(parsed.into_iter().map(parsed_to_wit).collect())
    }

    /// Returns what is still buffered at the end of the file: here, a last
    /// line without a terminator.
    fn finish(&self) -> Result<Vec<types::Parsed>, String> {
        let parser = self.inner.as_ref().ok_or(NOT_CONFIGURED)?;
        let parsed = parser.borrow_mut().finish();
        Ok(parsed.into_iter().map(parsed_to_wit).collect())
    }

    /// Returns exactly one result per record, in the same order; the host
    /// treats any other count as a broken plugin. An `Err` rejects that
    /// record alone, with the message in the rejected file's sidecar.
    fn map_records(&self, records: Vec<types::Record>) -> Vec<Result<types::Request, String>> {
        let Some(parser) = &self.inner else {
            return records
                .iter()
                .map(|_| Err(NOT_CONFIGURED.to_owned()))
                .collect();
        };
        let config = parser.borrow().config();
        records
            .iter()
            .map(|record| crate::mapping::map_record(&config, &record.raw).map(request_to_wit))
            .collect()
    }

    /// Returns one check per record for `sluice verify`. `None` means the
    /// record cannot be read back and counts as unchecked. The WIT has no
    /// error case here, because `map-records` reports why a record fails.
    fn read_back(&self, records: Vec<types::Record>) -> Vec<Option<types::ReadBack>> {
        let Some(parser) = &self.inner else {
            return records.iter().map(|_| None).collect();
        };
        let config = parser.borrow().config();
        records
            .iter()
            .map(|record| {
                let check = crate::mapping::read_back(&config, &record.raw).ok()?;
                Some(types::ReadBack {
                    request: request_to_wit(check.request),
                    expected: check.expected,
                })
            })
            .collect()
    }

    /// Returns the bytes that start a dead-letter file, before the records'
    /// raw bytes. A format with a header row returns that row and its
    /// terminator; this one has none.
    fn preamble(&self) -> Vec<u8> {
        Vec::new()
    }
}

fn parsed_to_wit(parsed: Parsed) -> types::Parsed {
    match parsed {
        Parsed::Record { position, key, raw } => types::Parsed::Record(types::Record {
            position: position_to_wit(position),
            key,
            raw,
        }),
        Parsed::Malformed {
            position,
            raw,
            message,
        } => types::Parsed::Malformed(types::Malformed {
            position: position_to_wit(position),
            raw,
            message,
        }),
    }
}

fn position_to_wit(position: crate::Position) -> types::Position {
    types::Position {
        record_number: position.record_number,
        line: position.line,
        offset: position.offset,
    }
}

fn request_to_wit(request: crate::Request) -> types::Request {
    types::Request {
        method: request.method,
        path: request.path,
        headers: request
            .headers
            .into_iter()
            .map(|(name, value)| types::Header { name, value })
            .collect(),
        body: request.body,
    }
}

// Exports `Component` as the implementation of the world.
export!(Component);
