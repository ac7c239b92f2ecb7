//! `sluice config check` and `sluice config show`: the configuration that
//! `run` would use, checked or printed with the source of each value.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory as _, FromArgMatches as _};
use serde_json::Value;

use super::args::{
    option_command, option_keys, Cli, CommonArgs, ConfigCheckArgs, ConfigCommand, ConfigShowArgs,
    ShowFormat, WatchOptions,
};
use super::{init_logging, load_config, load_plugin, Failure, Logging, EXIT_USAGE};
use crate::config::provenance::{self, Layer, Source, Traced, MAP_KEYS};
use crate::config::{
    apply_env_maps, env_map_key, mask_url, Config, DEFAULT_DEAD_LETTER_DIR, DEFAULT_STATE_DIR,
};
use crate::plugin::PluginLimits;

/// The text that replaces secrets in `config show`.
const MASK: &str = "***";

/// Runs `sluice config check` or `sluice config show`. `matches` are the
/// parsed arguments of the whole command line.
pub(super) fn run(
    logging: &Logging,
    command: &ConfigCommand,
    matches: &ArgMatches,
) -> Result<u8, Failure> {
    match command {
        ConfigCommand::Check(args) => check(logging, args, leaf_matches(matches, "check")),
        ConfigCommand::Show(args) => show(args, leaf_matches(matches, "show")),
    }
}

/// Returns the arguments of `config NAME` from a parsed command line.
fn leaf_matches<'a>(matches: &'a ArgMatches, name: &str) -> &'a ArgMatches {
    matches
        .subcommand_matches("config")
        .and_then(|config| config.subcommand_matches(name))
        .unwrap_or_else(|| panic!("the parsed command line has no `config {name}`"))
}

/// The outcome of `config check`'s plugin step.
enum PluginCheck {
    /// The plugin, by name and version, accepted `plugin.config`.
    Accepted(String),
    /// The plugin, by name and version, rejected `plugin.config`.
    Rejected(String),
    /// The plugin failed to load.
    NotLoaded,
    /// The plugin was not loaded, for the reason given.
    Skipped(&'static str),
}

fn check(logging: &Logging, args: &ConfigCheckArgs, matches: &ArgMatches) -> Result<u8, Failure> {
    let config = load_config(&args.common, Some(&args.watch))?;
    init_logging(logging, None)?;
    let sources = trace_layers(&args.common, &args.watch, matches)?;
    let mut problems = Vec::new();

    let settings = match config.validate(|name| std::env::var(name).ok()) {
        Ok(settings) => Some(settings),
        Err(errors) => {
            for problem in errors.0 {
                let line = match sources.get(&problem.key).map(|traced| &traced.source) {
                    Some(source) if *source != Source::Default => {
                        format!("{problem} (set {})", describe(source, &args.common))
                    }
                    _ => problem.to_string(),
                };
                problems.push(line);
            }
            None
        }
    };

    let plugin = match &config.plugin.path {
        _ if args.no_plugin_check => PluginCheck::Skipped("--no-plugin-check"),
        None => PluginCheck::Skipped("plugin.path is not set"),
        Some(path) => {
            // Invalid limits are reported above, and the plugin is then
            // checked under the default limits.
            let limits = settings
                .as_ref()
                .map_or_else(PluginLimits::default, |settings| settings.plugin_limits);
            check_plugin(path, limits, &config, &mut problems)
        }
    };

    let file = match &args.common.config {
        Some(path) => format!("file {}", path.display()),
        None => "no config file".to_owned(),
    };
    let plugin = match plugin {
        PluginCheck::Accepted(name) => format!("plugin {name} accepted plugin.config"),
        PluginCheck::Rejected(name) => format!("plugin {name} rejected plugin.config"),
        PluginCheck::NotLoaded => "plugin failed to load".to_owned(),
        PluginCheck::Skipped(reason) => format!("plugin not checked: {reason}"),
    };
    if problems.is_empty() {
        println!("configuration is valid ({file}; {plugin})");
        return Ok(0);
    }
    let mut err = std::io::stderr().lock();
    for problem in &problems {
        let _ = writeln!(err, "error: {problem}");
    }
    let count = match problems.len() {
        1 => "1 problem".to_owned(),
        n => format!("{n} problems"),
    };
    let _ = writeln!(err, "configuration is invalid: {count} ({file}; {plugin})");
    Ok(EXIT_USAGE)
}

/// Loads the plugin and hands it `plugin.config`, adding what fails to
/// `problems`.
fn check_plugin(
    path: &Path,
    limits: PluginLimits,
    config: &Config,
    problems: &mut Vec<String>,
) -> PluginCheck {
    let mut plugin = match load_plugin(path, limits) {
        Ok(plugin) => plugin,
        Err(failure) => {
            problems.push(format!("{:#}", failure.error));
            return PluginCheck::NotLoaded;
        }
    };
    let info = plugin.info();
    let name = format!("{} {}", info.name, info.version);
    let settings = config.plugin.config.clone().into_iter().collect();
    match plugin.configure(settings) {
        Ok(()) => PluginCheck::Accepted(name),
        Err(err) => {
            problems.push(format!("{:#}", anyhow::Error::from(err)));
            PluginCheck::Rejected(name)
        }
    }
}

/// Describes where a value was set, for `config check`'s problems.
fn describe(source: &Source, common: &CommonArgs) -> String {
    match (source, &common.config) {
        (Source::File, Some(path)) => format!("in {}", path.display()),
        (Source::Env(variable), _) => format!("by {variable}"),
        (Source::Flag, _) => "by a flag".to_owned(),
        (other, _) => format!("by {other}"),
    }
}

fn show(args: &ConfigShowArgs, matches: &ArgMatches) -> Result<u8, Failure> {
    let mut traced = trace_layers(&args.common, &args.watch, matches)?;
    for (key, entry) in &mut traced {
        mask(key, &mut entry.value);
    }
    let text = match args.format {
        ShowFormat::Toml => render_toml(&traced, args.common.config.as_deref()),
        ShowFormat::Json => render_json(&traced),
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    Ok(0)
}

/// Builds the configuration one layer at a time, as `run` does in one
/// go, and traces each key to the layer it came from.
///
/// `matches` shows which options came from flags. The environment's layer
/// is found by parsing a command line without flags, which clap fills from
/// the `SLUICE_*` variables alone.
fn trace_layers(
    common: &CommonArgs,
    watch: &WatchOptions,
    matches: &ArgMatches,
) -> Result<BTreeMap<String, Traced>, Failure> {
    let defaults = with_default_dirs(Config::default());

    let mut config = defaults.clone();
    let mut set = BTreeMap::new();
    if let Some(path) = &common.config {
        config = with_default_dirs(Config::from_file(path).map_err(Failure::usage)?);
        set = file_keys(path)?
            .into_iter()
            .map(|key| (key, Source::File))
            .collect();
    }
    let file = Layer {
        config: config.clone(),
        set,
        source: Source::File,
    };

    let env_matches = Cli::command()
        .try_get_matches_from(["sluice", "config", "show"])
        .map_err(Failure::usage)?;
    let env_matches = leaf_matches(&env_matches, "show");
    let env_args = CommonArgs::from_arg_matches(env_matches).map_err(Failure::usage)?;
    let env_watch = WatchOptions::from_arg_matches(env_matches).map_err(Failure::usage)?;
    let variables: Vec<(String, String)> = std::env::vars().collect();
    apply_env_maps(&mut config, variables.clone());
    env_args.apply(&mut config);
    env_watch.apply(&mut config);
    let mut set = BTreeMap::new();
    for (key, variable) in option_variables() {
        if is_set(env_matches, &key, ValueSource::EnvVariable) {
            set.insert(key, Source::Env(variable));
        }
    }
    for (variable, _) in variables {
        if let Some(key) = env_map_key(&variable) {
            set.insert(key, Source::Env(variable));
        }
    }
    let env = Layer {
        config: config.clone(),
        set,
        source: Source::Env("SLUICE_*".to_owned()),
    };

    common.apply(&mut config);
    watch.apply(&mut config);
    let mut set = BTreeMap::new();
    for (_, key) in option_keys() {
        if !MAP_KEYS.contains(&key) && is_set(matches, key, ValueSource::CommandLine) {
            set.insert(key.to_owned(), Source::Flag);
        }
    }
    for (name, _) in &common.plugin_config {
        set.insert(format!("plugin.config.{name}"), Source::Flag);
    }
    for (name, _) in &common.headers {
        set.insert(format!("http.headers.{name}"), Source::Flag);
    }
    let flags = Layer {
        config,
        set,
        source: Source::Flag,
    };

    Ok(provenance::trace(&defaults, &[file, env, flags]))
}

/// Returns whether the option that sets `key` took its value from `source`.
fn is_set(matches: &ArgMatches, key: &str, source: ValueSource) -> bool {
    option_keys()
        .filter(|(_, option_key)| *option_key == key)
        .any(|(id, _)| matches.value_source(id) == Some(source))
}

/// Returns each key that an option with a variable sets, with the
/// variable's name.
fn option_variables() -> Vec<(String, String)> {
    let command = option_command();
    let mut variables = Vec::new();
    for (id, key) in option_keys() {
        let arg = command.get_arguments().find(|arg| arg.get_id() == id);
        if let Some(variable) = arg.and_then(|arg| arg.get_env()) {
            variables.push((key.to_owned(), variable.to_string_lossy().into_owned()));
        }
    }
    variables
}

/// Returns the flattened keys that the file at `path`, already read
/// successfully by [`Config::from_file`], writes.
fn file_keys(path: &Path) -> Result<Vec<String>, Failure> {
    let invalid = |err: String| {
        let message = format!("invalid config file {}: {err}", path.display());
        Failure::usage(anyhow::anyhow!(message))
    };
    let text = std::fs::read_to_string(path).map_err(|err| invalid(err.to_string()))?;
    let table: toml::Table = toml::from_str(&text).map_err(|err| invalid(err.to_string()))?;
    Ok(provenance::flatten_toml(&table).into_keys().collect())
}

/// Fills in the directories that [`Config::validate`] defaults, so that
/// they show their effective values.
fn with_default_dirs(mut config: Config) -> Config {
    config
        .dead_letter_dir
        .get_or_insert_with(|| PathBuf::from(DEFAULT_DEAD_LETTER_DIR));
    config
        .state_dir
        .get_or_insert_with(|| PathBuf::from(DEFAULT_STATE_DIR));
    config
}

/// Hides header values and the endpoint URL's password.
pub(super) fn mask(key: &str, value: &mut Value) {
    if key.starts_with("http.headers.") {
        *value = Value::String(MASK.to_owned());
    } else if key == "endpoint" {
        if let Value::String(url) = value {
            *url = mask_url(url);
        }
    }
}

/// Renders the traced keys as a TOML document, each value followed by its
/// source as a comment. Unset keys are commented out.
fn render_toml(traced: &BTreeMap<String, Traced>, file: Option<&Path>) -> String {
    let mut tables: BTreeMap<&str, Vec<(String, String)>> = BTreeMap::new();
    for (key, entry) in traced {
        let (table, name) = split_key(key);
        let line = match (name, &entry.value) {
            (None, _) => "# (empty)".to_owned(),
            (Some(name), Value::Null) => format!("# {} (unset)", toml_key(name)),
            (Some(name), value) => format!("{} = {}", toml_key(name), toml_value(value)),
        };
        tables
            .entry(table)
            .or_default()
            .push((line, entry.source.to_string()));
    }

    let mut out = String::new();
    let file = match file {
        Some(path) => format!("file: {}", path.display()),
        None => "no config file".to_owned(),
    };
    out.push_str(&format!(
        "# sluice's effective configuration, from the defaults, the config file,\n\
         # SLUICE_* variables and flags, each over the one before ({file}).\n\
         # The comment after each value names its source: default, file,\n\
         # env VARIABLE or flag. Header values and URL passwords show as {MASK}.\n"
    ));
    // Top-level keys sort first, under the empty table name.
    for (table, lines) in &tables {
        out.push('\n');
        if !table.is_empty() {
            out.push_str(&format!("[{table}]\n"));
        }
        let width = lines.iter().map(|(line, _)| line.len()).max().unwrap_or(0);
        for (line, source) in lines {
            out.push_str(&format!("{line:width$}  # {source}\n"));
        }
    }
    out
}

/// Splits a flattened key into its TOML table and its name in that table.
/// The name is `None` for an empty map, which is a table of its own.
fn split_key(key: &str) -> (&str, Option<&str>) {
    for map in MAP_KEYS {
        if key == map {
            return (map, None);
        }
        if let Some(entry) = key
            .strip_prefix(map)
            .and_then(|rest| rest.strip_prefix('.'))
        {
            return (map, Some(entry));
        }
    }
    match key.rsplit_once('.') {
        Some((table, name)) => (table, Some(name)),
        None => ("", Some(key)),
    }
}

fn toml_key(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        name.to_owned()
    } else {
        toml::Value::String(name.to_owned()).to_string()
    }
}

fn toml_value(value: &Value) -> String {
    match toml::Value::try_from(value) {
        Ok(value) => value.to_string(),
        Err(_) => value.to_string(),
    }
}

/// Renders the traced keys as one JSON object of
/// `{"value", "source"}` by key, with `"variable"` for `env`.
fn render_json(traced: &BTreeMap<String, Traced>) -> String {
    let mut object = serde_json::Map::new();
    for (key, entry) in traced {
        let mut fields = serde_json::Map::new();
        fields.insert("value".to_owned(), entry.value.clone());
        fields.insert("source".to_owned(), entry.source.name().into());
        if let Some(variable) = entry.source.variable() {
            fields.insert("variable".to_owned(), variable.into());
        }
        object.insert(key.clone(), Value::Object(fields));
    }
    let mut text =
        serde_json::to_string_pretty(&Value::Object(object)).expect("JSON values serialize");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn traced(entries: &[(&str, Value, Source)]) -> BTreeMap<String, Traced> {
        entries
            .iter()
            .map(|(key, value, source)| {
                let entry = Traced {
                    value: value.clone(),
                    source: source.clone(),
                };
                ((*key).to_owned(), entry)
            })
            .collect()
    }

    #[test]
    fn split_key_keeps_dots_inside_map_entries() {
        assert_eq!(split_key("http.headers.X.Y"), ("http.headers", Some("X.Y")));
        assert_eq!(split_key("plugin.config"), ("plugin.config", None));
        assert_eq!(split_key("plugin.path"), ("plugin", Some("path")));
        assert_eq!(split_key("endpoint"), ("", Some("endpoint")));
    }

    #[test]
    fn mask_hides_headers_and_url_passwords() {
        let mut header = json!("Bearer s3cret");
        mask("http.headers.Authorization", &mut header);
        assert_eq!(header, json!(MASK));

        let mut endpoint = json!("http://user:hunter2@127.0.0.1:9/");
        mask("endpoint", &mut endpoint);
        assert_eq!(endpoint, json!("http://user:***@127.0.0.1:9/"));

        let mut other = json!("hunter2");
        mask("plugin.config.path", &mut other);
        assert_eq!(other, json!("hunter2"));
    }

    #[test]
    fn toml_output_parses_back_to_the_values() {
        let entries = traced(&[
            ("endpoint", Value::Null, Source::Default),
            ("progress", json!("auto"), Source::File),
            ("retry.multiplier", json!(2.0), Source::Default),
            ("http.concurrency", json!(8), Source::Flag),
            ("http.headers", json!({}), Source::Default),
            (
                "plugin.config.a b",
                json!("x"),
                Source::Env("SLUICE_PLUGIN_CONFIG_A".to_owned()),
            ),
        ]);

        let text = render_toml(&entries, Some(Path::new("s.toml")));
        let parsed: toml::Table = toml::from_str(&text).unwrap();

        assert_eq!(parsed["progress"].as_str(), Some("auto"));
        assert_eq!(parsed["retry"]["multiplier"].as_float(), Some(2.0));
        assert_eq!(parsed["http"]["concurrency"].as_integer(), Some(8));
        assert_eq!(parsed["plugin"]["config"]["a b"].as_str(), Some("x"));
        assert!(parsed["http"]["headers"].as_table().unwrap().is_empty());
        assert!(!parsed.contains_key("endpoint"));
        assert!(text.contains("# endpoint (unset)  # default"), "{text}");
        assert!(text.contains("# env SLUICE_PLUGIN_CONFIG_A"), "{text}");
        assert!(text.contains("concurrency = 8  # flag"), "{text}");
    }

    #[test]
    fn json_output_names_value_source_and_variable() {
        let entries = traced(&[
            ("http.concurrency", json!(8), Source::Flag),
            (
                "retry.max_retries",
                json!(1),
                Source::Env("SLUICE_RETRY_MAX_RETRIES".to_owned()),
            ),
        ]);

        let parsed: Value = serde_json::from_str(&render_json(&entries)).unwrap();

        assert_eq!(
            parsed["http.concurrency"],
            json!({"value": 8, "source": "flag"})
        );
        assert_eq!(
            parsed["retry.max_retries"],
            json!({"value": 1, "source": "env", "variable": "SLUICE_RETRY_MAX_RETRIES"})
        );
    }
}
