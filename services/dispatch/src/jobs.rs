//! The job state machine: every SMS job is recorded in `sms_jobs`, keyed by the job id ingest
//! minted, and moves queued → submitting → submitted → delivered | failed | expired. Every change
//! writes an `sms_job_events` row and an `sms.status.changed` outbox row in the same transaction.
//!
//! Exactly once towards the SMSC: the "submitting" state is committed *before* the connector is
//! called and "submitted" right after it answers. A job found in "submitting" when it is delivered
//! again means a dispatcher died between the two (or the broker redelivered a job still being
//! sent): the SMS may or may not have reached the SMSC. It is moved to `needs_review` and **not**
//! resent. SMPP 3.4 offers no reliable way to ask the SMSC about a message we have no id for
//! (query_sm needs the id), so an operator decides; a later delivery receipt for it, or the first
//! dispatcher recording its submit, still moves it on.

use std::sync::Arc;
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use email2sms_proto::prost::Message;
use email2sms_proto::queue::v1::{FailureKind, SmsJob, SmsState, SmsStatusChanged};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::connector::receipt::message_id_candidates;
use crate::connector::{
    Connector, ConnectorError, DeliveryReceipt, ErrorKind, OutgoingSms, ReceiptStatus,
};
use crate::throttle::{Decision, Throttle};

/// The outbox routing key of status events.
pub const STATUS_CHANGED: &str = "sms.status.changed";

/// What the queue consumer does with the delivery after [`Dispatcher::process_job`]:
///
/// * `Done` → ack.
/// * `RetryLater(retry)` → publish the same body (with publisher confirm) to the retry exchange
///   with the tier `topology.retry_delay_for(retry.attempts)`, then ack; the TTL queue
///   dead-letters it back to the job queue. `throttled` attempts do not count, so they stay in the
///   shortest tier.
/// * `Permanent(reason)` → dead-letter it with `reason` in a header (publish to the dead exchange,
///   then ack; or reject when the reason header is not needed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Ack: the job was submitted now, or earlier, or is final, or is parked for review.
    Done,
    /// Send it through a retry tier and try again later.
    RetryLater(Retry),
    /// Dead-letter it with this reason: it will never succeed.
    Permanent(String),
}

/// Why a job is retried later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// True when the provider asked to slow down: the attempt did not count as a failure.
    pub throttled: bool,
    /// Submit attempts so far (the consumer picks the retry tier from it).
    pub attempts: u32,
    pub reason: String,
}

/// Job processing settings.
#[derive(Debug, Clone)]
pub struct DispatchSettings {
    /// Failed submit attempts (transient errors) after which a job fails for good.
    pub max_attempts: u32,
}

impl Default for DispatchSettings {
    fn default() -> Self {
        DispatchSettings { max_attempts: 8 }
    }
}

/// Sends jobs through one connector and records what happens.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    pool: PgPool,
    connector: Arc<dyn Connector>,
    settings: DispatchSettings,
    throttle: Arc<Throttle>,
}

/// The job states as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Queued,
    Submitting,
    Submitted,
    Delivered,
    Failed,
    Expired,
    NeedsReview,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Submitting => "submitting",
            JobState::Submitted => "submitted",
            JobState::Delivered => "delivered",
            JobState::Failed => "failed",
            JobState::Expired => "expired",
            JobState::NeedsReview => "needs_review",
        }
    }

    pub fn parse(text: &str) -> Option<JobState> {
        Some(match text {
            "queued" => JobState::Queued,
            "submitting" => JobState::Submitting,
            "submitted" => JobState::Submitted,
            "delivered" => JobState::Delivered,
            "failed" => JobState::Failed,
            "expired" => JobState::Expired,
            "needs_review" => JobState::NeedsReview,
            _ => return None,
        })
    }

    /// The public state; a job under review is shown as SUBMITTING with `needs_review` set, since
    /// that is the last thing known about it.
    pub fn proto(self) -> SmsState {
        match self {
            JobState::Queued => SmsState::Queued,
            JobState::Submitting | JobState::NeedsReview => SmsState::Submitting,
            JobState::Submitted => SmsState::Submitted,
            JobState::Delivered => SmsState::Delivered,
            JobState::Failed => SmsState::Failed,
            JobState::Expired => SmsState::Expired,
        }
    }

    fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Delivered | JobState::Failed | JobState::Expired
        )
    }
}

/// A state change to record.
#[derive(Debug, Default)]
struct Change<'a> {
    detail: String,
    failure: Option<(FailureKind, &'a str)>,
}

/// Errors of the job store (all database errors; the caller retries).
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// A job that cannot be processed at all (poison): it goes to the dead-letter queue.
fn invalid(reason: impl Into<String>) -> Outcome {
    Outcome::Permanent(format!("invalid job: {}", reason.into()))
}

fn timestamp_to_chrono(ts: &email2sms_proto::prost_types::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).ok()?)
}

fn failure_kind_str(kind: FailureKind) -> Option<&'static str> {
    match kind {
        FailureKind::Unspecified => None,
        FailureKind::Transient => Some("transient"),
        FailureKind::Permanent => Some("permanent"),
        FailureKind::Throttled => Some("throttled"),
    }
}

impl Dispatcher {
    pub fn new(pool: PgPool, connector: Arc<dyn Connector>, settings: DispatchSettings) -> Self {
        Dispatcher {
            pool,
            connector,
            settings,
            throttle: Arc::new(Throttle::unlimited()),
        }
    }

    /// Applies the shared per-user, per-company and per-connector send rates.
    pub fn with_throttle(mut self, throttle: Arc<Throttle>) -> Self {
        self.throttle = throttle;
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
            Err(error) => {
                tracing::warn!(%error, "job processing hit the database; retrying later");
                Outcome::RetryLater(Retry {
                    throttled: false,
                    attempts: 0,
                    reason: error.to_string(),
                })
            }
        }
    }

    async fn try_process(&self, job: SmsJob) -> Result<Outcome, JobError> {
        let Ok(job_id) = Uuid::parse_str(&job.job_id) else {
            return Ok(invalid("job_id is not a UUID"));
        };
        if let Err(reason) = self.record_queued(job_id, &job).await? {
            return Ok(invalid(reason));
        }

        // Claim the job: only a queued job is sent, and "submitting" is committed before sending.
        let mut tx = self.pool.begin().await?;
        let row: (String, i32, Option<DateTime<Utc>>) = sqlx::query_as(
            "SELECT state, attempts, valid_until FROM sms_jobs WHERE job_id = $1 FOR UPDATE",
        )
        .bind(job_id)
        .fetch_one(&mut *tx)
        .await?;
        let state = JobState::parse(&row.0).unwrap_or(JobState::NeedsReview);
        let attempts = u32::try_from(row.1).unwrap_or(0);
        match state {
            JobState::Queued => {}
            JobState::Submitting => {
                transition(
                    &mut tx,
                    job_id,
                    JobState::Submitting,
                    JobState::NeedsReview,
                    Change {
                        detail: "found in submitting when delivered again: it may already have \
                                 reached the SMSC, so it is not resent"
                            .into(),
                        failure: None,
                    },
                )
                .await?;
                tx.commit().await?;
                return Ok(Outcome::Done);
            }
            // Already sent, final, or waiting for an operator: never send again.
            JobState::Submitted
            | JobState::Delivered
            | JobState::Failed
            | JobState::Expired
            | JobState::NeedsReview => {
                tx.commit().await?;
                return Ok(Outcome::Done);
            }
        }
        if row.2.is_some_and(|until| until <= Utc::now()) {
            transition(
                &mut tx,
                job_id,
                JobState::Queued,
                JobState::Expired,
                Change {
                    detail: "its validity period ended before it could be sent".into(),
                    failure: Some((FailureKind::Permanent, "expired")),
                },
            )
            .await?;
            tx.commit().await?;
            return Ok(Outcome::Permanent("validity period ended".into()));
        }
        // Checked only now, for a job that will really be sent: a redelivered duplicate must not
        // use up its user's tokens.
        if let Decision::Wait { scope, wait } = self
            .throttle
            .acquire(
                &job.forwarding_user_id,
                &job.company_id,
                self.connector.name(),
            )
            .await
        {
            let reason = format!(
                "over the {} send rate; next token in {} ms",
                scope.as_str(),
                wait.as_millis()
            );
            // Stays queued: a wait, not a failed attempt (attempts unchanged).
            sqlx::query(
                "UPDATE sms_jobs SET failure_kind = 'throttled', last_error = $2,
                                     updated_at = now()
                 WHERE job_id = $1",
            )
            .bind(job_id)
            .bind(&reason)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(Outcome::RetryLater(Retry {
                throttled: true,
                attempts,
                reason,
            }));
        }
        sqlx::query("UPDATE sms_jobs SET connector = $2 WHERE job_id = $1")
            .bind(job_id)
            .bind(self.connector.name())
            .execute(&mut *tx)
            .await?;
        transition(
            &mut tx,
            job_id,
            JobState::Queued,
            JobState::Submitting,
            Change {
                detail: format!(
                    "handing to the {} connector (attempt {})",
                    self.connector.name(),
                    attempts + 1
                ),
                failure: None,
            },
        )
        .await?;
        tx.commit().await?;

        let sms = OutgoingSms {
            job_id,
            recipient: job.recipient.clone(),
            sender_id: Some(job.sender_id.clone()).filter(|s| !s.is_empty()),
            text: job.text.clone(),
            valid_until: row.2,
        };
        let result = self.connector.submit(&sms).await;
        match result {
            // If recording fails even after the retries, the job stays in "submitting"; its
            // redelivery then parks it for review instead of sending it again.
            Ok(submitted) => {
                self.record_with_retries(|| {
                    self.record_submitted(job_id, &submitted.provider_message_ids)
                })
                .await?;
                Ok(Outcome::Done)
            }
            Err(error) => {
                self.record_with_retries(|| self.record_failure(job_id, attempts, &error))
                    .await
            }
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

    /// Inserts the job as queued unless it exists. Err(reason) when the payload is unusable.
    async fn record_queued(
        &self,
        job_id: Uuid,
        job: &SmsJob,
    ) -> Result<Result<(), String>, JobError> {
        let company_id = match Uuid::parse_str(&job.company_id) {
            Ok(id) => id,
            Err(_) => return Ok(Err("company_id is not a UUID".into())),
        };
        let forwarding_user_id = match Uuid::parse_str(&job.forwarding_user_id) {
            Ok(id) => id,
            Err(_) => return Ok(Err("forwarding_user_id is not a UUID".into())),
        };
        if job.text.is_empty() {
            return Ok(Err("the text is empty".into()));
        }
        let recipient_ok = job.recipient.strip_prefix('+').is_some_and(|digits| {
            (6..=15).contains(&digits.len())
                && digits.bytes().all(|b| b.is_ascii_digit())
                && !digits.starts_with('0')
        });
        if !recipient_ok {
            return Ok(Err(format!("recipient {:?} is not E.164", job.recipient)));
        }
        if job.sender_id.chars().count() > 20 {
            return Ok(Err("sender_id is longer than 20 characters".into()));
        }
        // The text decides encoding and parts; ingest's figures are informational.
        let sized = email2sms_sms::encode(&job.text);
        if sized.segments > email2sms_sms::MAX_PARTS {
            return Ok(Err(format!("the text needs {} parts", sized.segments)));
        }
        let origin = job.origin.as_ref();
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO sms_jobs (job_id, company_id, forwarding_user_id, sender_id, sender_email,
                                   email_message_id, recipient, text, encoding, segments,
                                   valid_until, truncated, origin, job_created_at)
             VALUES ($1, $2, $3, NULLIF($4, ''), NULLIF($5, ''), NULLIF($6, ''), $7, $8, $9, $10,
                     $11, $12, $13, $14)
             ON CONFLICT (job_id) DO NOTHING",
        )
        .bind(job_id)
        .bind(company_id)
        .bind(forwarding_user_id)
        .bind(&job.sender_id)
        .bind(origin.map(|o| o.from_address.as_str()).unwrap_or(""))
        .bind(origin.map(|o| o.message_id.as_str()).unwrap_or(""))
        .bind(&job.recipient)
        .bind(&job.text)
        .bind(sized.encoding.as_str())
        .bind(i32::try_from(sized.segments).unwrap_or(i32::MAX))
        .bind(job.expire_time.as_ref().and_then(timestamp_to_chrono))
        .bind(job.truncated)
        .bind(origin.map(|o| o.encode_to_vec()))
        .bind(job.create_time.as_ref().and_then(timestamp_to_chrono))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 1 {
            record_change(
                &mut tx,
                job_id,
                None,
                JobState::Queued,
                Change {
                    detail: "received from the queue".into(),
                    failure: None,
                },
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// Records the accepted submit with one part row per provider id, and applies receipts that
    /// arrived before it.
    async fn record_submitted(&self, job_id: Uuid, ids: &[String]) -> Result<(), JobError> {
        let connector = self.connector.name();
        let mut tx = self.pool.begin().await?;
        let state: String =
            sqlx::query_scalar("SELECT state FROM sms_jobs WHERE job_id = $1 FOR UPDATE")
                .bind(job_id)
                .fetch_one(&mut *tx)
                .await?;
        let from = JobState::parse(&state).unwrap_or(JobState::Submitting);
        // Another delivery may have moved it to review meanwhile; we know it was sent, so record it.
        if !matches!(from, JobState::Submitting | JobState::NeedsReview) {
            tx.commit().await?;
            return Ok(());
        }
        lock_message_ids(&mut tx, connector, ids).await?;
        for (index, id) in ids.iter().enumerate() {
            sqlx::query(
                "INSERT INTO sms_job_parts (job_id, part_number, connector, provider_message_id)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING",
            )
            .bind(job_id)
            .bind(i32::try_from(index + 1).unwrap_or(i32::MAX))
            .bind(connector)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "UPDATE sms_jobs SET provider_message_id = $2, submitted_at = now(),
                                 attempts = attempts + 1, last_error = NULL, error_code = NULL,
                                 failure_kind = NULL
             WHERE job_id = $1",
        )
        .bind(job_id)
        .bind(ids.first())
        .execute(&mut *tx)
        .await?;
        transition(
            &mut tx,
            job_id,
            from,
            JobState::Submitted,
            Change {
                detail: format!(
                    "accepted by the {connector} connector, message id {}",
                    ids.join(", ")
                ),
                failure: None,
            },
        )
        .await?;
        // Receipts that beat the submit response: matched now, under the same locks.
        for id in ids {
            let candidates = message_id_candidates(id);
            let waiting: Vec<(i64, String, Option<String>, String)> = sqlx::query_as(
                "DELETE FROM unmatched_delivery_receipts
                 WHERE connector = $1 AND provider_message_id = ANY($2)
                 RETURNING id, status, error_code, raw",
            )
            .bind(connector)
            .bind(&candidates)
            .fetch_all(&mut *tx)
            .await?;
            let mut waiting = waiting;
            waiting.sort_by_key(|row| row.0);
            for (_, status, error_code, raw) in waiting {
                if let Some(status) = ReceiptStatus::from_db(&status) {
                    apply_receipt(&mut tx, connector, id, status, error_code.as_deref(), &raw)
                        .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn record_failure(
        &self,
        job_id: Uuid,
        attempts_before: u32,
        error: &ConnectorError,
    ) -> Result<Outcome, JobError> {
        let mut tx = self.pool.begin().await?;
        let state: String =
            sqlx::query_scalar("SELECT state FROM sms_jobs WHERE job_id = $1 FOR UPDATE")
                .bind(job_id)
                .fetch_one(&mut *tx)
                .await?;
        let from = JobState::parse(&state).unwrap_or(JobState::Submitting);
        if from != JobState::Submitting {
            // Moved on by someone else (review); leave it.
            tx.commit().await?;
            return Ok(Outcome::Done);
        }
        let code = error.code.as_str();
        let (kind, to, counts) = if error.maybe_submitted {
            (FailureKind::Transient, JobState::NeedsReview, true)
        } else {
            match error.kind {
                ErrorKind::Throttled => (FailureKind::Throttled, JobState::Queued, false),
                ErrorKind::Transient if attempts_before + 1 >= self.settings.max_attempts => {
                    (FailureKind::Transient, JobState::Failed, true)
                }
                ErrorKind::Transient => (FailureKind::Transient, JobState::Queued, true),
                ErrorKind::Permanent => (FailureKind::Permanent, JobState::Failed, true),
            }
        };
        let attempts = attempts_before + u32::from(counts);
        sqlx::query(
            "UPDATE sms_jobs SET attempts = $2, error_code = NULLIF($3, ''), last_error = $4,
                                 failure_kind = $5
             WHERE job_id = $1",
        )
        .bind(job_id)
        .bind(i32::try_from(attempts).unwrap_or(i32::MAX))
        .bind(code)
        .bind(&error.message)
        .bind(failure_kind_str(kind))
        .execute(&mut *tx)
        .await?;
        let detail = if to == JobState::Failed && error.kind == ErrorKind::Transient {
            format!("gave up after {attempts} attempts: {error}")
        } else if to == JobState::NeedsReview {
            format!("outcome unknown, not resent: {error}")
        } else {
            error.to_string()
        };
        transition(
            &mut tx,
            job_id,
            from,
            to,
            Change {
                detail: detail.clone(),
                failure: Some((kind, code)),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(match to {
            JobState::Queued => Outcome::RetryLater(Retry {
                throttled: !counts,
                attempts,
                reason: detail,
            }),
            JobState::Failed => Outcome::Permanent(detail),
            _ => Outcome::Done,
        })
    }
}

/// Serialises receipt matching and part recording on a provider id (every hex/decimal form of it),
/// as the schema's comment on `unmatched_delivery_receipts` requires; locks are taken in sorted
/// order, so two transactions never deadlock.
async fn lock_message_ids(
    conn: &mut PgConnection,
    connector: &str,
    ids: &[String],
) -> Result<(), JobError> {
    let mut candidates: Vec<String> = ids
        .iter()
        .flat_map(|id| message_id_candidates(id))
        .collect();
    candidates.sort();
    candidates.dedup();
    for candidate in candidates {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1 || ' ' || $2))")
            .bind(connector)
            .bind(&candidate)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Records a delivery receipt: applied to its part (and the job) when the part is known, else kept
/// in `unmatched_delivery_receipts` until the submit response is recorded.
pub async fn record_receipt(pool: &PgPool, receipt: &DeliveryReceipt) -> Result<(), JobError> {
    let mut tx = pool.begin().await?;
    lock_message_ids(
        &mut tx,
        &receipt.connector,
        std::slice::from_ref(&receipt.provider_message_id),
    )
    .await?;
    let candidates = message_id_candidates(&receipt.provider_message_id);
    let part: Option<String> = sqlx::query_scalar(
        "SELECT provider_message_id FROM sms_job_parts
         WHERE connector = $1 AND provider_message_id = ANY($2) LIMIT 1",
    )
    .bind(&receipt.connector)
    .bind(&candidates)
    .fetch_optional(&mut *tx)
    .await?;
    match part {
        Some(id) => {
            apply_receipt(
                &mut tx,
                &receipt.connector,
                &id,
                receipt.status,
                receipt.error_code.as_deref(),
                &receipt.raw,
            )
            .await?;
        }
        None => {
            sqlx::query(
                "INSERT INTO unmatched_delivery_receipts
                     (connector, provider_message_id, status, error_code, raw)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&receipt.connector)
            .bind(&receipt.provider_message_id)
            .bind(receipt.status.as_str())
            .bind(&receipt.error_code)
            .bind(&receipt.raw)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Applies a receipt to the part with `provider_message_id` and moves the job to its aggregate
/// state once every part has a final receipt: delivered when all were delivered, expired when the
/// failures are all expiries, failed otherwise.
async fn apply_receipt(
    tx: &mut Transaction<'_, Postgres>,
    connector: &str,
    provider_message_id: &str,
    status: ReceiptStatus,
    error_code: Option<&str>,
    raw: &str,
) -> Result<(), JobError> {
    let job_id: Option<Uuid> = sqlx::query_scalar(
        "UPDATE sms_job_parts SET receipt_status = $3, receipt_error_code = $4, receipt_at = now()
         WHERE connector = $1 AND provider_message_id = $2
           AND (receipt_status IS NULL
                OR receipt_status NOT IN ('delivered', 'expired', 'deleted', 'undeliverable', 'rejected', 'skipped'))
         RETURNING job_id",
    )
    .bind(connector)
    .bind(provider_message_id)
    .bind(status.as_str())
    .bind(error_code)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(job_id) = job_id else {
        // A duplicate receipt for a part already final: nothing changes.
        return Ok(());
    };
    let state: String =
        sqlx::query_scalar("SELECT state FROM sms_jobs WHERE job_id = $1 FOR UPDATE")
            .bind(job_id)
            .fetch_one(&mut **tx)
            .await?;
    let from = JobState::parse(&state).unwrap_or(JobState::Submitted);
    if !matches!(from, JobState::Submitted | JobState::NeedsReview) {
        return Ok(());
    }
    let statuses: Vec<Option<String>> =
        sqlx::query_scalar("SELECT receipt_status FROM sms_job_parts WHERE job_id = $1")
            .bind(job_id)
            .fetch_all(&mut **tx)
            .await?;
    let finals: Vec<ReceiptStatus> = statuses
        .iter()
        .filter_map(|s| s.as_deref().and_then(ReceiptStatus::from_db))
        .filter(|s| s.is_final())
        .collect();
    if finals.len() < statuses.len() {
        return Ok(());
    }
    let to = if finals.iter().all(|s| *s == ReceiptStatus::Delivered) {
        JobState::Delivered
    } else if finals
        .iter()
        .all(|s| matches!(s, ReceiptStatus::Delivered | ReceiptStatus::Expired))
    {
        JobState::Expired
    } else {
        JobState::Failed
    };
    if from == JobState::NeedsReview {
        // The receipt proves it was submitted.
        sqlx::query(
            "UPDATE sms_jobs SET submitted_at = coalesce(submitted_at, now()) WHERE job_id = $1",
        )
        .bind(job_id)
        .execute(&mut **tx)
        .await?;
    }
    let failure =
        (to != JobState::Delivered).then_some((FailureKind::Permanent, error_code.unwrap_or("")));
    if to != JobState::Delivered {
        sqlx::query(
            "UPDATE sms_jobs SET failure_kind = 'permanent', error_code = $2, last_error = $3
             WHERE job_id = $1",
        )
        .bind(job_id)
        .bind(error_code)
        .bind(format!("delivery receipt: {}", status.as_str()))
        .execute(&mut **tx)
        .await?;
    }
    transition(
        tx,
        job_id,
        from,
        to,
        Change {
            detail: format!("delivery receipt: {raw}"),
            failure,
        },
    )
    .await
}

/// Moves a job from `from` to `to` and records the change.
async fn transition(
    conn: &mut PgConnection,
    job_id: Uuid,
    from: JobState,
    to: JobState,
    change: Change<'_>,
) -> Result<(), JobError> {
    sqlx::query(
        "UPDATE sms_jobs SET state = $2, updated_at = now(),
                             final_at = CASE WHEN $3 THEN now() ELSE final_at END
         WHERE job_id = $1",
    )
    .bind(job_id)
    .bind(to.as_str())
    .bind(to.is_final())
    .execute(&mut *conn)
    .await?;
    record_change(conn, job_id, Some(from), to, change).await
}

/// Writes the event row and the `sms.status.changed` outbox row of a state change.
async fn record_change(
    conn: &mut PgConnection,
    job_id: Uuid,
    from: Option<JobState>,
    to: JobState,
    change: Change<'_>,
) -> Result<(), JobError> {
    let row: (Uuid, Uuid, String, i32, Option<String>, Option<String>, i64) = sqlx::query_as(
        "UPDATE sms_jobs SET status_sequence = status_sequence + 1 WHERE job_id = $1
         RETURNING company_id, forwarding_user_id, recipient, attempts, connector,
                   provider_message_id, status_sequence",
    )
    .bind(job_id)
    .fetch_one(&mut *conn)
    .await?;
    let (company_id, forwarding_user_id, recipient, attempts, connector, provider_id, sequence) =
        row;
    sqlx::query(
        "INSERT INTO sms_job_events (job_id, from_state, to_state, attempt, detail)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(job_id)
    .bind(from.map(JobState::as_str))
    .bind(to.as_str())
    .bind(attempts)
    .bind(&change.detail)
    .execute(&mut *conn)
    .await?;
    let (failure_kind, error_code) = change.failure.unwrap_or((FailureKind::Unspecified, ""));
    let event_id = Uuid::now_v7();
    let event = SmsStatusChanged {
        event_id: event_id.to_string(),
        occur_time: Some(SystemTime::now().into()),
        job_id: job_id.to_string(),
        company_id: company_id.to_string(),
        forwarding_user_id: forwarding_user_id.to_string(),
        recipient,
        previous_state: from.map_or(SmsState::Unspecified, JobState::proto) as i32,
        state: to.proto() as i32,
        attempt_count: u32::try_from(attempts).unwrap_or(0),
        provider_message_id: provider_id.unwrap_or_default(),
        connector: connector.unwrap_or_default(),
        failure_kind: failure_kind as i32,
        error_code: error_code.to_owned(),
        error_message: if change.failure.is_some() {
            change.detail.clone()
        } else {
            String::new()
        },
        sequence: u64::try_from(sequence).unwrap_or(0),
    };
    email2sms_queue::outbox::enqueue(conn, event_id, STATUS_CHANGED, &event.encode_to_vec())
        .await?;
    Ok(())
}

/// Deletes receipts that never matched a part and are older than `older_than` (a receipt for a
/// message another system sent on the same account, or one whose job was never recorded).
pub async fn purge_unmatched_receipts(
    pool: &PgPool,
    older_than: std::time::Duration,
) -> Result<u64, JobError> {
    let seconds = i64::try_from(older_than.as_secs()).unwrap_or(i64::MAX);
    Ok(sqlx::query(
        "DELETE FROM unmatched_delivery_receipts
         WHERE received_at < now() - make_interval(secs => $1::double precision)",
    )
    .bind(seconds as f64)
    .execute(pool)
    .await?
    .rows_affected())
}

/// Consumes receipts from the connectors and records them; answers each on its channel.
pub async fn run_receipt_recorder(
    pool: PgPool,
    mut receipts: tokio::sync::mpsc::Receiver<crate::connector::ReceiptDelivery>,
) {
    while let Some(delivery) = receipts.recv().await {
        let recorded = match record_receipt(&pool, &delivery.receipt).await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, id = %delivery.receipt.provider_message_id, "cannot record a delivery receipt");
                false
            }
        };
        let _ = delivery.recorded.send(recorded);
    }
}
