//! The job state machine: every SMS job is recorded in `sms_jobs`, keyed by the job id ingest
//! minted, and moves queued → submitting → submitted → delivered | failed | expired, or from
//! submitting to needs_review when nobody can tell whether the SMSC took it. Every change is
//! appended to the job's `history` and written as an `sms.status.changed` event into the outbox
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
//! Where each rule lives:
//!
//! * [`state`]: the states and failure kinds as stored;
//! * [`transitions`]: every rule of the state machine as a pure function (facts in, a change out);
//! * [`admission`]: recording a delivered job and claiming it before it is sent;
//! * [`submission`]: sending a claimed job once and recording the connector's answer;
//! * [`receipts`]: delivery receipts, and how a job completes from its parts' receipts;
//! * [`review`]: an operator settling a job held for review;
//! * [`store`]: the SQL and outbox writes the others share.

mod admission;
mod receipts;
mod review;
pub mod state;
mod store;
mod submission;
mod transitions;

use crate::batch::BatchError;

pub use receipts::{purge_unmatched_receipts, run_receipt_recorder};
pub use review::{ReviewResolution, resolve_review};
pub use state::JobState;
pub use submission::{DEFAULT_CLAIM_WINDOWS, DispatchSettings, Dispatcher};

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
}

impl BatchError for JobError {
    /// A deadlock with another batch (SQLSTATE class 40), a constraint or a value one row breaks
    /// (23, 22): writing the jobs one by one is worth it. The database unreachable is not.
    fn may_be_one_items_fault(&self) -> bool {
        match self {
            JobError::Database(sqlx::Error::Database(error)) => error.code().is_some_and(|code| {
                code.starts_with("40") || code.starts_with("23") || code.starts_with("22")
            }),
            JobError::Database(_) | JobError::Stopping | JobError::BatchFailed(_) => false,
        }
    }

    fn batch_failed(cause: &Self) -> Self {
        JobError::BatchFailed(cause.to_string())
    }
}
