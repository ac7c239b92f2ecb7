//! Measures the cost of the plugin boundary: parsing a CSV file through
//! the component, and mapping its records one per call versus in batches.
//! Every measurement runs twice, with the per-call deadline (epoch
//! interruption, as real runs use) and without it, alternating, so that the
//! deadline's cost shows as a ratio that a busy machine distorts little.
//!
//! Run with `cargo bench -p sluice --bench plugin_boundary`; it needs
//! `plugins/csv.wasm` (built by `scripts/setup`). The input defaults to the
//! bundled `examples/data/zipcodes.csv`; pass another CSV path and its key
//! column as arguments to measure that instead.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sluice::plugin::{Parsed, Plugin, PluginLimits, Record};

const RUNS: usize = 5;
const CHUNK: usize = 64 * 1024;

fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut args = std::env::args().skip(1).filter(|arg| arg != "--bench");
    let input = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("examples/data/zipcodes.csv"));
    let key = args.next().unwrap_or_else(|| "zip_code".to_owned());
    let bytes = std::fs::read(&input)?;
    let plugin_path = root.join("plugins/csv.wasm");
    anyhow::ensure!(
        plugin_path.is_file(),
        "{} is missing; run scripts/setup first",
        plugin_path.display()
    );

    let config = vec![
        ("key".to_owned(), key.clone()),
        ("path".to_owned(), format!("/items/{{{key}}}")),
    ];
    let mut bounded = Plugin::load(&plugin_path, PluginLimits::default())?;
    bounded.configure(config.clone())?;
    let mut unbounded = Plugin::load_without_call_deadline(&plugin_path, PluginLimits::default())?;
    unbounded.configure(config)?;

    let mb = bytes.len() as f64 / 1e6;
    let (count, with_deadline, without_deadline) = measure(&bounded, &unbounded, &bytes)?;
    println!(
        "input      {} ({count} records, {mb:.1} MB)",
        input.display()
    );
    for (label, times) in [
        ("with the call deadline", &with_deadline),
        ("without a call deadline", &without_deadline),
    ] {
        println!("{label} (medians of {RUNS} runs):");
        println!(
            "  parse      {:.0} records/s, {:.0} MB/s",
            count as f64 / times.parse.as_secs_f64(),
            mb / times.parse.as_secs_f64()
        );
        println!(
            "  map batch  {:.2} µs per record",
            times.batched.as_secs_f64() * 1e6 / count as f64
        );
        println!(
            "  map single {:.2} µs per record",
            times.single.as_secs_f64() * 1e6 / count as f64
        );
    }
    let overhead = |with: Duration, without: Duration| {
        (with.as_secs_f64() / without.as_secs_f64() - 1.0) * 100.0
    };
    println!(
        "deadline overhead: parse {:+.1} %, map batch {:+.1} %, map single {:+.1} %",
        overhead(with_deadline.parse, without_deadline.parse),
        overhead(with_deadline.batched, without_deadline.batched),
        overhead(with_deadline.single, without_deadline.single)
    );
    Ok(())
}

/// Median times of one plugin's parse and map runs.
struct Times {
    parse: Duration,
    batched: Duration,
    single: Duration,
}

/// Runs every measurement `RUNS` times on each plugin, alternating between
/// them, and returns the record count and each plugin's medians.
fn measure(first: &Plugin, second: &Plugin, bytes: &[u8]) -> anyhow::Result<(usize, Times, Times)> {
    let mut samples = [Vec::new(), Vec::new()];
    let mut count = 0;
    for _ in 0..RUNS {
        for (plugin, samples) in [first, second].into_iter().zip(samples.iter_mut()) {
            let (records, parsed) = parse(plugin, bytes)?;
            count = records.len();
            let batched = map(plugin, bytes, &records, CHUNK)?;
            let single = map(plugin, bytes, &records, 1)?;
            samples.push((parsed, batched, single));
        }
    }
    let [first, second] = samples.map(|runs| {
        let column = |pick: fn(&(Duration, Duration, Duration)) -> Duration| {
            let mut times: Vec<Duration> = runs.iter().map(pick).collect();
            median(&mut times)
        };
        Times {
            parse: column(|run| run.0),
            batched: column(|run| run.1),
            single: column(|run| run.2),
        }
    });
    Ok((count, first, second))
}

fn parse(plugin: &Plugin, bytes: &[u8]) -> anyhow::Result<(Vec<Record>, Duration)> {
    let mut parser = plugin.instantiate()?.parser()?;
    let started = Instant::now();
    let mut records = Vec::new();
    for chunk in bytes.chunks(CHUNK) {
        collect(parser.feed(chunk)?, &mut records);
    }
    collect(parser.finish()?, &mut records);
    Ok((records, started.elapsed()))
}

fn collect(parsed: Vec<Parsed>, records: &mut Vec<Record>) {
    for item in parsed {
        if let Parsed::Record(record) = item {
            records.push(record);
        }
    }
}

/// Maps `records` in batches of up to `batch` records per call. The batch
/// size of the host's pipeline is "every record of one chunk".
fn map(
    plugin: &Plugin,
    bytes: &[u8],
    records: &[Record],
    batch: usize,
) -> anyhow::Result<Duration> {
    let mut parser = plugin.instantiate()?.parser()?;
    // Feed the header so the parser knows the columns.
    let header_end = bytes
        .iter()
        .position(|b| *b == b'\n')
        .map_or(bytes.len(), |i| i + 1);
    parser.feed(&bytes[..header_end])?;
    let per_call = if batch == 1 {
        1
    } else {
        records.len().div_ceil(bytes.len().div_ceil(batch))
    };
    let started = Instant::now();
    for group in records.chunks(per_call.max(1)) {
        let mapped = parser.map(group)?;
        assert_eq!(mapped.len(), group.len());
    }
    Ok(started.elapsed())
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}
