import unittest

from sluice_tsv.template import Column, TemplateError, encode_value, parse_template


class TemplateTest(unittest.TestCase):
    def test_parses_placeholders_and_query(self):
        template = parse_template("/w/{origin}/{time_hour}?day={day}&x=1")
        self.assertEqual(
            template.segments,
            ("/w/", Column("origin"), "/", Column("time_hour"), "?day=", Column("day"), "&x=1"),
        )
        self.assertEqual(template.columns(), ["origin", "time_hour", "day"])

    def test_columns_without_repeats(self):
        self.assertEqual(parse_template("/{a}/{b}/{a}").columns(), ["a", "b"])

    def test_rejects_bad_templates(self):
        cases = [
            ("w/{id}", 'must start with "/"'),
            ("", 'must start with "/"'),
            ("/a/{id", 'unclosed "{" at character 3'),
            ("/a/id}", 'unbalanced "}" at character 5'),
            ("/a/{b{c}}", 'nested "{" at character 5'),
            ("/a/{}", "empty placeholder"),
            ("/a b", 'invalid character " "'),
            ("/a#frag", 'invalid character "#"'),
            ("/é", 'invalid character "é"'),
            ("/a/../b", 'dot segment ".."'),
            ("/a/%2E", 'dot segment "%2E"'),
            ("/./{x}", 'dot segment "."'),
        ]
        for template, expected in cases:
            with self.subTest(template=template):
                with self.assertRaises(TemplateError) as caught:
                    parse_template(template)
                self.assertIn(expected, str(caught.exception))

    def test_dots_in_query_or_beside_placeholder_allowed(self):
        parse_template("/a?x=..")
        parse_template("/a/.{x}")
        parse_template("/a/..b")

    def test_encodes_everything_but_unreserved(self):
        self.assertEqual(encode_value("az09-._~"), "az09-._~")
        self.assertEqual(encode_value("a/b?c#d e"), "a%2Fb%3Fc%23d%20e")
        self.assertEqual(encode_value("2013-01-01T06:00:00Z"), "2013-01-01T06%3A00%3A00Z")
        self.assertEqual(encode_value("é"), "%C3%A9")


if __name__ == "__main__":
    unittest.main()
