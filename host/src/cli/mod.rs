//! The `sluice` command: argument handling, logging and exit statuses.
//!
//! Exit statuses: 0 when every record was delivered; 3 when the run
//! finished but some records were dead-lettered or rejected; 2 for usage
//! and configuration errors; 1 for other failures, such as a file that
//! could not be read to its end or a plugin that does not load; 130 and
//! 143 when SIGINT or SIGTERM stopped the run after draining it.
//! `run --dry-run` exits with 0 when every record maps to a request, 3
//! when some are malformed or unmappable, and 1 or 2 as a run does.
//! `config check` exits with 0 when the configuration is valid and 2 when
//! it is not. `watch` runs until SIGINT or SIGTERM and then exits with 130
//! or 143; it exits with 2 for usage errors, and with 1 when a dead-letter
//! file or the ledger cannot be written.

mod args;
mod config_cmd;
mod watch_cmd;

use std::io::{BufWriter, IsTerminal as _, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::{CommandFactory as _, FromArgMatches as _};
use indicatif::ProgressBar;
use tokio::sync::watch;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use self::args::RunArgs;
pub use self::args::{
    Cli, Command, CommonArgs, ConfigCommand, LogFormat, PluginCommand, WatchArgs, WatchOptions,
};
use crate::config::{apply_env_maps, Config, Settings};
use crate::dry_run::{Format, Options as DryRunOptions};
use crate::metrics::Metrics;
use crate::pipeline::{dead_letter_inputs, Input, InputKind, Pipeline};
use crate::plugin::{Plugin, PluginError, PluginLimits};
use crate::report::{Counters, Progress, RunReport};

/// Exit status for usage and configuration errors.
pub const EXIT_USAGE: u8 = 2;
/// Exit status for failures other than undelivered records.
pub const EXIT_FAILURE: u8 = 1;

/// A failure that ends the command, with its exit status.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl Failure {
    fn usage(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code: EXIT_USAGE,
            error: error.into(),
        }
    }

    fn other(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code: EXIT_FAILURE,
            error: error.into(),
        }
    }
}

/// The logging options: the `--log-level` filter and the `--log-format`.
struct Logging {
    level: String,
    format: LogFormat,
}

/// Runs the command line and returns the process exit status.
pub fn main() -> ExitCode {
    // `config show` reads from the matches which options were flags.
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    let logging = Logging {
        level: cli.log_level.clone(),
        format: cli.log_format,
    };
    let result = match &cli.command {
        Command::Plugin {
            command: PluginCommand::Info { plugin },
        } => init_logging(&logging, None).and_then(|()| plugin_info(plugin)),
        Command::Config { command } => config_cmd::run(&logging, command, &matches),
        Command::Run(args) if args.dry_run => dry_run(&logging, args),
        Command::Run(args) => {
            let inputs = args
                .files
                .iter()
                .map(|path| Input {
                    path: path.clone(),
                    kind: InputKind::Source,
                })
                .collect();
            ingest(&logging, &args.common, || Ok(inputs), args.force)
        }
        Command::Reprocess(args) => {
            let inputs = || dead_letter_inputs(&args.paths, args.include_rejected);
            ingest(&logging, &args.common, inputs, false)
        }
        Command::Verify(args) => verify(&logging, &args.common, &args.files),
        Command::Watch(args) => watch_cmd::run(&logging, args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("error: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}

fn plugin_info(path: &Path) -> Result<u8, Failure> {
    let plugin = load_plugin(path, PluginLimits::default())?;
    let info = plugin.info();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "name        {}", info.name);
    let _ = writeln!(out, "version     {}", info.version);
    let _ = writeln!(out, "extensions  {}", info.extensions.join(", "));
    let _ = writeln!(out, "config keys");
    for key in &info.config_keys {
        let required = if key.required { " (required)" } else { "" };
        let _ = writeln!(out, "  {}{required}: {}", key.name, key.description);
    }
    Ok(0)
}

fn load_plugin(path: &Path, limits: PluginLimits) -> Result<Plugin, Failure> {
    if path.is_dir() {
        let message = format!(
            "plugin {} is a directory; pass its .wasm file",
            path.display()
        );
        return Err(Failure::usage(anyhow::anyhow!(message)));
    }
    if !path.is_file() {
        let message = format!(
            "plugin {} not found; check the --plugin path, or build the shipped plugins \
             with scripts/setup",
            path.display()
        );
        return Err(Failure::usage(anyhow::anyhow!(message)));
    }
    Plugin::load(path, limits).map_err(Failure::other)
}

/// Builds the configuration from the defaults, the `--config` file, the
/// `SLUICE_*` variables and the flags, in that order. `watch` are the
/// options of the commands that take `watch.*` flags.
fn load_config(common: &CommonArgs, watch: Option<&WatchOptions>) -> Result<Config, Failure> {
    let mut config = match &common.config {
        Some(path) => Config::from_file(path).map_err(Failure::usage)?,
        None => Config::default(),
    };
    apply_env_maps(&mut config, std::env::vars());
    common.apply(&mut config);
    if let Some(watch) = watch {
        watch.apply(&mut config);
    }
    Ok(config)
}

fn load_settings(common: &CommonArgs) -> Result<Settings, Failure> {
    validate(&load_config(common, None)?)
}

/// Validates a configuration against the process's environment.
fn validate(config: &Config) -> Result<Settings, Failure> {
    config
        .validate(|name| std::env::var(name).ok())
        .map_err(Failure::usage)
}

/// Loads the plugin that `settings` name and hands it `plugin.config`.
fn configured_plugin(settings: &Settings) -> Result<Plugin, Failure> {
    let mut plugin = load_plugin(&settings.plugin_path, settings.plugin_limits)?;
    match plugin.configure(settings.plugin_config.clone()) {
        Ok(()) => Ok(plugin),
        Err(err @ PluginError::Config { .. }) => Err(Failure::usage(err)),
        Err(err) => Err(Failure::other(err)),
    }
}

/// Runs `sluice run --dry-run`: the records go to stdout or to
/// `--dry-run-output`, and the summary to stdout, or to stderr when the
/// records take stdout as JSON Lines.
fn dry_run(logging: &Logging, args: &RunArgs) -> Result<u8, Failure> {
    let settings = load_settings(&args.common)?;
    init_logging(logging, None)?;
    for path in &args.files {
        check_input(path)?;
    }
    let mut plugin = load_plugin(&settings.plugin_path, settings.plugin_limits)?;
    match plugin.configure(settings.plugin_config.clone()) {
        Ok(()) => {}
        Err(err @ PluginError::Config { .. }) => return Err(Failure::usage(err)),
        Err(err) => return Err(Failure::other(err)),
    }

    let to_stdout = args.dry_run_output.as_deref() == Some(Path::new("-"));
    let (format, mut out): (_, Box<dyn Write>) = match &args.dry_run_output {
        None => (Format::Human, Box::new(BufWriter::new(std::io::stdout()))),
        Some(_) if to_stdout => (
            Format::JsonLines,
            Box::new(BufWriter::new(std::io::stdout())),
        ),
        Some(path) => {
            let file = create_dry_run_output(path, &args.files)?;
            (Format::JsonLines, Box::new(BufWriter::new(file)))
        }
    };
    let options = DryRunOptions {
        records_per_file: args.dry_run_records,
        format,
        force: args.force,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(Failure::other)?;
    let handle = runtime.handle().clone();
    let report = crate::dry_run::run(&settings, plugin, &args.files, options, handle, &mut out)
        .map_err(|err| {
            let destination = match &args.dry_run_output {
                Some(path) if !to_stdout => path.display().to_string(),
                _ => "stdout".to_owned(),
            };
            Failure::other(anyhow::anyhow!(
                "cannot write the dry run's records to {destination}: {err}"
            ))
        })?;
    drop(out);

    let _ = if to_stdout {
        report.write_summary(&mut std::io::stderr().lock())
    } else {
        report.write_summary(&mut std::io::stdout().lock())
    };
    if let Some(path) = &args.common.summary_json {
        write_json_file(path, &report)?;
    }
    Ok(report.exit_code())
}

/// Creates the `--dry-run-output` file, unless it is one of the inputs,
/// which creating it would truncate.
fn create_dry_run_output(path: &Path, inputs: &[PathBuf]) -> Result<std::fs::File, Failure> {
    let canonical = std::fs::canonicalize(path).ok();
    let is_input = inputs
        .iter()
        .any(|input| canonical.is_some() && std::fs::canonicalize(input).ok() == canonical);
    if is_input {
        let message = format!(
            "--dry-run-output {} is also an input file; pass another path",
            path.display()
        );
        return Err(Failure::usage(anyhow::anyhow!(message)));
    }
    std::fs::File::create(path).map_err(|err| {
        let message = format!(
            "cannot create the dry-run output {}: {err}; pass --dry-run-output with a writable \
             path",
            path.display()
        );
        Failure::usage(anyhow::anyhow!(message))
    })
}

fn write_json_file(path: &Path, value: &impl serde::Serialize) -> Result<(), Failure> {
    let json = serde_json::to_vec_pretty(value).map_err(Failure::other)?;
    std::fs::write(path, json).map_err(|err| {
        Failure::other(anyhow::anyhow!(
            "cannot write summary {}: {err}",
            path.display()
        ))
    })
}

fn verify(logging: &Logging, common: &CommonArgs, files: &[PathBuf]) -> Result<u8, Failure> {
    let settings = load_settings(common)?;
    init_logging(logging, None)?;
    for path in files {
        check_input(path)?;
    }
    let mut plugin = load_plugin(&settings.plugin_path, settings.plugin_limits)?;
    match plugin.configure(settings.plugin_config.clone()) {
        Ok(()) => {}
        Err(err @ PluginError::Config { .. }) => return Err(Failure::usage(err)),
        Err(err) => return Err(Failure::other(err)),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Failure::other)?;
    let report = runtime
        .block_on(crate::verify::verify(&settings, Arc::new(plugin), files))
        .map_err(Failure::other)?;
    let _ = report.write_summary(&mut std::io::stdout().lock());
    if let Some(path) = &common.summary_json {
        let json = serde_json::to_vec_pretty(&report).map_err(Failure::other)?;
        std::fs::write(path, json).map_err(|err| {
            Failure::other(anyhow::anyhow!(
                "cannot write summary {}: {err}",
                path.display()
            ))
        })?;
    }
    Ok(report.exit_code())
}

/// Creates the dead-letter and state directories and locks them for this
/// run, so that two runs cannot send the same dead letters or interleave
/// ledger updates. The locks last until the returned files are dropped.
fn prepare_directories(settings: &Settings) -> Result<Vec<std::fs::File>, Failure> {
    let directories = [
        (
            "dead-letter directory",
            &settings.dead_letter_dir,
            "--dead-letter-dir",
        ),
        ("state directory", &settings.state_dir, "--state-dir"),
    ];
    let mut locks = Vec::new();
    for (what, dir, flag) in directories {
        let opened = std::fs::create_dir_all(dir).and_then(|()| std::fs::File::open(dir));
        let handle = opened.map_err(|err| {
            let message = format!(
                "cannot use {} as the {what}: {err}; pass {flag} with a writable directory",
                dir.display()
            );
            Failure::usage(anyhow::anyhow!(message))
        })?;
        match handle.try_lock() {
            Ok(()) => locks.push(handle),
            Err(std::fs::TryLockError::WouldBlock) => {
                let message = format!(
                    "another sluice process is using the {what} {}; wait for it to finish or \
                     pass {flag} with another directory",
                    dir.display()
                );
                return Err(Failure::usage(anyhow::anyhow!(message)));
            }
            Err(std::fs::TryLockError::Error(err)) => {
                let message = format!("cannot lock the {what} {}: {err}", dir.display());
                return Err(Failure::other(anyhow::anyhow!(message)));
            }
        }
    }
    Ok(locks)
}

fn ingest(
    logging: &Logging,
    common: &CommonArgs,
    inputs: impl FnOnce() -> anyhow::Result<Vec<Input>>,
    force: bool,
) -> Result<u8, Failure> {
    let settings = load_settings(common)?;
    let progress = Progress::new(settings.progress, 0);
    init_logging(logging, progress.bar())?;
    let _locks = prepare_directories(&settings)?;
    let metrics_listener = bind_metrics(&settings)?;
    // Collected after logging starts, so that warnings about torn
    // sidecars reach the log.
    let inputs = inputs().map_err(Failure::usage)?;
    let total_bytes = inputs
        .iter()
        .filter_map(|input| std::fs::metadata(&input.path).ok())
        .map(|meta| meta.len())
        .sum();
    progress.set_total(total_bytes);
    for input in &inputs {
        check_input(&input.path)?;
    }

    let mut plugin = load_plugin(&settings.plugin_path, settings.plugin_limits)?;
    match plugin.configure(settings.plugin_config.clone()) {
        Ok(()) => {}
        Err(err @ PluginError::Config { .. }) => return Err(Failure::usage(err)),
        Err(err) => return Err(Failure::other(err)),
    }

    let runtime = pipeline_runtime().map_err(Failure::other)?;
    let summary_json = common.summary_json.clone();
    // The runtime, and with it the metrics server, lives until this
    // function returns, after the summary is written.
    let report = runtime.block_on(async {
        let (stop, stopped) = watch::channel(false);
        let signal = Arc::new(Mutex::new(None));
        tokio::spawn(watch_signals(stop, signal.clone()));
        let counters = Arc::new(Counters::with_limit(settings.http.concurrency.get()));
        let metrics = Arc::new(Metrics::new(counters.clone(), &settings.dead_letter_dir));
        serve_metrics(metrics_listener, &metrics)?;
        let pipeline = Pipeline::new(settings, plugin, counters.clone(), stopped, force)?;
        metrics.watch_breaker(pipeline.breaker().clone());
        let ticker = progress.spawn_ticker(counters, pipeline.breaker().clone());
        // The pipeline runs as a task on the runtime's workers, not on this
        // thread: its dispatcher and the delivery tasks it joins then wake
        // each other on the same threads, which cut the CPU time per record
        // by 10-15 % in scripts/bench.
        let report = match tokio::spawn(async move { pipeline.run(&inputs).await }).await {
            Ok(report) => report,
            // The task is never cancelled, so the error is a panic.
            Err(err) => std::panic::resume_unwind(err.into_panic()),
        };
        ticker.abort();
        report.map(|mut report| {
            report.interrupted_by = signal.lock().expect("not poisoned").map(str::to_owned);
            report
        })
    });
    progress.finish();
    let report = report.map_err(Failure::other)?;
    finish(&report, summary_json.as_deref())
}

/// Builds the runtime that sends requests, with tokio's default of one
/// worker thread per core. The reader thread runs the plugin beside them at
/// a lower priority. On 2 cores, in 10 alternating pairs of runs of 150,000
/// rows against `scripts/bench --serve`, two workers beat one in every pair
/// (by 10 % in the median pair) at the same CPU time per record. A likely
/// reason is that hyper runs each connection as a task of its own, and
/// those tasks can then run beside the dispatcher.
///
/// A current-thread runtime is not used because the metrics server must
/// keep serving while the main thread writes the summary after the run,
/// and only worker threads do that.
pub(crate) fn pipeline_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// Binds `metrics.address`, when it is set, so that an address in use
/// stops a command before it does any work. [`serve_metrics`] then serves
/// on the listener from inside the command's runtime.
fn bind_metrics(settings: &Settings) -> Result<Option<std::net::TcpListener>, Failure> {
    let Some(address) = settings.metrics_address else {
        return Ok(None);
    };
    match crate::metrics::server::bind(address) {
        Ok(listener) => Ok(Some(listener)),
        Err(err) => {
            let message = format!(
                "cannot serve metrics on {address}: {err}; pass --metrics-addr (or set \
                 metrics.address) with a free port on an address of this machine, such as \
                 127.0.0.1:9464, or 127.0.0.1:0 for any free port"
            );
            Err(Failure::usage(anyhow::anyhow!(message)))
        }
    }
}

/// Serves `metrics` on a listener from [`bind_metrics`] until the runtime
/// shuts down, and logs the address. Does nothing without a listener.
fn serve_metrics(
    listener: Option<std::net::TcpListener>,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<()> {
    let Some(listener) = listener else {
        return Ok(());
    };
    let address = listener.local_addr()?;
    crate::metrics::server::serve(listener, metrics.clone())?;
    tracing::info!(
        %address,
        "serving metrics at /metrics and health checks at /healthz and /readyz"
    );
    Ok(())
}

/// Takes over SIGINT and SIGTERM at once, and returns a future that waits
/// for them and signals the run to stop: reading stops, requests on the
/// wire finish or time out, and the ledger and dead letters are flushed. A
/// second signal exits at once; the ledger is still consistent then,
/// because every write of it is atomic. Must be called on the runtime.
fn watch_signals(
    stop: watch::Sender<bool>,
    signal: Arc<Mutex<Option<&'static str>>>,
) -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal as unix_signal, SignalKind};
    let handlers = (
        unix_signal(SignalKind::interrupt()),
        unix_signal(SignalKind::terminate()),
    );
    async move {
        let (Ok(interrupt), Ok(terminate)) = handlers else {
            return;
        };
        stop_on_signals(stop, signal, interrupt, terminate).await;
    }
}

async fn stop_on_signals(
    stop: watch::Sender<bool>,
    signal: Arc<Mutex<Option<&'static str>>>,
    mut interrupt: tokio::signal::unix::Signal,
    mut terminate: tokio::signal::unix::Signal,
) {
    let first = tokio::select! {
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    };
    *signal.lock().expect("not poisoned") = Some(first);
    tracing::warn!(
        signal = first,
        "stopping: reading stopped, waiting for requests in flight; send it again to exit now"
    );
    let _ = stop.send(true);
    let second = tokio::select! {
        _ = interrupt.recv() => 130,
        _ = terminate.recv() => 143,
    };
    eprintln!("error: stopped at once by a second signal");
    std::process::exit(second);
}

fn finish(report: &RunReport, summary_json: Option<&Path>) -> Result<u8, Failure> {
    let mut out = std::io::stdout().lock();
    let _ = report.write_summary(&mut out);
    if let Some(path) = summary_json {
        let json = serde_json::to_vec_pretty(report).map_err(Failure::other)?;
        std::fs::write(path, json).map_err(|err| {
            Failure::other(anyhow::anyhow!(
                "cannot write summary {}: {err}",
                path.display()
            ))
        })?;
    }
    Ok(report.exit_code())
}

fn check_input(path: &Path) -> Result<(), Failure> {
    let problem = if path.is_dir() {
        "is a directory; pass the files in it"
    } else if !path.exists() {
        "not found"
    } else if !path.is_file() {
        // A pipe or device can be read only once, but sluice reads a file
        // twice: for its fingerprint, then for its records.
        "is not a regular file, such as a pipe; sluice fingerprints each file and \
         reads it again to resume, so save the data to a file first"
    } else {
        return Ok(());
    };
    let message = format!("input file {} {problem}", path.display());
    Err(Failure::usage(anyhow::anyhow!(message)))
}

fn init_logging(logging: &Logging, bar: Option<ProgressBar>) -> Result<(), Failure> {
    let level = &logging.level;
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) => EnvFilter::try_new(&value).map_err(|err| (format!("RUST_LOG={value}"), err)),
        Err(_) => EnvFilter::try_new(level).map_err(|err| (format!("--log-level {level}"), err)),
    };
    let filter = filter.map_err(|(what, err)| {
        let message = format!("invalid log filter {what}: {err}; use a level such as info");
        Failure::usage(anyhow::anyhow!(message))
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(LogWriter { bar });
    let _ = match logging.format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        // The event's fields sit at the top level beside `timestamp`,
        // `level` and `message`, and `spans` lists the spans that the text
        // format prints before the message, such as the input file.
        // NOTE: events that libraries send through the `log` crate also
        // carry `log.target`, `log.module_path`, `log.file` and `log.line`,
        // which the text format leaves out. tracing-subscriber 0.3.23 has
        // no option to drop them from flattened JSON events.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .try_init(),
    };
    Ok(())
}

/// Writes log lines to stderr, around the progress bar when there is one.
#[derive(Clone)]
struct LogWriter {
    bar: Option<ProgressBar>,
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        self.clone()
    }
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &self.bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
