//! The RabbitMQ side of dispatch: consumes SMS jobs with manual acks and a prefetch window, hands
//! each to the [`Dispatcher`], and settles it by the outcome: done → ack; transient → through the
//! retry tier for its attempt count, then ack; permanent → into the dead-letter queue with the
//! reason in a header, then ack. A job is only acked once its next home (the SMSC, a retry tier
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

async fn settle(
    dispatcher: &Dispatcher,
    publisher: &Publisher,
    topology: &Topology,
    delivery: Delivery,
) -> Disposition {
    let job = match SmsJob::decode(delivery.data.as_slice()) {
        Ok(job) => job,
        Err(error) => {
            return park(
                publisher,
                topology,
                &delivery,
                &format!("the message is not an SMS job: {error}"),
            )
            .await;
        }
    };
    let job_id = job.job_id.clone();
    match dispatcher.process_job(job).await {
        Outcome::Done => Disposition::Ack,
        Outcome::Permanent(reason) => park(publisher, topology, &delivery, &reason).await,
        Outcome::RetryLater(retry) => {
            // A throttled job waits in the shortest tier: its wait is about the bucket refilling,
            // not about how often it failed.
            let tier_index = if retry.throttled {
                0
            } else {
                retry.attempts.saturating_sub(1)
            };
            let Some(delay) = topology.retry_delay_for(tier_index) else {
                // No tiers configured: the queue itself redelivers (counting against its limit).
                return Disposition::Requeue;
            };
            let tier = topology.retry_tier(delay);
            let exchange = topology.retry_exchange();
            let outcome = publisher
                .publish(Outgoing {
                    exchange: &exchange,
                    routing_key: &tier,
                    payload: &delivery.data,
                    message_id: job_id.clone(),
                    message_type: SMS_JOB_TYPE,
                    headers: header(RETRY_REASON_HEADER, &retry.reason),
                })
                .await;
            match outcome {
                Ok(()) => {
                    tracing::info!(job_id, ?delay, reason = %retry.reason, throttled = retry.throttled, "job retried later");
                    Disposition::Ack
                }
                Err(error) => {
                    tracing::warn!(job_id, %error, "cannot move the job to its retry tier; requeueing");
                    Disposition::Requeue
                }
            }
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
