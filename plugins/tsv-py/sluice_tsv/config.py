"""The plugin configuration: the key/value pairs that the host passes to
``configure``, validated once into a `Config`."""

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from .messages import quoted
from .template import PathTemplate, TemplateError, parse_template

DEFAULT_METHOD = "PUT"

# Limits on the length of one line in bytes, without its line terminator.
DEFAULT_MAX_RECORD_BYTES = 1024 * 1024
MIN_MAX_RECORD_BYTES = 1024
# The parser buffers up to this many bytes plus one chunk inside a 32-bit
# guest, so values near 4 GiB could never be honoured.
MAX_MAX_RECORD_BYTES = 1024 * 1024 * 1024

# Characters allowed in an HTTP method token besides letters and digits
# (RFC 9110, section 5.6.2).
TOKEN_PUNCTUATION = frozenset("!#$%&'*+-.^_`|~")


@dataclass(frozen=True)
class ConfigKey:
    """A configuration key as `info` reports it."""

    name: str
    # One line that states what the key sets and its default.
    description: str
    required: bool


# Every accepted configuration key, in the order `info` lists them.
CONFIG_KEYS: Tuple[ConfigKey, ...] = (
    ConfigKey(
        "path",
        "request path template such as /weather/{origin}/{time_hour}; each {column} is "
        "replaced by the record's percent-encoded value",
        True,
    ),
    ConfigKey(
        "key",
        "column, or comma-separated columns, whose values order the deliveries of a "
        "record; default: the path's columns, empty for none",
        False,
    ),
    ConfigKey("method", "HTTP method of each request; default PUT", False),
    ConfigKey(
        "null",
        "field value sent as JSON null, such as NA or \\N, compared before escapes are "
        "decoded; default none, so every value is a string",
        False,
    ),
    ConfigKey(
        "max_record_bytes",
        "max bytes of one line without its terminator, at least 1024, before it is "
        "reported as malformed; default 1048576",
        False,
    ),
    ConfigKey(
        "read_path",
        "path template that reads a record back for sluice verify, such as "
        "/weather/{origin}/{time_hour}; default: the record's own path when method is "
        "PUT, none otherwise",
        False,
    ),
)


class ConfigError(ValueError):
    """A rejected configuration: the key at fault (empty when the problem is
    not one key) and a message that names the fix."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.message = message


@dataclass(frozen=True)
class Config:
    """A validated plugin configuration."""

    path: PathTemplate
    # Columns whose values form each record's key, in order. Empty means
    # every record gets an empty key.
    key_columns: Tuple[str, ...]
    # An HTTP method token in upper case.
    method: str
    # A field, as written in the file, that becomes JSON null.
    null: Optional[bytes]
    max_record_bytes: int
    read_path: Optional[PathTemplate]


def parse_config(pairs: Sequence[Tuple[str, str]]) -> Config:
    """Validate the key/value pairs from the host's plugin configuration.

    Raises ConfigError for an unknown or repeated key, a missing ``path``, or
    a value that the key does not accept.
    """
    accepted = [key.name for key in CONFIG_KEYS]
    values: Dict[str, str] = {}
    for name, value in pairs:
        if name not in accepted:
            raise ConfigError(
                name, f"unknown key {quoted(name)}; accepted keys are {', '.join(accepted)}"
            )
        if name in values:
            raise ConfigError(name, f"key {quoted(name)} is given more than once; keep one value")
        values[name] = value

    if "path" not in values:
        raise ConfigError(
            "path",
            "missing required key \"path\"; set it to a template such as "
            "/weather/{origin}/{time_hour}",
        )
    path = _template("path", values["path"])
    read_path = _template("read_path", values["read_path"]) if "read_path" in values else None

    if "key" in values:
        key_columns = tuple(_parse_key(values["key"]))
    else:
        key_columns = tuple(path.columns())
    method = _parse_method(values.get("method", DEFAULT_METHOD))
    null = values["null"].encode("utf-8") if "null" in values else None
    max_record_bytes = DEFAULT_MAX_RECORD_BYTES
    if "max_record_bytes" in values:
        max_record_bytes = _parse_max_record_bytes(values["max_record_bytes"])

    return Config(path, key_columns, method, null, max_record_bytes, read_path)


def _template(key: str, value: str) -> PathTemplate:
    try:
        return parse_template(value)
    except TemplateError as error:
        raise ConfigError(key, str(error)) from None


def _parse_key(value: str) -> List[str]:
    """Parse ``key``: one column or a comma-separated list, with spaces
    around each name trimmed. A blank value means no key columns."""
    if not value.strip():
        return []
    columns: List[str] = []
    for part in value.split(","):
        column = part.strip()
        if not column:
            raise ConfigError(
                "key",
                f"empty column name in {quoted(value)}; separate column names with single commas",
            )
        if column in columns:
            raise ConfigError("key", f"column {quoted(column)} appears more than once in {quoted(value)}")
        columns.append(column)
    return columns


def _parse_method(value: str) -> str:
    if not value:
        raise ConfigError("method", "empty method; use a method such as PUT or POST")
    for char in value:
        if not (char.isascii() and char.isalnum()) and char not in TOKEN_PUNCTUATION:
            raise ConfigError(
                "method",
                f"invalid method {quoted(value)}: {quoted(char)} is not allowed in an HTTP method; "
                "use a method such as PUT or POST",
            )
    return value.upper()


def _parse_max_record_bytes(value: str) -> int:
    allowed = f"{MIN_MAX_RECORD_BYTES} to {MAX_MAX_RECORD_BYTES}"
    if not (value.isascii() and value.isdigit()):
        raise ConfigError(
            "max_record_bytes",
            f"invalid max_record_bytes {quoted(value)}; use a whole number of bytes from {allowed}",
        )
    # Python rejects int() of more than 4300 digits, and 19 digits already
    # exceed the maximum, so longer values need no conversion.
    if len(value) > 19 or not MIN_MAX_RECORD_BYTES <= int(value) <= MAX_MAX_RECORD_BYTES:
        raise ConfigError(
            "max_record_bytes",
            f"max_record_bytes {value} is out of range; use a value from {allowed}",
        )
    return int(value)
