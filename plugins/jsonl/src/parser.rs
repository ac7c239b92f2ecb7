//! The streaming parser for one file: splitting lines across chunks,
//! record positions and error recovery.
//!
//! Each line, ended by LF or CRLF, contains one JSON value. A line that
//! contains only JSON whitespace (space, tab, CR) is blank: it counts as a
//! line but not as a record. The last line needs no terminator. A UTF-8 byte
//! order mark at the start of the file is skipped, but offsets still count
//! it.
//!
//! The parser appends each chunk to a buffer that starts at the first byte
//! of the line in progress, and searches only the new bytes for LF. A line
//! is parsed once its LF arrives, so a chunk may end anywhere, inside a
//! CRLF or a multi-byte character too. The buffer therefore contains at most
//! one incomplete line, which `max_record_bytes` bounds, plus the last chunk.
//!
//! Recovery: every line is parsed on its own, so a malformed line never
//! shifts the records after it. A line longer than `max_record_bytes` is
//! reported with its first `max_record_bytes` bytes, whether or not its end
//! has arrived, and the rest of it is skipped.

use std::sync::Arc;

use crate::config::Config;
use crate::mapping;
use crate::record::{Malformed, Parsed, Position, ReadBack, Record, Request};
use crate::value;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// A streaming JSON Lines parser for one input file.
#[derive(Debug)]
pub struct Parser {
    config: Arc<Config>,
    /// Unconsumed input: `buf[line_start..]` is the line in progress.
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    buf_offset: u64,
    line_start: usize,
    /// Index in `buf` from which the search for the next LF continues.
    scan_from: usize,
    /// Line number of `buf[line_start]`.
    line: u64,
    /// Records reported so far, malformed ones included.
    records: u64,
    /// Whether the first bytes may still turn out to be a byte order mark.
    bom_pending: bool,
    /// Whether the rest of an overlong line is being discarded.
    skipping: bool,
    finished: bool,
}

impl Parser {
    pub fn new(config: Arc<Config>) -> Parser {
        Parser {
            config,
            buf: Vec::new(),
            buf_offset: 0,
            line_start: 0,
            scan_from: 0,
            line: 1,
            records: 0,
            bom_pending: true,
            skipping: false,
            finished: false,
        }
    }

    /// Consumes the next chunk of the file and returns the records that it
    /// completes, in file order.
    ///
    /// # Errors
    ///
    /// Returns a message for a call after [`finish`](Parser::finish). Bad
    /// lines are [`Malformed`] items instead.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Parsed>, String> {
        self.check_usable()?;
        self.buf.extend_from_slice(chunk);

        let mut out = Vec::new();
        self.run(false, &mut out);
        self.compact();
        Ok(out)
    }

    /// Signals the end of the file and returns the records still buffered,
    /// such as a last line without a terminator.
    ///
    /// # Errors
    ///
    /// As for [`feed`](Parser::feed).
    pub fn finish(&mut self) -> Result<Vec<Parsed>, String> {
        self.check_usable()?;

        let mut out = Vec::new();
        self.run(true, &mut out);
        self.finished = true;
        self.buf = Vec::new();
        Ok(out)
    }

    /// Returns the bytes that start a dead-letter file: none, because JSON
    /// Lines has no header.
    pub fn preamble(&self) -> Vec<u8> {
        Vec::new()
    }

    /// Maps the raw bytes of one record to its request.
    ///
    /// # Errors
    ///
    /// As for [`mapping::map_record`].
    pub fn map_record(&self, raw: &[u8]) -> Result<Request, String> {
        mapping::map_record(raw, &self.config)
    }

    /// Maps the raw bytes of one record to the request that reads it back
    /// and the JSON expected in the response. Returns `None` when the
    /// configuration gives no way to read records back: no `read_path` and
    /// a method other than PUT.
    ///
    /// # Errors
    ///
    /// As for [`mapping::read_back`].
    pub fn read_back(&self, raw: &[u8]) -> Result<Option<ReadBack>, String> {
        mapping::read_back(raw, &self.config)
    }

    fn check_usable(&self) -> Result<(), String> {
        if self.finished {
            return Err("the parser has already finished its file; \
                        create a new parser for the next file"
                .to_owned());
        }
        Ok(())
    }

    /// Drops the consumed bytes from the front of the buffer.
    fn compact(&mut self) {
        if self.line_start > 0 {
            self.buf.drain(..self.line_start);
            self.buf_offset += self.line_start as u64;
            self.scan_from -= self.line_start;
            self.line_start = 0;
        }
    }

    /// Parses every complete line in the buffer. At the end of the file
    /// (`eof`), the last line need not end with a terminator.
    fn run(&mut self, eof: bool, out: &mut Vec<Parsed>) {
        if self.bom_pending {
            // A chunk may end inside the byte order mark.
            if !eof && self.buf.len() < UTF8_BOM.len() && UTF8_BOM.starts_with(&self.buf) {
                return;
            }
            self.bom_pending = false;
            if self.buf.starts_with(UTF8_BOM) {
                self.line_start = UTF8_BOM.len();
                self.scan_from = UTF8_BOM.len();
            }
        }

        loop {
            let search_from = self.scan_from.max(self.line_start);
            let lf = self.buf[search_from..]
                .iter()
                .position(|&byte| byte == b'\n')
                .map(|index| search_from + index);

            if self.skipping {
                match lf {
                    Some(lf) => {
                        self.next_line(lf);
                        self.skipping = false;
                        continue;
                    }
                    None => {
                        self.line_start = self.buf.len();
                        self.scan_from = self.buf.len();
                        return;
                    }
                }
            }

            if let Some(lf) = lf {
                let mut end = lf;
                if end > self.line_start && self.buf[end - 1] == b'\r' {
                    end -= 1;
                }
                self.complete_line(end, out);
                self.next_line(lf);
                continue;
            }

            self.scan_from = self.buf.len();
            let pending = self.buf.len() - self.line_start;
            if pending == 0 {
                return;
            }
            if eof {
                self.complete_line(self.buf.len(), out);
                self.line_start = self.buf.len();
                return;
            }
            // Without its LF, the line may still end in the CR of a CRLF,
            // so only more than `max + 1` bytes surely exceed the limit.
            if pending > self.config.max_record_bytes + 1 {
                self.report_overlong(out);
                self.skipping = true;
                self.line_start = self.buf.len();
                return;
            }
            return;
        }
    }

    /// Moves to the line after the LF at `lf`.
    fn next_line(&mut self, lf: usize) {
        self.line_start = lf + 1;
        self.scan_from = lf + 1;
        self.line += 1;
    }

    /// Turns the line `buf[line_start..end]`, without its terminator, into
    /// a parsed item, unless it is blank.
    fn complete_line(&mut self, end: usize, out: &mut Vec<Parsed>) {
        if end - self.line_start > self.config.max_record_bytes {
            self.report_overlong(out);
            return;
        }
        let raw = &self.buf[self.line_start..end];
        if raw.iter().all(|&byte| matches!(byte, b' ' | b'\t' | b'\r')) {
            return;
        }

        let position = Position {
            record_number: self.records + 1,
            line: self.line,
            offset: self.buf_offset + self.line_start as u64,
        };
        self.records += 1;
        let item = match value::parse_line(raw) {
            Ok(root) => Parsed::Record(Record {
                position,
                key: mapping::record_key(root, &self.config.key),
                raw: raw.to_vec(),
            }),
            Err(message) => Parsed::Malformed(Malformed {
                position,
                raw: raw.to_vec(),
                message,
            }),
        };
        out.push(item);
    }

    /// Reports the line in progress as longer than `max_record_bytes`, with
    /// its first `max_record_bytes` bytes as `raw`.
    // NOTE: `raw` is truncated, so a dead-letter file gets a partial line.
    // Keeping the whole line would break the memory bound.
    fn report_overlong(&mut self, out: &mut Vec<Parsed>) {
        let max = self.config.max_record_bytes;
        let position = self.next_position();
        let raw = self.buf[self.line_start..self.line_start + max].to_vec();
        out.push(Parsed::Malformed(Malformed {
            position,
            raw,
            message: format!(
                "line {} is longer than max_record_bytes ({max} bytes); raw contains its \
                 first {max} bytes and the rest of the line was skipped",
                self.line
            ),
        }));
    }

    /// Counts a new record and returns its position.
    fn next_position(&mut self) -> Position {
        self.records += 1;
        Position {
            record_number: self.records,
            line: self.line,
            offset: self.buf_offset + self.line_start as u64,
        }
    }
}

#[cfg(test)]
mod tests;
