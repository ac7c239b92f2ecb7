//! Parsing one file through the plugin, surviving plugin traps.
//!
//! A trap poisons the instance that raised it, so the host starts a fresh
//! one and carries on after the record that was being handled:
//!
//! - A trap in `map-records` is pinned on one record by mapping the batch
//!   again one record at a time, each trap in a fresh instance. The record
//!   that traps becomes an unsendable record with the trap's message.
//! - A trap in `feed` or `finish` is pinned on a byte range: fresh
//!   instances are fed the bytes after the last record returned, and a
//!   binary search finds the shortest prefix on which the plugin traps.
//!   That range becomes a malformed record with the trap's message, and
//!   parsing resumes after it.
//!
//! A fresh instance first gets the file's preamble (for CSV, the header
//! row), so it parses and maps the rest of the file as the first instance
//! would. Its positions count from the restart point, so they are shifted
//! back into the file's numbering.
//!
//! The file stops instead in four cases. A fresh instance traps before it
//! reaches new input, which is the same failure again. The plugin traps
//! `plugin.max_consecutive_traps` times with no record handled between.
//! A call hits a limit (`plugin.call_timeout`, `plugin.max_memory_mib`),
//! which a retry would only hit again. Or the plugin traps on the first
//! record and the header it reports is not at the start of the file.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use crate::delivery::classify::error_chain;
use crate::plugin::{
    FileParser, Malformed, Parsed, Plugin, PluginError, Position, Record, Request,
};

/// A reason the rest of the file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum Stop {
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("{0}")]
    Io(String),
    /// A trap that a fresh instance could not get past: the trap's
    /// message and the reason.
    #[error("{error}; {reason}")]
    Recovery { error: String, reason: String },
}

/// The offsets that turn a restarted parser's positions into the file's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Shift {
    /// Records of the file before the restart point.
    records: u64,
    /// Newlines in the file before the restart point.
    lines: u64,
    /// The restart point's byte offset in the file.
    offset: u64,
    /// Length of the preamble fed before the file's bytes.
    preamble_len: u64,
    /// Newlines in that preamble.
    preamble_lines: u64,
}

impl Shift {
    fn apply(&self, position: Position) -> Position {
        Position {
            record_number: self.records + position.record_number,
            line: self.lines + position.line.saturating_sub(self.preamble_lines),
            offset: self.offset + position.offset.saturating_sub(self.preamble_len),
        }
    }
}

/// Requests for a batch of records.
pub struct Mapped {
    /// One result per record, for a prefix of the batch that is the whole
    /// batch unless `stop` is set.
    pub results: Vec<Result<Request, String>>,
    /// The reason the rest of the file cannot be mapped.
    pub stop: Option<Stop>,
}

/// The outcome of feeding a byte range to a fresh instance.
struct Probe {
    /// Items returned before the trap, if any, in the fresh parser's
    /// numbering.
    parsed: Vec<Parsed>,
    /// The parser, unless it trapped.
    parser: Option<FileParser>,
    trap: Option<PluginError>,
}

/// One input file being parsed and mapped by the plugin.
pub struct Parsing {
    plugin: Arc<Plugin>,
    file: File,
    /// A second handle for reading back bytes that were already fed.
    rereader: File,
    chunk: Vec<u8>,
    parser: FileParser,
    shift: Shift,
    /// The bytes that start the file for the plugin, once it has
    /// returned its first record.
    preamble: Option<Vec<u8>>,
    /// File offset of the next byte to feed.
    fed_end: u64,
    /// The largest `fed_end` so far; bytes fed again after a restart are
    /// not read twice in the counters.
    read_to: u64,
    /// File offset just past the last item returned.
    item_end: u64,
    last_position: Option<Position>,
    finished: bool,
    traps_in_a_row: u32,
    /// Newlines before an offset, remembered to count onwards from it.
    newlines: (u64, u64),
}

impl Parsing {
    /// Opens `path` and creates a parser for it.
    ///
    /// # Errors
    ///
    /// Fails when the file cannot be opened or the plugin cannot be
    /// instantiated.
    pub fn open(path: &Path, plugin: Arc<Plugin>, chunk_size: usize) -> Result<Parsing, Stop> {
        let open = || File::open(path).map_err(|err| Stop::Io(format!("cannot open: {err}")));
        let (file, rereader) = (open()?, open()?);
        let parser = plugin.instantiate()?.parser()?;
        Ok(Parsing {
            plugin,
            file,
            rereader,
            chunk: vec![0; chunk_size],
            parser,
            shift: Shift::default(),
            preamble: None,
            fed_end: 0,
            read_to: 0,
            item_end: 0,
            last_position: None,
            finished: false,
            traps_in_a_row: 0,
            newlines: (0, 0),
        })
    }

    /// Returns the position of the last item returned so far.
    pub fn last_position(&self) -> Option<Position> {
        self.last_position
    }

    /// Reads and parses the next chunk, or ends the file, and returns the
    /// items completed by it; `None` once the file is finished. The second
    /// value is the number of bytes of the file read for the first time.
    ///
    /// # Errors
    ///
    /// Fails when the file cannot be read or the plugin cannot parse the
    /// rest of it.
    pub fn next_items(&mut self) -> Result<Option<(Vec<Parsed>, usize)>, Stop> {
        if self.finished {
            return Ok(None);
        }
        let read = self
            .file
            .read(&mut self.chunk)
            .map_err(|err| Stop::Io(format!("read failed: {err}")))?;
        self.fed_end += read as u64;
        let first_read = self.fed_end.saturating_sub(self.read_to) as usize;
        self.read_to = self.read_to.max(self.fed_end);
        let at_end = read == 0;
        let result = if at_end {
            self.parser.finish()
        } else {
            self.parser.feed(&self.chunk[..read])
        };
        let parsed = match result {
            Ok(parsed) => {
                self.finished = at_end;
                self.accept(parsed, self.shift)
            }
            Err(trap @ PluginError::Trap { .. }) => self.recover_parse(trap, at_end)?,
            Err(err) => return Err(err.into()),
        };
        Ok(Some((parsed, first_read)))
    }

    /// Returns the bytes that start a dead-letter file for this file.
    ///
    /// # Errors
    ///
    /// Fails when the plugin traps.
    pub fn preamble(&mut self) -> Result<Vec<u8>, Stop> {
        if let Some(preamble) = &self.preamble {
            return Ok(preamble.clone());
        }
        let preamble = self.parser.preamble()?;
        self.preamble = Some(preamble.clone());
        Ok(preamble)
    }

    /// Maps records to requests, one result per record. A record on which
    /// the plugin traps gets an error that carries the trap's message.
    ///
    /// When the plugin traps on too many records in a row, the results
    /// cover the records before the last trap, and the reason to stop
    /// comes with them.
    ///
    /// # Errors
    ///
    /// Fails when the plugin hits a limit or cannot be restarted.
    pub fn map(&mut self, records: &[Record]) -> Result<Mapped, Stop> {
        // A restarted parser needs the preamble, and the plugin only
        // promises it once the header is parsed, which it is by now.
        self.preamble()?;
        match self.parser.map(records) {
            Ok(results) => {
                self.traps_in_a_row = 0;
                Ok(Mapped {
                    results,
                    stop: None,
                })
            }
            Err(trap @ PluginError::Trap { .. }) => self.recover_map(records, trap),
            Err(err) => Err(err.into()),
        }
    }

    /// Shifts positions into the file's numbering and remembers where the
    /// last item ends.
    fn accept(&mut self, parsed: Vec<Parsed>, shift: Shift) -> Vec<Parsed> {
        let mut parsed = parsed;
        for item in &mut parsed {
            let (position, raw_len) = match item {
                Parsed::Record(record) => (&mut record.position, record.raw.len()),
                Parsed::Malformed(bad) => (&mut bad.position, bad.raw.len()),
            };
            *position = shift.apply(*position);
            self.item_end = position.offset + raw_len as u64;
            self.last_position = Some(*position);
        }
        if parsed.iter().any(|item| matches!(item, Parsed::Record(_))) {
            self.traps_in_a_row = 0;
        }
        parsed
    }

    fn count_trap(&mut self, error: PluginError) -> Result<PluginError, Stop> {
        self.traps_in_a_row += 1;
        let max = self.plugin.limits().max_consecutive_traps;
        if self.traps_in_a_row >= max {
            let reason = if max == 1 {
                "plugin.max_consecutive_traps is 1, so one trap stops the file".to_owned()
            } else {
                format!(
                    "the plugin trapped {} times in a row with no record handled between \
                     (plugin.max_consecutive_traps is {max})",
                    self.traps_in_a_row
                )
            };
            let error = error_chain(&error);
            return Err(Stop::Recovery { error, reason });
        }
        Ok(error)
    }

    /// Creates a fresh parser and feeds it the preamble. A quiet one does
    /// not log its stderr.
    fn fresh_parser(&self, error: &PluginError, quiet: bool) -> Result<FileParser, Stop> {
        let failed = |what: &str, err: PluginError| Stop::Recovery {
            error: error_chain(error),
            reason: format!("{what}: {}", error_chain(&err)),
        };
        let instance = if quiet {
            self.plugin.instantiate_quiet()
        } else {
            self.plugin.instantiate()
        };
        let instance =
            instance.map_err(|err| failed("a fresh instance could not be created", err))?;
        let mut parser = instance
            .parser()
            .map_err(|err| failed("a fresh instance could not be created", err))?;
        let preamble = self.preamble.as_deref().unwrap_or_default();
        if !preamble.is_empty() {
            parser
                .feed(preamble)
                .map_err(|err| failed("a fresh instance failed again on the preamble", err))?;
        }
        Ok(parser)
    }

    fn recover_map(&mut self, records: &[Record], error: PluginError) -> Result<Mapped, Stop> {
        // The batch's trap counts once it is pinned on a record, so that
        // the records before that one are mapped even when one trap is
        // all that plugin.max_consecutive_traps allows.
        tracing::warn!(
            error = %error_chain(&error),
            "plugin trapped while mapping; mapping the batch one record at a time"
        );
        let mut mapper = self.fresh_parser(&error, false)?;
        let mut mapped = Vec::with_capacity(records.len());
        for record in records {
            match mapper.map(std::slice::from_ref(record)) {
                Ok(mut one) => {
                    self.traps_in_a_row = 0;
                    mapped.push(one.pop().expect("map returns one result per record"));
                }
                Err(trap @ PluginError::Trap { .. }) => {
                    let message = error_chain(&trap);
                    tracing::warn!(
                        record = record.position.record_number,
                        error = %message,
                        "plugin trapped on this record; rejecting it"
                    );
                    let trap = match self.count_trap(trap) {
                        Ok(trap) => trap,
                        Err(stop) => {
                            return Ok(Mapped {
                                results: mapped,
                                stop: Some(stop),
                            })
                        }
                    };
                    mapped.push(Err(message));
                    mapper = self.fresh_parser(&trap, false)?;
                }
                Err(err) => return Err(err.into()),
            }
        }

        // The trapped instance also held the file's unparsed tail, so the
        // fresh one parses again from the end of the last item.
        let restart = self.restart_point()?;
        self.restart_at(mapper, restart)?;
        Ok(Mapped {
            results: mapped,
            stop: None,
        })
    }

    /// Returns the offset just past the last item and its separator.
    fn restart_point(&mut self) -> Result<u64, Stop> {
        let end = self.item_end;
        if self.last_position.is_none() {
            return Ok(0);
        }
        let next = self.read_range(end, end + 2)?;
        let separator = &self.plugin.info().record_separator;
        let skip = if next.starts_with(b"\r\n") {
            2
        } else if !separator.is_empty() && next.starts_with(separator) {
            separator.len()
        } else {
            0
        };
        Ok(end + skip as u64)
    }

    /// Makes `parser`, fed the preamble only, the file's parser from
    /// `offset` on.
    fn restart_at(&mut self, parser: FileParser, offset: u64) -> Result<(), Stop> {
        self.parser = parser;
        self.shift = self.shift_at(offset)?;
        self.file
            .seek(SeekFrom::Start(offset))
            .map_err(|err| Stop::Io(format!("seek failed: {err}")))?;
        self.fed_end = offset;
        self.finished = false;
        Ok(())
    }

    fn shift_at(&mut self, offset: u64) -> Result<Shift, Stop> {
        let lines = self.newlines_before(offset)?;
        let preamble = self.preamble.as_deref().unwrap_or_default();
        Ok(Shift {
            records: self.last_position.map_or(0, |p| p.record_number),
            lines,
            offset,
            preamble_len: preamble.len() as u64,
            preamble_lines: count_newlines(preamble),
        })
    }

    fn recover_parse(&mut self, error: PluginError, at_end: bool) -> Result<Vec<Parsed>, Stop> {
        tracing::warn!(
            error = %error_chain(&error),
            "plugin trapped while parsing; finding the bytes it traps on"
        );
        let error = self.count_trap(error)?;
        let start = self.restart_point()?;
        let region = self.read_range(start, self.fed_end)?;
        let shift = self.shift_at(start)?;

        // A trap that does not come back in a fresh instance lost nothing:
        // carry on with that instance.
        let whole = self.probe(&error, &region, at_end)?;
        if whole.trap.is_none() {
            tracing::warn!("the plugin did not trap again on the same bytes; carrying on");
            self.parser = whole.parser.expect("the probe did not trap");
            self.shift = shift;
            self.finished = at_end;
            return Ok(self.accept(whole.parsed, shift));
        }
        let at_start = self.probe(&error, &[], false)?;
        if at_start.trap.is_some() {
            return Err(Stop::Recovery {
                error: error_chain(&error),
                reason: "a fresh instance trapped again before reading new input".to_owned(),
            });
        }

        // The shortest prefix of the region on which the plugin traps: its
        // last byte completes the record being handled.
        let (mut good, mut bad) = (0, region.len());
        while bad - good > 1 {
            let middle = good + (bad - good) / 2;
            let probe = self.probe(&error, &region[..middle], false)?;
            if probe.trap.is_some() {
                bad = middle;
            } else {
                good = middle;
            }
        }
        let before = self.probe(&error, &region[..good], false)?;
        let mut before_parser = before.parser.expect("shorter prefixes do not trap");
        let returned_items = !before.parsed.is_empty();
        let mut parsed = self.accept(before.parsed, shift);
        let mut from = start;
        if self.preamble.is_none() {
            // The plugin never got as far as its first record before, so
            // the probe from the file's start parsed the header, if any.
            let preamble = before_parser.preamble()?;
            if !returned_items && !preamble.is_empty() {
                let Some(end) = header_end(&region, &preamble) else {
                    return Err(Stop::Recovery {
                        error: error_chain(&error),
                        reason: "it trapped on the first record, and the header that it \
                              returned as the preamble is not at the start of the file"
                            .to_owned(),
                    });
                };
                from = end as u64;
            }
            self.preamble = Some(preamble);
        }

        // The trapped range starts after the last item the probe returned,
        // its separator and any blank lines.
        if returned_items {
            from = self.restart_point()?;
        }
        let to = start + bad as u64;
        let mut raw = region[(from - start) as usize..bad].to_vec();
        let blank = raw
            .iter()
            .take_while(|b| matches!(b, b'\r' | b'\n'))
            .count();
        raw.drain(..blank);
        from += blank as u64;
        trim_separator(&mut raw, &self.plugin.info().record_separator);
        if !raw.is_empty() {
            let position = Position {
                record_number: self.last_position.map_or(0, |p| p.record_number) + 1,
                line: self.newlines_before(from)? + 1,
                offset: from,
            };
            let message = format!(
                "the plugin trapped while parsing this record: {}",
                error_chain(&error)
            );
            parsed.push(Parsed::Malformed(Malformed {
                position,
                raw,
                message,
            }));
            self.last_position = Some(position);
            self.item_end = to;
        }

        let parser = self.fresh_parser(&error, false)?;
        self.restart_at(parser, to)?;
        Ok(parsed)
    }

    /// Feeds `bytes` to a fresh instance that got the preamble first, and
    /// ends the file with `finish` when `finish` is true.
    fn probe(&self, error: &PluginError, bytes: &[u8], finish: bool) -> Result<Probe, Stop> {
        let mut parser = self.fresh_parser(error, true)?;
        let mut parsed = Vec::new();
        for piece in bytes.chunks(self.chunk.len()) {
            match parser.feed(piece) {
                Ok(items) => parsed.extend(items),
                Err(trap) => return probe_failed(parsed, trap),
            }
        }
        if finish {
            match parser.finish() {
                Ok(items) => parsed.extend(items),
                Err(trap) => return probe_failed(parsed, trap),
            }
        }
        Ok(Probe {
            parsed,
            parser: Some(parser),
            trap: None,
        })
    }

    fn read_range(&mut self, from: u64, to: u64) -> Result<Vec<u8>, Stop> {
        let mut bytes = Vec::with_capacity(to.saturating_sub(from) as usize);
        self.rereader
            .seek(SeekFrom::Start(from))
            .and_then(|_| {
                (&mut self.rereader)
                    .take(to.saturating_sub(from))
                    .read_to_end(&mut bytes)
            })
            .map_err(|err| Stop::Io(format!("read failed: {err}")))?;
        Ok(bytes)
    }

    /// Counts the newlines in the file before `offset`, going on from the
    /// last count when `offset` is past it.
    fn newlines_before(&mut self, offset: u64) -> Result<u64, Stop> {
        let (mut counted_to, mut count) = self.newlines;
        if offset < counted_to {
            (counted_to, count) = (0, 0);
        }
        self.rereader
            .seek(SeekFrom::Start(counted_to))
            .map_err(|err| Stop::Io(format!("seek failed: {err}")))?;
        let mut buffer = vec![0; 64 * 1024];
        while counted_to < offset {
            let want = buffer.len().min((offset - counted_to) as usize);
            let read = self
                .rereader
                .read(&mut buffer[..want])
                .map_err(|err| Stop::Io(format!("read failed: {err}")))?;
            if read == 0 {
                break;
            }
            count += count_newlines(&buffer[..read]);
            counted_to += read as u64;
        }
        self.newlines = (counted_to, count);
        Ok(count)
    }
}

fn probe_failed(parsed: Vec<Parsed>, trap: PluginError) -> Result<Probe, Stop> {
    match trap {
        PluginError::Trap { .. } => Ok(Probe {
            parsed,
            parser: None,
            trap: Some(trap),
        }),
        other => Err(other.into()),
    }
}

/// Returns the length of the header at the start of `file`, given the
/// plugin's preamble: the same bytes, perhaps after a UTF-8 byte-order
/// mark and with CRLF where the preamble has LF.
fn header_end(file: &[u8], preamble: &[u8]) -> Option<usize> {
    let bom = if file.starts_with(b"\xEF\xBB\xBF") {
        3
    } else {
        0
    };
    let file = &file[bom..];
    if file.starts_with(preamble) {
        return Some(bom + preamble.len());
    }
    let line = preamble.strip_suffix(b"\n")?;
    let rest = file.strip_prefix(line)?;
    rest.starts_with(b"\r\n").then_some(bom + line.len() + 2)
}

fn count_newlines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|b| **b == b'\n').count() as u64
}

/// Drops a trailing record separator, and the CR of a CRLF, from `raw`.
fn trim_separator(raw: &mut Vec<u8>, separator: &[u8]) {
    if !separator.is_empty() && raw.ends_with(separator) {
        raw.truncate(raw.len() - separator.len());
    }
    if separator == b"\n" && raw.ends_with(b"\r") {
        raw.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shift_maps_restarted_positions_into_the_file() {
        let shift = Shift {
            records: 10,
            lines: 12,
            offset: 500,
            preamble_len: 8,
            preamble_lines: 1,
        };
        let position = Position {
            record_number: 1,
            line: 2,
            offset: 8,
        };
        let shifted = shift.apply(position);
        assert_eq!(shifted.record_number, 11);
        assert_eq!(shifted.line, 13);
        assert_eq!(shifted.offset, 500);
    }

    #[test]
    fn header_is_found_with_a_bom_or_crlf() {
        assert_eq!(header_end(b"id,name\n1,a\n", b"id,name\n"), Some(8));
        assert_eq!(
            header_end(b"\xEF\xBB\xBFid,name\n1,a\n", b"id,name\n"),
            Some(11)
        );
        assert_eq!(header_end(b"id,name\r\n1,a\r\n", b"id,name\n"), Some(9));
        assert_eq!(header_end(b"name,id\n1,a\n", b"id,name\n"), None);
    }

    #[test]
    fn separators_are_trimmed() {
        let mut crlf = b"bad\r\n".to_vec();
        trim_separator(&mut crlf, b"\n");
        assert_eq!(crlf, b"bad");
        let mut none = b"bad".to_vec();
        trim_separator(&mut none, b"\n");
        assert_eq!(none, b"bad");
        let mut custom = b"bad;".to_vec();
        trim_separator(&mut custom, b";");
        assert_eq!(custom, b"bad");
    }
}
