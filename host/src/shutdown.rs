//! The run's stop signal: a `watch` flag that turns true once.

use tokio::sync::watch;

/// Resolves once the flag is true. A flag whose sender is gone never
/// turns true, so this then waits forever, as a run without a stop signal
/// should.
pub async fn stopped(flag: &mut watch::Receiver<bool>) {
    if flag.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}
