//! A minimal HTTP/1.1 server on 127.0.0.1. It reads each request body and
//! responds with 204, or with 503 to a seeded share of requests (transient
//! faults), optionally after a fixed delay. It runs on a tokio runtime of
//! its own, so that the clients measured in the same process do not share
//! its workers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Name of the sink's runtime threads, for their CPU time.
const THREAD_NAME: &str = "sink";

/// Counts of what the sink received since the last [`Sink::reset`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkCounts {
    pub requests: u64,
    pub faults: u64,
    pub body_bytes: u64,
}

/// Settings and counters shared by every connection.
#[derive(Default)]
struct State {
    /// A request fails when its hash falls below this value; 0 means never.
    fault_threshold: AtomicU64,
    seed: AtomicU64,
    latency_micros: AtomicU64,
    requests: AtomicU64,
    faults: AtomicU64,
    body_bytes: AtomicU64,
}

/// A running sink; dropping it stops the server.
pub struct Sink {
    addr: SocketAddr,
    state: Arc<State>,
    // Dropping the runtime stops the accept loop and every connection.
    _runtime: tokio::runtime::Runtime,
}

impl Sink {
    /// Starts the sink on an ephemeral port of 127.0.0.1 with `workers`
    /// runtime threads.
    ///
    /// # Errors
    ///
    /// Fails when the runtime cannot start or the port cannot be bound.
    pub fn start(workers: usize) -> anyhow::Result<Sink> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name(THREAD_NAME)
            .enable_all()
            .build()?;
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        runtime.spawn(accept_loop(listener, state.clone()));
        Ok(Sink {
            addr,
            state,
            _runtime: runtime,
        })
    }

    /// Returns the base URL, such as `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sets the share of requests, from 0.0 to 1.0, that get a 503, the
    /// seed that picks them, and the delay before every response. Also
    /// resets the counters.
    pub fn configure(&self, fault_rate: f64, seed: u64, latency: Duration) {
        let rate = fault_rate.clamp(0.0, 1.0);
        let threshold = if rate >= 1.0 {
            u64::MAX
        } else {
            (rate * u64::MAX as f64) as u64
        };
        self.state.fault_threshold.store(threshold, Relaxed);
        self.state.seed.store(seed, Relaxed);
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.state.latency_micros.store(micros, Relaxed);
        self.reset();
    }

    /// Zeroes the counters.
    pub fn reset(&self) {
        self.state.requests.store(0, Relaxed);
        self.state.faults.store(0, Relaxed);
        self.state.body_bytes.store(0, Relaxed);
    }

    /// Returns the CPU time the sink's threads have used.
    pub fn cpu(&self) -> Duration {
        crate::cpu::threads(THREAD_NAME)
    }

    /// Returns the counters.
    pub fn counts(&self) -> SinkCounts {
        SinkCounts {
            requests: self.state.requests.load(Relaxed),
            faults: self.state.faults.load(Relaxed),
            body_bytes: self.state.body_bytes.load(Relaxed),
        }
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Running out of file descriptors is the usual cause; the
                // client sees a connection error and retries.
                eprintln!("sink: accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| respond(state.clone(), request));
            // A client that closes its connection mid-request is not an
            // error worth reporting here.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn respond(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<Empty<Bytes>>, hyper::Error> {
    let body = request.into_body().collect().await?.to_bytes();
    let number = state.requests.fetch_add(1, Relaxed);
    state.body_bytes.fetch_add(body.len() as u64, Relaxed);

    let latency = state.latency_micros.load(Relaxed);
    if latency > 0 {
        tokio::time::sleep(Duration::from_micros(latency)).await;
    }

    let threshold = state.fault_threshold.load(Relaxed);
    let fault = threshold > 0 && splitmix64(state.seed.load(Relaxed) ^ number) < threshold;
    let status = if fault {
        state.faults.fetch_add(1, Relaxed);
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::NO_CONTENT
    };
    let mut response = Response::new(Empty::new());
    *response.status_mut() = status;
    Ok(response)
}

/// Mixes `x` into a uniformly distributed 64-bit value (SplitMix64's
/// finalizer), so that consecutive request numbers fail independently.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_share_follows_rate() {
        let threshold = (0.2 * u64::MAX as f64) as u64;
        let faults = (0..100_000u64)
            .filter(|n| splitmix64(7 ^ n) < threshold)
            .count();
        assert!((19_000..21_000).contains(&faults), "{faults} faults");
    }

    #[test]
    fn sink_responds_204_or_503() {
        let sink = Sink::start(1).unwrap();
        sink.configure(1.0, 1, Duration::ZERO);
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let client = reqwest::Client::new();
        let status = runtime.block_on(async {
            let response = client.put(format!("{}/a", sink.url())).body("{}").send();
            response.await.unwrap().status()
        });
        assert_eq!(status, 503);

        sink.configure(0.0, 1, Duration::ZERO);
        let status = runtime.block_on(async {
            let response = client.put(format!("{}/a", sink.url())).body("{}").send();
            response.await.unwrap().status()
        });
        assert_eq!(status, 204);
        assert_eq!(
            sink.counts(),
            SinkCounts {
                requests: 1,
                faults: 0,
                body_bytes: 2
            }
        );
    }
}
