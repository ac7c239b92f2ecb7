//! A plugin's stderr, forwarded to the host's log.
//!
//! Each complete line becomes one `info` event tagged with the plugin's
//! name. A plugin that writes without end must not flood the log or slow
//! the host, so all instances of one plugin share a budget of
//! [`LINES_PER_WINDOW`] lines per [`WINDOW`]. Lines over the budget are
//! counted, and the count is logged once the next window opens or the
//! plugin is dropped. Lines are cut at [`MAX_LINE_BYTES`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Lines logged per window and plugin.
pub const LINES_PER_WINDOW: u32 = 100;
/// The length of one rate-limiting window.
pub const WINDOW: Duration = Duration::from_secs(10);
/// The maximum length of a logged line. The rest of a longer line is
/// dropped.
pub const MAX_LINE_BYTES: usize = 4096;

/// The stderr of every instance of one plugin.
#[derive(Clone)]
pub struct PluginStderr {
    shared: Arc<Shared>,
    /// The output of one instance during its current call, logged or not,
    /// so that a trap can be reported with the panic message the plugin
    /// wrote before it.
    call_output: Arc<Mutex<Vec<String>>>,
    /// Whether lines are only kept in `call_output`, not logged.
    quiet: bool,
}

/// Lines of one call kept for a trap report; a panic message takes two.
const CALL_OUTPUT_LINES: usize = 4;

struct Shared {
    plugin: String,
    budget: Mutex<Budget>,
}

struct Budget {
    window_start: Instant,
    logged: u32,
    suppressed: u64,
}

impl PluginStderr {
    /// Creates the stderr sink for the plugin named `plugin`.
    pub fn new(plugin: &str) -> PluginStderr {
        PluginStderr {
            shared: Arc::new(Shared {
                plugin: plugin.to_owned(),
                budget: Mutex::new(Budget {
                    window_start: Instant::now(),
                    logged: 0,
                    suppressed: 0,
                }),
            }),
            call_output: Arc::default(),
            quiet: false,
        }
    }

    /// Returns a stderr for a new instance: the same log and budget, and
    /// its own call output. A quiet one logs nothing.
    pub fn for_instance(&self, quiet: bool) -> PluginStderr {
        PluginStderr {
            shared: self.shared.clone(),
            call_output: Arc::default(),
            quiet,
        }
    }

    /// Forgets the output of the previous call.
    pub fn start_call(&self) {
        self.call_output
            .lock()
            .unwrap_or_else(|err| err.into_inner())
            .clear();
    }

    /// Returns the last lines written during the current call, joined by
    /// spaces, without Rust's hint about `RUST_BACKTRACE`.
    pub fn call_output(&self) -> Option<String> {
        let lines = self
            .call_output
            .lock()
            .unwrap_or_else(|err| err.into_inner());
        let kept: Vec<&str> = lines
            .iter()
            .map(|line| line.trim())
            .filter(|line| !line.is_empty() && !line.starts_with("note: run with `RUST_BACKTRACE"))
            .collect();
        (!kept.is_empty()).then(|| kept.join(" "))
    }
}

impl Shared {
    fn log_line(&self, line: &str) {
        let mut budget = self.budget.lock().unwrap_or_else(|err| err.into_inner());
        if budget.window_start.elapsed() >= WINDOW {
            self.report_suppressed(&mut budget);
            budget.window_start = Instant::now();
            budget.logged = 0;
        }
        if budget.logged >= LINES_PER_WINDOW {
            budget.suppressed += 1;
            return;
        }
        budget.logged += 1;
        tracing::info!(target: "sluice::plugin::stderr", plugin = %self.plugin, "{line}");
    }

    fn report_suppressed(&self, budget: &mut Budget) {
        if budget.suppressed > 0 {
            tracing::info!(
                target: "sluice::plugin::stderr",
                plugin = %self.plugin,
                suppressed = budget.suppressed,
                "plugin stderr lines dropped by the rate limit"
            );
            budget.suppressed = 0;
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let mut budget = self.budget.lock().unwrap_or_else(|err| err.into_inner());
        self.report_suppressed(&mut budget);
    }
}

impl IsTerminal for PluginStderr {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for PluginStderr {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(LineWriter {
            stderr: self.clone(),
            line: Vec::new(),
        })
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only the WASI preview 2 interfaces are linked, and they use
        // `p2_stream`; a sink keeps this path harmless if that changes.
        Box::new(tokio::io::sink())
    }
}

/// One instance's stream: buffers a partial line until its newline.
struct LineWriter {
    stderr: PluginStderr,
    line: Vec<u8>,
}

impl LineWriter {
    fn push(&mut self, mut bytes: &[u8]) {
        while let Some(end) = bytes.iter().position(|b| *b == b'\n') {
            self.append(&bytes[..end]);
            self.end_line();
            bytes = &bytes[end + 1..];
        }
        self.append(bytes);
    }

    fn end_line(&mut self) {
        let line = String::from_utf8_lossy(&self.line);
        let line = line.trim_end();
        if !self.stderr.quiet && !line.is_empty() {
            self.stderr.shared.log_line(line);
        }
        let mut output = self
            .stderr
            .call_output
            .lock()
            .unwrap_or_else(|err| err.into_inner());
        if output.len() == CALL_OUTPUT_LINES {
            output.remove(0);
        }
        output.push(line.to_owned());
        drop(output);
        self.line.clear();
    }

    fn append(&mut self, bytes: &[u8]) {
        let room = MAX_LINE_BYTES.saturating_sub(self.line.len());
        self.line.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.end_line();
        }
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_across_writes_are_joined() {
        let stderr = PluginStderr::new("test").for_instance(false);
        let mut writer = LineWriter {
            stderr: stderr.clone(),
            line: Vec::new(),
        };
        writer.push(b"hel");
        assert_eq!(stderr.call_output(), None);
        writer.push(b"lo\r\nwor");
        assert_eq!(writer.line, b"wor");
        assert_eq!(stderr.call_output().as_deref(), Some("hello"));
    }

    #[test]
    fn call_output_keeps_the_panic_message() {
        let plugin = PluginStderr::new("test");
        let (first, second) = (plugin.for_instance(true), plugin.for_instance(false));
        let mut writer = LineWriter {
            stderr: first.clone(),
            line: Vec::new(),
        };
        writer.push(b"earlier call\n");
        first.start_call();
        writer.push(b"thread '<unnamed>' panicked at src/lib.rs:1:2:\nboom\n");
        writer.push(b"note: run with `RUST_BACKTRACE=1` environment variable\n");
        let output = first.call_output().unwrap();
        assert_eq!(
            output,
            "thread '<unnamed>' panicked at src/lib.rs:1:2: boom"
        );
        assert_eq!(second.call_output(), None);
    }

    #[test]
    fn long_lines_are_cut() {
        let stderr = PluginStderr::new("test");
        let mut writer = LineWriter {
            stderr,
            line: Vec::new(),
        };
        writer.push(&vec![b'x'; MAX_LINE_BYTES + 10]);
        assert_eq!(writer.line.len(), MAX_LINE_BYTES);
    }

    #[test]
    fn lines_over_the_budget_are_counted() {
        let stderr = PluginStderr::new("test");
        for _ in 0..LINES_PER_WINDOW + 7 {
            stderr.shared.log_line("line");
        }
        let budget = stderr.shared.budget.lock().unwrap();
        assert_eq!(budget.logged, LINES_PER_WINDOW);
        assert_eq!(budget.suppressed, 7);
    }
}
