//! CPU time of this process's threads, by thread name, so that the sink
//! and the wire-limit client, which share the harness process, can be
//! measured apart.

use std::time::Duration;

/// Returns the user plus system CPU time of this process's live threads
/// whose name starts with `prefix`. Threads that have exited no longer
/// count, so measure before a runtime is dropped.
pub fn threads(prefix: &str) -> Duration {
    // SAFETY: sysconf only reads a configuration value.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks_per_second = u64::try_from(ticks_per_second).unwrap_or(100).max(1);
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let mut ticks = 0;
    for task in tasks.flatten() {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !name.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        ticks += stat_ticks(&stat).unwrap_or(0);
    }
    Duration::from_secs_f64(ticks as f64 / ticks_per_second as f64)
}

/// Returns utime plus stime, in clock ticks, from a `/proc/.../stat` line.
fn stat_ticks(stat: &str) -> Option<u64> {
    // The name in parentheses may contain spaces, so count fields from the
    // last ')'. The state (field 3) comes first there, so utime (field 14)
    // and stime (field 15) are the 12th and 13th fields after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_reads_utime_and_stime() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 30 0 0 20 0 1 0";
        assert_eq!(stat_ticks(stat), Some(280));
    }

    #[test]
    fn threads_counts_own_thread() {
        let busy = std::thread::Builder::new()
            .name("cpu-test-busy".to_owned())
            .spawn(|| {
                let started = std::time::Instant::now();
                let mut x = 0u64;
                while started.elapsed() < Duration::from_millis(300) {
                    x = x.wrapping_mul(31).wrapping_add(1);
                }
                std::hint::black_box(x);
                threads("cpu-test-busy")
            })
            .unwrap();
        assert!(busy.join().unwrap() > Duration::ZERO);
    }
}
