//! The items a parser produces and the requests it maps records to. They
//! mirror the WIT types of `sluice:plugin/types` as plain Rust.

/// The position of a record's first byte in its input file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// 1-based number among the file's records, counting malformed records
    /// and not counting blank lines.
    pub record_number: u64,
    /// 1-based line number of the record, counting blank lines.
    pub line: u64,
    /// 0-based byte offset of the record's first byte, counting a byte order
    /// mark.
    pub offset: u64,
}

/// One well-formed record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub position: Position,
    /// The text of the single key value, a JSON array of the texts of
    /// several key values, or empty when no key is configured.
    pub key: String,
    /// The record's exact bytes, without its line terminator.
    pub raw: Vec<u8>,
}

/// A record that could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Malformed {
    pub position: Position,
    /// The record's exact bytes, without its line terminator. A line longer
    /// than `max_record_bytes` keeps only its first `max_record_bytes` bytes,
    /// and the message reports the truncation.
    pub raw: Vec<u8>,
    /// A description of the problem, for a person to read.
    pub message: String,
}

/// One item produced by a parser, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    Record(Record),
    Malformed(Malformed),
}

impl Parsed {
    pub fn position(&self) -> Position {
        match self {
            Parsed::Record(record) => record.position,
            Parsed::Malformed(malformed) => malformed.position,
        }
    }

    pub fn raw(&self) -> &[u8] {
        match self {
            Parsed::Record(record) => &record.raw,
            Parsed::Malformed(malformed) => &malformed.raw,
        }
    }
}

/// The HTTP request that delivers one record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// An HTTP method in upper case.
    pub method: String,
    /// The path and optional query, starting with `/`, with record values
    /// percent-encoded.
    pub path: String,
    /// Header names and values.
    pub headers: Vec<(String, String)>,
    /// The record's JSON value as in its line, or the object with only the
    /// configured `fields`.
    pub body: Vec<u8>,
}

/// How to check that a record arrived: a request that reads it back and the
/// JSON that the response must contain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadBack {
    /// A GET of the record's resource.
    pub request: Request,
    /// The body of the request that delivers the record.
    pub expected: Vec<u8>,
}
