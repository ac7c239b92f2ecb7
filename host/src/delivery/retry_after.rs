//! Parsing of the `Retry-After` response header (RFC 9110, section 10.2.3).
//!
//! The header holds either a number of seconds or an HTTP-date. The host
//! honors it on 429 and 503 responses, capped by `retry.max_retry_after` so
//! that a misconfigured server cannot stall a run for hours.

use std::time::{Duration, SystemTime};

/// Parses a `Retry-After` value into a delay from `now`.
///
/// Returns `None` for a value that is neither delta-seconds nor an HTTP-date.
/// A date in the past yields a zero delay.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Delta-seconds too large for u64 still mean "a very long time".
        let seconds = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        // Sun, 06 Nov 1994 08:49:37 GMT, the example date of RFC 9110.
        SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777)
    }

    #[test]
    fn delta_seconds() {
        assert_eq!(
            parse_retry_after("120", now()),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now()), Some(Duration::ZERO));
    }

    #[test]
    fn huge_delta_seconds_saturate() {
        let delay = parse_retry_after("99999999999999999999999", now());
        assert_eq!(delay, Some(Duration::from_secs(u64::MAX)));
    }

    #[test]
    fn http_date_in_the_future() {
        let delay = parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now());
        assert_eq!(delay, Some(Duration::from_secs(30)));
    }

    #[test]
    fn obsolete_date_formats() {
        let rfc850 = parse_retry_after("Sunday, 06-Nov-94 08:49:47 GMT", now());
        assert_eq!(rfc850, Some(Duration::from_secs(10)));
        let asctime = parse_retry_after("Sun Nov  6 08:49:57 1994", now());
        assert_eq!(asctime, Some(Duration::from_secs(20)));
    }

    #[test]
    fn http_date_in_the_past_is_zero() {
        let delay = parse_retry_after("Sat, 05 Nov 1994 08:49:37 GMT", now());
        assert_eq!(delay, Some(Duration::ZERO));
    }

    #[test]
    fn garbage_is_ignored() {
        for value in ["", "soon", "-5", "1.5", "12 seconds"] {
            assert_eq!(parse_retry_after(value, now()), None, "{value:?}");
        }
    }
}
