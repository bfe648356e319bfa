//! The job state machine's rules, free of I/O: what a delivery, a throttle decision, a connector's
//! answer, a delivery receipt or an operator's review does to a job, given what its row holds.
//! Facts (and `now`) go in, a [`JobChange`] and the delivery's [`Outcome`] come out; the modules
//! around it read the rows, lock them and write the changes ([`super::store`]). So every rule is
//! tested here by building facts, without PostgreSQL.

use chrono::{DateTime, Utc};
use email2sms_proto::queue::v1::FailureKind;
use uuid::Uuid;

use super::review::ReviewResolution;
use super::state::{JobState, stored_failure_kind};
use super::{Outcome, Retry};
use crate::connector::{ConnectorError, ErrorKind, ReceiptStatus};
use crate::throttle::Decision;

/// How a change treats the failure columns (`failure_kind`, `error_code`, `last_error`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) enum FailureUpdate {
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
    pub(super) fn columns(&self) -> (Option<&'static str>, Option<&str>, Option<&str>) {
        match self {
            FailureUpdate::Keep | FailureUpdate::Clear => (None, None, None),
            FailureUpdate::Set {
                kind,
                code,
                message,
            } => (
                stored_failure_kind(*kind),
                code.as_deref(),
                Some(message.as_str()),
            ),
        }
    }
}

/// One job's state change, applied by [`super::store::apply_changes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct JobChange {
    pub(super) job_id: Uuid,
    /// `None` for the change that creates the job.
    pub(super) from: Option<JobState>,
    pub(super) to: JobState,
    /// What happened, for the history (and the status event's error message on failures).
    pub(super) detail: String,
    /// False for a change of the other fields only: no event, no status sequence step.
    pub(super) announce: bool,
    pub(super) connector: Option<String>,
    pub(super) provider_message_id: Option<String>,
    pub(super) count_attempt: bool,
    /// Starts the attempt count afresh (a job an operator has sent again).
    pub(super) reset_attempts: bool,
    /// Sets `submitted_at` unless it is set already.
    pub(super) mark_submitted: bool,
    pub(super) failure: FailureUpdate,
}

impl JobChange {
    pub(super) fn new(job_id: Uuid, from: Option<JobState>, to: JobState) -> JobChange {
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

    pub(super) fn detail(mut self, detail: impl Into<String>) -> JobChange {
        self.detail = detail.into();
        self
    }

    /// Records a failure; its message is also the detail.
    pub(super) fn failure(
        mut self,
        kind: FailureKind,
        code: Option<&str>,
        message: &str,
    ) -> JobChange {
        self.detail = message.to_owned();
        self.failure = FailureUpdate::Set {
            kind,
            code: code.map(str::to_owned),
            message: message.to_owned(),
        };
        self
    }

    pub(super) fn quiet(mut self) -> JobChange {
        self.announce = false;
        self
    }
}

/// What a job's row says when a delivery of it arrives (a job seen for the first time is queued,
/// with no attempts, valid until its `expire_time`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stored {
    pub(super) state: JobState,
    pub(super) attempts: u32,
    pub(super) valid_until: Option<DateTime<Utc>>,
}

/// What a delivery of a job comes to before any throttle is asked.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Arrival {
    /// Queued and still valid: ask the throttles, then claim it.
    Sendable {
        attempts: u32,
        valid_until: Option<DateTime<Utc>>,
    },
    /// Nothing to send: record `change` (if any) and settle the delivery with `outcome`.
    Settled {
        change: Option<JobChange>,
        outcome: Outcome,
    },
}

/// A delivery of a job whose row is `stored`, at `now`. Only a queued job is ever sent; one found
/// in "submitting" may have reached the SMSC already (its dispatcher died before recording the
/// answer, or the broker redelivered it while it was being sent) and is held for review, never
/// resent; anything later is acked as it is.
pub(super) fn on_arrival(job_id: Uuid, stored: Stored, now: DateTime<Utc>) -> Arrival {
    let settled = |change, outcome| Arrival::Settled { change, outcome };
    match stored.state {
        JobState::Queued if stored.valid_until.is_some_and(|until| until <= now) => settled(
            Some(
                JobChange::new(job_id, Some(JobState::Queued), JobState::Expired).failure(
                    FailureKind::Permanent,
                    Some("expired"),
                    "its validity period ended before it could be sent",
                ),
            ),
            Outcome::Permanent("validity period ended".into()),
        ),
        JobState::Queued => Arrival::Sendable {
            attempts: stored.attempts,
            valid_until: stored.valid_until,
        },
        JobState::Submitting => settled(
            Some(
                JobChange::new(job_id, Some(JobState::Submitting), JobState::NeedsReview).detail(
                    "found in submitting when delivered again: it may already have reached the \
                     SMSC, so it is not resent",
                ),
            ),
            Outcome::Done,
        ),
        // Already sent, final, or waiting for an operator: never send again.
        JobState::Submitted
        | JobState::Delivered
        | JobState::Failed
        | JobState::Expired
        | JobState::NeedsReview => settled(None, Outcome::Done),
    }
}

/// What admitting a job decided.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Admission {
    /// It is now in "submitting" (committed): hand it to the connector.
    Send {
        attempts: u32,
        valid_until: Option<DateTime<Utc>>,
    },
    /// Nothing to send; settle the delivery with this.
    Settled(Outcome),
}

/// A sendable job's change once its throttles answered: claimed for `connector` ("submitting"),
/// or left queued for a retry tier. A wait is not a failed attempt (attempts unchanged) and not a
/// state change to announce.
pub(super) fn on_throttle_decision(
    job_id: Uuid,
    attempts: u32,
    valid_until: Option<DateTime<Utc>>,
    decision: &Decision,
    connector: &'static str,
) -> (JobChange, Admission) {
    match decision {
        Decision::Wait { scope, wait } => {
            let reason = format!(
                "over the {} send rate; next token in {} ms",
                scope.as_str(),
                wait.as_millis()
            );
            let change = JobChange::new(job_id, Some(JobState::Queued), JobState::Queued)
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
            let mut change = JobChange::new(job_id, Some(JobState::Queued), JobState::Submitting)
                .detail(format!(
                    "handing to the {connector} connector (attempt {})",
                    attempts + 1
                ));
            change.connector = Some(connector.to_owned());
            (
                change,
                Admission::Send {
                    attempts,
                    valid_until,
                },
            )
        }
    }
}

/// A refused or failed submit of a job found in `from`, after `attempts_before` attempts, with
/// `max_attempts` allowed. A job no longer in "submitting" was moved on by someone else (a review)
/// and is left alone. One the provider may have taken goes to review (never resent); a throttled
/// one waits queued without counting; a transient failure is retried until the attempts run out;
/// a permanent one fails at once.
pub(super) fn on_submit_failure(
    job_id: Uuid,
    from: JobState,
    attempts_before: u32,
    max_attempts: u32,
    error: &ConnectorError,
) -> (Option<JobChange>, Outcome) {
    if from != JobState::Submitting {
        return (None, Outcome::Done);
    }
    let code = Some(error.code.as_str()).filter(|code| !code.is_empty());
    let (kind, to, counts) = if error.maybe_submitted {
        (FailureKind::Transient, JobState::NeedsReview, true)
    } else {
        match error.kind {
            ErrorKind::Throttled => (FailureKind::Throttled, JobState::Queued, false),
            ErrorKind::Transient if attempts_before + 1 >= max_attempts => {
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
    let outcome = match to {
        JobState::Queued => Outcome::RetryLater(Retry {
            throttled: !counts,
            attempts,
            reason: detail,
        }),
        JobState::Failed => Outcome::Permanent(detail),
        _ => Outcome::Done,
    };
    (Some(change), outcome)
}

/// Whether the connector's acceptance of a job found in `from` is still to be recorded. Another
/// delivery may have moved it to review meanwhile, and an operator may have recorded it as sent
/// without its message id (`has_provider_id` false); we know it was sent, so it is recorded all
/// the same. Anything else has moved on already.
pub(super) fn acceptance_applies(from: JobState, has_provider_id: bool) -> bool {
    match from {
        JobState::Submitting | JobState::NeedsReview => true,
        JobState::Submitted => !has_provider_id,
        JobState::Queued | JobState::Delivered | JobState::Failed | JobState::Expired => false,
    }
}

/// The change recording that `connector` accepted a job (one provider id per part): submitted,
/// the attempt counted, an earlier failure cleared.
pub(super) fn on_accepted(
    job_id: Uuid,
    from: JobState,
    connector: &str,
    provider_message_ids: &[String],
) -> JobChange {
    let mut change = JobChange::new(job_id, Some(from), JobState::Submitted).detail(format!(
        "accepted by the {connector} connector, message id {}",
        provider_message_ids.join(", ")
    ));
    change.provider_message_id = provider_message_ids.first().cloned();
    change.count_attempt = true;
    change.mark_submitted = true;
    change.failure = FailureUpdate::Clear;
    change
}

/// One part of a job as its receipts left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PartReceipt {
    pub(super) part_number: i32,
    /// `None` until a receipt came (or when it carried a status this version does not know).
    pub(super) status: Option<ReceiptStatus>,
    pub(super) error_code: Option<String>,
}

/// The job's change once every part has a final receipt: delivered when all were delivered,
/// expired when the failures are all expiries, failed otherwise; `None` while parts are pending
/// or when the job is not waiting for receipts. `raw` is the receipt that completed it.
pub(super) fn receipt_change(
    job_id: Uuid,
    from: JobState,
    parts: &[PartReceipt],
    raw: &str,
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
    let detail = format!("last delivery receipt: {raw}");
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

/// A job that is to fail without being sent (given up at the delivery limit, or its data refused
/// by the database) fails only while it waits in "queued": one in "submitting" may have reached
/// the SMSC, and its review decides; anything later has moved on. `stored` is `None` when there
/// is no row.
pub(super) fn fail_if_queued(
    job_id: Uuid,
    stored: Option<JobState>,
    kind: FailureKind,
    code: &str,
    reason: &str,
) -> Option<JobChange> {
    (stored == Some(JobState::Queued)).then(|| {
        JobChange::new(job_id, Some(JobState::Queued), JobState::Failed).failure(
            kind,
            Some(code),
            reason,
        )
    })
}

/// An operator's resolution of a job held for review, with their `note`.
pub(super) fn review_change(job_id: Uuid, resolution: ReviewResolution, note: &str) -> JobChange {
    let detail = |what: &str| match note {
        "" => format!("review: {what}"),
        note => format!("review: {what} ({note})"),
    };
    let from = Some(JobState::NeedsReview);
    match resolution {
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
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::TimeZone;

    use super::*;
    use crate::throttle::Scope;

    const JOB: Uuid = Uuid::from_u128(7);

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 3, 12, 0, 0).unwrap()
    }

    fn stored(state: JobState) -> Stored {
        Stored {
            state,
            attempts: 2,
            valid_until: None,
        }
    }

    #[test]
    fn a_queued_job_is_sendable_until_its_validity_ends_and_then_expires_unsent() {
        let valid = Stored {
            valid_until: Some(now() + chrono::Duration::seconds(1)),
            ..stored(JobState::Queued)
        };
        assert_eq!(
            on_arrival(JOB, valid, now()),
            Arrival::Sendable {
                attempts: 2,
                valid_until: valid.valid_until
            }
        );
        let ended = Stored {
            valid_until: Some(now()),
            ..valid
        };
        let Arrival::Settled {
            change: Some(change),
            outcome,
        } = on_arrival(JOB, ended, now())
        else {
            panic!("an expired job is settled with a change");
        };
        assert_eq!(
            (change.from, change.to),
            (Some(JobState::Queued), JobState::Expired)
        );
        assert_eq!(change.failure.columns().1, Some("expired"));
        assert!(matches!(outcome, Outcome::Permanent(_)));
    }

    #[test]
    fn a_job_found_submitting_when_delivered_again_is_held_for_review_and_not_resent() {
        let Arrival::Settled { change, outcome } =
            on_arrival(JOB, stored(JobState::Submitting), now())
        else {
            panic!("never sendable");
        };
        let change = change.expect("a change to review");
        assert_eq!(change.to, JobState::NeedsReview);
        assert!(change.announce);
        assert_eq!(outcome, Outcome::Done);
    }

    #[test]
    fn a_job_sent_final_or_under_review_is_acked_as_it_is() {
        for state in [
            JobState::Submitted,
            JobState::Delivered,
            JobState::Failed,
            JobState::Expired,
            JobState::NeedsReview,
        ] {
            assert_eq!(
                on_arrival(JOB, stored(state), now()),
                Arrival::Settled {
                    change: None,
                    outcome: Outcome::Done
                },
                "{state:?}"
            );
        }
    }

    #[test]
    fn a_throttled_job_stays_queued_quietly_without_counting_an_attempt() {
        let wait = Decision::Wait {
            scope: Scope::Company,
            wait: Duration::from_millis(250),
        };
        let (change, admission) = on_throttle_decision(JOB, 3, None, &wait, "smpp");
        assert_eq!(change.to, JobState::Queued);
        assert!(!change.announce && !change.count_attempt);
        let Admission::Settled(Outcome::RetryLater(retry)) = admission else {
            panic!("retried later");
        };
        assert!(retry.throttled);
        assert_eq!(retry.attempts, 3);
        assert_eq!(
            retry.reason,
            "over the company send rate; next token in 250 ms"
        );
    }

    #[test]
    fn a_job_its_throttles_let_through_is_claimed_for_the_connector() {
        let (change, admission) = on_throttle_decision(JOB, 1, None, &Decision::Send, "smpp");
        assert_eq!(
            (change.from, change.to),
            (Some(JobState::Queued), JobState::Submitting)
        );
        assert_eq!(change.connector.as_deref(), Some("smpp"));
        assert_eq!(change.detail, "handing to the smpp connector (attempt 2)");
        assert_eq!(
            admission,
            Admission::Send {
                attempts: 1,
                valid_until: None
            }
        );
    }

    fn error(kind: ErrorKind) -> ConnectorError {
        ConnectorError::new(kind, "0x00000058", "refused")
    }

    #[test]
    fn a_failed_submit_is_retried_until_the_attempts_run_out() {
        let (change, outcome) = on_submit_failure(
            JOB,
            JobState::Submitting,
            0,
            3,
            &error(ErrorKind::Transient),
        );
        let change = change.unwrap();
        assert_eq!(change.to, JobState::Queued);
        assert!(change.count_attempt);
        assert!(matches!(
            outcome,
            Outcome::RetryLater(Retry {
                throttled: false,
                attempts: 1,
                ..
            })
        ));
        let (change, outcome) = on_submit_failure(
            JOB,
            JobState::Submitting,
            2,
            3,
            &error(ErrorKind::Transient),
        );
        assert_eq!(change.unwrap().to, JobState::Failed);
        assert_eq!(
            outcome,
            Outcome::Permanent("gave up after 3 attempts: refused (0x00000058)".into())
        );
    }

    #[test]
    fn a_permanent_refusal_fails_at_once_and_a_throttled_one_waits_uncounted() {
        let (change, outcome) = on_submit_failure(
            JOB,
            JobState::Submitting,
            0,
            8,
            &error(ErrorKind::Permanent),
        );
        assert_eq!(change.unwrap().to, JobState::Failed);
        assert_eq!(outcome, Outcome::Permanent("refused (0x00000058)".into()));
        let (change, outcome) = on_submit_failure(
            JOB,
            JobState::Submitting,
            5,
            6,
            &error(ErrorKind::Throttled),
        );
        let change = change.unwrap();
        assert_eq!(change.to, JobState::Queued);
        assert!(!change.count_attempt, "a wait is not an attempt");
        assert!(matches!(
            outcome,
            Outcome::RetryLater(Retry {
                throttled: true,
                attempts: 5,
                ..
            })
        ));
    }

    #[test]
    fn a_submit_the_provider_may_have_taken_goes_to_review_never_back_to_the_queue() {
        let maybe = error(ErrorKind::Transient).maybe_submitted();
        let (change, outcome) = on_submit_failure(JOB, JobState::Submitting, 0, 8, &maybe);
        let change = change.unwrap();
        assert_eq!(change.to, JobState::NeedsReview);
        assert!(change.detail.starts_with("outcome unknown, not resent"));
        assert_eq!(outcome, Outcome::Done);
    }

    #[test]
    fn a_failed_submit_of_a_job_moved_on_meanwhile_changes_nothing() {
        for from in [JobState::NeedsReview, JobState::Submitted, JobState::Failed] {
            assert_eq!(
                on_submit_failure(JOB, from, 0, 8, &error(ErrorKind::Permanent)),
                (None, Outcome::Done)
            );
        }
    }

    #[test]
    fn an_acceptance_is_recorded_while_the_job_may_still_lack_it() {
        assert!(acceptance_applies(JobState::Submitting, false));
        assert!(acceptance_applies(JobState::NeedsReview, false));
        assert!(
            acceptance_applies(JobState::Submitted, false),
            "resolved as sent without an id"
        );
        assert!(!acceptance_applies(JobState::Submitted, true));
        for state in [
            JobState::Queued,
            JobState::Delivered,
            JobState::Failed,
            JobState::Expired,
        ] {
            assert!(!acceptance_applies(state, false), "{state:?}");
        }
        let change = on_accepted(
            JOB,
            JobState::Submitting,
            "smpp",
            &["a1".into(), "a2".into()],
        );
        assert_eq!(change.provider_message_id.as_deref(), Some("a1"));
        assert_eq!(change.failure, FailureUpdate::Clear);
        assert!(change.count_attempt && change.mark_submitted);
    }

    fn part(part_number: i32, status: Option<ReceiptStatus>, code: Option<&str>) -> PartReceipt {
        PartReceipt {
            part_number,
            status,
            error_code: code.map(str::to_owned),
        }
    }

    #[test]
    fn a_job_completes_only_once_every_part_has_a_final_receipt() {
        use ReceiptStatus::*;
        let pending = [part(1, Some(Delivered), None), part(2, Some(Enroute), None)];
        assert_eq!(
            receipt_change(JOB, JobState::Submitted, &pending, "r"),
            None
        );
        let unknown = [part(1, Some(Delivered), None), part(2, None, None)];
        assert_eq!(
            receipt_change(JOB, JobState::Submitted, &unknown, "r"),
            None
        );
        let all = [
            part(1, Some(Delivered), None),
            part(2, Some(Delivered), None),
        ];
        let change = receipt_change(JOB, JobState::Submitted, &all, "stat:DELIVRD").unwrap();
        assert_eq!(change.to, JobState::Delivered);
        assert_eq!(change.detail, "last delivery receipt: stat:DELIVRD");
        assert_eq!(change.failure, FailureUpdate::Keep);
    }

    #[test]
    fn the_first_part_not_delivered_for_good_says_why_the_job_failed() {
        use ReceiptStatus::*;
        let parts = [
            part(1, Some(Expired), Some("0FE")),
            part(2, Some(Undeliverable), Some("00C")),
            part(3, Some(Delivered), None),
        ];
        let change = receipt_change(JOB, JobState::Submitted, &parts, "x").unwrap();
        assert_eq!(change.to, JobState::Failed);
        assert_eq!(
            change.failure.columns(),
            (
                Some("permanent"),
                Some("00C"),
                Some("part 2 of 3 undeliverable; last delivery receipt: x")
            )
        );
        let expiries = [part(1, Some(Delivered), None), part(2, Some(Expired), None)];
        let change = receipt_change(JOB, JobState::Submitted, &expiries, "x").unwrap();
        assert_eq!(change.to, JobState::Expired);
    }

    #[test]
    fn a_receipt_moves_a_job_under_review_on_and_proves_it_was_submitted() {
        let parts = [part(1, Some(ReceiptStatus::Delivered), None)];
        let change = receipt_change(JOB, JobState::NeedsReview, &parts, "x").unwrap();
        assert_eq!(change.to, JobState::Delivered);
        assert!(change.mark_submitted);
        for state in [JobState::Queued, JobState::Submitting, JobState::Delivered] {
            assert_eq!(receipt_change(JOB, state, &parts, "x"), None, "{state:?}");
        }
    }

    #[test]
    fn only_a_queued_job_fails_unsent() {
        let change = fail_if_queued(
            JOB,
            Some(JobState::Queued),
            FailureKind::Transient,
            "delivery_limit",
            "gave up",
        )
        .unwrap();
        assert_eq!(change.to, JobState::Failed);
        assert_eq!(change.failure.columns().1, Some("delivery_limit"));
        for stored in [
            None,
            Some(JobState::Submitting),
            Some(JobState::NeedsReview),
            Some(JobState::Delivered),
        ] {
            assert_eq!(
                fail_if_queued(JOB, stored, FailureKind::Permanent, "c", "r"),
                None
            );
        }
    }

    #[test]
    fn a_review_records_the_operators_word_and_a_resend_starts_the_attempts_over() {
        let sent = review_change(JOB, ReviewResolution::Sent, "");
        assert_eq!(sent.to, JobState::Submitted);
        assert_eq!(sent.detail, "review: the provider has it");
        assert!(sent.mark_submitted);
        let not_sent = review_change(JOB, ReviewResolution::NotSent, "called them");
        assert_eq!(not_sent.to, JobState::Failed);
        assert_eq!(not_sent.failure.columns().1, Some("not_sent"));
        assert!(not_sent.detail.ends_with("(called them)"));
        let resend = review_change(JOB, ReviewResolution::Resend, "");
        assert_eq!(
            (resend.from, resend.to),
            (Some(JobState::NeedsReview), JobState::Queued)
        );
        assert!(resend.reset_attempts);
        assert_eq!(resend.failure, FailureUpdate::Clear);
    }
}
