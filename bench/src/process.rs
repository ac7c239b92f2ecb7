//! Child processes timed from spawn to exit, with their CPU time from
//! `wait4` and their peak resident set size from `/proc/PID/status`.
//!
//! `ru_maxrss` cannot give the peak: on Linux, `exec` carries the high-water
//! mark of the memory it replaces into the process's totals, so a child of
//! a large parent reports at least the parent's size. `VmHWM` is the
//! high-water mark of the child's own memory since `exec`. It is polled
//! until the child exits, and the child is reaped only after the last poll,
//! so its PID cannot be reused meanwhile.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// A finished child process.
pub struct Finished {
    pub elapsed: Duration,
    /// The exit code, or 128 plus the signal that ended the process.
    pub code: i32,
    /// Peak resident set size in bytes (`VmHWM`), as of the last poll
    /// before the process exited.
    pub max_rss: u64,
    /// User plus system CPU time.
    pub cpu: Duration,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// Returns the last lines of stderr, for error messages.
    pub fn stderr_tail(&self) -> String {
        let lines: Vec<&str> = self.stderr.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

/// How often the child's `VmHWM` is read.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Runs `command` to its end with stdout and stderr sent to files in `dir`,
/// and returns its wall time, exit code, CPU time, peak RSS and output.
///
/// # Errors
///
/// Fails when the command cannot start or cannot be waited for.
pub fn run(command: &mut Command, dir: &Path) -> anyhow::Result<Finished> {
    let stdout_path = dir.join("stdout");
    let stderr_path = dir.join("stderr");
    command
        .stdin(Stdio::null())
        .stdout(File::create(&stdout_path)?)
        .stderr(File::create(&stderr_path)?);

    let started = Instant::now();
    let child = command
        .spawn()
        .with_context(|| format!("failed to start {:?}", command.get_program()))?;
    let pid = libc::pid_t::try_from(child.id())?;
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let poller = {
        let done = done.clone();
        let peak = peak.clone();
        std::thread::spawn(move || {
            let status = format!("/proc/{pid}/status");
            while !done.load(Relaxed) {
                if let Some(hwm) = read_hwm(&status) {
                    peak.fetch_max(hwm, Relaxed);
                }
                std::thread::sleep(POLL_INTERVAL);
            }
        })
    };
    let exited = wait_exited(pid);
    let elapsed = started.elapsed();
    done.store(true, Relaxed);
    let _ = poller.join();
    exited?;
    let (status, usage) = wait4(pid)?;

    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    let max_rss = peak.load(Relaxed);
    let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    let cpu = Duration::from_secs_f64(seconds(usage.ru_utime) + seconds(usage.ru_stime));
    Ok(Finished {
        elapsed,
        code,
        max_rss,
        cpu,
        stdout: std::fs::read_to_string(&stdout_path)?,
        stderr: std::fs::read_to_string(&stderr_path)?,
    })
}

/// Returns `VmHWM` in bytes from a `/proc/PID/status` file, or `None` when
/// the process is gone or has no memory left (a zombie).
fn read_hwm(status: &str) -> Option<u64> {
    let text = std::fs::read_to_string(status).ok()?;
    parse_hwm(&text)
}

fn parse_hwm(text: &str) -> Option<u64> {
    let line = text.lines().find_map(|line| line.strip_prefix("VmHWM:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

/// Waits until the child `pid` has exited, without reaping it.
fn wait_exited(pid: libc::pid_t) -> anyhow::Result<()> {
    loop {
        // SAFETY: siginfo_t is plain old data, for which all zero bytes are
        // valid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a live, writable local, and `pid` is our own
        // child, which nothing else waits for.
        let result = unsafe {
            libc::waitid(
                libc::P_PID,
                libc::id_t::try_from(pid)?,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if result == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err).context("waitid failed");
        }
    }
}

/// Reaps the child `pid` and returns its wait status and resource use.
fn wait4(pid: libc::pid_t) -> anyhow::Result<(libc::c_int, libc::rusage)> {
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data, for which all zero bytes are valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers refer to live, writable locals, and `pid` is
        // our own child, which std's `Child` has not reaped.
        let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if waited == pid {
            return Ok((status, usage));
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err).context("wait4 failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_hwm_reads_kib() {
        let text = "Name:\tsluice\nVmPeak:\t  9000 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 1024 kB\n";
        assert_eq!(parse_hwm(text), Some(2048 * 1024));
        assert_eq!(parse_hwm("Name:\tzombie\n"), None);
    }

    #[test]
    fn peak_rss_is_the_childs_own() {
        // The parent has 256 MiB resident, which the child must not report.
        let ballast = vec![1u8; 256 * 1024 * 1024];
        std::hint::black_box(&ballast);
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new("sh");
        // Long enough for the poller to read the child's status even on a
        // busy machine.
        command.args(["-c", "sleep 1"]);
        let finished = run(&mut command, dir.path()).unwrap();
        assert!(finished.max_rss > 0);
        assert!(finished.max_rss < 64 * 1024 * 1024, "{}", finished.max_rss);
    }

    #[test]
    fn reports_exit_code_and_output() {
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new("sh");
        command.args(["-c", "echo out; echo err >&2; exit 7"]);
        let finished = run(&mut command, dir.path()).unwrap();
        assert_eq!(finished.code, 7);
        assert_eq!(finished.stdout, "out\n");
        assert_eq!(finished.stderr, "err\n");
    }
}
