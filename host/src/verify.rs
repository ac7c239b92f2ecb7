//! `sluice verify`: reads every record back from the API and compares it
//! with the file.
//!
//! The plugin's `read-back` function turns each record into a request
//! (usually a GET of the record's resource) and the JSON the response must
//! contain. A JSON object matches when the response object has each of its
//! members with an equal value, so fields the API adds do not count; any
//! other JSON value must be equal. A 404 means the record is missing.
//! Transient faults are retried with the run's retry settings.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use crate::config::Settings;
use crate::delivery::backoff::Backoff;
use crate::delivery::classify::Fault;
use crate::delivery::{prepare, PreparedRequest};
use crate::plugin::{Parsed, Plugin, Position, ReadBack, Record};

/// How many problems of each file the summary lists.
const LISTED_PROBLEMS: usize = 20;

/// The verification result of one file.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyFileReport {
    pub path: PathBuf,
    pub matched: u64,
    pub missing: u64,
    pub different: u64,
    /// Records the plugin cannot read back, or that could not be fetched.
    pub unchecked: u64,
    /// The first problems, as `record N (line L) key K: what`.
    pub problems: Vec<String>,
    /// The reason the file could not be verified to its end, if any.
    pub error: Option<String>,
}

/// The verification results of all files.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    pub files: Vec<VerifyFileReport>,
}

impl VerifyReport {
    /// Returns 0 when every record matched, 3 when some did not, and 1
    /// when a file could not be verified to its end.
    pub fn exit_code(&self) -> u8 {
        if self.files.iter().any(|f| f.error.is_some()) {
            1
        } else if self
            .files
            .iter()
            .any(|f| f.missing + f.different + f.unchecked > 0)
        {
            3
        } else {
            0
        }
    }

    /// Writes the human-readable report.
    pub fn write_summary(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        writeln!(out, "verify")?;
        for file in &self.files {
            writeln!(
                out,
                "  {}: matched {}, missing {}, different {}, unchecked {}",
                file.path.display(),
                file.matched,
                file.missing,
                file.different,
                file.unchecked
            )?;
            for problem in &file.problems {
                writeln!(out, "    {problem}")?;
            }
            if let Some(error) = &file.error {
                writeln!(out, "    stopped: {error}")?;
            }
        }
        Ok(())
    }
}

enum Check {
    Matched,
    Missing(String),
    Different(String),
    Unchecked(String),
}

/// Verifies each file against the API.
///
/// # Errors
///
/// Fails when the HTTP client cannot be built.
pub async fn verify(
    settings: &Settings,
    plugin: Arc<Plugin>,
    files: &[PathBuf],
) -> anyhow::Result<VerifyReport> {
    let client = reqwest::Client::builder()
        .timeout(settings.http.timeout)
        .connect_timeout(settings.http.connect_timeout)
        .build()?;
    let mut report = VerifyReport::default();
    for path in files {
        let file = verify_file(settings, &plugin, &client, path).await;
        report.files.push(file);
    }
    Ok(report)
}

async fn verify_file(
    settings: &Settings,
    plugin: &Arc<Plugin>,
    client: &reqwest::Client,
    path: &Path,
) -> VerifyFileReport {
    let mut report = VerifyFileReport {
        path: path.to_owned(),
        ..VerifyFileReport::default()
    };
    let (tx, mut rx) = mpsc::channel::<(Record, Option<ReadBack>)>(1024);
    let reader = {
        let plugin = plugin.clone();
        let path = path.to_owned();
        let chunk_size = settings.chunk_size.get();
        tokio::task::spawn_blocking(move || read_checks(&plugin, &path, chunk_size, tx))
    };

    let slots = Arc::new(Semaphore::new(settings.http.concurrency.get()));
    let mut tasks: JoinSet<(Position, String, Check)> = JoinSet::new();
    while let Some((record, check)) = rx.recv().await {
        let Some(check) = check else {
            let reason = "the plugin cannot read this record back".to_owned();
            record_check(
                &mut report,
                record.position,
                &record.key,
                Check::Unchecked(reason),
            );
            continue;
        };
        let request = prepare(
            &settings.endpoint,
            &check.request.method,
            &check.request.path,
            check.request.headers.into_iter().map(|h| (h.name, h.value)),
            &settings.http.headers,
            check.request.body,
        );
        let request = match request {
            Ok(request) => request,
            Err(reason) => {
                let check = Check::Unchecked(reason);
                record_check(&mut report, record.position, &record.key, check);
                continue;
            }
        };
        let permit = slots.clone().acquire_owned().await.expect("never closed");
        let client = client.clone();
        let retry = settings.retry;
        tasks.spawn(async move {
            let check = check_one(&client, &request, &check.expected, retry).await;
            drop(permit);
            (record.position, record.key, check)
        });
        while let Some(done) = tasks.try_join_next() {
            let (position, key, check) = done.expect("checks do not panic");
            record_check(&mut report, position, &key, check);
        }
    }
    while let Some(done) = tasks.join_next().await {
        let (position, key, check) = done.expect("checks do not panic");
        record_check(&mut report, position, &key, check);
    }
    if let Err(message) = reader.await.expect("the reader thread does not panic") {
        report.error = Some(message);
    }
    report
}

fn record_check(report: &mut VerifyFileReport, position: Position, key: &str, check: Check) {
    let (counter, detail) = match check {
        Check::Matched => {
            report.matched += 1;
            return;
        }
        Check::Missing(detail) => (&mut report.missing, detail),
        Check::Different(detail) => (&mut report.different, detail),
        Check::Unchecked(detail) => (&mut report.unchecked, detail),
    };
    *counter += 1;
    if report.problems.len() < LISTED_PROBLEMS {
        report.problems.push(format!(
            "record {} (line {}) key {key:?}: {detail}",
            position.record_number, position.line
        ));
    }
}

/// Parses the file and sends each record with its read-back check.
fn read_checks(
    plugin: &Plugin,
    path: &Path,
    chunk_size: usize,
    tx: mpsc::Sender<(Record, Option<ReadBack>)>,
) -> Result<(), String> {
    let mut file = File::open(path).map_err(|err| format!("cannot open: {err}"))?;
    let instance = plugin.instantiate().map_err(|err| format!("{err:#}"))?;
    let mut parser = instance.parser().map_err(|err| format!("{err:#}"))?;
    let mut chunk = vec![0u8; chunk_size];
    loop {
        let read = file
            .read(&mut chunk)
            .map_err(|err| format!("read failed: {err}"))?;
        let parsed = if read == 0 {
            parser.finish()
        } else {
            parser.feed(&chunk[..read])
        };
        let parsed = parsed.map_err(|err| err.to_string())?;
        let records: Vec<Record> = parsed
            .into_iter()
            .filter_map(|item| match item {
                Parsed::Record(record) => Some(record),
                Parsed::Malformed(_) => None,
            })
            .collect();
        if !records.is_empty() {
            let checks = parser.read_back(&records).map_err(|err| err.to_string())?;
            for pair in records.into_iter().zip(checks) {
                if tx.blocking_send(pair).is_err() {
                    return Ok(());
                }
            }
        }
        if read == 0 {
            return Ok(());
        }
    }
}

async fn check_one(
    client: &reqwest::Client,
    request: &PreparedRequest,
    expected: &[u8],
    retry: crate::delivery::RetryPolicy,
) -> Check {
    let Ok(expected) = serde_json::from_slice::<Value>(expected) else {
        return Check::Unchecked("the plugin's expected value is not JSON".to_owned());
    };
    let mut backoff = Backoff::new(retry.backoff, rand::random());
    let mut attempt = 0;
    loop {
        attempt += 1;
        let response = client
            .request(request.method.clone(), request.url.clone())
            .headers(request.headers.clone())
            .body(request.body.clone())
            .send()
            .await;
        let fault = match response {
            Ok(response) => {
                let status = response.status();
                match response.bytes().await {
                    Ok(body) if status.is_success() => return compare(&expected, &body),
                    Ok(_) if status == reqwest::StatusCode::NOT_FOUND => {
                        let what =
                            format!("{} {} returned 404", request.method, request.url.path());
                        return Check::Missing(what);
                    }
                    Ok(_) => Fault::Status(status),
                    Err(err) => Fault::from_reqwest(err),
                }
            }
            Err(err) => Fault::from_reqwest(err),
        };
        if !fault.is_transient() || attempt > retry.max_retries {
            return Check::Unchecked(format!("read-back failed: {fault}"));
        }
        let delay = backoff.next().unwrap_or(retry.backoff.max);
        tokio::time::sleep(delay).await;
    }
}

fn compare(expected: &Value, body: &[u8]) -> Check {
    let Ok(actual) = serde_json::from_slice::<Value>(body) else {
        return Check::Different("the response body is not JSON".to_owned());
    };
    match first_difference(expected, &actual) {
        None => Check::Matched,
        Some(difference) => Check::Different(difference),
    }
}

/// Returns the first way `actual` fails to contain `expected`.
fn first_difference(expected: &Value, actual: &Value) -> Option<String> {
    match (expected, actual) {
        (Value::Object(want), Value::Object(have)) => {
            want.iter().find_map(|(name, value)| match have.get(name) {
                None => Some(format!("{name}: missing, expected {value}")),
                Some(found) if found != value => {
                    Some(format!("{name}: expected {value}, found {found}"))
                }
                Some(_) => None,
            })
        }
        _ if expected == actual => None,
        _ => Some(format!("expected {expected}, found {actual}")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn object_matches_a_superset() {
        let expected = json!({"iata": "ABQ", "name": "A"});
        let actual = json!({"iata": "ABQ", "name": "A", "created": "today"});
        assert_eq!(first_difference(&expected, &actual), None);
    }

    #[test]
    fn differing_member_is_named() {
        let expected = json!({"iata": "ABQ", "name": "A"});
        let actual = json!({"iata": "ABQ", "name": "B"});
        let difference = first_difference(&expected, &actual).unwrap();
        assert_eq!(difference, "name: expected \"A\", found \"B\"");
    }

    #[test]
    fn missing_member_is_named() {
        let difference = first_difference(&json!({"zip": "00501"}), &json!({})).unwrap();
        assert_eq!(difference, "zip: missing, expected \"00501\"");
    }

    #[test]
    fn null_must_match_null() {
        let expected = json!({"speed": null});
        assert!(first_difference(&expected, &json!({"speed": "NA"})).is_some());
        assert!(first_difference(&expected, &json!({"speed": null})).is_none());
    }

    #[test]
    fn non_objects_must_be_equal() {
        assert!(first_difference(&json!([1, 2]), &json!([1, 2])).is_none());
        assert!(first_difference(&json!([1, 2]), &json!([1, 2, 3])).is_some());
    }

    #[test]
    fn exit_code_reflects_problems() {
        let clean = VerifyFileReport {
            matched: 3,
            ..VerifyFileReport::default()
        };
        let mut report = VerifyReport {
            files: vec![clean.clone()],
        };
        assert_eq!(report.exit_code(), 0);
        report.files[0].missing = 1;
        assert_eq!(report.exit_code(), 3);
        report.files[0].error = Some("x".to_owned());
        assert_eq!(report.exit_code(), 1);
    }
}
