use super::*;
use crate::RECORD_SEPARATOR;

fn config(pairs: &[(&str, &str)]) -> Arc<Config> {
    Arc::new(Config::from_pairs(pairs).unwrap())
}

fn default_config() -> Arc<Config> {
    config(&[("path", "/items/{id}")])
}

/// Feeds `chunks` to a new parser, then finishes it.
fn parse_chunks(config: &Arc<Config>, chunks: &[&[u8]]) -> Result<Vec<Parsed>, String> {
    let mut parser = Parser::new(config.clone());
    let mut out = Vec::new();
    for chunk in chunks {
        out.extend(parser.feed(chunk)?);
    }
    out.extend(parser.finish()?);
    Ok(out)
}

fn parse(config: &Arc<Config>, input: &[u8]) -> Vec<Parsed> {
    parse_chunks(config, &[input]).unwrap()
}

/// Parses `input` in full and returns the parser, to map its records.
fn parser_for(config: &Arc<Config>, input: &[u8]) -> (Parser, Vec<Parsed>) {
    let mut parser = Parser::new(config.clone());
    let mut out = parser.feed(input).unwrap();
    out.extend(parser.finish().unwrap());
    (parser, out)
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

/// Maps `raw` and returns the body's values in header order.
fn values(parser: &mut Parser, raw: &[u8]) -> Vec<serde_json::Value> {
    let request = parser.map_record(raw).unwrap();
    let body: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&request.body).unwrap();
    let columns = parser.columns().unwrap().to_vec();
    assert_eq!(
        body.len(),
        columns.len(),
        "{}",
        String::from_utf8_lossy(&request.body)
    );
    columns.iter().map(|name| body[name].clone()).collect()
}

/// Maps every well-formed record of `input`, returning a summary that two
/// parses must agree on.
fn mapped(config: &Arc<Config>, input: &[u8]) -> Vec<Result<Request, String>> {
    let (mut parser, out) = parser_for(config, input);
    out.iter()
        .filter_map(|item| match item {
            Parsed::Record(record) => Some(parser.map_record(&record.raw)),
            Parsed::Malformed(_) => None,
        })
        .collect()
}

/// Inputs with quoted newlines, CRLF, a byte order mark, multi-byte
/// characters, doubled quotes, blank lines and malformed rows.
const TRICKY: &[&[u8]] = &[
    b"id,text\r\n1,\"line one\r\nline two\"\r\n2,plain\r\n",
    b"id,text\n1,\"a \"\"quoted\"\" word\"\n2,\"\"\"\"\n3,\"\"\n",
    "\u{FEFF}id,text\n1,caf\u{e9}\n2,\"\u{65e5}\u{672c},\u{1F600}\"\n".as_bytes(),
    "id,text\n\n\r\n1,\u{e9}\u{e9}\n\n2,x\r\n\r\n".as_bytes(),
    b"id,text\n1,\"a\"b\n2,\xC3\n3,too,many\n4,\"multi\nline\"\n5,last",
    b"id,text\n1,ok\n2,\"open\n3,ok\n4,ok",
    b"id,text\n1,\"stray\n2,fine\n3,\"q\",z\n4,ok\n",
    b"id,text\r\n1,\"ends\"\r\r\n2,cr\ras data\r\n3,end\r",
];

#[test]
fn parses_simple_file() {
    let input = b"id,name\n1,Ann\n2,Bob\n";
    let out = parse(&default_config(), input);
    assert_eq!(out.len(), 2);

    let first = record(&out[0]);
    assert_eq!(first.position, position(1, 2, 8));
    assert_eq!(first.key, "1");
    assert_eq!(first.raw, b"1,Ann");

    let second = record(&out[1]);
    assert_eq!(second.position, position(2, 3, 14));
    assert_eq!(second.raw, b"2,Bob");
}

#[test]
fn last_record_without_newline() {
    let out = parse(&default_config(), b"id,name\n1,Ann\n2,Bob");
    assert_eq!(out.len(), 2);
    assert_eq!(record(&out[1]).raw, b"2,Bob");
    assert_eq!(record(&out[1]).position, position(2, 3, 14));
}

#[test]
fn crlf_and_mixed_terminators() {
    let out = parse(&default_config(), b"id,name\r\n1,Ann\n2,Bob\r\n3,Cy");
    let raws: Vec<&[u8]> = out.iter().map(Parsed::raw).collect();
    assert_eq!(raws, [&b"1,Ann"[..], b"2,Bob", b"3,Cy"]);
    assert_eq!(out[1].position(), position(2, 3, 15));
    assert_eq!(out[2].position(), position(3, 4, 22));
}

#[test]
fn bom_skipped_but_counted() {
    let config = default_config();
    let (parser, out) = parser_for(&config, b"\xEF\xBB\xBFid,name\n1,Ann\n");
    assert_eq!(parser.columns().unwrap(), ["id", "name"]);
    assert_eq!(parser.preamble(), b"id,name\n");
    assert_eq!(record(&out[0]).position, position(1, 2, 11));
}

#[test]
fn bom_only_at_start() {
    let config = config(&[("path", "/x")]);
    let (parser, out) = parser_for(&config, b"id\n\xEF\xBB\xBF1\n");
    assert_eq!(parser.columns().unwrap(), ["id"]);
    assert_eq!(record(&out[0]).raw, b"\xEF\xBB\xBF1");
}

#[test]
fn quoted_fields_keep_delimiters_and_newlines() {
    let config = default_config();
    let input = b"id,text\n1,\"a,b\"\n2,\"say \"\"hi\"\"\"\n3,\"x\r\ny\nz\"\n4,\"\"\n";
    let (mut parser, out) = parser_for(&config, input);
    assert_eq!(out.len(), 4);
    assert_eq!(values(&mut parser, out[0].raw())[1], "a,b");
    assert_eq!(values(&mut parser, out[1].raw())[1], "say \"hi\"");
    assert_eq!(values(&mut parser, out[2].raw())[1], "x\r\ny\nz");
    assert_eq!(values(&mut parser, out[3].raw())[1], "");
    assert_eq!(out[2].raw(), b"3,\"x\r\ny\nz\"");
    assert_eq!(out[2].position(), position(3, 4, 31));
    assert_eq!(out[3].position(), position(4, 7, 42));
}

#[test]
fn unquoted_quote_is_literal() {
    let config = default_config();
    let (mut parser, out) = parser_for(&config, b"id,size\n1,12\" pipe\n2,a\"b\"\n");
    assert_eq!(values(&mut parser, out[0].raw())[1], "12\" pipe");
    assert_eq!(values(&mut parser, out[1].raw())[1], "a\"b\"");
}

#[test]
fn blank_lines_skipped_but_counted() {
    let input = b"\n\r\nid,name\n\n1,Ann\r\n\r\n\n2,Bob\n\n";
    let (parser, out) = parser_for(&default_config(), input);
    assert_eq!(parser.columns().unwrap(), ["id", "name"]);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].position(), position(1, 5, 12));
    assert_eq!(out[1].position(), position(2, 8, 22));
}

#[test]
fn empty_and_header_only_files() {
    let config = default_config();
    for input in [&b""[..], b"\n\n", b"\r\n", b"\xEF\xBB\xBF", b"\xEF\xBB"] {
        let out = parse_chunks(&config, &[input]);
        // A lone partial byte order mark is a header with invalid UTF-8.
        if input == b"\xEF\xBB" {
            assert!(out.unwrap_err().contains("invalid UTF-8 in the header row"));
            continue;
        }
        assert_eq!(out, Ok(Vec::new()), "{input:?}");
    }

    for input in [&b"id,name"[..], b"id,name\n", b"id,name\r\n\r\n"] {
        let (parser, out) = parser_for(&config, input);
        assert!(out.is_empty(), "{input:?}");
        assert_eq!(parser.preamble(), b"id,name\n");
    }
}

#[test]
fn preamble_empty_before_header() {
    let mut parser = Parser::new(default_config());
    assert!(parser.preamble().is_empty());
    assert!(parser.feed(b"id,na").unwrap().is_empty());
    assert!(parser.preamble().is_empty());
    assert!(parser.feed(b"me\n").unwrap().is_empty());
    assert_eq!(parser.preamble(), b"id,name\n");
}

#[test]
fn wrong_field_count_is_malformed() {
    let input = b"a,b,c\n1,2,3\n1,2\n1,2,3,4\n7,8,9\n";
    let out = parse(&config(&[("path", "/{a}")]), input);
    assert_eq!(out.len(), 4);
    assert_eq!(malformed(&out[1]).message, "expected 3 fields, found 2");
    assert_eq!(malformed(&out[1]).raw, b"1,2");
    assert_eq!(malformed(&out[1]).position, position(2, 3, 12));
    assert_eq!(malformed(&out[2]).message, "expected 3 fields, found 4");
    assert_eq!(record(&out[3]).raw, b"7,8,9");
    assert_eq!(record(&out[3]).position, position(4, 5, 24));
}

#[test]
fn invalid_utf8_names_field() {
    let out = parse(
        &default_config(),
        b"id,city,zip\n1,Z\xFCrich,8000\n2,ok,1\n",
    );
    let bad = malformed(&out[0]);
    assert_eq!(
        bad.message,
        "invalid UTF-8 in field 2 (\"city\") at byte 3 of the record"
    );
    assert_eq!(bad.raw, b"1,Z\xFCrich,8000");
    assert_eq!(record(&out[1]).raw, b"2,ok,1");
}

#[test]
fn byte_after_closing_quote_is_malformed() {
    let input = b"id,name\n1,\"Big\" Joe\n2,\"ok\"\n3,\"a\"\"b\"x\n4,fine\n";
    let out = parse(&default_config(), input);
    assert_eq!(out.len(), 4);
    let first = malformed(&out[0]);
    assert_eq!(
        first.message,
        "unexpected ' ' after the closing quote of field 2 (\"name\"); quote the whole field \
         and double any quotes inside it"
    );
    assert_eq!(first.raw, b"1,\"Big\" Joe");
    assert_eq!(record(&out[1]).raw, b"2,\"ok\"");
    assert!(malformed(&out[2])
        .message
        .starts_with("unexpected 'x' after"));
    assert_eq!(record(&out[3]).position, position(4, 5, 37));
}

#[test]
fn malformed_rows_do_not_shift_later_rows() {
    let mut input = b"id,name\n".to_vec();
    let mut expected_good = Vec::new();
    for n in 1..=20u32 {
        let line: Vec<u8> = match n {
            3 => b"3,\"bad\"x\n".to_vec(),
            7 => b"7,too,many\n".to_vec(),
            11 => b"11,\xFF\n".to_vec(),
            13 => b"13,\"unterminated\n".to_vec(),
            _ => {
                expected_good.push(n);
                format!("{n},name{n}\n").into_bytes()
            }
        };
        input.extend_from_slice(&line);
    }

    let config = default_config();
    let (mut parser, out) = parser_for(&config, &input);
    assert_eq!(out.len(), 20);
    for (index, item) in out.iter().enumerate() {
        let n = index as u64 + 1;
        assert_eq!(item.position().record_number, n);
        assert_eq!(item.position().line, n + 1);
        let offset = item.position().offset as usize;
        assert_eq!(&input[offset..offset + item.raw().len()], item.raw());
    }
    for n in [3, 7, 11, 13] {
        malformed(&out[n - 1]);
    }
    for n in expected_good {
        let item = record(&out[n as usize - 1]);
        assert_eq!(item.key, n.to_string());
        let row = values(&mut parser, &item.raw);
        assert_eq!(row, [n.to_string(), format!("name{n}")]);
    }
}

#[test]
fn unterminated_quote_at_eof_recovers() {
    let input = b"id,name\n1,a\n2,\"oops\n3,c\r\n4,d";
    let out = parse(&default_config(), input);
    assert_eq!(out.len(), 4);
    let bad = malformed(&out[1]);
    assert_eq!(bad.message, "unterminated quoted field starting at line 3");
    assert_eq!(bad.raw, b"2,\"oops");
    assert_eq!(bad.position, position(2, 3, 12));
    assert_eq!(record(&out[2]).raw, b"3,c");
    assert_eq!(record(&out[2]).position, position(3, 4, 20));
    assert_eq!(record(&out[3]).raw, b"4,d");
    assert_eq!(record(&out[3]).position, position(4, 5, 25));
}

#[test]
fn unterminated_quote_on_last_line() {
    let out = parse(&default_config(), b"id,name\n1,\"never closed\r");
    assert_eq!(out.len(), 1);
    let bad = malformed(&out[0]);
    assert_eq!(bad.raw, b"1,\"never closed");
    assert_eq!(bad.message, "unterminated quoted field starting at line 2");
}

#[test]
fn stray_quote_recovers_at_next_line() {
    let input = b"id,name\n1,\"stray\n2,fine\n3,\"q\",z\n4,ok\n";
    let out = parse(&default_config(), input);
    let raws: Vec<&[u8]> = out.iter().map(Parsed::raw).collect();
    assert_eq!(raws, [&b"1,\"stray"[..], b"2,fine", b"3,\"q\",z", b"4,ok"]);
    assert_eq!(
        malformed(&out[0]).message,
        "unterminated quoted field starting at line 2: the quote on line 4 is followed by \
         'q', not by a delimiter or line end"
    );
    record(&out[1]);
    assert_eq!(malformed(&out[2]).message, "expected 2 fields, found 3");
    assert_eq!(record(&out[3]).position, position(4, 5, 32));
}

#[test]
fn max_record_bytes_recovers_at_next_line() {
    let config = config(&[("path", "/items/{id}"), ("max_record_bytes", "1024")]);
    let mut input = b"id,name\n1,\"stray quote\n".to_vec();
    for n in 2..=200 {
        input.extend_from_slice(format!("{n},name{n}\n").as_bytes());
    }

    for chunk_size in [1, 7, 64, 1000, 5000, input.len()] {
        let mut parser = Parser::new(config.clone());
        let mut out = Vec::new();
        for chunk in input.chunks(chunk_size) {
            out.extend(parser.feed(chunk).unwrap());
            assert!(
                parser.buf.len() <= 1024 + chunk_size,
                "buffer {}",
                parser.buf.len()
            );
        }
        out.extend(parser.finish().unwrap());

        assert_eq!(out.len(), 200, "chunk size {chunk_size}");
        let bad = malformed(&out[0]);
        assert_eq!(bad.raw, b"1,\"stray quote");
        assert_eq!(
            bad.message,
            "unterminated quoted field starting at line 2: no closing quote within \
             max_record_bytes (1024 bytes)"
        );
        for (index, item) in out.iter().enumerate().skip(1) {
            let n = index + 1;
            assert_eq!(record(item).raw, format!("{n},name{n}").as_bytes());
            assert_eq!(item.position().line, n as u64 + 1);
        }
    }
}

#[test]
fn long_record_within_limit_is_kept() {
    let config = config(&[("path", "/items/{id}"), ("max_record_bytes", "1024")]);
    // 1 + 1 + 1021 bytes + LF = exactly 1024 bytes with the terminator.
    let long = "x".repeat(1021);
    let input = format!("id,name\n1,{long}\n2,{long}y\n3,z\n");
    let out = parse(&config, input.as_bytes());
    assert_eq!(out.len(), 3);
    assert_eq!(record(&out[0]).raw.len(), 1023);
    assert!(malformed(&out[1])
        .message
        .starts_with("line 3 is longer than max_record_bytes"));
    assert_eq!(record(&out[2]).raw, b"3,z");
}

#[test]
fn overlong_line_is_truncated_and_skipped() {
    let config = config(&[("path", "/items/{id}"), ("max_record_bytes", "1024")]);
    let long = "y".repeat(5000);
    let input = format!("id,name\n1,{long}\n2,ok\n");

    for chunk_size in [3, 100, 4096, input.len()] {
        let mut parser = Parser::new(config.clone());
        let mut out = Vec::new();
        for chunk in input.as_bytes().chunks(chunk_size) {
            out.extend(parser.feed(chunk).unwrap());
            assert!(parser.buf.len() <= 1024 + chunk_size);
        }
        out.extend(parser.finish().unwrap());

        assert_eq!(out.len(), 2);
        let bad = malformed(&out[0]);
        assert_eq!(bad.raw, input.as_bytes()[8..8 + 1024]);
        assert_eq!(
            bad.message,
            "line 2 is longer than max_record_bytes (1024 bytes); raw holds its first 1024 \
             bytes and the rest of the line was skipped"
        );
        assert_eq!(record(&out[1]).position, position(2, 3, 5011));
    }
}

/// Configuration pairs, file contents and the expected error.
type HeaderCase<'a> = (&'a [(&'a str, &'a str)], &'a [u8], &'a str);

#[test]
fn header_errors_are_file_level() {
    let cases: &[HeaderCase] = &[
        (
            &[("path", "/x")],
            b"id,name,id\n1,2,3\n",
            "duplicate column \"id\" in the header row (columns 1 and 3); rename one of them",
        ),
        (
            &[("path", "/x/{iaat}")],
            b"iata,name,city\nA,B,C\n",
            "path template column \"iaat\" is not in the header row; the header has iata, \
             name, city",
        ),
        (
            &[("path", "/x/{iata}"), ("key", "iata,ctiy")],
            b"iata,name,city\n",
            "key column \"ctiy\" is not in the header row; the header has iata, name, city",
        ),
        (
            &[("path", "/x")],
            b"id,\"name\nrest",
            "invalid header row: unterminated quoted field starting at line 1",
        ),
        (
            &[("path", "/x")],
            b"\xFF\n",
            "invalid UTF-8 in the header row at byte 0 of the row; save the file as UTF-8",
        ),
    ];
    for (pairs, input, expected) in cases {
        let result = parse_chunks(&config(pairs), &[input]);
        assert_eq!(result.as_ref().unwrap_err(), expected);
    }
}

#[test]
fn header_error_is_sticky() {
    let mut parser = Parser::new(config(&[("path", "/x/{missing}")]));
    let error = parser.feed(b"id,name\n1,a\n").unwrap_err();
    assert!(error.contains("\"missing\""), "{error}");
    assert_eq!(parser.feed(b"2,b\n").unwrap_err(), error);
    assert_eq!(parser.finish().unwrap_err(), error);
}

#[test]
fn header_longer_than_limit_fails() {
    let config = config(&[("path", "/x"), ("max_record_bytes", "1024")]);
    let input = format!("{}\n1\n", "h".repeat(2000));
    let error = parse_chunks(&config, &[input.as_bytes()]).unwrap_err();
    assert_eq!(
        error,
        "the header row starting at line 1 is longer than max_record_bytes (1024 bytes); \
         raise max_record_bytes or check the file's quoting"
    );
}

#[test]
fn feed_after_finish_fails() {
    let mut parser = Parser::new(default_config());
    parser.feed(b"id\n").unwrap();
    parser.finish().unwrap();
    let error = parser.feed(b"1\n").unwrap_err();
    assert!(error.contains("already finished"), "{error}");
}

#[test]
fn every_split_matches_single_chunk() {
    let config = default_config();
    for input in TRICKY {
        let whole = parse(&config, input);
        assert!(!whole.is_empty(), "{:?}", String::from_utf8_lossy(input));

        for at in 0..=input.len() {
            let (head, tail) = input.split_at(at);
            let split = parse_chunks(&config, &[head, tail]).unwrap();
            assert_eq!(
                split,
                whole,
                "split at {at} of {:?}",
                String::from_utf8_lossy(input)
            );
        }

        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(parse_chunks(&config, &bytes).unwrap(), whole);

        // Empty chunks between bytes change nothing either.
        let mut with_empty: Vec<&[u8]> = Vec::new();
        for byte in input.chunks(1) {
            with_empty.push(byte);
            with_empty.push(b"");
        }
        assert_eq!(parse_chunks(&config, &with_empty).unwrap(), whole);
    }
}

#[test]
fn every_three_way_split_matches() {
    let config = default_config();
    for input in &TRICKY[..4] {
        let whole = parse(&config, input);
        for first in 0..=input.len() {
            for second in first..=input.len() {
                let chunks = [&input[..first], &input[first..second], &input[second..]];
                assert_eq!(
                    parse_chunks(&config, &chunks).unwrap(),
                    whole,
                    "{first} {second}"
                );
            }
        }
    }
}

#[test]
fn tricky_inputs_parse_as_expected() {
    let config = default_config();

    let (mut parser, out) = parser_for(&config, TRICKY[0]);
    assert_eq!(out.len(), 2);
    assert_eq!(values(&mut parser, out[0].raw())[1], "line one\r\nline two");
    assert_eq!(out[1].position(), position(2, 4, 33));

    let (mut parser, out) = parser_for(&config, TRICKY[2]);
    assert_eq!(out[0].position(), position(1, 2, 11));
    assert_eq!(values(&mut parser, out[0].raw())[1], "caf\u{e9}");
    assert_eq!(
        values(&mut parser, out[1].raw())[1],
        "\u{65e5}\u{672c},\u{1F600}"
    );

    let out = parse(&config, TRICKY[4]);
    let kinds: Vec<bool> = out
        .iter()
        .map(|item| matches!(item, Parsed::Record(_)))
        .collect();
    assert_eq!(kinds, [false, false, false, true, true]);
    assert_eq!(out[4].position(), position(5, 7, 45));

    let (mut parser, out) = parser_for(&config, TRICKY[7]);
    assert_eq!(out.len(), 3);
    assert_eq!(values(&mut parser, out[0].raw())[1], "ends");
    assert_eq!(values(&mut parser, out[1].raw())[1], "cr\ras data");
    assert_eq!(out[2].raw(), b"3,end");
}

#[test]
fn preamble_round_trip() {
    let config = config(&[("path", "/items/{id}"), ("null", "NA")]);
    for input in TRICKY {
        let (mut parser, out) = parser_for(&config, input);
        let mut rewritten = parser.preamble();
        for item in &out {
            rewritten.extend_from_slice(item.raw());
            rewritten.extend_from_slice(RECORD_SEPARATOR);
        }

        let (mut reparser, again) = parser_for(&config, &rewritten);
        assert_eq!(reparser.columns(), parser.columns());
        assert_eq!(
            again.len(),
            out.len(),
            "{:?}",
            String::from_utf8_lossy(&rewritten)
        );
        for (before, after) in out.iter().zip(&again) {
            assert_eq!(before.raw(), after.raw());
            match (before, after) {
                (Parsed::Record(before), Parsed::Record(after)) => {
                    assert_eq!(before.key, after.key);
                    assert_eq!(
                        parser.map_record(&before.raw),
                        reparser.map_record(&after.raw)
                    );
                }
                (Parsed::Malformed(before), Parsed::Malformed(after)) => {
                    // Line numbers in messages may move, the kind may not.
                    let kind = |m: &str| m.split(" line ").next().unwrap_or("").to_owned();
                    assert_eq!(kind(&before.message), kind(&after.message));
                }
                (before, after) => panic!("{before:?} became {after:?}"),
            }
        }
    }
}

#[test]
fn maps_to_json_request() {
    let config = config(&[("path", "/airports/{iata}"), ("method", "patch")]);
    let input = b"iata,name,city\n00M,\"Thigpen \"\"Field\"\"\",\"Bay\nSprings\"\n";
    let (mut parser, out) = parser_for(&config, input);
    let request = parser.map_record(out[0].raw()).unwrap();
    assert_eq!(request.method, "PATCH");
    assert_eq!(request.path, "/airports/00M");
    assert_eq!(
        request.headers,
        [("content-type".to_owned(), "application/json".to_owned())]
    );
    assert_eq!(
        String::from_utf8(request.body).unwrap(),
        r#"{"iata":"00M","name":"Thigpen \"Field\"","city":"Bay\nSprings"}"#
    );
}

#[test]
fn leading_zeros_kept() {
    let config = config(&[("path", "/zips/{zip_code}")]);
    let (mut parser, out) = parser_for(&config, b"zip_code,lat\n00501,40.922326\n");
    let item = record(&out[0]);
    assert_eq!(item.key, "00501");
    let request = parser.map_record(&item.raw).unwrap();
    assert_eq!(request.path, "/zips/00501");
    assert_eq!(request.body, br#"{"zip_code":"00501","lat":"40.922326"}"#);
}

#[test]
fn null_token_becomes_json_null() {
    let config = config(&[("path", "/planes/{tailnum}"), ("null", "NA")]);
    let input = b"tailnum,year,speed\nN10156,2004,NA\nN102UW,NA,\"NA\"\nN1,NAN,\n";
    let (mut parser, out) = parser_for(&config, input);
    let bodies: Vec<String> = out
        .iter()
        .map(|item| String::from_utf8(parser.map_record(item.raw()).unwrap().body).unwrap())
        .collect();
    assert_eq!(
        bodies[0],
        r#"{"tailnum":"N10156","year":"2004","speed":null}"#
    );
    assert_eq!(
        bodies[1],
        r#"{"tailnum":"N102UW","year":null,"speed":null}"#
    );
    assert_eq!(bodies[2], r#"{"tailnum":"N1","year":"NAN","speed":""}"#);

    let plain = default_config();
    let (mut parser, out) = parser_for(&plain, b"id,speed\n1,NA\n");
    assert_eq!(
        parser.map_record(out[0].raw()).unwrap().body,
        br#"{"id":"1","speed":"NA"}"#
    );
}

#[test]
fn null_or_empty_placeholder_fails_mapping() {
    let config = config(&[("path", "/z/{zip}"), ("null", "NA"), ("key", "")]);
    let (mut parser, out) = parser_for(&config, b"zip,city\n,Boston\nNA,Reno\n02134,x\n");
    assert_eq!(out.len(), 3);
    assert_eq!(
        parser.map_record(out[0].raw()).unwrap_err(),
        "column \"zip\" is empty but the path template needs it"
    );
    assert_eq!(
        parser.map_record(out[1].raw()).unwrap_err(),
        "column \"zip\" is null (\"NA\") but the path template needs it"
    );
    assert_eq!(parser.map_record(out[2].raw()).unwrap().path, "/z/02134");
}

#[test]
fn composite_and_single_keys() {
    let input = b"carrier,flight,day\nAA,1141,1\n\"U\"\"A\",\"1,5\",2\n";

    let config1 = config(&[("path", "/f/{carrier}/{flight}")]);
    let out = parse(&config1, input);
    assert_eq!(record(&out[0]).key, r#"["AA","1141"]"#);
    assert_eq!(record(&out[1]).key, r#"["U\"A","1,5"]"#);

    let config2 = config(&[("path", "/f/{carrier}/{flight}"), ("key", "day")]);
    assert_eq!(record(&parse(&config2, input)[1]).key, "2");

    let config3 = config(&[("path", "/f/{carrier}"), ("key", "")]);
    assert_eq!(record(&parse(&config3, input)[0]).key, "");

    let config4 = config(&[("path", "/all")]);
    assert_eq!(record(&parse(&config4, input)[0]).key, "");

    // Parts that would collide when joined with a plain separator stay apart.
    let config5 = config(&[("path", "/x"), ("key", "a,b")]);
    let out = parse(&config5, b"a,b\n\"x,y\",z\nx,\"y,z\"\n");
    assert_ne!(record(&out[0]).key, record(&out[1]).key);
}

#[test]
fn path_values_are_percent_encoded() {
    let config = config(&[("path", "/cities/{state}/{city}?name={name}&v=1")]);
    let input = "state,city,name\nNY,New York/Manhattan,A&B=c?d#e\nZH,Z\u{fc}rich,~a-b_c.d\n";
    let (mut parser, out) = parser_for(&config, input.as_bytes());
    assert_eq!(
        parser.map_record(out[0].raw()).unwrap().path,
        "/cities/NY/New%20York%2FManhattan?name=A%26B%3Dc%3Fd%23e&v=1"
    );
    assert_eq!(
        parser.map_record(out[1].raw()).unwrap().path,
        "/cities/ZH/Z%C3%BCrich?name=~a-b_c.d&v=1"
    );
}

#[test]
fn map_rejects_bad_raw() {
    let config = config(&[("path", "/x/{a}")]);
    let (mut parser, _) = parser_for(&config, b"a,b,c\n");
    let cases: &[(&[u8], &str)] = &[
        (b"1,2", "expected 3 fields, found 2"),
        (b"", "the record is empty"),
        (
            b"1,2,3\n4,5,6",
            "the record holds a line break outside quotes",
        ),
        (b"1,\"2,3", "the record has an unterminated quoted field"),
        (
            b"1,\"2\"x,3",
            "unexpected 'x' after the closing quote of field 2 (\"b\")",
        ),
        (
            b"1,\xC3(,3",
            "invalid UTF-8 in field 2 (\"b\") at byte 2 of the record",
        ),
    ];
    for (raw, expected) in cases {
        let error = parser.map_record(raw).unwrap_err();
        assert!(error.starts_with(expected), "{raw:?}: {error}");
    }
    assert_eq!(parser.map_record(b"1,2,3").unwrap().path, "/x/1");
}

#[test]
fn map_before_header_fails() {
    let mut parser = Parser::new(default_config());
    let error = parser.map_record(b"1,Ann").unwrap_err();
    assert!(
        error.starts_with("no header row has been parsed yet"),
        "{error}"
    );
}

#[test]
fn map_between_feeds_keeps_state() {
    let config = default_config();
    let mut parser = Parser::new(config);
    let out = parser.feed(b"id,text\n1,a\n2,\"multi").unwrap();
    assert_eq!(out.len(), 1);
    parser.map_record(out[0].raw()).unwrap();
    let rest = parser.feed(b"\nline\"\n").unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].raw(), b"2,\"multi\nline\"");
}

#[test]
fn other_delimiters() {
    let config1 = config(&[("path", "/x/{id}"), ("delimiter", "tab")]);
    let (mut parser, out) = parser_for(&config1, b"id\tname\n1\ta,b\n2\t\"x\ty\"\n");
    assert_eq!(values(&mut parser, out[0].raw()), ["1", "a,b"]);
    assert_eq!(values(&mut parser, out[1].raw()), ["2", "x\ty"]);

    let config2 = config(&[("path", "/x/{id}"), ("delimiter", ";")]);
    let (mut parser, out) = parser_for(&config2, b"id;name\n1;a,b\n");
    assert_eq!(values(&mut parser, out[0].raw()), ["1", "a,b"]);
}

/// A small deterministic generator (64-bit LCG) for the random tests.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_inputs_agree_across_chunkings() {
    const ALPHABET: &[u8] = b"ab,,\"\"\n\r\xC3\xA9\xFF";
    let config = config(&[("path", "/x"), ("max_record_bytes", "1024")]);
    let mut rng = Lcg(7);

    for _ in 0..400 {
        let len = rng.below(3000);
        let mut input = b"h1,h2\n".to_vec();
        input.extend((0..len).map(|_| ALPHABET[rng.below(ALPHABET.len())]));

        let whole = parse(&config, &input);
        let mut chunks = Vec::new();
        let mut at = 0;
        while at < input.len() {
            let size = 1 + rng.below(50);
            let end = (at + size).min(input.len());
            chunks.push(&input[at..end]);
            at = end;
        }
        assert_eq!(parse_chunks(&config, &chunks).unwrap(), whole);

        let mut parser = Parser::new(config.clone());
        let _ = parser.feed(&input).unwrap();
        let mut previous_line = 0;
        for (index, item) in whole.iter().enumerate() {
            let position = item.position();
            assert_eq!(position.record_number, index as u64 + 1);
            let offset = position.offset as usize;
            assert_eq!(&input[offset..offset + item.raw().len()], item.raw());
            let lfs = input[..offset].iter().filter(|&&b| b == b'\n').count() as u64;
            assert_eq!(position.line, lfs + 1);
            assert!(position.line > previous_line);
            previous_line = position.line;
            if let Parsed::Record(record) = item {
                parser.map_record(&record.raw).unwrap();
            }
        }

        // Arbitrary slices are rejected or mapped, never a panic.
        for _ in 0..20 {
            let start = rng.below(input.len());
            let end = start + rng.below(input.len() - start + 1);
            let _ = parser.map_record(&input[start..end]);
        }
    }
}

#[test]
fn mapping_agrees_across_chunkings() {
    let config = default_config();
    for input in TRICKY {
        let whole = mapped(&config, input);
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        let mut parser = Parser::new(config.clone());
        let mut out = Vec::new();
        for chunk in bytes {
            out.extend(parser.feed(chunk).unwrap());
        }
        out.extend(parser.finish().unwrap());
        let bytewise: Vec<_> = out
            .iter()
            .filter_map(|item| match item {
                Parsed::Record(record) => Some(parser.map_record(&record.raw)),
                Parsed::Malformed(_) => None,
            })
            .collect();
        assert_eq!(bytewise, whole);
    }
}

/// Returns the configuration that loads airports into a PocketBase
/// collection.
fn pocketbase_config() -> Arc<Config> {
    config(&[
        ("path", "/api/collections/airports/records"),
        ("method", "POST"),
        ("key", "iata"),
        ("id_field", "id"),
        ("read_path", "/api/collections/airports/records/{id}"),
    ])
}

#[test]
fn id_field_adds_derived_id_first() {
    let (mut parser, out) = parser_for(&pocketbase_config(), b"iata,city\n00M,Bay Springs\n");
    let request = parser.map_record(out[0].raw()).unwrap();
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/api/collections/airports/records");
    // SHA-256("00M"), as Python's hashlib computes it.
    assert_eq!(
        String::from_utf8(request.body).unwrap(),
        r#"{"id":"0bb7683354fd22b","iata":"00M","city":"Bay Springs"}"#
    );
}

#[test]
fn derived_ids_follow_id_length() {
    let config = config(&[
        ("path", "/r"),
        ("key", "iata"),
        ("id_field", "id"),
        ("id_length", "8"),
    ]);
    let (mut parser, out) = parser_for(&config, b"iata\n00M\n00R\n");
    let ids: Vec<String> = out
        .iter()
        .map(|item| {
            let body: serde_json::Value =
                serde_json::from_slice(&parser.map_record(item.raw()).unwrap().body).unwrap();
            body["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids, ["0bb76833", "07edc722"]);
}

#[test]
fn ids_match_pocketbase_pattern() {
    let input = "iata,city\nZ\u{fc}R,x\n\"a,b\",y\n\"\"\"\",z\n1,w\n";
    let (mut parser, out) = parser_for(&pocketbase_config(), input.as_bytes());
    let mut ids = Vec::new();
    for item in &out {
        let request = parser.map_record(item.raw()).unwrap();
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        let id = body["id"].as_str().unwrap().to_owned();
        assert_eq!(id.len(), 15, "{id}");
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
            "{id}"
        );
        ids.push(id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), out.len());
}

#[test]
fn composite_key_id_hashes_json_key() {
    let config = config(&[
        ("path", "/f/{id}"),
        ("key", "carrier,flight"),
        ("id_field", "id"),
    ]);
    let (mut parser, out) = parser_for(&config, b"carrier,flight\nAA,1141\n");
    assert_eq!(record(&out[0]).key, r#"["AA","1141"]"#);
    let request = parser.map_record(out[0].raw()).unwrap();
    // SHA-256 of the key string ["AA","1141"], as Python's hashlib computes it.
    assert_eq!(request.path, "/f/245da05213a64d7");
    assert_eq!(
        request.body,
        br#"{"id":"245da05213a64d7","carrier":"AA","flight":"1141"}"#
    );
}

#[test]
fn empty_key_cannot_get_id() {
    let (mut parser, out) = parser_for(&pocketbase_config(), b"iata,city\n,Nowhere\n\"\",x\n");
    for item in &out {
        assert_eq!(
            parser.map_record(item.raw()).unwrap_err(),
            "key column \"iata\" is empty, so no id can be derived for id_field \"id\""
        );
        assert!(parser.read_back(item.raw()).is_err());
    }

    let config = config(&[("path", "/f"), ("key", "a,b"), ("id_field", "id")]);
    let (mut parser, out) = parser_for(&config, b"a,b\n,\n,2\n");
    assert_eq!(
        parser.map_record(out[0].raw()).unwrap_err(),
        "key columns \"a\", \"b\" are all empty, so no id can be derived for id_field \"id\""
    );
    parser.map_record(out[1].raw()).unwrap();
}

#[test]
fn column_named_like_id_field_fails_file() {
    let config = pocketbase_config();
    let error = parse_chunks(&config, &[b"iata,id,city\n00M,1,x\n"]).unwrap_err();
    assert!(
        error.starts_with("column 2 of the header row is named \"id\""),
        "{error}"
    );
}

#[test]
fn read_back_uses_read_path() {
    let (mut parser, out) = parser_for(&pocketbase_config(), b"iata,city\n00M,Bay Springs\n");
    let request = parser.map_record(out[0].raw()).unwrap();
    let read_back = parser.read_back(out[0].raw()).unwrap().unwrap();
    assert_eq!(read_back.request.method, "GET");
    assert_eq!(
        read_back.request.path,
        "/api/collections/airports/records/0bb7683354fd22b"
    );
    assert!(read_back.request.body.is_empty());
    assert_eq!(read_back.expected, request.body);
}

#[test]
fn read_path_values_are_encoded() {
    let config = config(&[
        ("path", "/z"),
        ("method", "POST"),
        ("read_path", "/z/{state}/{city}"),
        ("null", "NA"),
    ]);
    let input = b"state,city\nNY,New York\nNA,x\n";
    let (mut parser, out) = parser_for(&config, input);
    let read_back = parser.read_back(out[0].raw()).unwrap().unwrap();
    assert_eq!(read_back.request.path, "/z/NY/New%20York");
    assert_eq!(read_back.expected, br#"{"state":"NY","city":"New York"}"#);
    assert_eq!(
        parser.read_back(out[1].raw()).unwrap_err(),
        "column \"state\" is null (\"NA\") but the read_path template needs it"
    );
}

#[test]
fn read_back_defaults_to_put_path() {
    let config = config(&[("path", "/airports/{iata}")]);
    let (mut parser, out) = parser_for(&config, b"iata,city\n00M,Bay Springs\n");
    let read_back = parser.read_back(out[0].raw()).unwrap().unwrap();
    assert_eq!(read_back.request.method, "GET");
    assert_eq!(read_back.request.path, "/airports/00M");
    assert_eq!(
        read_back.expected,
        br#"{"iata":"00M","city":"Bay Springs"}"#
    );
}

#[test]
fn read_back_none_without_read_path() {
    for method in ["POST", "PATCH", "DELETE"] {
        let config = config(&[("path", "/airports/{iata}"), ("method", method)]);
        let (mut parser, out) = parser_for(&config, b"iata,city\n00M,x\n");
        assert_eq!(parser.read_back(out[0].raw()), Ok(None), "{method}");
    }
}

#[test]
fn read_back_rejects_bad_raw() {
    let (mut parser, _) = parser_for(&pocketbase_config(), b"iata,city\n");
    let error = parser.read_back(b"00M").unwrap_err();
    assert_eq!(error, "expected 2 fields, found 1");

    let mut fresh = Parser::new(pocketbase_config());
    let error = fresh.read_back(b"00M,x").unwrap_err();
    assert!(
        error.starts_with("no header row has been parsed yet"),
        "{error}"
    );
}

/// Maps the one record of `input`, a file with a single data row.
fn map_one(config: &Arc<Config>, input: &str) -> Result<Request, String> {
    let (mut parser, out) = parser_for(config, input.as_bytes());
    assert_eq!(out.len(), 1, "{input:?}");
    parser.map_record(record(&out[0]).raw.as_slice())
}

#[test]
fn dot_segment_values_fail_mapping() {
    let cases = [
        ("/r/{id}", "..", "/r/.."),
        ("/r/{id}", ".", "/r/."),
        ("/r/{id}/v", "..", "/r/../v"),
        ("/r/{id}/v", ".", "/r/./v"),
        ("/{id}", "..", "/.."),
        ("/r/{id}/", "..", "/r/../"),
        ("/r/{id}?x=1", "..", "/r/..?x=1"),
    ];
    for (path, value, built) in cases {
        let config = config(&[("path", path)]);
        let input = format!("id,name\n{value},evil\n");
        let error = map_one(&config, &input).unwrap_err();
        assert_eq!(
            error,
            format!(
                "column \"id\" has value {value:?} which cannot be a path segment in the path \
                 template, because URL normalisation would remove it and send the request to \
                 another path; change the value or move the placeholder into the query"
            ),
            "{path} would build {built}"
        );
    }
}

#[test]
fn dots_in_longer_segments_map() {
    let cases = [
        ("/r/{id}", "a..b", "/r/a..b"),
        ("/r/{id}", ".x", "/r/.x"),
        ("/r/{id}", "x.", "/r/x."),
        ("/r/{id}", "...", "/r/..."),
        ("/r/{id}", "%2e", "/r/%252e"),
        ("/r/{id}", "%2E%2E", "/r/%252E%252E"),
        ("/r/{id}", "../x", "/r/..%2Fx"),
        ("/r/x{id}", "..", "/r/x.."),
        ("/r/x{id}", ".", "/r/x."),
        ("/r/{id}x", ".", "/r/.x"),
        ("/r/.{id}", "..", "/r/..."),
        ("/r/%2{id}", "f", "/r/%2f"),
        ("/r?q={id}", "..", "/r?q=.."),
        ("/r?q={id}", ".", "/r?q=."),
        ("/r/v?q=/{id}", "..", "/r/v?q=/.."),
        ("/r/{name}?q={id}", "..", "/r/evil?q=.."),
    ];
    for (path, value, expected) in cases {
        let config = config(&[("path", path), ("key", "")]);
        let input = format!("id,name\n{value},evil\n");
        let request = map_one(&config, &input).unwrap_or_else(|e| panic!("{path} {value}: {e}"));
        assert_eq!(request.path, expected, "{path} {value}");
    }
}

#[test]
fn placeholder_completing_dot_segment_fails() {
    // A placeholder that is only part of a segment can still complete a dot
    // segment together with the literal text around it.
    let cases = [
        ("/r/.{id}", ".", ".."),
        ("/r/{id}.", ".", ".."),
        ("/r/%2e{id}", ".", "%2e."),
        ("/r/{id}%2E", ".", ".%2E"),
        ("/r/%2{id}", "e", "%2e"),
        ("/r/%2{id}", "E", "%2E"),
        ("/r/%2e%2{id}/v", "E", "%2e%2E"),
    ];
    for (path, value, segment) in cases {
        let config = config(&[("path", path), ("key", "")]);
        let input = format!("id,name\n{value},evil\n");
        let error = map_one(&config, &input).unwrap_err();
        assert_eq!(
            error,
            format!(
                "column \"id\" has value {value:?} which makes the path segment {segment:?} in \
                 the path template a dot segment, so URL normalisation would remove it and send \
                 the request to another path; change the value or the path template"
            ),
            "{path}"
        );
    }
}

#[test]
fn placeholders_sharing_dot_segment_fail() {
    let config1 = config(&[("path", "/r/{a}{b}/v"), ("key", "")]);
    let error = map_one(&config1, "a,b\n.,.\n").unwrap_err();
    assert_eq!(
        error,
        "columns \"a\", \"b\" have values \".\", \".\" which make the path segment \"..\" in \
         the path template a dot segment, so URL normalisation would remove it and send the \
         request to another path; change the values or the path template"
    );
    assert_eq!(map_one(&config1, "a,b\n.,x\n").unwrap().path, "/r/.x/v");

    // A column that appears twice in the segment is named once.
    let config2 = config(&[("path", "/r/{a}{a}"), ("key", "")]);
    let error = map_one(&config2, "a,b\n.,x\n").unwrap_err();
    assert!(
        error.starts_with("column \"a\" has value \".\" which makes the path segment \"..\""),
        "{error}"
    );
}

#[test]
fn dot_segment_fails_only_its_record() {
    let config = config(&[("path", "/r/{id}")]);
    let input = b"id,name\n1,a\n..,evil\n.,evil\n2,b\n";
    let (mut parser, out) = parser_for(&config, input);
    assert_eq!(out.len(), 4);
    let paths: Vec<Result<String, String>> = out
        .iter()
        .map(|item| parser.map_record(item.raw()).map(|request| request.path))
        .collect();
    assert_eq!(paths[0].as_deref(), Ok("/r/1"));
    assert!(paths[1].is_err(), "{:?}", paths[1]);
    assert!(paths[2].is_err(), "{:?}", paths[2]);
    assert_eq!(paths[3].as_deref(), Ok("/r/2"));
}

#[test]
fn read_back_rejects_dot_segments() {
    // With PUT and no read_path, read-back uses the record's own path.
    let config1 = config(&[("path", "/r/{id}")]);
    let (mut parser, out) = parser_for(&config1, b"id,name\n..,evil\n1,a\n");
    let error = parser.read_back(out[0].raw()).unwrap_err();
    assert!(
        error.starts_with(
            "column \"id\" has value \"..\" which cannot be a path segment in the path template"
        ),
        "{error}"
    );
    let read_back = parser.read_back(out[1].raw()).unwrap().unwrap();
    assert_eq!(read_back.request.path, "/r/1");

    let config2 = config(&[
        ("path", "/r"),
        ("method", "POST"),
        ("read_path", "/r/{city}/{id}"),
    ]);
    let (mut parser, out) = parser_for(&config2, b"id,city\n1,.\n1,..x\n");
    assert_eq!(parser.map_record(out[0].raw()).unwrap().path, "/r");
    let error = parser.read_back(out[0].raw()).unwrap_err();
    assert_eq!(
        error,
        "column \"city\" has value \".\" which cannot be a path segment in the read_path \
         template, because URL normalisation would remove it and send the request to another \
         path; change the value or move the placeholder into the query"
    );
    let read_back = parser.read_back(out[1].raw()).unwrap().unwrap();
    assert_eq!(read_back.request.path, "/r/..x/1");
}

/// Files whose line endings are CRs alone, with no LF.
const CR_ONLY_FILES: &[&[u8]] = &[
    b"id,name\r1,a\r2,b\r",
    b"id,name\r1,a\r2,b",
    b"id\r1\r2\r",
    b"\"id\",\"name\"\r\"1\",\"a\"\r",
    b"\xEF\xBB\xBFid,name\r1,a\r",
    b"\n\nid,name\r1,a\r",
    b"id,name\r\r1,a\r",
];

#[test]
fn cr_only_line_endings_fail_file() {
    let config = default_config();
    for input in CR_ONLY_FILES {
        for split in 0..=input.len() {
            let (first, second) = input.split_at(split);
            let error = parse_chunks(&config, &[first, second]).unwrap_err();
            assert_eq!(error, CR_IN_HEADER, "{input:?} split at {split}");
        }
        let bytewise: Vec<&[u8]> = input.chunks(1).collect();
        let error = parse_chunks(&config, &bytewise).unwrap_err();
        assert_eq!(error, CR_IN_HEADER, "{input:?} byte by byte");
    }
    assert_eq!(
        CR_IN_HEADER,
        "the header row contains a carriage return outside quotes, so the file seems to use \
         CR-only line endings, which are not supported; convert the file to LF or CRLF line \
         endings"
    );
}

#[test]
fn cr_only_error_comes_from_feed() {
    let mut parser = Parser::new(default_config());
    let error = parser.feed(b"id,name\r1,a\r2,").unwrap_err();
    assert_eq!(error, CR_IN_HEADER);
    assert_eq!(parser.feed(b"b\r").unwrap_err(), CR_IN_HEADER);
    assert_eq!(parser.finish().unwrap_err(), CR_IN_HEADER);
}

#[test]
fn long_cr_only_file_is_not_overflow() {
    let config = config(&[("path", "/x/{id}"), ("max_record_bytes", "1024")]);
    let mut input = b"id,name\r".to_vec();
    for i in 0..1000 {
        input.extend_from_slice(format!("{i},name {i}\r").as_bytes());
    }
    assert!(input.len() > 2 * 1024);
    let error = parse_chunks(&config, &[&input]).unwrap_err();
    assert_eq!(error, CR_IN_HEADER);
}

#[test]
fn cr_inside_header_name_fails_file() {
    let config = default_config();
    for input in [
        &b"id,na\rme\n1,2\n"[..],
        b"id\r,name\n1,2\n",
        b"\rid,name\n",
    ] {
        let error = parse_chunks(&config, &[input]).unwrap_err();
        assert_eq!(error, CR_IN_HEADER, "{input:?}");
    }
}

#[test]
fn quoted_line_break_in_header_fails_file() {
    let config = default_config();
    let cases: &[(&[u8], &str)] = &[
        (b"id,\"first\nname\"\n1,2\n", "column 2 (\"first\\nname\")"),
        (
            b"id,\"first\r\nname\"\r\n1,2\r\n",
            "column 2 (\"first\\r\\nname\")",
        ),
        (b"\"i\rd\",name\n1,2\n", "column 1 (\"i\\rd\")"),
    ];
    for (input, column) in cases {
        let error = parse_chunks(&config, &[input]).unwrap_err();
        assert_eq!(
            error,
            format!(
                "{column} of the header row contains a line break inside quotes, but a column \
                 name cannot contain one; remove it from the header row"
            ),
            "{input:?}"
        );
    }
}

#[test]
fn crlf_files_still_parse() {
    let config = default_config();
    let input = b"id,text\r\n1,\"a\r\nb\"\r\n2,\"c\rd\"\r\n3,e\rf\r\n4,\"g\nh\"\r\r\n5,i";
    let (mut parser, out) = parser_for(&config, input);
    assert_eq!(parser.columns().unwrap(), ["id", "text"]);
    assert_eq!(out.len(), 5);
    let texts: Vec<serde_json::Value> = out
        .iter()
        .map(|item| values(&mut parser, record(item).raw.as_slice())[1].clone())
        .collect();
    assert_eq!(texts, ["a\r\nb", "c\rd", "e\rf", "g\nh", "i"]);

    for header in [
        &b"id,text\r\n"[..],
        b"id,text\r\r\n",
        b"id,text\r",
        b"\"id\",\"text\"\r\n",
    ] {
        let (parser, out) = parser_for(&config, header);
        assert!(out.is_empty(), "{header:?}");
        assert_eq!(parser.columns().unwrap(), ["id", "text"], "{header:?}");
    }
}
