//! Request handling: fault injection first, then the resource API.

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use serde::de::IgnoredAny;
use tokio::sync::{watch, Notify};
use tracing::{debug, error};

use crate::faults::{Fault, Schedule};
use crate::idempotency::{self, IdempotencyKey, InProgress, IDEMPOTENT_REPLAYED};
use crate::server;
use crate::stats::Counters;
use crate::store::{self, Operation, Outcome, Store};

/// Path of the statistics endpoint, which faults never apply to.
pub const STATS_PATH: &str = "/_stats";

/// Maximum request body size; larger bodies get 413.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Methods of the resource API, as sent in `Allow`.
const RESOURCE_METHODS: &str = "GET, PUT, POST, DELETE";

pub(crate) type Body = Full<Bytes>;

/// State shared by all connections of one server.
pub(crate) struct State {
    pub(crate) schedule: Schedule,
    pub(crate) store: Store,
    pub(crate) counters: Arc<Counters>,
    /// Idempotency keys of the POSTs being served.
    pub(crate) in_progress: InProgress,
    /// Becomes true when the server shuts down; cuts stalls short.
    pub(crate) stop: watch::Receiver<bool>,
}

/// Handles one request. `reset` signals the connection task to reset the TCP
/// connection; the returned future then never completes.
pub(crate) async fn handle(
    state: Arc<State>,
    reset: Arc<Notify>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    if request.uri().path() == STATS_PATH {
        return Ok(serve_stats(&state.counters, request.method()));
    }
    let (_in_flight, crowded) = state.schedule.enter();
    let (arrival, fault) = state.schedule.arrive();
    let fault = if crowded { Some(Fault::Crowded) } else { fault };
    let served = matches!(fault, None | Some(Fault::LostResponse));

    // Claim the idempotency key before reading the body, so that a second
    // request with the same key gets 409 while the first is still uploading.
    // The request is counted after the claim, so a caller that sees the
    // count can rely on the claim.
    let key = if served && request.method() == Method::POST {
        idempotency::key_from_headers(request.headers())
    } else {
        Ok(None)
    };
    let claim = match &key {
        Ok(Some(key)) => Some(state.in_progress.claim(key)),
        _ => None,
    };
    state.counters.count_request();

    let (parts, body) = request.into_parts();
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(response) => return Ok(response),
    };
    let path = parts.uri.path();

    if let Some(fault) = fault.filter(|&fault| fault != Fault::LostResponse) {
        debug!(arrival, fault = fault.name(), method = %parts.method, path, "injecting fault");
        state.counters.count_fault(fault);
        return Ok(inject(&state, &reset, fault).await);
    }

    let response = match (key, claim) {
        (Err(message), _) => error_response(StatusCode::BAD_REQUEST, message),
        (Ok(Some(_)), Some(None)) => error_response(
            StatusCode::CONFLICT,
            "request with this idempotency key is in progress".into(),
        ),
        (Ok(key), claim) => {
            let response = serve_resource(&state.store, &parts.method, path, body, key).await;
            drop(claim);
            response
        }
    };

    if let Some(fault @ Fault::LostResponse) = fault {
        debug!(arrival, fault = fault.name(), method = %parts.method, path, "injecting fault");
        state.counters.count_fault(fault);
        return Ok(reset_connection(&reset).await);
    }
    Ok(response)
}

/// Reads a whole request body, or returns the error response for a body
/// that is too large or cannot be read.
///
/// Faulted requests are read too, so that the connection stays usable for
/// the next request on it.
pub(crate) async fn read_body(body: Incoming) -> Result<Bytes, Response<Body>> {
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<LengthLimitError>() => {
            let message = format!("request body exceeds {MAX_BODY_BYTES} bytes; send less data");
            Err(error_response(StatusCode::PAYLOAD_TOO_LARGE, message))
        }
        Err(err) => {
            debug!(error = %err, "failed to read request body");
            let message = format!("failed to read request body: {err}");
            Err(error_response(StatusCode::BAD_REQUEST, message))
        }
    }
}

async fn inject(state: &State, reset: &Notify, fault: Fault) -> Response<Body> {
    let plan = state.schedule.plan();
    match fault {
        Fault::Stall => {
            stall(plan.stall_for, state.stop.clone()).await;
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "injected fault: request stalled".into(),
            )
        }
        Fault::Reset | Fault::LostResponse => reset_connection(reset).await,
        Fault::InternalError
        | Fault::Unavailable
        | Fault::TooManyRequests
        | Fault::Outage
        | Fault::Crowded => status_fault_response(fault, plan.retry_after_secs),
    }
}

/// Returns the response of a fault that is only a status: 500, 503, 429 with
/// `Retry-After: retry_after_secs`, or the outage's 503.
///
/// # Panics
///
/// Panics for a fault that is not a status: stall, reset or lost response.
pub(crate) fn status_fault_response(fault: Fault, retry_after_secs: u64) -> Response<Body> {
    match fault {
        Fault::InternalError => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "injected fault: internal server error".into(),
        ),
        Fault::Unavailable => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "injected fault: service unavailable".into(),
        ),
        Fault::TooManyRequests => {
            let message =
                format!("injected fault: too many requests; retry after {retry_after_secs} s");
            let mut response = error_response(StatusCode::TOO_MANY_REQUESTS, message);
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
            response
        }
        Fault::Outage => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "injected fault: outage in progress".into(),
        ),
        Fault::Crowded => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "injected fault: too many requests in flight".into(),
        ),
        Fault::Stall | Fault::Reset | Fault::LostResponse => {
            panic!("fault {} has no status response", fault.name())
        }
    }
}

/// Waits for `duration`, or until the server shuts down.
pub(crate) async fn stall(duration: std::time::Duration, mut stop: watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(duration) => {}
        () = server::stopped(&mut stop) => {}
    }
}

/// Signals the connection task to reset the connection and never completes,
/// so no response is sent.
pub(crate) async fn reset_connection<T>(reset: &Notify) -> T {
    reset.notify_one();
    std::future::pending().await
}

async fn serve_resource(
    store: &Store,
    method: &Method,
    path: &str,
    body: Bytes,
    idempotency_key: Option<String>,
) -> Response<Body> {
    let operation = match *method {
        Method::PUT => match json_text(&body) {
            Ok(body) => Operation::Put {
                path: path.to_owned(),
                body,
            },
            Err(message) => return error_response(StatusCode::BAD_REQUEST, message),
        },
        Method::POST => match json_text(&body) {
            Ok(text) => Operation::Post {
                collection: path.to_owned(),
                body: text,
                idempotency: idempotency_key.map(|key| IdempotencyKey::new(key, path, &body)),
            },
            Err(message) => return error_response(StatusCode::BAD_REQUEST, message),
        },
        Method::GET => Operation::Get {
            path: path.to_owned(),
        },
        Method::DELETE => Operation::Delete {
            path: path.to_owned(),
        },
        _ => return method_not_allowed(method, RESOURCE_METHODS),
    };

    let outcome = match store.run(operation).await {
        Ok(outcome) => outcome,
        Err(err) => {
            error!(error = format!("{err:#}"), %method, path, "failed to serve request");
            let message = format!("failed to serve {method} {path}: {err:#}");
            return error_response(StatusCode::INTERNAL_SERVER_ERROR, message);
        }
    };

    match outcome {
        Outcome::Put { created: true } => empty_response(StatusCode::CREATED),
        Outcome::Put { created: false } => empty_response(StatusCode::OK),
        Outcome::Posted { id } => json_response(StatusCode::CREATED, store::posted_body(id)),
        Outcome::Replayed { status, body } => replayed_response(status, body),
        Outcome::KeyReused => error_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency key reused with a different payload".into(),
        ),
        Outcome::Found(Some(body)) => json_response(StatusCode::OK, body),
        Outcome::Deleted(true) => empty_response(StatusCode::NO_CONTENT),
        Outcome::Found(None) | Outcome::Deleted(false) => {
            error_response(StatusCode::NOT_FOUND, format!("no resource at {path}"))
        }
    }
}

fn replayed_response(status: u16, body: String) -> Response<Body> {
    let Ok(status) = StatusCode::from_u16(status) else {
        error!(status, "stored idempotent response has an invalid status");
        let message = format!("stored response has invalid status {status}");
        return error_response(StatusCode::INTERNAL_SERVER_ERROR, message);
    };
    let mut response = json_response(status, body);
    response
        .headers_mut()
        .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    response
}

/// Returns the counters as JSON for `GET`, and 405 for other methods.
pub(crate) fn serve_stats(counters: &Counters, method: &Method) -> Response<Body> {
    if method != Method::GET {
        return method_not_allowed(method, "GET");
    }
    let stats = counters.snapshot();
    let body = serde_json::to_string(&stats).expect("stats serialize to JSON");
    json_response(StatusCode::OK, body)
}

/// Returns the body as text when it is one valid JSON document, or the
/// reason why it is not.
fn json_text(body: &Bytes) -> Result<String, String> {
    let text = std::str::from_utf8(body).map_err(|err| {
        format!(
            "request body is not valid UTF-8 (invalid byte at offset {}); send JSON in UTF-8",
            err.valid_up_to()
        )
    })?;
    serde_json::from_str::<IgnoredAny>(text)
        .map_err(|err| format!("request body is not valid JSON: {err}"))?;
    Ok(text.to_owned())
}

fn method_not_allowed(method: &Method, allowed: &'static str) -> Response<Body> {
    let message = format!("method {method} is not allowed here; use {allowed}");
    let mut response = error_response(StatusCode::METHOD_NOT_ALLOWED, message);
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allowed));
    response
}

pub(crate) fn error_response(status: StatusCode, message: String) -> Response<Body> {
    json_response(status, serde_json::json!({ "error": message }).to_string())
}

pub(crate) fn json_response(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn empty_response(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}
