"""Splitting one line into fields and decoding each field.

Fields are separated by single TAB bytes and never quoted. Inside a field,
the escapes ``\\t``, ``\\n``, ``\\r`` and ``\\\\`` stand for a tab, a line
feed, a carriage return and a backslash. Any other backslash sequence, a
backslash at the end of a field, a raw carriage return and invalid UTF-8 are
errors. A TAB byte never occurs inside a multi-byte UTF-8 character, so the
line can be split before it is decoded.
"""

from typing import Callable, List, Optional

TAB = b"\t"
BACKSLASH = b"\\"
CR = b"\r"

ESCAPES = {b"t": b"\t", b"n": b"\n", b"r": b"\r", b"\\": b"\\"}

ESCAPE_FIX = "the escapes are \\t, \\n, \\r and \\\\, so write a literal backslash as \\\\"


class FieldError(ValueError):
    """A field that cannot be decoded, with a message naming the fix."""


def split_line(raw: bytes) -> List[bytes]:
    return raw.split(TAB)


def decode_fields(
    fields: List[bytes], label: Callable[[int], str], null: Optional[bytes] = None
) -> List[Optional[str]]:
    """Decode each field, or return None for a field equal to `null`.

    The null marker is compared with the field as written, so that a marker
    such as ``\\N`` is not read as an unknown escape. `label` names a field
    by its 0-based index for messages. Raises FieldError for the first field
    that cannot be decoded.
    """
    values: List[Optional[str]] = []
    start = 0
    for index, field in enumerate(fields):
        if null is not None and field == null:
            values.append(None)
        else:
            values.append(decode_field(field, start, lambda: label(index)))
        start += len(field) + 1
    return values


def decode_field(field: bytes, start: int, label: Callable[[], str]) -> str:
    """Decode one field that starts at byte `start` of its line.

    Raises FieldError for invalid UTF-8, a raw carriage return or a bad
    escape, naming the field with `label()` and the byte in the line.
    """
    try:
        text = field.decode("utf-8")
    except UnicodeDecodeError as error:
        raise FieldError(
            f"invalid UTF-8 in field {label()} at byte {start + error.start} of the record; "
            "save the file as UTF-8"
        ) from None

    cr = field.find(CR)
    if cr >= 0:
        raise FieldError(
            f"field {label()} contains a raw carriage return at byte {start + cr} of the "
            "record; write it as \\r, and end lines with LF or CRLF"
        )
    if BACKSLASH not in field:
        return text
    return unescape(field, start, label).decode("utf-8")


def unescape(field: bytes, start: int, label: Callable[[], str]) -> bytes:
    """Replace each escape in `field`, which is valid UTF-8, by its byte."""
    pieces: List[bytes] = []
    done = 0
    while True:
        backslash = field.find(BACKSLASH, done)
        if backslash < 0:
            pieces.append(field[done:])
            return b"".join(pieces)

        pieces.append(field[done:backslash])
        escaped = field[backslash + 1 : backslash + 2]
        if not escaped:
            raise FieldError(
                f"field {label()} ends with a lone backslash at byte {start + backslash} of "
                f"the record; {ESCAPE_FIX}"
            )
        replacement = ESCAPES.get(escaped)
        if replacement is None:
            # The field is valid UTF-8, so the escaped character decodes.
            char = field[backslash + 1 :].decode("utf-8")[0]
            raise FieldError(
                f"unknown escape {describe_escape(char)} in field {label()} at byte "
                f"{start + backslash} of the record; {ESCAPE_FIX}"
            )
        pieces.append(replacement)
        done = backslash + 2


def describe_escape(char: str) -> str:
    """Show a backslash followed by `char` for a message."""
    if char.isprintable() and char != " ":
        return f'"\\{char}"'
    return f'"\\" followed by U+{ord(char):04X}'
