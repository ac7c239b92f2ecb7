import json
import unittest

from sluice_tsv import Parser, parse_config
from sluice_tsv.mapping import MappingError, map_record, read_back

HEADER = b"origin\ttime_hour\ttemp\tnote\n"


def bound(**config):
    """Return a parser that has read HEADER, with `config` on top of a
    weather path template."""
    pairs = [("path", "/weather/{origin}/{time_hour}")] + list(config.items())
    parser = Parser(parse_config(pairs))
    parser.feed(HEADER)
    return parser


def mapped(raw: bytes, **config):
    parser = bound(**config)
    return map_record(raw, parser.header, parser.config)


def mapping_error(raw: bytes, **config) -> str:
    with unittest.TestCase().assertRaises(MappingError) as caught:
        mapped(raw, **config)
    return str(caught.exception)


class MappingTest(unittest.TestCase):
    def test_builds_put_with_json_body(self):
        request = mapped(b"EWR\t2013-01-01T06:00:00Z\t39.02\ta\\tb\\\\c\\nd")
        self.assertEqual(request.method, "PUT")
        self.assertEqual(request.path, "/weather/EWR/2013-01-01T06%3A00%3A00Z")
        self.assertEqual(request.headers, [("content-type", "application/json")])
        self.assertEqual(
            json.loads(request.body),
            {"origin": "EWR", "time_hour": "2013-01-01T06:00:00Z", "temp": "39.02", "note": "a\tb\\c\nd"},
        )
        self.assertEqual(list(json.loads(request.body)), ["origin", "time_hour", "temp", "note"])

    def test_null_marker_becomes_json_null(self):
        request = mapped(b"JFK\tt\tNA\tNAN", null="NA")
        self.assertEqual(json.loads(request.body)["temp"], None)
        self.assertEqual(json.loads(request.body)["note"], "NAN")

    def test_non_ascii_is_kept_and_encoded_in_path(self):
        request = mapped("Zürich\tt/1\t-\t€".encode())
        self.assertEqual(request.path, "/weather/Z%C3%BCrich/t%2F1")
        self.assertIn("€".encode(), request.body)

    def test_method_and_read_back(self):
        parser = bound(method="post", read_path="/weather/{origin}?at={time_hour}")
        raw = b"LGA\t2013-01-01T07:00:00Z\t1\t"
        request = map_record(raw, parser.header, parser.config)
        self.assertEqual(request.method, "POST")
        check = read_back(raw, parser.header, parser.config)
        self.assertEqual(check.request.method, "GET")
        self.assertEqual(check.request.path, "/weather/LGA?at=2013-01-01T07%3A00%3A00Z")
        self.assertEqual(check.request.headers, [("accept", "application/json")])
        self.assertEqual(check.request.body, b"")
        self.assertEqual(check.expected, request.body)

    def test_read_back_defaults_to_put_path(self):
        parser = bound()
        check = read_back(b"EWR\tt\t1\t2", parser.header, parser.config)
        self.assertEqual(check.request.path, "/weather/EWR/t")

    def test_no_read_back_for_post_without_read_path(self):
        parser = bound(method="POST")
        self.assertIsNone(read_back(b"EWR\tt\t1\t2", parser.header, parser.config))

    def test_placeholder_values_must_be_present(self):
        self.assertEqual(
            mapping_error(b"\tt\t1\t2"), 'column "origin" is empty but the path template needs it'
        )
        self.assertEqual(
            mapping_error(b"NA\tt\t1\t2", null="NA"),
            'column "origin" is null ("NA") but the path template needs it',
        )

    def test_dot_segments_rejected(self):
        message = mapping_error(b"..\tt\t1\t2")
        self.assertTrue(
            message.startswith('column "origin" has value ".." which cannot be a path segment'),
            message,
        )
        parser = Parser(parse_config([("path", "/w/{a}{b}")]))
        parser.feed(b"a\tb\n")
        with self.assertRaises(MappingError) as caught:
            map_record(b".\t.", parser.header, parser.config)
        self.assertIn('make the path segment ".." in the path template', str(caught.exception))
        self.assertEqual(map_record(b".\tx", parser.header, parser.config).path, "/w/.x")

    def test_dot_segment_in_query_allowed(self):
        parser = Parser(parse_config([("path", "/w?o={origin}"), ("key", "")]))
        parser.feed(HEADER)
        self.assertEqual(map_record(b"..\tt\t\t", parser.header, parser.config).path, "/w?o=..")

    def test_malformed_raw_rejected(self):
        self.assertIn("expected 4 fields, found 2", mapping_error(b"EWR\tt"))
        self.assertIn("unknown escape", mapping_error(b"EWR\tt\t1\t\\u"))
        self.assertIn("more than one line", mapping_error(b"EWR\tt\t1\t2\nx\ty\tz\tw"))
        self.assertEqual(mapping_error(b""), "the record is empty")


if __name__ == "__main__":
    unittest.main()
