//! The wit-bindgen glue: exports `sluice:plugin/format@0.1.0` and converts
//! between the generated types and the plain Rust core.

use std::cell::RefCell;
use std::sync::Arc;

use crate::{Config, Parsed, Parser};

wit_bindgen::generate!({
    path: "../../wit",
    world: "format-plugin",
});

use exports::sluice::plugin::format::{Guest, GuestParser};
use sluice::plugin::types;

thread_local! {
    /// The configuration set by `configure`; each parser keeps the one that
    /// was current when it was created.
    static CONFIG: RefCell<Option<Arc<Config>>> = const { RefCell::new(None) };
}

const NOT_CONFIGURED: &str =
    "the jsonl plugin is not configured; the host must call configure before creating a parser";

struct Component;

impl Guest for Component {
    type Parser = ParserResource;

    fn info() -> types::PluginInfo {
        let info = crate::info();
        types::PluginInfo {
            name: info.name.to_owned(),
            version: info.version.to_owned(),
            extensions: info.extensions.iter().map(|&e| e.to_owned()).collect(),
            config_keys: info
                .config_keys
                .iter()
                .map(|key| types::ConfigKey {
                    name: key.name.to_owned(),
                    description: key.description.to_owned(),
                    required: key.required,
                })
                .collect(),
            record_separator: info.record_separator.to_vec(),
        }
    }

    fn configure(config: Vec<(String, String)>) -> Result<(), types::ConfigError> {
        let config = Config::from_pairs(&config).map_err(|error| types::ConfigError {
            key: error.key,
            message: error.message,
        })?;
        CONFIG.with(|slot| *slot.borrow_mut() = Some(Arc::new(config)));
        Ok(())
    }

    /// Returns `none`, so the host's status rules decide every response.
    fn classify(_response: types::Response) -> Option<types::Verdict> {
        None
    }
}

/// The exported `parser` resource. `inner` is `None` when the host created
/// the resource before a successful `configure`.
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

    fn feed(&self, chunk: Vec<u8>) -> Result<Vec<types::Parsed>, String> {
        let parser = self.inner.as_ref().ok_or(NOT_CONFIGURED)?;
        let parsed = parser.borrow_mut().feed(&chunk)?;
        Ok(parsed.into_iter().map(to_wit).collect())
    }

    fn finish(&self) -> Result<Vec<types::Parsed>, String> {
        let parser = self.inner.as_ref().ok_or(NOT_CONFIGURED)?;
        let parsed = parser.borrow_mut().finish()?;
        Ok(parsed.into_iter().map(to_wit).collect())
    }

    fn map_records(&self, records: Vec<types::Record>) -> Vec<Result<types::Request, String>> {
        let Some(parser) = &self.inner else {
            return records
                .iter()
                .map(|_| Err(NOT_CONFIGURED.to_owned()))
                .collect();
        };
        let parser = parser.borrow();
        records
            .iter()
            .map(|record| Ok(request_to_wit(parser.map_record(&record.raw)?)))
            .collect()
    }

    fn read_back(&self, records: Vec<types::Record>) -> Vec<Option<types::ReadBack>> {
        let Some(parser) = &self.inner else {
            return records.iter().map(|_| None).collect();
        };
        let parser = parser.borrow();
        // The interface has no error case here: a record that cannot be
        // mapped cannot be read back either, and `map-records` reports why.
        records
            .iter()
            .map(|record| {
                let read_back = parser.read_back(&record.raw).ok()??;
                Some(types::ReadBack {
                    request: request_to_wit(read_back.request),
                    expected: read_back.expected,
                })
            })
            .collect()
    }

    fn preamble(&self) -> Vec<u8> {
        match &self.inner {
            Some(parser) => parser.borrow().preamble(),
            None => Vec::new(),
        }
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

fn to_wit(parsed: Parsed) -> types::Parsed {
    match parsed {
        Parsed::Record(record) => types::Parsed::Record(types::Record {
            position: position_to_wit(record.position),
            key: record.key,
            raw: record.raw,
        }),
        Parsed::Malformed(malformed) => types::Parsed::Malformed(types::Malformed {
            position: position_to_wit(malformed.position),
            raw: malformed.raw,
            message: malformed.message,
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

export!(Component);
