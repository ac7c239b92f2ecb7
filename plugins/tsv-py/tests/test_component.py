"""Tests of the export classes in `app` and `format`.

They need the Python bindings that componentize-py generates, so they are
skipped unless the folder with `wit_world` is on PYTHONPATH. scripts/test
generates the bindings, puts them there and sets
SLUICE_TSV_BINDINGS_REQUIRED=1, which turns a failed import into an error.
"""

import os
import unittest

try:
    from componentize_py_types import Err, Ok
    from wit_world.imports import types

    import app
    import format as format_exports
except ImportError:
    if os.environ.get("SLUICE_TSV_BINDINGS_REQUIRED") == "1":
        raise
    app = None


def configure(pairs):
    app.Format().configure(pairs)


@unittest.skipIf(app is None, "the componentize-py bindings are not on PYTHONPATH")
class ComponentTest(unittest.TestCase):
    def setUp(self):
        format_exports.CONFIG = None

    def test_info(self):
        info = app.Format().info()
        self.assertEqual(info.name, "tsv")
        self.assertEqual(info.extensions, ["tsv"])
        self.assertEqual(info.record_separator, b"\n")
        self.assertEqual(info.config_keys[0], types.ConfigKey("path", info.config_keys[0].description, True))

    def test_configure_error_is_a_value(self):
        with self.assertRaises(Err) as caught:
            configure([("path", "/x"), ("pth", "/y")])
        self.assertEqual(caught.exception.value.key, "pth")
        self.assertIn("unknown key", caught.exception.value.message)

    def test_unconfigured_parser_returns_errors(self):
        parser = format_exports.Parser()
        with self.assertRaises(Err) as caught:
            parser.feed(b"id\n")
        self.assertIn("not configured", caught.exception.value)
        record = types.Record(types.Position(1, 2, 3), "", b"1")
        self.assertIsInstance(parser.map_records([record])[0], Err)
        self.assertEqual(parser.read_back([record]), [None])
        self.assertEqual(parser.preamble(), b"")

    def test_parse_and_map(self):
        configure([("path", "/r/{id}"), ("null", "NA")])
        parser = format_exports.Parser()
        items = parser.feed(b"id\tv\n1\tNA\n2\n") + parser.finish()
        self.assertIsInstance(items[0], types.Parsed_Record)
        self.assertEqual(items[0].value.position, types.Position(1, 2, 5))
        self.assertIsInstance(items[1], types.Parsed_Malformed)
        self.assertIn("expected 2 fields", items[1].value.message)

        results = parser.map_records([items[0].value, types.Record(types.Position(9, 9, 9), "", b"x")])
        self.assertIsInstance(results[0], Ok)
        self.assertEqual(results[0].value.path, "/r/1")
        self.assertEqual(results[0].value.body, b'{"id":"1","v":null}')
        self.assertEqual(results[0].value.headers, [types.Header("content-type", "application/json")])
        self.assertIsInstance(results[1], Err)

        checks = parser.read_back([items[0].value])
        self.assertEqual(checks[0].request.method, "GET")
        self.assertEqual(parser.preamble(), b"id\tv\n")

    def test_file_error_is_a_value_and_sticks(self):
        configure([("path", "/r/{id}")])
        parser = format_exports.Parser()
        for _ in range(2):
            with self.assertRaises(Err) as caught:
                parser.feed(b"name\n")
            self.assertIn('"id" is not in the header row', caught.exception.value)

    def test_bug_becomes_an_error_value(self):
        configure([("path", "/r/{id}")])
        parser = format_exports.Parser()
        parser.inner.buffer = None
        with self.assertRaises(Err) as caught:
            parser.feed(b"id\n")
        self.assertIn("the tsv plugin failed in feed with TypeError", caught.exception.value)
        with self.assertRaises(Err) as again:
            parser.finish()
        self.assertEqual(again.exception.value, caught.exception.value)

        parser.inner.header = object()
        record = types.Record(types.Position(1, 1, 0), "", b"1")
        result = parser.map_records([record])[0]
        self.assertIsInstance(result, Err)
        self.assertIn("failed in map-records", result.value)
        self.assertEqual(parser.read_back([record]), [None])


if __name__ == "__main__":
    unittest.main()
