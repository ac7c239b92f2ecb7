//! Listener, connection tasks and shutdown, shared by the target and the
//! proxy.

use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, warn};

use crate::faults::{FaultPlan, Schedule};
use crate::idempotency::InProgress;
use crate::routes::{self, State};
use crate::stats::{Counters, Stats};
use crate::store::Store;

/// Time that open connections get to finish their requests at shutdown
/// before they are aborted.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Pause after a failed `accept`, for example when the process is out of
/// file descriptors, so that the failure is not retried in a busy loop.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Configuration of a target server.
#[derive(Clone, Debug)]
pub struct TargetConfig {
    /// Address to listen on; port 0 picks a free port.
    pub addr: SocketAddr,
    /// SQLite database file, created when missing. An existing file keeps
    /// its resources and posted rows.
    pub db_path: PathBuf,
    /// Faults to inject.
    pub faults: FaultPlan,
}

impl TargetConfig {
    /// Returns a configuration that listens on a free port of 127.0.0.1 and
    /// injects no faults.
    pub fn new(db_path: impl Into<PathBuf>) -> Self {
        Self {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            db_path: db_path.into(),
            faults: FaultPlan::default(),
        }
    }
}

/// Handle to a server started by [`start`]. Dropping it stops the server
/// without waiting; [`RunningTarget::shutdown`] also waits for the database
/// to close.
pub struct RunningTarget {
    addr: SocketAddr,
    counters: Arc<Counters>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningTarget {
    /// Returns the address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Returns the base URL, such as `http://127.0.0.1:8080`, without a
    /// trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Returns a snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    /// Stops accepting connections, lets open requests finish (cutting
    /// stalls short) for up to [`SHUTDOWN_GRACE`], closes the database and
    /// returns the final counters.
    ///
    /// # Panics
    ///
    /// Resumes the panic of the server task, if it panicked.
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

/// Opens the database, binds the listener and starts serving in a Tokio
/// task of the current runtime.
///
/// # Errors
///
/// Fails when the fault plan is invalid, the address cannot be bound or the
/// database cannot be opened.
pub async fn start(config: TargetConfig) -> anyhow::Result<RunningTarget> {
    config.faults.validate()?;

    let listener = TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("failed to listen on {}", config.addr))?;
    let addr = listener.local_addr()?;

    let counters = Arc::new(Counters::default());
    let store = Store::open(&config.db_path, counters.clone()).await?;

    let (stop, stop_rx) = watch::channel(false);
    let state = Arc::new(State {
        schedule: Schedule::new(config.faults),
        store,
        counters: counters.clone(),
        in_progress: InProgress::default(),
        stop: stop_rx.clone(),
    });
    let task = tokio::spawn(serve(listener, state, stop_rx));

    Ok(RunningTarget {
        addr,
        counters,
        stop,
        task,
    })
}

async fn serve(listener: TcpListener, state: Arc<State>, stop: watch::Receiver<bool>) {
    let handler = {
        let state = state.clone();
        move |reset, request| routes::handle(state.clone(), reset, request)
    };
    accept_connections(listener, stop, handler).await;
    state.store.close().await;
}

/// Serves each accepted connection with `handler` until `stop` turns true,
/// then waits up to [`SHUTDOWN_GRACE`] for open connections and aborts the
/// rest.
///
/// Notifying the [`Notify`] that `handler` gets with each request resets the
/// connection with a TCP reset, and the handler's future should then never
/// complete.
pub(crate) async fn accept_connections<H, F, B>(
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
    handler: H,
) where
    H: Fn(Arc<Notify>, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let task = serve_connection(stream, peer, stop.clone(), handler.clone());
                    connections.spawn(task);
                }
                Err(err) => {
                    warn!(error = %err, "failed to accept a connection");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
        }
        while connections.try_join_next().is_some() {}
    }
    drop(listener);

    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            connections = connections.len(),
            grace = %humantime::format_duration(SHUTDOWN_GRACE),
            "aborting connections still open after the shutdown grace period"
        );
        connections.shutdown().await;
    }
}

/// Completes when the server shuts down or its `RunningTarget` is dropped.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    // An error means that the sender, owned by `RunningTarget`, was dropped.
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// How a connection task ended.
enum Ending {
    Closed,
    Reset,
}

async fn serve_connection<H, F, B>(
    mut stream: TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
    handler: H,
) where
    H: Fn(Arc<Notify>, Request<Incoming>) -> F + Send + 'static,
    F: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if let Err(err) = stream.set_nodelay(true) {
        debug!(error = %err, %peer, "failed to set TCP_NODELAY");
    }
    let reset = Arc::new(Notify::new());

    let service = {
        let reset = reset.clone();
        service_fn(move |request| handler(reset.clone(), request))
    };
    // The connection borrows the stream, so that a reset can still reach the
    // socket after hyper lets go of it.
    let mut connection = Box::pin(
        http1::Builder::new()
            // Without a header timeout, an idle keep-alive connection stays
            // open until the client closes it, so a client reusing it never
            // races a server-side idle close.
            .header_read_timeout(None)
            .serve_connection(TokioIo::new(&mut stream), service),
    );

    let mut draining = false;
    let ending = loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    debug!(error = %err, %peer, "connection ended with an error");
                }
                break Ending::Closed;
            }
            _ = reset.notified() => break Ending::Reset,
            () = stopped(&mut stop), if !draining => {
                // Finish the request in progress, then close.
                connection.as_mut().graceful_shutdown();
                draining = true;
            }
        }
    };
    drop(connection);

    if let Ending::Reset = ending {
        // With a zero linger time, closing the socket sends RST at once and
        // discards unsent data, so the client sees a reset, not an EOF.
        if let Err(err) = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO)) {
            warn!(error = %err, %peer, "failed to set SO_LINGER for an injected reset");
        }
    }
}
