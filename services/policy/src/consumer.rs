//! The policy service's RabbitMQ consumer: `domain.verification.changed` events from the
//! verification service update the domain entries and their compiled lookups.
//!
//! Settlement follows what a retry can change: a malformed event never becomes valid (dropped with
//! a log line), an event for a domain that no longer exists has nothing to update (acked), and a
//! store outage or an ownership move still in progress is retried after a pause.

use std::time::Duration;

use email2sms_proto::prost::Message;
use email2sms_proto::queue::v1::{
    DOMAIN_VERIFICATION_CHANGED_ROUTING_KEY, DomainVerificationChanged,
};
use email2sms_queue::{Broker, Disposition, QueueArgs, run_consumer};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::cache::Cache;
use crate::error::Error;
use crate::events::apply_domain_verification_changed;

/// How long a retryable event waits before it goes back to the queue, so a broken store or a
/// pending ownership move is not hammered.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// The policy service's own event queue.
pub fn events_queue(args: &QueueArgs) -> String {
    format!("{}policy.events", args.amqp_prefix)
}

/// Consumes the policy service's event queue until `stop` is cancelled.
pub async fn consume_events(pool: PgPool, cache: Cache, args: QueueArgs, stop: CancellationToken) {
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
                    .declare_event_queue(&channel, &queue, &[DOMAIN_VERIFICATION_CHANGED_ROUTING_KEY])
                    .await
            }
        },
        move |delivery| {
            let pool = pool.clone();
            let cache = cache.clone();
            async move {
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
