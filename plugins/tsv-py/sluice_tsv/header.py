"""The header row of one file, bound to the configuration: key columns and
path placeholders resolved to column indices."""

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple, Union

from .config import Config
from .messages import quoted
from .fields import CR, FieldError, decode_fields, split_line
from .template import Column, PathTemplate

# The error for a header row with a raw CR that does not end it. Lines end
# only at LF, so a file with CR-only line endings is one long line, and
# without this error its rows would all be lost in the header.
CR_IN_HEADER = (
    "the header row contains a raw carriage return that does not end the line, so the "
    "file seems to use CR-only line endings, which are not supported; convert the file "
    "to LF or CRLF line endings, and write a carriage return inside a value as \\r"
)

# A path template piece: literal text, or the index of the column whose
# encoded value fills the placeholder.
PathPart = Union[str, int]


class HeaderError(ValueError):
    """A header row that makes the whole file unreadable."""


@dataclass(frozen=True)
class Header:
    """The decoded header row and the configuration resolved against it."""

    names: Tuple[str, ...]
    # The row's exact bytes, without a byte order mark or line terminator.
    raw: bytes
    key_indices: Tuple[int, ...]
    path: Tuple[PathPart, ...]
    read_path: Optional[Tuple[PathPart, ...]]

    def label(self, index: int) -> str:
        """Name field `index` (0-based) for a message, such as ``3 ("temp")``."""
        if index < len(self.names):
            return f"{index + 1} ({quoted(self.names[index])})"
        return str(index + 1)


def parse_header(raw: bytes, config: Config) -> Header:
    """Decode the header row `raw` and resolve the configured columns.

    Raises HeaderError for a raw CR, a field that cannot be decoded, a
    duplicate column name, or a key column or placeholder that the header
    lacks.
    """
    if CR in raw:
        raise HeaderError(CR_IN_HEADER)
    try:
        decoded = decode_fields(split_line(raw), lambda index: str(index + 1))
    except FieldError as error:
        raise HeaderError(f"invalid header row: {error}") from None
    # Without a null marker, every decoded value is a string.
    names = tuple(name for name in decoded if name is not None)

    indices: Dict[str, int] = {}
    for index, name in enumerate(names):
        if name in indices:
            raise HeaderError(
                f"duplicate column {quoted(name)} in the header row (columns {indices[name] + 1} "
                f"and {index + 1}); rename one of them"
            )
        indices[name] = index

    def find(column: str, role: str) -> int:
        if column not in indices:
            raise HeaderError(
                f"{role} column {quoted(column)} is not in the header row; the header has "
                f"{', '.join(names)}"
            )
        return indices[column]

    def resolve(template: PathTemplate, role: str) -> Tuple[PathPart, ...]:
        parts: List[PathPart] = []
        for segment in template.segments:
            if isinstance(segment, Column):
                parts.append(find(segment.name, role))
            else:
                parts.append(segment)
        return tuple(parts)

    # Placeholders first: the key columns default to them, and a missing one
    # is a mistake in the template.
    path = resolve(config.path, "path template")
    read_path = None
    if config.read_path is not None:
        read_path = resolve(config.read_path, "read_path template")
    key_indices = tuple(find(column, "key") for column in config.key_columns)
    return Header(names, raw, key_indices, path, read_path)
