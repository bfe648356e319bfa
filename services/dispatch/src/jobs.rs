//! The job state machine: every SMS job is recorded in `sms_jobs`, keyed by the job id ingest
//! minted, and moves queued → submitting → submitted → delivered | failed | expired. Every change
//! is appended to the job's `history` and written as an `sms.status.changed` event into the outbox
//! in the same transaction.
//!
//! Exactly once towards the SMSC: the "submitting" state is committed *before* the connector is
//! called and "submitted" right after it answers. A job found in "submitting" when it is delivered
//! again means a dispatcher died between the two (or the broker redelivered a job still being
//! sent): the SMS may or may not have reached the SMSC. It is moved to `needs_review` and **not**
//! resent. SMPP 3.4 offers no reliable way to ask the SMSC about a message we have no id for
//! (query_sm needs the id), so an operator decides; a later delivery receipt for it, or the first
//! dispatcher recording its submit, still moves it on.
//!
//! Statements that find rows by key (`.persistent(false)`) are planned for their own arguments on
//! every execution. The job tables start empty and grow by thousands of rows a second; PostgreSQL
//! may keep one generic plan for a prepared statement after five executions, and one made while a
//! table was small goes on scanning it whole. Measured on 50,000 jobs: delivery receipts were
//! recorded at 600/s with cached plans and 1,650/s with fresh ones.

use std::sync::Arc;
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use email2sms_proto::prost::Message;
use email2sms_proto::queue::v1::{FailureKind, SmsJob, SmsState, SmsStatusChanged};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::batch::Batcher;
use crate::connector::receipt::{IdForms, message_id_forms};
use crate::connector::{
    Connector, ConnectorError, DeliveryReceipt, ErrorKind, OutgoingSms, ReceiptStatus,
};
use crate::throttle::{Decision, Throttle};

/// The outbox routing key of status events.
pub const STATUS_CHANGED: &str = email2sms_proto::queue::v1::SMS_STATUS_CHANGED_ROUTING_KEY;

/// What [`Dispatcher::process_job`] makes of a delivery; the queue consumer settles it as
/// [`crate::consumer::decide`] says:
///
/// * `Done` → ack.
/// * `RetryLater(retry)` → publish the same body (with publisher confirm) to the retry exchange
///   with the tier for the job's failed deliveries so far, then ack; the TTL queue dead-letters it
///   back to the job queue. At the delivery limit it is dead-lettered instead. `throttled` waits
///   do not count, so they stay in the shortest tier.
/// * `Permanent(reason)` → dead-letter it with `reason` in a header (publish to the dead exchange,
///   then ack; or reject when the reason header is not needed). A fault the job itself causes
///   every time (invalid payload, data the database refuses) is permanent.
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
    /// Submit attempts so far, for the log (the consumer picks the retry tier from the delivery's
    /// failure count, which follows the job through the tiers).
    pub attempts: u32,
    pub reason: String,
}

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

/// Errors of the job store (all database errors; the caller retries).
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("dispatch is stopping; the job's write did not run")]
    Stopping,
    #[error("the job's batch could not be written: {0}")]
    BatchFailed(String),
}

impl JobError {
    /// Whether writing this one job failed because of what the job holds, so that writing it again
    /// fails again: a data exception (SQLSTATE class 22, such as a NUL byte in a text, `22021`) or
    /// an integrity violation (class 23) from a write of this job alone. Anything else (the
    /// database unreachable, a deadlock, a batch that failed as a whole) may pass next time.
    pub fn is_the_jobs_own_fault(&self) -> bool {
        match self {
            JobError::Database(sqlx::Error::Database(error)) => error
                .code()
                .is_some_and(|code| code.starts_with("22") || code.starts_with("23")),
            JobError::Database(_) | JobError::Stopping | JobError::BatchFailed(_) => false,
        }
    }

    /// Whether the failure may come from one job of a batch (a deadlock with another batch, a
    /// constraint or a value one row breaks), so that writing the jobs one by one is worth it.
    fn may_be_one_items_fault(&self) -> bool {
        match self {
            JobError::Database(sqlx::Error::Database(error)) => error.code().is_some_and(|code| {
                code.starts_with("40") || code.starts_with("23") || code.starts_with("22")
            }),
            JobError::Database(_) | JobError::Stopping | JobError::BatchFailed(_) => false,
        }
    }
}

/// Why [`Dispatcher::try_process`] did not come to an outcome.
#[derive(Debug)]
enum Failure {
    /// The job store failed; worth trying again.
    Job(JobError),
    /// The database refused the job's own data ([`JobError::is_the_jobs_own_fault`]).
    Refused(Box<SmsJob>, JobError),
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

/// Jobs written per transaction at most. Big enough that a full prefetch window commits in a few
/// transactions; small enough that one batch's row locks are held briefly.
const MAX_BATCH: usize = 128;
/// Batches being written at once, per kind of write: one fills while others commit.
const BATCH_WORKERS: usize = 3;

/// One column of a batch, bound as an array parameter (`UNNEST($n::type[])`).
fn column<'a, T, U>(rows: &'a [T], value: impl Fn(&'a T) -> U) -> Vec<U> {
    rows.iter().map(value).collect()
}

/// A job from the queue whose payload is usable, ready to be recorded.
#[derive(Debug)]
struct NewJob {
    job_id: Uuid,
    company_id: Uuid,
    forwarding_user_id: Uuid,
    encoding: &'static str,
    segments: i32,
    job: SmsJob,
}

impl NewJob {
    /// After this the job is worthless (ingest's `expire_time`).
    fn valid_until(&self) -> Option<DateTime<Utc>> {
        self.job.expire_time.as_ref().and_then(timestamp_to_chrono)
    }

    /// Checks the payload; `Err` says why it can never be sent.
    fn validate(job: SmsJob) -> Result<NewJob, String> {
        let job_id = Uuid::parse_str(&job.job_id).map_err(|_| "job_id is not a UUID")?;
        let company_id =
            Uuid::parse_str(&job.company_id).map_err(|_| "company_id is not a UUID")?;
        let forwarding_user_id = Uuid::parse_str(&job.forwarding_user_id)
            .map_err(|_| "forwarding_user_id is not a UUID")?;
        if job.text.is_empty() {
            return Err("the text is empty".into());
        }
        let recipient_ok = job.recipient.strip_prefix('+').is_some_and(|digits| {
            (6..=15).contains(&digits.len())
                && digits.bytes().all(|b| b.is_ascii_digit())
                && !digits.starts_with('0')
        });
        if !recipient_ok {
            // Masked: the reason reaches the log (the payload in the dead-letter queue keeps it).
            return Err(format!(
                "recipient {:?} is not E.164",
                email2sms_domain::mask_phone(&job.recipient)
            ));
        }
        if job.sender_id.chars().count() > 20 {
            return Err("sender_id is longer than 20 characters".into());
        }
        // The text decides encoding and parts; ingest's figures are informational.
        let sized = email2sms_sms::encode(&job.text);
        if sized.segments > email2sms_sms::MAX_PARTS {
            return Err(format!("the text needs {} parts", sized.segments));
        }
        Ok(NewJob {
            job_id,
            company_id,
            forwarding_user_id,
            encoding: sized.encoding.as_str(),
            segments: i32::try_from(sized.segments).unwrap_or(i32::MAX),
            job,
        })
    }
}

/// What admitting a job decided.
#[derive(Debug)]
enum Admission {
    /// It is now in "submitting" (committed): hand it to the connector.
    Send {
        attempts: u32,
        valid_until: Option<DateTime<Utc>>,
    },
    /// Nothing to send; settle the delivery with this.
    Settled(Outcome),
}

/// A connector's acceptance of a job, to record.
#[derive(Debug)]
struct Accepted {
    job_id: Uuid,
    provider_message_ids: Vec<String>,
}

/// A kind of write that [`write_in_batches`] applies to many jobs in one transaction.
trait BatchWrite: Send + Sync + 'static {
    type Item: Send + Sync + 'static;
    type Answer: Send + 'static;
    /// Writes every item in one transaction and answers each, in order; all or nothing.
    fn write(
        &self,
        items: &[Self::Item],
    ) -> impl Future<Output = Result<Vec<Self::Answer>, JobError>> + Send;
}

/// Writes the batch in one transaction; when that fails, each item in its own, so one bad job (or
/// a deadlock with a concurrent batch sharing a redelivered job) costs only itself.
async fn write_each_or_alone<W: BatchWrite>(
    writer: &W,
    items: Vec<W::Item>,
) -> Vec<Result<W::Answer, JobError>> {
    match writer.write(&items).await {
        Ok(answers) => answers.into_iter().map(Ok).collect(),
        Err(error) if items.len() == 1 => vec![Err(error)],
        // The database itself is unreachable: one by one would only wait out the pool N times.
        Err(error) if !error.may_be_one_items_fault() => {
            let cause = error.to_string();
            let mut answers = vec![Err(error)];
            answers.extend((1..items.len()).map(|_| Err(JobError::BatchFailed(cause.clone()))));
            answers
        }
        Err(error) => {
            tracing::debug!(%error, jobs = items.len(), "a batch write failed; writing its jobs one by one");
            let mut answers = Vec::with_capacity(items.len());
            for item in &items {
                let answer = writer.write(std::slice::from_ref(item)).await;
                answers.push(answer.map(|mut one| one.remove(0)));
            }
            answers
        }
    }
}

/// Where a kind of write is sent to be batched.
type BatchWriter<W> =
    Arc<Batcher<<W as BatchWrite>::Item, Result<<W as BatchWrite>::Answer, JobError>>>;

fn write_in_batches<W: BatchWrite>(writer: W) -> BatchWriter<W> {
    let writer = Arc::new(writer);
    Arc::new(Batcher::spawn(MAX_BATCH, BATCH_WORKERS, move |items| {
        let writer = writer.clone();
        async move { write_each_or_alone(&*writer, items).await }
    }))
}

/// Records jobs from the queue and claims the sendable ones: a new job is inserted, and a queued,
/// valid one that its throttles let through is moved to "submitting" and committed before anything
/// is sent.
struct Admit {
    pool: PgPool,
    throttle: Arc<Throttle>,
    connector: &'static str,
}

impl BatchWrite for Admit {
    type Item = NewJob;
    type Answer = Admission;

    async fn write(&self, jobs: &[NewJob]) -> Result<Vec<Admission>, JobError> {
        // Sorted by job id, so two batches that share a (redelivered) job lock in the same order.
        let mut order: Vec<usize> = (0..jobs.len()).collect();
        order.sort_by_key(|&i| jobs[i].job_id);
        let mut answers: Vec<Option<Admission>> = jobs.iter().map(|_| None).collect();
        let mut unique: Vec<&NewJob> = Vec::with_capacity(jobs.len());
        for &i in &order {
            if unique
                .last()
                .is_some_and(|last| last.job_id == jobs[i].job_id)
            {
                // The same job delivered twice at once: the first copy handles it.
                answers[i] = Some(Admission::Settled(Outcome::Done));
            } else {
                unique.push(&jobs[i]);
            }
        }

        let mut tx = self.pool.begin().await?;
        let ids: Vec<Uuid> = unique.iter().map(|job| job.job_id).collect();
        let known: std::collections::HashMap<Uuid, (String, i32, Option<DateTime<Utc>>)> =
            sqlx::query_as::<_, (Uuid, String, i32, Option<DateTime<Utc>>)>(
                "SELECT job_id, state, attempts, valid_until FROM sms_jobs
                 WHERE job_id = ANY($1) ORDER BY job_id FOR UPDATE",
            )
            .persistent(false)
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(|(id, state, attempts, valid_until)| (id, (state, attempts, valid_until)))
            .collect();
        let now = Utc::now();
        // A job seen for the first time is inserted straight in the state it is admitted to (one
        // row version instead of two); its history still shows it queued first.
        let mut created: Vec<(&NewJob, JobChange)> = Vec::new();
        let mut changes = Vec::new();
        let mut sendable = Vec::new();
        let mut decided = std::collections::HashMap::with_capacity(unique.len());
        for job in &unique {
            let (state, attempts, valid_until) = match known.get(&job.job_id) {
                Some((state, attempts, valid_until)) => (
                    JobState::parse(state).unwrap_or(JobState::NeedsReview),
                    u32::try_from(*attempts).unwrap_or(0),
                    *valid_until,
                ),
                None => (JobState::Queued, 0, job.valid_until()),
            };
            let is_new = !known.contains_key(&job.job_id);
            let settled = match state {
                JobState::Queued if valid_until.is_some_and(|until| until <= now) => {
                    let change = JobChange::new(job.job_id, Some(state), JobState::Expired)
                        .failure(
                            FailureKind::Permanent,
                            Some("expired"),
                            "its validity period ended before it could be sent",
                        );
                    if is_new {
                        created.push((job, change));
                    } else {
                        changes.push(change);
                    }
                    Outcome::Permanent("validity period ended".into())
                }
                JobState::Queued => {
                    sendable.push((*job, is_new, attempts, valid_until));
                    continue;
                }
                JobState::Submitting => {
                    changes.push(
                        JobChange::new(job.job_id, Some(state), JobState::NeedsReview).detail(
                            "found in submitting when delivered again: it may already have \
                             reached the SMSC, so it is not resent",
                        ),
                    );
                    Outcome::Done
                }
                // Already sent, final, or waiting for an operator: never send again.
                JobState::Submitted
                | JobState::Delivered
                | JobState::Failed
                | JobState::Expired
                | JobState::NeedsReview => Outcome::Done,
            };
            decided.insert(job.job_id, Admission::Settled(settled));
        }
        // Asked only now, for jobs that will really be sent: a redelivered duplicate must not use
        // up its user's tokens.
        let decisions = futures::future::join_all(sendable.iter().map(|(job, ..)| {
            self.throttle.acquire(
                &job.job.forwarding_user_id,
                &job.job.company_id,
                self.connector,
            )
        }))
        .await;
        for ((job, is_new, attempts, valid_until), decision) in sendable.into_iter().zip(decisions)
        {
            let (change, admission) = match decision {
                Decision::Wait { scope, wait } => {
                    let reason = format!(
                        "over the {} send rate; next token in {} ms",
                        scope.as_str(),
                        wait.as_millis()
                    );
                    // Stays queued: a wait, not a failed attempt (attempts unchanged), and no
                    // state change to announce.
                    let change =
                        JobChange::new(job.job_id, Some(JobState::Queued), JobState::Queued)
                            .failure(FailureKind::Throttled, None, &reason)
                            .quiet();
                    let retry = Retry {
                        throttled: true,
                        attempts,
                        reason,
                    };
                    (change, Admission::Settled(Outcome::RetryLater(retry)))
                }
                Decision::Send => {
                    let mut change =
                        JobChange::new(job.job_id, Some(JobState::Queued), JobState::Submitting)
                            .detail(format!(
                                "handing to the {} connector (attempt {})",
                                self.connector,
                                attempts + 1
                            ));
                    change.connector = Some(self.connector.to_owned());
                    let send = Admission::Send {
                        attempts,
                        valid_until,
                    };
                    (change, send)
                }
            };
            if is_new {
                created.push((job, change));
            } else {
                changes.push(change);
            }
            decided.insert(job.job_id, admission);
        }

        // A new job is first committed in the state it is admitted to: that is its first event
        // (no previous state), although its history shows the reception before it.
        for (_, change) in &mut created {
            change.from = None;
        }
        let inserted = insert_new_jobs(&mut tx, &created).await?;
        if inserted.len() < created.len() {
            // Inserted meanwhile by a concurrent delivery of the same job, which handles it.
            let inserted_ids: std::collections::HashSet<Uuid> =
                inserted.iter().map(|job| job.job_id).collect();
            for (job, _) in &created {
                if !inserted_ids.contains(&job.job_id) {
                    decided.insert(job.job_id, Admission::Settled(Outcome::Done));
                }
            }
        }
        let by_id: std::collections::HashMap<Uuid, &ChangedJob> =
            inserted.iter().map(|job| (job.job_id, job)).collect();
        // A job that stays queued (throttled) announces its reception instead.
        let receptions: Vec<JobChange> = created
            .iter()
            .filter(|(_, change)| !change.announce)
            .map(|(job, _)| {
                JobChange::new(job.job_id, None, JobState::Queued).detail("received from the queue")
            })
            .collect();
        let updated = update_jobs(&mut tx, &changes).await?;
        // New and known jobs' events: one outbox row for the transaction.
        let mut announced: Vec<(&JobChange, &ChangedJob)> = created
            .iter()
            .map(|(_, change)| change)
            .filter(|change| change.announce)
            .chain(&receptions)
            .filter_map(|change| Some((change, *by_id.get(&change.job_id)?)))
            .collect();
        announced.extend(announced_changes(&changes, &updated));
        announce(&mut tx, &announced).await?;
        tx.commit().await?;
        Ok(answers
            .into_iter()
            .zip(jobs)
            .map(|(answer, job)| {
                answer.unwrap_or_else(|| {
                    decided
                        .remove(&job.job_id)
                        // Every job is decided above; should one ever not be, it is tried again
                        // rather than acked unsent.
                        .unwrap_or_else(|| {
                            Admission::Settled(Outcome::RetryLater(Retry {
                                throttled: false,
                                attempts: 0,
                                reason: "its admission was not decided".into(),
                            }))
                        })
                })
            })
            .collect())
    }
}

/// Inserts jobs seen for the first time, each directly in the state `change` admits it to, and
/// returns the rows inserted (a job a concurrent delivery inserted first is left out). Its history
/// shows the reception and, when announced, the change from queued; it has one status event so
/// far (the change, or the reception when the change is quiet).
async fn insert_new_jobs(
    conn: &mut PgConnection,
    jobs: &[(&NewJob, JobChange)],
) -> Result<Vec<ChangedJob>, JobError> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let failures = column(jobs, |(_, change)| change.failure.columns());
    let inserted: Vec<ChangedJob> = sqlx::query_as(
        "INSERT INTO sms_jobs (job_id, company_id, forwarding_user_id, sender_id, sender_email,
                               email_message_id, recipient, text, encoding, segments,
                               valid_until, truncated, origin, job_created_at, state, connector,
                               failure_kind, error_code, last_error, final_at, status_sequence,
                               history, company_region)
         SELECT job_id, company_id, forwarding_user_id, NULLIF(sender_id, ''),
                NULLIF(sender_email, ''), NULLIF(email_message_id, ''), recipient, text, encoding,
                segments, valid_until, truncated, origin, job_created_at, state, connector,
                failure_kind, error_code, last_error,
                CASE WHEN is_final THEN now() END, 1,
                jsonb_build_array(jsonb_build_object(
                    'from_state', NULL, 'to_state', 'queued', 'at', now(), 'attempt', 0,
                    'detail', 'received from the queue'))
                || CASE WHEN announce THEN jsonb_build_array(jsonb_build_object(
                       'from_state', 'queued', 'to_state', state, 'at', now(), 'attempt', 0,
                       'detail', detail))
                   ELSE '[]' END,
                NULLIF(company_region, '')
         FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[],
                     $7::text[], $8::text[], $9::text[], $10::int4[], $11::timestamptz[],
                     $12::bool[], $13::bytea[], $14::timestamptz[], $15::text[], $16::text[],
                     $17::text[], $18::text[], $19::text[], $20::bool[], $21::bool[],
                     $22::text[], $23::text[])
              WITH ORDINALITY
              AS n(job_id, company_id, forwarding_user_id, sender_id, sender_email,
                   email_message_id, recipient, text, encoding, segments, valid_until, truncated,
                   origin, job_created_at, state, connector, failure_kind, error_code, last_error,
                   is_final, announce, detail, company_region, position)
         ORDER BY position
         ON CONFLICT (job_id) DO NOTHING
         RETURNING job_id, company_id, forwarding_user_id, recipient, attempts, connector,
                   provider_message_id, status_sequence",
    )
    .bind(column(jobs, |(j, _)| j.job_id))
    .bind(column(jobs, |(j, _)| j.company_id))
    .bind(column(jobs, |(j, _)| j.forwarding_user_id))
    .bind(column(jobs, |(j, _)| j.job.sender_id.as_str()))
    .bind(column(jobs, |(j, _)| {
        j.job.origin.as_ref().map(|o| o.from_address.as_str())
    }))
    .bind(column(jobs, |(j, _)| {
        j.job.origin.as_ref().map(|o| o.message_id.as_str())
    }))
    .bind(column(jobs, |(j, _)| j.job.recipient.as_str()))
    .bind(column(jobs, |(j, _)| j.job.text.as_str()))
    .bind(column(jobs, |(j, _)| j.encoding))
    .bind(column(jobs, |(j, _)| j.segments))
    .bind(column(jobs, |(j, _)| j.valid_until()))
    .bind(column(jobs, |(j, _)| j.job.truncated))
    .bind(column(jobs, |(j, _)| {
        j.job.origin.as_ref().map(|o| o.encode_to_vec())
    }))
    .bind(column(jobs, |(j, _)| {
        j.job.create_time.as_ref().and_then(timestamp_to_chrono)
    }))
    .bind(column(jobs, |(_, c)| c.to.as_str()))
    .bind(column(jobs, |(_, c)| c.connector.as_deref()))
    .bind(column(&failures, |f| f.0))
    .bind(column(&failures, |f| f.1))
    .bind(column(&failures, |f| f.2))
    .bind(column(jobs, |(_, c)| c.to.is_final()))
    .bind(column(jobs, |(_, c)| c.announce))
    .bind(column(jobs, |(_, c)| c.detail.as_str()))
    .bind(column(jobs, |(j, _)| j.job.company_region.as_str()))
    .fetch_all(&mut *conn)
    .await?;
    Ok(inserted)
}

/// How a job held for review is settled (`ResolveMessageReview`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewResolution {
    /// The provider has it: submitted (with no message id, so no receipt completes it).
    Sent,
    /// The provider never got it and it is not to go: failed.
    NotSent,
    /// The provider never got it: queued again; the caller publishes it.
    Resend,
}

/// Settles a job held for review, inside the caller's transaction, which has locked its row and
/// seen it in `needs_review`: the change goes into its history and out as a status event.
pub async fn resolve_review(
    conn: &mut PgConnection,
    job_id: Uuid,
    resolution: ReviewResolution,
    note: &str,
) -> Result<(), JobError> {
    let detail = |what: &str| match note {
        "" => format!("review: {what}"),
        note => format!("review: {what} ({note})"),
    };
    let from = Some(JobState::NeedsReview);
    let change = match resolution {
        ReviewResolution::Sent => {
            let mut change = JobChange::new(job_id, from, JobState::Submitted)
                .detail(detail("the provider has it"));
            change.mark_submitted = true;
            change.failure = FailureUpdate::Clear;
            change
        }
        ReviewResolution::NotSent => JobChange::new(job_id, from, JobState::Failed).failure(
            FailureKind::Permanent,
            Some("not_sent"),
            &detail("the provider never got it, and it is not sent again"),
        ),
        ReviewResolution::Resend => {
            // Like a new job: the attempt that may have reached the SMSC did not, by the
            // provider's word, so the retries start over.
            let mut change = JobChange::new(job_id, from, JobState::Queued)
                .detail(detail("the provider never got it; sending it again"));
            change.failure = FailureUpdate::Clear;
            change.reset_attempts = true;
            change
        }
    };
    apply_changes(conn, &[change]).await
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
        // Another delivery may have moved a job to review meanwhile, and an operator may have
        // recorded it as sent without its message id; we know it was sent, so it is recorded all
        // the same. Anything else has moved on already.
        let open: Vec<(&Accepted, JobState)> = sorted
            .into_iter()
            .filter_map(|a| {
                let (from, no_id) = *states.get(&a.job_id)?;
                let open = match from {
                    JobState::Submitting | JobState::NeedsReview => true,
                    JobState::Submitted => no_id,
                    JobState::Queued
                    | JobState::Delivered
                    | JobState::Failed
                    | JobState::Expired => false,
                };
                open.then_some((a, from))
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
            .map(|(a, from)| {
                let mut change =
                    JobChange::new(a.job_id, Some(*from), JobState::Submitted).detail(format!(
                        "accepted by the {connector} connector, message id {}",
                        a.provider_message_ids.join(", ")
                    ));
                change.provider_message_id = a.provider_message_ids.first().cloned();
                change.count_attempt = true;
                change.mark_submitted = true;
                change.failure = FailureUpdate::Clear;
                change
            })
            .collect();
        apply_changes(&mut tx, &changes).await?;

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
            apply_receipt(&mut tx, &receipt, part).await?;
        }
        tx.commit().await?;
        Ok(accepted.iter().map(|_| ()).collect())
    }
}

/// How a change treats the failure columns (`failure_kind`, `error_code`, `last_error`).
#[derive(Debug, Default)]
enum FailureUpdate {
    #[default]
    Keep,
    Clear,
    Set {
        kind: FailureKind,
        code: Option<String>,
        message: String,
    },
}

impl FailureUpdate {
    /// The values of `failure_kind`, `error_code` and `last_error` it writes (all NULL unless
    /// `Set`; whether the columns are written at all is the caller's business).
    fn columns(&self) -> (Option<&'static str>, Option<&str>, Option<&str>) {
        match self {
            FailureUpdate::Keep | FailureUpdate::Clear => (None, None, None),
            FailureUpdate::Set {
                kind,
                code,
                message,
            } => (
                failure_kind_str(*kind),
                code.as_deref(),
                Some(message.as_str()),
            ),
        }
    }
}

/// One job's state change, applied by [`apply_changes`].
#[derive(Debug)]
struct JobChange {
    job_id: Uuid,
    /// `None` for the change that creates the job.
    from: Option<JobState>,
    to: JobState,
    /// What happened, for the event row (and the status event's error message on failures).
    detail: String,
    /// False for a change of the other fields only: no event, no status sequence step.
    announce: bool,
    connector: Option<String>,
    provider_message_id: Option<String>,
    count_attempt: bool,
    /// Starts the attempt count afresh (a job an operator has sent again).
    reset_attempts: bool,
    /// Sets `submitted_at` unless it is set already.
    mark_submitted: bool,
    failure: FailureUpdate,
}

impl JobChange {
    fn new(job_id: Uuid, from: Option<JobState>, to: JobState) -> JobChange {
        JobChange {
            job_id,
            from,
            to,
            detail: String::new(),
            announce: true,
            connector: None,
            provider_message_id: None,
            count_attempt: false,
            reset_attempts: false,
            mark_submitted: false,
            failure: FailureUpdate::Keep,
        }
    }

    fn detail(mut self, detail: impl Into<String>) -> JobChange {
        self.detail = detail.into();
        self
    }

    /// Records a failure; its message is also the detail.
    fn failure(mut self, kind: FailureKind, code: Option<&str>, message: &str) -> JobChange {
        self.detail = message.to_owned();
        self.failure = FailureUpdate::Set {
            kind,
            code: code.map(str::to_owned),
            message: message.to_owned(),
        };
        self
    }

    fn quiet(mut self) -> JobChange {
        self.announce = false;
        self
    }
}

/// A job row as a change left it: what its status event reports.
#[derive(Debug, Clone, sqlx::FromRow)]
struct ChangedJob {
    job_id: Uuid,
    company_id: Uuid,
    forwarding_user_id: Uuid,
    recipient: String,
    attempts: i32,
    connector: Option<String>,
    provider_message_id: Option<String>,
    status_sequence: i64,
}

/// Applies state changes (at most one per job) in two statements however many there are: the job
/// rows (their history included) and one outbox row with their `sms.status.changed` events.
async fn apply_changes(conn: &mut PgConnection, changes: &[JobChange]) -> Result<(), JobError> {
    let rows = update_jobs(conn, changes).await?;
    announce(conn, &announced_changes(changes, &rows)).await
}

/// The announced changes among `changes`, each with its job row as [`update_jobs`] left it.
fn announced_changes<'a>(
    changes: &'a [JobChange],
    rows: &'a std::collections::HashMap<Uuid, ChangedJob>,
) -> Vec<(&'a JobChange, &'a ChangedJob)> {
    changes
        .iter()
        .filter(|c| c.announce)
        .filter_map(|c| Some((c, rows.get(&c.job_id)?)))
        .collect()
}

/// Applies state changes (at most one per job) to the job rows, their history included, in one
/// statement; returns the rows as the changes left them, for their events.
async fn update_jobs(
    conn: &mut PgConnection,
    changes: &[JobChange],
) -> Result<std::collections::HashMap<Uuid, ChangedJob>, JobError> {
    if changes.is_empty() {
        return Ok(Default::default());
    }
    let (kinds, codes, messages): (Vec<_>, Vec<_>, Vec<_>) =
        changes.iter().map(|c| c.failure.columns()).collect();
    let rows: Vec<ChangedJob> = sqlx::query_as(
        "UPDATE sms_jobs AS j SET
                 state = c.to_state,
                 connector = coalesce(c.connector, j.connector),
                 provider_message_id = coalesce(c.provider_message_id, j.provider_message_id),
                 attempts = CASE WHEN c.reset_attempts THEN 0 ELSE j.attempts END
                            + CASE WHEN c.count_attempt THEN 1 ELSE 0 END,
                 submitted_at = CASE WHEN c.mark_submitted THEN coalesce(j.submitted_at, now())
                                     ELSE j.submitted_at END,
                 failure_kind = CASE WHEN c.set_failure THEN c.failure_kind ELSE j.failure_kind END,
                 error_code = CASE WHEN c.set_failure THEN c.error_code ELSE j.error_code END,
                 last_error = CASE WHEN c.set_failure THEN c.last_error ELSE j.last_error END,
                 updated_at = now(),
                 final_at = CASE WHEN c.is_final THEN coalesce(j.final_at, now())
                                 ELSE j.final_at END,
                 status_sequence = j.status_sequence + CASE WHEN c.announce THEN 1 ELSE 0 END,
                 history = CASE WHEN c.announce
                     THEN j.history || jsonb_build_array(jsonb_build_object(
                         'from_state', c.from_state, 'to_state', c.to_state, 'at', now(),
                         'attempt', CASE WHEN c.reset_attempts THEN 0 ELSE j.attempts END
                                    + CASE WHEN c.count_attempt THEN 1 ELSE 0 END,
                         'detail', c.detail))
                     ELSE j.history END
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bool[], $6::bool[],
                         $7::bool[], $8::text[], $9::text[], $10::text[], $11::bool[], $12::bool[],
                         $13::text[], $14::text[], $15::bool[])
                  AS c(job_id, to_state, connector, provider_message_id, count_attempt,
                       mark_submitted, set_failure, failure_kind, error_code, last_error, announce,
                       is_final, from_state, detail, reset_attempts)
             WHERE j.job_id = c.job_id
             RETURNING j.job_id, j.company_id, j.forwarding_user_id, j.recipient, j.attempts,
                       j.connector, j.provider_message_id, j.status_sequence",
    )
    .persistent(false)
    .bind(column(changes, |c| c.job_id))
    .bind(column(changes, |c| c.to.as_str()))
    .bind(column(changes, |c| c.connector.as_deref()))
    .bind(column(changes, |c| c.provider_message_id.as_deref()))
    .bind(column(changes, |c| c.count_attempt))
    .bind(column(changes, |c| c.mark_submitted))
    .bind(column(changes, |c| {
        !matches!(c.failure, FailureUpdate::Keep)
    }))
    .bind(&kinds)
    .bind(&codes)
    .bind(&messages)
    .bind(column(changes, |c| c.announce))
    .bind(column(changes, |c| c.to.is_final()))
    .bind(column(changes, |c| c.from.map(JobState::as_str)))
    .bind(column(changes, |c| c.detail.as_str()))
    .bind(column(changes, |c| c.reset_attempts))
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|row| (row.job_id, row)).collect())
}

/// Writes the `sms.status.changed` events of changes already applied to their jobs (which are as
/// the change left them) into the outbox.
async fn announce(
    conn: &mut PgConnection,
    announced: &[(&JobChange, &ChangedJob)],
) -> Result<(), JobError> {
    if announced.is_empty() {
        return Ok(());
    }
    let now = SystemTime::now();
    let events: Vec<email2sms_queue::outbox::OutboxEvent<'_>> = announced
        .iter()
        .map(|(change, job)| {
            let (failure_kind, error_code, error_message) = match &change.failure {
                FailureUpdate::Set {
                    kind,
                    code,
                    message,
                } => (*kind, code.clone().unwrap_or_default(), message.clone()),
                FailureUpdate::Keep | FailureUpdate::Clear => {
                    (FailureKind::Unspecified, String::new(), String::new())
                }
            };
            let event_id = Uuid::now_v7();
            let event = SmsStatusChanged {
                event_id: event_id.to_string(),
                occur_time: Some(now.into()),
                job_id: change.job_id.to_string(),
                company_id: job.company_id.to_string(),
                forwarding_user_id: job.forwarding_user_id.to_string(),
                recipient: job.recipient.clone(),
                previous_state: change.from.map_or(SmsState::Unspecified, JobState::proto) as i32,
                state: change.to.proto() as i32,
                attempt_count: u32::try_from(job.attempts).unwrap_or(0),
                provider_message_id: job.provider_message_id.clone().unwrap_or_default(),
                connector: job.connector.clone().unwrap_or_default(),
                failure_kind: failure_kind as i32,
                error_code,
                error_message,
                sequence: u64::try_from(job.status_sequence).unwrap_or(0),
            };
            email2sms_queue::outbox::OutboxEvent {
                message_id: event_id,
                routing_key: STATUS_CHANGED,
                payload: event.encode_to_vec(),
            }
        })
        .collect();
    email2sms_queue::outbox::enqueue_many(conn, &events).await?;
    Ok(())
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
            Err(Failure::Refused(job, error)) => self.refuse(*job, &error).await,
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
        // Kept for recording the job as failed should its data be what the database refuses.
        let original = job.clone();
        let job = match NewJob::validate(job) {
            Ok(job) => job,
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
        let (attempts, valid_until) = match self.admissions.call(job).await {
            None => return Err(JobError::Stopping.into()),
            Some(Err(error)) if error.is_the_jobs_own_fault() => {
                return Err(Failure::Refused(Box::new(original), error));
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
            Some("invalid_data"),
            reason,
        );
        let mut tx = self.pool.begin().await?;
        let created = [(&job, change)];
        let inserted = insert_new_jobs(&mut tx, &created).await?;
        if let Some(row) = inserted.first() {
            announce(&mut tx, &[(&created[0].1, row)]).await?;
        } else {
            // Known already (a write of its update was refused): failed unless it has moved on.
            let state: Option<String> =
                sqlx::query_scalar("SELECT state FROM sms_jobs WHERE job_id = $1 FOR UPDATE")
                    .persistent(false)
                    .bind(job.job_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if state.as_deref().and_then(JobState::parse) == Some(JobState::Queued) {
                let change = JobChange::new(job.job_id, Some(JobState::Queued), JobState::Failed)
                    .failure(FailureKind::Permanent, Some("invalid_data"), reason);
                apply_changes(&mut tx, &[change]).await?;
            }
        }
        tx.commit().await?;
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
            let state: Option<String> =
                sqlx::query_scalar("SELECT state FROM sms_jobs WHERE job_id = $1 FOR UPDATE")
                    .persistent(false)
                    .bind(job_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if state.as_deref().and_then(JobState::parse) == Some(JobState::Queued) {
                let change = JobChange::new(job_id, Some(JobState::Queued), JobState::Failed)
                    .failure(FailureKind::Transient, Some("delivery_limit"), reason);
                apply_changes(&mut tx, &[change]).await?;
            }
            tx.commit().await?;
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
        let state: String =
            sqlx::query_scalar("SELECT state FROM sms_jobs WHERE job_id = $1 FOR UPDATE")
                .persistent(false)
                .bind(job_id)
                .fetch_one(&mut *tx)
                .await?;
        let from = JobState::parse(&state).unwrap_or(JobState::Submitting);
        if from != JobState::Submitting {
            // Moved on by someone else (review); leave it.
            tx.commit().await?;
            return Ok(Outcome::Done);
        }
        let code = Some(error.code.as_str()).filter(|code| !code.is_empty());
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
        let detail = if to == JobState::Failed && error.kind == ErrorKind::Transient {
            format!("gave up after {attempts} attempts: {error}")
        } else if to == JobState::NeedsReview {
            format!("outcome unknown, not resent: {error}")
        } else {
            error.to_string()
        };
        let mut change = JobChange::new(job_id, Some(from), to).failure(kind, code, &detail);
        change.count_attempt = counts;
        apply_changes(&mut tx, &[change]).await?;
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

/// Serialises receipt matching and part recording on a provider id (every hex/decimal form of it,
/// which covers the forms of [`IdForms::of`] for either kind of connector), as the schema's
/// comment on `unmatched_delivery_receipts` requires; locks are taken in sorted order, so two
/// transactions never deadlock.
async fn lock_message_ids(
    conn: &mut PgConnection,
    connector: &str,
    ids: &[&str],
) -> Result<(), JobError> {
    let mut candidates: Vec<String> = ids.iter().flat_map(|id| message_id_forms(id)).collect();
    candidates.sort();
    candidates.dedup();
    // A function scan returns the array's elements in order, so the locks follow the sort.
    sqlx::query(
        "SELECT count(pg_advisory_xact_lock(hashtext($1 || ' ' || candidate)))
         FROM UNNEST($2::text[]) AS candidate",
    )
    .bind(connector)
    .bind(&candidates)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records delivery receipts, a batch per transaction: an SMSC sends one per part, as fast as it
/// accepts submits, and waits for each answer.
struct RecordReceipts {
    pool: PgPool,
}

impl BatchWrite for RecordReceipts {
    type Item = DeliveryReceipt;
    type Answer = ();

    async fn write(&self, receipts: &[DeliveryReceipt]) -> Result<Vec<()>, JobError> {
        let mut tx = self.pool.begin().await?;
        // Every id of the batch is locked before any job row, in one sorted pass per connector.
        let mut connectors: Vec<&str> = receipts.iter().map(|r| r.connector.as_str()).collect();
        connectors.sort_unstable();
        connectors.dedup();
        for connector in connectors {
            let ids: Vec<&str> = receipts
                .iter()
                .filter(|r| r.connector == connector)
                .map(|r| r.provider_message_id.as_str())
                .collect();
            lock_message_ids(&mut tx, connector, &ids).await?;
        }
        let parts = find_parts(&mut tx, receipts).await?;
        let mut seen = std::collections::HashSet::new();
        let repeats_a_part = parts
            .iter()
            .zip(receipts)
            .filter_map(|(part, receipt)| Some((receipt.connector.as_str(), part.as_deref()?)))
            .any(|key| !seen.insert(key));
        if repeats_a_part {
            // Two receipts for one part (say "enroute", then "delivered") apply in their order;
            // their jobs are locked first, in id order like every other batch locks them.
            let (connectors, matched): (Vec<&str>, Vec<&str>) = parts
                .iter()
                .zip(receipts)
                .filter_map(|(part, receipt)| Some((receipt.connector.as_str(), part.as_deref()?)))
                .unzip();
            sqlx::query(
                "SELECT job_id FROM sms_jobs
                 WHERE job_id IN (SELECT job_id FROM sms_job_parts
                                  WHERE (connector, provider_message_id) IN
                                        (SELECT * FROM UNNEST($1::text[], $2::text[])))
                 ORDER BY job_id FOR UPDATE",
            )
            .persistent(false)
            .bind(&connectors)
            .bind(&matched)
            .execute(&mut *tx)
            .await?;
            for (receipt, part) in receipts.iter().zip(&parts) {
                match part {
                    Some(part) => apply_receipt(&mut tx, receipt, part).await?,
                    None => keep_unmatched(&mut tx, &[receipt]).await?,
                }
            }
        } else {
            apply_receipts(&mut tx, receipts, &parts).await?;
        }
        tx.commit().await?;
        Ok(receipts.iter().map(|_| ()).collect())
    }
}

/// The recorded part each receipt is for (its id as given first, then under its other forms), if
/// any.
async fn find_parts(
    conn: &mut PgConnection,
    receipts: &[DeliveryReceipt],
) -> Result<Vec<Option<String>>, JobError> {
    let candidates: Vec<Vec<String>> = receipts
        .iter()
        .map(|r| {
            let given = crate::connector::receipt::normalise_message_id(&r.provider_message_id);
            let mut forms = r.id_forms.of(&given);
            forms.retain(|form| *form != given);
            forms.insert(0, given);
            forms
        })
        .collect();
    let mut known = std::collections::HashSet::new();
    let mut connectors: Vec<&str> = receipts.iter().map(|r| r.connector.as_str()).collect();
    connectors.sort_unstable();
    connectors.dedup();
    for connector in connectors {
        let wanted: Vec<&str> = receipts
            .iter()
            .zip(&candidates)
            .filter(|(r, _)| r.connector == connector)
            .flat_map(|(_, c)| c.iter().map(String::as_str))
            .collect();
        let found: Vec<String> = sqlx::query_scalar(
            "SELECT provider_message_id FROM sms_job_parts
             WHERE connector = $1 AND provider_message_id = ANY($2)",
        )
        .persistent(false)
        .bind(connector)
        .bind(&wanted)
        .fetch_all(&mut *conn)
        .await?;
        known.extend(found.into_iter().map(|id| (connector.to_owned(), id)));
    }
    Ok(receipts
        .iter()
        .zip(candidates)
        .map(|(receipt, candidates)| {
            candidates
                .into_iter()
                .find(|c| known.contains(&(receipt.connector.clone(), c.clone())))
        })
        .collect())
}

/// Keeps receipts whose part is not recorded yet, until its submit response is.
async fn keep_unmatched(
    conn: &mut PgConnection,
    receipts: &[&DeliveryReceipt],
) -> Result<(), JobError> {
    if receipts.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO unmatched_delivery_receipts
             (connector, provider_message_id, status, error_code, raw)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])",
    )
    .bind(column(receipts, |r| r.connector.as_str()))
    .bind(column(receipts, |r| r.provider_message_id.as_str()))
    .bind(column(receipts, |r| r.status.as_str()))
    .bind(column(receipts, |r| r.error_code.as_deref()))
    .bind(column(receipts, |r| r.raw.as_str()))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Applies receipts for distinct parts in a few statements however many there are: the parts, the
/// jobs every part of which now has a final receipt, and the receipts still waiting for their part.
async fn apply_receipts(
    conn: &mut PgConnection,
    receipts: &[DeliveryReceipt],
    parts: &[Option<String>],
) -> Result<(), JobError> {
    let unmatched: Vec<&DeliveryReceipt> = receipts
        .iter()
        .zip(parts)
        .filter(|(_, part)| part.is_none())
        .map(|(r, _)| r)
        .collect();
    keep_unmatched(conn, &unmatched).await?;
    let matched: Vec<(&DeliveryReceipt, &str)> = receipts
        .iter()
        .zip(parts)
        .filter_map(|(r, part)| Some((r, part.as_deref()?)))
        .collect();
    if matched.is_empty() {
        return Ok(());
    }
    // A part whose receipt was final already keeps it (a duplicate receipt changes nothing).
    let updated: Vec<(Uuid, String, String)> = sqlx::query_as(
        "UPDATE sms_job_parts p
         SET receipt_status = r.status, receipt_error_code = r.error_code, receipt_at = now()
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[])
              AS r(connector, provider_message_id, status, error_code)
         WHERE p.connector = r.connector AND p.provider_message_id = r.provider_message_id
           AND (p.receipt_status IS NULL
                OR p.receipt_status NOT IN ('delivered', 'expired', 'deleted', 'undeliverable', 'rejected', 'skipped'))
         RETURNING p.job_id, p.connector, p.provider_message_id",
    )
    .persistent(false)
    .bind(column(&matched, |(r, _)| r.connector.as_str()))
    .bind(column(&matched, |(_, part)| *part))
    .bind(column(&matched, |(r, _)| r.status.as_str()))
    .bind(column(&matched, |(r, _)| r.error_code.as_deref()))
    .fetch_all(&mut *conn)
    .await?;
    // The receipt that last touched each job speaks for it.
    let by_part: std::collections::HashMap<(&str, &str), &DeliveryReceipt> = matched
        .iter()
        .map(|(r, part)| ((r.connector.as_str(), *part), *r))
        .collect();
    let mut last: std::collections::BTreeMap<Uuid, &DeliveryReceipt> = Default::default();
    for (job_id, connector, part) in &updated {
        if let Some(receipt) = by_part.get(&(connector.as_str(), part.as_str())) {
            last.insert(*job_id, receipt);
        }
    }
    let job_ids: Vec<Uuid> = last.keys().copied().collect();
    let states: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT job_id, state FROM sms_jobs WHERE job_id = ANY($1) ORDER BY job_id FOR UPDATE",
    )
    .persistent(false)
    .bind(&job_ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut statuses: std::collections::HashMap<Uuid, Vec<PartReceipt>> = Default::default();
    let rows: Vec<(Uuid, i32, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT job_id, part_number, receipt_status, receipt_error_code FROM sms_job_parts
         WHERE job_id = ANY($1) ORDER BY job_id, part_number",
    )
    .persistent(false)
    .bind(&job_ids)
    .fetch_all(&mut *conn)
    .await?;
    for (job_id, part_number, status, error_code) in rows {
        statuses.entry(job_id).or_default().push(PartReceipt {
            part_number,
            status: status.as_deref().and_then(ReceiptStatus::from_db),
            error_code,
        });
    }
    let changes: Vec<JobChange> = states
        .into_iter()
        .filter_map(|(job_id, state)| {
            let from = JobState::parse(&state).unwrap_or(JobState::Submitted);
            receipt_change(job_id, from, statuses.get(&job_id)?, last.get(&job_id)?)
        })
        .collect();
    apply_changes(conn, &changes).await
}

/// The job's change once every part has a final receipt: delivered when all were delivered,
/// expired when the failures are all expiries, failed otherwise; `None` while parts are pending
/// or when the job is not waiting for receipts.
fn receipt_change(
    job_id: Uuid,
    from: JobState,
    parts: &[PartReceipt],
    receipt: &DeliveryReceipt,
) -> Option<JobChange> {
    if !matches!(from, JobState::Submitted | JobState::NeedsReview) {
        return None;
    }
    let finals: Vec<(&PartReceipt, ReceiptStatus)> = parts
        .iter()
        .filter_map(|part| Some((part, part.status.filter(|s| s.is_final())?)))
        .collect();
    if finals.len() < parts.len() {
        return None;
    }
    // The first part that failed says why the job did (parts are in order): one that was not
    // delivered for good when there is one, else one that expired.
    let failed = finals
        .iter()
        .find(|(_, s)| !matches!(s, ReceiptStatus::Delivered | ReceiptStatus::Expired));
    let expired = finals.iter().find(|(_, s)| *s == ReceiptStatus::Expired);
    let (to, undelivered) = match (failed, expired) {
        (Some(part), _) => (JobState::Failed, Some(part)),
        (None, Some(part)) => (JobState::Expired, Some(part)),
        (None, None) => (JobState::Delivered, None),
    };
    let detail = format!("last delivery receipt: {}", receipt.raw);
    let mut change = match undelivered {
        None => JobChange::new(job_id, Some(from), to).detail(detail),
        Some((part, status)) => {
            let detail = if parts.len() > 1 {
                format!(
                    "part {} of {} {}; {detail}",
                    part.part_number,
                    parts.len(),
                    status.as_str()
                )
            } else {
                detail
            };
            JobChange::new(job_id, Some(from), to).failure(
                FailureKind::Permanent,
                part.error_code.as_deref(),
                &detail,
            )
        }
    };
    // A receipt for a job under review proves it was submitted.
    change.mark_submitted = true;
    Some(change)
}

/// One part of a job as its receipts left it.
#[derive(Debug)]
struct PartReceipt {
    part_number: i32,
    /// `None` until a receipt came (or when it carried a status this version does not know).
    status: Option<ReceiptStatus>,
    error_code: Option<String>,
}

/// Applies one receipt to its recorded `part` (its id locked by the caller) and moves the job on
/// when that completes it.
async fn apply_receipt(
    conn: &mut PgConnection,
    receipt: &DeliveryReceipt,
    part: &str,
) -> Result<(), JobError> {
    let job_id: Option<Uuid> = sqlx::query_scalar(
        "UPDATE sms_job_parts SET receipt_status = $3, receipt_error_code = $4, receipt_at = now()
         WHERE connector = $1 AND provider_message_id = $2
           AND (receipt_status IS NULL
                OR receipt_status NOT IN ('delivered', 'expired', 'deleted', 'undeliverable', 'rejected', 'skipped'))
         RETURNING job_id",
    )
    .persistent(false)
    .bind(&receipt.connector)
    .bind(part)
    .bind(receipt.status.as_str())
    .bind(&receipt.error_code)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(job_id) = job_id else {
        // A duplicate receipt for a part already final: nothing changes.
        return Ok(());
    };
    let state: String =
        sqlx::query_scalar("SELECT state FROM sms_jobs WHERE job_id = $1 FOR UPDATE")
            .persistent(false)
            .bind(job_id)
            .fetch_one(&mut *conn)
            .await?;
    let statuses: Vec<PartReceipt> = sqlx::query_as::<_, (i32, Option<String>, Option<String>)>(
        "SELECT part_number, receipt_status, receipt_error_code FROM sms_job_parts
         WHERE job_id = $1 ORDER BY part_number",
    )
    .persistent(false)
    .bind(job_id)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|(part_number, status, error_code)| PartReceipt {
        part_number,
        status: status.as_deref().and_then(ReceiptStatus::from_db),
        error_code,
    })
    .collect();
    let from = JobState::parse(&state).unwrap_or(JobState::Submitted);
    match receipt_change(job_id, from, &statuses, receipt) {
        Some(change) => apply_changes(conn, &[change]).await,
        None => Ok(()),
    }
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
    let writer = write_in_batches(RecordReceipts { pool });
    // Enough receipts in progress to fill every batch worker; the bounded channel behind it slows
    // the connector (and so the SMSC) down when the database falls behind.
    let in_progress = Arc::new(tokio::sync::Semaphore::new(MAX_BATCH * BATCH_WORKERS));
    while let Some(delivery) = receipts.recv().await {
        let Ok(permit) = in_progress.clone().acquire_owned().await else {
            return;
        };
        let writer = writer.clone();
        tokio::spawn(async move {
            let id = delivery.receipt.provider_message_id.clone();
            let recorded = match writer.call(delivery.receipt).await {
                Some(Ok(())) => true,
                Some(Err(error)) => {
                    tracing::warn!(%error, id, "cannot record a delivery receipt");
                    false
                }
                None => false,
            };
            let _ = delivery.recorded.send(recorded);
            drop(permit);
        });
    }
}
