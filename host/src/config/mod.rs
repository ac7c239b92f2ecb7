//! Configuration: what the user may set, its defaults, and its validation.
//!
//! Values come from four layers, each overriding the one before: built-in
//! defaults, a TOML file (`--config FILE`), `SLUICE_*` environment
//! variables, and command-line flags. [`Config`] is the merged, unchecked
//! form that mirrors the TOML file; [`Config::validate`] turns it into
//! [`Settings`], whose values are known to be usable, or lists every
//! problem at once with the key, the value and what is allowed.

mod env;
mod file;
pub mod provenance;
mod watch;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use reqwest::Url;
use serde::{Deserialize, Serialize};

use crate::delivery::backoff::BackoffPolicy;
use crate::delivery::breaker::BreakerSettings;
use crate::delivery::RetryPolicy;

pub use env::{apply_env_maps, env_map_key, expand_env};
pub use watch::{OnComplete, WatchConfig, WatchSettings, DEFAULT_DONE_DIR_NAME};

/// Default number of requests in flight.
pub const DEFAULT_CONCURRENCY: usize = 16;
/// Default per-request timeout, covering connect, send and the response body.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default timeout for establishing a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default number of retries after the first attempt.
pub const DEFAULT_MAX_RETRIES: u32 = 5;
/// Default upper bound of the first backoff delay.
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Default growth factor of the backoff bound per retry.
pub const DEFAULT_MULTIPLIER: f64 = 2.0;
/// Default cap on the backoff bound.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Default cap on a delay requested by a `Retry-After` header.
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Default count of consecutive exhausted requests that opens the breaker.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 5;
/// Default time the breaker stays open before a probe.
pub const DEFAULT_OPEN_DURATION: Duration = Duration::from_secs(30);
/// Default size of the chunks read from input files, in bytes.
pub const DEFAULT_CHUNK_SIZE: usize = 64 * 1024;
/// Default directory for dead-letter and rejected files.
pub const DEFAULT_DEAD_LETTER_DIR: &str = "dead-letters";
/// Default directory for the progress ledger.
pub const DEFAULT_STATE_DIR: &str = ".sluice";
/// Default name of the idempotency key header.
pub const DEFAULT_IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

const MAX_CONCURRENCY: usize = 1024;
const MAX_RETRIES_LIMIT: u32 = 100;
const MIN_CHUNK_SIZE: usize = 1024;
const MAX_CHUNK_SIZE: usize = 64 * 1024 * 1024;

/// The whole configuration, as written in the TOML file.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Base URL of the API; request paths from the plugin are appended to it.
    pub endpoint: Option<String>,
    /// Directory for dead-letter and rejected files and their sidecars.
    pub dead_letter_dir: Option<PathBuf>,
    /// Directory for the progress ledger, which lets a rerun resume.
    pub state_dir: Option<PathBuf>,
    /// When to draw a progress bar on stderr: `auto` (when it is a
    /// terminal), `always` or `never`.
    pub progress: ProgressMode,
    /// The format plugin and its settings.
    pub plugin: PluginConfig,
    /// HTTP client settings.
    pub http: HttpConfig,
    /// Retry settings for transient faults.
    pub retry: RetryConfig,
    /// Circuit breaker settings.
    pub breaker: BreakerConfig,
    /// Input reading settings.
    pub input: InputConfig,
    /// Idempotency key settings.
    pub idempotency: IdempotencyConfig,
    /// Settings of `sluice watch`.
    pub watch: WatchConfig,
    /// Metrics and health check settings.
    pub metrics: MetricsConfig,
}

/// The `[metrics]` table.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address, as `IP:PORT`, on which `run`, `reprocess` and `watch` serve
    /// Prometheus metrics at `/metrics` and health checks at `/healthz`
    /// and `/readyz`. Unset means no server.
    pub address: Option<String>,
}

/// The `[idempotency]` table.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct IdempotencyConfig {
    /// Whether every request carries an idempotency key header.
    pub enabled: bool,
    /// Name of the header.
    pub header: String,
    /// The source of the key: `position` (the file's content
    /// fingerprint and the record's position) or `record-key` (the key the
    /// plugin declares for the record).
    pub key: KeySource,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        IdempotencyConfig {
            enabled: true,
            header: DEFAULT_IDEMPOTENCY_HEADER.to_owned(),
            key: KeySource::Position,
        }
    }
}

/// The source of an idempotency key.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum KeySource {
    /// The file's content fingerprint and the record's number: one key per
    /// record of one version of a file.
    #[default]
    Position,
    /// The plugin's record key: one key per entity, whatever the file.
    RecordKey,
}

/// Default memory limit of a plugin instance, in MiB.
pub const DEFAULT_PLUGIN_MAX_MEMORY_MIB: usize = 256;
/// Default time one plugin call may take.
pub const DEFAULT_PLUGIN_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Default size above which a record or its request body is rejected.
pub const DEFAULT_PLUGIN_MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;
/// Default number of plugin traps in a row that stops a file.
pub const DEFAULT_PLUGIN_MAX_CONSECUTIVE_TRAPS: u32 = 3;

/// The `[plugin]` table.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PluginConfig {
    /// Path of the plugin component (a `.wasm` file).
    pub path: Option<PathBuf>,
    /// Linear memory one plugin instance may grow to, in MiB.
    pub max_memory_mib: usize,
    /// Time one call into the plugin may take before it is stopped.
    #[serde(with = "humantime_serde")]
    pub call_timeout: Duration,
    /// Size in bytes of a record, or of its request body, above which the
    /// record is rejected instead of sent.
    pub max_record_bytes: usize,
    /// Plugin traps in a row, with no record handled between them, after
    /// which the file stops instead of the plugin being restarted again.
    pub max_consecutive_traps: u32,
    /// Key/value pairs handed to the plugin's `configure` function. TOML
    /// numbers and booleans are passed on as their text.
    #[serde(deserialize_with = "scalars_as_strings")]
    pub config: BTreeMap<String, String>,
}

impl Default for PluginConfig {
    fn default() -> Self {
        PluginConfig {
            path: None,
            max_memory_mib: DEFAULT_PLUGIN_MAX_MEMORY_MIB,
            call_timeout: DEFAULT_PLUGIN_CALL_TIMEOUT,
            max_record_bytes: DEFAULT_PLUGIN_MAX_RECORD_BYTES,
            max_consecutive_traps: DEFAULT_PLUGIN_MAX_CONSECUTIVE_TRAPS,
            config: BTreeMap::new(),
        }
    }
}

fn scalars_as_strings<'de, D>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "a string, number or boolean")]
    enum Scalar {
        Text(String),
        Integer(i64),
        Float(f64),
        Bool(bool),
    }
    let map = BTreeMap::<String, Scalar>::deserialize(deserializer)?;
    let text = |value| match value {
        Scalar::Text(text) => text,
        Scalar::Integer(number) => number.to_string(),
        Scalar::Float(number) => number.to_string(),
        Scalar::Bool(flag) => flag.to_string(),
    };
    Ok(map
        .into_iter()
        .map(|(key, value)| (key, text(value)))
        .collect())
}

/// The `[http]` table.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Maximum number of requests in flight at once, or `"adaptive"`.
    pub concurrency: Concurrency,
    /// Per-request timeout, covering connect, send and the response body.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Timeout for establishing a TCP (and TLS) connection.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Headers added to every request. Values may name environment
    /// variables as `${NAME}`, which keeps secrets out of the file.
    pub headers: BTreeMap<String, String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            concurrency: Concurrency::Fixed(DEFAULT_CONCURRENCY),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            headers: BTreeMap::new(),
        }
    }
}

/// The `[retry]` table.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Retries after the first attempt; 0 means one attempt only.
    pub max_retries: u32,
    /// Upper bound of the first backoff delay.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Growth factor of the backoff bound per retry, at least 1.
    pub multiplier: f64,
    /// Cap on the backoff bound.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Cap on a delay requested by a `Retry-After` header on 429 or 503.
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,
    /// Seed for the backoff jitter, for reproducible runs; random if unset.
    pub jitter_seed: Option<u64>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_retries: DEFAULT_MAX_RETRIES,
            initial_backoff: DEFAULT_INITIAL_BACKOFF,
            multiplier: DEFAULT_MULTIPLIER,
            max_backoff: DEFAULT_MAX_BACKOFF,
            max_retry_after: DEFAULT_MAX_RETRY_AFTER,
            jitter_seed: None,
        }
    }
}

/// The `[breaker]` table.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive requests that ran out of retries before the breaker
    /// opens.
    pub failure_threshold: u32,
    /// How long the breaker stays open before one probe request is sent.
    #[serde(with = "humantime_serde")]
    pub open_duration: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            open_duration: DEFAULT_OPEN_DURATION,
        }
    }
}

/// The `[input]` table.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct InputConfig {
    /// Size of the chunks read from input files and fed to the plugin, in
    /// bytes.
    pub chunk_size: usize,
}

impl Default for InputConfig {
    fn default() -> Self {
        InputConfig {
            chunk_size: DEFAULT_CHUNK_SIZE,
        }
    }
}

/// When to draw a progress bar.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ProgressMode {
    /// Draw it when stderr is a terminal.
    #[default]
    Auto,
    /// Always draw it.
    Always,
    /// Never draw it; log progress lines instead.
    Never,
}

/// One invalid configuration value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The key at fault, such as `retry.multiplier`.
    pub key: String,
    /// The offending value as the user wrote it.
    pub value: String,
    /// The values that are allowed instead.
    pub allowed: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {} = {}: {}", self.key, self.value, self.allowed)
    }
}

/// Every problem found in a configuration.
#[derive(Debug, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

/// A validated configuration, ready to run with.
#[derive(Clone, Debug)]
pub struct Settings {
    pub endpoint: Url,
    pub plugin_path: PathBuf,
    pub plugin_config: Vec<(String, String)>,
    pub plugin_limits: crate::plugin::PluginLimits,
    pub dead_letter_dir: PathBuf,
    pub state_dir: PathBuf,
    /// The idempotency header and key source, or `None` when turned off.
    pub idempotency: Option<(HeaderName, KeySource)>,
    pub progress: ProgressMode,
    pub http: HttpSettings,
    pub retry: RetryPolicy,
    pub breaker: BreakerSettings,
    pub chunk_size: NonZeroUsize,
    /// The address for metrics and health checks, if any.
    pub metrics_address: Option<SocketAddr>,
    pub watch: WatchSettings,
}

/// `http.concurrency`: a fixed number of requests in flight, or a limit
/// that adapts to the API's latency and back pressure.
/// It is written as a number, or as the text `"adaptive"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Concurrency {
    Fixed(usize),
    Adaptive,
}

// The range is that of MAX_CONCURRENCY, which a test checks.
const CONCURRENCY_EXPECTED: &str = "an integer from 1 to 1024, or \"adaptive\"";

impl Serialize for Concurrency {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Concurrency::Fixed(limit) => serializer.serialize_u64(*limit as u64),
            Concurrency::Adaptive => serializer.serialize_str("adaptive"),
        }
    }
}

impl<'de> Deserialize<'de> for Concurrency {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl serde::de::Visitor<'_> for Visitor {
            type Value = Concurrency;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(CONCURRENCY_EXPECTED)
            }

            fn visit_u64<E: serde::de::Error>(self, limit: u64) -> Result<Concurrency, E> {
                // A limit too large for usize fails validation as too large.
                Ok(Concurrency::Fixed(
                    usize::try_from(limit).unwrap_or(usize::MAX),
                ))
            }

            fn visit_i64<E: serde::de::Error>(self, limit: i64) -> Result<Concurrency, E> {
                match u64::try_from(limit) {
                    Ok(limit) => self.visit_u64(limit),
                    Err(_) => Err(E::invalid_value(
                        serde::de::Unexpected::Signed(limit),
                        &self,
                    )),
                }
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Concurrency, E> {
                text.parse()
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Str(text), &self))
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}

impl From<usize> for Concurrency {
    fn from(limit: usize) -> Self {
        Concurrency::Fixed(limit)
    }
}

impl std::fmt::Display for Concurrency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Concurrency::Fixed(limit) => write!(f, "{limit}"),
            Concurrency::Adaptive => f.write_str("adaptive"),
        }
    }
}

impl std::str::FromStr for Concurrency {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.trim().eq_ignore_ascii_case("adaptive") {
            return Ok(Concurrency::Adaptive);
        }
        text.trim()
            .parse()
            .map(Concurrency::Fixed)
            .map_err(|_| format!("expected {CONCURRENCY_EXPECTED}, not {text:?}"))
    }
}

impl HttpSettings {
    /// Returns the maximum number of requests that can be in flight at once.
    pub fn max_concurrency(&self) -> usize {
        if self.adaptive {
            crate::delivery::limiter::ADAPTIVE_MAX
        } else {
            self.concurrency.get()
        }
    }
}

/// Validated HTTP client settings.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    /// Requests in flight at once, or where an adaptive limit starts.
    pub concurrency: NonZeroUsize,
    /// Whether the limit adapts, between 1 and
    /// [`crate::delivery::limiter::ADAPTIVE_MAX`].
    pub adaptive: bool,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Config {
    /// Reads a TOML configuration file.
    ///
    /// # Errors
    ///
    /// Fails when the file cannot be read or is not valid TOML for this
    /// configuration; the message names the file, the line and the bad key.
    pub fn from_file(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|err| {
            anyhow::anyhow!("failed to read config file {}: {err}", path.display())
        })?;
        file::parse(path, &text)
    }

    /// Checks every value and builds the runtime settings.
    ///
    /// `lookup` resolves `${NAME}` references in header values; callers pass
    /// `std::env::var`.
    ///
    /// # Errors
    ///
    /// Returns every problem found, not only the first.
    pub fn validate(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigErrors> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, value: &dyn fmt::Display, allowed: &str| {
            problems.push(ConfigProblem {
                key: key.to_owned(),
                value: value.to_string(),
                allowed: allowed.to_owned(),
            });
        };

        let endpoint = match &self.endpoint {
            None => {
                problem(
                    "endpoint",
                    &"(unset)",
                    "set --endpoint URL or SLUICE_ENDPOINT",
                );
                None
            }
            Some(raw) => match parse_endpoint(raw) {
                Ok(url) => Some(url),
                Err(allowed) => {
                    problem("endpoint", &mask_url(raw), allowed);
                    None
                }
            },
        };
        let plugin_path = self.plugin.path.clone();
        if plugin_path.is_none() {
            problem(
                "plugin.path",
                &"(unset)",
                "set --plugin FILE.wasm or SLUICE_PLUGIN_PATH",
            );
        }

        let http = &self.http;
        let (concurrency, adaptive) = match http.concurrency {
            Concurrency::Fixed(limit) => (
                NonZeroUsize::new(limit).filter(|n| n.get() <= MAX_CONCURRENCY),
                false,
            ),
            Concurrency::Adaptive => (NonZeroUsize::new(DEFAULT_CONCURRENCY), true),
        };
        if concurrency.is_none() {
            let allowed = format!("an integer from 1 to {MAX_CONCURRENCY}, or \"adaptive\"");
            problem("http.concurrency", &http.concurrency, &allowed);
        }
        if http.timeout.is_zero() {
            problem(
                "http.timeout",
                &"0s",
                "a duration above zero, such as \"30s\"",
            );
        }
        if http.connect_timeout.is_zero() {
            problem(
                "http.connect_timeout",
                &"0s",
                "a duration above zero, such as \"10s\"",
            );
        }
        let mut headers = Vec::new();
        for (name, value) in &http.headers {
            let key = format!("http.headers.{name}");
            let Ok(header_name) = HeaderName::from_bytes(name.as_bytes()) else {
                problem(
                    &key,
                    &name,
                    "a header name made of letters, digits and - _ .",
                );
                continue;
            };
            let expanded = match expand_env(value, &lookup) {
                Ok(expanded) => expanded,
                Err(missing) => {
                    let allowed = format!("environment variable {missing} is not set");
                    problem(&key, &"(hidden)", &allowed);
                    continue;
                }
            };
            match HeaderValue::from_str(&expanded) {
                Ok(mut header_value) => {
                    header_value.set_sensitive(true);
                    headers.push((header_name, header_value));
                }
                Err(_) => problem(
                    &key,
                    &"(hidden)",
                    "visible ASCII characters and spaces only",
                ),
            }
        }

        let retry = &self.retry;
        if retry.max_retries > MAX_RETRIES_LIMIT {
            let allowed = format!("an integer from 0 to {MAX_RETRIES_LIMIT}");
            problem("retry.max_retries", &retry.max_retries, &allowed);
        }
        if !(retry.multiplier.is_finite() && (1.0..=100.0).contains(&retry.multiplier)) {
            problem(
                "retry.multiplier",
                &retry.multiplier,
                "a number from 1.0 to 100.0",
            );
        }
        if retry.max_backoff < retry.initial_backoff {
            let value = humantime::format_duration(retry.max_backoff);
            let allowed = format!(
                "at least retry.initial_backoff ({})",
                humantime::format_duration(retry.initial_backoff)
            );
            problem("retry.max_backoff", &value, &allowed);
        }

        let breaker = &self.breaker;
        let failure_threshold = NonZeroU32::new(breaker.failure_threshold);
        if failure_threshold.is_none() {
            problem("breaker.failure_threshold", &0, "an integer of at least 1");
        }
        if breaker.open_duration.is_zero() {
            problem(
                "breaker.open_duration",
                &"0s",
                "a duration above zero, such as \"30s\"",
            );
        }

        let chunk_size = NonZeroUsize::new(self.input.chunk_size)
            .filter(|n| (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&n.get()));
        if chunk_size.is_none() {
            let allowed = format!("a byte count from {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE}");
            problem("input.chunk_size", &self.input.chunk_size, &allowed);
        }

        let plugin = &self.plugin;
        if !(16..=65536).contains(&plugin.max_memory_mib) {
            let value = plugin.max_memory_mib;
            problem(
                "plugin.max_memory_mib",
                &value,
                "an integer from 16 to 65536",
            );
        }
        if plugin.call_timeout < Duration::from_millis(10) {
            let value = humantime::format_duration(plugin.call_timeout);
            problem("plugin.call_timeout", &value, "a duration of at least 10ms");
        }
        if !(1024..=1024 * 1024 * 1024).contains(&plugin.max_record_bytes) {
            let value = plugin.max_record_bytes;
            let allowed = "a byte count from 1024 to 1073741824 (1 GiB)";
            problem("plugin.max_record_bytes", &value, allowed);
        }
        if !(1..=1000).contains(&plugin.max_consecutive_traps) {
            let value = plugin.max_consecutive_traps;
            let allowed = "an integer from 1 to 1000";
            problem("plugin.max_consecutive_traps", &value, allowed);
        }

        let idempotency = &self.idempotency;
        let idempotency_header = HeaderName::from_bytes(idempotency.header.as_bytes()).ok();
        if idempotency.enabled && idempotency_header.is_none() {
            let allowed = "a header name made of letters, digits and - _ .";
            problem("idempotency.header", &idempotency.header, allowed);
        }

        let metrics_address = match &self.metrics.address {
            None => None,
            Some(raw) => match raw.trim().parse::<SocketAddr>() {
                Ok(address) => Some(address),
                Err(_) => {
                    let allowed = "an IP address and port, such as 127.0.0.1:9464 or \
                                   [::1]:9464";
                    problem("metrics.address", &raw, allowed);
                    None
                }
            },
        };
        let watch = self.watch.validate(&mut problem);

        if !problems.is_empty() {
            return Err(ConfigErrors(problems));
        }
        // Every `None` above pushed a problem, so these all hold values.
        let (Some(endpoint), Some(plugin_path), Some(concurrency)) =
            (endpoint, plugin_path, concurrency)
        else {
            unreachable!("missing values are reported as problems");
        };
        let (Some(failure_threshold), Some(chunk_size), Some(watch)) =
            (failure_threshold, chunk_size, watch)
        else {
            unreachable!("invalid values are reported as problems");
        };

        Ok(Settings {
            endpoint,
            plugin_path,
            plugin_config: self.plugin.config.clone().into_iter().collect(),
            plugin_limits: crate::plugin::PluginLimits {
                max_memory: plugin.max_memory_mib * 1024 * 1024,
                call_timeout: plugin.call_timeout,
                max_record_bytes: plugin.max_record_bytes,
                max_consecutive_traps: plugin.max_consecutive_traps,
            },
            dead_letter_dir: self
                .dead_letter_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DEAD_LETTER_DIR)),
            state_dir: self
                .state_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            idempotency: idempotency_header
                .filter(|_| idempotency.enabled)
                .map(|header| (header, idempotency.key)),
            progress: self.progress,
            http: HttpSettings {
                concurrency,
                adaptive,
                timeout: http.timeout,
                connect_timeout: http.connect_timeout,
                headers,
            },
            retry: RetryPolicy {
                max_retries: retry.max_retries,
                backoff: BackoffPolicy {
                    initial: retry.initial_backoff,
                    multiplier: retry.multiplier,
                    max: retry.max_backoff,
                },
                max_retry_after: retry.max_retry_after,
                jitter_seed: retry.jitter_seed,
            },
            breaker: BreakerSettings {
                failure_threshold,
                open_duration: breaker.open_duration,
            },
            chunk_size,
            metrics_address,
            watch,
        })
    }
}

fn parse_endpoint(raw: &str) -> Result<Url, &'static str> {
    let url = Url::parse(raw).map_err(|_| "an absolute http:// or https:// URL")?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("an absolute http:// or https:// URL");
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("a URL without query or fragment; put those in the plugin's path");
    }
    Ok(url)
}

/// Replaces the password of a URL, if any, so it can be shown.
pub fn mask_url(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        _ => raw.to_owned(),
    }
}

#[cfg(test)]
pub(crate) mod tests;
