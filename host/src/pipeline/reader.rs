//! The reading side of a file: bytes to records to prepared requests.
//!
//! Runs on a blocking thread because plugin calls are synchronous. It feeds
//! the file to the plugin chunk by chunk, maps each batch of records in one
//! plugin call, and sends the results to the dispatcher over a bounded
//! channel, so a slow API slows reading instead of filling memory. Before
//! each chunk it waits while the circuit breaker is open.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use reqwest::header::{HeaderName, HeaderValue};
use reqwest::Url;
use tokio::sync::mpsc;

use crate::delivery::breaker::Breaker;
use crate::delivery::classify::error_chain;
use crate::delivery::{prepare, PreparedRequest};
use crate::plugin::{Malformed, Parsed, Plugin, Position, Record};
use crate::report::Counters;

/// A parsed record and what to do with it.
// `Ready` is the common case, so boxing it to shrink the enum would only add
// an allocation per record.
#[allow(clippy::large_enum_variant)]
pub enum Item {
    /// A record with its request, ready to send.
    Ready {
        record: Record,
        request: PreparedRequest,
    },
    /// A record that cannot be sent, with the reason.
    Unsendable { record: Record, reason: String },
    /// A record the plugin could not parse.
    Malformed(Malformed),
}

/// A message from the reader to the dispatcher, in file order.
pub enum Message {
    /// The bytes that start a dead-letter file; sent before any item.
    Preamble(Vec<u8>),
    Items(Vec<Item>),
    /// The rest of the file cannot be read; nothing follows.
    Stopped {
        position: Option<Position>,
        message: String,
    },
}

/// Everything the reader needs, owned so it can move to its thread.
pub struct ReaderContext {
    pub plugin: Arc<Plugin>,
    pub endpoint: Url,
    pub headers: Arc<Vec<(HeaderName, HeaderValue)>>,
    pub chunk_size: usize,
    pub breaker: Arc<Breaker>,
    pub counters: Arc<Counters>,
    pub runtime: tokio::runtime::Handle,
    /// Turns true when reading must stop.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

/// Reads `path` to its end, or until the dispatcher hangs up.
pub fn read_file(path: &Path, context: &ReaderContext, tx: mpsc::Sender<Message>) {
    if let Err(stopped) = read_and_send(path, context, &tx) {
        // The dispatcher may have gone already; then nobody needs to know.
        let _ = tx.blocking_send(stopped);
    }
}

fn read_and_send(
    path: &Path,
    context: &ReaderContext,
    tx: &mpsc::Sender<Message>,
) -> Result<(), Message> {
    let stopped =
        |position: Option<Position>, message: String| Message::Stopped { position, message };
    let mut file = File::open(path).map_err(|err| stopped(None, format!("cannot open: {err}")))?;
    let instance = context
        .plugin
        .instantiate()
        .map_err(|err| stopped(None, error_chain(&err)))?;
    let mut parser = instance
        .parser()
        .map_err(|err| stopped(None, error_chain(&err)))?;

    let mut chunk = vec![0u8; context.chunk_size];
    let mut preamble_sent = false;
    let mut last_position: Option<Position> = None;
    loop {
        context.runtime.block_on(async {
            let mut shutdown = context.shutdown.clone();
            tokio::select! {
                _ = context.breaker.wait_until_not_open() => {}
                _ = crate::shutdown::stopped(&mut shutdown) => {}
            }
        });
        if *context.shutdown.borrow() {
            return Ok(());
        }
        let read = file
            .read(&mut chunk)
            .map_err(|err| stopped(last_position, format!("read failed: {err}")))?;
        context.counters.bytes_read.fetch_add(read as u64, Relaxed);

        let parsed = if read == 0 {
            parser.finish()
        } else {
            parser.feed(&chunk[..read])
        };
        let parsed = parsed.map_err(|err| stopped(last_position, error_chain(&err)))?;

        if !preamble_sent && (read == 0 || !parsed.is_empty()) {
            let preamble = parser
                .preamble()
                .map_err(|err| stopped(last_position, error_chain(&err)))?;
            preamble_sent = true;
            if tx.blocking_send(Message::Preamble(preamble)).is_err() {
                return Ok(());
            }
        }

        if !parsed.is_empty() {
            last_position = Some(position_of(parsed.last().expect("not empty")));
            let items = prepare_items(&mut parser, parsed, context)
                .map_err(|err| stopped(last_position, error_chain(&err)))?;
            context.counters.read.fetch_add(items.len() as u64, Relaxed);
            if tx.blocking_send(Message::Items(items)).is_err() {
                return Ok(());
            }
        }
        if read == 0 {
            return Ok(());
        }
    }
}

fn prepare_items(
    parser: &mut crate::plugin::FileParser,
    parsed: Vec<Parsed>,
    context: &ReaderContext,
) -> Result<Vec<Item>, crate::plugin::PluginError> {
    let mut records = Vec::new();
    let mut order = Vec::with_capacity(parsed.len());
    for item in parsed {
        match item {
            Parsed::Record(record) => {
                order.push(None);
                records.push(record);
            }
            Parsed::Malformed(malformed) => order.push(Some(malformed)),
        }
    }
    let mut mapped = if records.is_empty() {
        Vec::new()
    } else {
        parser.map(&records)?
    }
    .into_iter();

    let mut records = records.into_iter();
    let mut items = Vec::with_capacity(order.len());
    for slot in order {
        if let Some(malformed) = slot {
            items.push(Item::Malformed(malformed));
            continue;
        }
        let (Some(record), Some(mapping)) = (records.next(), mapped.next()) else {
            unreachable!("map returns one result per record");
        };
        let item = match mapping {
            Err(reason) => Item::Unsendable {
                record,
                reason: format!("mapping failed: {reason}"),
            },
            Ok(request) => {
                let headers = request.headers.into_iter().map(|h| (h.name, h.value));
                let prepared = prepare(
                    &context.endpoint,
                    &request.method,
                    &request.path,
                    headers,
                    &context.headers,
                    request.body,
                );
                match prepared {
                    Ok(request) => Item::Ready { record, request },
                    Err(reason) => Item::Unsendable { record, reason },
                }
            }
        };
        items.push(item);
    }
    Ok(items)
}

fn position_of(parsed: &Parsed) -> Position {
    match parsed {
        Parsed::Record(record) => record.position,
        Parsed::Malformed(malformed) => malformed.position,
    }
}
