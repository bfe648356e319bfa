//! Handlers of the events this service consumes. Each is a plain function of the pool, the cache
//! and the decoded payload, so the RabbitMQ consumer (libs/queue) only decodes, calls and acks.

use chrono::{DateTime, Utc};
use email2sms_proto::queue::v1::DomainVerificationChanged;
use email2sms_proto::verification::v1::VerificationState;
use sqlx::PgPool;
use uuid::Uuid;

use crate::cache::{Cache, Keys};
use crate::entries::EntryKind;
use crate::error::{Error, Result};
use crate::model::verification_state_text;
use crate::store;
use crate::write::PolicyWrite;

/// What became of one event. Only `Applied` changed anything; the others are safe to ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOutcome {
    Applied,
    /// Its `state_sequence` is not newer than the last one applied (a redelivery or an event
    /// overtaken by a later one): applying it would roll the state back.
    Stale,
    /// The company or its domain entry no longer exists (deleted meanwhile).
    UnknownDomain,
}

fn to_utc(ts: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    ts.and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
}

/// A verification-side state of one challenge, from an event or from an RPC answer.
#[derive(Debug, Clone)]
pub(crate) struct ChallengeUpdate {
    pub state: &'static str,
    pub reason: String,
    pub sequence: i64,
    pub token: Option<String>,
    pub txt_value: Option<String>,
    pub challenge_id: Option<Uuid>,
    pub occurred: DateTime<Utc>,
    pub verified: Option<DateTime<Utc>>,
    pub checked: Option<DateTime<Utc>>,
}

impl ChallengeUpdate {
    /// The state a verification RPC answered with.
    pub(crate) fn from_challenge(
        challenge: &email2sms_proto::verification::v1::Challenge,
    ) -> Result<ChallengeUpdate> {
        let state = VerificationState::try_from(challenge.state)
            .ok()
            .and_then(verification_state_text)
            .ok_or_else(|| {
                Error::Internal("the verification service answered without a state".into())
            })?;
        Ok(ChallengeUpdate {
            state,
            reason: challenge.state_reason.clone(),
            sequence: i64::try_from(challenge.state_sequence).unwrap_or(i64::MAX),
            token: email2sms_domain::VerificationToken::parse(&challenge.token)
                .ok()
                .map(|t| t.as_str().to_owned()),
            txt_value: Some(challenge.txt_record_value.clone()).filter(|v| !v.is_empty()),
            challenge_id: Uuid::parse_str(&challenge.challenge_id).ok(),
            occurred: to_utc(challenge.update_time.as_ref()).unwrap_or_else(Utc::now),
            verified: to_utc(challenge.verify_time.as_ref()),
            checked: to_utc(challenge.last_check_time.as_ref()),
        })
    }
}

/// Mirrors a challenge state into the company's domain entry inside `conn`'s transaction,
/// ignoring states not newer than the last one applied. Returns the domain's id when applied.
pub(crate) async fn apply_challenge(
    conn: &mut sqlx::PgConnection,
    company: Uuid,
    name: &str,
    update: &ChallengeUpdate,
) -> Result<(EventOutcome, Option<Uuid>)> {
    let current: Option<(Uuid, i64)> = sqlx::query_as(
        "SELECT id, verification_revision FROM domains
         WHERE company_id = $1 AND name = $2 FOR UPDATE",
    )
    .bind(company)
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((id, revision)) = current else {
        return Ok((EventOutcome::UnknownDomain, None));
    };
    if update.sequence <= revision {
        return Ok((EventOutcome::Stale, Some(id)));
    }
    sqlx::query(
        "UPDATE domains SET
            state_changed_at = CASE WHEN state <> $3 THEN now() ELSE state_changed_at END,
            verified_at = CASE WHEN $3 = 'verified'
                               THEN coalesce($11, CASE WHEN state = 'verified' THEN verified_at END, $4)
                               ELSE verified_at END,
            state = $3,
            state_reason = $5,
            token = coalesce($6, token),
            txt_record_value = coalesce($7, txt_record_value),
            verification_challenge_id = coalesce($8, verification_challenge_id),
            verification_revision = $9,
            last_checked_at = coalesce($10, last_checked_at),
            updated_at = now()
         WHERE company_id = $1 AND id = $2",
    )
    .bind(company)
    .bind(id)
    .bind(update.state)
    .bind(update.occurred)
    .bind(&update.reason)
    .bind(&update.token)
    .bind(&update.txt_value)
    .bind(update.challenge_id)
    .bind(update.sequence)
    .bind(update.checked)
    .bind(update.verified)
    .execute(&mut *conn)
    .await?;
    Ok((EventOutcome::Applied, Some(id)))
}

/// Applies `domain.verification.changed` to the company's domain entry and recompiles it.
///
/// A VERIFIED event for a domain another company still holds verified fails with ALREADY_EXISTS
/// (the schema allows one verified owner): the consumer should retry it later, after the other
/// company's REVOKED event, which the verification service publishes for the ownership move.
pub async fn apply_domain_verification_changed(
    pool: &PgPool,
    cache: &Cache,
    event: &DomainVerificationChanged,
) -> Result<EventOutcome> {
    let state = VerificationState::try_from(event.state)
        .ok()
        .and_then(verification_state_text)
        .ok_or_else(|| Error::invalid("state", "UNKNOWN_STATE", "the event has no known state"))?;
    let name = email2sms_domain::DomainName::parse(&event.domain_name)
        .map_err(|e| Error::invalid("domain_name", e.code(), e.to_string()))?;
    let update = ChallengeUpdate {
        state,
        reason: event.state_reason.clone(),
        sequence: i64::try_from(event.state_sequence).unwrap_or(i64::MAX),
        token: email2sms_domain::VerificationToken::parse(&event.token)
            .ok()
            .map(|t| t.as_str().to_owned()),
        txt_value: Some(event.txt_record_value.clone()).filter(|v| !v.is_empty()),
        challenge_id: Uuid::parse_str(&event.challenge_id).ok(),
        occurred: to_utc(event.occur_time.as_ref()).unwrap_or_else(Utc::now),
        verified: None,
        checked: event
            .check
            .as_ref()
            .and_then(|c| to_utc(c.check_time.as_ref())),
    };

    let mut tx = PolicyWrite::begin(pool, cache).await?;
    // A company id this service would refuse names no company it has.
    let Some(company) = store::find_company(&mut tx, &event.company_id, false)
        .await
        .or_else(|error| match error {
            Error::InvalidArgument(_) => Ok(None),
            other => Err(other),
        })?
    else {
        return Ok(EventOutcome::UnknownDomain);
    };
    let (outcome, _) = apply_challenge(&mut tx, company.id, name.as_str(), &update).await?;
    if outcome != EventOutcome::Applied {
        return Ok(outcome);
    }
    // Bumped before the addresses are read, so that they are read under the version lock.
    tx.bump_version().await?;
    let mut keys = Keys::for_company(&company.public_id);
    keys.add(EntryKind::Domain, Some(name.as_str()), None);
    // Verified, revoked or moved: other companies' addresses at the domain are blocked or
    // unblocked with it.
    store::add_emails_at_domains(&mut tx, &mut keys).await?;
    tx.commit(&keys).await?;
    Ok(EventOutcome::Applied)
}
