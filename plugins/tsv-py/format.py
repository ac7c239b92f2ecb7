"""The ``parser`` resource of the ``sluice:plugin/format`` interface.

componentize-py requires exported resources to be classes in a module named
after the interface. The class converts between the generated WIT types and
the plain Python core in `sluice_tsv`, and turns every exception into an
error value, because one that escapes traps the instance.
"""

from typing import Callable, List, Optional

import wit_world.exports.format
from componentize_py_types import Err, Ok, Result
from wit_world.imports import types

import sluice_tsv
from sluice_tsv.mapping import MappingError, map_record, read_back
from sluice_tsv.records import Malformed, Parsed, Position, Request

# The configuration that `configure` validated. Each parser keeps the one
# that was current when it was created.
CONFIG: Optional[sluice_tsv.Config] = None

NOT_CONFIGURED = (
    "the tsv plugin is not configured; the host must call configure before creating a parser"
)

NO_HEADER = (
    "no header row has been parsed yet, so the record cannot be mapped; map only records "
    "that this parser returned"
)


def internal_error(call: str, error: Exception) -> str:
    """Describe an unexpected exception, which is a bug in the plugin."""
    return (
        f"the tsv plugin failed in {call} with {type(error).__name__}: {error}; this is a "
        "bug in the plugin, so report it with the input that caused it"
    )


class Parser(wit_world.exports.format.Parser):
    def __init__(self) -> None:
        # The constructor has no error case, so an unconfigured parser
        # reports NOT_CONFIGURED from each call instead.
        self.inner = sluice_tsv.Parser(CONFIG) if CONFIG is not None else None

    def feed(self, chunk: bytes) -> List[types.Parsed]:
        """Raises Err with a message when the file cannot be read on."""
        return self._parse("feed", lambda parser: parser.feed(chunk))

    def finish(self) -> List[types.Parsed]:
        """Raises Err with a message when the file cannot be read on."""
        return self._parse("finish", lambda parser: parser.finish())

    def map_records(self, records: List[types.Record]) -> List[Result[types.Request, str]]:
        results: List[Result[types.Request, str]] = []
        for record in records:
            try:
                results.append(Ok(request_to_wit(self._map(record.raw))))
            except MappingError as error:
                results.append(Err(str(error)))
            except Exception as error:  # noqa: BLE001
                results.append(Err(internal_error("map-records", error)))
        return results

    def read_back(self, records: List[types.Record]) -> List[Optional[types.ReadBack]]:
        # The interface has no error case here: a record that cannot be
        # mapped cannot be read back either, and `map-records` reports why.
        results: List[Optional[types.ReadBack]] = []
        for record in records:
            try:
                results.append(self._read_back(record.raw))
            except Exception:  # noqa: BLE001
                results.append(None)
        return results

    def preamble(self) -> bytes:
        try:
            return self.inner.preamble() if self.inner is not None else b""
        # The interface has no error case, and the core only joins bytes.
        except Exception:  # noqa: BLE001
            return b""

    def _parse(
        self, call: str, step: Callable[[sluice_tsv.Parser], List[Parsed]]
    ) -> List[types.Parsed]:
        if self.inner is None:
            raise Err(NOT_CONFIGURED)
        try:
            return [parsed_to_wit(item) for item in step(self.inner)]
        except sluice_tsv.FileError as error:
            message = str(error)
        except Exception as error:  # noqa: BLE001
            message = internal_error(call, error)
            # The parser's state is unknown after a bug, so it stops here.
            self.inner.failed = message
        raise Err(message)

    def _map(self, raw: bytes) -> Request:
        if self.inner is None:
            raise MappingError(NOT_CONFIGURED)
        if self.inner.header is None:
            raise MappingError(NO_HEADER)
        return map_record(raw, self.inner.header, self.inner.config)

    def _read_back(self, raw: bytes) -> Optional[types.ReadBack]:
        if self.inner is None or self.inner.header is None:
            return None
        found = read_back(raw, self.inner.header, self.inner.config)
        if found is None:
            return None
        return types.ReadBack(request_to_wit(found.request), found.expected)


def position_to_wit(position: Position) -> types.Position:
    return types.Position(position.record_number, position.line, position.offset)


def parsed_to_wit(item: Parsed) -> types.Parsed:
    if isinstance(item, Malformed):
        malformed = types.Malformed(position_to_wit(item.position), item.raw, item.message)
        return types.Parsed_Malformed(malformed)
    record = types.Record(position_to_wit(item.position), item.key, item.raw)
    return types.Parsed_Record(record)


def request_to_wit(request: Request) -> types.Request:
    headers = [types.Header(name, value) for name, value in request.headers]
    return types.Request(request.method, request.path, headers, request.body)
