//! The SQL and outbox writes of the job state machine. A change and its `sms.status.changed`
//! event are written in one transaction (the event as a row of the outbox, which the relay
//! publishes after the commit), so no state is announced that was not committed and no committed
//! state goes unannounced, whatever crashes when. Many jobs' changes go in a few statements
//! (`UNNEST` of one array per column) however many there are: a batch of 128 costs about what one
//! job does.
//!
//! Statements that find rows by key (`.persistent(false)`) are planned for their own arguments on
//! every execution. The job tables start empty and grow by thousands of rows a second; PostgreSQL
//! may keep one generic plan for a prepared statement after five executions, and one made while a
//! table was small goes on scanning it whole. Measured on 50,000 jobs: delivery receipts were
//! recorded at 600/s with cached plans and 1,650/s with fresh ones.

use std::time::SystemTime;

use email2sms_proto::prost::Message;
use email2sms_proto::queue::v1::{FailureKind, SmsState, SmsStatusChanged};
use sqlx::PgConnection;
use uuid::Uuid;

use super::admission::{NewJob, timestamp_to_chrono};
use super::state::JobState;
use super::transitions::{FailureUpdate, JobChange, fail_if_queued};
use super::{JobError, STATUS_CHANGED};
use crate::connector::receipt::message_id_forms;
use crate::metrics::{Announced, connector_label};

/// One column of a batch, bound as an array parameter (`UNNEST($n::type[])`).
pub(super) fn column<'a, T, U>(rows: &'a [T], value: impl Fn(&'a T) -> U) -> Vec<U> {
    rows.iter().map(value).collect()
}

/// The job's state, its row locked until the transaction ends; `None` when there is no row. A
/// stored value this version does not know reads as `unknown`.
pub(super) async fn lock_state(
    conn: &mut PgConnection,
    job_id: Uuid,
    unknown: JobState,
) -> Result<Option<JobState>, JobError> {
    let state: Option<String> =
        sqlx::query_scalar("SELECT state FROM sms_jobs WHERE job_id = $1 FOR UPDATE")
            .persistent(false)
            .bind(job_id)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(state.map(|state| JobState::parse(&state).unwrap_or(unknown)))
}

/// Fails a job that waits in "queued" with `reason`, inside the caller's transaction
/// ([`fail_if_queued`] says why only then); anything else is left as it is.
pub(super) async fn fail_job_if_queued(
    conn: &mut PgConnection,
    job_id: Uuid,
    kind: FailureKind,
    code: &str,
    reason: &str,
) -> Result<Announced, JobError> {
    // An unknown stored state is not "queued": left alone.
    let stored = lock_state(conn, job_id, JobState::NeedsReview).await?;
    match fail_if_queued(job_id, stored, kind, code, reason) {
        Some(change) => apply_changes(conn, &[change]).await,
        None => Ok(Announced::default()),
    }
}

/// Inserts jobs seen for the first time, each directly in the state `change` admits it to, and
/// returns the rows inserted (a job a concurrent delivery inserted first is left out). Its history
/// shows the reception and, when announced, the change from queued; it has one status event so
/// far (the change, or the reception when the change is quiet).
pub(super) async fn insert_new_jobs(
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
                    'from_state', NULL, 'to_state', $24::text, 'at', now(), 'attempt', 0,
                    'detail', 'received from the queue'))
                || CASE WHEN announce THEN jsonb_build_array(jsonb_build_object(
                       'from_state', $24::text, 'to_state', state, 'at', now(), 'attempt', 0,
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
    .bind(JobState::Queued.as_str())
    .fetch_all(&mut *conn)
    .await?;
    Ok(inserted)
}

/// A job row as a change left it: what its status event reports.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(super) struct ChangedJob {
    pub(super) job_id: Uuid,
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
pub(super) async fn apply_changes(
    conn: &mut PgConnection,
    changes: &[JobChange],
) -> Result<Announced, JobError> {
    let rows = update_jobs(conn, changes).await?;
    announce(conn, &announced_changes(changes, &rows)).await
}

/// The announced changes among `changes`, each with its job row as [`update_jobs`] left it.
pub(super) fn announced_changes<'a>(
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
pub(super) async fn update_jobs(
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
/// the change left them) into the outbox; the caller counts them (see [`Announced`]) once its
/// transaction commits.
pub(super) async fn announce(
    conn: &mut PgConnection,
    announced: &[(&JobChange, &ChangedJob)],
) -> Result<Announced, JobError> {
    if announced.is_empty() {
        return Ok(Announced::default());
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
    Ok(Announced(
        announced
            .iter()
            .map(|(change, job)| (change.to, connector_label(job.connector.as_deref())))
            .collect(),
    ))
}

/// Serialises receipt matching and part recording on a provider id (every hex/decimal form of it,
/// which covers the forms of [`IdForms::of`] for either kind of connector), as the schema's
/// comment on `unmatched_delivery_receipts` requires; locks are taken in sorted order, so two
/// transactions never deadlock.
pub(super) async fn lock_message_ids(
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
