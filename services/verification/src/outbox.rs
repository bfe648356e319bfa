//! `domain.verification.changed` events, written to the `outbox` table inside the transaction that
//! changes the challenge: the event exists if and only if the change committed. The relay of
//! `email2sms-queue`, started by `run`, publishes the rows with publisher confirms.

use chrono::{DateTime, Utc};
use email2sms_domain::TXT_RECORD_PREFIX;
use email2sms_proto::prost::Message;
use email2sms_proto::queue::v1::DomainVerificationChanged;
use email2sms_proto::verification::v1 as pb;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::model::{ChallengeRow, State, timestamp};

/// The routing key on the `email2sms.events` topic exchange.
pub use email2sms_proto::queue::v1::DOMAIN_VERIFICATION_CHANGED_ROUTING_KEY as DOMAIN_VERIFICATION_CHANGED;

/// Writes the event for `challenge` (as it is after the change) having left `previous`.
///
/// The event id doubles as the outbox `message_id` (the AMQP message-id), so a consumer
/// de-duplicating on either sees the same value.
pub async fn record_change(
    tx: &mut PgConnection,
    challenge: &ChallengeRow,
    previous: Option<State>,
    check: Option<pb::Check>,
    occurred_at: DateTime<Utc>,
) -> Result<Uuid, sqlx::Error> {
    let event_id = Uuid::new_v4();
    let token_value = format!("{TXT_RECORD_PREFIX}{}", challenge.token);
    let event = DomainVerificationChanged {
        event_id: event_id.to_string(),
        occur_time: Some(timestamp(occurred_at)),
        company_id: challenge.company_id.to_string(),
        domain_name: challenge.domain.clone(),
        challenge_id: challenge.id.to_string(),
        previous_state: previous.map_or(pb::VerificationState::Unspecified, State::to_proto) as i32,
        state: challenge.state().to_proto() as i32,
        state_reason: challenge.reason.clone(),
        state_sequence: challenge.revision as u64,
        token: challenge.token.clone(),
        txt_record_value: token_value,
        check,
    };
    email2sms_queue::outbox::enqueue(
        tx,
        event_id,
        DOMAIN_VERIFICATION_CHANGED,
        &event.encode_to_vec(),
    )
    .await?;
    Ok(event_id)
}
