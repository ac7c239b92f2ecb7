//! The measured child processes: `sluice run`, the Python baseline, and
//! `sluice plugin info` for the plugin's start time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;

use crate::dataset::Input;
use crate::process;

/// Retry settings for every delivering run, sluice's and the baseline's.
/// Backoff delays are short so that a run with faults measures the host's
/// work rather than sleeping. With 10 retries, a record fails for good
/// only after 11 faults in a row, which at a 20 % fault rate happens to
/// about one record in 50 million, so the breaker threshold is never
/// reached.
#[derive(Clone, Copy, Debug)]
pub struct RetrySettings {
    pub max_retries: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub failure_threshold: u32,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            max_retries: 10,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(50),
            failure_threshold: 50,
        }
    }
}

impl RetrySettings {
    /// Describes the settings as sluice's command-line options.
    pub fn as_flags(&self) -> String {
        format!(
            "--max-retries {} --initial-backoff {} --max-backoff {} --failure-threshold {}",
            self.max_retries,
            humantime::format_duration(self.initial_backoff),
            humantime::format_duration(self.max_backoff),
            self.failure_threshold
        )
    }
}

/// The endpoint, path template, concurrency and retry settings of every
/// delivering run.
pub struct Target<'a> {
    pub endpoint: &'a str,
    pub path_template: &'a str,
    pub concurrency: usize,
    /// Runs sluice with `--concurrency adaptive` instead of the number.
    pub adaptive: bool,
    pub retry: RetrySettings,
}

/// One timed run of a client sending the input to the sink.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Wall time: of the process from spawn to exit, or of the wire-limit
    /// client's sending.
    pub elapsed: Duration,
    /// User plus system CPU time of the client.
    pub cpu: Duration,
    /// CPU time of the sink's threads during the run.
    pub sink_cpu: Duration,
    pub retries: u64,
    /// Peak resident set size of the process, 0 for the in-process client.
    pub max_rss: u64,
    /// The rate the client reported itself, which leaves out its start.
    pub reported_rate: f64,
}

/// Runs `sluice run` on `input` in a fresh temporary directory.
///
/// # Errors
///
/// Fails when sluice cannot start, exits with a status other than 0, or
/// delivers fewer records than the input holds.
pub fn sluice(
    sluice: &Path,
    plugin: &Path,
    input: &Input,
    target: &Target,
) -> anyhow::Result<Sample> {
    let dir = tempfile::tempdir()?;
    let summary = dir.path().join("summary.json");
    let concurrency = if target.adaptive {
        "adaptive".to_owned()
    } else {
        target.concurrency.to_string()
    };
    let mut command = Command::new(sluice);
    command
        .arg("run")
        .arg("--plugin")
        .arg(plugin)
        .args(["--endpoint", target.endpoint])
        .arg("--plugin-config")
        .arg(format!("path={}", target.path_template))
        .arg("--dead-letter-dir")
        .arg(dir.path().join("dead-letters"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(["--progress", "never"])
        .args(["--concurrency", &concurrency])
        .args(["--max-retries", &target.retry.max_retries.to_string()])
        .arg("--initial-backoff")
        .arg(humantime::format_duration(target.retry.initial_backoff).to_string())
        .arg("--max-backoff")
        .arg(humantime::format_duration(target.retry.max_backoff).to_string())
        .arg("--failure-threshold")
        .arg(target.retry.failure_threshold.to_string())
        .arg("--summary-json")
        .arg(&summary)
        .arg(&input.path)
        .env_remove("SLUICE_LOG")
        .env_remove("SLUICE_CONFIG");
    let finished = process::run(&mut command, dir.path())?;
    if finished.code != 0 {
        anyhow::bail!(
            "sluice run exited with {}:\n{}",
            finished.code,
            finished.stderr_tail()
        );
    }

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary).context("sluice wrote no summary")?)?;
    let total = |field: &str| -> u64 {
        report["files"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|file| file[field].as_u64())
            .sum()
    };
    let delivered = total("delivered");
    if delivered != input.rows {
        anyhow::bail!(
            "sluice delivered {delivered} of {} records:\n{}",
            input.rows,
            finished.stderr_tail()
        );
    }
    let reported_elapsed = report["elapsed_seconds"].as_f64().unwrap_or(0.0);
    Ok(Sample {
        elapsed: finished.elapsed,
        cpu: finished.cpu,
        retries: total("retries"),
        max_rss: finished.max_rss,
        reported_rate: rate(delivered, reported_elapsed),
        ..Sample::default()
    })
}

/// Runs the Python baseline on `input`.
///
/// # Errors
///
/// Fails when Python cannot start, the script fails, or it delivers fewer
/// rows than the input holds.
pub fn baseline(
    python: &Path,
    script: &Path,
    input: &Input,
    target: &Target,
) -> anyhow::Result<Sample> {
    let dir = tempfile::tempdir()?;
    let mut command = Command::new(python);
    command
        .arg(script)
        .arg(&input.path)
        .args(["--endpoint", target.endpoint])
        .args(["--path", target.path_template])
        .args(["--concurrency", &target.concurrency.to_string()])
        .args(["--max-retries", &target.retry.max_retries.to_string()])
        .arg("--initial-backoff")
        .arg(target.retry.initial_backoff.as_secs_f64().to_string())
        .arg("--max-backoff")
        .arg(target.retry.max_backoff.as_secs_f64().to_string());
    let finished = process::run(&mut command, dir.path())?;
    if finished.code != 0 {
        anyhow::bail!(
            "the Python baseline exited with {}:\n{}",
            finished.code,
            finished.stderr_tail()
        );
    }
    let result: serde_json::Value = serde_json::from_str(finished.stdout.trim())
        .with_context(|| format!("unexpected baseline output {:?}", finished.stdout))?;
    let delivered = result["delivered"].as_u64().unwrap_or(0);
    if delivered != input.rows {
        anyhow::bail!(
            "the Python baseline delivered {delivered} of {} rows",
            input.rows
        );
    }
    Ok(Sample {
        elapsed: finished.elapsed,
        cpu: finished.cpu,
        retries: result["retries"].as_u64().unwrap_or(0),
        max_rss: finished.max_rss,
        reported_rate: rate(delivered, result["elapsed"].as_f64().unwrap_or(0.0)),
        ..Sample::default()
    })
}

/// Returns the Python version and the versions of httpx and tenacity.
/// When they are missing, the error explains how to install them.
///
/// # Errors
///
/// Fails when `python` cannot import httpx or tenacity.
pub fn baseline_versions(python: &Path) -> anyhow::Result<String> {
    let output = Command::new(python)
        .args([
            "-c",
            "import sys, httpx, tenacity, importlib.metadata as m; \
             print(f\"Python {sys.version.split()[0]}, httpx {httpx.__version__}, \
             tenacity {m.version('tenacity')}\")",
        ])
        .output()
        .with_context(|| format!("failed to start {}", python.display()))?;
    if !output.status.success() {
        anyhow::bail!(
            "{} cannot import httpx and tenacity; scripts/bench installs them into \
             .tools/bench (or pass --python, or --skip-baseline):\n{}",
            python.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// One start of the plugin.
#[derive(Clone, Copy, Debug)]
pub struct PluginStart {
    /// Wall time of `sluice plugin info`, process start and exit included.
    pub process: Duration,
    /// The host's own `total_ms` from its "plugin loaded" log line:
    /// reading, compiling or loading from the cache, linking, and `info`.
    pub load: Duration,
}

/// Starts the plugin twice with a fresh compiled-code cache: the first
/// start compiles and fills the cache (cold), the second loads from it
/// (warm). wasmtime 48's default cache directory is
/// `$XDG_CACHE_HOME/wasmtime` (or `$HOME/.cache/wasmtime`), so a fresh
/// `XDG_CACHE_HOME` gives an empty cache.
///
/// # Errors
///
/// Fails when `sluice plugin info` fails, logs no load time, or leaves the
/// cache directory empty.
pub fn plugin_start(sluice: &Path, plugin: &Path) -> anyhow::Result<(PluginStart, PluginStart)> {
    let dir = tempfile::tempdir()?;
    let cache_home = dir.path().join("cache");
    std::fs::create_dir(&cache_home)?;
    let start = || -> anyhow::Result<PluginStart> {
        let out = tempfile::tempdir()?;
        let mut command = Command::new(sluice);
        command
            .args(["--log-level", "sluice=debug", "plugin", "info"])
            .arg(plugin)
            .env("XDG_CACHE_HOME", &cache_home)
            .env_remove("SLUICE_LOG");
        let finished = process::run(&mut command, out.path())?;
        if finished.code != 0 {
            anyhow::bail!(
                "sluice plugin info exited with {}:\n{}",
                finished.code,
                finished.stderr_tail()
            );
        }
        let load = logged_millis(&finished.stderr, "total_ms=").with_context(|| {
            format!(
                "sluice plugin info logged no \"plugin loaded\" line:\n{}",
                finished.stderr_tail()
            )
        })?;
        Ok(PluginStart {
            process: finished.elapsed,
            load,
        })
    };
    let cold = start()?;
    let cached = count_files(&cache_home.join("wasmtime"));
    if cached == 0 {
        anyhow::bail!(
            "the cold start wrote nothing to {}, so the warm start would not be warm",
            cache_home.join("wasmtime").display()
        );
    }
    let warm = start()?;
    Ok((cold, warm))
}

/// Finds `field` followed by a number of milliseconds in a log.
fn logged_millis(log: &str, field: &str) -> Option<Duration> {
    let start = log.find(field)? + field.len();
    let digits: String = log[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok().map(Duration::from_millis)
}

fn count_files(dir: &Path) -> usize {
    let mut count = 0;
    let mut pending: Vec<PathBuf> = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => pending.push(entry.path()),
                Ok(_) => count += 1,
                Err(_) => {}
            }
        }
    }
    count
}

/// Returns `count / seconds`, or 0 for no time.
pub fn rate(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_millis_reads_the_field() {
        let log = "DEBUG plugin loaded plugin=csv compile_ms=4 total_ms=17\n";
        assert_eq!(
            logged_millis(log, "total_ms="),
            Some(Duration::from_millis(17))
        );
        assert_eq!(logged_millis(log, "missing="), None);
    }
}
