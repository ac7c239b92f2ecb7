//! Environment variables that fill map-valued keys, and `${NAME}`
//! expansion in header values.
//!
//! Scalar keys take their variables through the command-line parser (each
//! flag names its variable in `--help`). The two maps cannot, because their
//! keys are open-ended:
//!
//! - `SLUICE_PLUGIN_CONFIG_<KEY>=VALUE` sets `plugin.config.<key>`, with the
//!   key lowercased (`SLUICE_PLUGIN_CONFIG_NULL=NA` sets `null`).
//! - `SLUICE_HTTP_HEADER_<NAME>=VALUE` sets `http.headers.<Name>`, with `_`
//!   turned into `-` (`SLUICE_HTTP_HEADER_X_API_KEY` sets `x-api-key`).

use super::Config;

const PLUGIN_CONFIG_PREFIX: &str = "SLUICE_PLUGIN_CONFIG_";
const HEADER_PREFIX: &str = "SLUICE_HTTP_HEADER_";

/// An entry of a map-valued key, named by a `SLUICE_*` variable.
enum MapEntry {
    PluginConfig(String),
    Header(String),
}

fn map_entry(variable: &str) -> Option<MapEntry> {
    if let Some(key) = variable.strip_prefix(PLUGIN_CONFIG_PREFIX) {
        let key = key.to_ascii_lowercase();
        (!key.is_empty()).then_some(MapEntry::PluginConfig(key))
    } else if let Some(header) = variable.strip_prefix(HEADER_PREFIX) {
        let header = header.to_ascii_lowercase().replace('_', "-");
        (!header.is_empty()).then_some(MapEntry::Header(header))
    } else {
        None
    }
}

/// Applies map-valued `SLUICE_*` variables from `vars` to `config`.
pub fn apply_env_maps(config: &mut Config, vars: impl IntoIterator<Item = (String, String)>) {
    for (name, value) in vars {
        match map_entry(&name) {
            Some(MapEntry::PluginConfig(key)) => {
                config.plugin.config.insert(key, value);
            }
            Some(MapEntry::Header(header)) => {
                config.http.headers.insert(header, value);
            }
            None => {}
        }
    }
}

/// Returns the flattened key, such as `plugin.config.null` for
/// `SLUICE_PLUGIN_CONFIG_NULL`, that a map-valued variable sets, or `None`
/// for any other variable.
pub fn env_map_key(variable: &str) -> Option<String> {
    match map_entry(variable)? {
        MapEntry::PluginConfig(key) => Some(format!("plugin.config.{key}")),
        MapEntry::Header(header) => Some(format!("http.headers.{header}")),
    }
}

/// Replaces each `${NAME}` in `value` with the variable's value from
/// `lookup`. `$$` stands for a literal `$`.
///
/// # Errors
///
/// Returns the name of the first variable that `lookup` does not know, or
/// the unterminated reference itself.
pub fn expand_env(value: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                return Err(format!("${{{body}"));
            };
            let name = &body[..end];
            out.push_str(&lookup(name).ok_or_else(|| name.to_owned())?);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<String> {
        (name == "API_TOKEN").then(|| "s3cret".to_owned())
    }

    #[test]
    fn expands_braced_variables() {
        let expanded = expand_env("Bearer ${API_TOKEN}", lookup);
        assert_eq!(expanded.as_deref(), Ok("Bearer s3cret"));
    }

    #[test]
    fn reports_a_missing_variable_by_name() {
        assert_eq!(expand_env("${NOPE}", lookup), Err("NOPE".to_owned()));
    }

    #[test]
    fn keeps_plain_and_escaped_dollars() {
        assert_eq!(expand_env("a$b $$ c$", lookup).as_deref(), Ok("a$b $ c$"));
    }

    #[test]
    fn rejects_an_unterminated_reference() {
        assert!(expand_env("x ${API_TOKEN", lookup).is_err());
    }

    #[test]
    fn maps_prefixed_variables_to_map_keys() {
        let mut config = Config::default();
        let vars = [
            ("SLUICE_PLUGIN_CONFIG_NULL", "NA"),
            ("SLUICE_HTTP_HEADER_X_API_KEY", "${KEY}"),
            ("SLUICE_ENDPOINT", "ignored here"),
            ("OTHER", "x"),
        ];
        let vars = vars.map(|(k, v)| (k.to_owned(), v.to_owned()));

        apply_env_maps(&mut config, vars);

        assert_eq!(
            config.plugin.config.get("null").map(String::as_str),
            Some("NA")
        );
        assert_eq!(
            config.http.headers.get("x-api-key").map(String::as_str),
            Some("${KEY}")
        );
        assert_eq!(config.plugin.config.len(), 1);
        assert_eq!(config.http.headers.len(), 1);
    }

    #[test]
    fn names_the_key_a_variable_sets() {
        assert_eq!(
            env_map_key("SLUICE_PLUGIN_CONFIG_NULL").as_deref(),
            Some("plugin.config.null")
        );
        assert_eq!(
            env_map_key("SLUICE_HTTP_HEADER_X_API_KEY").as_deref(),
            Some("http.headers.x-api-key")
        );
        assert_eq!(env_map_key("SLUICE_HTTP_HEADER_"), None);
        assert_eq!(env_map_key("SLUICE_ENDPOINT"), None);
    }
}
