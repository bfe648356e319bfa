//! The stop signal every binary obeys: SIGTERM (Kubernetes) or Ctrl-C (a terminal).

/// Resolves on the first SIGTERM or SIGINT.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("received Ctrl-C"),
        () = term => tracing::info!("received SIGTERM"),
    }
}

/// Runs the last shutdown steps (waiting for background tasks, closing pools) for at most `grace`:
/// a task that never finishes must not keep a stopped replica alive.
pub async fn drain_within(grace: std::time::Duration, work: impl std::future::Future<Output = ()>) {
    if tokio::time::timeout(grace, work).await.is_err() {
        tracing::warn!(
            ?grace,
            "background work still running when the grace period ended; stopping anyway"
        );
    }
}
