"""Mapping one record to its HTTP request and to the request that reads it
back."""

import json
from typing import List, Optional, Sequence, Tuple

from .config import Config
from .fields import FieldError
from .header import Header, PathPart
from .messages import quoted
from .parser import LF, parse_record
from .records import ReadBack, Request
from .template import encode_value, is_dot_segment

CONTENT_TYPE = "application/json"
READ_METHOD = "GET"

DOT_SEGMENT_REASON = "URL normalisation would remove it and send the request to another path"


class MappingError(ValueError):
    """A record that cannot be mapped, with a message naming the fix."""


def map_record(raw: bytes, header: Header, config: Config) -> Request:
    """Parse `raw` again and build the record's request.

    Raises MappingError when `raw` is not one well-formed line of this file,
    or when a path placeholder's value is empty, null or makes a dot segment
    such as ``..``.
    """
    values = _parse(raw, header, config)
    return _build_request(values, header, config)


def read_back(raw: bytes, header: Header, config: Config) -> Optional[ReadBack]:
    """Parse `raw` again and build the request that reads the record back: a
    GET of ``read_path``, or of the record's own path when the method is PUT
    and no ``read_path`` is set. The expected JSON is the request body.

    Returns None for other methods without a ``read_path``, because the
    record's path then does not name it. Raises MappingError as
    `map_record` does, and for a ``read_path`` value that cannot fill its
    placeholder.
    """
    if header.read_path is None and config.method != "PUT":
        return None
    values = _parse(raw, header, config)
    request = _build_request(values, header, config)
    path = request.path
    if header.read_path is not None:
        path = _build_path(values, header, header.read_path, config.null, "read_path template")
    read_request = Request(READ_METHOD, path, [("accept", CONTENT_TYPE)], b"")
    return ReadBack(read_request, request.body)


def _parse(raw: bytes, header: Header, config: Config) -> List[Optional[str]]:
    if not raw:
        raise MappingError("the record is empty")
    if LF in raw:
        raise MappingError(
            "the record contains a line feed, so it is more than one line; map only "
            "records that this plugin's parser returned"
        )
    try:
        return parse_record(raw, header, config.null)
    except FieldError as error:
        raise MappingError(str(error)) from None


def _build_request(values: List[Optional[str]], header: Header, config: Config) -> Request:
    path = _build_path(values, header, header.path, config.null, "path template")
    body = json.dumps(dict(zip(header.names, values)), ensure_ascii=False, separators=(",", ":"))
    return Request(config.method, path, [("content-type", CONTENT_TYPE)], body.encode("utf-8"))


def _build_path(
    values: List[Optional[str]],
    header: Header,
    parts: Sequence[PathPart],
    null: Optional[bytes],
    template: str,
) -> str:
    """Fill a path template with the record's percent-encoded values.
    `template` names the template in messages."""
    pieces: List[str] = []
    # For each placeholder: the character range of its value in the path,
    # the column name and the value.
    filled: List[Tuple[int, int, str, str]] = []
    length = 0
    for part in parts:
        if isinstance(part, str):
            pieces.append(part)
            length += len(part)
            continue

        name = header.names[part]
        value = values[part]
        if value is None:
            marker = (null or b"").decode("utf-8")
            raise MappingError(
                f"column {quoted(name)} is null ({quoted(marker)}) but the {template} needs it"
            )
        if not value:
            raise MappingError(f"column {quoted(name)} is empty but the {template} needs it")
        encoded = encode_value(value)
        filled.append((length, length + len(encoded), name, value))
        pieces.append(encoded)
        length += len(encoded)

    path = "".join(pieces)
    _check_dot_segments(path, filled, template)
    return path


def _check_dot_segments(path: str, filled: List[Tuple[int, int, str, str]], template: str) -> None:
    """Reject a built path with a dot segment, such as ``/r/..`` from the value
    ``..``, because the request would go to another resource. Only segments
    of the path count, not the query."""
    # Values percent-encode `?` and templates reject `#`, so the first `?`
    # ends the path.
    path_end = path.find("?")
    if path_end < 0:
        path_end = len(path)
    segment_start = 0
    for segment in path[:path_end].split("/"):
        segment_end = segment_start + len(segment)
        if is_dot_segment(segment):
            sources: List[Tuple[str, str]] = []
            for start, end, name, value in filled:
                overlaps = start < segment_end and segment_start < end
                if overlaps and (name, value) not in sources:
                    sources.append((name, value))
            raise MappingError(_dot_segment_message(segment, sources, template))
        segment_start = segment_end + 1


def _dot_segment_message(segment: str, sources: List[Tuple[str, str]], template: str) -> str:
    """Describe a dot segment by the placeholder values that built it."""
    if len(sources) == 1 and sources[0][1] == segment:
        name, value = sources[0]
        return (
            f"column {quoted(name)} has value {quoted(value)} which cannot be a path segment "
            f"in the {template}, because {DOT_SEGMENT_REASON}; change the value or move the "
            "placeholder into the query"
        )
    columns = ", ".join(quoted(name) for name, _ in sources)
    values = ", ".join(quoted(value) for _, value in sources)
    return (
        f"the values {values} of the columns {columns} make the path segment "
        f"{quoted(segment)} in the {template} a dot segment, so {DOT_SEGMENT_REASON}; change "
        f"the values or the {template}"
    )
