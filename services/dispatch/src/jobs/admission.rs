//! Admission: a job from the queue is recorded, and claimed ("submitting" committed) before
//! anything is sent. This is what makes the send at most once: a job found in "submitting" when it
//! is delivered again means a dispatcher died between claiming it and recording the connector's
//! answer (or the broker redelivered it while it was being sent), so the SMS may or may not have
//! reached the SMSC; it is held for review and **not** resent ([`super::transitions::on_arrival`]).
//!
//! Admissions are written in batches ([`crate::batch`]); rows are locked in job id order, so two
//! batches sharing a redelivered job never deadlock, and two copies of one job in one batch are
//! handled by the first. The throttles are asked only for jobs that will really be sent, so a
//! redelivered duplicate does not use up its user's tokens. A new job is inserted straight in the
//! state it is admitted to (one row version instead of two); its history still shows it queued
//! first.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use email2sms_proto::queue::v1::SmsJob;
use sqlx::PgPool;
use uuid::Uuid;

use super::state::JobState;
use super::store::{ChangedJob, announce, announced_changes, insert_new_jobs, update_jobs};
use super::transitions::{Admission, Arrival, JobChange, Stored, on_arrival, on_throttle_decision};
use super::{JobError, Outcome, Retry};
use crate::batch::BatchWrite;
use crate::throttle::Throttle;

pub(super) fn timestamp_to_chrono(
    ts: &email2sms_proto::prost_types::Timestamp,
) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).ok()?)
}

/// A job from the queue whose payload is usable, ready to be recorded.
#[derive(Debug)]
pub(super) struct NewJob {
    pub(super) job_id: Uuid,
    pub(super) company_id: Uuid,
    pub(super) forwarding_user_id: Uuid,
    pub(super) encoding: &'static str,
    pub(super) segments: i32,
    pub(super) job: SmsJob,
}

impl NewJob {
    /// After this the job is worthless (ingest's `expire_time`).
    pub(super) fn valid_until(&self) -> Option<DateTime<Utc>> {
        self.job.expire_time.as_ref().and_then(timestamp_to_chrono)
    }

    /// Checks the payload; `Err` says why it can never be sent.
    pub(super) fn validate(job: SmsJob) -> Result<NewJob, String> {
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

/// Records jobs from the queue and claims the sendable ones: a new job is inserted, and a queued,
/// valid one that its throttles let through is moved to "submitting" and committed before anything
/// is sent.
pub(super) struct Admit {
    pub(super) pool: PgPool,
    pub(super) throttle: Arc<Throttle>,
    pub(super) connector: &'static str,
}

impl BatchWrite for Admit {
    type Item = Arc<NewJob>;
    type Answer = Admission;
    type Error = JobError;

    async fn write(&self, jobs: &[Arc<NewJob>]) -> Result<Vec<Admission>, JobError> {
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
        let known: HashMap<Uuid, Stored> =
            sqlx::query_as::<_, (Uuid, String, i32, Option<DateTime<Utc>>)>(
                "SELECT job_id, state, attempts, valid_until FROM sms_jobs
                 WHERE job_id = ANY($1) ORDER BY job_id FOR UPDATE",
            )
            .persistent(false)
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(|(id, state, attempts, valid_until)| {
                let stored = Stored {
                    // A state this version does not know is never sent.
                    state: JobState::parse(&state).unwrap_or(JobState::NeedsReview),
                    attempts: u32::try_from(attempts).unwrap_or(0),
                    valid_until,
                };
                (id, stored)
            })
            .collect();
        let now = Utc::now();
        let mut created: Vec<(&NewJob, JobChange)> = Vec::new();
        let mut changes = Vec::new();
        let mut sendable = Vec::new();
        let mut decided = HashMap::with_capacity(unique.len());
        // A new job's change goes into its insert, a known one's into the update.
        fn record<'a>(
            (created, changes): (&mut Vec<(&'a NewJob, JobChange)>, &mut Vec<JobChange>),
            job: &'a NewJob,
            is_new: bool,
            change: JobChange,
        ) {
            if is_new {
                created.push((job, change));
            } else {
                changes.push(change);
            }
        }
        for job in unique.iter().copied() {
            let stored = known.get(&job.job_id).copied();
            let is_new = stored.is_none();
            let stored = stored.unwrap_or(Stored {
                state: JobState::Queued,
                attempts: 0,
                valid_until: job.valid_until(),
            });
            match on_arrival(job.job_id, stored, now) {
                Arrival::Sendable {
                    attempts,
                    valid_until,
                } => sendable.push((job, is_new, attempts, valid_until)),
                Arrival::Settled { change, outcome } => {
                    if let Some(change) = change {
                        record((&mut created, &mut changes), job, is_new, change);
                    }
                    decided.insert(job.job_id, Admission::Settled(outcome));
                }
            }
        }
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
            let (change, admission) =
                on_throttle_decision(job.job_id, attempts, valid_until, &decision, self.connector);
            record((&mut created, &mut changes), job, is_new, change);
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
            let inserted_ids: HashSet<Uuid> = inserted.iter().map(|job| job.job_id).collect();
            for (job, _) in &created {
                if !inserted_ids.contains(&job.job_id) {
                    decided.insert(job.job_id, Admission::Settled(Outcome::Done));
                }
            }
        }
        let by_id: HashMap<Uuid, &ChangedJob> =
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
        let announced = announce(&mut tx, &announced).await?;
        tx.commit().await?;
        announced.committed();
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
