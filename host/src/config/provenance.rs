//! Flattened views of a [`Config`] and where each value came from.
//!
//! A configuration is flattened into dotted keys such as `retry.multiplier`,
//! each with its value as JSON (durations as humantime text, unset options
//! as `null`). [`trace`] flattens the configuration after each layer
//! (defaults, file, environment, flags) and credits each key to the last
//! layer that either changed its value or set it explicitly. So a file or
//! flag that repeats the value below it still counts as the key's source.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use super::Config;

/// Keys whose values are tables of free-form names. Each counts as one key
/// in [`flatten`], and each entry as its own key in [`flatten_entries`].
pub const MAP_KEYS: [&str; 2] = ["plugin.config", "http.headers"];

/// The layer a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The built-in default.
    Default,
    /// The `--config` file.
    File,
    /// An environment variable, by name.
    Env(String),
    /// A command-line flag.
    Flag,
}

impl Source {
    /// Returns the layer's name: `default`, `file`, `env` or `flag`.
    pub fn name(&self) -> &'static str {
        match self {
            Source::Default => "default",
            Source::File => "file",
            Source::Env(_) => "env",
            Source::Flag => "flag",
        }
    }

    /// Returns the environment variable for [`Source::Env`].
    pub fn variable(&self) -> Option<&str> {
        match self {
            Source::Env(variable) => Some(variable),
            _ => None,
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Env(variable) => write!(f, "env {variable}"),
            other => f.write_str(other.name()),
        }
    }
}

/// One layer of configuration, laid over the layers before it.
#[derive(Clone, Debug)]
pub struct Layer {
    /// The whole configuration once this layer is applied.
    pub config: Config,
    /// The flattened keys this layer sets, as [`flatten_entries`] names
    /// them, even to the value they already had.
    pub set: BTreeMap<String, Source>,
    /// The source reported for a key whose value this layer changed
    /// without listing it in `set`.
    pub source: Source,
}

/// A flattened key's effective value and the layer it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Traced {
    pub value: Value,
    pub source: Source,
}

/// Flattens `config` into dotted keys, with each table of [`MAP_KEYS`] as
/// one key whose value is the whole table.
pub fn flatten(config: &Config) -> BTreeMap<String, Value> {
    let mut keys = BTreeMap::new();
    walk("", &to_value(config), false, &mut keys);
    keys
}

/// Flattens `config` into dotted keys, with each entry of a table of
/// [`MAP_KEYS`] as its own key (`http.headers.Authorization`). An empty
/// table stays one key whose value is `{}`.
pub fn flatten_entries(config: &Config) -> BTreeMap<String, Value> {
    let mut keys = BTreeMap::new();
    walk("", &to_value(config), true, &mut keys);
    keys
}

/// Flattens a TOML table as [`flatten_entries`] does, for finding the keys
/// a file sets. Values are those of the file, not of the configuration.
pub fn flatten_toml(table: &toml::Table) -> BTreeMap<String, Value> {
    let value = serde_json::to_value(table).unwrap_or(Value::Null);
    let mut keys = BTreeMap::new();
    walk("", &value, true, &mut keys);
    keys
}

fn to_value(config: &Config) -> Value {
    serde_json::to_value(config).expect("a configuration serializes to JSON")
}

fn walk(prefix: &str, value: &Value, expand_maps: bool, keys: &mut BTreeMap<String, Value>) {
    let Value::Object(table) = value else {
        keys.insert(prefix.to_owned(), value.clone());
        return;
    };
    let is_map = MAP_KEYS.contains(&prefix);
    if is_map && (!expand_maps || table.is_empty()) {
        keys.insert(prefix.to_owned(), value.clone());
        return;
    }
    for (name, child) in table {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        if is_map {
            keys.insert(key, child.clone());
        } else {
            walk(&key, child, expand_maps, keys);
        }
    }
}

/// Traces every key of the last layer's configuration back to the last
/// layer that set it, starting from `defaults`.
///
/// A layer sets a key when it lists it in [`Layer::set`] or changes its
/// value; keys no layer set come from [`Source::Default`].
pub fn trace(defaults: &Config, layers: &[Layer]) -> BTreeMap<String, Traced> {
    let mut previous = flatten_entries(defaults);
    let mut traced: BTreeMap<String, Traced> = previous
        .iter()
        .map(|(key, value)| {
            let entry = Traced {
                value: value.clone(),
                source: Source::Default,
            };
            (key.clone(), entry)
        })
        .collect();

    for layer in layers {
        let current = flatten_entries(&layer.config);
        traced.retain(|key, _| current.contains_key(key));
        for (key, value) in &current {
            let source = match layer.set.get(key) {
                Some(source) => Some(source.clone()),
                None if previous.get(key) != Some(value) => Some(layer.source.clone()),
                None => None,
            };
            let source = source
                .or_else(|| traced.get(key).map(|entry| entry.source.clone()))
                .unwrap_or(Source::Default);
            let entry = Traced {
                value: value.clone(),
                source,
            };
            traced.insert(key.clone(), entry);
        }
        previous = current;
    }
    traced
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    fn layer(config: &Config, set: &[(&str, Source)], source: Source) -> Layer {
        Layer {
            config: config.clone(),
            set: set
                .iter()
                .map(|(key, source)| ((*key).to_owned(), source.clone()))
                .collect(),
            source,
        }
    }

    fn source_of(traced: &BTreeMap<String, Traced>, key: &str) -> Source {
        traced[key].source.clone()
    }

    #[test]
    fn flatten_names_every_key_and_maps_as_one() {
        let keys = flatten(&Config::default());

        assert_eq!(keys["http.concurrency"], json!(16));
        assert_eq!(keys["http.timeout"], json!("30s"));
        assert_eq!(keys["retry.multiplier"], json!(2.0));
        assert_eq!(keys["endpoint"], Value::Null);
        assert_eq!(keys["plugin.config"], json!({}));
        assert_eq!(keys["http.headers"], json!({}));
        assert!(!keys.contains_key("plugin"));
        assert!(!keys.contains_key("http"));
    }

    #[test]
    fn flatten_entries_splits_map_entries() {
        let mut config = Config::default();
        config
            .http
            .headers
            .insert("X-Api.Key".to_owned(), "v".to_owned());

        let keys = flatten_entries(&config);

        assert_eq!(keys["http.headers.X-Api.Key"], json!("v"));
        assert!(!keys.contains_key("http.headers"));
        assert_eq!(keys["plugin.config"], json!({}));
    }

    #[test]
    fn flatten_toml_lists_only_the_keys_written() {
        let table: toml::Table = toml::from_str(
            "endpoint = \"x\"\n[retry]\nmax_retries = 1\n[plugin.config]\nkey = 3\n",
        )
        .unwrap();

        let keys: Vec<String> = flatten_toml(&table).into_keys().collect();

        assert_eq!(keys, ["endpoint", "plugin.config.key", "retry.max_retries"]);
    }

    #[test]
    fn trace_defaults_keys_no_layer_sets() {
        let defaults = Config::default();
        let file = layer(&defaults, &[], Source::File);

        let traced = trace(&defaults, &[file]);

        assert_eq!(source_of(&traced, "retry.max_retries"), Source::Default);
        assert_eq!(traced["retry.max_retries"].value, json!(5));
    }

    #[test]
    fn trace_credits_the_layer_that_changes_a_key() {
        let defaults = Config::default();
        let mut config = defaults.clone();
        config.retry.max_retries = 1;
        let file = layer(&config, &[], Source::File);
        config.http.concurrency = 2.into();
        let env = layer(&config, &[], Source::Env("SLUICE_X".to_owned()));
        config.breaker.open_duration = Duration::from_secs(1);
        let flags = layer(&config, &[], Source::Flag);

        let traced = trace(&defaults, &[file, env, flags]);

        assert_eq!(source_of(&traced, "retry.max_retries"), Source::File);
        assert_eq!(
            source_of(&traced, "http.concurrency"),
            Source::Env("SLUICE_X".to_owned())
        );
        assert_eq!(source_of(&traced, "breaker.open_duration"), Source::Flag);
        assert_eq!(traced["breaker.open_duration"].value, json!("1s"));
        assert_eq!(source_of(&traced, "input.chunk_size"), Source::Default);
    }

    #[test]
    fn trace_counts_a_key_set_to_its_value() {
        let defaults = Config::default();
        let file = layer(
            &defaults,
            &[("http.concurrency", Source::File)],
            Source::File,
        );
        let variable = Source::Env("SLUICE_RETRY_MAX_RETRIES".to_owned());
        let env = layer(
            &defaults,
            &[("retry.max_retries", variable.clone())],
            variable,
        );

        let traced = trace(&defaults, &[file, env]);

        assert_eq!(source_of(&traced, "http.concurrency"), Source::File);
        assert_eq!(
            source_of(&traced, "retry.max_retries"),
            Source::Env("SLUICE_RETRY_MAX_RETRIES".to_owned())
        );
    }

    #[test]
    fn trace_prefers_the_last_layer() {
        let defaults = Config::default();
        let mut config = defaults.clone();
        config.http.concurrency = 2.into();
        let file = layer(&config, &[("http.concurrency", Source::File)], Source::File);
        config.http.concurrency = 3.into();
        let variable = Source::Env("SLUICE_HTTP_CONCURRENCY".to_owned());
        let env = layer(&config, &[("http.concurrency", variable.clone())], variable);
        let flags = layer(&config, &[("http.concurrency", Source::Flag)], Source::Flag);

        let traced = trace(&defaults, &[file, env, flags]);

        assert_eq!(source_of(&traced, "http.concurrency"), Source::Flag);
        assert_eq!(traced["http.concurrency"].value, json!(3));
    }

    #[test]
    fn trace_keeps_the_source_of_untouched_keys() {
        let defaults = Config::default();
        let mut config = defaults.clone();
        config.http.concurrency = 2.into();
        let file = layer(&config, &[("http.concurrency", Source::File)], Source::File);
        let env = layer(&config, &[], Source::Env("SLUICE_X".to_owned()));
        let flags = layer(&config, &[], Source::Flag);

        let traced = trace(&defaults, &[file, env, flags]);

        assert_eq!(source_of(&traced, "http.concurrency"), Source::File);
    }

    #[test]
    fn trace_follows_map_entries_one_by_one() {
        let defaults = Config::default();
        let mut config = defaults.clone();
        let plugin = &mut config.plugin.config;
        plugin.insert("key".to_owned(), "iata".to_owned());
        let file = layer(
            &config,
            &[("plugin.config.key", Source::File)],
            Source::File,
        );
        config
            .plugin
            .config
            .insert("path".to_owned(), "/a/{iata}".to_owned());
        let flags = layer(
            &config,
            &[("plugin.config.path", Source::Flag)],
            Source::Flag,
        );

        let traced = trace(&defaults, &[file, flags]);

        assert_eq!(source_of(&traced, "plugin.config.key"), Source::File);
        assert_eq!(source_of(&traced, "plugin.config.path"), Source::Flag);
        assert!(!traced.contains_key("plugin.config"));
        assert_eq!(source_of(&traced, "http.headers"), Source::Default);
    }
}
