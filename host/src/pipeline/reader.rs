//! The reading side of a file: bytes to records to prepared requests.
//!
//! Runs on a thread of its own because plugin calls are synchronous. It
//! feeds the file to the plugin chunk by chunk, maps each batch of records
//! in one plugin call, and sends the results to the dispatcher over a
//! bounded channel, so a slow API slows reading instead of filling memory.
//! Before each chunk it waits while the circuit breaker is open.
//!
//! The thread runs at a lower scheduling priority than the rest of the
//! process. It works ahead of the requests, by up to the channel's size, so
//! it can wait for a core. The thread that sends requests, and an API on
//! the same machine, cannot wait without slowing every request down.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use reqwest::header::{HeaderName, HeaderValue};
use reqwest::Url;
use tokio::sync::mpsc;

use super::dispatch::Origins;
use super::parsing::{Parsing, Stop};
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

impl Item {
    /// Returns where the item's record starts.
    pub fn position(&self) -> Position {
        match self {
            Item::Ready { record, .. } | Item::Unsendable { record, .. } => record.position,
            Item::Malformed(bad) => bad.position,
        }
    }
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
    /// Adds an idempotency key to each request, when keys are on. The
    /// reader does it rather than the dispatcher, whose thread sends every
    /// request.
    pub idempotency: Option<Idempotency>,
}

/// The idempotency key header, and where its values come from.
pub struct Idempotency {
    pub header: HeaderName,
    pub origins: Arc<dyn Origins>,
}

/// How much the reader thread lowers its priority: a nice increment.
const READER_NICENESS: i32 = 10;

/// Starts reading `path` to its end, or until the dispatcher hangs up, on a
/// thread of its own inside `span`. The returned future ends with the
/// thread and passes on a panic of the thread.
///
/// # Errors
///
/// Fails when the thread cannot be started.
pub fn spawn(
    path: PathBuf,
    context: ReaderContext,
    tx: mpsc::Sender<Message>,
    span: tracing::Span,
) -> std::io::Result<impl Future<Output = ()>> {
    let (done, finished) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("sluice-reader".to_owned())
        .spawn(move || {
            lower_priority();
            let _entered = span.enter();
            let read = || read_file(&path, &context, tx);
            let _ = done.send(std::panic::catch_unwind(AssertUnwindSafe(read)));
        })?;
    Ok(async move {
        match finished.await {
            Ok(Ok(())) => {}
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => unreachable!("the reader thread reports before it ends"),
        }
    })
}

/// Lowers the calling thread's priority by [`READER_NICENESS`]. Linux keeps
/// a nice value per thread. Elsewhere it is per process, so this does
/// nothing there.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: getpriority and setpriority only read and set the calling
    // thread's nice value, and take no pointers.
    unsafe {
        // -1 is also a valid nice value, so errno tells a failed call
        // apart. After a failure the priority stays as it is.
        *libc::__errno_location() = 0;
        let current = libc::getpriority(libc::PRIO_PROCESS, 0);
        if *libc::__errno_location() == 0 {
            let lower = (current + READER_NICENESS).min(19);
            let _ = libc::setpriority(libc::PRIO_PROCESS, 0, lower);
        }
    }
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
    let stopped = |position: Option<Position>, stop: Stop| Message::Stopped {
        position,
        message: error_chain(&stop),
    };
    let mut parsing = Parsing::open(path, context.plugin.clone(), context.chunk_size)
        .map_err(|stop| stopped(None, stop))?;

    let mut preamble_sent = false;
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
        let next = parsing.next_items();
        let next = next.map_err(|stop| stopped(parsing.last_position(), stop))?;
        let Some((parsed, read)) = next else {
            return Ok(());
        };
        context.counters.bytes_read.fetch_add(read as u64, Relaxed);

        if !preamble_sent && (read == 0 || !parsed.is_empty()) {
            let preamble = parsing.preamble();
            let preamble = preamble.map_err(|stop| stopped(parsing.last_position(), stop))?;
            preamble_sent = true;
            if tx.blocking_send(Message::Preamble(preamble)).is_err() {
                return Ok(());
            }
        }

        if !parsed.is_empty() {
            let prepared = prepare_items(&mut parsing, parsed, context);
            let (items, stop) = prepared.map_err(|stop| stopped(parsing.last_position(), stop))?;
            let last = items.last().map(Item::position);
            context.counters.read.fetch_add(items.len() as u64, Relaxed);
            if tx.blocking_send(Message::Items(items)).is_err() {
                return Ok(());
            }
            if let Some(stop) = stop {
                return Err(stopped(last, stop));
            }
        }
    }
}

fn prepare_items(
    parsing: &mut Parsing,
    parsed: Vec<Parsed>,
    context: &ReaderContext,
) -> Result<(Vec<Item>, Option<Stop>), Stop> {
    let max_bytes = context.plugin.limits().max_record_bytes;
    let mut records = Vec::new();
    let mut order = Vec::with_capacity(parsed.len());
    for item in parsed {
        match item {
            Parsed::Record(record) if record.raw.len() > max_bytes => {
                let reason = too_large("the record", record.raw.len(), max_bytes);
                order.push(Some(Item::Unsendable { record, reason }));
            }
            Parsed::Record(record) => {
                order.push(None);
                records.push(record);
            }
            Parsed::Malformed(malformed) => order.push(Some(Item::Malformed(malformed))),
        }
    }
    let (mut mapped, stop) = if records.is_empty() {
        (Vec::new().into_iter(), None)
    } else {
        let mapped = parsing.map(&records)?;
        (mapped.results.into_iter(), mapped.stop)
    };

    let mut records = records.into_iter();
    let mut items = Vec::with_capacity(order.len());
    for slot in order {
        if let Some(item) = slot {
            items.push(item);
            continue;
        }
        let Some(record) = records.next() else {
            unreachable!("one record per empty slot");
        };
        // Mapping stopped before this record: the file ends here.
        let Some(mapping) = mapped.next() else {
            break;
        };
        let item = match mapping {
            Err(reason) => Item::Unsendable {
                record,
                reason: format!("mapping failed: {reason}"),
            },
            Ok(request) if request.body.len() > max_bytes => {
                let reason = too_large("its request body", request.body.len(), max_bytes);
                Item::Unsendable { record, reason }
            }
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
                    Ok(mut request) => {
                        if let Some(idempotency) = &context.idempotency {
                            let key = idempotency.origins.idempotency_key(&record);
                            // Keys the host derives are always valid; one
                            // from an edited sidecar file may not be.
                            if let Ok(value) = HeaderValue::try_from(key) {
                                request.headers.insert(idempotency.header.clone(), value);
                            }
                        }
                        Item::Ready { record, request }
                    }
                    Err(reason) => Item::Unsendable { record, reason },
                }
            }
        };
        items.push(item);
    }
    Ok((items, stop))
}

fn too_large(what: &str, len: usize, max: usize) -> String {
    format!(
        "{what} is {len} bytes, more than plugin.max_record_bytes ({max}); raise the limit \
         or fix the plugin"
    )
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn nice() -> i32 {
        // SAFETY: reads the calling thread's nice value only.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
    }

    #[test]
    fn reader_priority_is_lowered() {
        let (before, after) = std::thread::spawn(|| {
            let before = nice();
            lower_priority();
            (before, nice())
        })
        .join()
        .unwrap();
        assert_eq!(after, (before + READER_NICENESS).min(19));
        assert_eq!(nice(), before, "only the calling thread changes");
    }
}
