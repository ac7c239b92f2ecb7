//! Helpers shared by the integration tests: a target server in a temporary
//! directory, a plain HTTP client and an upstream that echoes requests.

#![allow(dead_code)]

pub mod echo;

use std::path::PathBuf;
use std::time::Duration;

use sluice_target::{start, FaultPlan, RunningTarget, Stats, TargetConfig};
use tempfile::TempDir;

/// Target server with its own database in a temporary directory.
pub struct TestTarget {
    pub target: RunningTarget,
    pub client: reqwest::Client,
    pub dir: TempDir,
}

impl TestTarget {
    pub async fn start(faults: FaultPlan) -> Self {
        let dir = tempfile::tempdir().expect("create temporary directory");
        let mut config = TargetConfig::new(dir.path().join("target.db"));
        config.faults = faults;
        let target = start(config).await.expect("start target server");
        Self {
            target,
            client: client(None),
            dir,
        }
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("target.db")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.target.url())
    }

    pub fn stats(&self) -> Stats {
        self.target.stats()
    }

    pub async fn put(&self, path: &str, body: &str) -> reqwest::Result<reqwest::Response> {
        self.client
            .put(self.url(path))
            .body(body.to_owned())
            .send()
            .await
    }

    pub async fn post(&self, path: &str, body: &str) -> reqwest::Result<reqwest::Response> {
        self.client
            .post(self.url(path))
            .body(body.to_owned())
            .send()
            .await
    }

    pub async fn post_with_key(
        &self,
        path: &str,
        key: &str,
        body: &str,
    ) -> reqwest::Result<reqwest::Response> {
        self.client
            .post(self.url(path))
            .header("Idempotency-Key", key)
            .body(body.to_owned())
            .send()
            .await
    }

    pub async fn get(&self, path: &str) -> reqwest::Result<reqwest::Response> {
        self.client.get(self.url(path)).send().await
    }

    pub async fn delete(&self, path: &str) -> reqwest::Result<reqwest::Response> {
        self.client.delete(self.url(path)).send().await
    }
}

/// Returns a client that never retries on its own, so each call is one
/// request.
pub fn client(timeout: Option<Duration>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder().retry(reqwest::retry::never());
    if let Some(timeout) = timeout {
        builder = builder.timeout(timeout);
    }
    builder.build().expect("build HTTP client")
}

/// Returns true when the error chain contains an I/O error of kind
/// `ConnectionReset`.
pub fn is_connection_reset(err: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(current) = source {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionReset {
                return true;
            }
        }
        source = current.source();
    }
    false
}

/// Returns the JSON body of a response.
pub async fn json_body(response: reqwest::Response) -> serde_json::Value {
    let text = response.text().await.expect("read response body");
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("body {text:?} is not JSON: {err}"))
}

/// Polls `condition` every 10 ms until it holds, and panics with `what`
/// after 5 s.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
