//! Shared support for sluice's end-to-end tests: where the built binaries,
//! plugins and bundled datasets are, and a builder that runs the real
//! `sluice` binary and collects its exit status, output and JSON summary.
//!
//! The binaries and plugins are built by `scripts/test` (through
//! `scripts/setup`) before the tests run; a missing one fails the test with
//! the command that builds it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

pub mod pocketbase;
pub mod prometheus;

/// Returns the workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits inside the workspace")
        .to_owned()
}

/// Returns the directory of the running test profile's binaries, such as
/// `target/release`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    // Test binaries live in `target/<profile>/deps/`.
    let deps = exe.parent().expect("the test binary is in a directory");
    deps.parent().expect("deps has a parent").to_owned()
}

fn built(path: PathBuf, what: &str) -> PathBuf {
    assert!(
        path.is_file(),
        "{what} {} is missing; run scripts/setup (or scripts/test) first",
        path.display()
    );
    path
}

/// Returns the `sluice` binary of the current profile.
pub fn sluice_bin() -> PathBuf {
    built(profile_dir().join("sluice"), "binary")
}

/// Returns the `sluice-target` binary of the current profile.
pub fn target_bin() -> PathBuf {
    built(profile_dir().join("sluice-target"), "binary")
}

/// Returns the compiled CSV plugin component.
pub fn csv_plugin() -> PathBuf {
    built(workspace_root().join("plugins/csv.wasm"), "plugin")
}

/// Returns the compiled JSON Lines plugin component.
pub fn jsonl_plugin() -> PathBuf {
    built(workspace_root().join("plugins/jsonl.wasm"), "plugin")
}

/// Returns the compiled TSV plugin component, written in Python.
pub fn tsv_plugin() -> PathBuf {
    built(workspace_root().join("plugins/tsv.wasm"), "plugin")
}

/// Returns the plugin template built from `examples/plugin-template`.
pub fn template_plugin() -> PathBuf {
    built(
        workspace_root().join("examples/plugin-template/template.wasm"),
        "plugin",
    )
}

/// Runs `sluice plugin info` on `plugin` and returns its output lines.
///
/// # Panics
///
/// Panics when the command fails, with its stderr.
pub fn plugin_info_lines(plugin: &Path) -> Vec<String> {
    let output = std::process::Command::new(sluice_bin())
        .args(["plugin", "info"])
        .arg(plugin)
        .env_remove("RUST_LOG")
        .output()
        .expect("sluice starts");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout.lines().map(str::to_owned).collect()
}

/// Returns the misbehaving test plugin built from `tests/plugins/hostile`.
pub fn hostile_plugin() -> PathBuf {
    built(
        workspace_root().join("tests/plugins/hostile.wasm"),
        "plugin",
    )
}

/// Returns the test plugin built against another major version of the
/// interface.
pub fn wrong_version_plugin() -> PathBuf {
    built(
        workspace_root().join("tests/plugins/wrong-version.wasm"),
        "plugin",
    )
}

/// Returns a dataset bundled in `examples/data`.
pub fn dataset(name: &str) -> PathBuf {
    built(workspace_root().join("examples/data").join(name), "dataset")
}

/// What a finished `sluice` process left behind.
#[derive(Debug)]
pub struct Finished {
    /// The exit status; `None` when a signal ended the process.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// The `--summary-json` report, or `Value::Null` when none was written.
    pub summary: Value,
}

impl Finished {
    /// Returns a summary total over all files, such as `delivered`.
    pub fn total(&self, field: &str) -> u64 {
        let files = self.summary["files"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        files
            .iter()
            .map(|file| file[field].as_u64().unwrap_or(0))
            .sum()
    }
}

/// A `sluice` command line under construction.
pub struct Sluice {
    args: Vec<String>,
    envs: Vec<(String, String)>,
    work_dir: PathBuf,
    summary_path: PathBuf,
    plugin: PathBuf,
    timeout: Duration,
}

impl Sluice {
    /// Starts a command line for `subcommand` (`run` or `reprocess`), run in
    /// `work_dir`, with the CSV plugin, no progress bar, and fast retries
    /// that tests override where they care.
    pub fn new(subcommand: &str, work_dir: &Path) -> Sluice {
        let summary_path = work_dir.join(format!("summary-{}.json", unique()));
        let mut sluice = Sluice {
            args: vec![subcommand.to_owned()],
            envs: Vec::new(),
            work_dir: work_dir.to_owned(),
            summary_path: summary_path.clone(),
            plugin: csv_plugin(),
            timeout: Duration::from_secs(120),
        };
        sluice = sluice
            .arg("--progress=never")
            .arg("--summary-json")
            .arg(summary_path.to_str().expect("utf-8 path"))
            .arg("--initial-backoff=5ms")
            .arg("--max-backoff=50ms")
            .arg("--jitter-seed=1");
        sluice
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Sluice {
        self.args.push(arg.into());
        self
    }

    /// Replaces the CSV plugin with another component.
    pub fn plugin(mut self, path: impl Into<PathBuf>) -> Sluice {
        self.plugin = path.into();
        self
    }

    /// Appends `--plugin-config KEY=VALUE`.
    pub fn plugin_config(self, key: &str, value: &str) -> Sluice {
        self.arg("--plugin-config").arg(format!("{key}={value}"))
    }

    /// Sets an environment variable for the process.
    pub fn env(mut self, name: &str, value: &str) -> Sluice {
        self.envs.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Starts the command and returns the running child with stdout and
    /// stderr piped; [`Sluice::collect`] turns it into a [`Finished`].
    pub fn spawn(self) -> (tokio::process::Child, PathBuf) {
        let mut command = self.command();
        let child = command.spawn().expect("sluice starts");
        (child, self.summary_path)
    }

    /// Waits for a child from [`Sluice::spawn`] and collects what it left.
    pub async fn collect(child: tokio::process::Child, summary_path: &Path) -> Finished {
        let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
            .await
            .expect("sluice finishes in time")
            .expect("sluice output is readable");
        finished(output, summary_path)
    }

    fn command(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(sluice_bin());
        command
            .args(&self.args)
            .arg("--plugin")
            .arg(&self.plugin)
            .current_dir(&self.work_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("RUST_LOG")
            .kill_on_drop(true);
        for (name, value) in &self.envs {
            command.env(name, value);
        }
        command
    }

    /// Runs the command to its end and collects what it left.
    ///
    /// # Panics
    ///
    /// Panics when the process cannot start or outlives its timeout.
    pub async fn run(self) -> Finished {
        let mut command = self.command();
        let output = tokio::time::timeout(self.timeout, command.output())
            .await
            .unwrap_or_else(|_| panic!("sluice {:?} did not finish in time", self.args))
            .expect("sluice starts");
        finished(output, &self.summary_path)
    }
}

fn finished(output: std::process::Output, summary_path: &Path) -> Finished {
    let summary = std::fs::read(summary_path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(Value::Null);
    Finished {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        summary,
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A dead-letter or rejected file with its parsed sidecar.
#[derive(Debug)]
pub struct DeadLetterFile {
    pub path: PathBuf,
    pub contents: String,
    pub sidecar: Vec<Value>,
}

/// Reads every dead-letter (`.dead.`) or rejected (`.rejected.`) file in
/// `dir`, sorted by name; `infix` picks which.
pub fn dead_letter_files(dir: &Path, infix: &str) -> Vec<DeadLetterFile> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            name.contains(&format!(".{infix}.")) && !name.ends_with(".meta.jsonl")
        })
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let contents = std::fs::read_to_string(&path).expect("readable dead-letter file");
            let mut sidecar_path = path.clone().into_os_string();
            sidecar_path.push(".meta.jsonl");
            let sidecar_text = std::fs::read_to_string(&sidecar_path).expect("sidecar exists");
            let sidecar = sidecar_text
                .lines()
                .map(|line| serde_json::from_str(line).expect("sidecar line is JSON"))
                .collect();
            DeadLetterFile {
                path,
                contents,
                sidecar,
            }
        })
        .collect()
}

/// Writes `contents` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("writable temp dir");
    path
}

/// Starts a wiremock server that responds to every PUT with 200 after
/// `delay`, and returns it with the `iata` field of each body received.
pub async fn slow_server(
    delay: Duration,
) -> (
    wiremock::MockServer,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use wiremock::{matchers::method, Mock, MockServer, Request, ResponseTemplate};
    let codes: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let seen = codes.clone();
    let server = MockServer::start().await;
    let responder = move |request: &Request| {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        seen.lock()
            .unwrap()
            .push(body["iata"].as_str().unwrap().to_owned());
        ResponseTemplate::new(200).set_delay(delay)
    };
    Mock::given(method("PUT"))
        .respond_with(responder)
        .mount(&server)
        .await;
    (server, codes)
}

/// Starts a wiremock server that responds to every PUT with 503 while the
/// returned flag is set, and with 200 once it is cleared.
pub async fn switchable_server() -> (
    wiremock::MockServer,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use wiremock::{matchers::method, Mock, MockServer, Request, ResponseTemplate};
    let down = std::sync::Arc::new(AtomicBool::new(true));
    let failing = down.clone();
    let server = MockServer::start().await;
    let responder = move |_: &Request| {
        if failing.load(Ordering::SeqCst) {
            ResponseTemplate::new(503)
        } else {
            ResponseTemplate::new(200)
        }
    };
    Mock::given(method("PUT"))
        .respond_with(responder)
        .mount(&server)
        .await;
    (server, down)
}
