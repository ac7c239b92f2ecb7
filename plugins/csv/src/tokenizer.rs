//! The byte-level RFC 4180 state machine that splits records into fields.
//!
//! A [`Tokenizer`] works on one record at a time. The caller passes the bytes
//! from the record's first byte to the end of its buffer. The tokenizer scans
//! only the bytes it has not seen yet, so a record that arrives in many
//! chunks is still scanned once. Field positions are relative to the record's
//! first byte, so the caller may move its buffer.
//!
//! Rules, beyond RFC 4180:
//! - LF and CRLF both end a record. Outside quotes, a run of CRs directly
//!   before an LF, or before the end of the file, belongs to the terminator.
//!   A CR anywhere else is data.
//! - A quote is special only as the first byte of a field. Elsewhere in an
//!   unquoted field it is taken literally.
//! - A byte after a closing quote other than a delimiter or line terminator
//!   is an error. The tokenizer records it and reads the rest of the field as
//!   unquoted, so the record still ends at the right place. If that quoted
//!   field spans lines, the tokenizer stops with [`Step::BrokenQuote`]
//!   instead, because the opening quote was most likely stray and the lines
//!   it swallowed are records of their own.

use std::borrow::Cow;

/// One field of a record, as a byte range relative to the record's start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// The first byte of the value, after any opening quote.
    pub start: usize,
    /// The end of the value, before any closing quote.
    pub end: usize,
    /// Whether the value contains doubled quotes, each of which is one quote.
    pub escaped: bool,
}

impl Field {
    /// Returns the field's value from the record's text, with doubled quotes
    /// unescaped.
    pub fn value<'a>(&self, record: &'a str) -> Cow<'a, str> {
        // Field bounds sit next to ASCII bytes, so they are char boundaries;
        // `get` keeps a broken invariant from becoming a panic.
        let text = record.get(self.start..self.end).unwrap_or("");
        if self.escaped {
            Cow::Owned(text.replace("\"\"", "\""))
        } else {
            Cow::Borrowed(text)
        }
    }
}

/// A byte after the closing quote of a field that stays on one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuoteError {
    /// 0-based index of the field.
    pub field: usize,
    /// The unexpected byte.
    pub byte: u8,
}

/// The outcome of [`Tokenizer::advance`] or [`Tokenizer::finish`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The bytes end before the record does.
    Incomplete,
    /// The record ended. Its content is `bytes[..len]`, without the line
    /// terminator, and the next record starts at `bytes[next]`. A record with
    /// `len == 0` is a blank line.
    Record { len: usize, next: usize },
    /// The record, counting its terminator, is longer than the limit.
    Overflow,
    /// A quoted field that spans lines is followed by a byte that is neither
    /// a delimiter nor a line terminator. [`Tokenizer::broken_quote`] returns
    /// where.
    BrokenQuote,
    /// The file ended inside a quoted field.
    Unterminated,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At the first byte of a field.
    FieldStart,
    /// Inside an unquoted field.
    Unquoted,
    /// After one or more CRs inside an unquoted field; `cr_start` is where
    /// they began.
    UnquotedCr,
    /// Inside a quoted field.
    Quoted,
    /// Right after a quote inside a quoted field: either a doubled quote or
    /// the closing quote.
    QuoteInQuoted,
    /// After a closing quote and one or more CRs; `cr_start` is where they
    /// began.
    AfterQuoteCr,
}

/// The state of one record being split into fields. See the module
/// documentation for the rules.
#[derive(Clone, Debug)]
pub struct Tokenizer {
    delimiter: u8,
    state: State,
    /// Next byte to scan, relative to the record's start.
    pos: usize,
    field_start: usize,
    /// Closing quote of the current quoted field, once seen.
    field_end: usize,
    field_escaped: bool,
    cr_start: usize,
    fields: Vec<Field>,
    /// LFs seen so far inside quoted fields of this record.
    lf_count: u64,
    /// The record's first LF, which ends its first physical line.
    first_lf: Option<usize>,
    /// `lf_count` when the current or last quoted field opened.
    quote_open_lf: u64,
    error: Option<QuoteError>,
    /// The position of a [`Step::BrokenQuote`]: `lf_count` at the quote that
    /// is followed by the unexpected byte, and that byte.
    broken: Option<(u64, u8)>,
    /// Whether a CR outside quotes was followed by a byte other than CR or
    /// LF, which makes it data rather than part of a line terminator.
    data_cr: bool,
}

impl Tokenizer {
    pub fn new(delimiter: u8) -> Tokenizer {
        Tokenizer {
            delimiter,
            state: State::FieldStart,
            pos: 0,
            field_start: 0,
            field_end: 0,
            field_escaped: false,
            cr_start: 0,
            fields: Vec::new(),
            lf_count: 0,
            first_lf: None,
            quote_open_lf: 0,
            error: None,
            broken: None,
            data_cr: false,
        }
    }

    /// Prepares for the next record, keeping allocations.
    pub fn reset(&mut self) {
        self.state = State::FieldStart;
        self.pos = 0;
        self.fields.clear();
        self.lf_count = 0;
        self.first_lf = None;
        self.quote_open_lf = 0;
        self.error = None;
        self.broken = None;
        self.data_cr = false;
    }

    /// Returns the fields of the record that the last [`Step::Record`] ended.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// Returns the first byte after a closing quote that was neither a
    /// delimiter nor a line terminator, in a record that [`Step::Record`]
    /// ended.
    pub fn quote_error(&self) -> Option<QuoteError> {
        self.error
    }

    /// LFs inside the record's quoted fields: the record spans
    /// `lf_count() + 1` lines.
    pub fn lf_count(&self) -> u64 {
        self.lf_count
    }

    /// Position of the LF that ends the record's first line, when the record
    /// spans lines.
    pub fn first_lf(&self) -> Option<usize> {
        self.first_lf
    }

    /// Number of lines between the record's first line and the line where
    /// the current (or last) quoted field opened.
    pub fn quote_open_lines(&self) -> u64 {
        self.quote_open_lf
    }

    /// Returns whether the scan stopped inside a quoted field.
    pub fn in_quotes(&self) -> bool {
        matches!(self.state, State::Quoted | State::QuoteInQuoted)
    }

    /// Returns whether the record scanned so far contains a CR outside quotes
    /// that is data, not part of a line terminator. A file with CR-only line
    /// endings has one in its first record.
    pub fn data_cr(&self) -> bool {
        self.data_cr
    }

    /// Returns, after [`Step::BrokenQuote`], the line of the quote (counted
    /// from the record's first line, which is 0) and the byte after it.
    pub fn broken_quote(&self) -> Option<(u64, u8)> {
        self.broken
    }

    /// Scans `bytes`, the record's bytes buffered so far, from where the last
    /// call stopped. `limit` is the max record size in bytes, counting the
    /// terminator.
    pub fn advance(&mut self, bytes: &[u8], limit: usize) -> Step {
        let end = bytes.len().min(limit);
        let delimiter = self.delimiter;
        let mut p = self.pos;

        while p < end {
            match self.state {
                State::FieldStart => {
                    let byte = bytes[p];
                    if byte == b'"' {
                        self.field_start = p + 1;
                        self.field_escaped = false;
                        self.quote_open_lf = self.lf_count;
                        self.state = State::Quoted;
                    } else if byte == delimiter {
                        self.push_field(p, p);
                    } else if byte == b'\n' {
                        self.push_field(p, p);
                        return self.end_record(p, p + 1);
                    } else if byte == b'\r' {
                        self.field_start = p;
                        self.cr_start = p;
                        self.state = State::UnquotedCr;
                    } else {
                        self.field_start = p;
                        self.state = State::Unquoted;
                    }
                    p += 1;
                }
                State::Unquoted => {
                    while p < end {
                        let byte = bytes[p];
                        if byte == delimiter || byte == b'\n' || byte == b'\r' {
                            break;
                        }
                        p += 1;
                    }
                    if p == end {
                        break;
                    }

                    let byte = bytes[p];
                    if byte == delimiter {
                        self.push_field(self.field_start, p);
                        self.state = State::FieldStart;
                    } else if byte == b'\n' {
                        self.push_field(self.field_start, p);
                        return self.end_record(p, p + 1);
                    } else {
                        self.cr_start = p;
                        self.state = State::UnquotedCr;
                    }
                    p += 1;
                }
                State::UnquotedCr => {
                    let byte = bytes[p];
                    if byte == b'\n' {
                        self.push_field(self.field_start, self.cr_start);
                        return self.end_record(self.cr_start, p + 1);
                    } else if byte == delimiter {
                        self.data_cr = true;
                        self.push_field(self.field_start, p);
                        self.state = State::FieldStart;
                    } else if byte != b'\r' {
                        self.data_cr = true;
                        self.state = State::Unquoted;
                    }
                    p += 1;
                }
                State::Quoted => {
                    while p < end {
                        let byte = bytes[p];
                        if byte == b'"' || byte == b'\n' {
                            break;
                        }
                        p += 1;
                    }
                    if p == end {
                        break;
                    }

                    if bytes[p] == b'\n' {
                        self.lf_count += 1;
                        if self.first_lf.is_none() {
                            self.first_lf = Some(p);
                        }
                    } else {
                        self.state = State::QuoteInQuoted;
                    }
                    p += 1;
                }
                State::QuoteInQuoted => {
                    let byte = bytes[p];
                    if byte == b'"' {
                        self.field_escaped = true;
                        self.state = State::Quoted;
                    } else if byte == delimiter {
                        self.push_quoted_field(p - 1);
                        self.state = State::FieldStart;
                    } else if byte == b'\n' {
                        self.push_quoted_field(p - 1);
                        return self.end_record(p, p + 1);
                    } else if byte == b'\r' {
                        self.field_end = p - 1;
                        self.cr_start = p;
                        self.state = State::AfterQuoteCr;
                    } else {
                        if let Some(step) = self.unexpected_after_quote(p, byte) {
                            return step;
                        }
                        // `Unquoted` reads the unexpected byte as data.
                        continue;
                    }
                    p += 1;
                }
                State::AfterQuoteCr => {
                    let byte = bytes[p];
                    if byte == b'\n' {
                        self.push_quoted_field(self.field_end);
                        return self.end_record(self.cr_start, p + 1);
                    } else if byte != b'\r' {
                        self.data_cr = true;
                        if let Some(step) = self.unexpected_after_quote(p, b'\r') {
                            return step;
                        }
                        continue;
                    }
                    p += 1;
                }
            }
        }

        self.pos = p;
        if p == limit && bytes.len() > limit {
            Step::Overflow
        } else {
            Step::Incomplete
        }
    }

    /// Ends the record at the end of the file. Call it once [`advance`]
    /// has returned [`Step::Incomplete`] for all of `bytes`.
    ///
    /// [`advance`]: Tokenizer::advance
    pub fn finish(&mut self, bytes: &[u8]) -> Step {
        let p = bytes.len();
        let len = match self.state {
            State::FieldStart => {
                self.push_field(p, p);
                p
            }
            State::Unquoted => {
                self.push_field(self.field_start, p);
                p
            }
            State::UnquotedCr => {
                self.push_field(self.field_start, self.cr_start);
                self.cr_start
            }
            State::Quoted => return Step::Unterminated,
            State::QuoteInQuoted => {
                self.push_quoted_field(p.saturating_sub(1));
                p
            }
            State::AfterQuoteCr => {
                self.push_quoted_field(self.field_end);
                self.cr_start
            }
        };
        self.end_record(len, p)
    }

    fn push_field(&mut self, start: usize, end: usize) {
        self.fields.push(Field {
            start,
            end,
            escaped: false,
        });
    }

    fn push_quoted_field(&mut self, end: usize) {
        self.fields.push(Field {
            start: self.field_start,
            end,
            escaped: self.field_escaped,
        });
    }

    fn end_record(&mut self, len: usize, next: usize) -> Step {
        self.pos = next;
        Step::Record { len, next }
    }

    /// Handles a byte after a closing quote that is neither a delimiter nor a
    /// line terminator, at position `p`. Returns the step to stop with, if
    /// any; otherwise the rest of the field is read as unquoted.
    fn unexpected_after_quote(&mut self, p: usize, byte: u8) -> Option<Step> {
        if self.quote_open_lf < self.lf_count {
            self.pos = p;
            self.broken = Some((self.lf_count, byte));
            return Some(Step::BrokenQuote);
        }
        if self.error.is_none() {
            self.error = Some(QuoteError {
                field: self.fields.len(),
                byte,
            });
        }
        self.state = State::Unquoted;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits `input` as one whole record at the end of a file and returns
    /// the step and the field values.
    fn split(input: &str) -> (Step, Vec<String>) {
        let mut tokenizer = Tokenizer::new(b',');
        let mut step = tokenizer.advance(input.as_bytes(), usize::MAX);
        if step == Step::Incomplete {
            step = tokenizer.finish(input.as_bytes());
        }
        let values = tokenizer
            .fields()
            .iter()
            .map(|f| f.value(input).into_owned())
            .collect();
        (step, values)
    }

    #[test]
    fn splits_simple_fields() {
        let (step, values) = split("a,b,c\n");
        assert_eq!(step, Step::Record { len: 5, next: 6 });
        assert_eq!(values, ["a", "b", "c"]);
    }

    #[test]
    fn keeps_empty_fields() {
        let (step, values) = split(",,\r\n");
        assert_eq!(step, Step::Record { len: 2, next: 4 });
        assert_eq!(values, ["", "", ""]);
    }

    #[test]
    fn unescapes_quoted_fields() {
        let (step, values) = split("\"a,b\",\"say \"\"hi\"\"\",\"x\ny\"\r\n");
        assert_eq!(step, Step::Record { len: 24, next: 26 });
        assert_eq!(values, ["a,b", "say \"hi\"", "x\ny"]);
    }

    #[test]
    fn literal_quote_in_unquoted_field() {
        let (_, values) = split("12\" pipe,a\"b\n");
        assert_eq!(values, ["12\" pipe", "a\"b"]);
    }

    #[test]
    fn cr_inside_field_is_data() {
        let (step, values) = split("a\rb,c\r,\"d\re\"\n");
        assert_eq!(step, Step::Record { len: 12, next: 13 });
        assert_eq!(values, ["a\rb", "c\r", "d\re"]);
    }

    #[test]
    fn data_cr_marks_cr_outside_quotes() {
        let data_cr = |input: &str| {
            let mut tokenizer = Tokenizer::new(b',');
            if tokenizer.advance(input.as_bytes(), usize::MAX) == Step::Incomplete {
                tokenizer.finish(input.as_bytes());
            }
            tokenizer.data_cr()
        };
        for input in [
            "a\rb\n",
            "a\r,b\n",
            "\ra\n",
            "a,b\r\rc",
            "\"a\"\rb\n",
            "\"a\"\r,b\n",
        ] {
            assert!(data_cr(input), "{input:?}");
        }
        for input in [
            "a,b\r\n",
            "a,b\r\r\n",
            "a,b\r",
            "\"a\"\r\n",
            "\"a\rb\"\n",
            "\"a\"\r",
        ] {
            assert!(!data_cr(input), "{input:?}");
        }

        let mut tokenizer = Tokenizer::new(b',');
        let _ = tokenizer.advance(b"a\rb\n", usize::MAX);
        tokenizer.reset();
        assert!(!tokenizer.data_cr());
    }

    #[test]
    fn cr_run_before_lf_is_terminator() {
        let (step, values) = split("a,b\r\r\n");
        assert_eq!(step, Step::Record { len: 3, next: 6 });
        assert_eq!(values, ["a", "b"]);

        let (step, values) = split("a,\"b\"\r\r\n");
        assert_eq!(step, Step::Record { len: 5, next: 8 });
        assert_eq!(values, ["a", "b"]);
    }

    #[test]
    fn blank_lines_have_zero_length() {
        assert_eq!(split("\n").0, Step::Record { len: 0, next: 1 });
        assert_eq!(split("\r\n").0, Step::Record { len: 0, next: 2 });
        assert_eq!(split("").0, Step::Record { len: 0, next: 0 });
    }

    #[test]
    fn eof_ends_last_record() {
        let (step, values) = split("a,\"b\"");
        assert_eq!(step, Step::Record { len: 5, next: 5 });
        assert_eq!(values, ["a", "b"]);

        let (step, values) = split("a,b\r");
        assert_eq!(step, Step::Record { len: 3, next: 4 });
        assert_eq!(values, ["a", "b"]);

        let (_, values) = split("a,");
        assert_eq!(values, ["a", ""]);
    }

    #[test]
    fn eof_inside_quotes_is_unterminated() {
        assert_eq!(split("a,\"b\nc").0, Step::Unterminated);
    }

    #[test]
    fn byte_after_closing_quote_is_error() {
        let mut tokenizer = Tokenizer::new(b',');
        let step = tokenizer.advance(b"a,\"b\"x,c\nnext", usize::MAX);
        assert_eq!(step, Step::Record { len: 8, next: 9 });
        assert_eq!(
            tokenizer.quote_error(),
            Some(QuoteError {
                field: 1,
                byte: b'x'
            })
        );
        assert_eq!(tokenizer.fields().len(), 3);

        tokenizer.reset();
        let step = tokenizer.advance(b"\"b\"\r,c\n", usize::MAX);
        assert_eq!(step, Step::Record { len: 6, next: 7 });
        assert_eq!(
            tokenizer.quote_error(),
            Some(QuoteError {
                field: 0,
                byte: b'\r'
            })
        );
    }

    #[test]
    fn broken_multiline_quote_stops() {
        let mut tokenizer = Tokenizer::new(b',');
        let step = tokenizer.advance(b"1,\"stray\n2,3\n4,\"x\",5\n", usize::MAX);
        assert_eq!(step, Step::BrokenQuote);
        assert_eq!(tokenizer.first_lf(), Some(8));
        assert_eq!(tokenizer.broken_quote(), Some((2, b'x')));
    }

    #[test]
    fn overflow_at_limit() {
        let mut tokenizer = Tokenizer::new(b',');
        assert_eq!(tokenizer.advance(b"abcd", 4), Step::Incomplete);
        assert_eq!(tokenizer.advance(b"abcde", 4), Step::Overflow);

        tokenizer.reset();
        assert_eq!(
            tokenizer.advance(b"abc\nd", 4),
            Step::Record { len: 3, next: 4 }
        );
    }

    #[test]
    fn resumes_where_it_stopped() {
        let input = b"\"a\r\n\"\"b\"\"\",c\r\n";
        let mut tokenizer = Tokenizer::new(b',');
        let mut step = Step::Incomplete;
        for end in 1..=input.len() {
            step = tokenizer.advance(&input[..end], usize::MAX);
            if end < input.len() {
                assert_eq!(step, Step::Incomplete, "at {end}");
            }
        }
        assert_eq!(step, Step::Record { len: 12, next: 14 });
        let text = std::str::from_utf8(input).unwrap();
        let values: Vec<_> = tokenizer.fields().iter().map(|f| f.value(text)).collect();
        assert_eq!(values, ["a\r\n\"b\"", "c"]);
        assert_eq!(tokenizer.lf_count(), 1);
    }

    #[test]
    fn other_delimiters() {
        let mut tokenizer = Tokenizer::new(b'\t');
        let step = tokenizer.advance(b"a,b\t\"c\td\"\n", usize::MAX);
        assert_eq!(step, Step::Record { len: 9, next: 10 });
        let values: Vec<_> = tokenizer
            .fields()
            .iter()
            .map(|f| f.value("a,b\t\"c\td\""))
            .collect();
        assert_eq!(values, ["a,b", "c\td"]);
    }
}
