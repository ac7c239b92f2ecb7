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
use crate::server;
use crate::stats::Counters;
use crate::store::{Operation, Outcome, Store};

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
        return Ok(serve_stats(&state, request.method()));
    }
    state.counters.count_request();
    let (arrival, fault) = state.schedule.arrive();

    // Read the whole body even for a faulted request, so that the connection
    // stays usable for the next request on it.
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.is::<LengthLimitError>() => {
            let message = format!("request body exceeds {MAX_BODY_BYTES} bytes; send less data");
            return Ok(error_response(StatusCode::PAYLOAD_TOO_LARGE, message));
        }
        Err(err) => {
            debug!(error = %err, "failed to read request body");
            let message = format!("failed to read request body: {err}");
            return Ok(error_response(StatusCode::BAD_REQUEST, message));
        }
    };
    let path = parts.uri.path();

    if let Some(fault) = fault {
        debug!(arrival, fault = fault.name(), method = %parts.method, path, "injecting fault");
        state.counters.count_fault(fault);
        return Ok(inject(&state, &reset, fault).await);
    }
    Ok(serve_resource(&state.store, &parts.method, path, body).await)
}

async fn inject(state: &State, reset: &Notify, fault: Fault) -> Response<Body> {
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
            let secs = state.schedule.plan().retry_after_secs;
            let message = format!("injected fault: too many requests; retry after {secs} s");
            let mut response = error_response(StatusCode::TOO_MANY_REQUESTS, message);
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
            response
        }
        Fault::Stall => {
            let mut stop = state.stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(state.schedule.plan().stall_for) => {}
                () = server::stopped(&mut stop) => {}
            }
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "injected fault: request stalled".into(),
            )
        }
        Fault::Reset => {
            reset.notify_one();
            std::future::pending().await
        }
        Fault::Outage => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "injected fault: outage in progress".into(),
        ),
    }
}

async fn serve_resource(store: &Store, method: &Method, path: &str, body: Bytes) -> Response<Body> {
    let operation = match *method {
        Method::PUT => match json_text(&body) {
            Ok(body) => Operation::Put {
                path: path.to_owned(),
                body,
            },
            Err(message) => return error_response(StatusCode::BAD_REQUEST, message),
        },
        Method::POST => match json_text(&body) {
            Ok(body) => Operation::Post {
                collection: path.to_owned(),
                body,
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
        Outcome::Posted { id } => json_response(
            StatusCode::CREATED,
            serde_json::json!({ "id": id }).to_string(),
        ),
        Outcome::Found(Some(body)) => json_response(StatusCode::OK, body),
        Outcome::Deleted(true) => empty_response(StatusCode::NO_CONTENT),
        Outcome::Found(None) | Outcome::Deleted(false) => {
            error_response(StatusCode::NOT_FOUND, format!("no resource at {path}"))
        }
    }
}

fn serve_stats(state: &State, method: &Method) -> Response<Body> {
    if method != Method::GET {
        return method_not_allowed(method, "GET");
    }
    let stats = state.counters.snapshot();
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

fn error_response(status: StatusCode, message: String) -> Response<Body> {
    json_response(status, serde_json::json!({ "error": message }).to_string())
}

fn json_response(status: StatusCode, body: String) -> Response<Body> {
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
