use super::*;

fn config(pairs: &[(&str, &str)]) -> Arc<Config> {
    Arc::new(Config::from_pairs(pairs).unwrap())
}

fn default_config() -> Arc<Config> {
    config(&[("path", "/items/{id}")])
}

/// Returns a configuration with the smallest accepted `max_record_bytes`, 1024.
fn small_config() -> Arc<Config> {
    config(&[("path", "/items/{id}"), ("max_record_bytes", "1024")])
}

/// Feeds `chunks` to a new parser, then finishes it.
fn parse_chunks(config: &Arc<Config>, chunks: &[&[u8]]) -> Vec<Parsed> {
    let mut parser = Parser::new(config.clone());
    let mut out = Vec::new();
    for chunk in chunks {
        out.extend(parser.feed(chunk).unwrap());
    }
    out.extend(parser.finish().unwrap());
    out
}

fn parse(config: &Arc<Config>, input: &[u8]) -> Vec<Parsed> {
    parse_chunks(config, &[input])
}

/// Checks that every way of splitting `input` into two chunks, and into
/// chunks of one byte, gives the same items as one chunk.
fn check_every_split(config: &Arc<Config>, input: &[u8]) -> Vec<Parsed> {
    let whole = parse(config, input);
    for split in 0..=input.len() {
        let (head, tail) = input.split_at(split);
        let parsed = parse_chunks(config, &[head, tail]);
        assert_eq!(parsed, whole, "split at byte {split} of {input:?}");
    }

    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(parse_chunks(config, &bytes), whole, "one-byte chunks");
    whole
}

fn record(item: &Parsed) -> &Record {
    match item {
        Parsed::Record(record) => record,
        Parsed::Malformed(malformed) => panic!("expected a record, got {malformed:?}"),
    }
}

fn malformed(item: &Parsed) -> &Malformed {
    match item {
        Parsed::Malformed(malformed) => malformed,
        Parsed::Record(record) => panic!("expected a malformed record, got {record:?}"),
    }
}

fn position(record_number: u64, line: u64, offset: u64) -> Position {
    Position {
        record_number,
        line,
        offset,
    }
}

#[test]
fn lf_and_crlf_lines() {
    let input = b"{\"id\":1}\n{\"id\":2}\r\n{\"id\":3}\n";
    let parsed = check_every_split(&default_config(), input);
    assert_eq!(parsed.len(), 3);

    let expected = [
        (position(1, 1, 0), "{\"id\":1}", "1"),
        (position(2, 2, 9), "{\"id\":2}", "2"),
        (position(3, 3, 19), "{\"id\":3}", "3"),
    ];
    for (item, (position, raw, key)) in parsed.iter().zip(expected) {
        let record = record(item);
        assert_eq!(record.position, position);
        assert_eq!(record.raw, raw.as_bytes());
        assert_eq!(record.key, key);
    }
}

#[test]
fn final_line_without_newline() {
    let input = b"{\"id\":1}\n{\"id\":2}";
    let parsed = check_every_split(&default_config(), input);
    assert_eq!(parsed.len(), 2);
    assert_eq!(record(&parsed[1]).position, position(2, 2, 9));
    assert_eq!(record(&parsed[1]).raw, b"{\"id\":2}");
}

#[test]
fn final_cr_without_lf_stays_in_raw() {
    // A CR is a terminator only before LF, and as JSON whitespace it is valid.
    let parsed = check_every_split(&default_config(), b"{\"id\":1}\r");
    assert_eq!(parsed.len(), 1);
    assert_eq!(record(&parsed[0]).raw, b"{\"id\":1}\r");
}

#[test]
fn blank_lines_count_as_lines() {
    let input = b"\n  \n{\"id\":1}\n\t \r\n\r\n{\"id\":2}\n\n   ";
    let parsed = check_every_split(&default_config(), input);
    assert_eq!(parsed.len(), 2);
    assert_eq!(record(&parsed[0]).position, position(1, 3, 4));
    assert_eq!(record(&parsed[1]).position, position(2, 6, 19));
}

#[test]
fn empty_and_blank_files_have_no_records() {
    for input in [
        &b""[..],
        b"\n",
        b"\r\n\r\n",
        b"  \t",
        b"\xEF\xBB\xBF",
        b"\xEF\xBB\xBF\n",
    ] {
        assert_eq!(check_every_split(&default_config(), input), [], "{input:?}");
    }
}

#[test]
fn leading_whitespace_is_kept_in_raw() {
    let parsed = check_every_split(&default_config(), b"  {\"id\":1} \t\n");
    assert_eq!(record(&parsed[0]).raw, b"  {\"id\":1} \t");
    assert_eq!(record(&parsed[0]).key, "1");
}

#[test]
fn byte_order_mark_is_skipped() {
    let input = b"\xEF\xBB\xBF{\"id\":\"a\"}\n{\"id\":\"b\"}";
    let parsed = check_every_split(&default_config(), input);
    assert_eq!(parsed.len(), 2);
    assert_eq!(record(&parsed[0]).position, position(1, 1, 3));
    assert_eq!(record(&parsed[0]).raw, b"{\"id\":\"a\"}");
    assert_eq!(record(&parsed[0]).key, "a");
    assert_eq!(record(&parsed[1]).position, position(2, 2, 14));
}

#[test]
fn byte_order_mark_only_at_start() {
    let input = b"{\"id\":1}\n\xEF\xBB\xBF{\"id\":2}\n";
    let parsed = check_every_split(&default_config(), input);
    let malformed = malformed(&parsed[1]);
    assert_eq!(malformed.position, position(2, 2, 9));
    assert_eq!(malformed.raw, b"\xEF\xBB\xBF{\"id\":2}");
    assert!(
        malformed.message.starts_with("invalid JSON at column"),
        "{}",
        malformed.message
    );
}

#[test]
fn partial_byte_order_mark_is_malformed() {
    let parsed = check_every_split(&default_config(), b"\xEF\xBB{}\n{\"id\":1}");
    assert_eq!(parsed.len(), 2);
    let malformed = malformed(&parsed[0]);
    assert_eq!(malformed.position, position(1, 1, 0));
    assert_eq!(malformed.message, "invalid UTF-8 at byte 0 of the line");
    assert_eq!(record(&parsed[1]).position, position(2, 2, 5));
}

#[test]
fn multibyte_characters_split_anywhere() {
    let input =
        "{\"id\":\"é\"}\r\n{\"id\":\"😀\",\"a\":\"日本\"}\n{\"id\":\"x\u{2028}y\"}".as_bytes();
    let parsed = check_every_split(&default_config(), input);
    let keys: Vec<&str> = parsed
        .iter()
        .map(|item| record(item).key.as_str())
        .collect();
    assert_eq!(keys, ["é", "😀", "x\u{2028}y"]);
    assert_eq!(record(&parsed[1]).position, position(2, 2, 13));
}

#[test]
fn malformed_lines_do_not_shift_later_ones() {
    let input = b"{\"id\":1}\n{\"id\":2,}\nnot json\n{\"id\":\"open\n\n{\"id\":5}\n";
    let parsed = check_every_split(&default_config(), input);
    assert_eq!(parsed.len(), 5);

    assert_eq!(record(&parsed[0]).position, position(1, 1, 0));

    let trailing_comma = malformed(&parsed[1]);
    assert_eq!(trailing_comma.position, position(2, 2, 9));
    assert_eq!(trailing_comma.raw, b"{\"id\":2,}");
    assert_eq!(
        trailing_comma.message,
        "invalid JSON at column 9: key must be a string"
    );

    let not_json = malformed(&parsed[2]);
    assert_eq!(not_json.position, position(3, 3, 19));
    assert_eq!(not_json.message, "invalid JSON at column 2: expected ident");

    // An unterminated string ends at its line: JSON strings cannot
    // contain a raw line break.
    let open_string = malformed(&parsed[3]);
    assert_eq!(open_string.position, position(4, 4, 28));
    assert_eq!(open_string.raw, b"{\"id\":\"open");
    assert_eq!(
        open_string.message,
        "invalid JSON at column 11: EOF while parsing a string"
    );

    let last = record(&parsed[4]);
    assert_eq!(last.position, position(5, 6, 41));
    assert_eq!(last.key, "5");
}

#[test]
fn invalid_utf8_is_malformed() {
    let input = b"{\"id\":\"a\xC3\"}\n{\"id\":\"\xC3\xA9\"}\n";
    let parsed = check_every_split(&default_config(), input);
    let malformed = malformed(&parsed[0]);
    assert_eq!(malformed.position, position(1, 1, 0));
    assert_eq!(malformed.raw, b"{\"id\":\"a\xC3\"}");
    assert_eq!(malformed.message, "invalid UTF-8 at byte 8 of the line");
    assert_eq!(record(&parsed[1]).key, "é");
}

#[test]
fn any_json_value_is_a_record() {
    let input = b"1\n\"text\"\n[1,2]\nnull\ntrue\n";
    let parsed = check_every_split(&default_config(), input);
    assert_eq!(parsed.len(), 5);
    for item in &parsed {
        // The key field `id` is missing in all of them.
        assert_eq!(record(item).key, "");
    }
}

#[test]
fn line_at_limit_is_a_record() {
    // 1024 bytes of JSON: {"id":"xxx…"}.
    let value = "x".repeat(1024 - 9);
    let line = format!("{{\"id\":\"{value}\"}}");
    assert_eq!(line.len(), 1024);

    for terminator in ["\n", "\r\n"] {
        let input = format!("{line}{terminator}{{\"id\":2}}\n");
        let parsed = parse(&small_config(), input.as_bytes());
        assert_eq!(parsed.len(), 2, "{terminator:?}");
        assert_eq!(record(&parsed[0]).key, value, "{terminator:?}");

        let bytes: Vec<&[u8]> = input.as_bytes().chunks(1).collect();
        assert_eq!(
            parse_chunks(&small_config(), &bytes),
            parsed,
            "{terminator:?}"
        );
    }
}

#[test]
fn line_at_limit_at_end_of_file() {
    let value = "x".repeat(1024 - 9);
    let line = format!("{{\"id\":\"{value}\"}}");
    let bytes: Vec<&[u8]> = line.as_bytes().chunks(1).collect();
    let parsed = parse_chunks(&small_config(), &bytes);
    assert_eq!(parsed.len(), 1);
    assert_eq!(record(&parsed[0]).key, value);
}

#[test]
fn overlong_line_is_malformed_and_skipped() {
    let long = format!("{{\"id\":\"{}\"}}", "y".repeat(2000));
    let input = format!("{{\"id\":1}}\n{long}\r\n{{\"id\":3}}\n");
    let expected_message = "line 2 is longer than max_record_bytes (1024 bytes); raw contains \
                            its first 1024 bytes and the rest of the line was skipped";

    let whole = parse(&small_config(), input.as_bytes());
    assert_eq!(whole.len(), 3);
    let overlong = malformed(&whole[1]);
    assert_eq!(overlong.position, position(2, 2, 9));
    assert_eq!(overlong.raw, long.as_bytes()[..1024]);
    assert_eq!(overlong.message, expected_message);
    let last = record(&whole[2]);
    assert_eq!(last.position, position(3, 3, 9 + long.len() as u64 + 2));
    assert_eq!(last.key, "3");

    for size in [1, 2, 7, 100, 1023, 1024, 1025, 1026, 4096] {
        let chunks: Vec<&[u8]> = input.as_bytes().chunks(size).collect();
        assert_eq!(
            parse_chunks(&small_config(), &chunks),
            whole,
            "chunks of {size}"
        );
    }
}

#[test]
fn line_over_limit_by_one_byte() {
    let line = format!("{{\"id\":\"{}\"}}", "z".repeat(1025 - 9));
    assert_eq!(line.len(), 1025);
    for terminator in ["\n", "\r\n", ""] {
        let input = format!("{line}{terminator}");
        for size in [1, 1024, 1025, 2048] {
            let chunks: Vec<&[u8]> = input.as_bytes().chunks(size).collect();
            let parsed = parse_chunks(&small_config(), &chunks);
            assert_eq!(parsed.len(), 1, "{terminator:?}, chunks of {size}");
            let overlong = malformed(&parsed[0]);
            assert_eq!(overlong.raw.len(), 1024, "{terminator:?}, chunks of {size}");
            assert!(overlong.message.starts_with("line 1 is longer"));
        }
    }
}

#[test]
fn overlong_blank_line_is_malformed() {
    // Whether the line's end has arrived or not, a long line is reported,
    // so chunk sizes cannot change the result.
    let input = format!("{}\n{{\"id\":2}}", " ".repeat(3000));
    let whole = parse(&small_config(), input.as_bytes());
    assert_eq!(whole.len(), 2);
    assert_eq!(malformed(&whole[0]).position, position(1, 1, 0));
    assert_eq!(record(&whole[1]).position, position(2, 2, 3001));

    let chunks: Vec<&[u8]> = input.as_bytes().chunks(10).collect();
    assert_eq!(parse_chunks(&small_config(), &chunks), whole);
}

#[test]
fn overlong_last_line_without_newline() {
    let input = format!("{{\"id\":1}}\n{}", "9".repeat(5000));
    for size in [1, 64, 5000, 10_000] {
        let chunks: Vec<&[u8]> = input.as_bytes().chunks(size).collect();
        let parsed = parse_chunks(&small_config(), &chunks);
        assert_eq!(parsed.len(), 2, "chunks of {size}");
        let overlong = malformed(&parsed[1]);
        assert_eq!(overlong.position, position(2, 2, 9));
        assert_eq!(overlong.raw, "9".repeat(1024).as_bytes());
    }
}

#[test]
fn single_key_texts() {
    let config = config(&[("path", "/x"), ("key", "k")]);
    let input = concat!(
        "{\"k\":\"a b\"}\n",
        "{\"k\":1.10}\n",
        "{\"k\":1e400}\n",
        "{\"k\":false}\n",
        "{\"k\":null}\n",
        "{\"j\":1}\n",
        "{\"k\":{\"a\": [1, 2]}}\n",
        "{\"k\":[ ]}\n",
    );
    let parsed = parse(&config, input.as_bytes());
    let keys: Vec<&str> = parsed
        .iter()
        .map(|item| record(item).key.as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "a b",
            "1.10",
            "1e400",
            "false",
            "",
            "",
            "{\"a\": [1, 2]}",
            "[ ]"
        ]
    );
}

#[test]
fn composite_key_is_json_array() {
    let config = config(&[("path", "/x"), ("key", "net,/properties/code,/c/1")]);
    let input = concat!(
        "{\"net\":\"ci\",\"properties\":{\"code\":\"378\"},\"c\":[0,2.50]}\n",
        "{\"net\":\"a\\\"b\",\"properties\":{\"code\":7}}\n",
    );
    let parsed = parse(&config, input.as_bytes());
    assert_eq!(record(&parsed[0]).key, r#"["ci","378","2.50"]"#);
    assert_eq!(record(&parsed[1]).key, r#"["a\"b","7",""]"#);
}

#[test]
fn key_defaults_to_path_placeholders() {
    let two_placeholders = config(&[("path", "/m/{/Title}/{year}")]);
    let parsed = parse(&two_placeholders, b"{\"Title\":\"Up\",\"year\":2009}\n");
    assert_eq!(record(&parsed[0]).key, r#"["Up","2009"]"#);

    let no_placeholders = config(&[("path", "/all")]);
    let parsed = parse(&no_placeholders, b"{\"id\":1}\n");
    assert_eq!(record(&parsed[0]).key, "");
}

#[test]
fn pointer_key() {
    let config = config(&[("path", "/q/{/properties/code}")]);
    let parsed = parse(&config, b"{\"properties\":{\"code\":\"37868143\"}}\n");
    assert_eq!(record(&parsed[0]).key, "37868143");
}

#[test]
fn preamble_is_empty() {
    let mut parser = Parser::new(default_config());
    parser.feed(b"{\"id\":1}\n").unwrap();
    assert!(parser.preamble().is_empty());
}

#[test]
fn calls_after_finish_fail() {
    let mut parser = Parser::new(default_config());
    parser.feed(b"{\"id\":1}").unwrap();
    assert_eq!(parser.finish().unwrap().len(), 1);

    let expected =
        "the parser has already finished its file; create a new parser for the next file";
    assert_eq!(parser.feed(b"{}").unwrap_err(), expected);
    assert_eq!(parser.finish().unwrap_err(), expected);
}

#[test]
fn parser_maps_its_records() {
    let mut parser = Parser::new(default_config());
    let parsed = parser.feed(b"{\"id\":\"a\"}\n").unwrap();
    let request = parser.map_record(&record(&parsed[0]).raw).unwrap();
    assert_eq!(request.path, "/items/a");
    let read_back = parser.read_back(&record(&parsed[0]).raw).unwrap().unwrap();
    assert_eq!(read_back.request.path, "/items/a");
}

#[test]
fn buffer_is_compacted_between_chunks() {
    let mut parser = Parser::new(default_config());
    let mut offset = 0;
    for index in 0..100 {
        let line = format!("{{\"id\":{index}}}\n");
        offset += line.len() as u64;
        let parsed = parser.feed(line.as_bytes()).unwrap();
        assert_eq!(parsed.len(), 1);
        assert!(parser.buf.is_empty(), "after line {index}");
    }
    parser.feed(b"{\"id\":").unwrap();
    assert_eq!(parser.buf, b"{\"id\":");
    assert_eq!(parser.buf_offset, offset);
}
