//! The plugin runtime: loading format components and calling them.
//!
//! One wasmtime [`Engine`] per process compiles a component once; a
//! [`FormatPluginPre`] links it once; each input file gets a fresh
//! [`Store`] and instance, so state from one file never leaks into the next
//! and a trap only poisons the instance that raised it.
//!
//! Plugins get no ambient capabilities: the WASI context grants no files,
//! sockets, environment variables, stdin or stdout. Rust guests import WASI
//! interfaces through their standard library even when they use none, so
//! the interfaces are linked but empty. A plugin's stderr goes to the
//! host's log, line by line and rate-limited (see [`stderr`]).

mod bindings;
mod stderr;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use wasmtime::component::{Component, Linker, ResourceAny, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub use bindings::sluice::plugin::types::{
    ConfigError, ConfigKey, Header, Malformed, Parsed, PluginInfo, Position, ReadBack, Record,
    Request,
};
use bindings::sluice::plugin::types::{Response, Verdict as PluginVerdict};
use bindings::{FormatPlugin, FormatPluginPre};

use crate::metrics::{PluginCall, PluginCallTimes};

/// How often the engine's epoch advances; call deadlines count in these.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// zstd level of compiled plugins in the cache: zstd's default, which is
/// also wasmtime's level for a new entry.
const CACHE_COMPRESSION_LEVEL: i32 = 3;

/// Resource limits for each plugin instance, and how many of its failures
/// the host absorbs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PluginLimits {
    /// Bytes of linear memory an instance may grow to.
    pub max_memory: usize,
    /// Time one call into the plugin may take before it is interrupted.
    pub call_timeout: Duration,
    /// Bytes of one record, or of the body of its request, above which
    /// the record is rejected.
    pub max_record_bytes: usize,
    /// Traps in a row, with no record handled between them, after which
    /// the host stops the file instead of restarting the plugin again.
    pub max_consecutive_traps: u32,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            max_memory: 256 * 1024 * 1024,
            call_timeout: Duration::from_secs(10),
            max_record_bytes: 16 * 1024 * 1024,
            max_consecutive_traps: 3,
        }
    }
}

/// An error raised by the plugin runtime.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The plugin rejected its configuration.
    #[error("plugin {plugin} rejected its configuration: {message}")]
    Config { plugin: String, message: String },

    /// The plugin reported that the rest of the file cannot be parsed.
    #[error("{message}")]
    File { message: String },

    /// The plugin trapped or the runtime failed; the instance is unusable.
    #[error("plugin {plugin} failed in {call}")]
    Trap {
        plugin: String,
        call: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A call ran past `plugin.call_timeout` or needed more memory than
    /// `plugin.max_memory_mib`; the instance is unusable. Unlike a
    /// [`PluginError::Trap`], trying again would cost the same again.
    #[error("plugin {plugin} failed in {call}")]
    Limit {
        plugin: String,
        call: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Per-store host state: an empty WASI context and the memory limit.
struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A loaded and linked plugin component, ready to instantiate.
pub struct Plugin {
    engine: Engine,
    limits: PluginLimits,
    pre: FormatPluginPre<HostState>,
    path: PathBuf,
    info: PluginInfo,
    config: Vec<(String, String)>,
    stderr: stderr::PluginStderr,
    call_times: Arc<PluginCallTimes>,
}

impl Plugin {
    /// Loads and links the component at `path` and reads its description.
    ///
    /// # Errors
    ///
    /// Fails when the file cannot be read, is not a component, does not
    /// implement the `sluice:plugin/format` interface, or traps in `info`.
    pub fn load(path: &Path, limits: PluginLimits) -> anyhow::Result<Plugin> {
        Plugin::load_with(path, limits, true)
    }

    /// Loads a plugin whose calls have no deadline, so that benchmarks
    /// can measure what the deadline costs. Never for real runs: a plugin
    /// that loops would hang the host.
    #[doc(hidden)]
    pub fn load_without_call_deadline(path: &Path, limits: PluginLimits) -> anyhow::Result<Plugin> {
        Plugin::load_with(path, limits, false)
    }

    fn load_with(path: &Path, limits: PluginLimits, deadline: bool) -> anyhow::Result<Plugin> {
        let started = Instant::now();
        let engine = new_engine(deadline)?;
        let bytes = std::fs::read(path)
            .with_context(|| format!("failed to read plugin {}", path.display()))?;
        let component = Component::new(&engine, &bytes)
            .map_err(anyhow::Error::from)
            .with_context(|| {
                format!(
                    "{} is not a WebAssembly component; build plugins for the wasm32-wasip2 \
                     target, which produces components",
                    path.display()
                )
            })?;
        let compiled = started.elapsed();
        check_interface_version(&engine, &component, path)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        let instance_pre = linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)
            .with_context(|| {
                format!(
                    "plugin {} needs imports the host does not provide",
                    path.display()
                )
            })?;
        let pre = FormatPluginPre::new(instance_pre)
            .map_err(anyhow::Error::from)
            .with_context(|| {
                format!(
                    "plugin {} does not implement the sluice:plugin/format@0.1.0 interface",
                    path.display()
                )
            })?;

        let mut plugin = Plugin {
            engine,
            limits,
            pre,
            path: path.to_owned(),
            info: placeholder_info(path),
            config: Vec::new(),
            stderr: stderr::PluginStderr::new(&placeholder_info(path).name),
            call_times: Arc::default(),
        };
        let mut instance = plugin.instantiate_unconfigured(false)?;
        plugin.info = instance.info()?;
        plugin.stderr = stderr::PluginStderr::new(&plugin.info.name);
        tracing::debug!(
            plugin = %plugin.info.name,
            compile_ms = compiled.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "plugin loaded"
        );
        Ok(plugin)
    }

    /// Returns the limits the plugin runs under.
    pub fn limits(&self) -> &PluginLimits {
        &self.limits
    }

    /// Returns the plugin's description of itself.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// Returns the path the plugin was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records the time of each `feed`, `finish`, `map` and `classify` call
    /// of instances created from now on in `times`.
    pub fn time_calls(&mut self, times: Arc<PluginCallTimes>) {
        self.call_times = times;
    }

    /// Sets the configuration and checks it on a throw-away instance, so
    /// that a bad value is reported before any file is opened.
    ///
    /// # Errors
    ///
    /// Returns [`PluginError::Config`] with the plugin's message when it
    /// rejects the configuration.
    pub fn configure(&mut self, config: Vec<(String, String)>) -> Result<(), PluginError> {
        self.config = config;
        self.instantiate().map(drop)
    }

    /// Creates a fresh, configured instance.
    pub fn instantiate(&self) -> Result<Instance, PluginError> {
        let mut instance = self.instantiate_unconfigured(false)?;
        instance.configure(&self.config)?;
        Ok(instance)
    }

    /// Creates a fresh, configured instance whose stderr is kept for trap
    /// reports but not logged, for calls that repeat earlier ones.
    pub fn instantiate_quiet(&self) -> Result<Instance, PluginError> {
        let mut instance = self.instantiate_unconfigured(true)?;
        instance.configure(&self.config)?;
        Ok(instance)
    }

    fn instantiate_unconfigured(&self, quiet: bool) -> Result<Instance, PluginError> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.max_memory)
            .trap_on_grow_failure(true)
            .build();
        let started = Instant::now();
        let stderr = self.stderr.for_instance(quiet);
        let state = HostState {
            wasi: WasiCtx::builder().stderr(stderr.clone()).build(),
            table: ResourceTable::new(),
            limits,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_trap();
        let ticks = self.limits.call_timeout.as_millis() / EPOCH_TICK.as_millis();
        let deadline_ticks = u64::try_from(ticks).unwrap_or(u64::MAX).max(1);
        store.set_epoch_deadline(deadline_ticks);
        let bindings = self.pre.instantiate(&mut store).map_err(|err| {
            let err = anyhow::Error::from(err);
            call_failure(&self.info.name, &self.limits, &stderr, "instantiate", err)
        })?;
        tracing::debug!(
            plugin = %self.info.name,
            micros = started.elapsed().as_micros() as u64,
            "plugin instantiated"
        );
        Ok(Instance {
            store,
            bindings,
            name: self.info.name.clone(),
            limits: self.limits,
            deadline_ticks,
            stderr,
            call_times: self.call_times.clone(),
        })
    }
}

/// One live plugin instance with its own store.
pub struct Instance {
    store: Store<HostState>,
    bindings: FormatPlugin,
    name: String,
    limits: PluginLimits,
    deadline_ticks: u64,
    stderr: stderr::PluginStderr,
    call_times: Arc<PluginCallTimes>,
}

impl Instance {
    /// Restarts the call deadline; every call into the guest gets its own.
    fn arm(&mut self) {
        self.store.set_epoch_deadline(self.deadline_ticks);
        self.stderr.start_call();
    }

    fn trap(&self, call: &'static str, err: impl Into<anyhow::Error>) -> PluginError {
        call_failure(&self.name, &self.limits, &self.stderr, call, err.into())
    }

    fn info(&mut self) -> Result<PluginInfo, PluginError> {
        let guest = self.bindings.sluice_plugin_format();
        guest
            .call_info(&mut self.store)
            .map_err(|err| self.trap("info", err))
    }

    fn configure(&mut self, config: &[(String, String)]) -> Result<(), PluginError> {
        self.arm();
        let guest = self.bindings.sluice_plugin_format();
        let result = guest.call_configure(&mut self.store, config);
        match result.map_err(|err| self.trap("configure", err))? {
            Ok(()) => Ok(()),
            Err(ConfigError { key, message }) => Err(PluginError::Config {
                plugin: self.name.clone(),
                message: if key.is_empty() {
                    message
                } else {
                    format!("invalid --plugin-config {key}: {message}")
                },
            }),
        }
    }

    /// Creates a parser for a new input file on this instance.
    pub fn parser(mut self) -> Result<FileParser, PluginError> {
        self.arm();
        let guest = self.bindings.sluice_plugin_format();
        let result = guest.parser().call_constructor(&mut self.store);
        let handle = result.map_err(|err| self.trap("parser constructor", err))?;
        Ok(FileParser {
            instance: self,
            handle,
        })
    }
}

/// The plugin's `classify` function, callable from any task. It keeps one
/// instance of its own behind a lock. Calls are short and rare, because the
/// host calls it only for responses that are not a 2xx success.
pub struct Classifier {
    plugin: Arc<Plugin>,
    instance: Mutex<Option<Instance>>,
}

impl Classifier {
    /// Creates a classifier for a configured plugin.
    pub fn new(plugin: Arc<Plugin>) -> Classifier {
        Classifier {
            plugin,
            instance: Mutex::new(None),
        }
    }

    fn call(&self, response: &Response) -> Result<Option<PluginVerdict>, PluginError> {
        let mut slot = self
            .instance
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if slot.is_none() {
            *slot = Some(self.plugin.instantiate()?);
        }
        let instance = slot.as_mut().expect("filled above");
        instance.arm();
        let guest = instance.bindings.sluice_plugin_format();
        let started = Instant::now();
        let result = guest.call_classify(&mut instance.store, response);
        let elapsed = started.elapsed();
        instance.call_times.observe(PluginCall::Classify, elapsed);
        match result {
            Ok(verdict) => Ok(verdict),
            Err(err) => {
                let err = instance.trap("classify", err);
                // A trapped instance cannot be entered again.
                *slot = None;
                Err(err)
            }
        }
    }
}

impl crate::delivery::Classify for Classifier {
    fn classify(
        &self,
        status: reqwest::StatusCode,
        headers: &reqwest::header::HeaderMap,
        body: &[u8],
    ) -> Option<crate::delivery::Verdict> {
        use crate::delivery::Verdict;
        let response = Response {
            status: status.as_u16(),
            headers: headers
                .iter()
                .filter_map(|(name, value)| {
                    let value = value.to_str().ok()?;
                    let name = name.as_str().to_owned();
                    Some(Header {
                        name,
                        value: value.to_owned(),
                    })
                })
                .collect(),
            body: body.to_vec(),
        };
        match self.call(&response) {
            Ok(verdict) => verdict.map(|verdict| match verdict {
                PluginVerdict::Delivered(reason) => Verdict::Delivered(reason),
                PluginVerdict::Retry(reason) => Verdict::Retry(reason),
                PluginVerdict::RetryAfter(delay) => {
                    Verdict::RetryAfter(Duration::from_millis(delay.milliseconds), delay.reason)
                }
                PluginVerdict::Permanent(reason) => Verdict::Permanent(reason),
            }),
            Err(err) => {
                // NOTE: falling back to the host's rules keeps delivery going
                // when the plugin's classifier is broken, and the warning
                // below records it.
                tracing::warn!(error = %err, "plugin classify failed; using the host's rules");
                None
            }
        }
    }
}

/// A plugin parser bound to one input file.
pub struct FileParser {
    instance: Instance,
    handle: ResourceAny,
}

impl FileParser {
    /// Feeds the next chunk of the file and returns the records it
    /// completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Parsed>, PluginError> {
        let instance = &mut self.instance;
        instance.arm();
        let guest = instance.bindings.sluice_plugin_format();
        let started = Instant::now();
        let result = guest
            .parser()
            .call_feed(&mut instance.store, self.handle, chunk);
        let elapsed = started.elapsed();
        instance.call_times.observe(PluginCall::Feed, elapsed);
        let parsed = result.map_err(|err| instance.trap("feed", err))?;
        parsed.map_err(|message| PluginError::File { message })
    }

    /// Ends the file and returns the records still buffered.
    pub fn finish(&mut self) -> Result<Vec<Parsed>, PluginError> {
        let instance = &mut self.instance;
        instance.arm();
        let guest = instance.bindings.sluice_plugin_format();
        let started = Instant::now();
        let result = guest.parser().call_finish(&mut instance.store, self.handle);
        let elapsed = started.elapsed();
        instance.call_times.observe(PluginCall::Finish, elapsed);
        let parsed = result.map_err(|err| instance.trap("finish", err))?;
        parsed.map_err(|message| PluginError::File { message })
    }

    /// Maps records to requests, one result per record.
    pub fn map(&mut self, records: &[Record]) -> Result<Vec<Result<Request, String>>, PluginError> {
        let instance = &mut self.instance;
        instance.arm();
        let guest = instance.bindings.sluice_plugin_format();
        let started = Instant::now();
        let result = guest
            .parser()
            .call_map_records(&mut instance.store, self.handle, records);
        let elapsed = started.elapsed();
        instance.call_times.observe(PluginCall::Map, elapsed);
        let mapped = result.map_err(|err| instance.trap("map", err))?;
        if mapped.len() != records.len() {
            let message = format!(
                "map returned {} results for {} records",
                mapped.len(),
                records.len()
            );
            return Err(instance.trap("map", anyhow::anyhow!(message)));
        }
        Ok(mapped)
    }

    /// Maps records to read-back checks, one result per record.
    pub fn read_back(&mut self, records: &[Record]) -> Result<Vec<Option<ReadBack>>, PluginError> {
        let instance = &mut self.instance;
        instance.arm();
        let guest = instance.bindings.sluice_plugin_format();
        let result = guest
            .parser()
            .call_read_back(&mut instance.store, self.handle, records);
        let checks = result.map_err(|err| instance.trap("read-back", err))?;
        if checks.len() != records.len() {
            let message = format!(
                "read-back returned {} results for {} records",
                checks.len(),
                records.len()
            );
            return Err(instance.trap("read-back", anyhow::anyhow!(message)));
        }
        Ok(checks)
    }

    /// Returns the bytes that start a dead-letter file for this file.
    pub fn preamble(&mut self) -> Result<Vec<u8>, PluginError> {
        let instance = &mut self.instance;
        instance.arm();
        let guest = instance.bindings.sluice_plugin_format();
        let result = guest
            .parser()
            .call_preamble(&mut instance.store, self.handle);
        result.map_err(|err| instance.trap("preamble", err))
    }
}

/// The interface this host implements, and the versions it accepts: any
/// 0.1.x, following semantic versioning for 0.x releases.
const INTERFACE: &str = "sluice:plugin/format";
const INTERFACE_VERSION: &str = "0.1.0";

/// Rejects a component built against another major version of the
/// interface, naming both versions, before linking fails with a less
/// helpful message.
fn check_interface_version(
    engine: &Engine,
    component: &Component,
    path: &Path,
) -> anyhow::Result<()> {
    let component_type = component.component_type();
    let exports: Vec<String> = component_type
        .exports(engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    let prefix = format!("{INTERFACE}@");
    let Some(version) = exports.iter().find_map(|name| name.strip_prefix(&prefix)) else {
        anyhow::bail!(
            "plugin {} does not export {INTERFACE}; it exports: {}",
            path.display(),
            exports.join(", ")
        );
    };
    if compatible(version, INTERFACE_VERSION) {
        return Ok(());
    }
    anyhow::bail!(
        "plugin {} was built against {INTERFACE}@{version}, but this host implements \
         {INTERFACE}@{INTERFACE_VERSION}; rebuild the plugin against this host's wit/plugin.wit",
        path.display()
    )
}

/// Returns whether `version` is semver-compatible with `supported`: the
/// same major version, or for 0.x the same minor version.
fn compatible(version: &str, supported: &str) -> bool {
    let parts = |text: &str| -> Option<(u64, u64)> {
        let mut numbers = text.split('.').map(|part| part.parse::<u64>().ok());
        Some((numbers.next()??, numbers.next()??))
    };
    match (parts(version), parts(supported)) {
        (Some((0, minor)), Some((0, supported_minor))) => minor == supported_minor,
        (Some((major, _)), Some((supported_major, _))) => major == supported_major,
        _ => false,
    }
}

fn new_engine(deadline: bool) -> anyhow::Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    // Epoch interruption bounds each plugin call: a ticker advances the
    // epoch, and a store traps once its deadline, counted in ticks, passes.
    config.epoch_interruption(deadline);
    // The on-disk cache keys compiled code by the component's bytes and
    // the engine's settings; a second start of the same plugin skips
    // compilation. A cache that cannot be set up only costs speed.
    match wasmtime::Cache::new(cache_config()) {
        Ok(cache) => {
            config.cache(Some(cache));
        }
        Err(err) => tracing::debug!(error = %err, "compiled-plugin cache disabled"),
    }
    let engine = Engine::new(&config)
        .map_err(anyhow::Error::from)
        .context("failed to create the WebAssembly engine")?;
    let ticker = engine.weak();
    std::thread::Builder::new()
        .name("plugin-epoch".to_owned())
        .spawn(move || {
            while let Some(engine) = ticker.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .context("failed to start the plugin deadline thread")?;
    Ok(engine)
}

/// Turns a failed call into a [`PluginError`]: a [`PluginError::Limit`]
/// for a call past its deadline or memory limit, a [`PluginError::Trap`]
/// with what the plugin wrote to stderr during the call otherwise.
fn call_failure(
    plugin: &str,
    limits: &PluginLimits,
    stderr: &stderr::PluginStderr,
    call: &'static str,
    err: anyhow::Error,
) -> PluginError {
    let plugin = plugin.to_owned();
    let chain = format!("{err:#}");
    if err.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
        let message = format!(
            "the call ran longer than plugin.call_timeout ({}); raise the limit if the \
             plugin is only slow, or report a plugin that hangs to its author",
            humantime::format_duration(limits.call_timeout)
        );
        return PluginError::Limit {
            plugin,
            call,
            source: message.into(),
        };
    }
    if chain.contains("growing memory") {
        let message = format!(
            "the plugin needed more memory than plugin.max_memory_mib ({} MiB); raise \
             the limit if the input needs it",
            limits.max_memory / (1024 * 1024)
        );
        return PluginError::Limit {
            plugin,
            call,
            source: message.into(),
        };
    }
    // A trap's own message is only "unreachable executed" and a
    // backtrace. The panic message that a guest writes to stderr before
    // it aborts describes the failure.
    let cause = err.root_cause().to_string();
    let cause = first_line(&cause);
    let source: Box<dyn std::error::Error + Send + Sync> = match stderr.call_output() {
        Some(output) => format!("{output} ({cause})").into(),
        None => cause.to_owned().into(),
    };
    PluginError::Trap {
        plugin,
        call,
        source,
    }
}

/// Returns the first line of an error message.
fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default().trim_end()
}

fn placeholder_info(path: &Path) -> PluginInfo {
    let name = path
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plugin".to_owned());
    PluginInfo {
        name,
        version: String::new(),
        extensions: Vec::new(),
        config_keys: Vec::new(),
        record_separator: b"\n".to_vec(),
    }
}

/// Returns the settings of the compiled-plugin cache: wasmtime's defaults,
/// except that a cached plugin is never compressed again. By default,
/// wasmtime 48 recompresses an entry at zstd level 20 on a background
/// thread once it has been used 256 times, and that raised one run's peak
/// RSS from about 57 to 229 MiB in the benchmark.
fn cache_config() -> wasmtime::CacheConfig {
    let mut config = wasmtime::CacheConfig::new();
    config
        .with_baseline_compression_level(CACHE_COMPRESSION_LEVEL)
        .with_optimized_compression_level(CACHE_COMPRESSION_LEVEL);
    config
}

#[cfg(test)]
mod tests {
    use super::{cache_config, compatible};

    #[test]
    fn cache_entries_are_never_recompressed() {
        let config = cache_config();
        // wasmtime recompresses an entry only while its level is below the
        // optimized level.
        assert!(config.optimized_compression_level() <= config.baseline_compression_level());
    }

    #[test]
    fn versions_follow_semver_for_zero_releases() {
        assert!(compatible("0.1.0", "0.1.0"));
        assert!(compatible("0.1.7", "0.1.0"));
        assert!(!compatible("0.2.0", "0.1.0"));
        assert!(!compatible("9.0.0", "0.1.0"));
        assert!(compatible("1.4.0", "1.0.0"));
        assert!(!compatible("2.0.0", "1.0.0"));
        assert!(!compatible("garbage", "0.1.0"));
    }
}
