"""The streaming parser for one file: splitting lines across chunks, the
header row, record positions and error recovery.

Each line ends with LF or CRLF, and the last line needs no terminator. The
first line that is not empty is the header row. After it, every non-empty
line is one record: an empty line counts as a line but not as a record. A
UTF-8 byte order mark at the start of the file is skipped, but offsets
still count it.

The parser appends each chunk to a buffer that starts at the first byte of
the line in progress, and searches only the new bytes for LF. A line is
parsed once its LF arrives, so a chunk may end anywhere, inside a CRLF, an
escape or a multi-byte character too. The buffer therefore contains at most
one incomplete line, which ``max_record_bytes`` bounds, plus the last chunk.

Recovery: every line is parsed on its own, so a malformed line never shifts
the records after it. A line longer than ``max_record_bytes`` is reported
with its first ``max_record_bytes`` bytes, whether or not its end has
arrived, and the rest of it is skipped.
"""

import json
from typing import List, Optional

from .config import Config
from .fields import CR, FieldError, decode_fields, split_line
from .header import CR_IN_HEADER, Header, HeaderError, parse_header
from .records import Malformed, Parsed, Position, Record

UTF8_BOM = b"\xef\xbb\xbf"
LF = b"\n"


class FileError(ValueError):
    """An error after which the file cannot be read at all, such as a header
    row without a configured key column."""


class Parser:
    """A streaming TSV parser for one input file."""

    def __init__(self, config: Config):
        self.config = config
        # Unconsumed input: `buffer[line_start:]` is the line in progress.
        self.buffer = bytearray()
        # File offset of `buffer[0]`.
        self.buffer_offset = 0
        self.line_start = 0
        # Index in `buffer` from which the search for the next LF goes on.
        self.scan_from = 0
        # Line number of `buffer[line_start]`.
        self.line = 1
        # Records reported so far, malformed ones included.
        self.records = 0
        self.header: Optional[Header] = None
        # Whether the first bytes may still turn out to be a byte order mark.
        self.bom_pending = True
        # Whether the rest of an overlong line is being discarded.
        self.skipping = False
        # A file-level error, raised again by every later call.
        self.failed: Optional[str] = None
        self.finished = False

    def feed(self, chunk: bytes) -> List[Parsed]:
        """Consume the next chunk and return the records that it completes.

        Raises FileError when the file cannot be read from here on: a broken
        header row, a configured column that the header lacks, or a call
        after `finish`. Every later call raises the same error.
        """
        self._check_usable()
        self.buffer += chunk
        out: List[Parsed] = []
        self._guard(False, out)
        self._compact()
        return out

    def finish(self) -> List[Parsed]:
        """Signal the end of the file and return the records still buffered,
        such as a last line without a terminator.

        Raises FileError as `feed` does.
        """
        self._check_usable()
        out: List[Parsed] = []
        self._guard(True, out)
        self.finished = True
        self.buffer = bytearray()
        return out

    def preamble(self) -> bytes:
        """Return the header row followed by LF, or nothing before the header
        row has been parsed."""
        if self.header is None:
            return b""
        return self.header.raw + LF

    def _check_usable(self) -> None:
        if self.failed is not None:
            raise FileError(self.failed)
        if self.finished:
            raise FileError(
                "the parser has already finished its file; create a new parser for the "
                "next file"
            )

    def _guard(self, eof: bool, out: List[Parsed]) -> None:
        """Run the parser and keep a file-level error for later calls."""
        try:
            self._run(eof, out)
        except (FileError, HeaderError) as error:
            self.failed = str(error)
            self.buffer = bytearray()
            self.line_start = 0
            self.scan_from = 0
            raise FileError(self.failed) from None

    def _compact(self) -> None:
        """Drop the consumed bytes from the front of the buffer."""
        if self.line_start > 0:
            del self.buffer[: self.line_start]
            self.buffer_offset += self.line_start
            self.scan_from -= self.line_start
            self.line_start = 0

    def _run(self, eof: bool, out: List[Parsed]) -> None:
        """Parse every complete line in the buffer. At the end of the file
        (`eof`), the last line need not end with a terminator."""
        if self.bom_pending:
            # A chunk may end inside the byte order mark.
            if not eof and len(self.buffer) < len(UTF8_BOM) and UTF8_BOM.startswith(self.buffer):
                return
            self.bom_pending = False
            if self.buffer.startswith(UTF8_BOM):
                self.line_start = len(UTF8_BOM)
                self.scan_from = len(UTF8_BOM)

        while True:
            lf = self.buffer.find(LF, max(self.scan_from, self.line_start))
            if self.skipping:
                if lf < 0:
                    self.line_start = len(self.buffer)
                    self.scan_from = len(self.buffer)
                    return
                self._next_line(lf)
                self.skipping = False
                continue

            if lf >= 0:
                self._complete_line(self._strip_cr(lf), out)
                self._next_line(lf)
                continue

            self.scan_from = len(self.buffer)
            pending = len(self.buffer) - self.line_start
            if pending == 0:
                return
            if eof:
                # A CR at the very end is the start of a CRLF cut off with
                # the file.
                self._complete_line(self._strip_cr(len(self.buffer)), out)
                self.line_start = len(self.buffer)
                return
            if self.header is None:
                self._check_header_cr()
            # Without its LF, the line may still end in the CR of a CRLF, so
            # only more than `max + 1` bytes surely exceed the limit.
            if pending > self.config.max_record_bytes + 1:
                self._report_overlong(out)
                self.skipping = True
                self.line_start = len(self.buffer)
                return
            return

    def _strip_cr(self, end: int) -> int:
        """Return where the line that ends at `end` ends without one final CR."""
        if end > self.line_start and self.buffer[end - 1] == CR[0]:
            return end - 1
        return end

    def _next_line(self, lf: int) -> None:
        """Move to the line after the LF at `lf`."""
        self.line_start = lf + 1
        self.scan_from = lf + 1
        self.line += 1

    def _check_header_cr(self) -> None:
        """Stop a file with CR-only line endings at its first CR, instead of
        buffering it as one header row until it exceeds max_record_bytes.
        A CR as the last buffered byte may still start a CRLF."""
        if self.buffer.find(CR, self.line_start, len(self.buffer) - 1) >= 0:
            raise FileError(CR_IN_HEADER)

    def _complete_line(self, end: int, out: List[Parsed]) -> None:
        """Turn the line `buffer[line_start:end]`, without its terminator,
        into the header or a parsed item, unless it is empty."""
        length = end - self.line_start
        if length == 0:
            return
        max_bytes = self.config.max_record_bytes
        if self.header is None:
            if length > max_bytes:
                raise FileError(
                    f"the header row on line {self.line} is longer than max_record_bytes "
                    f"({max_bytes} bytes); raise max_record_bytes"
                )
            self.header = parse_header(bytes(self.buffer[self.line_start : end]), self.config)
            return
        if length > max_bytes:
            self._report_overlong(out)
            return

        raw = bytes(self.buffer[self.line_start : end])
        position = self._next_position()
        try:
            key = record_key(parse_record(raw, self.header, self.config.null), self.header)
        except FieldError as error:
            out.append(Malformed(position, raw, str(error)))
            return
        out.append(Record(position, key, raw))

    # NOTE: `raw` is truncated, so a dead-letter file gets a partial line.
    # Keeping the whole line would break the memory bound.
    def _report_overlong(self, out: List[Parsed]) -> None:
        """Report the line in progress as longer than max_record_bytes, with
        its first max_record_bytes bytes as `raw`."""
        max_bytes = self.config.max_record_bytes
        if self.header is None:
            raise FileError(
                f"the header row on line {self.line} is longer than max_record_bytes "
                f"({max_bytes} bytes); raise max_record_bytes"
            )
        position = self._next_position()
        raw = bytes(self.buffer[self.line_start : self.line_start + max_bytes])
        out.append(
            Malformed(
                position,
                raw,
                f"line {self.line} is longer than max_record_bytes ({max_bytes} bytes); raw "
                f"contains its first {max_bytes} bytes and the rest of the line was skipped",
            )
        )

    def _next_position(self) -> Position:
        """Count a new record and return its position."""
        self.records += 1
        return Position(self.records, self.line, self.buffer_offset + self.line_start)


def parse_record(raw: bytes, header: Header, null: Optional[bytes]) -> List[Optional[str]]:
    """Split and decode one data line, without its terminator.

    Raises FieldError for the wrong number of fields or the first field
    that cannot be decoded.
    """
    fields = split_line(raw)
    if len(fields) != len(header.names):
        raise FieldError(
            f"expected {len(header.names)} fields, found {len(fields)}; give each line one "
            "field per header column, separated by single tabs, and write a tab inside a "
            "value as \\t"
        )
    return decode_fields(fields, header.label, null)


def record_key(values: List[Optional[str]], header: Header) -> str:
    """Build a record's key: the value of a single key column, or a JSON
    array of the values of several. A null value counts as empty."""
    parts = [values[index] or "" for index in header.key_indices]
    if not parts:
        return ""
    if len(parts) == 1:
        return parts[0]
    return json.dumps(parts, ensure_ascii=False, separators=(",", ":"))
