//! The policy service's RabbitMQ consumer: `domain.verification.changed` events from the
//! verification service update the domain entries and their compiled lookups; `sender.ip_seen`
//! events from ingest feed the sender log. Both arrive on one queue and are told apart by the
//! delivery's routing key.
//!
//! Settlement follows what a retry can change: a malformed event never becomes valid (dropped with
//! a log line), an event for a domain that no longer exists has nothing to update (acked), and a
//! store outage or an ownership move still in progress is retried after a pause.

use std::time::Duration;

use email2sms_proto::prost::Message;
use email2sms_proto::queue::v1::{
    DOMAIN_VERIFICATION_CHANGED_ROUTING_KEY, DomainVerificationChanged, SENDER_IP_SEEN_ROUTING_KEY,
    SenderIpSeen,
};
use email2sms_queue::{Broker, Disposition, QueueArgs, run_consumer};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::cache::Cache;
use crate::error::Error;
use crate::events::apply_domain_verification_changed;
use crate::sender_alerts::SenderAlerts;
use crate::sender_log;

/// How long a retryable event waits before it goes back to the queue, so a broken store or a
/// pending ownership move is not hammered.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// The policy service's own event queue (the shared topology declares it too, so events sent
/// before policy first starts wait in it).
pub fn events_queue(args: &QueueArgs) -> String {
    args.topology().policy_events_queue()
}

/// Consumes the policy service's event queue until `stop` is cancelled.
/// Without `alerts`, new sender-log rows are kept for the alert retry loop of a server that has
/// them.
pub async fn consume_events(
    pool: PgPool,
    cache: Cache,
    alerts: Option<SenderAlerts>,
    args: QueueArgs,
    stop: CancellationToken,
) {
    let topology = args.topology();
    let queue = events_queue(&args);
    let declared_queue = queue.clone();
    run_consumer(
        Broker::new(args.amqp_url.clone(), "email2sms-policy events"),
        queue,
        16,
        move |channel| {
            let topology = topology.clone();
            let queue = declared_queue.clone();
            async move {
                topology
                    .declare_event_queue(
                        &channel,
                        &queue,
                        &[
                            DOMAIN_VERIFICATION_CHANGED_ROUTING_KEY,
                            SENDER_IP_SEEN_ROUTING_KEY,
                        ],
                    )
                    .await
            }
        },
        move |delivery| {
            let pool = pool.clone();
            let cache = cache.clone();
            let alerts = alerts.clone();
            let routing_key = delivery.routing_key.as_str().to_owned();
            async move {
                if routing_key == SENDER_IP_SEEN_ROUTING_KEY {
                    return sender_ip_seen(&pool, alerts.as_ref(), &delivery.data).await;
                }
                let event = match DomainVerificationChanged::decode(delivery.data.as_slice()) {
                    Ok(event) => event,
                    Err(error) => {
                        tracing::error!(%error, "dropping an undecodable domain.verification.changed event");
                        return Disposition::Reject;
                    }
                };
                settle(apply_domain_verification_changed(&pool, &cache, &event).await, &event).await
            }
        },
        stop,
    )
    .await;
}

async fn sender_ip_seen(pool: &PgPool, alerts: Option<&SenderAlerts>, data: &[u8]) -> Disposition {
    let event = match SenderIpSeen::decode(data) {
        Ok(event) => event,
        Err(error) => {
            tracing::error!(%error, "dropping an undecodable sender.ip_seen event");
            return Disposition::Reject;
        }
    };
    let (id, new) = match sender_log::record(pool, &event).await {
        Ok(recorded) => recorded,
        Err(Error::NotFound(_)) => {
            tracing::info!(company = %event.company_id, "sender.ip_seen for an unknown company");
            return Disposition::Ack;
        }
        Err(error @ Error::InvalidArgument(_)) => {
            tracing::error!(%error, "dropping a sender.ip_seen event that can never apply");
            return Disposition::Reject;
        }
        Err(error) => {
            tracing::warn!(%error, "sender.ip_seen not recorded yet; retrying");
            tokio::time::sleep(RETRY_PAUSE).await;
            return Disposition::Requeue;
        }
    };
    // The report is recorded: from here on the event is acked whatever happens, because a
    // redelivery would count it twice. A failed alert is the retry loop's job.
    if new
        && let Some(alerts) = alerts
        && let Err(error) = alerts.alert_admins(pool, id).await
    {
        tracing::warn!(%id, %error, "new mail server alert failed; the retry loop will send it");
    }
    Disposition::Ack
}

async fn settle<T>(outcome: Result<T, Error>, event: &DomainVerificationChanged) -> Disposition {
    let domain = &event.domain_name;
    match outcome {
        Ok(_) => Disposition::Ack,
        Err(Error::NotFound(_)) => {
            tracing::info!(
                domain,
                "verification event for a domain that is no longer registered"
            );
            Disposition::Ack
        }
        Err(
            error @ (Error::InvalidArgument(_)
            | Error::FailedPrecondition(_)
            | Error::ResourceExhausted(_)
            | Error::Unimplemented(_)),
        ) => {
            tracing::error!(domain, %error, "dropping a verification event that can never apply");
            Disposition::Reject
        }
        Err(
            error @ (Error::AlreadyExists(_)
            | Error::Unavailable(_)
            | Error::Internal(_)
            | Error::Verification(_)),
        ) => {
            tracing::warn!(domain, %error, "verification event not applied yet; retrying");
            tokio::time::sleep(RETRY_PAUSE).await;
            Disposition::Requeue
        }
    }
}
