//! The wire limit: a bare HTTP client sending precomputed requests, with
//! the HTTP settings sluice uses and the same number in flight, and nothing
//! else: no parsing, no plugin, no retries, no bookkeeping.
//!
//! Two clients set the limit: reqwest, the client a user of Rust would pick,
//! and hyper's pooled client alone, the stack sluice sends with.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::parse::WireRequest;
use crate::runs::{rate, Sample};

/// Name prefix of the client's runtime threads, for their CPU time.
const THREAD_NAME: &str = "wire";

const USER_AGENT: &str = concat!("sluice/", env!("CARGO_PKG_VERSION"));

/// The HTTP client of a wire-limit run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    Reqwest,
    Hyper,
}

type HyperClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
>;

/// One client of either kind, shared by the sending tasks.
#[derive(Clone)]
enum Sending {
    Reqwest(reqwest::Client),
    Hyper(Box<HyperClient>),
}

impl Sending {
    fn new(client: Client, concurrency: usize) -> anyhow::Result<Sending> {
        Ok(match client {
            Client::Reqwest => Sending::Reqwest(
                reqwest::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .connect_timeout(Duration::from_secs(10))
                    .pool_max_idle_per_host(concurrency)
                    .tcp_nodelay(true)
                    .user_agent(USER_AGENT)
                    .build()?,
            ),
            Client::Hyper => {
                let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
                connector.set_nodelay(true);
                connector.set_connect_timeout(Some(Duration::from_secs(10)));
                let client = hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .pool_max_idle_per_host(concurrency)
                .build(connector);
                Sending::Hyper(Box::new(client))
            }
        })
    }

    /// Sends one request and reads its body. Returns true on a 2xx response.
    async fn send(&self, request: &WireRequest) -> bool {
        match self {
            Sending::Reqwest(client) => {
                let response = client
                    .request(request.method.clone(), request.url.clone())
                    .headers(request.headers.clone())
                    .body(request.body.clone())
                    .send()
                    .await;
                match response {
                    Ok(response) if response.status().is_success() => {
                        response.bytes().await.is_ok()
                    }
                    _ => false,
                }
            }
            Sending::Hyper(client) => {
                use http_body_util::BodyExt;
                let mut outgoing =
                    hyper::Request::new(http_body_util::Full::new(request.body.clone()));
                *outgoing.method_mut() = request.method.clone();
                *outgoing.uri_mut() = request.uri.clone();
                *outgoing.headers_mut() = request.headers.clone();
                outgoing.headers_mut().insert(
                    hyper::header::USER_AGENT,
                    hyper::header::HeaderValue::from_static(USER_AGENT),
                );
                let sent = async {
                    let response = client.request(outgoing).await.ok()?;
                    let success = response.status().is_success();
                    response.into_body().collect().await.ok()?;
                    Some(success)
                };
                // The same overall timeout as the reqwest client's.
                matches!(
                    tokio::time::timeout(Duration::from_secs(30), sent).await,
                    Ok(Some(true))
                )
            }
        }
    }
}

/// Sends every request once, `concurrency` at a time, on a fresh runtime
/// with `workers` threads (tokio's default when `None`) and a fresh client
/// of the given kind.
///
/// # Errors
///
/// Fails when the runtime or the client cannot be built, or a request
/// fails or gets a response other than 2xx.
pub fn run(
    requests: &Arc<Vec<WireRequest>>,
    concurrency: usize,
    workers: Option<usize>,
    client: Client,
) -> anyhow::Result<Sample> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = workers {
        builder.worker_threads(workers);
    }
    let runtime = builder.thread_name(THREAD_NAME).enable_all().build()?;
    runtime.block_on(async {
        let client = Sending::new(client, concurrency)?;
        let next = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicU64::new(0));

        let started = Instant::now();
        let workers: Vec<_> = (0..concurrency)
            .map(|_| {
                let client = client.clone();
                let requests = requests.clone();
                let next = next.clone();
                let failed = failed.clone();
                tokio::spawn(async move {
                    loop {
                        let index = next.fetch_add(1, Relaxed);
                        let Some(request) = requests.get(index) else {
                            break;
                        };
                        if !client.send(request).await {
                            failed.fetch_add(1, Relaxed);
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.await?;
        }
        let elapsed = started.elapsed();
        let failed = failed.load(Relaxed);
        anyhow::ensure!(
            failed == 0,
            "{failed} of {} wire-limit requests failed",
            requests.len()
        );
        Ok(Sample {
            elapsed,
            cpu: crate::cpu::threads(THREAD_NAME),
            reported_rate: rate(requests.len() as u64, elapsed.as_secs_f64()),
            ..Sample::default()
        })
    })
}
