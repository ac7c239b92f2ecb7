//! The wire limit: a bare reqwest client sending precomputed requests, with
//! the HTTP settings sluice uses and the same number in flight, and nothing
//! else: no parsing, no plugin, no retries, no bookkeeping.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::parse::WireRequest;
use crate::runs::{rate, Sample};

/// Name prefix of the client's runtime threads, for their CPU time.
const THREAD_NAME: &str = "wire";

/// Sends every request once, `concurrency` at a time, on a fresh runtime
/// with `workers` threads (tokio's default when `None`) and client.
///
/// # Errors
///
/// Fails when the runtime or the client cannot be built, or a request
/// fails or gets a response other than 2xx.
pub fn run(
    requests: &Arc<Vec<WireRequest>>,
    concurrency: usize,
    workers: Option<usize>,
) -> anyhow::Result<Sample> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = workers {
        builder.worker_threads(workers);
    }
    let runtime = builder.thread_name(THREAD_NAME).enable_all().build()?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(concurrency)
            .tcp_nodelay(true)
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
            .build()?;
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
                        let response = client
                            .request(request.method.clone(), request.url.clone())
                            .headers(request.headers.clone())
                            .body(request.body.clone())
                            .send()
                            .await;
                        match response {
                            Ok(response) if response.status().is_success() => {}
                            _ => {
                                failed.fetch_add(1, Relaxed);
                            }
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
