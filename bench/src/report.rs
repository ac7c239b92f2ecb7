//! The results of one harness run and their report: Markdown tables of
//! medians and ratios, and each target marked met or missed.

use std::fmt::Write as _;
use std::time::Duration;

use crate::dataset::Input;
use crate::machine::Machine;
use crate::runs::{rate, PluginStart, RetrySettings, Sample};

/// The targets the project aims for.
const WIRE_RATIO_TARGET: f64 = 0.8;
const BASELINE_RATIO_TARGET: f64 = 10.0;
const FAULT_RATIO_TARGET: f64 = 0.6;
const RSS_TARGET: u64 = 128 * 1024 * 1024;
/// Peak RSS on the large input may exceed the small input's by this
/// factor and still count as flat.
const RSS_FLAT_FACTOR: f64 = 1.25;
const START_TARGET: Duration = Duration::from_millis(50);

const MIB: f64 = 1024.0 * 1024.0;

/// Everything one harness run measured.
pub struct Results {
    pub command: String,
    pub machine: Machine,
    pub load_before: String,
    pub load_after: String,
    pub runs: usize,
    pub concurrency: usize,
    pub fault_rate: f64,
    pub latency: Duration,
    pub retry: RetrySettings,
    pub input: Input,
    pub key_columns: Vec<String>,
    pub parse_records: u64,
    pub plugin_parse: Vec<Duration>,
    pub native_parse: Vec<Duration>,
    pub wire: Vec<Sample>,
    /// The wire limit of hyper's client alone, the stack sluice sends with.
    pub wire_hyper: Vec<Sample>,
    pub wire_body_bytes: u64,
    pub sluice: Vec<Sample>,
    pub sluice_faults: Vec<Sample>,
    /// 503 responses the sink sent in each run with faults.
    pub faults_sent: Vec<u64>,
    pub baseline: Option<Baseline>,
    pub large: Option<(Input, Sample)>,
    pub adaptive: Option<Adaptive>,
    pub starts: Vec<(PluginStart, PluginStart)>,
}

/// sluice with a fixed and with an adaptive concurrency limit, and the wire
/// limit at the fixed one, against the sink with added latency.
pub struct Adaptive {
    pub latency: Duration,
    /// The first rows of the input.
    pub input: Input,
    pub wire: Vec<Sample>,
    pub fixed: Vec<Sample>,
    pub adaptive: Vec<Sample>,
}

/// The Python baseline's runs.
pub struct Baseline {
    pub versions: String,
    /// The first rows of the input, which the baseline sends.
    pub input: Input,
    pub runs: Vec<Sample>,
}

/// Returns the median of `times`, or zero when there are none.
pub fn median(times: impl IntoIterator<Item = Duration>) -> Duration {
    let mut times: Vec<Duration> = times.into_iter().collect();
    times.sort();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

fn median_u64(values: impl IntoIterator<Item = u64>) -> u64 {
    let mut values: Vec<u64> = values.into_iter().collect();
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

fn millis(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1e3)
}

/// Rate of `count` items per median time, and the range over all runs.
fn rate_cells(count: u64, times: &[Duration]) -> (f64, String) {
    let median_rate = rate(count, median(times.iter().copied()).as_secs_f64());
    let rates = times.iter().map(|time| rate(count, time.as_secs_f64()));
    let low = rates.clone().fold(f64::INFINITY, f64::min);
    let high = rates.fold(0.0, f64::max);
    (
        median_rate,
        format!("{}-{}", thousands(low), thousands(high)),
    )
}

fn elapsed_times(samples: &[Sample]) -> Vec<Duration> {
    samples.iter().map(|sample| sample.elapsed).collect()
}

/// Records per second at the median wall time of `samples`.
fn median_rate(count: u64, samples: &[Sample]) -> f64 {
    rate_cells(count, &elapsed_times(samples)).0
}

fn rate_range(count: u64, samples: &[Sample]) -> String {
    rate_cells(count, &elapsed_times(samples)).1
}

fn median_reported(samples: &[Sample]) -> f64 {
    let mut rates: Vec<f64> = samples.iter().map(|sample| sample.reported_rate).collect();
    rates.sort_by(f64::total_cmp);
    rates.get(rates.len() / 2).copied().unwrap_or_default()
}

/// Returns the range of the ratios of two clients' rates, round by round.
/// Each side is a record count and that client's samples in round order.
fn round_ratios(
    (numerator_rows, numerator): (u64, &[Sample]),
    (denominator_rows, denominator): (u64, &[Sample]),
) -> String {
    let ratios: Vec<f64> = numerator
        .iter()
        .zip(denominator)
        .map(|(top, bottom)| {
            rate(numerator_rows, top.elapsed.as_secs_f64())
                / rate(denominator_rows, bottom.elapsed.as_secs_f64())
        })
        .collect();
    let low = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let high = ratios.iter().copied().fold(0.0, f64::max);
    // Two decimals for ratios near 1, one for the large ones.
    let digits = if high >= 10.0 { 1 } else { 2 };
    if ratios.is_empty() {
        "-".to_owned()
    } else if ratios.len() == 1 || low == high {
        format!("{low:.digits$}")
    } else {
        format!("{low:.digits$}-{high:.digits$}")
    }
}

/// Median CPU microseconds per record of the client and of the sink.
fn cpu_cells(count: u64, samples: &[Sample]) -> String {
    let per_record = |time: Duration| time.as_secs_f64() * 1e6 / count.max(1) as f64;
    let client = median(samples.iter().map(|sample| sample.cpu));
    let sink = median(samples.iter().map(|sample| sample.sink_cpu));
    format!("{:.1} + {:.1}", per_record(client), per_record(sink))
}

impl Results {
    /// Renders the report as Markdown.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.write_setup(&mut out);
        let rates = self.write_throughput(&mut out);
        self.write_memory(&mut out);
        self.write_parsing(&mut out);
        self.write_adaptive(&mut out);
        self.write_start(&mut out);
        self.write_targets(&mut out, &rates);
        out
    }

    fn write_setup(&self, out: &mut String) {
        let machine = &self.machine;
        let _ = writeln!(out, "## Setup\n");
        let _ = writeln!(out, "- command: `{}`", self.command);
        let _ = writeln!(
            out,
            "- machine: {} cores, {}, {:.1} GiB memory; {}, wasmtime {}",
            machine.cores, machine.cpu, machine.memory_gib, machine.rustc, machine.wasmtime
        );
        let _ = writeln!(
            out,
            "- load average (1, 5, 15 min): {} before, {} after",
            self.load_before, self.load_after
        );
        let _ = writeln!(
            out,
            "- input: `{}`, {} rows, {:.1} MB; key columns {}",
            self.input
                .path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy(),
            thousands(self.input.rows as f64),
            self.input.bytes as f64 / 1e6,
            self.key_columns.join(",")
        );
        let _ = writeln!(
            out,
            "- {} in flight; sink on 127.0.0.1 responding with 204, added latency {}; \
             medians of {} runs",
            self.concurrency,
            humantime::format_duration(self.latency),
            self.runs
        );
        let _ = writeln!(
            out,
            "- retries for sluice and the baseline: `{}`; the sink fails {:.0} % of \
             requests with 503 in the runs with faults",
            self.retry.as_flags(),
            self.fault_rate * 100.0
        );
        if let Some(baseline) = &self.baseline {
            let _ = writeln!(
                out,
                "- baseline: `bench/baseline.py` on the first {} rows, {}",
                thousands(baseline.input.rows as f64),
                baseline.versions
            );
        }
        out.push('\n');
    }

    fn write_throughput(&self, out: &mut String) -> Rates {
        let rows = self.input.rows;
        let wire_body = self.wire_body_bytes as f64 / rows.max(1) as f64;
        let wire = median_rate(rows, &self.wire);
        let sluice = median_rate(rows, &self.sluice);
        let faults = median_rate(rows, &self.sluice_faults);

        let _ = writeln!(out, "## Throughput\n");
        let _ = writeln!(
            out,
            "Records per second from start to exit of each process (the wire-limit \
             client runs in the harness and is timed from its first request to its \
             last response), the range over the runs, and CPU time per record of the \
             client and of the sink (medians).\n"
        );
        let _ = writeln!(
            out,
            "| run | records/s | range | vs wire limit | CPU µs/record: client + sink | notes |\n\
             | --- | ---: | ---: | ---: | ---: | --- |"
        );
        let _ = writeln!(
            out,
            "| wire limit: reqwest, precomputed requests | {} | {} | 1.00 | {} | \
             the requests sluice sends, {wire_body:.0}-byte bodies on average |",
            thousands(wire),
            rate_range(rows, &self.wire),
            cpu_cells(rows, &self.wire)
        );
        let hyper = median_rate(rows, &self.wire_hyper);
        let _ = writeln!(
            out,
            "| wire limit: hyper alone, precomputed requests | {} | {} | {:.2} | {} | \
             the HTTP stack sluice sends with, without reqwest |",
            thousands(hyper),
            rate_range(rows, &self.wire_hyper),
            hyper / wire,
            cpu_cells(rows, &self.wire_hyper)
        );
        let _ = writeln!(
            out,
            "| sluice, fault-free | {} | {} | {:.2} | {} | sluice's own summary: {} records/s; \
             {:.2}× hyper alone |",
            thousands(sluice),
            rate_range(rows, &self.sluice),
            sluice / wire,
            cpu_cells(rows, &self.sluice),
            thousands(median_reported(&self.sluice)),
            sluice / hyper
        );
        let retries = median_u64(self.sluice_faults.iter().map(|run| run.retries));
        let sent_503 = median_u64(self.faults_sent.iter().copied());
        let _ = writeln!(
            out,
            "| sluice, {:.0} % 503s | {} | {} | {:.2} | {} | {:.2}× its fault-free rate; \
             {} retries, {} 503 responses |",
            self.fault_rate * 100.0,
            thousands(faults),
            rate_range(rows, &self.sluice_faults),
            faults / wire,
            cpu_cells(rows, &self.sluice_faults),
            faults / sluice,
            thousands(retries as f64),
            thousands(sent_503 as f64)
        );
        let mut rates = Rates {
            wire,
            sluice,
            faults,
            baseline: None,
        };
        if let Some(baseline) = &self.baseline {
            let python_rows = baseline.input.rows;
            let python = median_rate(python_rows, &baseline.runs);
            let _ = writeln!(
                out,
                "| Python: httpx async + tenacity, fault-free | {} | {} | {:.3} | {} | \
                 first {} rows; its own timing: {} rows/s; sluice is {:.1}× faster |",
                thousands(python),
                rate_range(python_rows, &baseline.runs),
                python / wire,
                cpu_cells(python_rows, &baseline.runs),
                thousands(python_rows as f64),
                thousands(median_reported(&baseline.runs)),
                sluice / python
            );
            rates.baseline = Some(python);
        }
        out.push('\n');
        rates
    }
    fn write_memory(&self, out: &mut String) {
        let _ = writeln!(out, "## Peak memory of the sluice process\n");
        let _ = writeln!(
            out,
            "Peak resident set size of fault-free runs: the process's `VmHWM`, read \
             from `/proc/PID/status` every 10 ms until it exits.\n"
        );
        let _ = writeln!(
            out,
            "| input | rows | MB | peak RSS (median) | records/s |\n| --- | ---: | ---: | ---: | ---: |"
        );
        let small = median_u64(self.sluice.iter().map(|run| run.max_rss));
        let _ = writeln!(
            out,
            "| `{}` | {} | {:.1} | {:.1} MiB | {} |",
            self.input
                .path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy(),
            thousands(self.input.rows as f64),
            self.input.bytes as f64 / 1e6,
            small as f64 / MIB,
            thousands(median_rate(self.input.rows, &self.sluice))
        );
        if let Some((input, run)) = &self.large {
            let _ = writeln!(
                out,
                "| `{}` (one run) | {} | {:.1} | {:.1} MiB | {} |",
                input.path.file_name().unwrap_or_default().to_string_lossy(),
                thousands(input.rows as f64),
                input.bytes as f64 / 1e6,
                run.max_rss as f64 / MIB,
                thousands(rate(input.rows, run.elapsed.as_secs_f64()))
            );
        }
        if let Some(baseline) = &self.baseline {
            let python = median_u64(baseline.runs.iter().map(|run| run.max_rss));
            let _ = writeln!(
                out,
                "\nThe Python baseline peaked at {:.1} MiB on its {} rows.",
                python as f64 / MIB,
                thousands(baseline.input.rows as f64)
            );
        }
        out.push('\n');
    }

    fn write_parsing(&self, out: &mut String) {
        let records = self.parse_records;
        let mb = self.input.bytes as f64 / 1e6;
        let _ = writeln!(out, "## Parsing alone\n");
        let _ = writeln!(
            out,
            "The same bytes, in memory: the CSV plugin through `sluice::plugin` \
             (`feed` in 64 KiB chunks, then `finish`), and the `csv` crate's \
             `read_byte_record` natively.\n"
        );
        let _ = writeln!(
            out,
            "| parser | records/s | MB/s | range (records/s) |\n| --- | ---: | ---: | ---: |"
        );
        for (label, times) in [
            ("CSV plugin (component)", &self.plugin_parse),
            ("`csv` crate (native)", &self.native_parse),
        ] {
            let (median_rate, range) = rate_cells(records, times);
            let seconds = median(times.iter().copied()).as_secs_f64();
            let _ = writeln!(
                out,
                "| {label} | {} | {:.0} | {range} |",
                thousands(median_rate),
                mb / seconds
            );
        }
        out.push('\n');
    }

    fn write_adaptive(&self, out: &mut String) {
        let Some(comparison) = &self.adaptive else {
            return;
        };
        let rows = comparison.input.rows;
        let _ = writeln!(
            out,
            "## Adaptive concurrency
"
        );
        let _ = writeln!(
            out,
            "The first {} rows, fault-free, while the sink waits {} before every \
             response, as a remote API would. Ratios are to sluice with the fixed \
             limit of {}, round by round.\n",
            thousands(rows as f64),
            humantime::format_duration(comparison.latency),
            self.concurrency
        );
        let _ = writeln!(
            out,
            "| run | records/s | range | vs fixed limit |\n| --- | ---: | ---: | ---: |"
        );
        for (label, samples) in [
            (
                format!("wire limit: reqwest, {} in flight", self.concurrency),
                &comparison.wire,
            ),
            (
                format!("sluice, `--concurrency {}`", self.concurrency),
                &comparison.fixed,
            ),
            (
                "sluice, `--concurrency adaptive`".to_owned(),
                &comparison.adaptive,
            ),
        ] {
            let _ = writeln!(
                out,
                "| {label} | {} | {} | {} |",
                thousands(median_rate(rows, samples)),
                rate_range(rows, samples),
                round_ratios((rows, samples), (rows, &comparison.fixed))
            );
        }
        out.push('\n');
    }

    fn write_start(&self, out: &mut String) {
        let _ = writeln!(out, "## Plugin start\n");
        let _ = writeln!(
            out,
            "`sluice plugin info plugins/csv.wasm` with an empty compiled-code cache \
             (a fresh `XDG_CACHE_HOME`), then again with the cache it filled. \
             \"process\" is the wall time from spawn to exit; \"load\" is the host's \
             own `total_ms` from its \"plugin loaded\" log line (read, compile or \
             load from the cache, link, call `info`).\n"
        );
        let _ = writeln!(
            out,
            "| start | process (median) | load (median) |\n| --- | ---: | ---: |"
        );
        let (cold, warm) = self.start_medians();
        for (label, start) in [("cold (empty cache)", cold), ("warm (cached)", warm)] {
            let _ = writeln!(
                out,
                "| {label} | {} | {} ms |",
                millis(start.process),
                start.load.as_millis()
            );
        }
        out.push('\n');
    }

    fn start_medians(&self) -> (PluginStart, PluginStart) {
        let pick = |cold: bool| PluginStart {
            process: median(
                self.starts
                    .iter()
                    .map(|(c, w)| if cold { c } else { w }.process),
            ),
            load: median(
                self.starts
                    .iter()
                    .map(|(c, w)| if cold { c } else { w }.load),
            ),
        };
        (pick(true), pick(false))
    }

    fn write_targets(&self, out: &mut String, rates: &Rates) {
        let _ = writeln!(out, "## Targets\n");
        let _ = writeln!(
            out,
            "Ratios of the median rates, and the range of the ratios within each round. \
             A round runs every client once, back to back, so its ratios share the \
             machine's load.\n"
        );
        let _ = writeln!(out, "| target | measured | result |\n| --- | --- | --- |");
        let verdict = |met: bool| if met { "met" } else { "missed" };

        let rows = self.input.rows;
        let wire_ratio = rates.sluice / rates.wire;
        let _ = writeln!(
            out,
            "| sluice fault-free ≥ {WIRE_RATIO_TARGET}× the wire limit | {wire_ratio:.2}× \
             (per round: {}) | {} |",
            round_ratios((rows, &self.sluice), (rows, &self.wire)),
            verdict(wire_ratio >= WIRE_RATIO_TARGET)
        );
        let _ = writeln!(
            out,
            "| (no target) sluice fault-free against hyper alone | {:.2}× (per round: {}) | - |",
            rates.sluice / median_rate(rows, &self.wire_hyper),
            round_ratios((rows, &self.sluice), (rows, &self.wire_hyper))
        );
        match (rates.baseline, &self.baseline) {
            (Some(python), Some(baseline)) => {
                let ratio = rates.sluice / python;
                let _ = writeln!(
                    out,
                    "| sluice ≥ {BASELINE_RATIO_TARGET}× the Python baseline | {ratio:.1}× \
                     (per round: {}) | {} |",
                    round_ratios((rows, &self.sluice), (baseline.input.rows, &baseline.runs)),
                    verdict(ratio >= BASELINE_RATIO_TARGET)
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "| sluice ≥ {BASELINE_RATIO_TARGET}× the Python baseline | not run | - |"
                );
            }
        }
        let fault_ratio = rates.faults / rates.sluice;
        let _ = writeln!(
            out,
            "| with {:.0} % faults ≥ {FAULT_RATIO_TARGET}× the fault-free rate | {fault_ratio:.2}× \
             (per round: {}) | {} |",
            self.fault_rate * 100.0,
            round_ratios((rows, &self.sluice_faults), (rows, &self.sluice)),
            verdict(fault_ratio >= FAULT_RATIO_TARGET)
        );

        let small = median_u64(self.sluice.iter().map(|run| run.max_rss));
        let peaks = |runs: &[Sample]| runs.iter().map(|run| run.max_rss).collect::<Vec<_>>();
        let mut by_kind = vec![
            ("fault-free", peaks(&self.sluice)),
            ("with faults", peaks(&self.sluice_faults)),
        ];
        if let Some((_, run)) = &self.large {
            by_kind.push(("larger input", vec![run.max_rss]));
        }
        let peak = by_kind
            .iter()
            .flat_map(|(_, peaks)| peaks.iter().copied())
            .max()
            .unwrap_or(0);
        // Every run's peak, so that an outlier shows which run it was.
        let listed: Vec<String> = by_kind
            .iter()
            .map(|(kind, peaks)| {
                let peaks: Vec<String> = peaks
                    .iter()
                    .map(|peak| format!("{:.1}", *peak as f64 / MIB))
                    .collect();
                format!("{kind} {}", peaks.join(", "))
            })
            .collect();
        let _ = writeln!(
            out,
            "| peak RSS < {} MiB | {:.1} MiB, highest of all runs (MiB: {}) | {} |",
            RSS_TARGET / (1024 * 1024),
            peak as f64 / MIB,
            listed.join("; "),
            verdict(peak < RSS_TARGET)
        );
        match &self.large {
            Some((input, run)) => {
                let factor = run.max_rss as f64 / small.max(1) as f64;
                let _ = writeln!(
                    out,
                    "| peak RSS flat from {:.0} MB to {:.0} MB input (at most {RSS_FLAT_FACTOR}×) \
                     | {:.1} → {:.1} MiB ({factor:.2}×) | {} |",
                    self.input.bytes as f64 / 1e6,
                    input.bytes as f64 / 1e6,
                    small as f64 / MIB,
                    run.max_rss as f64 / MIB,
                    verdict(factor <= RSS_FLAT_FACTOR)
                );
            }
            None => {
                let _ = writeln!(out, "| peak RSS flat on a larger input | not run | - |");
            }
        }

        let (_, warm) = self.start_medians();
        let _ = writeln!(
            out,
            "| plugin start < {} ms with the cache | {} (whole process) | {} |",
            START_TARGET.as_millis(),
            millis(warm.process),
            verdict(warm.process < START_TARGET)
        );
    }
}

/// Median rates in records per second.
struct Rates {
    wire: f64,
    sluice: f64,
    faults: f64,
    baseline: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1234.0), "1,234");
        assert_eq!(thousands(336_776.0), "336,776");
    }

    #[test]
    fn median_takes_middle() {
        let times = [3, 1, 2].map(Duration::from_millis);
        assert_eq!(median(times), Duration::from_millis(2));
        assert_eq!(median([]), Duration::ZERO);
    }
}
