//! The background prober behind `readiness`: every [`INTERVAL`] it asks each dependency once,
//! each answer bounded by [`PROBE_TIMEOUT`], and sets the health status the rule in
//! [`crate::readiness`] decides.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::readiness::{self, Dependency, Facts, Need, Phase, Verdict};

/// Between two probe rounds. Kubernetes asks readiness every 5 s, so a status at most 2 s old is
/// what the probe sees; a round costs one query per dependency.
pub const INTERVAL: Duration = Duration::from_secs(2);
/// Longest one probe may take before its dependency counts as unreachable: a dependency slower
/// than this would also fail the requests that need it (ingest's Redis timeout is 1 s).
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

type ProbeFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// One check of one dependency.
#[derive(Clone)]
pub struct Probe {
    pub dependency: Dependency,
    check: Arc<dyn Fn() -> ProbeFuture + Send + Sync>,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("dependency", &self.dependency)
            .finish_non_exhaustive()
    }
}

impl Probe {
    /// `check` answers `Ok` when the dependency is reachable, or why not.
    pub fn new<F, Fut>(dependency: Dependency, check: F) -> Probe
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        Probe {
            dependency,
            check: Arc::new(move || Box::pin(check())),
        }
    }

    /// A probe whose answer is already known in memory (the SMPP bind state).
    pub fn flag<F>(dependency: Dependency, up: F, why: &'static str) -> Probe
    where
        F: Fn() -> bool + Send + Sync + 'static,
    {
        let up = Arc::new(up);
        Probe::new(dependency, move || {
            let up = up.clone();
            async move { if up() { Ok(()) } else { Err(why.to_owned()) } }
        })
    }

    /// PostgreSQL answers `SELECT 1` on `pool` (a pool that cannot hand out a connection within
    /// the probe timeout also cannot serve requests).
    pub fn postgres(pool: sqlx::PgPool) -> Probe {
        Probe::new(Dependency::Postgres, move || {
            let pool = pool.clone();
            async move {
                sqlx::query("SELECT 1")
                    .execute(&pool)
                    .await
                    .map(|_| ())
                    .map_err(|error| error.to_string())
            }
        })
    }

    /// A gRPC server at `url` answers `service` SERVING on `grpc.health.v1`.
    pub fn grpc_health(
        dependency: Dependency,
        url: &str,
        service: &'static str,
    ) -> Result<Probe, String> {
        let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
            .map_err(|error| error.to_string())?
            .connect_timeout(PROBE_TIMEOUT)
            .timeout(PROBE_TIMEOUT)
            .connect_lazy();
        Ok(Probe::new(dependency, move || {
            let channel = channel.clone();
            async move {
                match crate::health_check::status(channel, service).await {
                    Ok(crate::health_check::Wire::Serving) => Ok(()),
                    Ok(status) => Err(format!("{service} is {}", status.as_str_name())),
                    Err(error) => Err(error.to_string()),
                }
            }
        }))
    }

    async fn run(&self) -> Result<(), String> {
        match tokio::time::timeout(PROBE_TIMEOUT, (self.check)()).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
        }
    }
}

/// Asks every probe once, concurrently, and returns what they found.
pub async fn round(probes: &[Probe]) -> (Facts, Vec<(Dependency, String)>) {
    let answers = futures::future::join_all(
        probes
            .iter()
            .map(|probe| async move { (probe.dependency, probe.run().await) }),
    )
    .await;
    let mut facts = Facts::default();
    let mut failures = Vec::new();
    for (dependency, answer) in answers {
        // Two probes of one dependency: reachable only if both say so.
        let earlier = facts.known(dependency).unwrap_or(true);
        facts.set(dependency, answer.is_ok() && earlier);
        if let Err(why) = answer {
            failures.push((dependency, why));
        }
    }
    (facts, failures)
}

/// Runs probe rounds until `draining` is cancelled, calling `report` with each verdict that
/// differs from the one before (and with the first). The last call is always a draining verdict.
pub async fn run<R, Fut>(
    needs: &'static [Need],
    probes: Vec<Probe>,
    draining: CancellationToken,
    mut report: R,
) where
    R: FnMut(Verdict) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut interval = tokio::time::interval(INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<Verdict> = None;
    loop {
        tokio::select! {
            biased;
            () = draining.cancelled() => break,
            _ = interval.tick() => {}
        }
        let (facts, failures) = tokio::select! {
            biased;
            () = draining.cancelled() => break,
            found = round(&probes) => found,
        };
        let verdict = readiness::decide(needs, &facts, Phase::Running);
        if last.as_ref() != Some(&verdict) {
            match &verdict {
                Verdict::Ready => tracing::info!("ready: every dependency answers"),
                Verdict::NotReady { missing, .. } => {
                    let missing: Vec<String> = missing
                        .iter()
                        .map(|need| match need {
                            Need::All(one) => one.to_string(),
                            Need::Either(a, b) => format!("{a} or {b}"),
                        })
                        .collect();
                    let failures: Vec<String> = failures
                        .iter()
                        .map(|(dependency, why)| format!("{dependency}: {why}"))
                        .collect();
                    tracing::warn!(?missing, ?failures, "not ready");
                }
            }
            report(verdict.clone()).await;
            last = Some(verdict);
        }
    }
    report(readiness::decide(needs, &Facts::default(), Phase::Draining)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_hangs_counts_as_unreachable_after_the_timeout() {
        let hung = Probe::new(Dependency::Redis, std::future::pending);
        let started = tokio::time::Instant::now();
        let (facts, failures) = round(&[hung]).await;
        assert!(!facts.reachable(Dependency::Redis));
        assert_eq!(failures.len(), 1);
        assert_eq!(started.elapsed(), PROBE_TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn verdicts_follow_the_dependency_and_end_with_draining() {
        let up = Arc::new(AtomicBool::new(false));
        let flag = up.clone();
        let probe = Probe::flag(
            Dependency::Postgres,
            move || flag.load(Ordering::SeqCst),
            "down",
        );
        let draining = CancellationToken::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let prober = tokio::spawn(run(
            readiness::POLICY,
            vec![probe],
            draining.clone(),
            move |verdict| {
                let _ = tx.send(verdict);
                async {}
            },
        ));
        assert!(!rx.recv().await.unwrap().is_ready(), "down at first");
        up.store(true, Ordering::SeqCst);
        assert_eq!(rx.recv().await.unwrap(), Verdict::Ready);
        draining.cancel();
        assert_eq!(
            rx.recv().await.unwrap(),
            Verdict::NotReady {
                missing: vec![Need::All(Dependency::Postgres)],
                draining: true
            }
        );
        prober.await.unwrap();
        assert!(rx.recv().await.is_none(), "nothing after draining");
    }
}
