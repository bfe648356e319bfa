//! The stop signal every binary obeys: SIGTERM (Kubernetes) or Ctrl-C (a terminal). What a stop
//! then does, with its one deadline, is [`crate::lifecycle::Lifecycle::run`].

/// Resolves on the first SIGTERM or SIGINT.
///
/// The handlers are installed when this is called, not when the future is first polled: a binary
/// calls it before it serves, so a SIGTERM that arrives after the first connection was answered
/// (a load balancer, a test) is always a graceful stop. Installed lazily, a SIGTERM that came
/// before the serving task first polled the future took the default action and killed the process
/// without its 421s (seen as exit status "signal 15" in the ingest binary test).
pub fn signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let interrupt = signal(SignalKind::interrupt());
        async move {
            let (mut term, mut interrupt) = match (term, interrupt) {
                (Ok(term), Ok(interrupt)) => (term, interrupt),
                (Err(error), _) | (_, Err(error)) => {
                    tracing::error!(%error, "cannot listen for SIGTERM and SIGINT");
                    return std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = interrupt.recv() => tracing::info!("received Ctrl-C"),
                _ = term.recv() => tracing::info!("received SIGTERM"),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
        tracing::info!("received Ctrl-C");
    }
}
