//! `compare_csv` against databases loaded through the HTTP API.

mod common;

use std::path::PathBuf;

use common::TestTarget;
use reqwest::StatusCode;
use serde_json::json;
use sluice_target::{compare_csv, CompareOptions, FaultPlan, RowRef};

const ZIPS: &str = "zip,city,state\n00501,Holtsville,NY\n10001,New York,NY\n";

fn write_csv(target: &TestTarget, name: &str, contents: &[u8]) -> PathBuf {
    let path = target.dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

async fn load(target: &TestTarget, resources: &[(&str, serde_json::Value)]) {
    for (path, body) in resources {
        let response = target.put(path, &body.to_string()).await.unwrap();
        assert!(
            response.status().is_success(),
            "PUT {path}: {}",
            response.status()
        );
    }
}

#[tokio::test]
async fn exact_match_is_exact() {
    let target = TestTarget::start(FaultPlan::default()).await;
    let csv = write_csv(&target, "zips.csv", ZIPS.as_bytes());
    load(
        &target,
        &[
            (
                "/zips/00501",
                json!({"zip": "00501", "city": "Holtsville", "state": "NY"}),
            ),
            (
                "/zips/10001",
                json!({"zip": "10001", "city": "New York", "state": "NY"}),
            ),
        ],
    )
    .await;
    // Posted rows are not part of the comparison.
    assert_eq!(
        target.post("/zips", "{}").await.unwrap().status(),
        StatusCode::CREATED
    );

    let comparison = compare_csv(&target.db(), &csv, &CompareOptions::new("/zips/{zip}")).unwrap();
    assert!(comparison.is_exact(), "{comparison}");
    assert_eq!(comparison.matched, 2);
    assert_eq!(
        comparison.to_string(),
        "matched 2, missing 0, extra 0, different 0"
    );
}

#[tokio::test]
async fn leading_zeros_must_be_kept() {
    let target = TestTarget::start(FaultPlan::default()).await;
    let csv = write_csv(&target, "zips.csv", ZIPS.as_bytes());
    load(
        &target,
        &[
            (
                "/zips/00501",
                json!({"zip": 501, "city": "Holtsville", "state": "NY"}),
            ),
            (
                "/zips/10001",
                json!({"zip": "10001", "city": "New York", "state": "NY"}),
            ),
        ],
    )
    .await;

    let comparison = compare_csv(&target.db(), &csv, &CompareOptions::new("/zips/{zip}")).unwrap();
    assert!(!comparison.is_exact());
    assert_eq!(comparison.matched, 1);
    assert_eq!(comparison.different.len(), 1);
    let difference = &comparison.different[0];
    assert_eq!(difference.line, 2);
    assert_eq!(difference.path, "/zips/00501");
    assert_eq!(difference.expected["zip"], json!("00501"));
    assert_eq!(
        difference.describe(),
        r#"field "zip": expected "00501", found 501"#
    );
}

#[tokio::test]
async fn reports_missing_extra_and_different() {
    let target = TestTarget::start(FaultPlan::default()).await;
    let csv = write_csv(
        &target,
        "codes.csv",
        b"code,name\nA,Alpha\nB,Beta\nC,Gamma\nD,Delta\n",
    );
    load(
        &target,
        &[
            ("/codes/A", json!({"code": "A", "name": "Alpha"})),
            ("/codes/B", json!({"code": "B", "name": "Bravo"})),
            (
                "/codes/D",
                json!({"code": "D", "name": "Delta", "extra": "1"}),
            ),
            ("/codes/Z", json!({"code": "Z", "name": "Zulu"})),
        ],
    )
    .await;

    let comparison =
        compare_csv(&target.db(), &csv, &CompareOptions::new("/codes/{code}")).unwrap();
    assert!(!comparison.is_exact());
    assert_eq!(comparison.matched, 1);
    assert_eq!(
        comparison.missing,
        [RowRef {
            line: 4,
            path: "/codes/C".into()
        }]
    );
    assert_eq!(comparison.extra, ["/codes/Z"]);
    let different: Vec<(u64, &str)> = comparison
        .different
        .iter()
        .map(|d| (d.line, d.path.as_str()))
        .collect();
    assert_eq!(different, [(3, "/codes/B"), (5, "/codes/D")]);
    assert_eq!(
        comparison.different[1].describe(),
        r#"unexpected field "extra": "1""#
    );

    let report = comparison.to_string();
    assert!(
        report.starts_with("matched 1, missing 1, extra 1, different 2\n"),
        "{report}"
    );
    assert!(report.contains("missing: line 4: /codes/C"), "{report}");
    assert!(report.contains("extra: /codes/Z"), "{report}");
    assert!(
        report.contains(
            r#"different: line 3: /codes/B: field "name": expected "Beta", found "Bravo""#
        ),
        "{report}"
    );
}

#[tokio::test]
async fn null_token_expects_json_null() {
    let target = TestTarget::start(FaultPlan::default()).await;
    let csv = write_csv(&target, "airports.csv", b"iata,elevation\nAAA,NA\nBBB,12\n");
    load(
        &target,
        &[
            ("/airports/AAA", json!({"iata": "AAA", "elevation": null})),
            ("/airports/BBB", json!({"iata": "BBB", "elevation": "12"})),
        ],
    )
    .await;

    let mut opts = CompareOptions::new("/airports/{iata}");
    opts.null_token = Some("NA".into());
    let with_null = compare_csv(&target.db(), &csv, &opts).unwrap();
    assert!(with_null.is_exact(), "{with_null}");

    // Without the token, "NA" is an ordinary string.
    let without =
        compare_csv(&target.db(), &csv, &CompareOptions::new("/airports/{iata}")).unwrap();
    assert_eq!(without.different.len(), 1);
    assert_eq!(without.different[0].path, "/airports/AAA");
    assert_eq!(without.different[0].expected["elevation"], json!("NA"));

    // A loader that stores the token as text does not match.
    load(
        &target,
        &[("/airports/AAA", json!({"iata": "AAA", "elevation": "NA"}))],
    )
    .await;
    let stored_text = compare_csv(&target.db(), &csv, &opts).unwrap();
    assert_eq!(stored_text.different.len(), 1);
    assert_eq!(stored_text.different[0].line, 2);
}

#[tokio::test]
async fn path_values_are_percent_encoded() {
    let target = TestTarget::start(FaultPlan::default()).await;
    let csv = write_csv(
        &target,
        "cities.csv",
        "country,name\nBR,São Paulo\nXX,a/b?c\nUS,New-York_1.~\n".as_bytes(),
    );
    load(
        &target,
        &[
            (
                "/c/BR/S%C3%A3o%20Paulo",
                json!({"country": "BR", "name": "São Paulo"}),
            ),
            ("/c/XX/a%2Fb%3Fc", json!({"country": "XX", "name": "a/b?c"})),
            (
                "/c/US/New-York_1.~",
                json!({"country": "US", "name": "New-York_1.~"}),
            ),
        ],
    )
    .await;

    let opts = CompareOptions::new("/c/{country}/{name}");
    let comparison = compare_csv(&target.db(), &csv, &opts).unwrap();
    assert!(comparison.is_exact(), "{comparison}");
    assert_eq!(comparison.matched, 3);

    // Lowercase hex digits make another path.
    let target = TestTarget::start(FaultPlan::default()).await;
    let csv = write_csv(
        &target,
        "cities.csv",
        "country,name\nBR,São Paulo\n".as_bytes(),
    );
    load(
        &target,
        &[(
            "/c/BR/S%c3%a3o%20Paulo",
            json!({"country": "BR", "name": "São Paulo"}),
        )],
    )
    .await;
    let comparison = compare_csv(&target.db(), &csv, &opts).unwrap();
    assert_eq!(
        comparison.missing,
        [RowRef {
            line: 2,
            path: "/c/BR/S%C3%A3o%20Paulo".into()
        }]
    );
    assert_eq!(comparison.extra, ["/c/BR/S%c3%a3o%20Paulo"]);
}

#[tokio::test]
async fn bom_and_delimiter_are_handled() {
    let target = TestTarget::start(FaultPlan::default()).await;
    let csv = write_csv(&target, "bom.csv", "\u{feff}id;name\n1;x,y\n".as_bytes());
    load(&target, &[("/ids/1", json!({"id": "1", "name": "x,y"}))]).await;

    let mut opts = CompareOptions::new("/ids/{id}");
    opts.delimiter = b';';
    let comparison = compare_csv(&target.db(), &csv, &opts).unwrap();
    assert!(comparison.is_exact(), "{comparison}");
}

#[tokio::test]
async fn quoted_fields_keep_line_numbers() {
    let target = TestTarget::start(FaultPlan::default()).await;
    let csv = write_csv(
        &target,
        "notes.csv",
        b"id,note\n1,\"two\nlines\"\n2,\"with \"\"quotes\"\", and comma\"\n3,  padded  \n",
    );
    load(
        &target,
        &[
            ("/notes/1", json!({"id": "1", "note": "two\nlines"})),
            (
                "/notes/2",
                json!({"id": "2", "note": "with \"quotes\", and comma"}),
            ),
        ],
    )
    .await;

    let comparison = compare_csv(&target.db(), &csv, &CompareOptions::new("/notes/{id}")).unwrap();
    assert_eq!(comparison.matched, 2, "{comparison}");
    assert_eq!(
        comparison.missing,
        [RowRef {
            line: 5,
            path: "/notes/3".into()
        }]
    );

    // Values are not trimmed.
    load(
        &target,
        &[("/notes/3", json!({"id": "3", "note": "  padded  "}))],
    )
    .await;
    let comparison = compare_csv(&target.db(), &csv, &CompareOptions::new("/notes/{id}")).unwrap();
    assert!(comparison.is_exact(), "{comparison}");
}

#[tokio::test]
async fn line_numbers_count_crlf_and_blank_lines() {
    let target = TestTarget::start(FaultPlan::default()).await;
    let csv = write_csv(
        &target,
        "crlf.csv",
        b"id,note\r\n1,a\r\n\r\n2,\"x\r\ny\"\r\n3,b\r\n\n\n4,c,extra\r\n5,d",
    );

    let comparison = compare_csv(&target.db(), &csv, &CompareOptions::new("/n/{id}")).unwrap();
    let missing: Vec<(u64, &str)> = comparison
        .missing
        .iter()
        .map(|row| (row.line, row.path.as_str()))
        .collect();
    assert_eq!(
        missing,
        [(2, "/n/1"), (4, "/n/2"), (6, "/n/3"), (10, "/n/5")]
    );
    let invalid_lines: Vec<u64> = comparison.invalid.iter().map(|row| row.line).collect();
    assert_eq!(invalid_lines, [9]);
}

#[tokio::test]
async fn invalid_and_superseded_rows_are_listed() {
    let target = TestTarget::start(FaultPlan::default()).await;
    let csv = write_csv(&target, "rows.csv", b"id,v\n1,a\n2,b,extra\n1,c\n3\n4,d\n");
    load(
        &target,
        &[
            ("/rows/1", json!({"id": "1", "v": "c"})),
            ("/rows/4", json!({"id": "4", "v": "d"})),
        ],
    )
    .await;

    let comparison = compare_csv(&target.db(), &csv, &CompareOptions::new("/rows/{id}")).unwrap();
    assert!(comparison.is_exact(), "{comparison}");
    assert_eq!(comparison.matched, 2);
    let invalid_lines: Vec<u64> = comparison.invalid.iter().map(|row| row.line).collect();
    assert_eq!(invalid_lines, [3, 5]);
    assert!(
        comparison.invalid[0].error.contains("fields"),
        "{}",
        comparison.invalid[0].error
    );
    assert_eq!(
        comparison.superseded,
        [RowRef {
            line: 2,
            path: "/rows/1".into()
        }]
    );

    let report = comparison.to_string();
    assert!(
        report.contains("invalid rows 2 (not compared), superseded rows 1"),
        "{report}"
    );
}

#[tokio::test]
async fn many_problems_are_truncated_in_report() {
    let target = TestTarget::start(FaultPlan::default()).await;
    let mut contents = String::from("id\n");
    for i in 0..25 {
        contents.push_str(&format!("{i}\n"));
    }
    let csv = write_csv(&target, "many.csv", contents.as_bytes());

    let comparison = compare_csv(&target.db(), &csv, &CompareOptions::new("/m/{id}")).unwrap();
    assert_eq!(comparison.missing.len(), 25);
    let report = comparison.to_string();
    assert_eq!(
        report
            .lines()
            .filter(|line| line.starts_with("missing: line"))
            .count(),
        10
    );
    assert!(report.contains("missing: ... and 15 more"), "{report}");
}

#[tokio::test]
async fn bad_options_are_errors() {
    let target = TestTarget::start(FaultPlan::default()).await;
    let csv = write_csv(&target, "zips.csv", ZIPS.as_bytes());

    let err = compare_csv(&target.db(), &csv, &CompareOptions::new("/zips/{code}")).unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("\"code\""), "{message}");
    assert!(
        message.contains(r#"columns are: "zip", "city", "state""#),
        "{message}"
    );

    let err = compare_csv(&target.db(), &csv, &CompareOptions::new("/zips/{zip")).unwrap_err();
    assert!(err.to_string().contains("unclosed"), "{err}");

    let duplicate = write_csv(&target, "dup.csv", b"a,b,a\n1,2,3\n");
    let err = compare_csv(&target.db(), &duplicate, &CompareOptions::new("/x/{b}")).unwrap_err();
    assert!(err.to_string().contains("\"a\" twice"), "{err}");

    let missing_csv = target.dir.path().join("absent.csv");
    let err = compare_csv(&target.db(), &missing_csv, &CompareOptions::new("/x")).unwrap_err();
    assert!(format!("{err:#}").contains("absent.csv"), "{err:#}");

    let not_a_db = write_csv(&target, "plain.db", b"");
    let err = compare_csv(&not_a_db, &csv, &CompareOptions::new("/zips/{zip}")).unwrap_err();
    assert!(
        format!("{err:#}").contains("not a target database"),
        "{err:#}"
    );
}
