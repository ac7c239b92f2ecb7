//! `sluice watch`: checks the inbox and the directories, starts the
//! service, and reloads the configuration on SIGHUP.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::signal::unix::{signal as unix_signal, Signal, SignalKind};
use tokio::sync::{mpsc, watch};

use super::args::WatchArgs;
use super::config_cmd::mask;
use super::{
    bind_metrics, configured_plugin, init_logging, load_config, pipeline_runtime,
    prepare_directories, serve_metrics, validate, watch_signals, write_json_file, CommonArgs,
    Failure, Logging, WatchOptions,
};
use crate::config::{provenance, Config, OnComplete, Settings, DEFAULT_DONE_DIR_NAME};
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::report::Counters;
use crate::watch::{Service, WatchReport};

/// Runs `sluice watch DIR` until SIGINT or SIGTERM.
pub(super) fn run(logging: &Logging, args: &WatchArgs) -> Result<u8, Failure> {
    let config = load_config(&args.common, Some(&args.watch))?;
    let settings = validate(&config)?;
    init_logging(logging, None)?;
    let dir = inbox_dir(&args.dir)?;
    check_directories(&dir, &settings)
        .map_err(|message| Failure::usage(anyhow::anyhow!(message)))?;
    let _locks = prepare_directories(&settings)?;
    let _inbox_lock = lock_inbox(&dir)?;
    let metrics_listener = bind_metrics(&settings)?;
    let plugin = configured_plugin(&settings)?;

    let runtime = pipeline_runtime().map_err(Failure::other)?;
    let report = runtime.block_on(async {
        let (stop, stopped) = watch::channel(false);
        let signal = Arc::new(Mutex::new(None));
        tokio::spawn(watch_signals(stop, signal.clone()));
        let hangup = unix_signal(SignalKind::hangup()).map_err(Failure::other)?;
        let (hangup_sender, hangups) = mpsc::unbounded_channel();
        tokio::spawn(forward_hangups(hangup, hangup_sender));

        let counters = Arc::new(Counters::with_limit(settings.http.concurrency.get()));
        let metrics = Arc::new(Metrics::new(counters.clone(), &settings.dead_letter_dir));
        serve_metrics(metrics_listener, &metrics).map_err(Failure::other)?;
        let pipeline = Pipeline::new(settings, plugin, counters.clone(), stopped.clone(), false)
            .map_err(Failure::other)?;
        // Reloads keep this breaker, so the metrics follow it throughout.
        metrics.watch_breaker(pipeline.breaker().clone());
        let mut reloader = Reloader {
            common: args.common.clone(),
            watch: args.watch.clone(),
            config,
            dir: dir.clone(),
            counters: counters.clone(),
            shutdown: stopped.clone(),
        };
        let reload = Box::new(move |current: &Pipeline| reloader.reload(current));
        let service = Service::new(dir, pipeline, counters, stopped, hangups, reload);
        // The service runs on the runtime's workers, as `run`'s pipeline
        // does, so that its delivery tasks wake it on the same threads.
        let report = match tokio::spawn(service.run()).await {
            Ok(report) => report.map_err(Failure::other)?,
            Err(err) => std::panic::resume_unwind(err.into_panic()),
        };
        let interrupted_by = signal.lock().expect("not poisoned").map(str::to_owned);
        Ok::<WatchReport, Failure>(WatchReport {
            interrupted_by,
            ..report
        })
    })?;

    let _ = report.write_summary(&mut std::io::stdout().lock());
    if let Some(path) = &args.common.summary_json {
        write_json_file(path, &report)?;
    }
    Ok(report.exit_code())
}

/// Returns the inbox as an absolute path without symbolic links, which is
/// how file system events name its files.
fn inbox_dir(dir: &Path) -> Result<PathBuf, Failure> {
    let problem = match std::fs::canonicalize(dir) {
        Ok(canonical) if canonical.is_dir() => return Ok(canonical),
        Ok(_) => "is not a directory".to_owned(),
        Err(err) => format!("cannot be opened: {err}"),
    };
    let message = format!(
        "inbox {} {problem}; pass the directory that files arrive in",
        dir.display()
    );
    Err(Failure::usage(anyhow::anyhow!(message)))
}

/// Checks that no directory that sluice writes is the inbox, whose files
/// would then be taken as input, and creates the done directory.
fn check_directories(dir: &Path, settings: &Settings) -> Result<(), String> {
    let same = |other: &Path| {
        let other = std::fs::canonicalize(other)
            .or_else(|_| std::path::absolute(other))
            .unwrap_or_else(|_| other.to_owned());
        other == dir
    };
    let written = [
        (
            "dead_letter_dir",
            &settings.dead_letter_dir,
            "--dead-letter-dir",
        ),
        ("state_dir", &settings.state_dir, "--state-dir"),
    ];
    for (key, path, flag) in written {
        if same(path) {
            return Err(format!(
                "{key} {} is the inbox, whose files would be taken as input; pass {flag} with \
                 another directory",
                path.display()
            ));
        }
    }

    if settings.watch.on_complete != OnComplete::Move {
        return Ok(());
    }
    let done_dir = match &settings.watch.done_dir {
        Some(done_dir) => done_dir.clone(),
        None => dir.join(DEFAULT_DONE_DIR_NAME),
    };
    if same(&done_dir) {
        return Err(format!(
            "watch.done_dir {} is the inbox, so completed files would never leave it; pass \
             --done-dir with another directory, such as {}",
            done_dir.display(),
            dir.join(DEFAULT_DONE_DIR_NAME).display()
        ));
    }
    let resolve = |path: &Path| {
        std::fs::canonicalize(path)
            .or_else(|_| std::path::absolute(path))
            .unwrap_or_else(|_| path.to_owned())
    };
    for (key, path) in written.iter().map(|(key, path, _)| (key, path)) {
        if resolve(&done_dir) == resolve(path) {
            return Err(format!(
                "watch.done_dir {} is also {key}, where completed inputs would be taken for \
                 sluice's own files; pass --done-dir with another directory, such as {}",
                done_dir.display(),
                dir.join(DEFAULT_DONE_DIR_NAME).display()
            ));
        }
    }
    std::fs::create_dir_all(&done_dir).map_err(|err| {
        format!(
            "cannot create watch.done_dir {}: {err}; pass --done-dir with a writable directory",
            done_dir.display()
        )
    })
}

/// Locks the inbox, so that two `sluice watch` processes with different
/// state directories cannot take the same files.
fn lock_inbox(dir: &Path) -> Result<std::fs::File, Failure> {
    let handle = std::fs::File::open(dir).map_err(|err| {
        let message = format!("cannot open the inbox {}: {err}", dir.display());
        Failure::usage(anyhow::anyhow!(message))
    })?;
    match handle.try_lock() {
        Ok(()) => Ok(handle),
        Err(std::fs::TryLockError::WouldBlock) => {
            let message = format!(
                "another sluice process is watching the inbox {}; stop it first",
                dir.display()
            );
            Err(Failure::usage(anyhow::anyhow!(message)))
        }
        Err(std::fs::TryLockError::Error(err)) => {
            let message = format!("cannot lock the inbox {}: {err}", dir.display());
            Err(Failure::other(anyhow::anyhow!(message)))
        }
    }
}

/// Passes each SIGHUP on to the service, which reloads the configuration
/// before it takes the next file.
async fn forward_hangups(mut hangup: Signal, hangups: mpsc::UnboundedSender<()>) {
    while hangup.recv().await.is_some() {
        tracing::info!(signal = "SIGHUP", "reloading the configuration");
        if hangups.send(()).is_err() {
            return;
        }
    }
}

/// Reads the configuration again on SIGHUP.
struct Reloader {
    common: CommonArgs,
    watch: WatchOptions,
    /// The configuration the running pipeline was built from.
    config: Config,
    dir: PathBuf,
    counters: Arc<Counters>,
    shutdown: watch::Receiver<bool>,
}

impl Reloader {
    /// Builds a pipeline from the configuration file, the environment and
    /// the flags as they read now, keeping the running circuit breaker.
    /// Logs each key that changed, or each problem and `None` when the
    /// new configuration is rejected.
    fn reload(&mut self, current: &Pipeline) -> Option<Pipeline> {
        let (config, pipeline) = match self.build(current) {
            Ok(built) => built,
            Err(problems) => {
                for problem in &problems {
                    tracing::error!(error = %problem, "invalid configuration on reload");
                }
                tracing::warn!(
                    problems = problems.len(),
                    "configuration reload rejected; the running configuration stays"
                );
                return None;
            }
        };

        let changed = changed_keys(&self.config, &config);
        for (key, old, new) in &changed {
            tracing::info!(key, old = %old, new = %new, "configuration key changed");
        }
        tracing::info!(
            changed = changed.len(),
            "configuration reloaded; it applies from the next file on"
        );
        self.config = config;
        Some(pipeline)
    }

    fn build(&self, current: &Pipeline) -> Result<(Config, Pipeline), Vec<String>> {
        let config = load_config(&self.common, Some(&self.watch))
            .map_err(|failure| vec![format!("{:#}", failure.error)])?;
        let settings = config
            .validate(|name| std::env::var(name).ok())
            .map_err(|errors| errors.0.iter().map(ToString::to_string).collect::<Vec<_>>())?;

        let mut problems = Vec::new();
        let running = current.settings();
        let fixed = [
            (
                "dead_letter_dir",
                &running.dead_letter_dir,
                &settings.dead_letter_dir,
            ),
            ("state_dir", &running.state_dir, &settings.state_dir),
        ];
        for (key, old, new) in fixed {
            if old != new {
                problems.push(format!(
                    "{key} cannot change while sluice watch runs ({} to {}); restart sluice to \
                     use the new directory",
                    old.display(),
                    new.display()
                ));
            }
        }
        if running.metrics_address != settings.metrics_address {
            let show = |address: Option<std::net::SocketAddr>| {
                address.map_or_else(|| "unset".to_owned(), |address| address.to_string())
            };
            problems.push(format!(
                "metrics.address cannot change while sluice watch runs ({} to {}); restart \
                 sluice to serve on the new address",
                show(running.metrics_address),
                show(settings.metrics_address)
            ));
        }
        if let Err(problem) = check_directories(&self.dir, &settings) {
            problems.push(problem);
        }
        let plugin = match configured_plugin(&settings) {
            Ok(plugin) => Some(plugin),
            Err(failure) => {
                problems.push(format!("{:#}", failure.error));
                None
            }
        };
        let (Some(plugin), true) = (plugin, problems.is_empty()) else {
            return Err(problems);
        };

        let breaker = current.breaker().clone();
        let breaker_settings = settings.breaker;
        let pipeline = Pipeline::with_breaker(
            settings,
            plugin,
            breaker.clone(),
            self.counters.clone(),
            self.shutdown.clone(),
            false,
        )
        .map_err(|err| vec![format!("{err:#}")])?;
        breaker.reconfigure(breaker_settings);
        Ok((config, pipeline))
    }
}

/// Returns each flattened key whose value differs between `old` and
/// `new`, with both values as JSON text, secrets masked as
/// `sluice config show` masks them. A key that one side lacks, such as a
/// header only the other sets, shows as `(unset)` there.
fn changed_keys(old: &Config, new: &Config) -> Vec<(String, String, String)> {
    let old = provenance::flatten_entries(old);
    let new = provenance::flatten_entries(new);
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();

    let shown = |key: &str, values: &BTreeMap<String, Value>| match values.get(key) {
        Some(value) => {
            let mut value = value.clone();
            mask(key, &mut value);
            value.to_string()
        }
        None => "(unset)".to_owned(),
    };
    // An empty table is a key of its own. A change to it shows in its
    // entries, so it is left out.
    keys.retain(|key| !provenance::MAP_KEYS.contains(&key.as_str()));
    keys.into_iter()
        .filter(|key| old.get(*key) != new.get(*key))
        .map(|key| (key.clone(), shown(key, &old), shown(key, &new)))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn changed_keys_lists_only_changes_and_masks_secrets() {
        let mut old = Config::default();
        old.http
            .headers
            .insert("Authorization".to_owned(), "Bearer one".to_owned());
        old.endpoint = Some("http://user:hunter2@127.0.0.1:9/".to_owned());
        let mut new = old.clone();
        new.http
            .headers
            .insert("Authorization".to_owned(), "Bearer two".to_owned());
        new.endpoint = Some("http://user:hunter3@127.0.0.1:9/".to_owned());
        new.retry.max_retries = 2;
        new.watch.settle_time = Duration::from_millis(500);
        new.plugin
            .config
            .insert("key".to_owned(), "iata".to_owned());

        let changed = changed_keys(&old, &new);

        let keys: Vec<&str> = changed.iter().map(|(key, _, _)| key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "endpoint",
                "http.headers.Authorization",
                "plugin.config.key",
                "retry.max_retries",
                "watch.settle_time"
            ]
        );
        let text = format!("{changed:?}");
        assert!(!text.contains("hunter"), "{text}");
        assert!(!text.contains("Bearer"), "{text}");
        let retries = &changed[3];
        assert_eq!((retries.1.as_str(), retries.2.as_str()), ("5", "2"));
        let key = &changed[2];
        assert_eq!((key.1.as_str(), key.2.as_str()), ("(unset)", "\"iata\""));
    }

    #[test]
    fn inbox_may_not_take_the_dead_letter_directory() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = std::fs::canonicalize(dir.path()).unwrap();
        let mut config = crate::config::Config {
            endpoint: Some("http://127.0.0.1:9".to_owned()),
            ..Config::default()
        };
        config.plugin.path = Some(PathBuf::from("p.wasm"));
        config.dead_letter_dir = Some(inbox.clone());
        let settings = config.validate(|_| None).unwrap();

        let problem = check_directories(&inbox, &settings).unwrap_err();

        assert!(problem.starts_with("dead_letter_dir"), "{problem}");
        config.dead_letter_dir = None;
        config.watch.done_dir = Some(inbox.join("."));
        let settings = config.validate(|_| None).unwrap();
        let problem = check_directories(&inbox, &settings).unwrap_err();
        assert!(problem.starts_with("watch.done_dir"), "{problem}");
        config.watch.done_dir = None;
        let settings = config.validate(|_| None).unwrap();
        check_directories(&inbox, &settings).unwrap();
        assert!(inbox.join("done").is_dir());
    }
}
