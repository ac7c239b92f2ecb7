//! Cases where a naive loader lets a stale value win or sends a record
//! twice: same-key records across files and reprocessing rounds, rejected
//! records fixed and resent, concurrent runs, and paths that escape their
//! resource. Each runs the real binary against servers on 127.0.0.1.

use std::path::Path;
use std::time::Duration;

use sluice_target::{read_resources, start, TargetConfig};
use sluice_tests::{dead_letter_files, write_file, Sluice};
use wiremock::matchers::{body_string_contains, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn sluice(subcommand: &str, dir: &Path, endpoint: &str) -> Sluice {
    Sluice::new(subcommand, dir)
        .arg("--endpoint")
        .arg(endpoint)
        .arg("--max-retries=0")
        .plugin_config("key", "id")
        .plugin_config("path", "/r/{id}")
}

/// A server that responds with 503 to bodies containing `fail`, and with
/// 200 otherwise.
async fn failing_on(fail: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(body_string_contains(fail))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    server
}

async fn sent_names(server: &MockServer) -> Vec<String> {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            body["name"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[tokio::test]
async fn dead_lettered_key_holds_back_later_files_of_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let server = failing_on("old").await;
    let a = write_file(dir.path(), "a.csv", "id,name\n1,old\n2,x\n");
    let b = write_file(dir.path(), "b.csv", "id,name\n1,new\n3,y\n");

    let first = sluice("run", dir.path(), &server.uri())
        .arg(a.display().to_string())
        .arg(b.display().to_string())
        .run()
        .await;

    assert_eq!(first.code, Some(3), "{}", first.stderr);
    let sent = sent_names(&server).await;
    assert!(
        !sent.contains(&"new".to_owned()),
        "the newer value overtook: {sent:?}"
    );

    let db = dir.path().join("t.db");
    let target = start(TargetConfig::new(&db)).await.unwrap();
    let again = sluice("reprocess", dir.path(), &target.url())
        .arg("dead-letters")
        .run()
        .await;
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    target.shutdown().await;
    let stored = read_resources(&db).unwrap();
    assert_eq!(stored["/r/1"]["name"], "new", "the older value won");
}

#[tokio::test]
async fn reprocessing_keeps_dead_letters_in_their_original_order() {
    let dir = tempfile::tempdir().unwrap();
    let down = failing_on("v").await;
    let v1 = write_file(dir.path(), "v1.csv", "id,name\n1,v1\n");
    let v2 = write_file(dir.path(), "v2.csv", "id,name\n1,v2\n");
    for input in [&v1, &v2] {
        let run = sluice("run", dir.path(), &down.uri())
            .arg(input.display().to_string())
            .run()
            .await;
        assert_eq!(run.code, Some(3), "{}", run.stderr);
    }
    // Reprocess only the older file while the API is still down: its
    // record moves to a new dead-letter file.
    let files = dead_letter_files(&dir.path().join("dead-letters"), "dead");
    let older = files.iter().find(|f| f.contents.contains("v1")).unwrap();
    let moved = sluice("reprocess", dir.path(), &down.uri())
        .arg(older.path.display().to_string())
        .run()
        .await;
    assert_eq!(moved.code, Some(3), "{}", moved.stderr);

    let db = dir.path().join("t.db");
    let target = start(TargetConfig::new(&db)).await.unwrap();
    let again = sluice("reprocess", dir.path(), &target.url())
        .arg("dead-letters")
        .run()
        .await;
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    target.shutdown().await;
    let stored = read_resources(&db).unwrap();
    assert_eq!(
        stored["/r/1"]["name"], "v2",
        "the older value was replayed last"
    );
}

#[tokio::test]
async fn rejected_key_holds_back_later_records_until_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(body_string_contains("bad"))
        .respond_with(ResponseTemplate::new(400))
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let csv = "id,name\n1,good\n2,bad\n3,good\n2,later\n";
    let input = write_file(dir.path(), "mix.csv", csv);

    let first = sluice("run", dir.path(), &server.uri())
        .arg(input.display().to_string())
        .run()
        .await;

    assert_eq!(first.code, Some(3), "{}", first.stderr);
    assert!(!sent_names(&server).await.contains(&"later".to_owned()));
    let rejected = dead_letter_files(&dir.path().join("dead-letters"), "rejected");
    assert_eq!(rejected[0].contents, "id,name\n2,bad\n2,later\n");

    // The user fixes the rejected row and resends the file.
    let fixed = rejected[0].contents.replace("bad", "fixed");
    std::fs::write(&rejected[0].path, fixed).unwrap();
    let db = dir.path().join("t.db");
    let target = start(TargetConfig::new(&db)).await.unwrap();
    let again = sluice("reprocess", dir.path(), &target.url())
        .arg("--include-rejected")
        .arg("dead-letters")
        .run()
        .await;
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    target.shutdown().await;
    let stored = read_resources(&db).unwrap();
    assert_eq!(stored["/r/2"]["name"], "later");
}

#[tokio::test]
async fn second_run_on_the_same_directories_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(300)))
        .mount(&server)
        .await;
    let rows: String = (0..20).map(|n| format!("{n},x\n")).collect();
    let input = write_file(dir.path(), "slow.csv", &format!("id,name\n{rows}"));
    let input = input.display().to_string();

    let (first, summary) = sluice("run", dir.path(), &server.uri())
        .arg("--concurrency=1")
        .arg(&input)
        .spawn();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = sluice("run", dir.path(), &server.uri())
        .arg(&input)
        .run()
        .await;
    let first = Sluice::collect(first, &summary).await;

    assert_eq!(second.code, Some(2), "{}", second.stderr);
    assert!(
        second.stderr.contains("another sluice process"),
        "{}",
        second.stderr
    );
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    assert_eq!(server.received_requests().await.unwrap().len(), 20);
}

#[tokio::test]
async fn unusable_dead_letter_directory_exits_2_before_sending() {
    let dir = tempfile::tempdir().unwrap();
    let server = MockServer::start().await;
    let not_a_dir = write_file(dir.path(), "taken", "a file");
    let input = write_file(dir.path(), "a.csv", "id,name\n1,x\n");

    let finished = sluice("run", dir.path(), &server.uri())
        .arg("--dead-letter-dir")
        .arg(not_a_dir.display().to_string())
        .arg(input.display().to_string())
        .run()
        .await;

    assert_eq!(finished.code, Some(2));
    assert!(finished.stderr.contains("taken"), "{}", finished.stderr);
    assert!(
        finished.stderr.contains("--dead-letter-dir"),
        "{}",
        finished.stderr
    );
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn invalid_log_filter_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_file(dir.path(), "a.csv", "id,name\n1,x\n");

    let finished = sluice("run", dir.path(), "http://127.0.0.1:9")
        .arg("--log-level=garbage[")
        .arg(input.display().to_string())
        .run()
        .await;

    assert_eq!(finished.code, Some(2), "{}", finished.stderr);
    assert!(
        finished.stderr.contains("invalid log filter"),
        "{}",
        finished.stderr
    );
}

#[tokio::test]
async fn reprocess_with_nothing_dead_lettered_succeeds() {
    let dir = tempfile::tempdir().unwrap();

    let finished = sluice("reprocess", dir.path(), "http://127.0.0.1:9")
        .arg("dead-letters")
        .run()
        .await;

    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    assert_eq!(finished.total("records"), 0);
}

#[tokio::test]
async fn dot_segment_values_are_rejected_not_sent_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let input = write_file(dir.path(), "dots.csv", "id,name\n..,evil\n.,odd\nok,fine\n");

    let finished = sluice("run", dir.path(), &server.uri())
        .arg(input.display().to_string())
        .run()
        .await;

    assert_eq!(finished.code, Some(3), "{}", finished.stderr);
    let paths: Vec<String> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.url.path().to_owned())
        .collect();
    assert_eq!(paths, ["/r/ok"]);
    assert_eq!(finished.total("rejected"), 2);
}

#[tokio::test]
async fn rerun_of_a_changed_file_holds_keys_with_older_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let down = failing_on("v1").await;
    let input = write_file(dir.path(), "a.csv", "id,name\n1,v1\n2,v1\n");
    let input = input.display().to_string();
    let first = sluice("run", dir.path(), &down.uri())
        .arg(&input)
        .run()
        .await;
    assert_eq!(first.code, Some(3), "{}", first.stderr);

    // The file changes; the new values must not overtake the old ones that
    // are still waiting as dead letters.
    write_file(dir.path(), "a.csv", "id,name\n1,v2\n2,v2\n");
    let db = dir.path().join("t.db");
    let target = start(TargetConfig::new(&db)).await.unwrap();
    let second = sluice("run", dir.path(), &target.url())
        .arg(&input)
        .run()
        .await;
    assert_eq!(second.code, Some(3), "{}", second.stderr);
    assert!(second.stdout.contains("waiting"), "{}", second.stdout);
    assert!(
        read_resources(&db).unwrap().is_empty(),
        "v2 overtook the waiting v1"
    );

    let again = sluice("reprocess", dir.path(), &target.url())
        .arg("dead-letters")
        .run()
        .await;
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    target.shutdown().await;
    let stored = read_resources(&db).unwrap();
    assert_eq!(stored["/r/1"]["name"], "v2");
    assert_eq!(stored["/r/2"]["name"], "v2");
}

#[tokio::test]
async fn later_run_of_another_file_holds_keys_with_older_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let down = failing_on("old").await;
    let a = write_file(dir.path(), "a.csv", "id,name\n1,old\n");
    let b = write_file(dir.path(), "b.csv", "id,name\n1,new\n3,other\n");
    let first = sluice("run", dir.path(), &down.uri())
        .arg(a.display().to_string())
        .run()
        .await;
    assert_eq!(first.code, Some(3), "{}", first.stderr);

    let db = dir.path().join("t.db");
    let target = start(TargetConfig::new(&db)).await.unwrap();
    let second = sluice("run", dir.path(), &target.url())
        .arg(b.display().to_string())
        .run()
        .await;
    assert_eq!(second.code, Some(3), "{}", second.stderr);
    let stored = read_resources(&db).unwrap();
    assert!(
        !stored.contains_key("/r/1"),
        "the newer value overtook the waiting one"
    );
    assert_eq!(stored["/r/3"]["name"], "other");

    let again = sluice("reprocess", dir.path(), &target.url())
        .arg("dead-letters")
        .run()
        .await;
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    target.shutdown().await;
    assert_eq!(read_resources(&db).unwrap()["/r/1"]["name"], "new");
}

#[tokio::test]
async fn repeated_reprocessing_rounds_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let down = failing_on("x").await;
    let input = write_file(dir.path(), "a.csv", "id,name\n1,x\n");
    let first = sluice("run", dir.path(), &down.uri())
        .arg(input.display().to_string())
        .run()
        .await;
    assert_eq!(first.code, Some(3));

    for round in 0..12 {
        let again = sluice("reprocess", dir.path(), &down.uri())
            .arg("dead-letters")
            .run()
            .await;
        assert_eq!(again.code, Some(3), "round {round}: {}", again.stderr);
    }

    let files = dead_letter_files(&dir.path().join("dead-letters"), "dead");
    assert_eq!(files.len(), 1);
    let name = files[0]
        .path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(name.len() < 255, "{name}");
}

/// A server that responds with 503 to every PUT, except that bodies
/// containing `hang` get no response for a minute.
async fn down_and_hanging_on(hang: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(body_string_contains(hang))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(60)))
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    server
}

// NOTE: the setup below needs a reprocess round that writes the dead
// letters in the same order as the round before. Records of different keys
// may be written in any order, even with one request in flight, so the
// loop does not always get there before the file name grows too long, and
// the test is ignored in CI. The chaos test covers the same kill, at random
// moments. Run it with `--ignored`.
#[ignore = "the setup depends on the order in which dead letters are written"]
#[tokio::test]
async fn killed_reprocess_of_identical_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let down = down_and_hanging_on("never-sent-before").await;
    let input = write_file(dir.path(), "a.csv", "id,name\n1,a\n2,b\n3,c\n");
    let first = sluice("run", dir.path(), &down.uri())
        .arg(input.display().to_string())
        .run()
        .await;
    assert_eq!(first.code, Some(3), "{}", first.stderr);
    // Every record fails again, until a round writes them in the same
    // order, so that the new dead-letter file has the same bytes as the one
    // it replaces.
    let contents = || {
        dead_letter_files(&dir.path().join("dead-letters"), "dead")[0]
            .contents
            .clone()
    };
    let mut before = contents();
    for round in 0.. {
        assert!(round < 20, "reprocessing never kept the order");
        let again = sluice("reprocess", dir.path(), &down.uri())
            .arg("--concurrency=1")
            .arg("dead-letters")
            .run()
            .await;
        assert_eq!(again.code, Some(3), "{}", again.stderr);
        let after = contents();
        if after == before {
            break;
        }
        before = after;
    }

    // Kill a reprocess after the other records are dead-lettered again and
    // while the record "b" waits for a response.
    let hanging = down_and_hanging_on("\"b\"").await;
    let (mut child, _) = sluice("reprocess", dir.path(), &hanging.uri())
        .arg("--concurrency=2")
        .arg("--timeout=60s")
        .arg("dead-letters")
        .spawn();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while hanging.received_requests().await.unwrap().len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "not every record was sent"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The ledger is written right after the first record's dead letter.
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();

    let db = dir.path().join("t.db");
    let target = start(TargetConfig::new(&db)).await.unwrap();
    for round in 0..3 {
        if dead_letter_files(&dir.path().join("dead-letters"), "dead").is_empty() {
            break;
        }
        let last = sluice("reprocess", dir.path(), &target.url())
            .arg("dead-letters")
            .run()
            .await;
        assert_eq!(last.code, Some(0), "round {round}: {}", last.stderr);
    }
    target.shutdown().await;
    let stored = read_resources(&db).unwrap();
    for (id, name) in [("1", "a"), ("2", "b"), ("3", "c")] {
        let value = stored.get(&format!("/r/{id}")).map(|r| r["name"].clone());
        assert_eq!(value, Some(name.into()), "record {id} in {stored:?}");
    }
}

#[tokio::test]
async fn empty_sidecar_never_sends_a_stale_value() {
    let dir = tempfile::tempdir().unwrap();
    let down = failing_on("old").await;
    let input = write_file(dir.path(), "a.csv", "id,name\n1,old\n1,new\n");
    let first = sluice("run", dir.path(), &down.uri())
        .arg(input.display().to_string())
        .run()
        .await;
    assert_eq!(first.code, Some(3), "{}", first.stderr);
    let dead_letters = dir.path().join("dead-letters");
    let files = dead_letter_files(&dead_letters, "dead");
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].contents, "id,name\n1,old\n1,new\n");

    // Recreate what a reprocess killed right after it wrote "old" to a new
    // dead-letter file leaves behind: the record's bytes, a sidecar without
    // any line yet, and no ledger entry. The new file's name sorts right
    // after the file being reprocessed, like the names reprocessing writes.
    let name = files[0].path.file_name().unwrap().to_string_lossy();
    let (stem_and_run, extension) = name.split_once(".dead.").unwrap();
    let orphans = dead_letters.join(format!("{stem_and_run}~000000000000.dead.{extension}"));
    std::fs::write(&orphans, "id,name\n1,old\n").unwrap();
    let mut sidecar = orphans.clone().into_os_string();
    sidecar.push(".meta.jsonl");
    std::fs::write(&sidecar, "").unwrap();

    let db = dir.path().join("t.db");
    let target = start(TargetConfig::new(&db)).await.unwrap();
    let again = sluice("reprocess", dir.path(), &target.url())
        .arg("dead-letters")
        .run()
        .await;
    target.shutdown().await;

    assert_eq!(again.code, Some(0), "{}", again.stderr);
    let stored = read_resources(&db).unwrap();
    assert_eq!(
        stored["/r/1"]["name"], "new",
        "a record without a sidecar line overwrote a newer value"
    );
    assert!(
        again.stderr.contains("without a sidecar line"),
        "{}",
        again.stderr
    );
    assert!(
        dead_letter_files(&dead_letters, "dead").is_empty(),
        "dead-letter files left"
    );
}

#[tokio::test]
async fn pipe_as_input_is_rejected_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let server = failing_on("never").await;
    let fifo = dir.path().join("rows.csv");
    let mkfifo = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(mkfifo.success(), "mkfifo failed");

    // Nothing ever writes to the pipe: a run that opened it would hang.
    let finished = tokio::time::timeout(
        Duration::from_secs(30),
        sluice("run", dir.path(), &server.uri())
            .arg(fifo.display().to_string())
            .run(),
    )
    .await
    .expect("sluice returns without reading the pipe");

    assert_eq!(finished.code, Some(2), "{}", finished.stderr);
    assert!(
        finished.stderr.contains("is not a regular file"),
        "{}",
        finished.stderr
    );
    assert!(server.received_requests().await.unwrap().is_empty());
}
