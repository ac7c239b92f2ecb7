//! sluice's benchmark harness. In one run on one machine it measures:
//!
//! - the wire limit: a bare reqwest client sending the exact requests that
//!   sluice sends, precomputed, to an in-process sink on 127.0.0.1;
//! - the real `sluice` binary on nycflights13 `flights.csv`, fault-free and
//!   with a share of transient 503s;
//! - a Python baseline (`bench/baseline.py`: httpx async and tenacity);
//! - parsing alone, the CSV plugin against the `csv` crate;
//! - sluice's peak RSS on the file and on a copy ten times its size;
//! - the plugin's start time with an empty and a filled compiled-code cache.
//!
//! It prints a Markdown report with medians, ratios and the project's
//! targets marked met or missed. `scripts/bench` builds what it needs and
//! runs it.

mod cpu;
mod dataset;
mod machine;
mod parse;
mod process;
mod report;
mod runs;
mod sink;
mod wire;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;

use crate::report::{Adaptive, Baseline, Results};
use crate::runs::{RetrySettings, Sample, Target};
use crate::sink::Sink;
use crate::wire::Client;

/// Rows of the input in `--smoke` mode.
const SMOKE_ROWS: u64 = 5_000;

/// Share of requests the sink fails with 503 in the runs with faults.
const DEFAULT_FAULT_RATE: f64 = 0.2;

/// Benchmarks sluice against the loopback wire limit and a Python baseline.
#[derive(Debug, Parser)]
#[command(name = "sluice-bench")]
struct Args {
    /// Runs of each timed measurement; the report quotes medians.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,

    /// Check the harness end to end quickly: the first 5,000 rows, one run
    /// of each measurement, and no large input.
    #[arg(long)]
    smoke: bool,

    /// Use only the first N rows of the input.
    #[arg(long, value_name = "N")]
    rows: Option<u64>,

    /// Copies of the input in the large file for the memory measurement;
    /// 0 skips it.
    #[arg(long, value_name = "N", default_value_t = 10)]
    repeat: u32,

    /// Requests in flight, for every client.
    #[arg(long, value_name = "N", default_value_t = 16)]
    concurrency: usize,

    /// Share of requests the sink fails with 503 in the runs with faults
    /// [default: 0.2].
    #[arg(long, value_name = "RATE")]
    fault_rate: Option<f64>,

    /// Seed that picks which requests fail.
    #[arg(long, value_name = "N", default_value_t = 42)]
    seed: u64,

    /// Delay the sink adds before every response in the comparison of a
    /// fixed and an adaptive concurrency limit; 0s skips it.
    #[arg(long, value_name = "DURATION", default_value = "2ms", value_parser = humantime::parse_duration)]
    adaptive_latency: Duration,

    /// Rows of the input in the comparison of a fixed and an adaptive
    /// concurrency limit.
    #[arg(long, value_name = "N", default_value_t = 30_000)]
    adaptive_rows: u64,

    /// Delay the sink adds before every response, such as `2ms`.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = humantime::parse_duration)]
    latency: Duration,

    /// Worker threads of the sink's runtime.
    #[arg(long, value_name = "N", default_value_t = 2)]
    sink_workers: usize,

    /// Worker threads of the wire-limit client's runtime [default: one
    /// per core, tokio's default].
    #[arg(long, value_name = "N")]
    wire_workers: Option<usize>,

    /// The gzipped nycflights13 flights file [default:
    /// ../shared/datasets/nycflights13/flights.csv.gz from the repository
    /// root].
    #[arg(long, value_name = "FILE")]
    dataset: Option<PathBuf>,

    /// The sluice binary [default: target/release/sluice, or under
    /// CARGO_TARGET_DIR].
    #[arg(long, value_name = "FILE")]
    sluice: Option<PathBuf>,

    /// The CSV plugin [default: plugins/csv.wasm].
    #[arg(long, value_name = "FILE")]
    plugin: Option<PathBuf>,

    /// Python with httpx and tenacity [default: .tools/bench/bin/python].
    #[arg(long, value_name = "FILE")]
    python: Option<PathBuf>,

    /// Skip the Python baseline.
    #[arg(long)]
    skip_baseline: bool,

    /// Rows of the input the Python baseline sends; its rate is steady
    /// long before the end of the file, which would take it many minutes.
    #[arg(long, value_name = "N", default_value_t = 50_000)]
    baseline_rows: u64,

    /// Start only the sink (with --fault-rate 0 unless given, --seed and
    /// --latency), print its URL and serve until killed, to profile sluice
    /// by hand.
    #[arg(long)]
    serve: bool,

    /// Also write the report to this file.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sluice-bench: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Paths the harness works with.
struct Paths {
    root: PathBuf,
    dataset: PathBuf,
    sluice: PathBuf,
    plugin: PathBuf,
    python: PathBuf,
    script: PathBuf,
}

impl Paths {
    fn resolve(args: &Args) -> anyhow::Result<Paths> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("the bench crate has no parent directory")?
            .to_owned();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let paths = Paths {
            dataset: args
                .dataset
                .clone()
                .unwrap_or_else(|| root.join("../shared/datasets/nycflights13/flights.csv.gz")),
            sluice: args
                .sluice
                .clone()
                .unwrap_or_else(|| target.join("release/sluice")),
            plugin: args
                .plugin
                .clone()
                .unwrap_or_else(|| root.join("plugins/csv.wasm")),
            python: args
                .python
                .clone()
                .unwrap_or_else(|| root.join(".tools/bench/bin/python")),
            script: root.join("bench/baseline.py"),
            root,
        };
        for (path, what) in [
            (&paths.sluice, "sluice binary"),
            (&paths.plugin, "CSV plugin"),
        ] {
            if !path.is_file() {
                anyhow::bail!(
                    "{what} not found at {}; run scripts/setup or scripts/bench",
                    path.display()
                );
            }
        }
        Ok(paths)
    }
}

fn run(mut args: Args) -> anyhow::Result<()> {
    let command = std::env::args()
        .skip(1)
        .fold("scripts/bench".to_owned(), |line, arg| line + " " + &arg);
    if args.smoke {
        args.runs = 1;
        args.rows = Some(args.rows.unwrap_or(SMOKE_ROWS));
        args.repeat = 0;
    }
    if args.serve {
        return serve(&args);
    }
    let paths = Paths::resolve(&args)?;
    let runs = args.runs as usize;
    let fault_rate = args.fault_rate.unwrap_or(DEFAULT_FAULT_RATE);
    let load_before = machine::load_average();
    let work = tempfile::tempdir()?;

    // Everything below up to the first timed step prepares inputs.
    progress(format_args!("decompressing {}", paths.dataset.display()));
    let dataset = dataset::prepare(&paths.dataset, work.path(), args.rows)?;
    let large = if args.repeat > 1 {
        progress(format_args!("writing the {}× input", args.repeat));
        let path = work.path().join(format!("flights-x{}.csv", args.repeat));
        Some(dataset::repeat(&dataset, args.repeat, &path)?)
    } else {
        None
    };
    let baseline = if args.skip_baseline {
        None
    } else {
        let versions = runs::baseline_versions(&paths.python)?;
        let path = work.path().join("flights-baseline.csv");
        Some((
            versions,
            dataset::head(&dataset, args.baseline_rows, &path)?,
        ))
    };
    let plugin_config = vec![("path".to_owned(), dataset.path_template.clone())];
    let plugin = parse::load_plugin(&paths.plugin, &plugin_config)?;

    progress(format_args!("parsing alone, {runs} runs"));
    let mut plugin_parse = Vec::new();
    let mut native_parse = Vec::new();
    let mut parse_records = 0;
    for _ in 0..runs {
        let (records, time) = parse::through_plugin(&plugin, &dataset.contents)?;
        plugin_parse.push(time);
        let (native_records, native_time) = parse::native(&dataset.contents)?;
        native_parse.push(native_time);
        anyhow::ensure!(
            records == dataset.input.rows && native_records == dataset.input.rows,
            "the plugin parsed {records} records and the csv crate {native_records}, \
             but the input has {} rows",
            dataset.input.rows
        );
        parse_records = records;
    }

    let sink = Sink::start(args.sink_workers)?;
    let endpoint = sink.url();
    let requests = Arc::new(parse::requests(&plugin, &dataset.contents, &endpoint)?);
    let wire_body_bytes = requests.iter().map(|r| r.body.len() as u64).sum();
    let target = Target {
        endpoint: &endpoint,
        path_template: &dataset.path_template,
        concurrency: args.concurrency,
        adaptive: false,
        retry: RetrySettings::default(),
    };

    // One round runs each client once, so that a change in the machine's
    // load during the harness affects all of them alike.
    let mut wire_samples = Vec::new();
    let mut hyper_samples = Vec::new();
    let mut sluice_runs = Vec::new();
    let mut fault_runs = Vec::new();
    let mut faults_sent = Vec::new();
    let mut baseline_runs = Vec::new();
    for round in 1..=runs {
        progress(format_args!("round {round} of {runs}: wire limit"));
        sink.configure(0.0, args.seed, args.latency);
        wire_samples.push(with_sink_cpu(&sink, || {
            wire::run(
                &requests,
                args.concurrency,
                args.wire_workers,
                Client::Reqwest,
            )
        })?);
        progress(format_args!(
            "round {round} of {runs}: wire limit of hyper alone"
        ));
        hyper_samples.push(with_sink_cpu(&sink, || {
            wire::run(
                &requests,
                args.concurrency,
                args.wire_workers,
                Client::Hyper,
            )
        })?);

        progress(format_args!("round {round} of {runs}: sluice, fault-free"));
        sluice_runs.push(with_sink_cpu(&sink, || {
            runs::sluice(&paths.sluice, &paths.plugin, &dataset.input, &target)
        })?);

        progress(format_args!(
            "round {round} of {runs}: sluice, {:.0} % 503s",
            fault_rate * 100.0
        ));
        sink.configure(fault_rate, args.seed + round as u64, args.latency);
        fault_runs.push(with_sink_cpu(&sink, || {
            runs::sluice(&paths.sluice, &paths.plugin, &dataset.input, &target)
        })?);
        faults_sent.push(sink.counts().faults);
        sink.configure(0.0, args.seed, args.latency);

        if let Some((_, input)) = &baseline {
            progress(format_args!("round {round} of {runs}: Python baseline"));
            baseline_runs.push(with_sink_cpu(&sink, || {
                runs::baseline(&paths.python, &paths.script, input, &target)
            })?);
        }
    }

    let large = match large {
        Some(input) => {
            progress(format_args!(
                "sluice on the {}× input ({} rows)",
                args.repeat, input.rows
            ));
            sink.configure(0.0, args.seed, args.latency);
            let run = with_sink_cpu(&sink, || {
                runs::sluice(&paths.sluice, &paths.plugin, &input, &target)
            })?;
            Some((input, run))
        }
        None => None,
    };

    let adaptive = if args.adaptive_latency.is_zero() {
        None
    } else {
        let rows = args.adaptive_rows.min(dataset.input.rows);
        let path = work.path().join("flights-adaptive.csv");
        let input = dataset::head(&dataset, rows, &path)?;
        let head = Arc::new(requests[..rows as usize].to_vec());
        sink.configure(0.0, args.seed, args.adaptive_latency);
        let mut comparison = Adaptive {
            latency: args.adaptive_latency,
            input,
            wire: Vec::new(),
            fixed: Vec::new(),
            adaptive: Vec::new(),
        };
        for round in 1..=runs {
            progress(format_args!(
                "round {round} of {runs}: fixed and adaptive limits, {} added latency",
                humantime::format_duration(args.adaptive_latency)
            ));
            comparison.wire.push(wire::run(
                &head,
                args.concurrency,
                args.wire_workers,
                Client::Reqwest,
            )?);
            let fixed = runs::sluice(&paths.sluice, &paths.plugin, &comparison.input, &target)?;
            comparison.fixed.push(fixed);
            let adaptive = Target {
                adaptive: true,
                ..target
            };
            let run = runs::sluice(&paths.sluice, &paths.plugin, &comparison.input, &adaptive)?;
            comparison.adaptive.push(run);
        }
        Some(comparison)
    };

    progress(format_args!("plugin start, {runs} cold and warm pairs"));
    let starts = (0..runs)
        .map(|_| runs::plugin_start(&paths.sluice, &paths.plugin))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let results = Results {
        command,
        machine: machine::Machine::describe(&paths.root),
        load_before,
        load_after: machine::load_average(),
        runs,
        concurrency: args.concurrency,
        fault_rate,
        latency: args.latency,
        retry: RetrySettings::default(),
        input: dataset.input.clone(),
        key_columns: dataset.key_columns.clone(),
        parse_records,
        plugin_parse,
        native_parse,
        wire: wire_samples,
        wire_hyper: hyper_samples,
        wire_body_bytes,
        sluice: sluice_runs,
        sluice_faults: fault_runs,
        faults_sent,
        baseline: baseline.map(|(versions, input)| Baseline {
            versions,
            input,
            runs: baseline_runs,
        }),
        large,
        adaptive,
        starts,
    };
    let report = results.render();
    print!("{report}");
    std::io::stdout().flush()?;
    if let Some(output) = &args.output {
        std::fs::write(output, &report)
            .with_context(|| format!("failed to write {}", output.display()))?;
    }
    Ok(())
}

/// Runs `measure` and adds the CPU time the sink used meanwhile.
fn with_sink_cpu(
    sink: &Sink,
    measure: impl FnOnce() -> anyhow::Result<Sample>,
) -> anyhow::Result<Sample> {
    let before = sink.cpu();
    let mut sample = measure()?;
    sample.sink_cpu = sink.cpu().saturating_sub(before);
    Ok(sample)
}

/// Serves the sink until the process is killed.
fn serve(args: &Args) -> anyhow::Result<()> {
    let sink = Sink::start(args.sink_workers)?;
    sink.configure(args.fault_rate.unwrap_or(0.0), args.seed, args.latency);
    println!("{}", sink.url());
    std::io::stdout().flush()?;
    loop {
        std::thread::sleep(Duration::from_secs(10));
        let counts = sink.counts();
        progress(format_args!(
            "{} requests, {} of them failed with 503",
            counts.requests, counts.faults
        ));
    }
}

/// Reports a step on stderr, so that stdout carries the report alone.
fn progress(message: std::fmt::Arguments) {
    eprintln!("sluice-bench: {message}");
}
