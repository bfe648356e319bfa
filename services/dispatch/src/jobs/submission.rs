//! Submission: a claimed job goes to the connector once, and its answer is recorded before the
//! delivery is acked. "submitting" is committed *before* the connector is called (by
//! [`super::admission`]) and "submitted" right after it answers, so a crash between the two leaves
//! the job in "submitting", and its redelivery holds it for review instead of sending it again.
//! Recording the answer is retried for a few seconds ([`Dispatcher::record_with_retries`]) so
//! that a brief database hiccup does not send a job to review; only a job whose own data the
//! database refuses goes to the dead-letter queue, recorded as failed where it can be.
//!
//! Claims are bounded: at most [`DEFAULT_CLAIM_WINDOWS`] connector windows of jobs are in
//! "submitting" at once, so a dispatcher that dies leaves that many jobs to review at most, not
//! its whole prefetch.

use std::future::Future;
use std::sync::Arc;

use email2sms_proto::queue::v1::{FailureKind, SmsJob};
use sqlx::PgPool;
use uuid::Uuid;

use super::admission::{Admit, NewJob};
use super::receipts::apply_receipt;
use super::state::JobState;
use super::store::{
    announce, apply_changes, fail_job_if_queued, insert_new_jobs, lock_message_ids, lock_state,
};
use super::transitions::{
    Admission, JobChange, acceptance_applies, on_accepted, on_submit_failure,
};
use super::{JobError, Outcome, Retry};
use crate::batch::{BatchWrite, BatchWriter, write_in_batches};
use crate::connector::receipt::IdForms;
use crate::connector::{Connector, ConnectorError, DeliveryReceipt, OutgoingSms, ReceiptStatus};
use crate::metrics::{Announced, ReceiptMatch};
use crate::throttle::Throttle;

/// The error code of a job failed because the database refused its data.
const INVALID_DATA: &str = "invalid_data";
/// The error code of a job failed because the consumer gave up on it at the delivery limit.
const DELIVERY_LIMIT: &str = "delivery_limit";

/// Job processing settings.
#[derive(Debug, Clone)]
pub struct DispatchSettings {
    /// Failed submit attempts (transient errors) after which a job fails for good.
    pub max_attempts: u32,
    /// Connector windows of jobs claimed at most: see [`DEFAULT_CLAIM_WINDOWS`].
    pub claim_windows: usize,
}

impl Default for DispatchSettings {
    fn default() -> Self {
        DispatchSettings {
            max_attempts: 8,
            claim_windows: DEFAULT_CLAIM_WINDOWS,
        }
    }
}

/// Sends jobs through one connector and records what happens.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    pool: PgPool,
    connector: Arc<dyn Connector>,
    settings: DispatchSettings,
    admissions: BatchWriter<Admit>,
    acceptances: BatchWriter<RecordAccepted>,
    /// Jobs claimed ("submitting" committed) and not yet answered by the connector, at most: see
    /// [`DEFAULT_CLAIM_WINDOWS`].
    claims: Option<Arc<tokio::sync::Semaphore>>,
}

/// A job is claimed only shortly before a window slot frees up for it: at most this many windows of
/// the connector's jobs are claimed at once (`EMAIL2SMS_DISPATCH_CLAIM_WINDOWS`). A dispatcher that
/// dies leaves every claimed job it had not sent in "submitting", and each of those goes to review
/// instead of being sent (nothing tells it apart from one the SMSC took). Without a bound, that
/// would be the whole prefetch; with two, one window more than is in flight, enough to keep the
/// window full while the next claims commit. More make larger batches, so less database work per
/// job, for more jobs to review after a crash.
pub const DEFAULT_CLAIM_WINDOWS: usize = 2;

/// Why [`Dispatcher::try_process`] did not come to an outcome.
#[derive(Debug)]
enum Failure {
    /// The job store failed; worth trying again.
    Job(JobError),
    /// The database refused the job's own data ([`JobError::is_the_jobs_own_fault`]).
    Refused(Arc<NewJob>, JobError),
}

impl From<JobError> for Failure {
    fn from(error: JobError) -> Failure {
        Failure::Job(error)
    }
}

/// A job that cannot be processed at all (poison): it goes to the dead-letter queue.
fn invalid(reason: impl Into<String>) -> Outcome {
    Outcome::Permanent(format!("invalid job: {}", reason.into()))
}

/// A connector's acceptance of a job, to record.
#[derive(Debug)]
struct Accepted {
    job_id: Uuid,
    provider_message_ids: Vec<String>,
}

/// Records the connector's acceptance of jobs: one part row per provider id, the job moved to
/// submitted, and receipts that arrived before it applied.
struct RecordAccepted {
    pool: PgPool,
    connector: &'static str,
    /// How the connector's receipts name the ids recorded here.
    id_forms: IdForms,
}

impl BatchWrite for RecordAccepted {
    type Item = Accepted;
    type Answer = ();
    type Error = JobError;

    async fn write(&self, accepted: &[Accepted]) -> Result<Vec<()>, JobError> {
        let connector = self.connector;
        let mut sorted: Vec<&Accepted> = accepted.iter().collect();
        sorted.sort_by_key(|a| a.job_id);
        sorted.dedup_by_key(|a| a.job_id);
        let ids: Vec<Uuid> = sorted.iter().map(|a| a.job_id).collect();
        let mut tx = self.pool.begin().await?;
        // Provider ids first, job rows second: the order receipts take them in too.
        let all_provider_ids: Vec<&str> = sorted
            .iter()
            .flat_map(|a| a.provider_message_ids.iter().map(String::as_str))
            .collect();
        lock_message_ids(&mut tx, connector, &all_provider_ids).await?;
        let states: Vec<(Uuid, String, bool)> = sqlx::query_as(
            "SELECT job_id, state, provider_message_id IS NULL FROM sms_jobs
             WHERE job_id = ANY($1) ORDER BY job_id FOR UPDATE",
        )
        .persistent(false)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        let states: std::collections::HashMap<Uuid, (JobState, bool)> = states
            .into_iter()
            .map(|(id, state, no_id)| {
                let state = JobState::parse(&state).unwrap_or(JobState::Submitting);
                (id, (state, no_id))
            })
            .collect();
        let open: Vec<(&Accepted, JobState)> = sorted
            .into_iter()
            .filter_map(|a| {
                let (from, no_id) = *states.get(&a.job_id)?;
                acceptance_applies(from, !no_id).then_some((a, from))
            })
            .collect();
        let provider_ids: Vec<&str> = open
            .iter()
            .flat_map(|(a, _)| a.provider_message_ids.iter().map(String::as_str))
            .collect();

        let mut part_jobs = Vec::new();
        let mut part_numbers = Vec::new();
        let mut part_ids = Vec::new();
        for (a, _) in &open {
            for (index, id) in a.provider_message_ids.iter().enumerate() {
                part_jobs.push(a.job_id);
                part_numbers.push(i32::try_from(index + 1).unwrap_or(i32::MAX));
                part_ids.push(id.as_str());
            }
        }
        sqlx::query(
            "INSERT INTO sms_job_parts (job_id, part_number, connector, provider_message_id)
             SELECT job_id, part_number, $1, provider_message_id
             FROM UNNEST($2::uuid[], $3::int4[], $4::text[])
                  AS p(job_id, part_number, provider_message_id)
             ON CONFLICT DO NOTHING",
        )
        .bind(connector)
        .bind(&part_jobs)
        .bind(&part_numbers)
        .bind(&part_ids)
        .execute(&mut *tx)
        .await?;
        let changes: Vec<JobChange> = open
            .iter()
            .map(|(a, from)| on_accepted(a.job_id, *from, connector, &a.provider_message_ids))
            .collect();
        let mut announced = apply_changes(&mut tx, &changes).await?;

        // Receipts that beat the submit response: matched now, under the same locks. An id that
        // is itself one of the batch's provider ids means that one, whatever other form it has.
        let mut candidates: std::collections::HashMap<String, &str> = provider_ids
            .iter()
            .flat_map(|id| {
                self.id_forms
                    .of(id)
                    .into_iter()
                    .map(move |candidate| (candidate, *id))
            })
            .collect();
        candidates.extend(provider_ids.iter().map(|id| ((*id).to_owned(), *id)));
        let mut waiting: Vec<(i64, String, String, Option<String>, String)> = sqlx::query_as(
            "DELETE FROM unmatched_delivery_receipts
             WHERE connector = $1 AND provider_message_id = ANY($2)
             RETURNING id, provider_message_id, status, error_code, raw",
        )
        .persistent(false)
        .bind(connector)
        .bind(candidates.keys().collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await?;
        waiting.sort_by_key(|row| row.0);
        let mut matched_late = 0;
        for (_, received_as, status, error_code, raw) in waiting {
            let (Some(status), Some(part)) = (
                ReceiptStatus::from_db(&status),
                candidates.get(&received_as),
            ) else {
                continue;
            };
            let receipt = DeliveryReceipt {
                connector: connector.to_owned(),
                provider_message_id: received_as,
                status,
                error_code,
                raw,
                id_forms: self.id_forms,
            };
            announced.add(apply_receipt(&mut tx, &receipt, part).await?);
            matched_late += 1;
        }
        tx.commit().await?;
        announced.committed();
        for _ in 0..matched_late {
            crate::metrics::metrics().receipt(ReceiptMatch::MatchedLate, connector);
        }
        Ok(accepted.iter().map(|_| ()).collect())
    }
}

impl Dispatcher {
    /// Must be called inside a Tokio runtime: it starts the batch writers.
    pub fn new(pool: PgPool, connector: Arc<dyn Connector>, settings: DispatchSettings) -> Self {
        let throttle = Arc::new(Throttle::unlimited());
        Dispatcher {
            admissions: write_in_batches(Admit {
                pool: pool.clone(),
                throttle: throttle.clone(),
                connector: connector.name(),
            }),
            acceptances: write_in_batches(RecordAccepted {
                pool: pool.clone(),
                connector: connector.name(),
                id_forms: connector.receipt_id_forms(),
            }),
            claims: connector.window().map(|window| {
                Arc::new(tokio::sync::Semaphore::new(
                    window.max(1) * settings.claim_windows.max(1),
                ))
            }),
            pool,
            connector,
            settings,
        }
    }

    /// Applies the shared per-user, per-company and per-connector send rates.
    pub fn with_throttle(mut self, throttle: Arc<Throttle>) -> Self {
        self.admissions = write_in_batches(Admit {
            pool: self.pool.clone(),
            throttle,
            connector: self.connector.name(),
        });
        self
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn connector(&self) -> &Arc<dyn Connector> {
        &self.connector
    }

    /// Processes one job from the queue. Safe to call any number of times with the same job: it is
    /// submitted at most once. Database trouble gives `RetryLater` (nothing was sent, or what was
    /// sent is recorded before this returns).
    pub async fn process_job(&self, job: SmsJob) -> Outcome {
        match self.try_process(job).await {
            Ok(outcome) => outcome,
            Err(Failure::Refused(job, error)) => {
                let job =
                    Arc::try_unwrap(job).map_or_else(|shared| shared.job.clone(), |job| job.job);
                self.refuse(job, &error).await
            }
            Err(Failure::Job(error)) => {
                tracing::warn!(%error, "job processing hit the database; retrying later");
                Outcome::RetryLater(Retry {
                    throttled: false,
                    attempts: 0,
                    reason: error.to_string(),
                })
            }
        }
    }

    async fn try_process(&self, job: SmsJob) -> Result<Outcome, Failure> {
        // Shared with the admission batch: kept (not copied) for recording the job as failed
        // should its data be what the database refuses.
        let job = match NewJob::validate(job) {
            Ok(job) => Arc::new(job),
            Err(reason) => return Ok(invalid(reason)),
        };
        let job_id = job.job_id;
        let sms = OutgoingSms {
            job_id,
            recipient: job.job.recipient.clone(),
            sender_id: Some(job.job.sender_id.clone()).filter(|s| !s.is_empty()),
            text: job.job.text.clone(),
            valid_until: None,
        };
        let claim = match &self.claims {
            Some(claims) => Some(
                claims
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| JobError::Stopping)?,
            ),
            None => None,
        };
        // Recorded, and claimed ("submitting" committed) before anything is sent.
        let (attempts, valid_until) = match self.admissions.call(job.clone()).await {
            None => return Err(JobError::Stopping.into()),
            Some(Err(error)) if error.is_the_jobs_own_fault() => {
                return Err(Failure::Refused(job, error));
            }
            Some(admission) => match admission? {
                Admission::Settled(outcome) => return Ok(outcome),
                Admission::Send {
                    attempts,
                    valid_until,
                } => (attempts, valid_until),
            },
        };
        let sms = OutgoingSms { valid_until, ..sms };
        let submitted = self.connector.submit(&sms).await;
        // Answered: whatever happens now, this job is no longer one that might not have been sent.
        drop(claim);
        match submitted {
            // If recording fails even after the retries, the job stays in "submitting"; its
            // redelivery then parks it for review instead of sending it again.
            Ok(submitted) => {
                let ids = submitted.provider_message_ids;
                self.record_with_retries(|| async {
                    let accepted = Accepted {
                        job_id,
                        provider_message_ids: ids.clone(),
                    };
                    self.acceptances
                        .call(accepted)
                        .await
                        .unwrap_or(Err(JobError::Stopping))
                })
                .await?;
                Ok(Outcome::Done)
            }
            // A failure to record after the connector answered is retried, whatever it is: the
            // job is in "submitting", so its redelivery holds it for review (never resent).
            Err(error) => Ok(self
                .record_with_retries(|| self.record_failure(job_id, attempts, &error))
                .await?),
        }
    }

    /// A job whose own data the database refused to admit: it goes to the dead-letter queue with
    /// the reason, and is recorded as failed with that reason, where the row can be written with
    /// the characters PostgreSQL cannot store (NUL) replaced. If even that row is refused, the
    /// dead-letter queue is the only record.
    async fn refuse(&self, job: SmsJob, error: &JobError) -> Outcome {
        let reason = format!("the job's data cannot be stored: {error}");
        match self.record_refused(job, &reason).await {
            Ok(()) => {}
            Err(record_error) => {
                tracing::warn!(error = %record_error, "cannot record a refused job as failed");
            }
        }
        Outcome::Permanent(reason)
    }

    async fn record_refused(&self, job: SmsJob, reason: &str) -> Result<(), JobError> {
        let clean = |text: &mut String| {
            if text.contains('\0') {
                *text = text.replace('\0', "\u{fffd}");
            }
        };
        let mut job = job;
        clean(&mut job.text);
        clean(&mut job.sender_id);
        clean(&mut job.recipient);
        clean(&mut job.company_region);
        if let Some(origin) = job.origin.as_mut() {
            clean(&mut origin.from_address);
            clean(&mut origin.message_id);
        }
        let Ok(job) = NewJob::validate(job) else {
            return Ok(());
        };
        let change = JobChange::new(job.job_id, None, JobState::Failed).failure(
            FailureKind::Permanent,
            Some(INVALID_DATA),
            reason,
        );
        let mut tx = self.pool.begin().await?;
        let created = [(&job, change)];
        let inserted = insert_new_jobs(&mut tx, &created).await?;
        let announced = if let Some(row) = inserted.first() {
            announce(&mut tx, &[(&created[0].1, row)]).await?
        } else {
            // Known already (a write of its update was refused).
            fail_job_if_queued(
                &mut tx,
                job.job_id,
                FailureKind::Permanent,
                INVALID_DATA,
                reason,
            )
            .await?
        };
        tx.commit().await?;
        announced.committed();
        Ok(())
    }

    /// Records that the consumer gave up on a job at the delivery limit: a job waiting in
    /// "queued" becomes failed with `reason`. Anything else is left as it is (a job in
    /// "submitting" may have reached the SMSC, and its review decides). Best effort: when the
    /// database is what kept failing, the dead-letter queue is the record.
    pub async fn give_up(&self, job_id: &str, reason: &str) {
        let Ok(job_id) = Uuid::parse_str(job_id) else {
            return;
        };
        let recorded = async {
            let mut tx = self.pool.begin().await?;
            let announced = fail_job_if_queued(
                &mut tx,
                job_id,
                FailureKind::Transient,
                DELIVERY_LIMIT,
                reason,
            )
            .await?;
            tx.commit().await?;
            announced.committed();
            Ok::<_, JobError>(())
        };
        if let Err(error) = recorded.await {
            tracing::warn!(%job_id, %error, "cannot record a job given up at the delivery limit");
        }
    }

    /// Recording after the connector answered must not be lost to a brief database hiccup: the job
    /// would stay in "submitting" and end up in review. Retries for a few seconds.
    async fn record_with_retries<'a, T, F, Fut>(&'a self, mut record: F) -> Result<T, JobError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, JobError>> + 'a,
    {
        let mut pause = std::time::Duration::from_millis(100);
        let mut tries = 0;
        loop {
            match record().await {
                Ok(value) => return Ok(value),
                Err(error) if tries >= 6 => return Err(error),
                Err(error) => {
                    tracing::warn!(%error, "recording a submit result failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    tries += 1;
                }
            }
        }
    }

    /// Records a refused or failed submit (rare enough to take a transaction of its own).
    async fn record_failure(
        &self,
        job_id: Uuid,
        attempts_before: u32,
        error: &ConnectorError,
    ) -> Result<Outcome, JobError> {
        let mut tx = self.pool.begin().await?;
        // The job was admitted, so its row is there.
        let from = lock_state(&mut tx, job_id, JobState::Submitting)
            .await?
            .ok_or(JobError::Database(sqlx::Error::RowNotFound))?;
        let (change, outcome) = on_submit_failure(
            job_id,
            from,
            attempts_before,
            self.settings.max_attempts,
            error,
        );
        let announced = match change {
            Some(change) => apply_changes(&mut tx, &[change]).await?,
            None => Announced::default(),
        };
        tx.commit().await?;
        announced.committed();
        Ok(outcome)
    }
}
