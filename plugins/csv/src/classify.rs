//! The `delivered_when` rules: responses that mean a record is delivered
//! although their status is not a 2xx success.
//!
//! A rule `400:validation_not_unique` matches a response whose status is 400
//! and whose body contains the text `validation_not_unique`. Such a rule
//! serves APIs that reject a create whose id already exists: after a lost
//! response, the retry of a create that succeeded gets that error.
//!
//! NOTE: such an error shows only that a record with the same id exists, not
//! that its values equal the row's. A record left by an older version of the
//! file stays stale, and only `sluice verify` reports it.

/// One `STATUS:TEXT` rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveredRule {
    /// The HTTP status that the response must have, from 300 to 599.
    pub status: u16,
    /// Text that the response body must contain. Empty matches any body.
    pub text: String,
}

/// Parses the value of `delivered_when`: comma-separated `STATUS:TEXT`
/// rules, with spaces around each rule trimmed.
///
/// # Errors
///
/// Returns a message for an empty rule, a rule without `:`, or a status
/// that is not a number from 300 to 599.
pub fn parse_rules(value: &str) -> Result<Vec<DeliveredRule>, String> {
    let mut rules = Vec::new();
    for part in value.split(',') {
        let rule = part.trim();
        if rule.is_empty() {
            return Err(format!(
                "empty rule in {value:?}; write rules as STATUS:TEXT separated by single \
                 commas, such as 400:validation_not_unique"
            ));
        }
        let Some((status, text)) = rule.split_once(':') else {
            return Err(format!(
                "invalid rule {rule:?}: missing \":\"; write it as STATUS:TEXT, such as \
                 400:validation_not_unique"
            ));
        };
        rules.push(DeliveredRule {
            status: parse_status(status.trim(), rule)?,
            text: text.to_owned(),
        });
    }
    Ok(rules)
}

/// Parses a rule's status. The host calls `classify` only for responses
/// that are not a 2xx success, so a 1xx or 2xx rule would never match.
fn parse_status(status: &str, rule: &str) -> Result<u16, String> {
    match status.parse::<u16>() {
        Ok(code) if (300..=599).contains(&code) => Ok(code),
        _ => Err(format!(
            "invalid status {status:?} in rule {rule:?}; use an HTTP status from 300 to 599"
        )),
    }
}

/// Returns the reason for a delivered verdict when a rule matches the
/// response, or `None` to leave the decision to the host.
pub fn classify(rules: &[DeliveredRule], status: u16, body: &[u8]) -> Option<String> {
    let rule = rules
        .iter()
        .find(|rule| rule.status == status && contains(body, rule.text.as_bytes()))?;
    Some(format!(
        "response {status} matches delivered_when rule {}:{}",
        rule.status, rule.text
    ))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(status: u16, text: &str) -> DeliveredRule {
        DeliveredRule {
            status,
            text: text.to_owned(),
        }
    }

    #[test]
    fn parses_rule_list() {
        let rules = parse_rules("400:validation_not_unique, 409:already exists ,404:").unwrap();
        assert_eq!(
            rules,
            [
                rule(400, "validation_not_unique"),
                rule(409, "already exists"),
                rule(404, ""),
            ]
        );
    }

    #[test]
    fn text_may_contain_colons() {
        let rules = parse_rules(r#"400:"code":"validation_not_unique""#).unwrap();
        assert_eq!(rules, [rule(400, r#""code":"validation_not_unique""#)]);
    }

    #[test]
    fn rejects_bad_rules() {
        let cases = [
            ("", "empty rule"),
            ("400:x,,409:y", "empty rule"),
            ("400", "missing \":\""),
            ("abc:x", "invalid status \"abc\""),
            ("200:ok", "invalid status \"200\""),
            ("600:x", "invalid status \"600\""),
            ("99999:x", "invalid status \"99999\""),
            (":x", "invalid status \"\""),
        ];
        for (value, expected) in cases {
            let message = parse_rules(value).unwrap_err();
            assert!(message.contains(expected), "{value:?}: {message}");
        }
    }

    #[test]
    fn matches_status_and_text() {
        let rules = [rule(400, "validation_not_unique"), rule(404, "")];
        let duplicate = br#"{"data":{"id":{"code":"validation_not_unique"}},"status":400}"#;

        let reason = classify(&rules, 400, duplicate).unwrap();
        assert_eq!(
            reason,
            "response 400 matches delivered_when rule 400:validation_not_unique"
        );
        assert!(classify(&rules, 404, b"").is_some());
        assert!(classify(&rules, 404, b"not found").is_some());
    }

    #[test]
    fn other_responses_left_to_host() {
        let rules = [rule(400, "validation_not_unique")];
        assert_eq!(
            classify(&rules, 400, br#"{"code":"validation_required"}"#),
            None
        );
        assert_eq!(classify(&rules, 409, b"validation_not_unique"), None);
        assert_eq!(classify(&rules, 400, b""), None);
        assert_eq!(classify(&[], 400, b"validation_not_unique"), None);
    }
}
