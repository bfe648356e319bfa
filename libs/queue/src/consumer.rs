//! A consumer that survives broker restarts: it declares what it needs, consumes with manual acks
//! and a prefetch window, and on any connection or channel failure reconnects with back-off and
//! carries on by itself. Unacknowledged deliveries return to the queue when the channel dies, so a
//! reconnect loses nothing.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;

use tokio_util::sync::CancellationToken;

use crate::{Broker, QueueError};

/// What to do with a delivery once the handler is done with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Done (or deliberately parked elsewhere): remove it from the queue.
    Ack,
    /// Could not be handled now: put it back for another attempt (counts against the delivery
    /// limit of a quorum queue).
    Requeue,
    /// Will never succeed: dead-letter it if the queue has a dead-letter exchange, else drop it.
    Reject,
}

/// Consumes `queue` until `shutdown` is cancelled, calling `handler` for up to `prefetch`
/// deliveries at once. `declare` runs on every (re)connection before consuming, so the topology is
/// always there. On shutdown it stops taking deliveries, lets the in-flight ones finish and settle,
/// and returns; deliveries prefetched but not started go back to the queue with the channel.
pub async fn run_consumer<D, DFut, H, HFut>(
    broker: Arc<Broker>,
    queue: String,
    prefetch: u16,
    declare: D,
    handler: H,
    shutdown: CancellationToken,
) where
    D: Fn(Channel) -> DFut,
    DFut: Future<Output = Result<(), QueueError>>,
    H: Fn(Delivery) -> HFut + Clone,
    HFut: Future<Output = Disposition>,
{
    let mut backoff = Duration::from_millis(200);
    while !shutdown.is_cancelled() {
        let mut consumed = false;
        let outcome = consume_once(
            &broker,
            &queue,
            prefetch,
            &declare,
            handler.clone(),
            &shutdown,
            &mut consumed,
        )
        .await;
        if consumed {
            // It got as far as consuming: a new failure starts the back-off afresh, or a broker
            // that was away for a while would be retried ever more slowly on each restart.
            backoff = Duration::from_millis(200);
        }
        match outcome {
            Ok(()) if shutdown.is_cancelled() => return,
            Ok(()) => {
                tracing::warn!(%queue, "the broker ended the consumer; reconnecting");
            }
            Err(error) => {
                tracing::warn!(%queue, %error, retry_in = ?backoff, "consumer lost the broker; reconnecting");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

async fn consume_once<D, DFut, H, HFut>(
    broker: &Broker,
    queue: &str,
    prefetch: u16,
    declare: &D,
    handler: H,
    shutdown: &CancellationToken,
    consumed: &mut bool,
) -> Result<(), QueueError>
where
    D: Fn(Channel) -> DFut,
    DFut: Future<Output = Result<(), QueueError>>,
    H: Fn(Delivery) -> HFut,
    HFut: Future<Output = Disposition>,
{
    let setup = async {
        let channel = broker.channel().await?;
        declare(channel.clone()).await?;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok::<_, QueueError>((channel, consumer))
    };
    let (channel, consumer) = match tokio::time::timeout(
        Duration::from_secs(crate::BROKER_ANSWER_SECONDS),
        setup,
    )
    .await
    {
        Ok(result) => result?,
        Err(_) => {
            // A connection the broker dropped without our noticing: start afresh next time.
            broker.reconnect_next_time().await;
            return Err(QueueError::NoAnswer("setting up the consumer"));
        }
    };
    tracing::info!(%queue, prefetch, "consuming");
    *consumed = true;
    let failed = std::sync::Mutex::new(None::<QueueError>);
    consumer
        .take_until(shutdown.cancelled())
        .take_while(|delivery| {
            let keep = match delivery {
                Ok(_) => true,
                Err(error) => {
                    *failed.lock().expect("consumer error slot") =
                        Some(QueueError::Amqp(error.clone()));
                    false
                }
            };
            std::future::ready(keep)
        })
        .filter_map(|delivery| std::future::ready(delivery.ok()))
        .for_each_concurrent(usize::from(prefetch.max(1)), |delivery| {
            let handler = &handler;
            async move {
                let acker = delivery.acker.clone();
                let outcome = match handler(delivery).await {
                    Disposition::Ack => acker.ack(BasicAckOptions::default()).await,
                    Disposition::Requeue => {
                        acker
                            .nack(BasicNackOptions {
                                requeue: true,
                                ..Default::default()
                            })
                            .await
                    }
                    Disposition::Reject => {
                        acker
                            .nack(BasicNackOptions {
                                requeue: false,
                                ..Default::default()
                            })
                            .await
                    }
                };
                if let Err(error) = outcome {
                    // The channel is gone; the broker redelivers this message to the next consumer.
                    tracing::warn!(%error, "could not settle a delivery");
                }
            }
        })
        .await;
    if shutdown.is_cancelled() {
        // Hand back what was prefetched but never started, now rather than at process exit.
        let _ = channel.close(200, "shutting down".into()).await;
    }
    match failed.into_inner().expect("consumer error slot") {
        Some(error) => Err(error),
        None => Ok(()),
    }
}
