//! The HTTP/1 server behind `--metrics-addr`.
//!
//! - `GET /metrics`: every metric in the Prometheus text format.
//! - `GET /healthz`: 200 while the process runs.
//! - `GET /readyz`: 200, or 503 while the circuit breaker is open or
//!   half-open, with the reason, since when, and when the next probe goes.
//! - Other methods on these paths get 405, other paths 404.
//!
//! At most [`MAX_CONNECTIONS`] connections are served at once, and a
//! client gets [`HEADER_READ_TIMEOUT`] to send its request head, so a
//! stuck or hostile client cannot hold the server. The server runs as a
//! task on the command's runtime and stops with it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::{Metrics, CONTENT_TYPE as METRICS_CONTENT_TYPE};

/// Connections served at once. Further connections wait to be accepted.
pub const MAX_CONNECTIONS: usize = 32;
/// Time a client has to send a request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

const TEXT: &str = "text/plain; charset=utf-8";

/// Binds `address` without a runtime, so that a command can fail on a
/// taken address before it starts any work.
///
/// # Errors
///
/// Fails when the address is in use, not an address of this machine, or
/// a port the process may not bind.
pub fn bind(address: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(address)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves `metrics` on `listener` until the task is aborted or the
/// runtime shuts down. Call it from within a tokio runtime.
///
/// # Errors
///
/// Fails when the listener cannot be registered with the runtime.
pub fn serve(
    listener: std::net::TcpListener,
    metrics: Arc<Metrics>,
) -> std::io::Result<JoinHandle<()>> {
    let listener = TcpListener::from_std(listener)?;
    Ok(tokio::spawn(accept_loop(listener, metrics)))
}

async fn accept_loop(listener: TcpListener, metrics: Arc<Metrics>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Such as running out of file descriptors: wait for some to
                // be freed instead of spinning.
                tracing::warn!(error = %err, "metrics server failed to accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| respond(metrics.clone(), request));
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(err) = served {
                tracing::debug!(error = %err, "metrics connection ended with an error");
            }
            drop(permit);
        });
    }
}

async fn respond(
    metrics: Arc<Metrics>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path();
    let known = matches!(path, "/metrics" | "/healthz" | "/readyz");
    if !known {
        let body = "not found; sluice serves /metrics, /healthz and /readyz\n".to_owned();
        return Ok(text(StatusCode::NOT_FOUND, body));
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let body = format!("method {} not allowed; use GET or HEAD\n", request.method());
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, body);
        let allow = HeaderValue::from_static("GET, HEAD");
        response.headers_mut().insert(ALLOW, allow);
        return Ok(response);
    }

    let response = match path {
        "/metrics" => {
            // Encoding reads the dead-letter directory.
            let encoded = tokio::task::spawn_blocking(move || metrics.encode()).await;
            match encoded {
                Ok(body) => {
                    let mut response = text(StatusCode::OK, body);
                    let content_type = HeaderValue::from_static(METRICS_CONTENT_TYPE);
                    response.headers_mut().insert(CONTENT_TYPE, content_type);
                    response
                }
                Err(err) => {
                    tracing::error!(error = %err, "encoding the metrics failed");
                    let body = "encoding the metrics failed\n".to_owned();
                    text(StatusCode::INTERNAL_SERVER_ERROR, body)
                }
            }
        }
        "/healthz" => text(StatusCode::OK, "ok\n".to_owned()),
        _ => {
            let readiness = metrics.readiness();
            let status = if readiness.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            text(status, readiness.body)
        }
    };
    Ok(response)
}

/// Builds a plain-text response that no cache keeps.
fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(TEXT));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
