"""Request path templates such as ``/weather/{origin}/{time_hour}``."""

from dataclasses import dataclass
from typing import List, Tuple, Union
from urllib.parse import quote

from .messages import quoted

# Dot segments, with each dot also written as `%2e` or `%2E`. URL parsers
# that follow the WHATWG URL Standard, such as the `url` crate that the host
# uses, remove such a segment (and for `..` the one before it), so the
# request would go to another resource.
DOT_SEGMENTS = frozenset([".", "%2e", "..", ".%2e", "%2e.", "%2e%2e"])

# Printable ASCII characters that RFC 3986 excludes from URLs, and `#`, which
# would start a fragment that is never sent.
EXCLUDED_LITERAL_CHARS = frozenset('"#<>\\^`|')


class TemplateError(ValueError):
    """A path template that cannot be parsed, with a message naming the fix."""


@dataclass(frozen=True)
class Column:
    """A ``{column}`` placeholder, filled with the record's encoded value."""

    name: str


Segment = Union[str, Column]


@dataclass(frozen=True)
class PathTemplate:
    """A parsed template: literal strings and `Column` placeholders."""

    text: str
    segments: Tuple[Segment, ...]

    def columns(self) -> List[str]:
        """Return the placeholder columns in order of first appearance."""
        names: List[str] = []
        for segment in self.segments:
            if isinstance(segment, Column) and segment.name not in names:
                names.append(segment.name)
        return names


def parse_template(template: str) -> PathTemplate:
    """Parse a template that starts with ``/``.

    Raises TemplateError for a template that does not start with ``/``, an
    unbalanced, nested or empty placeholder, a literal character that a URL
    cannot contain, or a path segment without placeholder that is a dot
    segment such as ``..``.
    """
    if not template.startswith("/"):
        raise TemplateError(
            f"path template {quoted(template)} must start with \"/\", such as /items/{{id}}"
        )

    segments: List[Segment] = []
    literal: List[str] = []
    # Index of the `{` that opened the current placeholder.
    open_at = -1
    for index, char in enumerate(template):
        if open_at >= 0:
            if char == "{":
                raise TemplateError(
                    f"nested \"{{\" at character {index} of path template {quoted(template)}; "
                    f"the placeholder opened at character {open_at} is not closed"
                )
            if char == "}":
                name = template[open_at + 1 : index]
                if not name:
                    raise TemplateError(
                        f"empty placeholder \"{{}}\" at character {open_at} of path "
                        f"template {quoted(template)}; put a column name inside the braces"
                    )
                segments.append(Column(name))
                open_at = -1
            continue

        if char == "{":
            if literal:
                segments.append("".join(literal))
                literal = []
            open_at = index
        elif char == "}":
            raise TemplateError(
                f"unbalanced \"}}\" at character {index} of path template {quoted(template)}; "
                "placeholders look like {column}"
            )
        elif not is_literal_char(char):
            raise TemplateError(
                f"invalid character {quoted(char)} at character {index} of path template "
                f"{quoted(template)}; percent-encode it"
            )
        else:
            literal.append(char)

    if open_at >= 0:
        raise TemplateError(
            f"unclosed \"{{\" at character {open_at} of path template {quoted(template)}; "
            "close the placeholder with \"}\""
        )
    if literal:
        segments.append("".join(literal))

    parsed = PathTemplate(template, tuple(segments))
    check_literal_dot_segments(parsed)
    return parsed


def is_literal_char(char: str) -> bool:
    """Return whether `char` may appear unencoded in a template's literal text."""
    return "!" <= char <= "~" and char not in EXCLUDED_LITERAL_CHARS


def is_dot_segment(segment: str) -> bool:
    return segment.lower() in DOT_SEGMENTS


def encode_value(value: str) -> str:
    """Percent-encode every UTF-8 byte outside the RFC 3986 unreserved set.

    A value then can never add a path segment, a query parameter or a
    fragment. Python 3.7 and later leave ``~`` unencoded, like the other
    unreserved characters ``-``, ``.`` and ``_``.
    """
    return quote(value, safe="")


def check_literal_dot_segments(template: PathTemplate) -> None:
    """Reject a path segment that is a dot segment without a placeholder.

    Segments with a placeholder depend on the record, so mapping checks them.
    """
    # The literal text of each path segment and whether a placeholder is in
    # it. The path ends at the first `?`, because `#` is rejected.
    path_segments = [["", False]]
    for segment in template.segments:
        if isinstance(segment, Column):
            path_segments[-1][1] = True
            continue
        path_part, question, _ = segment.partition("?")
        pieces = path_part.split("/")
        path_segments[-1][0] += pieces[0]
        for piece in pieces[1:]:
            path_segments.append([piece, False])
        if question:
            break

    for text, has_placeholder in path_segments:
        if not has_placeholder and is_dot_segment(text):
            raise TemplateError(
                f"path template {quoted(template.text)} contains the dot segment {quoted(text)}, which "
                "URL normalisation would remove; write the path without it"
            )
