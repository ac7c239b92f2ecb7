//! Upstream for proxy tests that responds to each request with a JSON
//! description of it.
//!
//! The response has status 200 unless the request sets `x-echo-status`, and
//! copies `x-echo-retry-after` into `Retry-After`. It also sends
//! `x-upstream: echo`, which the proxy should relay, and the hop-by-hop
//! headers `keep-alive` and `x-upstream-hop` (named in `Connection`), which
//! it should drop.

use std::convert::Infallible;
use std::net::SocketAddr;

use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Request as the echo upstream received it.
#[derive(Debug, Deserialize)]
pub struct Echoed {
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Header names (lowercase) and values, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Echoed {
    /// Returns the values of header `name`, in order.
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .collect()
    }
}

/// Echo upstream listening on a free port of 127.0.0.1; stops when dropped.
pub struct EchoServer {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl EchoServer {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind echo upstream");
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let connection = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service_fn(echo));
                    let _ = connection.await;
                });
            }
        });
        Self { addr, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.expect("read echoed body").to_bytes();

    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_owned(), value)
        })
        .collect();
    let description = serde_json::json!({
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "headers": headers,
        "body": String::from_utf8(body.to_vec()).expect("echoed body is UTF-8"),
    });

    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
    };
    let status = header("x-echo-status")
        .map(|status| StatusCode::from_u16(status.parse().unwrap()).unwrap())
        .unwrap_or(StatusCode::OK);

    let mut response = Response::new(Full::new(Bytes::from(description.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert("content-type", "application/json".parse().unwrap());
    headers.insert("x-upstream", "echo".parse().unwrap());
    headers.insert("connection", "x-upstream-hop".parse().unwrap());
    headers.insert("x-upstream-hop", "1".parse().unwrap());
    headers.insert("keep-alive", "timeout=60".parse().unwrap());
    if let Some(retry_after) = header("x-echo-retry-after") {
        headers.insert("retry-after", retry_after.parse().unwrap());
    }
    Ok(response)
}
