//! The SMTP listener: admits connections within the limits, runs one task per session (so a
//! panic in one never touches another) and shuts down gracefully.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::conn::Phase;
use super::handler::MessageHandler;
use super::session::{Session, SessionConfig, SessionEnd};

/// The end of the grace kept for sessions to send their 421 before they are aborted: 5 s, or a
/// quarter of a shorter grace, so the whole stop fits inside the one shutdown deadline.
const CLOSING_WINDOW: Duration = Duration::from_secs(5);

fn closing_window(grace: Duration) -> Duration {
    CLOSING_WINDOW.min(grace / 4)
}

/// Connection limits of the listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Sessions open at once (421 4.3.2 beyond).
    pub max_connections: usize,
    /// Sessions open at once from one client IP (421 4.3.2 beyond). Trusted relays are exempt:
    /// they carry many clients over their connections, and the total limit still bounds them.
    pub max_connections_per_ip: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 2000,
            max_connections_per_ip: 50,
        }
    }
}

/// Counts open sessions per client IP; a guard gives its slot back when the session ends.
#[derive(Debug, Default)]
struct PerIp(Mutex<HashMap<IpAddr, usize>>);

#[derive(Debug)]
struct PerIpGuard {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    fn admit(table: &Arc<PerIp>, ip: IpAddr, max: usize) -> Option<PerIpGuard> {
        let mut counts = table
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = counts.entry(ip).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(PerIpGuard {
            table: table.clone(),
            ip,
        })
    }
}

impl Drop for PerIpGuard {
    fn drop(&mut self) {
        let mut counts = self
            .table
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// The slots a session holds while it runs.
#[derive(Debug)]
struct Admission {
    _total: OwnedSemaphorePermit,
    _per_ip: Option<PerIpGuard>,
}

/// Serves SMTP on `listener` until `shutdown` resolves; then stops accepting, lets sessions with
/// a message in progress finish, tells the rest 421 and returns: all within `grace` (the last
/// [`closing_window`] of it for the 421s).
pub async fn serve<H: MessageHandler>(
    listener: TcpListener,
    config: Arc<SessionConfig>,
    limits: ConnectionLimits,
    handler: Arc<H>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let (phase_tx, phase_rx) = watch::channel(Phase::Running);
    let total = Arc::new(Semaphore::new(limits.max_connections));
    let per_ip = Arc::new(PerIp::default());
    let mut sessions = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(result) = sessions.join_next(), if !sessions.is_empty() => log_session_end(result),
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Usually out of file descriptors: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let ip = email2sms_domain::canonical_ip(peer.ip());
                let trusted = config.is_trusted_relay(ip);
                let admission = match total.clone().try_acquire_owned() {
                    Err(_) => Err("the gateway is at its connection limit"),
                    Ok(permit) if trusted => Ok(Admission { _total: permit, _per_ip: None }),
                    Ok(permit) => match PerIp::admit(&per_ip, ip, limits.max_connections_per_ip) {
                        Some(guard) => Ok(Admission { _total: permit, _per_ip: Some(guard) }),
                        None => Err("too many connections from your address"),
                    },
                };
                let admission = match admission {
                    Ok(admission) => admission,
                    Err(reason) => {
                        tracing::warn!(%peer, reason, "connection refused");
                        // Best effort and without waiting: a flood must not tie up the loop.
                        let _ = stream.try_write(
                            format!("421 4.3.2 {reason}; try again later\r\n").as_bytes(),
                        );
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let session = Session::new(stream, peer, config.clone(), handler.clone(), phase_rx.clone());
                let span = tracing::info_span!("smtp", %peer);
                sessions.spawn(
                    async move {
                        let end = session.run().await;
                        drop(admission);
                        match end {
                            SessionEnd::Quit | SessionEnd::ClientClosed | SessionEnd::Shutdown => {
                                tracing::debug!(?end, "session ended");
                            }
                            // Worth an operator's eye: a stuck or hostile client, a broken relay.
                            _ => tracing::info!(?end, "session ended abnormally"),
                        }
                    }
                    .instrument(span),
                );
            }
        }
    }
    drop(listener);
    tracing::info!(
        sessions = sessions.len(),
        ?grace,
        "SMTP: no new connections; letting messages in progress finish"
    );
    let _ = phase_tx.send(Phase::Draining);
    let closing = closing_window(grace);
    if drain(&mut sessions, grace - closing).await {
        return;
    }
    tracing::warn!(
        sessions = sessions.len(),
        "SMTP grace period over; closing the remaining sessions with 421"
    );
    let _ = phase_tx.send(Phase::Closing);
    if !drain(&mut sessions, closing).await {
        sessions.abort_all();
        while let Some(result) = sessions.join_next().await {
            log_session_end(result);
        }
    }
}

/// Waits up to `limit` for every session to end; true when they all did.
async fn drain(sessions: &mut JoinSet<()>, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, sessions.join_next()).await {
            Ok(None) => return true,
            Ok(Some(result)) => log_session_end(result),
            Err(_) => return false,
        }
    }
}

fn log_session_end(result: Result<(), tokio::task::JoinError>) {
    if let Err(error) = result {
        if error.is_panic() {
            // The task is gone; its connection is closed, every other session carries on.
            tracing::error!(%error, "an SMTP session panicked");
        } else {
            tracing::debug!(%error, "an SMTP session was cancelled");
        }
    }
}
