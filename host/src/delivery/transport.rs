//! One attempt's HTTP exchange: send the request, follow 307 and 308
//! redirects, and read the whole response within the timeout.
//!
//! Requests go straight through hyper's pooled client. In the benchmark
//! harness on loopback, a bare reqwest client, which runs on the same hyper,
//! spent nearly twice the CPU time per request (see BENCHMARKS.md), and a
//! host that sends one request per record pays that on every row. reqwest still carries the requests that a proxy from the
//! environment (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, minus `NO_PROXY`)
//! applies to, so that proxies work as they do in curl.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioExecutor;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};

use super::classify::{error_chain, Fault};
use super::PreparedRequest;
use crate::config::HttpSettings;

/// Redirects followed for one attempt before its 307 or 308 counts as the
/// response.
const MAX_REDIRECTS: usize = 10;

const USER_AGENT: &str = concat!("sluice/", env!("CARGO_PKG_VERSION"));

/// A response read in full.
pub(crate) struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// The HTTP clients of one sender.
pub(crate) struct Transport {
    direct: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// The environment's proxy rules and the client that uses them, when
    /// a proxy variable is set.
    proxied: Option<(Matcher, reqwest::Client)>,
    timeout: Duration,
}

impl Transport {
    /// Builds the clients.
    ///
    /// # Errors
    ///
    /// Fails when the TLS provider cannot be set up, or when a proxy
    /// variable is set and reqwest's client cannot be built. An invalid
    /// proxy value is not an error: the proxy rules skip it.
    pub fn new(http: &HttpSettings) -> anyhow::Result<Transport> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(http.connect_timeout));
        // The TLS connector passes plain http through.
        connector.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let direct = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(http.max_concurrency())
            .build(connector);

        let proxied = if proxy_configured() {
            let client = reqwest::Client::builder()
                .timeout(http.timeout)
                .connect_timeout(http.connect_timeout)
                .pool_max_idle_per_host(http.max_concurrency())
                .tcp_nodelay(true)
                // Redirects are followed here, hop by hop.
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(USER_AGENT)
                .build()?;
            Some((Matcher::from_system(), client))
        } else {
            None
        };
        Ok(Transport {
            direct,
            proxied,
            timeout: http.timeout,
        })
    }

    /// Sends one attempt and reads its response, following redirects that
    /// keep the method and body, all within the timeout.
    pub async fn exchange(&self, request: &PreparedRequest) -> Result<Response, Fault> {
        match tokio::time::timeout(self.timeout, self.follow(request)).await {
            Ok(result) => result,
            Err(_) => Err(Fault::Timeout),
        }
    }

    async fn follow(&self, request: &PreparedRequest) -> Result<Response, Fault> {
        let mut response = self
            .send(
                &request.method,
                &request.url,
                &request.headers,
                &request.body,
            )
            .await?;
        // Only the redirects that keep the method and body are followed,
        // because 301, 302 and 303 may turn a PUT or POST into a GET, which
        // would report a record as delivered when it was not written.
        let mut url = None::<Url>;
        let mut headers = None::<HeaderMap>;
        for _ in 0..MAX_REDIRECTS {
            if !matches!(
                response.status,
                StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT
            ) {
                break;
            }
            let from = url.as_ref().unwrap_or(&request.url);
            let Some(next) = response
                .headers
                .get(header::LOCATION)
                .and_then(|location| location.to_str().ok())
                .and_then(|location| from.join(location).ok())
            else {
                break;
            };
            let mut next_headers = headers.take().unwrap_or_else(|| first_hop_headers(request));
            if !same_origin(from, &next) {
                for name in [
                    header::AUTHORIZATION,
                    header::COOKIE,
                    header::PROXY_AUTHORIZATION,
                    header::WWW_AUTHENTICATE,
                ] {
                    next_headers.remove(name);
                }
            }
            response = self
                .send(&request.method, &next, &next_headers, &request.body)
                .await?;
            url = Some(next);
            headers = Some(next_headers);
        }
        Ok(response)
    }

    /// Sends one request without following redirects.
    async fn send(
        &self,
        method: &Method,
        url: &Url,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<Response, Fault> {
        let uri = to_uri(url)?;
        if let Some((matcher, client)) = &self.proxied {
            if matcher.intercept(&uri).is_some() {
                return send_proxied(client, method, url, headers, body).await;
            }
        }

        let mut outgoing = hyper::Request::new(Full::new(body.clone()));
        *outgoing.method_mut() = method.clone();
        *outgoing.uri_mut() = uri;
        let sent = outgoing.headers_mut();
        *sent = headers.clone();
        if !sent.contains_key(header::USER_AGENT) {
            sent.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        }
        if !sent.contains_key(header::ACCEPT) {
            sent.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        }
        if let Some(value) = basic_auth(url) {
            sent.entry(header::AUTHORIZATION).or_insert(value);
        }

        let response = self
            .direct
            .request(outgoing)
            .await
            .map_err(|err| transport_fault(&err))?;
        let (parts, incoming) = response.into_parts();
        // Reading the body keeps the connection reusable and makes a body
        // that stalls past the timeout count as a timeout.
        let body = incoming
            .collect()
            .await
            .map_err(|err| transport_fault(&err))?
            .to_bytes();
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

async fn send_proxied(
    client: &reqwest::Client,
    method: &Method,
    url: &Url,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, Fault> {
    let response = client
        .request(method.clone(), url.clone())
        .headers(headers.clone())
        .body(body.clone())
        .send()
        .await
        .map_err(Fault::from_reqwest)?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.map_err(Fault::from_reqwest)?;
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Returns the first request's headers for the hops after it, with the
/// basic authentication of the endpoint's user info added, because an
/// absolute `Location` on the same origin carries no user info of its own.
fn first_hop_headers(request: &PreparedRequest) -> HeaderMap {
    let mut headers = request.headers.clone();
    if let Some(value) = basic_auth(&request.url) {
        headers.entry(header::AUTHORIZATION).or_insert(value);
    }
    headers
}

/// Returns whether any proxy variable is set, so that the proxy rules need
/// checking at all.
fn proxy_configured() -> bool {
    [
        "ALL_PROXY",
        "all_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
    ]
    .iter()
    .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()))
}

/// Turns a URL into the URI hyper sends, without its user name and
/// password, which travel as an `Authorization` header instead.
fn to_uri(url: &Url) -> Result<hyper::Uri, Fault> {
    let text = if url.username().is_empty() && url.password().is_none() {
        hyper::Uri::try_from(url.as_str())
    } else {
        let mut bare = url.clone();
        let _ = bare.set_username("");
        let _ = bare.set_password(None);
        hyper::Uri::try_from(bare.as_str())
    };
    text.map_err(|err| Fault::Request(format!("the URL is not a valid request target: {err}")))
}

/// Builds the basic `Authorization` header for a URL's user name and
/// password, when it has them.
fn basic_auth(url: &Url) -> Option<HeaderValue> {
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(text)
            .decode_utf8_lossy()
            .into_owned()
    };
    let credentials = format!(
        "{}:{}",
        decode(url.username()),
        url.password().map(decode).unwrap_or_default()
    );
    let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// Returns whether two URLs share scheme, host and port, so that
/// credentials may follow a redirect from one to the other.
fn same_origin(from: &Url, to: &Url) -> bool {
    from.scheme() == to.scheme()
        && from.host_str() == to.host_str()
        && from.port_or_known_default() == to.port_or_known_default()
}

/// Classifies an error from sending a request or reading its body. A
/// connect timeout is a timeout. Every other error broke the exchange off
/// midway, such as a refused connection or a reset.
fn transport_fault(err: &(dyn std::error::Error + 'static)) -> Fault {
    let mut source = Some(err);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return Fault::Timeout;
            }
        }
        source = cause.source();
    }
    Fault::Connection(error_chain(err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_the_uri_for_a_basic_header() {
        let url = Url::parse("http://user%20a:p%40ss@127.0.0.1:9/x?y=1").unwrap();
        let uri = to_uri(&url).unwrap();
        assert_eq!(uri.to_string(), "http://127.0.0.1:9/x?y=1");
        let value = basic_auth(&url).unwrap();
        let encoded = base64::engine::general_purpose::STANDARD.encode("user a:p@ss");
        assert_eq!(value.to_str().unwrap(), format!("Basic {encoded}"));
        assert!(value.is_sensitive());
    }

    #[test]
    fn url_without_credentials_needs_no_header() {
        let url = Url::parse("https://api.example.test/a%2Fb").unwrap();
        assert_eq!(
            to_uri(&url).unwrap().to_string(),
            "https://api.example.test/a%2Fb"
        );
        assert!(basic_auth(&url).is_none());
    }

    #[test]
    fn origin_includes_scheme_host_and_port() {
        let base = Url::parse("http://127.0.0.1:8080/a").unwrap();
        let same = Url::parse("http://127.0.0.1:8080/b").unwrap();
        assert!(same_origin(&base, &same));
        for other in [
            "https://127.0.0.1:8080/a",
            "http://127.0.0.2:8080/a",
            "http://127.0.0.1:8081/a",
        ] {
            assert!(!same_origin(&base, &Url::parse(other).unwrap()), "{other}");
        }
        let default_port = Url::parse("http://example.test/").unwrap();
        let explicit = Url::parse("http://example.test:80/").unwrap();
        assert!(same_origin(&default_port, &explicit));
    }

    #[test]
    fn timed_out_cause_is_a_timeout() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("tcp connect error")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let timed_out = Outer(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert_eq!(transport_fault(&timed_out), Fault::Timeout);
        let refused = Outer(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let Fault::Connection(text) = transport_fault(&refused) else {
            panic!("a refused connection is a connection fault");
        };
        assert!(text.starts_with("tcp connect error: "), "{text}");
    }
}
