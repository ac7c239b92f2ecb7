//! Fault-injecting HTTP proxy in front of any HTTP/1.1 API.
//!
//! The proxy draws a fault for each request from the same seeded schedule as
//! the target (see [`FaultPlan`]) and then:
//!
//! - 500, 503, 429 with `Retry-After`, or the outage's 503: responds itself
//!   and forwards nothing;
//! - reset: resets the client connection and forwards nothing;
//! - stall: forwards the request, so its write may commit upstream, then
//!   holds the upstream's response for `stall_for` before sending it;
//! - lost response: forwards the request, waits for the whole upstream
//!   response, then resets the client connection instead of sending it;
//! - no fault: forwards the request and streams the upstream's response back.
//!
//! A forwarded request keeps its method, path, query, body and end-to-end
//! headers. Hop-by-hop headers are dropped in both directions, and `Host` is
//! set to the upstream's address, as name-based virtual hosts upstream
//! expect. Protocol upgrades such as WebSocket are not supported.
//!
//! `GET /_proxy/stats` returns the proxy's [`Stats`] and is never faulted or
//! forwarded. Every other path, including the target's `/_stats`, is
//! proxied.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, HOST};
use hyper::http::request::Parts;
use hyper::http::uri::{Authority, PathAndQuery, Scheme};
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::faults::{Fault, FaultPlan, Schedule};
use crate::routes::{self, error_response};
use crate::server::accept_connections;
use crate::stats::{Counters, Stats};

/// Path of the proxy's statistics endpoint, which is never faulted or
/// forwarded.
pub const PROXY_STATS_PATH: &str = "/_proxy/stats";

/// Headers that concern one connection or the proxy itself, and so are never
/// forwarded. `Expect` is dropped as well because the proxy reads the whole
/// body before it forwards the request.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "expect",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Body of a proxy response: the upstream's, streamed, or the proxy's own.
type ProxyBody = BoxBody<Bytes, BoxError>;

/// Configuration of a proxy.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Address to listen on; port 0 picks a free port.
    pub addr: SocketAddr,
    /// Base URL of the upstream API, such as `http://127.0.0.1:8090`. A path
    /// in it, such as `/v1`, is put before each request's path.
    pub upstream: String,
    /// Faults to inject.
    pub faults: FaultPlan,
}

impl ProxyConfig {
    /// Returns a configuration that listens on a free port of 127.0.0.1,
    /// forwards to `upstream` and injects no faults.
    pub fn new(upstream: impl Into<String>) -> Self {
        Self {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            upstream: upstream.into(),
            faults: FaultPlan::default(),
        }
    }
}

/// Handle to a proxy started by [`start_proxy`]. Dropping it stops the proxy
/// without waiting.
pub struct RunningProxy {
    addr: SocketAddr,
    counters: Arc<Counters>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningProxy {
    /// Returns the address the proxy listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Returns the base URL, such as `http://127.0.0.1:8081`, without a
    /// trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Returns a snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    /// Stops accepting connections, lets open requests finish (cutting
    /// stalls short) for up to [`SHUTDOWN_GRACE`](crate::SHUTDOWN_GRACE) and
    /// returns the final counters.
    ///
    /// # Panics
    ///
    /// Resumes the panic of the proxy task, if it panicked.
    pub async fn shutdown(self) -> Stats {
        let _ = self.stop.send(true);
        if let Err(err) = self.task.await {
            if err.is_panic() {
                std::panic::resume_unwind(err.into_panic());
            }
        }
        self.counters.snapshot()
    }
}

/// Binds the listener and starts proxying in a Tokio task of the current
/// runtime.
///
/// # Errors
///
/// Fails when the fault plan is invalid, the upstream URL is not a plain
/// `http://` base URL, or the address cannot be bound.
pub async fn start_proxy(config: ProxyConfig) -> anyhow::Result<RunningProxy> {
    config.faults.validate()?;
    let upstream = Upstream::parse(&config.upstream)?;

    let listener = TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("failed to listen on {}", config.addr))?;
    let addr = listener.local_addr()?;

    let counters = Arc::new(Counters::default());
    let (stop, stop_rx) = watch::channel(false);
    let state = Arc::new(ProxyState {
        schedule: Schedule::new(config.faults),
        counters: counters.clone(),
        upstream,
        client: Client::builder(TokioExecutor::new()).build_http(),
        stop: stop_rx.clone(),
    });

    let handler = move |reset, request| handle(state.clone(), reset, request);
    let task = tokio::spawn(accept_connections(listener, stop_rx, handler));
    Ok(RunningProxy {
        addr,
        counters,
        stop,
        task,
    })
}

/// Upstream base URL, split into the parts that each forwarded URI needs.
#[derive(Debug)]
struct Upstream {
    authority: Authority,
    /// Path put before each request's path, without a trailing slash; empty
    /// for a URL without a path.
    base_path: String,
}

impl Upstream {
    fn parse(url: &str) -> anyhow::Result<Self> {
        let uri: Uri = url.parse().with_context(|| {
            format!("invalid upstream URL {url:?}; use a base URL such as http://127.0.0.1:8090")
        })?;
        if uri.scheme() != Some(&Scheme::HTTP) {
            bail!(
                "upstream URL {url:?} does not start with http://; the proxy speaks plain \
                 HTTP only, so use a URL such as http://127.0.0.1:8090"
            );
        }
        let Some(authority) = uri.authority().cloned() else {
            bail!("upstream URL {url:?} has no host; use a URL such as http://127.0.0.1:8090");
        };
        if authority.as_str().contains('@') {
            // The URL is left out of the message so that the password is not
            // printed.
            bail!(
                "upstream URL contains credentials; remove them and send them as request headers"
            );
        }
        if uri.query().is_some() {
            bail!(
                "upstream URL {url:?} has a query; remove it, because each request brings its own"
            );
        }

        Ok(Self {
            authority,
            base_path: uri.path().trim_end_matches('/').to_owned(),
        })
    }

    /// Returns the upstream URI for a request's path and query.
    fn uri_for(&self, path_and_query: Option<&PathAndQuery>) -> anyhow::Result<Uri> {
        let path_and_query = path_and_query.map_or("/", PathAndQuery::as_str);
        let uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.authority.clone())
            .path_and_query(format!("{}{path_and_query}", self.base_path))
            .build()?;
        Ok(uri)
    }

    fn url(&self) -> String {
        format!("http://{}{}", self.authority, self.base_path)
    }
}

struct ProxyState {
    schedule: Schedule,
    counters: Arc<Counters>,
    upstream: Upstream,
    client: Client<HttpConnector, Full<Bytes>>,
    /// Becomes true when the proxy shuts down; cuts stalls short.
    stop: watch::Receiver<bool>,
}

async fn handle(
    state: Arc<ProxyState>,
    reset: Arc<Notify>,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    if request.uri().path() == PROXY_STATS_PATH {
        return Ok(boxed(routes::serve_stats(
            &state.counters,
            request.method(),
        )));
    }
    state.counters.count_request();
    let (_in_flight, crowded) = state.schedule.enter();
    let (arrival, fault) = state.schedule.arrive();
    let fault = if crowded { Some(Fault::Crowded) } else { fault };

    let (parts, body) = request.into_parts();
    let body = match routes::read_body(body).await {
        Ok(body) => body,
        Err(response) => return Ok(boxed(response)),
    };

    let Some(fault) = fault else {
        let response = match forward(&state, &parts, body).await {
            Ok(response) => response.map(|body| body.map_err(BoxError::from).boxed()),
            Err(response) => boxed(response),
        };
        return Ok(response);
    };

    debug!(
        arrival,
        fault = fault.name(),
        method = %parts.method,
        path = parts.uri.path(),
        "injecting fault"
    );
    state.counters.count_fault(fault);
    let plan = state.schedule.plan();
    let response = match fault {
        Fault::Reset => routes::reset_connection(&reset).await,
        Fault::Stall => {
            let response = forward_and_collect(&state, &parts, body).await;
            routes::stall(plan.stall_for, state.stop.clone()).await;
            response
        }
        Fault::LostResponse => {
            // Wait for the whole response, so that the upstream has finished
            // the request before the client loses it.
            let _ = forward_and_collect(&state, &parts, body).await;
            routes::reset_connection(&reset).await
        }
        Fault::InternalError
        | Fault::Unavailable
        | Fault::TooManyRequests
        | Fault::Outage
        | Fault::Crowded => routes::status_fault_response(fault, plan.retry_after_secs),
    };
    Ok(boxed(response))
}

/// Sends a request to the upstream and returns its response with the body
/// still streaming, or a 502 response when the upstream cannot be reached.
async fn forward(
    state: &ProxyState,
    parts: &Parts,
    body: Bytes,
) -> Result<Response<Incoming>, Response<Full<Bytes>>> {
    let upstream = &state.upstream;
    let uri = upstream
        .uri_for(parts.uri.path_and_query())
        .map_err(|err| {
            let message = format!("invalid request path {}: {err}", parts.uri);
            error_response(StatusCode::BAD_REQUEST, message)
        })?;

    let mut request = Request::new(Full::new(body));
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = end_to_end_headers(&parts.headers);
    let host = HeaderValue::from_str(upstream.authority.as_str())
        .expect("an authority is a valid header value");
    request.headers_mut().insert(HOST, host);

    // NOTE: there is no upstream timeout, so a hung upstream holds the client
    // until the client's own timeout.
    let response = match state.client.request(request).await {
        Ok(response) => response,
        Err(err) => {
            let url = upstream.url();
            let error = error_chain(&err);
            let (method, path) = (&parts.method, parts.uri.path());
            warn!(error, upstream = url, %method, path, "failed to forward a request");
            let message = format!("failed to forward {method} {path} to {url}: {error}");
            return Err(error_response(StatusCode::BAD_GATEWAY, message));
        }
    };
    state.counters.count_forward();

    let (mut head, body) = response.into_parts();
    head.headers = end_to_end_headers(&head.headers);
    Ok(Response::from_parts(head, body))
}

/// Forwards a request and reads the whole upstream response, or returns the
/// 502 response when the upstream cannot be reached or its body cannot be
/// read.
async fn forward_and_collect(
    state: &ProxyState,
    parts: &Parts,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let response = match forward(state, parts, body).await {
        Ok(response) => response,
        Err(response) => return response,
    };

    let (head, body) = response.into_parts();
    match body.collect().await {
        Ok(collected) => Response::from_parts(head, Full::new(collected.to_bytes())),
        Err(err) => {
            let url = state.upstream.url();
            let error = error_chain(&err);
            warn!(
                error,
                upstream = url,
                path = parts.uri.path(),
                "failed to read an upstream response"
            );
            let message = format!("failed to read the response of {url}: {error}");
            error_response(StatusCode::BAD_GATEWAY, message)
        }
    }
}

/// Returns a copy of `headers` without hop-by-hop headers, including those
/// that `Connection` names.
fn end_to_end_headers(headers: &HeaderMap) -> HeaderMap {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();

    let mut kept = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if HOP_BY_HOP.contains(&name.as_str()) || named.contains(name) {
            continue;
        }
        kept.append(name.clone(), value.clone());
    }
    kept
}

fn boxed(response: Response<Full<Bytes>>) -> Response<ProxyBody> {
    response.map(|body| body.map_err(|never| match never {}).boxed())
}

/// Joins an error and its sources with `: `, as `{:#}` does for `anyhow`.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut chain = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_path_prefixes_requests() {
        let upstream = Upstream::parse("http://127.0.0.1:8090/api/").unwrap();
        let path = PathAndQuery::from_static("/items/1?x=2");
        let uri = upstream.uri_for(Some(&path)).unwrap();
        assert_eq!(uri.to_string(), "http://127.0.0.1:8090/api/items/1?x=2");

        let bare = Upstream::parse("http://127.0.0.1:8090").unwrap();
        assert_eq!(bare.base_path, "");
        let uri = bare.uri_for(Some(&path)).unwrap();
        assert_eq!(uri.to_string(), "http://127.0.0.1:8090/items/1?x=2");
    }

    #[test]
    fn upstream_rejects_unsupported_urls() {
        for (url, expected) in [
            ("https://127.0.0.1:8090", "does not start with http://"),
            ("127.0.0.1:8090", "does not start with http://"),
            ("http://user:secret@127.0.0.1:8090", "credentials"),
            ("http://127.0.0.1:8090/?a=1", "has a query"),
            ("http://exa mple", "invalid upstream URL"),
        ] {
            let err = Upstream::parse(url).unwrap_err().to_string();
            assert!(err.contains(expected), "{url}: {err}");
        }
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, x-trace"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("x-trace", "1"),
            ("authorization", "Bearer t"),
            ("idempotency-key", "k1"),
            ("x-multi", "a"),
            ("x-multi", "b"),
        ] {
            headers.append(name, HeaderValue::from_static(value));
        }

        let kept = end_to_end_headers(&headers);
        let names: Vec<&str> = kept.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["authorization", "idempotency-key", "x-multi"]);
        assert_eq!(kept.get_all("x-multi").iter().count(), 2);
    }
}
