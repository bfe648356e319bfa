//! One shutdown with one deadline (linkerd2-proxy's drain): every listener and background task of
//! a binary is registered here, and a stop runs the same steps for all of them.
//!
//! 1. SIGTERM: `readiness`, `""` and the API names turn NOT_SERVING (`liveness` stays SERVING:
//!    the process still works, and failing liveness would only get it killed sooner).
//! 2. The shutdown delay passes with the listeners still accepting, so endpoints and load
//!    balancers drop this replica before it refuses anyone.
//! 3. The stop token is cancelled: the gRPC and SMTP listeners close, consumers stop taking work,
//!    loops end.
//! 4. ONE `timeout(grace, …)` covers the gRPC drain, every tracked task and the `finish` steps
//!    (closing the connector, the last outbox events, the pool) together. Before, the gRPC drain
//!    and the background drain each had a full grace one after the other (2 × 30 s against a
//!    30 s terminationGracePeriodSeconds).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::config::ServerArgs;
use crate::grpc::{ApiServices, ServeError};
use crate::prober::{self, Probe};
use crate::readiness::Need;

/// The `grpc.health.v1` name that says the process works (liveness and startup probes).
pub const LIVENESS: &str = "liveness";
/// The `grpc.health.v1` name that says the binary can do its job now (readiness probe,
/// `--health-check`).
pub const READINESS: &str = "readiness";

/// A binary's listeners, background tasks, health and stop.
#[derive(Debug)]
pub struct Lifecycle {
    health: HealthReporter,
    /// Cancelled at SIGTERM: readiness off, probing ends.
    draining: CancellationToken,
    /// Cancelled after the delay: listeners close, tasks stop.
    stop: CancellationToken,
    tracker: TaskTracker,
    /// Set when a server failed; the stop then skips the delay.
    failed: CancellationToken,
    failure: Arc<Mutex<Option<ServeError>>>,
    api_names: Mutex<Vec<&'static str>>,
    delay: Duration,
    grace: Duration,
}

impl Lifecycle {
    /// With the configured shutdown delay and grace.
    pub fn new(args: &ServerArgs) -> Lifecycle {
        Lifecycle::with_timing(args.shutdown_delay, args.shutdown_grace)
    }

    pub fn with_timing(delay: Duration, grace: Duration) -> Lifecycle {
        Lifecycle {
            health: HealthReporter::new(),
            draining: CancellationToken::new(),
            stop: CancellationToken::new(),
            tracker: TaskTracker::new(),
            failed: CancellationToken::new(),
            failure: Arc::new(Mutex::new(None)),
            api_names: Mutex::new(Vec::new()),
            delay,
            grace,
        }
    }

    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Cancelled when the listeners close and background work must stop (after the delay).
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Resolves when the listeners close and background work must stop.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        self.stop.clone().cancelled_owned()
    }

    /// Runs `task` to its end; the stop waits for it (within the grace). For work that ends by
    /// itself or watches [`Lifecycle::stop_token`].
    pub fn spawn<F>(&self, what: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(async move {
            if AssertUnwindSafe(task).catch_unwind().await.is_err() {
                tracing::error!(task = what, "a background task panicked");
            }
        });
    }

    /// The tracker [`Lifecycle::spawn`] registers with, for work started later by a request (a
    /// notification batch after an import): the stop waits for it within the same grace.
    pub fn tracker(&self) -> TaskTracker {
        self.tracker.clone()
    }

    /// Runs `task` until it ends or the stop comes, whichever is first: for loops that hold
    /// nothing worth finishing (subscriptions, retries of a declaration).
    pub fn spawn_until_stopped<F>(&self, what: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = self.stop.clone();
        self.spawn(what, async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = task => {}
            }
        });
    }

    /// Sets `readiness` from `needs` and what `probes` find, every [`prober::INTERVAL`], until
    /// SIGTERM. NOT_SERVING until the first round.
    pub fn watch_readiness(&self, needs: &'static [Need], probes: Vec<Probe>) {
        let health = self.health.clone();
        let draining = self.draining.clone();
        // NOT_SERVING first, in the prober's own task: set anywhere else, it could land after
        // the first round's SERVING and stay, since only changes are reported.
        self.spawn("readiness prober", async move {
            health
                .set_service_status(READINESS, ServingStatus::NotServing)
                .await;
            prober::run(needs, probes, draining, move |verdict| {
                let health = health.clone();
                async move {
                    let status = if verdict.is_ready() {
                        ServingStatus::Serving
                    } else {
                        ServingStatus::NotServing
                    };
                    health.set_service_status(READINESS, status).await;
                }
            })
            .await;
        });
    }

    /// Serves `api` with health and reflection on `listener` until the stop; its drain is part
    /// of the one grace. Answers `liveness` and the API names SERVING at once.
    pub async fn serve_grpc(
        &self,
        api: ApiServices,
        listener: TcpListener,
    ) -> Result<(), ServeError> {
        let health_service = tonic_health::pb::health_server::HealthServer::new(
            tonic_health::server::HealthService::from_health_reporter(self.health.clone()),
        );
        let routes = crate::grpc::routes(&api, health_service)?;
        for name in api.names.iter().chain([&"", &LIVENESS]) {
            self.health
                .set_service_status(*name, ServingStatus::Serving)
                .await;
        }
        self.api_names
            .lock()
            .expect("api names")
            .extend(api.names.iter().copied());
        let incoming = TcpListenerStream::new(listener).map(|accepted| {
            // Unary calls are small request/response pairs: Nagle would hold the last segment
            // of each for up to 40 ms waiting for an ACK.
            if let Ok(stream) = &accepted {
                let _ = stream.set_nodelay(true);
            }
            accepted
        });
        let server = tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, self.stopped());
        let failed = self.failed.clone();
        let failure = self.failure.clone();
        self.spawn("gRPC server", async move {
            if let Err(error) = server.await {
                tracing::error!(%error, "the gRPC server failed");
                *failure.lock().expect("failure slot") = Some(error.into());
                failed.cancel();
            }
        });
        Ok(())
    }

    /// Waits for `signal` (or a server failure), then stops as the module describes; `finish`
    /// runs once every tracked task has ended, inside the same grace.
    pub async fn run(
        self,
        signal: impl Future<Output = ()>,
        finish: impl Future<Output = ()>,
    ) -> Result<(), ServeError> {
        let failed_first = tokio::select! {
            () = signal => false,
            () = self.failed.cancelled() => true,
        };
        self.draining.cancel();
        let names: Vec<&'static str> = self.api_names.lock().expect("api names").clone();
        for name in names.iter().chain([&"", &READINESS]) {
            self.health
                .set_service_status(*name, ServingStatus::NotServing)
                .await;
        }
        if !failed_first && !self.delay.is_zero() {
            tracing::info!(delay = ?self.delay, "stopping: readiness NOT_SERVING, still serving while endpoints drop this replica");
            tokio::select! {
                () = tokio::time::sleep(self.delay) => {}
                () = self.failed.cancelled() => {}
            }
        }
        tracing::info!(grace = ?self.grace, "stopping: listeners closed, draining in-flight work");
        self.stop.cancel();
        self.tracker.close();
        let tracker = self.tracker.clone();
        let drained = tokio::time::timeout(self.grace, async move {
            tracker.wait().await;
            finish.await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                grace = ?self.grace,
                tasks = self.tracker.len(),
                "grace period over with work still in flight; stopping anyway"
            );
        }
        match self.failure.lock().expect("failure slot").take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_grace_covers_every_task_and_the_finish() {
        let life = Lifecycle::with_timing(Duration::from_secs(5), Duration::from_secs(20));
        let stop = life.stop_token();
        // Ends 15 s after the stop: inside the grace.
        life.spawn("slow", async move {
            stop.cancelled().await;
            tokio::time::sleep(Duration::from_secs(15)).await;
        });
        // Never ends by itself.
        life.spawn("stuck", std::future::pending());
        let started = tokio::time::Instant::now();
        let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let finished_flag = finished.clone();
        life.run(async {}, async move {
            finished_flag.store(true, std::sync::atomic::Ordering::SeqCst);
        })
        .await
        .unwrap();
        // delay + grace, not delay + grace + grace.
        assert_eq!(started.elapsed(), Duration::from_secs(25));
        assert!(
            !finished.load(std::sync::atomic::Ordering::SeqCst),
            "finish waits for every task"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn tasks_stop_only_after_the_delay() {
        let life = Lifecycle::with_timing(Duration::from_secs(5), Duration::from_secs(20));
        let stopped_at = Arc::new(Mutex::new(None));
        let record = stopped_at.clone();
        let stop = life.stopped();
        let started = tokio::time::Instant::now();
        life.spawn("consumer", async move {
            stop.await;
            *record.lock().unwrap() = Some(started.elapsed());
        });
        life.spawn_until_stopped("loop", std::future::pending());
        life.run(async {}, async {}).await.unwrap();
        assert_eq!(*stopped_at.lock().unwrap(), Some(Duration::from_secs(5)));
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(5),
            "nothing left to drain"
        );
    }
}
