import json
import unittest

from sluice_tsv import FileError, Parser, parse_config
from sluice_tsv.records import Malformed, Position, Record


def parser(**config):
    pairs = [("path", "/r/{id}")] + [(key, value) for key, value in config.items()]
    return Parser(parse_config(pairs))


def parse(data: bytes, chunk_size=None, **config):
    """Parse `data` in chunks of `chunk_size` bytes, or whole."""
    p = parser(**config)
    items = []
    size = chunk_size or max(len(data), 1)
    for start in range(0, len(data), size):
        items += p.feed(data[start : start + size])
    items += p.finish()
    return items, p


def file_error(data: bytes, **config) -> str:
    with unittest.TestCase().assertRaises(FileError) as caught:
        parse(data, **config)
    return str(caught.exception)


class ParserTest(unittest.TestCase):
    def test_records_with_positions(self):
        data = b"id\tname\nA\tx\n\nB\ty\r\nC\tz"
        items, p = parse(data)
        self.assertEqual(
            items,
            [
                Record(Position(1, 2, 8), "A", b"A\tx"),
                Record(Position(2, 4, 13), "B", b"B\ty"),
                Record(Position(3, 5, 18), "C", b"C\tz"),
            ],
        )
        self.assertEqual(p.header.names, ("id", "name"))
        self.assertEqual(p.preamble(), b"id\tname\n")

    def test_every_split_gives_the_same_items(self):
        data = (
            "\ufeffid\tname\tnote\r\n"
            "\r\n"
            "1\tZoë\ta\\tb\\\\c\r\n"
            "2\t日本\t\\n\n"
            "3\tbad\\q\tx\n"
            "4\tshort\n"
            "5\t\\r\\n\t€\r"
        ).encode()
        whole, _ = parse(data)
        self.assertEqual(len(whole), 5)
        for size in range(1, 12):
            with self.subTest(chunk_size=size):
                items, _ = parse(data, chunk_size=size)
                self.assertEqual(items, whole)
        for cut in range(len(data) + 1):
            p = parser()
            items = p.feed(data[:cut]) + p.feed(data[cut:]) + p.finish()
            self.assertEqual(items, whole, f"cut at {cut}")

    def test_offsets_point_at_the_raw_bytes(self):
        data = "\ufeffid\tv\n\n1\tä\r\n2\tb\\\\\n3\n4\tlast".encode()
        items, _ = parse(data)
        self.assertEqual([item.position.record_number for item in items], [1, 2, 3, 4])
        self.assertEqual([item.position.line for item in items], [3, 4, 5, 6])
        for item in items:
            offset = item.position.offset
            self.assertEqual(data[offset : offset + len(item.raw)], item.raw)

    def test_bom_is_skipped_but_counted(self):
        items, p = parse(b"\xef\xbb\xbfid\n7\n", chunk_size=1)
        self.assertEqual(p.header.names, ("id",))
        self.assertEqual(p.header.raw, b"id")
        self.assertEqual(items, [Record(Position(1, 2, 6), "7", b"7")])

    def test_partial_bom_is_header_data(self):
        message = file_error(b"\xef\xbbid\n1\n")
        self.assertIn("invalid UTF-8 in field 1 at byte 0", message)

    def test_blank_lines_count_as_lines_only(self):
        items, _ = parse(b"\n\r\nid\n\n\n1\n\r\n2\n\n")
        self.assertEqual([(i.position.record_number, i.position.line) for i in items], [(1, 6), (2, 8)])

    def test_wrong_field_count_is_malformed(self):
        items, _ = parse(b"id\ta\tb\n1\t2\n3\t4\t5\t6\n7\t8\t9\n")
        self.assertIsInstance(items[0], Malformed)
        self.assertEqual(items[0].position, Position(1, 2, 7))
        self.assertEqual(items[0].raw, b"1\t2")
        self.assertTrue(items[0].message.startswith("expected 3 fields, found 2; "), items[0].message)
        self.assertIn("write a tab inside a value as \\t", items[0].message)
        self.assertIn("expected 3 fields, found 4", items[1].message)
        self.assertEqual(items[2], Record(Position(3, 4, 19), "7", b"7\t8\t9"))

    def test_bad_escapes_are_malformed(self):
        cases = [
            (b"1\ta\\x", 'unknown escape "\\x" in field 2 ("v") at byte 3 of the record'),
            (b"1\ta\\", 'field 2 ("v") ends with a lone backslash at byte 3 of the record'),
            (b"1\ta\\\\\\", "lone backslash at byte 5"),
            ("1\t\\é".encode(), 'unknown escape "\\é"'),
            (b"1\t\\ x", 'unknown escape "\\" followed by U+0020'),
            (b"\\0\tx", 'unknown escape "\\0" in field 1 ("id") at byte 0'),
        ]
        for line, expected in cases:
            with self.subTest(line=line):
                items, _ = parse(b"id\tv\n" + line + b"\n")
                self.assertIsInstance(items[0], Malformed)
                self.assertIn(expected, items[0].message)
                self.assertIn("write a literal backslash as \\\\", items[0].message)
                self.assertEqual(items[0].raw, line)

    def test_invalid_utf8_is_malformed(self):
        items, _ = parse(b"id\tv\n1\tab\xff\n2\tok\n")
        self.assertEqual(
            items[0].message,
            'invalid UTF-8 in field 2 ("v") at byte 4 of the record; save the file as UTF-8',
        )
        self.assertIsInstance(items[1], Record)

    def test_raw_cr_inside_line_is_malformed(self):
        items, _ = parse(b"id\tv\n1\ta\rb\n2\tc\r\r\n3\td\n")
        self.assertIn('field 2 ("v") contains a raw carriage return at byte 3', items[0].message)
        self.assertIn("byte 3", items[1].message)
        self.assertEqual(items[1].raw, b"2\tc\r")
        self.assertIsInstance(items[2], Record)

    def test_null_marker_is_compared_before_decoding(self):
        items, p = parse(b"id\tv\n1\t\\N\n", null="\\N")
        self.assertIsInstance(items[0], Record)

    def test_composite_key_is_json_array(self):
        items, _ = parse(b"id\ta\tb\nx\t\xc3\xa9\t\\t\n", key="a,b")
        self.assertEqual(json.loads(items[0].key), ["é", "\t"])
        self.assertEqual(items[0].key, '["é","\\t"]')

    def test_null_key_value_counts_as_empty(self):
        items, _ = parse(b"id\nNA\n", null="NA")
        self.assertEqual(items[0].key, "")

    def test_no_key(self):
        items, _ = parse(b"id\n1\n", key="")
        self.assertEqual(items[0].key, "")

    def test_overlong_line_without_end_is_reported_and_skipped(self):
        long_line = b"1\t" + b"x" * 3000
        data = b"id\tv\n" + long_line + b"\n2\tok\n"
        for size in [1, 100, 4096, len(data)]:
            with self.subTest(chunk_size=size):
                items, _ = parse(data, chunk_size=size, max_record_bytes="1024")
                self.assertEqual(len(items), 2)
                self.assertIsInstance(items[0], Malformed)
                self.assertEqual(items[0].position, Position(1, 2, 5))
                self.assertEqual(items[0].raw, long_line[:1024])
                self.assertIn("line 2 is longer than max_record_bytes (1024 bytes)", items[0].message)
                self.assertEqual(items[1], Record(Position(2, 3, 3008), "2", b"2\tok"))

    def test_line_at_the_limit_is_kept(self):
        line = b"1\t" + b"x" * 1022
        items, _ = parse(b"id\tv\n" + line + b"\r\n", chunk_size=7, max_record_bytes="1024")
        self.assertEqual(items, [Record(Position(1, 2, 5), "1", line)])

    def test_buffer_stays_bounded(self):
        p = parser(max_record_bytes="1024")
        p.feed(b"id\tv\n")
        for _ in range(100):
            p.feed(b"y" * 1000)
            self.assertLess(len(p.buffer), 2100)

    def test_header_errors_stop_the_file(self):
        cases = [
            (b"id\tid\n", 'duplicate column "id" in the header row (columns 1 and 2)'),
            (b"name\n", 'path template column "id" is not in the header row; the header has name'),
            (b"id\tv\\x\n", 'invalid header row: unknown escape "\\x" in field 2'),
            (b"id\tv\xff\n", "invalid header row: invalid UTF-8 in field 2"),
            (b"id\rA\rB\r", "CR-only line endings"),
            (b"id\t\r\n", ""),
        ]
        for data, expected in cases:
            with self.subTest(data=data):
                if expected:
                    self.assertIn(expected, file_error(data))
                else:
                    parse(data)

    def test_key_column_missing(self):
        message = file_error(b"id\tname\n", key="iaat")
        self.assertEqual(
            message, 'key column "iaat" is not in the header row; the header has id, name'
        )

    def test_cr_only_file_fails_before_buffering_it(self):
        p = parser()
        with self.assertRaises(FileError):
            p.feed(b"id\rA\r")
        with self.assertRaises(FileError) as again:
            p.feed(b"B\r")
        self.assertIn("CR-only", str(again.exception))

    def test_overlong_header_stops_the_file(self):
        message = file_error(b"id\t" + b"h" * 2000 + b"\n1\t2\n", max_record_bytes="1024")
        self.assertIn("header row on line 1 is longer than max_record_bytes", message)

    def test_escaped_header_names_are_decoded(self):
        _, p = parse(b"id\ta\\tb\n")
        self.assertEqual(p.header.names, ("id", "a\tb"))

    def test_finished_parser_rejects_calls(self):
        p = parser()
        p.finish()
        with self.assertRaises(FileError) as caught:
            p.feed(b"x")
        self.assertIn("already finished", str(caught.exception))

    def test_empty_file_has_no_preamble(self):
        items, p = parse(b"")
        self.assertEqual(items, [])
        self.assertEqual(p.preamble(), b"")

    def test_dead_letter_file_parses_the_same(self):
        data = b"\xef\xbb\xbfid\tv\r\n\r\n1\ta\\tb\r\n2\tbad\\x\r\n3\tc\r"
        items, p = parse(data)
        again = p.preamble() + b"".join(item.raw + b"\n" for item in items)
        reparsed, _ = parse(again)
        self.assertEqual([(type(i), i.raw) for i in reparsed], [(type(i), i.raw) for i in items])
        self.assertEqual([getattr(i, "key", None) for i in reparsed], [getattr(i, "key", None) for i in items])


if __name__ == "__main__":
    unittest.main()
