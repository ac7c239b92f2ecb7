//! A format plugin that misbehaves on purpose, for the host's tests.
//!
//! Every line is a record whose key is the line and whose request is
//! `PUT /lines/<line>` with the line as the body. The `mode` setting picks
//! the misbehaviour, triggered by the record whose line equals `trigger`:
//!
//! - `loop`: `feed` spins forever, to test the call timeout;
//! - `allocate`: `feed` allocates without bound, to test the memory limit;
//! - `panic`: `map-records` panics, which traps the instance;
//! - `panic-feed`: `feed` panics once the trigger line is complete;
//! - `panic-always`: `map-records` panics on every record;
//! - `huge`: `feed` returns the trigger line as a 2 MiB record;
//! - `chatty`: `feed` writes a line to stderr for every record;
//! - `none` (default): behaves.
//!
//! With `header` set to `true`, the first line is a header: not a record,
//! and the parser's preamble.

use std::cell::RefCell;

#[cfg(not(feature = "wrong-version"))]
wit_bindgen::generate!({
    path: "../../../wit",
    world: "format-plugin",
});

// A copy of the interface with another major version, written by
// scripts/setup, so that the host's version check can be tested.
#[cfg(feature = "wrong-version")]
wit_bindgen::generate!({
    path: "wit-wrong-version",
    world: "format-plugin",
});

use exports::sluice::plugin::format::{Guest, GuestParser};
use sluice::plugin::types;

#[derive(Clone, Default)]
struct Settings {
    mode: String,
    trigger: String,
    header: bool,
}

thread_local! {
    static SETTINGS: RefCell<Settings> = RefCell::new(Settings::default());
}

fn settings() -> Settings {
    SETTINGS.with(|s| s.borrow().clone())
}

struct Component;

impl Guest for Component {
    type Parser = LineParser;

    fn info() -> types::PluginInfo {
        let key = |name: &str, description: &str| types::ConfigKey {
            name: name.to_owned(),
            description: description.to_owned(),
            required: false,
        };
        types::PluginInfo {
            name: "hostile".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            extensions: vec!["txt".to_owned()],
            config_keys: vec![
                key(
                    "mode",
                    "loop, allocate, panic, panic-feed, panic-always, huge, chatty or none",
                ),
                key("trigger", "the line that triggers the misbehaviour"),
                key("header", "true to treat the first line as a header"),
            ],
            record_separator: b"\n".to_vec(),
        }
    }

    fn configure(config: Vec<(String, String)>) -> Result<(), types::ConfigError> {
        let mut settings = Settings::default();
        for (key, value) in config {
            match key.as_str() {
                "mode" => settings.mode = value,
                "trigger" => settings.trigger = value,
                "header" => settings.header = value == "true",
                _ => {
                    return Err(types::ConfigError {
                        key,
                        message: "unknown key; use mode or trigger".to_owned(),
                    })
                }
            }
        }
        SETTINGS.with(|s| *s.borrow_mut() = settings);
        Ok(())
    }

    fn classify(_response: types::Response) -> Option<types::Verdict> {
        None
    }
}

struct LineParser {
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    pending: Vec<u8>,
    record: u64,
    offset: u64,
    header: Option<Vec<u8>>,
}

impl LineParser {
    fn take_lines(&self, end: bool) -> Vec<types::Parsed> {
        let settings = settings();
        let mut state = self.state.borrow_mut();
        let mut out = Vec::new();
        loop {
            let line = match state.pending.iter().position(|b| *b == b'\n') {
                Some(at) => {
                    let line: Vec<u8> = state.pending.drain(..=at).collect();
                    line[..line.len() - 1].to_vec()
                }
                None if end && !state.pending.is_empty() => std::mem::take(&mut state.pending),
                None => break,
            };
            let length = line.len() as u64 + 1;
            if settings.header && state.header.is_none() {
                let mut header = line;
                header.push(b'\n');
                state.header = Some(header);
                state.offset += length;
                continue;
            }
            state.record += 1;
            let text = String::from_utf8_lossy(&line).into_owned();
            if settings.mode == "chatty" {
                eprintln!("hostile: record {} is {text:?}", state.record);
            }
            let mut raw = line;
            if text == settings.trigger {
                misbehave_in_feed(&settings.mode);
                if settings.mode == "huge" {
                    raw = vec![b'x'; 2 << 20];
                }
            }
            out.push(types::Parsed::Record(types::Record {
                position: types::Position {
                    record_number: state.record,
                    line: state.record + u64::from(settings.header),
                    offset: state.offset,
                },
                key: text,
                raw,
            }));
            state.offset += length;
        }
        out
    }
}

fn misbehave_in_feed(mode: &str) {
    match mode {
        "loop" => {
            let mut counter = 0u64;
            loop {
                counter = std::hint::black_box(counter.wrapping_add(1));
            }
        }
        "allocate" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        "panic-feed" => panic!("hostile plugin panics while parsing the trigger line"),
        _ => {}
    }
}

impl GuestParser for LineParser {
    fn new() -> Self {
        LineParser {
            state: RefCell::new(State::default()),
        }
    }

    fn feed(&self, chunk: Vec<u8>) -> Result<Vec<types::Parsed>, String> {
        self.state.borrow_mut().pending.extend_from_slice(&chunk);
        Ok(self.take_lines(false))
    }

    fn finish(&self) -> Result<Vec<types::Parsed>, String> {
        Ok(self.take_lines(true))
    }

    fn map_records(&self, records: Vec<types::Record>) -> Vec<Result<types::Request, String>> {
        let settings = settings();
        records
            .into_iter()
            .map(|record| {
                let line = String::from_utf8_lossy(&record.raw).into_owned();
                if settings.mode == "panic" && line == settings.trigger {
                    panic!("hostile plugin panics on line {line:?}");
                }
                if settings.mode == "panic-always" {
                    panic!("hostile plugin panics on every record");
                }
                Ok(types::Request {
                    method: "PUT".to_owned(),
                    path: format!("/lines/{line}"),
                    headers: Vec::new(),
                    body: record.raw,
                })
            })
            .collect()
    }

    fn read_back(&self, records: Vec<types::Record>) -> Vec<Option<types::ReadBack>> {
        records.iter().map(|_| None).collect()
    }

    fn preamble(&self) -> Vec<u8> {
        self.state.borrow().header.clone().unwrap_or_default()
    }
}

export!(Component);
