import unittest

from sluice_tsv.config import CONFIG_KEYS, ConfigError, parse_config


def error(pairs):
    with unittest.TestCase().assertRaises(ConfigError) as caught:
        parse_config(pairs)
    return caught.exception


class ConfigTest(unittest.TestCase):
    def test_defaults(self):
        config = parse_config([("path", "/weather/{origin}/{time_hour}")])
        self.assertEqual(config.method, "PUT")
        self.assertIsNone(config.null)
        self.assertEqual(config.max_record_bytes, 1048576)
        self.assertEqual(config.key_columns, ("origin", "time_hour"))
        self.assertIsNone(config.read_path)

    def test_key_list_is_trimmed(self):
        config = parse_config([("path", "/x"), ("key", "year, month ,day")])
        self.assertEqual(config.key_columns, ("year", "month", "day"))

    def test_blank_key_means_no_key(self):
        config = parse_config([("path", "/x/{id}"), ("key", " ")])
        self.assertEqual(config.key_columns, ())

    def test_key_errors(self):
        empty = error([("path", "/x"), ("key", "a,,b")])
        self.assertEqual(empty.key, "key")
        self.assertIn("empty column name", empty.message)
        repeated = error([("path", "/x"), ("key", "a,b,a")])
        self.assertIn('"a" appears more than once', repeated.message)

    def test_unknown_key_lists_accepted(self):
        rejected = error([("path", "/x"), ("delimiter", ",")])
        self.assertEqual(rejected.key, "delimiter")
        self.assertEqual(
            rejected.message,
            'unknown key "delimiter"; accepted keys are path, key, method, null, '
            "max_record_bytes, read_path",
        )

    def test_repeated_key_rejected(self):
        rejected = error([("path", "/x"), ("method", "PUT"), ("method", "POST")])
        self.assertEqual(rejected.key, "method")
        self.assertIn("more than once", rejected.message)

    def test_missing_path_rejected(self):
        rejected = error([("method", "POST")])
        self.assertEqual(rejected.key, "path")
        self.assertIn('missing required key "path"', rejected.message)

    def test_bad_templates_name_their_key(self):
        for template in ["items/{id}", "/items/{id", "/items/id}", "/items/{}", "/a b", "/a/../{id}"]:
            with self.subTest(template=template):
                self.assertEqual(error([("path", template)]).key, "path")
        self.assertEqual(error([("path", "/x"), ("read_path", "x")]).key, "read_path")

    def test_method_is_upper_case_token(self):
        self.assertEqual(parse_config([("path", "/x"), ("method", "post")]).method, "POST")
        for method in ["", "PU T", "GET\r\n", "PÜT", "(PUT)"]:
            with self.subTest(method=method):
                self.assertEqual(error([("path", "/x"), ("method", method)]).key, "method")

    def test_null_marker_kept_as_bytes(self):
        self.assertEqual(parse_config([("path", "/x"), ("null", "\\N")]).null, b"\\N")
        self.assertEqual(parse_config([("path", "/x"), ("null", "")]).null, b"")

    def test_max_record_bytes_range(self):
        config = parse_config([("path", "/x"), ("max_record_bytes", "1024")])
        self.assertEqual(config.max_record_bytes, 1024)
        for value in ["1023", "0", "-5", "1k", "", "١٠٢٤", "9" * 5000, "1073741825"]:
            with self.subTest(value=value[:20]):
                rejected = error([("path", "/x"), ("max_record_bytes", value)])
                self.assertEqual(rejected.key, "max_record_bytes")
                self.assertIn("1024 to 1073741824", rejected.message)

    def test_every_key_has_one_line_description(self):
        for key in CONFIG_KEYS:
            self.assertTrue(key.description, key.name)
            self.assertNotIn("\n", key.description, key.name)
        self.assertEqual([key.name for key in CONFIG_KEYS if key.required], ["path"])


if __name__ == "__main__":
    unittest.main()
