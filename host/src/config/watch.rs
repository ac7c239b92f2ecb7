//! The `[watch]` table: how `sluice watch` takes files from its inbox
//! directory and what it does with them afterwards.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

/// Default time a file's size and modification time must stay the same
/// before the file counts as complete.
pub const DEFAULT_SETTLE_TIME: Duration = Duration::from_secs(5);
/// Default time between two listings of the inbox.
pub const DEFAULT_RESCAN_INTERVAL: Duration = Duration::from_secs(10);
/// Default quiet time before dead-letter files are reprocessed.
pub const DEFAULT_REPROCESS_AFTER: Duration = Duration::from_secs(60);
/// Default patterns of file names that the inbox skips: dot-files and the
/// usual suffixes of files still being written.
pub const DEFAULT_IGNORE: [&str; 3] = [".*", "*.tmp", "*.part"];
/// Name of the default `done_dir` inside the inbox.
pub const DEFAULT_DONE_DIR_NAME: &str = "done";

const MIN_RESCAN_INTERVAL: Duration = Duration::from_millis(100);

/// The `[watch]` table.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WatchConfig {
    /// Time a file's size and modification time must stay the same before
    /// the file is taken. A file renamed into the inbox is taken at once.
    #[serde(with = "humantime_serde")]
    pub settle_time: Duration,
    /// Time between two listings of the inbox, which find files whose
    /// events were missed.
    #[serde(with = "humantime_serde")]
    pub rescan_interval: Duration,
    /// Glob patterns of file names that are never taken.
    pub ignore: Vec<String>,
    /// The action for a file once every record is handled.
    pub on_complete: OnComplete,
    /// The directory that `on_complete = "move"` puts files in, or
    /// `DIR/done` when unset.
    pub done_dir: Option<PathBuf>,
    /// Whether dead-letter files are sent again once the API is healthy.
    pub reprocess_dead_letters: bool,
    /// Time with the breaker closed and no failed request before
    /// dead-letter files are sent again.
    #[serde(with = "humantime_serde")]
    pub reprocess_after: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            settle_time: DEFAULT_SETTLE_TIME,
            rescan_interval: DEFAULT_RESCAN_INTERVAL,
            ignore: DEFAULT_IGNORE.map(str::to_owned).to_vec(),
            on_complete: OnComplete::Move,
            done_dir: None,
            reprocess_dead_letters: false,
            reprocess_after: DEFAULT_REPROCESS_AFTER,
        }
    }
}

/// The action `sluice watch` takes on a file whose records are all
/// handled.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OnComplete {
    /// Move it to `watch.done_dir`.
    #[default]
    Move,
    /// Delete it.
    Delete,
    /// Leave it in the inbox; the ledger keeps it from being sent again.
    Keep,
}

impl OnComplete {
    /// Returns the name used in the configuration and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            OnComplete::Move => "move",
            OnComplete::Delete => "delete",
            OnComplete::Keep => "keep",
        }
    }
}

/// Validated `[watch]` settings.
#[derive(Clone, Debug)]
pub struct WatchSettings {
    pub settle_time: Duration,
    pub rescan_interval: Duration,
    /// The `ignore` patterns, matched against file names.
    pub ignore: GlobSet,
    pub on_complete: OnComplete,
    /// The configured `done_dir`; the command fills in `DIR/done` when it
    /// is `None`.
    pub done_dir: Option<PathBuf>,
    pub reprocess_dead_letters: bool,
    pub reprocess_after: Duration,
}

impl WatchConfig {
    /// Checks the table's values, reporting each bad one through `problem`
    /// with its key, its value and what is allowed. Returns `None` when
    /// any value is bad.
    pub(super) fn validate(
        &self,
        problem: &mut dyn FnMut(&str, &dyn fmt::Display, &str),
    ) -> Option<WatchSettings> {
        let mut valid = true;
        if self.settle_time.is_zero() {
            problem(
                "watch.settle_time",
                &"0s",
                "a duration above zero, such as \"5s\"",
            );
            valid = false;
        }
        if self.rescan_interval < MIN_RESCAN_INTERVAL {
            let value = humantime::format_duration(self.rescan_interval);
            problem(
                "watch.rescan_interval",
                &value,
                "a duration of at least 100ms",
            );
            valid = false;
        }
        if self.reprocess_after.is_zero() {
            problem(
                "watch.reprocess_after",
                &"0s",
                "a duration above zero, such as \"1m\"",
            );
            valid = false;
        }

        let mut globs = GlobSetBuilder::new();
        for pattern in &self.ignore {
            match Glob::new(pattern) {
                Ok(glob) => {
                    globs.add(glob);
                }
                Err(err) => {
                    let allowed = format!(
                        "a glob pattern of file names, such as \"*.tmp\" ({})",
                        err.kind()
                    );
                    problem("watch.ignore", &format!("{pattern:?}"), &allowed);
                    valid = false;
                }
            }
        }
        let ignore = match globs.build() {
            Ok(set) => set,
            Err(err) => {
                let allowed = format!("glob patterns that compile together ({err})");
                problem("watch.ignore", &format!("{:?}", self.ignore), &allowed);
                return None;
            }
        };

        valid.then(|| WatchSettings {
            settle_time: self.settle_time,
            rescan_interval: self.rescan_interval,
            ignore,
            on_complete: self.on_complete,
            done_dir: self.done_dir.clone(),
            reprocess_dead_letters: self.reprocess_dead_letters,
            reprocess_after: self.reprocess_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(config: &WatchConfig) -> Vec<(String, String)> {
        let mut found = Vec::new();
        let mut problem = |key: &str, value: &dyn fmt::Display, _: &str| {
            found.push((key.to_owned(), value.to_string()));
        };
        let settings = config.validate(&mut problem);
        assert_eq!(settings.is_none(), !found.is_empty());
        found
    }

    #[test]
    fn defaults_are_valid_and_skip_partial_files() {
        let mut problem = |key: &str, _: &dyn fmt::Display, _: &str| panic!("{key}");
        let settings = WatchConfig::default().validate(&mut problem).unwrap();

        for name in [".hidden.csv", "upload.tmp", "a.csv.part"] {
            assert!(settings.ignore.is_match(name), "{name}");
        }
        for name in ["a.csv", "tmp.csv", "part"] {
            assert!(!settings.ignore.is_match(name), "{name}");
        }
        assert_eq!(settings.on_complete, OnComplete::Move);
        assert!(!settings.reprocess_dead_letters);
    }

    #[test]
    fn bad_values_are_each_reported() {
        let config = WatchConfig {
            settle_time: Duration::ZERO,
            rescan_interval: Duration::from_millis(5),
            ignore: vec!["*.tmp".to_owned(), "[unclosed".to_owned()],
            reprocess_after: Duration::ZERO,
            ..WatchConfig::default()
        };

        let found = problems(&config);

        let keys: Vec<&str> = found.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "watch.settle_time",
                "watch.rescan_interval",
                "watch.reprocess_after",
                "watch.ignore"
            ]
        );
        assert_eq!(found[3].1, "\"[unclosed\"");
    }

    #[test]
    fn alternation_gives_several_patterns_in_one() {
        let config = WatchConfig {
            ignore: vec!["{*.bak,~*}".to_owned()],
            ..WatchConfig::default()
        };
        let mut problem = |key: &str, _: &dyn fmt::Display, _: &str| panic!("{key}");
        let settings = config.validate(&mut problem).unwrap();

        assert!(settings.ignore.is_match("a.bak"));
        assert!(settings.ignore.is_match("~lock"));
        assert!(!settings.ignore.is_match(".hidden"));
    }
}
