//! Measures the cost of the plugin boundary: parsing a CSV file through
//! the component, and mapping its records one per call versus in batches.
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

    let mut plugin = Plugin::load(&plugin_path, PluginLimits::default())?;
    let config = vec![
        ("key".to_owned(), key.clone()),
        ("path".to_owned(), format!("/items/{{{key}}}")),
    ];
    plugin.configure(config)?;

    let mut parse_times = Vec::new();
    let mut batched_times = Vec::new();
    let mut single_times = Vec::new();
    let mut count = 0;
    for _ in 0..RUNS {
        let (records, elapsed) = parse(&plugin, &bytes)?;
        parse_times.push(elapsed);
        count = records.len();
        batched_times.push(map(&plugin, &bytes, &records, CHUNK)?);
        single_times.push(map(&plugin, &bytes, &records, 1)?);
    }

    let mb = bytes.len() as f64 / 1e6;
    let parse = median(&mut parse_times);
    let batched = median(&mut batched_times);
    let single = median(&mut single_times);
    println!(
        "input      {} ({count} records, {mb:.1} MB)",
        input.display()
    );
    println!(
        "parse      {:.0} records/s, {:.0} MB/s (median of {RUNS})",
        count as f64 / parse.as_secs_f64(),
        mb / parse.as_secs_f64()
    );
    println!(
        "map batch  {:.0} records/s ({:.2} µs per record)",
        count as f64 / batched.as_secs_f64(),
        batched.as_secs_f64() * 1e6 / count as f64
    );
    println!(
        "map single {:.0} records/s ({:.2} µs per record)",
        count as f64 / single.as_secs_f64(),
        single.as_secs_f64() * 1e6 / count as f64
    );
    Ok(())
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
