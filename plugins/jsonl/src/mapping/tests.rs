use super::*;

fn config(pairs: &[(&str, &str)]) -> Config {
    Config::from_pairs(pairs).unwrap()
}

fn map(pairs: &[(&str, &str)], line: &str) -> Result<Request, String> {
    map_record(line.as_bytes(), &config(pairs))
}

fn path(template: &str, line: &str) -> Result<String, String> {
    map(&[("path", template)], line).map(|request| request.path)
}

fn body(pairs: &[(&str, &str)], line: &str) -> String {
    let request = map(pairs, line).unwrap();
    String::from_utf8(request.body).unwrap()
}

#[test]
fn maps_field_placeholder() {
    let line = r#"{"type":"Feature","id":"ci37868143","properties":{"mag":2}}"#;
    let request = map(&[("path", "/quakes/{id}")], line).unwrap();
    assert_eq!(request.method, "PUT");
    assert_eq!(request.path, "/quakes/ci37868143");
    let content_type = ("content-type".to_owned(), "application/json".to_owned());
    assert_eq!(request.headers, vec![content_type]);
    assert_eq!(request.body, line.as_bytes());
}

#[test]
fn maps_pointer_placeholders() {
    let line = r#"{"Title":"The Land Girls","p":{"net":"ci","codes":["a/b",7]}}"#;
    assert_eq!(
        path("/movies/{/Title}", line).unwrap(),
        "/movies/The%20Land%20Girls"
    );
    assert_eq!(
        path("/q/{/p/net}/{/p/codes/0}?n={/p/codes/1}", line).unwrap(),
        "/q/ci/a%2Fb?n=7"
    );
}

#[test]
fn pointer_indexes_top_level_array() {
    assert_eq!(path("/x/{/1}", r#"["a","b"]"#).unwrap(), "/x/b");
}

#[test]
fn scalar_values_keep_json_text() {
    let line = r#"{"a":1.10,"b":1e400,"c":-0,"d":true,"e":false,"f":12345678901234567890123}"#;
    assert_eq!(
        path("/x/{a}/{b}/{c}/{d}/{e}/{f}", line).unwrap(),
        "/x/1.10/1e400/-0/true/false/12345678901234567890123"
    );
}

#[test]
fn strings_are_decoded_then_encoded() {
    let line = r#"{"id":"a/b c?d#e%f","u":"Z\u00fcrich","s":"\/x"}"#;
    assert_eq!(
        path("/x/{id}/{u}/{s}", line).unwrap(),
        "/x/a%2Fb%20c%3Fd%23e%25f/Z%C3%BCrich/%2Fx"
    );
}

#[test]
fn rejects_unusable_placeholder_values() {
    let cases = [
        (
            r#"{"id":null}"#,
            "field \"id\" is null but the path template needs it",
        ),
        (
            r#"{"x":1}"#,
            "field \"id\" is missing but the path template needs it",
        ),
        (
            r#"{"id":""}"#,
            "field \"id\" is an empty string but the path template needs a value",
        ),
        (
            r#"{"id":{"a":1}}"#,
            "field \"id\" is an object but the path template needs a string, number or \
             boolean; point the placeholder at a member inside it",
        ),
        (
            r#"{"id":[1]}"#,
            "field \"id\" is an array but the path template needs a string, number or \
             boolean; point the placeholder at a member inside it",
        ),
        (
            r#"[1]"#,
            "the record is an array, not an object, so it has no field \"id\" for the path \
             template; use a JSON pointer such as /0 for arrays",
        ),
        (
            r#""id""#,
            "the record is a string, not an object, so it has no field \"id\" for the path \
             template; use a JSON pointer such as /0 for arrays",
        ),
    ];
    for (line, expected) in cases {
        assert_eq!(path("/x/{id}", line).unwrap_err(), expected, "{line}");
    }
}

#[test]
fn rejects_missing_pointer_value() {
    let message = path("/x/{/p/code}", r#"{"p":{}}"#).unwrap_err();
    assert_eq!(
        message,
        "field \"/p/code\" is missing but the path template needs it"
    );
    let message = path("/x/{/p/code}", r#"{"p":{"code":null}}"#).unwrap_err();
    assert_eq!(
        message,
        "field \"/p/code\" is null but the path template needs it"
    );
}

#[test]
fn rejects_dot_segment_values() {
    let reason = "URL normalisation would remove it and send the request to another path";
    for value in [".", ".."] {
        let line = format!(r#"{{"id":"{value}"}}"#);
        let message = path("/x/{id}", &line).unwrap_err();
        let expected = format!(
            "field \"id\" has value {value:?} which cannot be a path segment in the path \
             template, because {reason}; change the value or move the placeholder into the query"
        );
        assert_eq!(message, expected);
    }

    let message = path("/x/.{id}/y", r#"{"id":"."}"#).unwrap_err();
    let expected = format!(
        "field \"id\" has value \".\" which makes the path segment \"..\" in the path template \
         a dot segment, so {reason}; change the value or the path template"
    );
    assert_eq!(message, expected);

    let message = path("/x/{a}{/b}", r#"{"a":".","b":"."}"#).unwrap_err();
    let expected = format!(
        "fields \"a\", \"/b\" have values \".\", \".\" which make the path segment \"..\" in \
         the path template a dot segment, so {reason}; change the values or the path template"
    );
    assert_eq!(message, expected);
}

#[test]
fn accepts_dots_outside_dot_segments() {
    let cases = [
        ("/x/{id}", r#"{"id":"..."}"#, "/x/..."),
        ("/x/{id}", r#"{"id":".x"}"#, "/x/.x"),
        ("/x/{id}", r#"{"id":"%2e"}"#, "/x/%252e"),
        ("/x/{id}", r#"{"id":"../a"}"#, "/x/..%2Fa"),
        ("/x?v={id}", r#"{"id":".."}"#, "/x?v=.."),
        ("/x/{id}", r#"{"id":1.5}"#, "/x/1.5"),
    ];
    for (template, line, expected) in cases {
        assert_eq!(path(template, line).unwrap(), expected, "{template} {line}");
    }
}

#[test]
fn body_is_line_value_exactly() {
    let lines = [
        r#"{"id":1,"v":1.10,"big":123456789012345678901234567890,"e":1e400,"z":-0.0}"#,
        r#"{ "id" : 1 , "nested" : { "a" : [ 1.0, 2E5 ] } }"#,
        r#"{"id":1,"s":"caf\u00e9 \"q\""}"#,
    ];
    for line in lines {
        assert_eq!(body(&[("path", "/x/{id}")], line), line);
    }
    // Whitespace around the value is not part of it.
    assert_eq!(
        body(&[("path", "/x/{id}")], " \t{\"id\":1}\r"),
        "{\"id\":1}"
    );
}

#[test]
fn fields_project_the_body() {
    let pairs = [("path", "/x/{id}"), ("fields", "v,id,missing,nested")];
    let line = r#"{"id":1,"v":1.10,"other":true,"nested":{"a": [1.0]}}"#;
    assert_eq!(
        body(&pairs, line),
        r#"{"v":1.10,"id":1,"nested":{"a": [1.0]}}"#
    );

    let pairs = [("path", "/x"), ("fields", "missing")];
    assert_eq!(body(&pairs, r#"{"id":1}"#), "{}");
}

#[test]
fn fields_names_are_json_escaped() {
    let pairs = [("path", "/x"), ("fields", "a\"b,café")];
    let line = r#"{"a\"b":1,"caf\u00e9":2}"#;
    assert_eq!(body(&pairs, line), r#"{"a\"b":1,"café":2}"#);
}

#[test]
fn fields_need_an_object() {
    let pairs = [("path", "/x"), ("fields", "id")];
    let message = map(&pairs, "[1,2]").unwrap_err();
    assert_eq!(
        message,
        "the record is an array, not an object, so fields cannot select its members; remove \
         fields to send the whole record"
    );
}

#[test]
fn method_is_configurable() {
    let request = map(&[("path", "/x"), ("method", "post")], "{}").unwrap();
    assert_eq!(request.method, "POST");
}

#[test]
fn rejects_invalid_raw() {
    let message = map(&[("path", "/x")], "{").unwrap_err();
    assert_eq!(
        message,
        "the record is not one JSON value: invalid JSON at column 1: EOF while parsing an object"
    );
}

#[test]
fn read_back_for_put_gets_same_path() {
    let config = config(&[("path", "/q/{id}"), ("fields", "id,v")]);
    let read_back = read_back(br#"{"id":"a","v":1.10,"w":2}"#, &config)
        .unwrap()
        .unwrap();
    assert_eq!(read_back.request.method, "GET");
    assert_eq!(read_back.request.path, "/q/a");
    let accept = ("accept".to_owned(), "application/json".to_owned());
    assert_eq!(read_back.request.headers, vec![accept]);
    assert!(read_back.request.body.is_empty());
    assert_eq!(read_back.expected, br#"{"id":"a","v":1.10}"#);
}

#[test]
fn read_back_without_read_path() {
    let config = config(&[("path", "/q"), ("method", "POST")]);
    assert_eq!(read_back(br#"{"id":"a"}"#, &config).unwrap(), None);
}

#[test]
fn read_back_uses_read_path() {
    let config = config(&[
        ("path", "/q"),
        ("method", "POST"),
        ("read_path", "/q/{/p/code}"),
    ]);
    let line = br#"{"p":{"code":"x1"}}"#;
    let read_back = read_back(line, &config).unwrap().unwrap();
    assert_eq!(read_back.request.method, "GET");
    assert_eq!(read_back.request.path, "/q/x1");
    assert_eq!(read_back.expected, line);

    let message = super::read_back(br#"{"p":{"code":".."}}"#, &config).unwrap_err();
    assert!(
        message.starts_with(
            "field \"/p/code\" has value \"..\" which cannot be a path segment \
                             in the read_path template"
        ),
        "{message}"
    );
    let message = super::read_back(br#"{"p":{}}"#, &config).unwrap_err();
    assert_eq!(
        message,
        "field \"/p/code\" is missing but the read_path template needs it"
    );
}

#[test]
fn read_back_fails_when_mapping_fails() {
    let config = config(&[("path", "/q/{id}")]);
    let message = read_back(br#"{"id":null}"#, &config).unwrap_err();
    assert_eq!(
        message,
        "field \"id\" is null but the path template needs it"
    );
}
