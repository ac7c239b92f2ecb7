//! The streaming parser for one file.
//!
//! The host hands the file over in chunks that may end anywhere: inside a
//! line, between the CR and LF of a CRLF, or inside a multi-byte character.
//! The parser therefore keeps the line in progress and turns it into a
//! record only when its LF arrives, or at `finish`. UTF-8 is checked on the
//! whole line, so a character split across chunks is never seen in halves.
//!
//! A record's `raw` is its line without the LF, so the CR of a CRLF stays
//! in it. The host writes `raw` and the LF record separator to dead-letter
//! files, so a CRLF line comes back byte for byte when such a file is read
//! again. Only `line_text` drops the CR, where the line is interpreted.
//!
//! Memory stays bounded whatever the input: of a line longer than
//! `max_line_bytes`, only the first `max_line_bytes + 2` bytes are kept,
//! and the rest is counted.

use std::rc::Rc;

use crate::mapping::{line_text, record_key};
use crate::{Config, Parsed, Position};

/// A streaming parser for one input file.
#[derive(Debug)]
pub struct Parser {
    config: Rc<Config>,
    /// The start of the line in progress, at most `max_line_bytes + 2`
    /// bytes.
    line: Vec<u8>,
    /// Bytes of the line in progress beyond those kept in `line`.
    dropped: u64,
    /// Byte offset of the line in progress.
    offset: u64,
    /// Line number of the line in progress.
    line_number: u64,
    /// Records returned so far, malformed ones included.
    records: u64,
}

impl Parser {
    pub fn new(config: Rc<Config>) -> Parser {
        Parser {
            config,
            line: Vec::new(),
            dropped: 0,
            offset: 0,
            line_number: 1,
            records: 0,
        }
    }

    /// Returns the configuration that the parser was created with.
    pub fn config(&self) -> Rc<Config> {
        self.config.clone()
    }

    /// Consumes the next chunk and returns the records that it completes,
    /// in file order.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Parsed> {
        let mut out = Vec::new();
        for piece in chunk.split_inclusive(|&byte| byte == b'\n') {
            match piece.strip_suffix(b"\n") {
                Some(content) => {
                    self.append(content);
                    self.end_line(1, &mut out);
                }
                None => self.append(piece),
            }
        }
        out
    }

    /// Ends the file and returns the last line when it had no terminator.
    pub fn finish(&mut self) -> Vec<Parsed> {
        let mut out = Vec::new();
        if !self.line.is_empty() {
            self.end_line(0, &mut out);
        }
        out
    }

    fn append(&mut self, bytes: &[u8]) {
        let room = (self.config.max_line_bytes + 2).saturating_sub(self.line.len());
        let kept = bytes.len().min(room);
        self.line.extend_from_slice(&bytes[..kept]);
        self.dropped += (bytes.len() - kept) as u64;
    }

    /// Turns the line in progress into an item, unless it is blank, and
    /// moves past it and its `terminator_len` bytes of LF.
    fn end_line(&mut self, terminator_len: u64, out: &mut Vec<Parsed>) {
        let mut raw = std::mem::take(&mut self.line);
        let dropped = std::mem::take(&mut self.dropped);
        let offset = self.offset;
        let line_number = self.line_number;
        self.offset += raw.len() as u64 + dropped + terminator_len;
        self.line_number += 1;

        let max = self.config.max_line_bytes;
        let checked = if dropped > 0 || line_text(&raw).len() > max {
            Err(cut_long_line(&mut raw, max))
        } else {
            check_line(&raw)
        };

        let item = match checked {
            // Blank lines are not records, so they take no number.
            Ok(None) => return,
            Ok(Some(key)) => Parsed::Record {
                position: self.next_position(line_number, offset),
                key,
                raw,
            },
            Err(message) => Parsed::Malformed {
                position: self.next_position(line_number, offset),
                raw,
                message,
            },
        };
        out.push(item);
    }

    /// Counts a new record, malformed or not, and returns its position.
    fn next_position(&mut self, line: u64, offset: u64) -> Position {
        self.records += 1;
        Position {
            record_number: self.records,
            line,
            offset,
        }
    }
}

/// Returns the key of a line within the limit, `None` for a blank line,
/// or what makes the line malformed.
fn check_line(raw: &[u8]) -> Result<Option<String>, String> {
    let text = std::str::from_utf8(line_text(raw))
        .map_err(|error| format!("line is not valid UTF-8: {error}"))?;
    Ok(record_key(text).map(str::to_owned))
}

/// Cuts a line longer than `max` bytes short and returns the malformed
/// record's message.
fn cut_long_line(raw: &mut Vec<u8>, max: usize) -> String {
    // Keep one byte over the limit, or two when the first is a CR, which a
    // new read would take for the CR of a CRLF. The copy in the rejected
    // file is then still too long, so reprocessing rejects it again
    // instead of sending a line cut short.
    let kept = if raw[max] == b'\r' { max + 2 } else { max + 1 };
    raw.truncate(kept);
    format!(
        "line is longer than max_line_bytes ({max} bytes); the rejected record contains \
         only its first {} bytes",
        raw.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_line_bytes: usize) -> Rc<Config> {
        Rc::new(Config {
            prefix: "/notes".to_owned(),
            max_line_bytes,
        })
    }

    fn parse_chunks(config: &Rc<Config>, chunks: &[&[u8]]) -> Vec<Parsed> {
        let mut parser = Parser::new(config.clone());
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend(parser.feed(chunk));
        }
        out.extend(parser.finish());
        out
    }

    /// Parses `input` whole, split in two at every byte, and in one-byte
    /// chunks, checks that all give the same items, and returns them.
    fn parse_every_split(config: &Rc<Config>, input: &[u8]) -> Vec<Parsed> {
        let whole = parse_chunks(config, &[input]);
        for split in 0..=input.len() {
            let (head, tail) = input.split_at(split);
            let parsed = parse_chunks(config, &[head, tail]);
            assert_eq!(parsed, whole, "split at byte {split} of {input:?}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(parse_chunks(config, &bytes), whole, "one-byte chunks");
        whole
    }

    fn position(record_number: u64, line: u64, offset: u64) -> Position {
        Position {
            record_number,
            line,
            offset,
        }
    }

    fn record(position: Position, key: &str, raw: &str) -> Parsed {
        Parsed::Record {
            position,
            key: key.to_owned(),
            raw: raw.as_bytes().to_vec(),
        }
    }

    fn malformed_message(item: &Parsed) -> &str {
        match item {
            Parsed::Malformed { message, .. } => message,
            Parsed::Record { .. } => panic!("expected a malformed record, got {item:?}"),
        }
    }

    fn raw(item: &Parsed) -> &[u8] {
        match item {
            Parsed::Record { raw, .. } | Parsed::Malformed { raw, .. } => raw,
        }
    }

    /// Builds the file that the host writes for `items`: no preamble, then
    /// each raw record and the LF record separator.
    fn dead_letter_file(items: &[Parsed]) -> Vec<u8> {
        let mut file = Vec::new();
        for item in items {
            file.extend_from_slice(raw(item));
            file.push(b'\n');
        }
        file
    }

    #[test]
    fn lines_become_records() {
        let input = b"alpha one\nbeta two words\n";
        let parsed = parse_every_split(&config(100), input);
        assert_eq!(
            parsed,
            [
                record(position(1, 1, 0), "alpha", "alpha one"),
                record(position(2, 2, 10), "beta", "beta two words"),
            ]
        );
    }

    #[test]
    fn crlf_and_missing_last_terminator_are_accepted() {
        let input = "ä x\r\n  lead  spaces\r\nlast";
        let parsed = parse_every_split(&config(100), input.as_bytes());
        assert_eq!(
            parsed,
            [
                record(position(1, 1, 0), "ä", "ä x\r"),
                record(position(2, 2, 6), "lead", "  lead  spaces\r"),
                record(position(3, 3, 22), "last", "last"),
            ]
        );
    }

    #[test]
    fn blank_lines_count_as_lines_only() {
        let input = b"\n \t\r\none\n\r\ntwo";
        let parsed = parse_every_split(&config(100), input);
        assert_eq!(
            parsed,
            [
                record(position(1, 3, 5), "one", "one"),
                record(position(2, 5, 11), "two", "two"),
            ]
        );
    }

    #[test]
    fn invalid_utf8_is_malformed() {
        let input = b"good 1\nbad \xff byte\nsplit \xe2\x82\xac ok\n";
        let parsed = parse_every_split(&config(100), input);
        assert_eq!(parsed.len(), 3);
        let Parsed::Malformed {
            position: at,
            raw,
            message,
        } = &parsed[1]
        else {
            panic!("expected a malformed record, got {:?}", parsed[1]);
        };
        assert_eq!(*at, position(2, 2, 7));
        assert_eq!(raw, b"bad \xff byte");
        assert!(message.contains("not valid UTF-8"), "{message}");
        assert_eq!(parsed[2], record(position(3, 3, 18), "split", "split € ok"));
    }

    #[test]
    fn long_lines_are_malformed_and_cut_short() {
        let input = b"0123456789\nabcdefghijklm\nxyz\n0123456789\r\nABCDEFGHIJKLMNO";
        let parsed = parse_every_split(&config(10), input);
        assert_eq!(parsed.len(), 5);
        assert_eq!(
            parsed[0],
            record(position(1, 1, 0), "0123456789", "0123456789")
        );

        let Parsed::Malformed {
            position: at,
            raw,
            message,
        } = &parsed[1]
        else {
            panic!("expected a malformed record, got {:?}", parsed[1]);
        };
        assert_eq!(*at, position(2, 2, 11));
        assert_eq!(raw, b"abcdefghijk");
        assert!(message.contains("max_line_bytes (10 bytes)"), "{message}");
        assert!(message.contains("first 11 bytes"), "{message}");

        // The bytes cut from the long line still count in the offsets.
        assert_eq!(parsed[2], record(position(3, 3, 25), "xyz", "xyz"));
        // A line at the limit fits with its CRLF.
        assert_eq!(
            parsed[3],
            record(position(4, 4, 29), "0123456789", "0123456789\r")
        );
        assert!(malformed_message(&parsed[4]).contains("max_line_bytes"));
    }

    #[test]
    fn dead_letter_copies_read_back_the_same() {
        // Lines over the limit of 10 bytes whose 11th or 12th byte is a CR
        // are the hard cases: a new read takes a last CR for a CRLF's.
        let input: &[u8] = b"one\r\n\
                             two \xff\r\n\
                             three\r\r\n\
                             0123456789\r\r\n\
                             0123456789\r\rxyz\n\
                             0123456789x\r\n\
                             0123456789xyz\r\n\
                             last\r";
        let config = config(10);
        let parsed = parse_every_split(&config, input);
        assert_eq!(parsed.len(), 8);

        let copy = parse_every_split(&config, &dead_letter_file(&parsed));

        assert_eq!(copy.len(), parsed.len());
        for (first, again) in parsed.iter().zip(&copy) {
            assert_eq!(raw(again), raw(first));
            assert_eq!(
                matches!(again, Parsed::Record { .. }),
                matches!(first, Parsed::Record { .. }),
                "{first:?} read back as {again:?}"
            );
        }
    }

    #[test]
    fn memory_stays_bounded_on_a_line_without_end() {
        let mut parser = Parser::new(config(10));
        for _ in 0..1000 {
            assert!(parser.feed(&[b'x'; 1000]).is_empty());
        }
        assert_eq!(parser.line.len(), 12);
        assert_eq!(parser.dropped, 1_000_000 - 12);
        let parsed = parser.finish();
        assert_eq!(parsed.len(), 1);
        assert!(malformed_message(&parsed[0]).contains("max_line_bytes"));
        assert_eq!(raw(&parsed[0]).len(), 11);
    }

    #[test]
    fn empty_file_has_no_records() {
        assert!(parse_chunks(&config(10), &[]).is_empty());
        assert!(parse_chunks(&config(10), &[b""]).is_empty());
    }
}
