//! The scheduler: polls pending domains with back-off and re-checks verified ones, safely with any
//! number of replicas on one database.
//!
//! A round claims due challenges with `SELECT … FOR UPDATE SKIP LOCKED` and marks them with a
//! lease (this replica's id and an expiry) in the same statement, so another replica's concurrent
//! claim skips them, and the lease keeps them skipped after that transaction ends while the DNS
//! checks run. Applying a check releases the lease; a replica that dies leaves leases that
//! simply expire, and then another replica takes the work over.

use std::time::Duration;

use chrono::{DateTime, Utc};
use email2sms_domain::DomainName;
use futures::StreamExt;
use tokio::sync::watch;

use email2sms_runtime::grpc_error::Chain;

use crate::engine::Verifier;
use crate::error::Result;
use crate::model::{CHALLENGE_COLUMNS, ChallengeRow, Trigger};
use crate::settings::VerificationArgs;

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    /// Challenges claimed.
    pub claimed: usize,
    /// Checks applied (claimed minus those deleted or taken over meanwhile).
    pub applied: usize,
    /// State changes among them.
    pub changed: usize,
}

/// One replica's scheduler.
#[derive(Debug, Clone)]
pub struct Scheduler {
    verifier: Verifier,
    replica: String,
    batch_size: u32,
    concurrency: usize,
    lease: chrono::Duration,
    check_limit: Duration,
    poll_interval: Duration,
    check_retention: chrono::Duration,
}

impl Scheduler {
    /// `replica` names this process in leases (host and pid by default).
    pub fn new(
        verifier: Verifier,
        args: &VerificationArgs,
        replica: impl Into<String>,
    ) -> Scheduler {
        Scheduler {
            verifier,
            replica: replica.into(),
            batch_size: args.batch_size,
            concurrency: args.concurrency,
            lease: chrono::Duration::from_std(args.lease).unwrap_or(chrono::Duration::MAX),
            check_limit: args.longest_check(),
            poll_interval: args.poll_interval,
            check_retention: chrono::Duration::from_std(args.check_retention)
                .unwrap_or(chrono::Duration::MAX),
        }
    }

    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Claims the challenges due at `now` (up to the batch size) and checks them, at most
    /// `concurrency` at a time.
    pub async fn run_round(&self, now: DateTime<Utc>) -> Result<Round> {
        let claimed = self.claim(now).await?;
        let mut round = Round {
            claimed: claimed.len(),
            ..Round::default()
        };
        let mut checks = futures::stream::iter(claimed)
            .map(|challenge| self.check_claimed(challenge, now))
            .buffer_unordered(self.concurrency);
        while let Some(result) = checks.next().await {
            match result {
                Ok(Some(changed)) => {
                    round.applied += 1;
                    round.changed += usize::from(changed);
                }
                Ok(None) => {}
                // One challenge failing to save must not stop the others; its lease expires and
                // it is retried.
                Err(error) => {
                    tracing::warn!(error = %Chain(&error), "could not record a scheduled check")
                }
            }
        }
        Ok(round)
    }

    async fn claim(&self, now: DateTime<Utc>) -> Result<Vec<ChallengeRow>> {
        Ok(sqlx::query_as(&format!(
            "UPDATE challenges c SET lease_owner = $1, lease_until = $3 \
             FROM (SELECT id FROM challenges \
                   WHERE state IN ('pending', 'verified') AND next_check_at <= $2 \
                     AND (lease_until IS NULL OR lease_until < $2) \
                   ORDER BY next_check_at LIMIT $4 \
                   FOR UPDATE SKIP LOCKED) due \
             WHERE c.id = due.id RETURNING {}",
            CHALLENGE_COLUMNS
                .split(", ")
                .map(|column| format!("c.{column}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .bind(&self.replica)
        .bind(now)
        .bind(now + self.lease)
        .bind(i64::from(self.batch_size))
        .fetch_all(self.verifier.pool())
        .await?)
    }

    /// `Some(state changed)` when applied.
    async fn check_claimed(
        &self,
        challenge: ChallengeRow,
        now: DateTime<Utc>,
    ) -> Result<Option<bool>> {
        let Ok(domain) = DomainName::parse(&challenge.domain) else {
            // The schema only admits valid names; nothing sensible to ask DNS otherwise.
            return Ok(None);
        };
        let trigger = if challenge.last_checked_at.is_none() {
            Trigger::Created
        } else {
            Trigger::Scheduled
        };
        let lookup = self.verifier.lookup(&domain, self.check_limit).await;
        let before = challenge.state();
        let applied = self
            .verifier
            .apply(&challenge, &lookup, trigger, Some(&self.replica), Some(now))
            .await?;
        Ok(applied.map(|a| a.challenge.state() != before))
    }

    /// Runs rounds until `shutdown` turns true: at once when a round was full or a challenge was
    /// created, otherwise every poll interval.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(replica = %self.replica, "verification scheduler started");
        loop {
            if *shutdown.borrow() {
                break;
            }
            let full = match self.run_round(Utc::now()).await {
                Ok(round) => {
                    if round.claimed > 0 {
                        tracing::debug!(?round, "scheduler round");
                    }
                    round.claimed >= self.batch_size as usize
                }
                Err(error) => {
                    tracing::warn!(error = %Chain(&error), "scheduler round failed; retrying after the poll interval");
                    false
                }
            };
            self.prune_history().await;
            if full {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.poll_interval) => {}
                _ = self.verifier.wake.notified() => {}
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
            }
        }
        tracing::info!(replica = %self.replica, "verification scheduler stopped");
    }

    async fn prune_history(&self) {
        let cutoff = Utc::now() - self.check_retention;
        if let Err(error) = sqlx::query("DELETE FROM checks WHERE checked_at < $1")
            .bind(cutoff)
            .execute(self.verifier.pool())
            .await
        {
            tracing::warn!(%error, "could not prune old checks");
        }
    }
}

/// A replica name unique enough for leases: host name, process id and a random suffix.
pub fn default_replica_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "verification".into());
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    format!("{host}-{}-{suffix}", std::process::id())
}
