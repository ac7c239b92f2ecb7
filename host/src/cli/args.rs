//! Command-line arguments. Each option that has a configuration key names
//! its `SLUICE_*` variable; flags win over variables, variables over the
//! `--config` file, and the file over the defaults.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{Concurrency, Config, KeySource, OnComplete, ProgressMode};

/// Loads data files into an HTTP API through a WebAssembly format plugin.
#[derive(Debug, Parser)]
#[command(name = "sluice", version)]
pub struct Cli {
    /// Log filter, such as `info`, `debug` or `sluice=debug`.
    #[arg(long, global = true, env = "SLUICE_LOG", default_value = "info")]
    pub log_level: String,

    /// Log line format on stderr: `text`, or `json` for one JSON object
    /// per line with the same fields.
    #[arg(
        long,
        global = true,
        env = "SLUICE_LOG_FORMAT",
        value_name = "FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ingest files into the API.
    Run(RunArgs),
    /// Send the records of dead-letter files again, then remove the files.
    Reprocess(ReprocessArgs),
    /// Ingest each file that appears in a directory, until stopped.
    ///
    /// Takes a file once it was renamed into DIR, or once its size and
    /// modification time stayed the same for watch.settle_time, oldest
    /// first. A completed file is moved to watch.done_dir, deleted or
    /// kept (watch.on_complete). SIGHUP reloads the configuration file;
    /// SIGINT and SIGTERM stop after draining, as for `run`.
    Watch(WatchArgs),
    /// Read every record back from the API and compare it with the file.
    Verify(VerifyArgs),
    /// Inspect a plugin.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Check or print the configuration that `run` would use.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

/// The format of log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration from the file, environment and flags,
    /// and list every problem.
    ///
    /// Builds the configuration as `run` does and reports each invalid
    /// value with its key, where it came from and what is allowed. Then
    /// loads the plugin and hands it plugin.config, so that settings the
    /// plugin rejects are reported too. Exits with 0 when the
    /// configuration is valid and 2 otherwise.
    Check(ConfigCheckArgs),
    /// Print the effective configuration, and where each value came from.
    ///
    /// Prints every key, defaults included, with its source: default,
    /// file, env (with the variable's name) or flag. Header values and a
    /// password in the endpoint URL are masked as ***.
    Show(ConfigShowArgs),
}

#[derive(Debug, Args)]
pub struct ConfigCheckArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub watch: WatchOptions,

    /// Check the configuration without loading the plugin.
    #[arg(long)]
    pub no_plugin_check: bool,
}

#[derive(Debug, Args)]
pub struct ConfigShowArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub watch: WatchOptions,

    /// Output format: `toml`, with each source as a comment, or `json`,
    /// an object of {"value", "source"} by key.
    #[arg(long, value_name = "FORMAT", default_value = "toml")]
    pub format: ShowFormat,
}

/// The output format of `config show`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ShowFormat {
    Toml,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Print a plugin's name, version, extensions and configuration keys.
    Info {
        /// The plugin component (.wasm).
        plugin: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Ingest files again that the ledger records as completed.
    #[arg(long)]
    pub force: bool,

    /// Show the requests a run would send, without sending any.
    ///
    /// Parses and maps the files through the plugin as a run does, with
    /// the same endpoint, headers and idempotency keys, and prints each
    /// record's request. Header values are masked (***) except
    /// Content-Type, Content-Length, Accept and the idempotency header.
    /// Writes no ledger and no dead-letter files, and creates no
    /// directories. Exits with 3 when some records are malformed or cannot
    /// be mapped, and with 1 when a file cannot be read to its end.
    #[arg(long)]
    pub dry_run: bool,

    /// Records shown per file in a dry run; 0 shows every record.
    ///
    /// Malformed and unmappable records count toward the limit. The
    /// summary counts every record of the file either way.
    #[arg(long, value_name = "N", default_value_t = 10, requires = "dry_run")]
    pub dry_run_records: u64,

    /// Write the dry run's records as JSON Lines to this file (`-` for
    /// stdout) instead of the human-readable form.
    ///
    /// One object per record: file, record, line, offset, key, and either
    /// request {method, url, headers, body, body_encoding} or error {kind,
    /// message}, where kind is malformed, unmappable or unsendable. A body
    /// that is UTF-8 is written as text with body_encoding "utf-8", any
    /// other as lowercase hex with body_encoding "hex". The summary then
    /// goes to stdout, or to stderr when the records take stdout.
    #[arg(long, value_name = "FILE", requires = "dry_run")]
    pub dry_run_output: Option<PathBuf>,

    /// Input files, ingested one after another in the order given.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Input files to check against the API.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReprocessArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Also reprocess rejected files (permanent faults, malformed records).
    /// Fix the records or the API first, or they are rejected again.
    #[arg(long)]
    pub include_rejected: bool,

    /// Dead-letter files, or directories of them (processed oldest first).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub watch: WatchOptions,

    /// The inbox directory. Files directly in it are ingested; its
    /// subdirectories are not looked into.
    #[arg(required = true, value_name = "DIR")]
    pub dir: PathBuf,
}

/// The configuration key that each option of [`WatchOptions`] sets, by
/// argument id.
pub const WATCH_OPTION_KEYS: &[(&str, &str)] = &[
    ("settle_time", "watch.settle_time"),
    ("rescan_interval", "watch.rescan_interval"),
    ("ignore", "watch.ignore"),
    ("on_complete", "watch.on_complete"),
    ("done_dir", "watch.done_dir"),
    ("reprocess_dead_letters", "watch.reprocess_dead_letters"),
    ("reprocess_after", "watch.reprocess_after"),
];

/// Options of `watch` (and of `config`) that set `watch.*` keys.
#[derive(Clone, Debug, Default, Args)]
pub struct WatchOptions {
    /// Time a file's size and modification time must stay the same before
    /// it is taken [default: 5s]. A file renamed into the inbox is taken
    /// at once. Key: watch.settle_time.
    #[arg(long, env = "SLUICE_WATCH_SETTLE_TIME", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub settle_time: Option<Duration>,

    /// Time between two listings of the inbox, which find files whose
    /// events were missed [default: 10s]. Key: watch.rescan_interval.
    #[arg(long, env = "SLUICE_WATCH_RESCAN_INTERVAL", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub rescan_interval: Option<Duration>,

    /// Glob pattern of file names to skip; repeat for more, or use
    /// `{a,b}`. Replaces the default list [default: .* *.tmp *.part]. Key:
    /// watch.ignore.
    #[arg(long = "ignore", env = "SLUICE_WATCH_IGNORE", value_name = "PATTERN")]
    pub ignore: Vec<String>,

    /// Action for a completed file: `move` to the done directory,
    /// `delete`, or `keep` [default: move]. Key: watch.on_complete.
    #[arg(long, env = "SLUICE_WATCH_ON_COMPLETE", value_name = "ACTION")]
    pub on_complete: Option<OnComplete>,

    /// Directory that `move` puts completed files in [default: DIR/done].
    /// Key: watch.done_dir.
    #[arg(long, env = "SLUICE_WATCH_DONE_DIR", value_name = "DIR")]
    pub done_dir: Option<PathBuf>,

    /// Send dead-letter files again once the breaker is closed and no
    /// request failed for watch.reprocess_after [default: false]. Key:
    /// watch.reprocess_dead_letters.
    #[arg(
        long,
        env = "SLUICE_WATCH_REPROCESS_DEAD_LETTERS",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub reprocess_dead_letters: Option<bool>,

    /// Time with the breaker closed and no failed request before
    /// dead-letter files are sent again [default: 1m]. Key:
    /// watch.reprocess_after.
    #[arg(long, env = "SLUICE_WATCH_REPROCESS_AFTER", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub reprocess_after: Option<Duration>,
}

impl WatchOptions {
    /// Lays flags and environment variables over `config`.
    pub fn apply(&self, config: &mut Config) {
        let watch = &mut config.watch;
        if let Some(value) = self.settle_time {
            watch.settle_time = value;
        }
        if let Some(value) = self.rescan_interval {
            watch.rescan_interval = value;
        }
        if !self.ignore.is_empty() {
            watch.ignore = self.ignore.clone();
        }
        if let Some(value) = self.on_complete {
            watch.on_complete = value;
        }
        if self.done_dir.is_some() {
            watch.done_dir = self.done_dir.clone();
        }
        if let Some(value) = self.reprocess_dead_letters {
            watch.reprocess_dead_letters = value;
        }
        if let Some(value) = self.reprocess_after {
            watch.reprocess_after = value;
        }
    }
}

/// Returns the configuration key of every option, of [`CommonArgs`] and
/// [`WatchOptions`], by argument id.
pub fn option_keys() -> impl Iterator<Item = (&'static str, &'static str)> {
    OPTION_KEYS.iter().chain(WATCH_OPTION_KEYS).copied()
}

/// Returns a command with the options of [`CommonArgs`] and
/// [`WatchOptions`], for looking up their flags and variables.
pub fn option_command() -> clap::Command {
    let command = CommonArgs::augment_args(clap::Command::new("sluice"));
    WatchOptions::augment_args(command)
}

/// The configuration key that each option of [`CommonArgs`] sets, by
/// argument id (the field's name). `--config` and `--summary-json` set no
/// key, and the two map options set one entry of their table each.
pub const OPTION_KEYS: &[(&str, &str)] = &[
    ("plugin", "plugin.path"),
    ("plugin_max_memory_mib", "plugin.max_memory_mib"),
    ("plugin_call_timeout", "plugin.call_timeout"),
    ("plugin_max_record_bytes", "plugin.max_record_bytes"),
    (
        "plugin_max_consecutive_traps",
        "plugin.max_consecutive_traps",
    ),
    ("plugin_config", "plugin.config"),
    ("endpoint", "endpoint"),
    ("dead_letter_dir", "dead_letter_dir"),
    ("state_dir", "state_dir"),
    ("no_idempotency", "idempotency.enabled"),
    ("idempotency_header", "idempotency.header"),
    ("idempotency_key", "idempotency.key"),
    ("headers", "http.headers"),
    ("concurrency", "http.concurrency"),
    ("timeout", "http.timeout"),
    ("connect_timeout", "http.connect_timeout"),
    ("max_retries", "retry.max_retries"),
    ("initial_backoff", "retry.initial_backoff"),
    ("backoff_multiplier", "retry.multiplier"),
    ("max_backoff", "retry.max_backoff"),
    ("max_retry_after", "retry.max_retry_after"),
    ("jitter_seed", "retry.jitter_seed"),
    ("failure_threshold", "breaker.failure_threshold"),
    ("open_duration", "breaker.open_duration"),
    ("chunk_size", "input.chunk_size"),
    ("progress", "progress"),
    ("metrics_addr", "metrics.address"),
];

/// Options shared by `run`, `reprocess`, `verify`, `watch` and `config`.
#[derive(Clone, Debug, Args)]
pub struct CommonArgs {
    /// TOML configuration file.
    #[arg(long, env = "SLUICE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Format plugin component (.wasm). Key: plugin.path.
    #[arg(long, env = "SLUICE_PLUGIN_PATH", value_name = "FILE")]
    pub plugin: Option<PathBuf>,

    /// Memory one plugin instance may use, in MiB [default: 256]. Key:
    /// plugin.max_memory_mib.
    #[arg(long, env = "SLUICE_PLUGIN_MAX_MEMORY_MIB", value_name = "MIB")]
    pub plugin_max_memory_mib: Option<usize>,

    /// Time one plugin call may take [default: 10s]. Key:
    /// plugin.call_timeout.
    #[arg(long, env = "SLUICE_PLUGIN_CALL_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub plugin_call_timeout: Option<Duration>,

    /// Size of a record, or of its request body, above which the record is
    /// rejected, in bytes [default: 16777216]. Key: plugin.max_record_bytes.
    #[arg(long, env = "SLUICE_PLUGIN_MAX_RECORD_BYTES", value_name = "BYTES")]
    pub plugin_max_record_bytes: Option<usize>,

    /// Plugin traps in a row, with no record handled between them, that
    /// stop the file [default: 3]. Key: plugin.max_consecutive_traps.
    #[arg(
        long,
        env = "SLUICE_PLUGIN_MAX_CONSECUTIVE_TRAPS",
        value_name = "COUNT"
    )]
    pub plugin_max_consecutive_traps: Option<u32>,

    /// Plugin setting; repeat for more. Key: plugin.config.KEY; variable:
    /// SLUICE_PLUGIN_CONFIG_KEY.
    #[arg(long = "plugin-config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub plugin_config: Vec<(String, String)>,

    /// Base URL of the API. Key: endpoint.
    #[arg(long, env = "SLUICE_ENDPOINT", value_name = "URL")]
    pub endpoint: Option<String>,

    /// Directory for dead-letter and rejected files [default: dead-letters].
    /// Key: dead_letter_dir.
    #[arg(long, env = "SLUICE_DEAD_LETTER_DIR", value_name = "DIR")]
    pub dead_letter_dir: Option<PathBuf>,

    /// Directory for the progress ledger [default: .sluice]. Key:
    /// state_dir.
    #[arg(long, env = "SLUICE_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Send no idempotency key header. Key: idempotency.enabled.
    #[arg(long)]
    pub no_idempotency: bool,

    /// Name of the idempotency key header [default: Idempotency-Key]. Key:
    /// idempotency.header.
    #[arg(long, env = "SLUICE_IDEMPOTENCY_HEADER", value_name = "NAME")]
    pub idempotency_header: Option<String>,

    /// Source of idempotency keys: `position` (file fingerprint and
    /// record number) or `record-key` (the plugin's record key) [default:
    /// position]. Key: idempotency.key.
    #[arg(long, env = "SLUICE_IDEMPOTENCY_KEY", value_name = "SOURCE")]
    pub idempotency_key: Option<KeySource>,

    /// Header added to every request; repeat for more. Values may use
    /// ${VAR}. Key: http.headers; variable: SLUICE_HTTP_HEADER_NAME.
    #[arg(long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,

    /// Requests in flight at once, or "adaptive" for a limit that follows
    /// the API's latency and back pressure [default: 16]. Key:
    /// http.concurrency.
    #[arg(long, env = "SLUICE_HTTP_CONCURRENCY", value_name = "N|adaptive")]
    pub concurrency: Option<Concurrency>,

    /// Per-request timeout, including the response body [default: 30s].
    /// Key: http.timeout.
    #[arg(long, env = "SLUICE_HTTP_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,

    /// Connection timeout [default: 10s]. Key: http.connect_timeout.
    #[arg(long, env = "SLUICE_HTTP_CONNECT_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub connect_timeout: Option<Duration>,

    /// Retries after the first attempt; 0 means one attempt [default: 5].
    /// Key: retry.max_retries.
    #[arg(long, env = "SLUICE_RETRY_MAX_RETRIES", value_name = "N")]
    pub max_retries: Option<u32>,

    /// Upper bound of the first backoff delay [default: 100ms]. Key:
    /// retry.initial_backoff.
    #[arg(long, env = "SLUICE_RETRY_INITIAL_BACKOFF", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub initial_backoff: Option<Duration>,

    /// Growth factor of the backoff per retry [default: 2]. Key:
    /// retry.multiplier.
    #[arg(long, env = "SLUICE_RETRY_MULTIPLIER", value_name = "FACTOR")]
    pub backoff_multiplier: Option<f64>,

    /// Cap on the backoff delay [default: 10s]. Key: retry.max_backoff.
    #[arg(long, env = "SLUICE_RETRY_MAX_BACKOFF", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub max_backoff: Option<Duration>,

    /// Cap on a Retry-After delay [default: 60s]. Key:
    /// retry.max_retry_after.
    #[arg(long, env = "SLUICE_RETRY_MAX_RETRY_AFTER", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub max_retry_after: Option<Duration>,

    /// Seed for the backoff jitter, for reproducible runs. Key:
    /// retry.jitter_seed.
    #[arg(long, env = "SLUICE_RETRY_JITTER_SEED", value_name = "N")]
    pub jitter_seed: Option<u64>,

    /// Consecutive requests out of retries that open the circuit breaker
    /// [default: 5]. Key: breaker.failure_threshold.
    #[arg(long, env = "SLUICE_BREAKER_FAILURE_THRESHOLD", value_name = "N")]
    pub failure_threshold: Option<u32>,

    /// How long the breaker stays open before a probe [default: 30s]. Key:
    /// breaker.open_duration.
    #[arg(long, env = "SLUICE_BREAKER_OPEN_DURATION", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub open_duration: Option<Duration>,

    /// Bytes read from a file per plugin call [default: 65536]. Key:
    /// input.chunk_size.
    #[arg(long, env = "SLUICE_INPUT_CHUNK_SIZE", value_name = "BYTES")]
    pub chunk_size: Option<usize>,

    /// Progress bar on stderr [default: auto]. Key: progress.
    #[arg(long, env = "SLUICE_PROGRESS", value_name = "WHEN")]
    pub progress: Option<ProgressMode>,

    /// Serve Prometheus metrics at /metrics and health checks at /healthz
    /// and /readyz on this IP:PORT while `run`, `reprocess` or `watch`
    /// runs, such as 127.0.0.1:9464. Key: metrics.address.
    #[arg(long, env = "SLUICE_METRICS_ADDRESS", value_name = "ADDR")]
    pub metrics_addr: Option<String>,

    /// Also write the summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub summary_json: Option<PathBuf>,
}

impl CommonArgs {
    /// Lays flags and environment variables over `config`.
    pub fn apply(&self, config: &mut Config) {
        fn set<T: Clone>(target: &mut T, value: &Option<T>) {
            if let Some(value) = value {
                *target = value.clone();
            }
        }
        if self.endpoint.is_some() {
            config.endpoint = self.endpoint.clone();
        }
        if self.dead_letter_dir.is_some() {
            config.dead_letter_dir = self.dead_letter_dir.clone();
        }
        if self.plugin.is_some() {
            config.plugin.path = self.plugin.clone();
        }
        if self.state_dir.is_some() {
            config.state_dir = self.state_dir.clone();
        }
        if self.no_idempotency {
            config.idempotency.enabled = false;
        }
        set(&mut config.idempotency.header, &self.idempotency_header);
        set(&mut config.idempotency.key, &self.idempotency_key);
        for (key, value) in &self.plugin_config {
            config.plugin.config.insert(key.clone(), value.clone());
        }
        for (name, value) in &self.headers {
            config.http.headers.insert(name.clone(), value.clone());
        }
        set(
            &mut config.plugin.max_memory_mib,
            &self.plugin_max_memory_mib,
        );
        set(&mut config.plugin.call_timeout, &self.plugin_call_timeout);
        set(
            &mut config.plugin.max_record_bytes,
            &self.plugin_max_record_bytes,
        );
        set(
            &mut config.plugin.max_consecutive_traps,
            &self.plugin_max_consecutive_traps,
        );
        set(&mut config.progress, &self.progress);
        set(&mut config.http.concurrency, &self.concurrency);
        set(&mut config.http.timeout, &self.timeout);
        set(&mut config.http.connect_timeout, &self.connect_timeout);
        set(&mut config.retry.max_retries, &self.max_retries);
        set(&mut config.retry.initial_backoff, &self.initial_backoff);
        set(&mut config.retry.multiplier, &self.backoff_multiplier);
        set(&mut config.retry.max_backoff, &self.max_backoff);
        set(&mut config.retry.max_retry_after, &self.max_retry_after);
        if self.jitter_seed.is_some() {
            config.retry.jitter_seed = self.jitter_seed;
        }
        set(
            &mut config.breaker.failure_threshold,
            &self.failure_threshold,
        );
        set(&mut config.breaker.open_duration, &self.open_duration);
        set(&mut config.input.chunk_size, &self.chunk_size);
        if self.metrics_addr.is_some() {
            config.metrics.address = self.metrics_addr.clone();
        }
    }
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

fn parse_header(text: &str) -> Result<(String, String), String> {
    match text.split_once(':') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!("expected \"NAME: VALUE\", got {text:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_splits_at_the_first_equals_sign() {
        let parsed = parse_key_value("path=/a/{b}?c=d").unwrap();
        assert_eq!(parsed, ("path".to_owned(), "/a/{b}?c=d".to_owned()));
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_key_value("=x").is_err());
    }

    #[test]
    fn header_splits_name_and_value() {
        let parsed = parse_header("Authorization: Bearer ${T}").unwrap();
        assert_eq!(
            parsed,
            ("Authorization".to_owned(), "Bearer ${T}".to_owned())
        );
        assert!(parse_header("no colon").is_err());
    }

    #[test]
    fn dry_run_flags_need_dry_run() {
        let parse = |args: &[&str]| Cli::try_parse_from(["sluice", "run"].iter().chain(args));
        for flag in ["--dry-run-records=3", "--dry-run-output=-"] {
            let error = parse(&[flag, "a.csv"]).unwrap_err();
            assert_eq!(
                error.kind(),
                clap::error::ErrorKind::MissingRequiredArgument
            );
        }

        let Command::Run(args) = parse(&["--dry-run", "a.csv"]).unwrap().command else {
            panic!("expected run");
        };
        assert!(args.dry_run);
        assert_eq!(args.dry_run_records, 10);
        assert_eq!(args.dry_run_output, None);
    }

    #[test]
    fn option_keys_name_every_common_option() {
        let command = option_command();
        let keys: std::collections::BTreeMap<&str, &str> = option_keys().collect();
        let mut seen = Vec::new();

        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "config" || id == "summary_json" {
                continue;
            }
            let key = keys
                .get(id)
                .unwrap_or_else(|| panic!("{id} is not in OPTION_KEYS"));
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            assert!(help.contains(&format!("Key: {key}")), "{id}: {help}");
            seen.push(id);
        }

        seen.sort_unstable();
        let mut listed: Vec<&str> = keys.into_keys().collect();
        listed.sort_unstable();
        assert_eq!(seen, listed);
    }

    #[test]
    fn reference_names_each_keys_flag_and_variable() {
        let command = option_command();
        for row in crate::config::tests::documented_rows() {
            let (key, flag, variable) = (&row[0], &row[4], &row[5]);
            let id = option_keys()
                .find(|(_, option_key)| option_key == key)
                .map(|(id, _)| id)
                .unwrap_or_else(|| panic!("{key} has no option in OPTION_KEYS"));
            let arg = command
                .get_arguments()
                .find(|arg| arg.get_id() == id)
                .unwrap();

            let long = arg.get_long().unwrap();
            assert_eq!(*flag, format!("`--{long}`"), "flag of {key}");
            match arg.get_env() {
                Some(env) => {
                    let env = env.to_string_lossy();
                    assert_eq!(*variable, format!("`{env}`"), "variable of {key}");
                }
                None if crate::config::provenance::MAP_KEYS.contains(&key.as_str()) => {
                    let example = variable
                        .trim_matches('`')
                        .replace("<KEY>", "X")
                        .replace("<NAME>", "X");
                    let set = crate::config::env_map_key(&example);
                    assert_eq!(set, Some(format!("{key}.x")), "variable of {key}");
                }
                None => assert_eq!(variable, "none", "variable of {key}"),
            }
        }
    }

    #[test]
    fn watch_options_override_file_values() {
        let cli = Cli::try_parse_from([
            "sluice",
            "watch",
            "--settle-time=250ms",
            "--ignore=*.csv.gz",
            "--ignore={a,b}",
            "--on-complete=keep",
            "--reprocess-dead-letters",
            "inbox",
        ])
        .unwrap();
        let Command::Watch(args) = cli.command else {
            panic!("expected watch");
        };
        let mut config = Config::default();
        config.watch.reprocess_after = Duration::from_secs(7);

        args.watch.apply(&mut config);

        assert_eq!(args.dir, PathBuf::from("inbox"));
        assert_eq!(config.watch.settle_time, Duration::from_millis(250));
        assert_eq!(config.watch.ignore, ["*.csv.gz", "{a,b}"]);
        assert_eq!(config.watch.on_complete, OnComplete::Keep);
        assert!(config.watch.reprocess_dead_letters);
        assert_eq!(config.watch.reprocess_after, Duration::from_secs(7));
    }

    #[test]
    fn reprocess_dead_letters_takes_an_optional_value() {
        let parse = |args: &[&str]| {
            let cli = Cli::try_parse_from(["sluice", "watch"].iter().chain(args)).unwrap();
            let Command::Watch(args) = cli.command else {
                panic!("expected watch");
            };
            args.watch.reprocess_dead_letters
        };
        assert_eq!(parse(&["inbox"]), None);
        assert_eq!(parse(&["--reprocess-dead-letters", "inbox"]), Some(true));
        assert_eq!(
            parse(&["--reprocess-dead-letters=false", "inbox"]),
            Some(false)
        );
    }

    #[test]
    fn flags_override_file_values() {
        let cli = Cli::try_parse_from([
            "sluice",
            "run",
            "--concurrency",
            "3",
            "--plugin-config",
            "key=iata",
            "--max-retries",
            "0",
            "a.csv",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("expected run");
        };
        let mut config = Config::default();
        config.http.concurrency = 50.into();
        config
            .plugin
            .config
            .insert("key".to_owned(), "faa".to_owned());
        config.retry.max_backoff = Duration::from_secs(3);

        args.common.apply(&mut config);

        assert_eq!(config.http.concurrency, 3.into());
        assert_eq!(config.retry.max_retries, 0);
        assert_eq!(config.plugin.config["key"], "iata");
        assert_eq!(config.retry.max_backoff, Duration::from_secs(3));
    }
}
