"""The items a parser produces and the requests it maps records to, as plain
Python mirrors of the WIT types in ``sluice:plugin/types``."""

from dataclasses import dataclass
from typing import List, Tuple, Union


@dataclass(frozen=True)
class Position:
    """Where a record starts in its file."""

    # 1-based among the file's records, counting malformed ones and not
    # counting the header row.
    record_number: int
    # 1-based line of the record's first byte.
    line: int
    # 0-based byte offset of the record's first byte, counting a byte order
    # mark.
    offset: int


@dataclass(frozen=True)
class Record:
    """One well-formed record."""

    position: Position
    # The value of the single key column, a JSON array of the values of
    # several, or empty when no key is configured.
    key: str
    # The line's exact bytes, without its terminator.
    raw: bytes


@dataclass(frozen=True)
class Malformed:
    """A record that could not be parsed."""

    position: Position
    # The line's exact bytes, without its terminator. A line longer than
    # max_record_bytes keeps only its first max_record_bytes bytes.
    raw: bytes
    message: str


Parsed = Union[Record, Malformed]


@dataclass(frozen=True)
class Request:
    """The HTTP request that delivers one record."""

    method: str
    # The path and optional query, starting with "/", with record values
    # percent-encoded.
    path: str
    headers: List[Tuple[str, str]]
    body: bytes


@dataclass(frozen=True)
class ReadBack:
    """A request that reads a record back, and the JSON it must return."""

    request: Request
    expected: bytes
