//! Fault classification: which failed attempts are worth another attempt.
//!
//! Transient faults are connection errors, timeouts, 5xx, 408, 429 and 409:
//! the same request may succeed later. Idempotency-aware servers return 409
//! while an earlier request with the same key is still in progress. Permanent faults are every other 4xx: the
//! request itself is wrong and sending it again changes nothing. Other
//! non-success statuses (1xx and unfollowed 3xx) are permanent too, because
//! retrying them cannot succeed either.

use std::fmt;

use reqwest::StatusCode;

/// Whether a failed attempt may succeed when repeated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Worth another attempt after a backoff.
    Transient,
    /// Retrying cannot help; the record needs a fix.
    Permanent,
}

/// A failed attempt: what went wrong and how to treat it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The server responded with a status that is not a success.
    Status(StatusCode),
    /// No response arrived within the per-request timeout.
    Timeout,
    /// The connection failed or broke before a full response arrived.
    Connection(String),
    /// The request could not be built or sent for a reason that will not
    /// change on retry, such as an invalid header value from a plugin.
    Request(String),
    /// The plugin's `classify` function judged the response.
    Plugin {
        status: StatusCode,
        transient: bool,
        reason: String,
    },
}

impl Fault {
    /// Classifies a reqwest error from sending a request or reading its body.
    /// The URL is dropped from the message because it may hold credentials.
    pub fn from_reqwest(err: reqwest::Error) -> Fault {
        let err = err.without_url();
        if err.is_timeout() {
            Fault::Timeout
        } else if err.is_builder() {
            Fault::Request(error_chain(&err))
        } else {
            // Connect, request and body errors all mean the exchange broke
            // off midway, such as a refused connection or a reset.
            Fault::Connection(error_chain(&err))
        }
    }

    /// Returns whether the fault is transient or permanent.
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::Status(status) => classify_status(*status),
            Fault::Timeout | Fault::Connection(_) => FaultKind::Transient,
            Fault::Request(_) => FaultKind::Permanent,
            Fault::Plugin {
                transient: true, ..
            } => FaultKind::Transient,
            Fault::Plugin { .. } => FaultKind::Permanent,
        }
    }

    /// Returns whether the API asked for less load: a 429 or a 503, also
    /// as judged by a plugin, or a timeout.
    pub fn is_back_pressure(&self) -> bool {
        let busy = |status: &StatusCode| {
            matches!(
                *status,
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
            )
        };
        match self {
            Fault::Timeout => true,
            Fault::Status(status) => busy(status),
            Fault::Plugin {
                status,
                transient: true,
                ..
            } => busy(status),
            _ => false,
        }
    }

    /// Returns whether another attempt may succeed.
    pub fn is_transient(&self) -> bool {
        self.kind() == FaultKind::Transient
    }

    /// Returns the HTTP status, when the server responded.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Fault::Status(status) | Fault::Plugin { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Status(status) => write!(f, "HTTP {status}"),
            Fault::Timeout => f.write_str("request timed out"),
            Fault::Connection(detail) => write!(f, "connection failed: {detail}"),
            Fault::Request(detail) => write!(f, "invalid request: {detail}"),
            Fault::Plugin { status, reason, .. } => write!(f, "HTTP {status} ({reason})"),
        }
    }
}

/// Classifies a non-success HTTP status.
pub fn classify_status(status: StatusCode) -> FaultKind {
    if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::CONFLICT
    {
        FaultKind::Transient
    } else {
        FaultKind::Permanent
    }
}

/// Joins an error's sources into one line, because reqwest's top-level
/// message ("error sending request") hides the useful part.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_pressure_is_429_503_or_timeout() {
        let plugin = |status: u16, transient: bool| Fault::Plugin {
            status: StatusCode::from_u16(status).unwrap(),
            transient,
            reason: String::new(),
        };
        let cases = [
            (Fault::Status(StatusCode::TOO_MANY_REQUESTS), true),
            (Fault::Status(StatusCode::SERVICE_UNAVAILABLE), true),
            (Fault::Timeout, true),
            (plugin(503, true), true),
            (plugin(503, false), false),
            (Fault::Status(StatusCode::INTERNAL_SERVER_ERROR), false),
            (Fault::Status(StatusCode::BAD_REQUEST), false),
            (Fault::Connection("refused".to_owned()), false),
        ];
        for (fault, expected) in cases {
            assert_eq!(fault.is_back_pressure(), expected, "{fault:?}");
        }
    }

    #[test]
    fn server_errors_are_transient() {
        for code in [500, 502, 503, 504, 599] {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(classify_status(status), FaultKind::Transient, "{code}");
        }
    }

    #[test]
    fn timeout_and_rate_limit_statuses_are_transient() {
        assert_eq!(
            classify_status(StatusCode::REQUEST_TIMEOUT),
            FaultKind::Transient
        );
        assert_eq!(
            classify_status(StatusCode::TOO_MANY_REQUESTS),
            FaultKind::Transient
        );
    }

    #[test]
    fn other_client_errors_are_permanent() {
        for code in [400, 401, 403, 404, 405, 410, 413, 422, 451] {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(classify_status(status), FaultKind::Permanent, "{code}");
        }
    }

    #[test]
    fn unfollowed_redirects_are_permanent() {
        assert_eq!(classify_status(StatusCode::SEE_OTHER), FaultKind::Permanent);
        assert_eq!(
            classify_status(StatusCode::MOVED_PERMANENTLY),
            FaultKind::Permanent
        );
    }

    #[test]
    fn transport_faults_are_transient() {
        assert!(Fault::Timeout.is_transient());
        assert!(Fault::Connection("reset".into()).is_transient());
        assert!(!Fault::Request("bad header".into()).is_transient());
    }

    #[test]
    fn status_fault_reports_its_status() {
        let fault = Fault::Status(StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(fault.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(Fault::Timeout.status(), None);
        assert_eq!(fault.to_string(), "HTTP 503 Service Unavailable");
    }
}
