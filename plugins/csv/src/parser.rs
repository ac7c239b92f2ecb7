//! The streaming parser for one file: buffering across chunks, the header
//! row, record positions and error recovery.
//!
//! The parser appends each chunk to a buffer that starts at the first byte
//! of the record in progress, and the [`Tokenizer`] scans only the new bytes.
//! At the end of each call the parser drops the completed records from the
//! buffer. The buffer therefore contains at most one incomplete record, which
//! `max_record_bytes` bounds, plus the last chunk.
//!
//! Recovery: some records cannot end well. The file may end inside a quoted
//! field, the record may grow past `max_record_bytes`, or a quoted field that
//! spans lines may be followed by junk. The parser then reports the record's
//! first line as malformed and parses again from the next line. So a stray
//! quote costs its own line, and the rows that the quote swallowed still
//! come out.

use std::sync::Arc;

use crate::config::Config;
use crate::header::{describe_byte, Header, CR_IN_HEADER};
use crate::mapping;
use crate::record::{Malformed, Parsed, Position, ReadBack, Record, Request};
use crate::tokenizer::{Field, QuoteError, Step, Tokenizer};

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

const NO_HEADER: &str = "no header row has been parsed yet, so the record cannot be mapped; \
                         map only records that this parser returned";

/// A streaming CSV parser for one input file.
#[derive(Debug)]
pub struct Parser {
    config: Arc<Config>,
    /// Unconsumed input: `buf[rec_start..]` is the record in progress.
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    buf_offset: u64,
    rec_start: usize,
    /// Line number of `buf[rec_start]`.
    line: u64,
    /// Data records reported so far, malformed ones included.
    records: u64,
    tokenizer: Tokenizer,
    /// A second tokenizer for `map`, so that mapping between two `feed`
    /// calls leaves the record in progress alone.
    map_tokenizer: Tokenizer,
    header: Option<Header>,
    /// Whether the first bytes may still turn out to be a byte order mark.
    bom_pending: bool,
    /// Whether the rest of an overlong line is being discarded.
    skipping: bool,
    /// A file-level error, returned again by every later call.
    failed: Option<String>,
    finished: bool,
}

impl Parser {
    pub fn new(config: Arc<Config>) -> Parser {
        let delimiter = config.delimiter;
        Parser {
            config,
            buf: Vec::new(),
            buf_offset: 0,
            rec_start: 0,
            line: 1,
            records: 0,
            tokenizer: Tokenizer::new(delimiter),
            map_tokenizer: Tokenizer::new(delimiter),
            header: None,
            bom_pending: true,
            skipping: false,
            failed: None,
            finished: false,
        }
    }

    /// Consumes the next chunk of the file and returns the records that it
    /// completes, in file order.
    ///
    /// # Errors
    ///
    /// Returns a message when the file cannot be read from here on: a
    /// broken or duplicate header row, a configured column that the header
    /// lacks, or a call after [`finish`](Parser::finish). The error is
    /// returned again by every later call.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Parsed>, String> {
        self.check_usable()?;
        self.buf.extend_from_slice(chunk);

        let mut out = Vec::new();
        let result = self.run(false, &mut out);
        self.compact();
        self.keep_error(result)?;
        Ok(out)
    }

    /// Signals the end of the file and returns the records still buffered.
    ///
    /// # Errors
    ///
    /// As for [`feed`](Parser::feed).
    pub fn finish(&mut self) -> Result<Vec<Parsed>, String> {
        self.check_usable()?;

        let mut out = Vec::new();
        let result = self.run(true, &mut out);
        self.finished = true;
        self.buf = Vec::new();
        self.keep_error(result)?;
        Ok(out)
    }

    /// Returns the header row followed by `\n`, or nothing before the header
    /// has been parsed.
    pub fn preamble(&self) -> Vec<u8> {
        match &self.header {
            Some(header) => {
                let mut preamble = Vec::with_capacity(header.raw().len() + 1);
                preamble.extend_from_slice(header.raw());
                preamble.push(b'\n');
                preamble
            }
            None => Vec::new(),
        }
    }

    /// Returns the header's column names, once the header row has been parsed.
    pub fn columns(&self) -> Option<&[String]> {
        self.header.as_ref().map(Header::names)
    }

    /// Maps the raw bytes of one record of this file to its request.
    ///
    /// # Errors
    ///
    /// Returns a message when the header is not known yet, or when `raw` is
    /// not one well-formed record that matches the header. Also when a path
    /// placeholder's value is empty, null or makes a dot segment such as `..`.
    pub fn map_record(&mut self, raw: &[u8]) -> Result<Request, String> {
        let Some(header) = &self.header else {
            return Err(NO_HEADER.to_owned());
        };
        mapping::map_record(raw, header, &self.config, &mut self.map_tokenizer)
    }

    /// Maps the raw bytes of one record of this file to the request that
    /// reads it back and the JSON expected in the response. Returns `None`
    /// when the configuration gives no way to read records back: no
    /// `read_path` and a method other than PUT.
    ///
    /// # Errors
    ///
    /// As for [`map_record`](Parser::map_record).
    pub fn read_back(&mut self, raw: &[u8]) -> Result<Option<ReadBack>, String> {
        let Some(header) = &self.header else {
            return Err(NO_HEADER.to_owned());
        };
        mapping::read_back(raw, header, &self.config, &mut self.map_tokenizer)
    }

    fn check_usable(&self) -> Result<(), String> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        if self.finished {
            return Err("the parser has already finished its file; \
                        create a new parser for the next file"
                .to_owned());
        }
        Ok(())
    }

    fn keep_error(&mut self, result: Result<(), String>) -> Result<(), String> {
        if let Err(error) = &result {
            self.failed = Some(error.clone());
            self.buf = Vec::new();
            self.rec_start = 0;
        }
        result
    }

    /// Drops the consumed bytes from the front of the buffer.
    fn compact(&mut self) {
        if self.rec_start > 0 {
            self.buf.drain(..self.rec_start);
            self.buf_offset += self.rec_start as u64;
            self.rec_start = 0;
        }
    }

    /// Parses every complete record in the buffer. At the end of the file
    /// (`eof`), the last record need not end with a line terminator.
    fn run(&mut self, eof: bool, out: &mut Vec<Parsed>) -> Result<(), String> {
        if self.bom_pending {
            // A chunk may end inside the byte order mark.
            if !eof && self.buf.len() < UTF8_BOM.len() && UTF8_BOM.starts_with(&self.buf) {
                return Ok(());
            }
            self.bom_pending = false;
            if self.buf.starts_with(UTF8_BOM) {
                self.rec_start = UTF8_BOM.len();
            }
        }

        loop {
            if self.skipping && !self.skip_line() {
                return Ok(());
            }

            let bytes = &self.buf[self.rec_start..];
            if bytes.is_empty() {
                return Ok(());
            }
            let mut step = self.tokenizer.advance(bytes, self.config.max_record_bytes);
            // `Header::parse` reports this too. Failing here stops a file with
            // CR-only line endings at its first such CR, instead of buffering
            // it as one header row until max_record_bytes reports an overflow.
            if self.header.is_none() && self.tokenizer.data_cr() {
                return Err(CR_IN_HEADER.to_owned());
            }
            if step == Step::Incomplete {
                if !eof {
                    return Ok(());
                }
                step = self.tokenizer.finish(bytes);
            }

            match step {
                Step::Incomplete => return Ok(()),
                Step::Record { len, next } => {
                    // A record of length 0 is a blank line: no record, but
                    // still a line.
                    if len > 0 {
                        self.complete_record(len, out)?;
                    }
                    self.line += self.tokenizer.lf_count() + 1;
                    self.rec_start += next;
                    self.tokenizer.reset();
                }
                Step::Overflow => self.recover_overflow(out)?,
                Step::BrokenQuote => {
                    let (quote_lines, byte) = self.tokenizer.broken_quote().unwrap_or((0, b'"'));
                    let message = format!(
                        "unterminated quoted field starting at line {}: the quote on line {} \
                         is followed by {}, not by a delimiter or line end",
                        self.line + self.tokenizer.quote_open_lines(),
                        self.line + quote_lines,
                        describe_byte(byte)
                    );
                    self.report_first_line(message, out)?;
                }
                Step::Unterminated => {
                    let message = format!(
                        "unterminated quoted field starting at line {}",
                        self.line + self.tokenizer.quote_open_lines()
                    );
                    self.report_first_line(message, out)?;
                }
            }
        }
    }

    /// Discards bytes up to and including the next LF. Returns whether it
    /// found one.
    fn skip_line(&mut self) -> bool {
        let bytes = &self.buf[self.rec_start..];
        match bytes.iter().position(|&byte| byte == b'\n') {
            Some(index) => {
                self.rec_start += index + 1;
                self.line += 1;
                self.skipping = false;
                true
            }
            None => {
                self.rec_start = self.buf.len();
                false
            }
        }
    }

    /// Turns the completed record `buf[rec_start..rec_start + len]` into the
    /// header or a parsed item.
    fn complete_record(&mut self, len: usize, out: &mut Vec<Parsed>) -> Result<(), String> {
        let raw = &self.buf[self.rec_start..self.rec_start + len];
        let Some(header) = &self.header else {
            self.header = Some(Header::parse(raw, &self.tokenizer, &self.config)?);
            return Ok(());
        };

        self.records += 1;
        let position = Position {
            record_number: self.records,
            line: self.line,
            offset: self.buf_offset + self.rec_start as u64,
        };
        let fields = self.tokenizer.fields();
        let checked = check_record(raw, fields, self.tokenizer.quote_error(), header)
            .and_then(|text| record_key(text, fields, header));

        out.push(match checked {
            Ok(key) => Parsed::Record(Record {
                position,
                key,
                raw: raw.to_vec(),
            }),
            Err(message) => Parsed::Malformed(Malformed {
                position,
                raw: raw.to_vec(),
                message,
            }),
        });
        Ok(())
    }

    /// Handles a record that grew past `max_record_bytes`.
    fn recover_overflow(&mut self, out: &mut Vec<Parsed>) -> Result<(), String> {
        let max = self.config.max_record_bytes;
        if self.header.is_none() {
            return Err(format!(
                "the header row starting at line {} is longer than max_record_bytes \
                 ({max} bytes); raise max_record_bytes or check the file's quoting",
                self.line
            ));
        }

        if self.tokenizer.first_lf().is_some() {
            let message = if self.tokenizer.in_quotes() {
                format!(
                    "unterminated quoted field starting at line {}: no closing quote within \
                     max_record_bytes ({max} bytes)",
                    self.line + self.tokenizer.quote_open_lines()
                )
            } else {
                format!(
                    "record starting at line {} is longer than max_record_bytes ({max} bytes)",
                    self.line
                )
            };
            return self.report_first_line(message, out);
        }

        // The line itself is too long to buffer: report its start and drop
        // the rest of it.
        // NOTE: `raw` is truncated here, so a dead-letter file gets a partial
        // line. Keeping the whole line would break the memory bound.
        self.records += 1;
        let position = Position {
            record_number: self.records,
            line: self.line,
            offset: self.buf_offset + self.rec_start as u64,
        };
        let bytes = &self.buf[self.rec_start..];
        let raw = bytes.get(..max).unwrap_or(bytes).to_vec();
        out.push(Parsed::Malformed(Malformed {
            position,
            raw,
            message: format!(
                "line {} is longer than max_record_bytes ({max} bytes); raw holds its first \
                 {max} bytes and the rest of the line was skipped",
                self.line
            ),
        }));
        self.rec_start += max;
        self.skipping = true;
        self.tokenizer.reset();
        Ok(())
    }

    /// Reports the first line of the record in progress as malformed and
    /// resumes parsing at the next line. Without a line break in the record,
    /// which happens only at the end of the file, the whole rest is reported.
    fn report_first_line(&mut self, message: String, out: &mut Vec<Parsed>) -> Result<(), String> {
        if self.header.is_none() {
            return Err(format!("invalid header row: {message}"));
        }

        let bytes = &self.buf[self.rec_start..];
        let (line_end, next) = match self.tokenizer.first_lf() {
            Some(lf) => (lf, lf + 1),
            None => (bytes.len(), bytes.len()),
        };
        let raw = trim_trailing_cr(&bytes[..line_end]).to_vec();

        self.records += 1;
        let position = Position {
            record_number: self.records,
            line: self.line,
            offset: self.buf_offset + self.rec_start as u64,
        };
        out.push(Parsed::Malformed(Malformed {
            position,
            raw,
            message,
        }));

        self.rec_start += next;
        self.line += 1;
        self.tokenizer.reset();
        Ok(())
    }
}

/// Checks a data record against the header and returns its text.
///
/// # Errors
///
/// Returns the message for a malformed record: a byte after a closing
/// quote, the wrong number of fields, or invalid UTF-8, in that order.
pub(crate) fn check_record<'a>(
    raw: &'a [u8],
    fields: &[Field],
    quote_error: Option<QuoteError>,
    header: &Header,
) -> Result<&'a str, String> {
    if let Some(error) = quote_error {
        return Err(format!(
            "unexpected {} after the closing quote of field {}; quote the whole field and \
             double any quotes inside it",
            describe_byte(error.byte),
            header.field_label(error.field)
        ));
    }
    if fields.len() != header.len() {
        return Err(format!(
            "expected {} fields, found {}",
            header.len(),
            fields.len()
        ));
    }

    std::str::from_utf8(raw).map_err(|error| {
        let at = error.valid_up_to();
        match fields.iter().position(|f| f.start <= at && at < f.end) {
            Some(index) => format!(
                "invalid UTF-8 in field {} at byte {at} of the record",
                header.field_label(index)
            ),
            None => format!("invalid UTF-8 at byte {at} of the record"),
        }
    })
}

/// Builds a record's key: the value of a single key column, or a JSON array
/// of the values of several.
pub(crate) fn record_key(text: &str, fields: &[Field], header: &Header) -> Result<String, String> {
    let value = |index: usize| fields.get(index).map(|f| f.value(text)).unwrap_or_default();
    match header.key_columns() {
        [] => Ok(String::new()),
        [index] => Ok(value(*index).into_owned()),
        indices => {
            let values: Vec<_> = indices.iter().map(|&index| value(index)).collect();
            serde_json::to_string(&values).map_err(|error| format!("cannot build the key: {error}"))
        }
    }
}

/// Returns `line` without the CRs at its end.
fn trim_trailing_cr(line: &[u8]) -> &[u8] {
    let end = line
        .iter()
        .rposition(|&byte| byte != b'\r')
        .map_or(0, |i| i + 1);
    &line[..end]
}

#[cfg(test)]
mod tests;
