//! The RabbitMQ side of dispatch: consumes SMS jobs with manual acks and a prefetch window, hands
//! each to the [`Dispatcher`], and settles it as [`decide`] says: done → ack; transient → through
//! the retry tier for its number of failed deliveries, then ack, until the delivery limit; permanent
//! or over the limit → into the dead-letter queue with the reason in a header, then ack. A job is only acked once its next home (the SMSC, a retry tier
//! or the dead-letter queue) has confirmed it, so a crash at any point redelivers rather than
//! loses it; the Dispatcher's job table makes the redelivery harmless.

use std::sync::Arc;
use std::time::Duration;

use email2sms_proto::prost::Message;
use email2sms_proto::queue::v1::{SMS_JOB_TYPE, SmsJob};
use email2sms_queue::topology::{DEAD_REASON_HEADER, SMS_DEAD_ROUTING_KEY};
use email2sms_queue::{Broker, Disposition, Outgoing, Publisher, Topology, run_consumer};
use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable, LongString};
use tokio_util::sync::CancellationToken;

use crate::jobs::{Dispatcher, Outcome};

/// Header telling an operator why a job sits in a retry tier.
pub const RETRY_REASON_HEADER: &str = "x-email2sms-retry-reason";

/// Consumes the job queue until `stop` is cancelled, then lets in-flight jobs finish.
pub async fn consume_jobs(
    dispatcher: Arc<Dispatcher>,
    amqp_url: String,
    topology: Topology,
    prefetch: u16,
    stop: CancellationToken,
) {
    // Names an operator (or a test) can pick out in `rabbitmqctl list_connections` when several
    // replicas, or several deployments sharing a broker, are connected.
    let id = format!("pid={} queue={}", std::process::id(), topology.jobs_queue());
    let consumer_broker = Broker::new(amqp_url.clone(), format!("email2sms-dispatch jobs {id}"));
    let publisher = Arc::new(Publisher::new(
        Broker::new(amqp_url, format!("email2sms-dispatch retries {id}")),
        Duration::from_secs(10),
    ));
    let declared = topology.clone();
    let queue = topology.jobs_queue();
    let topology = Arc::new(topology);
    run_consumer(
        consumer_broker,
        queue,
        prefetch,
        move |channel| {
            let topology = declared.clone();
            async move { topology.declare_jobs(&channel).await }
        },
        move |delivery| {
            let dispatcher = dispatcher.clone();
            let publisher = publisher.clone();
            let topology = topology.clone();
            async move { settle(&dispatcher, &publisher, &topology, delivery).await }
        },
        stop,
    )
    .await;
}

/// Header counting a job's failed deliveries before this one. A job sent through a retry tier
/// comes back as a new message, whose RabbitMQ delivery count (`x-delivery-count`, and with it the
/// queue's `x-delivery-limit`) starts again at zero; this header is what carries the count across
/// the tiers, so the delivery limit holds however a job failed.
pub const FAILED_DELIVERIES_HEADER: &str = "x-email2sms-failed-deliveries";

/// The quorum queue's count of earlier deliveries of this message (requeued or left unacked by a
/// consumer that went away), absent on the first.
const RABBITMQ_DELIVERY_COUNT_HEADER: &str = "x-delivery-count";

/// What the consumer does with a delivery: what [`decide`] answers, with everything settling it
/// needs, so that [`settle`] carries it out without looking at the outcome again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// Done with it: ack.
    Ack,
    /// Through a retry tier (publish with confirm, then ack).
    RetryAfter(RetryTier),
    /// Into the dead-letter queue with this reason (publish with confirm, then ack). `gave_up`:
    /// the job could have been retried but reached the delivery limit, so its row is failed too
    /// ([`Dispatcher::give_up`]) when it still waits queued.
    DeadLetter { reason: String, gave_up: bool },
    /// No retry tiers are configured: back to the queue, which counts it against its own limit.
    Requeue,
}

/// Where a job retried later goes, and what it carries there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryTier {
    /// The tier's delay.
    pub delay: Duration,
    /// The job's failed deliveries including this one, unless it was a throttled wait
    /// ([`FAILED_DELIVERIES_HEADER`]).
    pub failed_deliveries: u32,
    pub reason: String,
    pub throttled: bool,
}

/// The one decision every outcome of a delivery goes through, whichever path failed (the payload,
/// the database, the connector): `failed_before` is how many deliveries of this job failed before
/// this one ([`failed_deliveries`]).
///
/// * a permanent fault is dead-lettered at once with its reason;
/// * a transient one goes through the tier for its number of failed deliveries (the first failure
///   to the shortest, then each longer, then the longest), until the delivery limit: the delivery
///   that reaches it is dead-lettered, saying how many there were and why the last failed;
/// * a throttled one waits in the shortest tier, and does not count: the provider asked to slow
///   down, the job did nothing wrong.
pub fn decide(outcome: &Outcome, failed_before: u32, topology: &Topology) -> Settlement {
    let retry = match outcome {
        Outcome::Done => return Settlement::Ack,
        Outcome::Permanent(reason) => {
            return Settlement::DeadLetter {
                reason: reason.clone(),
                gave_up: false,
            };
        }
        Outcome::RetryLater(retry) => retry,
    };
    let (tier, failed_deliveries) = if retry.throttled {
        // A wait, not a failure: the count goes on unchanged.
        (topology.retry_delay_for(0), failed_before)
    } else {
        let deliveries = failed_before.saturating_add(1);
        if deliveries >= topology.delivery_limit {
            return Settlement::DeadLetter {
                reason: format!("gave up after {deliveries} deliveries: {}", retry.reason),
                gave_up: true,
            };
        }
        (topology.retry_delay_for(failed_before), deliveries)
    };
    tier.map_or(Settlement::Requeue, |delay| {
        Settlement::RetryAfter(RetryTier {
            delay,
            failed_deliveries,
            reason: retry.reason.clone(),
            throttled: retry.throttled,
        })
    })
}

/// How many deliveries of this job failed before this one: those counted through the retry tiers
/// ([`FAILED_DELIVERIES_HEADER`]) and RabbitMQ's redeliveries of this message.
pub fn failed_deliveries(delivery: &Delivery) -> u32 {
    let Some(headers) = delivery.properties.headers().as_ref() else {
        return 0;
    };
    let count = |name: &str| headers.inner().get(name).and_then(integer).unwrap_or(0);
    count(FAILED_DELIVERIES_HEADER).saturating_add(count(RABBITMQ_DELIVERY_COUNT_HEADER))
}

fn integer(value: &AMQPValue) -> Option<u32> {
    let wide: i64 = match value {
        AMQPValue::ShortShortInt(v) => i64::from(*v),
        AMQPValue::ShortShortUInt(v) => i64::from(*v),
        AMQPValue::ShortInt(v) => i64::from(*v),
        AMQPValue::ShortUInt(v) => i64::from(*v),
        AMQPValue::LongInt(v) => i64::from(*v),
        AMQPValue::LongUInt(v) => i64::from(*v),
        AMQPValue::LongLongInt(v) => *v,
        _ => return None,
    };
    u32::try_from(wide.max(0)).ok()
}

async fn settle(
    dispatcher: &Dispatcher,
    publisher: &Publisher,
    topology: &Topology,
    delivery: Delivery,
) -> Disposition {
    let failed_before = failed_deliveries(&delivery);
    let (job_id, outcome) = match SmsJob::decode(delivery.data.as_slice()) {
        Ok(job) => {
            let job_id = job.job_id.clone();
            (job_id, dispatcher.process_job(job).await)
        }
        Err(error) => (
            String::new(),
            Outcome::Permanent(format!("the message is not an SMS job: {error}")),
        ),
    };
    match decide(&outcome, failed_before, topology) {
        Settlement::Ack => Disposition::Ack,
        Settlement::Requeue => Disposition::Requeue,
        Settlement::DeadLetter { reason, gave_up } => {
            if gave_up {
                // Given up here rather than by the job store: its row says so too, when it can.
                dispatcher.give_up(&job_id, &reason).await;
            }
            park(publisher, topology, &delivery, &reason).await
        }
        Settlement::RetryAfter(tier) => {
            retry_later(publisher, topology, &delivery, &job_id, &tier).await
        }
    }
}

/// Sends the job through its retry tier, counting its failed deliveries so far.
async fn retry_later(
    publisher: &Publisher,
    topology: &Topology,
    delivery: &Delivery,
    job_id: &str,
    tier: &RetryTier,
) -> Disposition {
    let RetryTier {
        delay,
        failed_deliveries: failed,
        reason,
        throttled,
    } = tier;
    let mut headers = header(RETRY_REASON_HEADER, reason);
    headers.insert(
        FAILED_DELIVERIES_HEADER.into(),
        AMQPValue::LongLongInt(i64::from(*failed)),
    );
    let routing_key = topology.retry_tier(*delay);
    let exchange = topology.retry_exchange();
    let outcome = publisher
        .publish(Outgoing {
            exchange: &exchange,
            routing_key: &routing_key,
            payload: &delivery.data,
            message_id: job_id.to_owned(),
            message_type: SMS_JOB_TYPE,
            headers,
        })
        .await;
    match outcome {
        Ok(()) => {
            tracing::info!(job_id, ?delay, failed_deliveries = failed, %reason, throttled, "job retried later");
            Disposition::Ack
        }
        Err(error) => {
            // Requeued, RabbitMQ counts this delivery (x-delivery-count), so the limit still holds.
            tracing::warn!(job_id, %error, "cannot move the job to its retry tier; requeueing");
            Disposition::Requeue
        }
    }
}

/// Puts a job that can never succeed into the dead-letter queue with its reason.
async fn park(
    publisher: &Publisher,
    topology: &Topology,
    delivery: &Delivery,
    reason: &str,
) -> Disposition {
    let exchange = topology.dead_exchange();
    let message_id = delivery
        .properties
        .message_id()
        .as_ref()
        .map(|id| id.to_string())
        .unwrap_or_default();
    let outcome = publisher
        .publish(Outgoing {
            exchange: &exchange,
            routing_key: SMS_DEAD_ROUTING_KEY,
            payload: &delivery.data,
            message_id: message_id.clone(),
            message_type: SMS_JOB_TYPE,
            headers: header(DEAD_REASON_HEADER, reason),
        })
        .await;
    match outcome {
        Ok(()) => {
            tracing::warn!(message_id, reason, "job dead-lettered");
            Disposition::Ack
        }
        Err(error) => {
            // The queue's own dead-letter exchange still takes it, without the reason header.
            tracing::warn!(message_id, %error, reason, "cannot publish to the dead-letter queue; rejecting");
            Disposition::Reject
        }
    }
}

fn header(name: &str, value: &str) -> FieldTable {
    let mut headers = FieldTable::default();
    headers.insert(
        name.into(),
        AMQPValue::LongString(LongString::from(value.as_bytes().to_vec())),
    );
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::Retry;

    fn topology() -> Topology {
        Topology {
            prefix: "t.".into(),
            retry_delays: vec![
                Duration::from_secs(10),
                Duration::from_secs(60),
                Duration::from_secs(600),
            ],
            delivery_limit: 5,
            ..Topology::default()
        }
    }

    fn tier(seconds: u64, failed_deliveries: u32, reason: &str, throttled: bool) -> Settlement {
        Settlement::RetryAfter(RetryTier {
            delay: Duration::from_secs(seconds),
            failed_deliveries,
            reason: reason.into(),
            throttled,
        })
    }

    fn transient(reason: &str) -> Outcome {
        Outcome::RetryLater(Retry {
            throttled: false,
            attempts: 0,
            reason: reason.into(),
        })
    }

    #[test]
    fn done_is_acked_and_permanent_faults_are_dead_lettered_on_their_first_delivery() {
        assert_eq!(decide(&Outcome::Done, 0, &topology()), Settlement::Ack);
        assert_eq!(decide(&Outcome::Done, 9, &topology()), Settlement::Ack);
        assert_eq!(
            decide(&Outcome::Permanent("bad data".into()), 0, &topology()),
            Settlement::DeadLetter {
                reason: "bad data".into(),
                gave_up: false
            }
        );
    }

    #[test]
    fn transient_faults_walk_the_tiers_by_failed_deliveries_and_stop_at_the_limit() {
        let t = topology();
        // Whatever failed (database or connector), the count decides, not the job's own attempts.
        let walked: Vec<Settlement> = (0..5).map(|n| decide(&transient("x"), n, &t)).collect();
        assert_eq!(
            walked,
            [
                tier(10, 1, "x", false),
                tier(60, 2, "x", false),
                tier(600, 3, "x", false),
                tier(600, 4, "x", false),
                Settlement::DeadLetter {
                    reason: "gave up after 5 deliveries: x".into(),
                    gave_up: true
                },
            ]
        );
        // Past the limit (a count carried from before the limit was lowered) still dead-letters.
        assert!(matches!(
            decide(&transient("x"), 40, &t),
            Settlement::DeadLetter { gave_up: true, .. }
        ));
    }

    #[test]
    fn throttled_waits_stay_in_the_shortest_tier_and_never_reach_the_limit() {
        let throttled = Outcome::RetryLater(Retry {
            throttled: true,
            attempts: 3,
            reason: "over the user's rate".into(),
        });
        let reason = "over the user's rate";
        assert_eq!(
            decide(&throttled, 0, &topology()),
            tier(10, 0, reason, true)
        );
        assert_eq!(
            decide(&throttled, 4, &topology()),
            tier(10, 4, reason, true),
            "the count carried on unchanged"
        );
    }

    #[test]
    fn without_tiers_the_queue_redelivers_and_its_limit_still_holds() {
        let t = Topology {
            retry_delays: vec![],
            ..topology()
        };
        assert_eq!(decide(&transient("x"), 0, &t), Settlement::Requeue);
        assert!(matches!(
            decide(&transient("x"), 4, &t),
            Settlement::DeadLetter { gave_up: true, .. }
        ));
    }
}
