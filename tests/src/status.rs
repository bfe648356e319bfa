//! A subscriber of the status events, as the portal is one: it consumes the durable queue
//! `{prefix}sms.status` that every service's topology declares, decodes each
//! `SmsStatusChanged` and acknowledges it after keeping it.

use std::sync::{Arc, Mutex};

use email2sms_proto::prost::Message;
use email2sms_proto::queue::v1::{SmsState, SmsStatusChanged};
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};

/// The events received so far, in the order they arrived.
#[derive(Debug)]
pub struct StatusSubscriber {
    events: Arc<Mutex<Vec<SmsStatusChanged>>>,
    task: tokio::task::JoinHandle<()>,
    _connection: Connection,
}

impl StatusSubscriber {
    /// Consumes `queue` on the broker at `amqp_url`. The services declare their topology in the
    /// background once they listen, so a queue not there yet is waited for (30 s at most); a
    /// refused consume closes its channel, so each try opens a new one.
    pub async fn start(amqp_url: &str, queue: &str) -> StatusSubscriber {
        let connection = Connection::connect(amqp_url, ConnectionProperties::default())
            .await
            .expect("connect the status subscriber to RabbitMQ");
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut consumer = loop {
            let channel = connection.create_channel().await.expect("open a channel");
            match channel
                .basic_consume(
                    queue.into(),
                    "e2e-status-subscriber".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
            {
                Ok(consumer) => break consumer,
                Err(error) if tokio::time::Instant::now() < deadline => {
                    eprintln!("status subscriber: {queue} not consumable yet ({error}); retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Err(error) => panic!("consume {queue}: {error}"),
            }
        };
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let task = tokio::spawn(async move {
            while let Some(Ok(delivery)) = consumer.next().await {
                let event = SmsStatusChanged::decode(delivery.data.as_slice())
                    .expect("a status event is an SmsStatusChanged");
                sink.lock().expect("events").push(event);
                let _ = delivery.ack(BasicAckOptions::default()).await;
            }
        });
        StatusSubscriber {
            events,
            task,
            _connection: connection,
        }
    }

    /// The events of one job, in arrival order, with duplicates (same `event_id`, which
    /// at-least-once delivery allows) dropped as the README tells subscribers to.
    pub fn events_of(&self, job_id: &str) -> Vec<SmsStatusChanged> {
        let mut seen = std::collections::HashSet::new();
        self.events
            .lock()
            .expect("events")
            .iter()
            .filter(|e| e.job_id == job_id && seen.insert(e.event_id.clone()))
            .cloned()
            .collect()
    }

    /// The states the events of `job_id` announced, ordered by their `sequence`.
    pub fn states_of(&self, job_id: &str) -> Vec<(u64, SmsState)> {
        let mut states: Vec<(u64, SmsState)> = self
            .events_of(job_id)
            .iter()
            .map(|e| (e.sequence, e.state()))
            .collect();
        states.sort_by_key(|(sequence, _)| *sequence);
        states
    }
}

impl Drop for StatusSubscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}
