//! One connection per process, re-established on demand, and a publisher that only reports success
//! once RabbitMQ has confirmed the message.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tokio::sync::{Mutex, Semaphore};

use crate::QueueError;

fn answer_timeout() -> Duration {
    Duration::from_secs(crate::BROKER_ANSWER_SECONDS)
}

/// The broker connection of one process. Cheap to share; reconnects lazily after a broker restart
/// or a network failure, so callers simply ask again.
#[derive(Debug)]
pub struct Broker {
    url: String,
    name: String,
    connection: Mutex<Option<Arc<Connection>>>,
}

impl Broker {
    /// `name` shows in the RabbitMQ management UI, so an operator can tell the services apart.
    pub fn new(url: impl Into<String>, name: impl Into<String>) -> Arc<Broker> {
        Arc::new(Broker {
            url: url.into(),
            name: name.into(),
            connection: Mutex::new(None),
        })
    }

    /// The live connection, connecting (again) when there is none.
    pub async fn connection(&self) -> Result<Arc<Connection>, QueueError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref()
            && connection.status().connected()
        {
            return Ok(connection.clone());
        }
        let properties =
            ConnectionProperties::default().with_connection_name(self.name.clone().into());
        let connection = Arc::new(
            tokio::time::timeout(answer_timeout(), Connection::connect(&self.url, properties))
                .await
                .map_err(|_| QueueError::NoAnswer("the connection"))??,
        );
        tracing::info!(name = %self.name, "connected to RabbitMQ");
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// A fresh channel on the live connection.
    pub async fn channel(&self) -> Result<Channel, QueueError> {
        let connection = self.connection().await?;
        let error = match tokio::time::timeout(answer_timeout(), connection.create_channel()).await
        {
            Ok(Ok(channel)) => return Ok(channel),
            Ok(Err(error)) => error.into(),
            Err(_) => QueueError::NoAnswer("opening a channel"),
        };
        // The connection looked alive but is not: forget it so the next call reconnects.
        self.forget(&connection).await;
        Err(error)
    }

    /// Forgets the current connection (one that stopped answering), so the next call reconnects.
    pub async fn reconnect_next_time(&self) {
        let current = self.connection.lock().await.clone();
        if let Some(current) = current {
            self.forget(&current).await;
        }
    }

    async fn forget(&self, dead: &Arc<Connection>) {
        let mut slot = self.connection.lock().await;
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, dead)) {
            *slot = None;
        }
    }
}

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub payload: &'a [u8],
    /// The payload's own id (job id or event id): consumers drop duplicates by it.
    pub message_id: String,
    /// The protobuf message name, so a consumer knows what it decodes.
    pub message_type: &'a str,
    pub headers: FieldTable,
}

/// Publishes at most this many messages at once by default (one confirm channel each): more than
/// the SMTP sessions that are in DATA at once on a busy ingest, far below RabbitMQ's default
/// `channel_max` of 2047.
pub const DEFAULT_PUBLISH_CHANNELS: usize = 64;

/// Publishes persistent messages and waits for the broker's confirm of each.
///
/// Every message in flight has a confirm channel to itself (from a pool on the one connection).
/// When RabbitMQ returns an unroutable `mandatory` message it sends `basic.return` and then the
/// ack, and lapin hands the returned message to whichever confirm completes next on that channel;
/// with several publishes in flight on one channel a return can be pinned on the wrong message. Seen
/// under load at ingest: an event without a bound queue was returned, a concurrently published SMS
/// job that the broker had stored was reported unroutable and the relay delivered it again. The
/// other way round would lose a message: one that was not routed, confirmed as stored.
#[derive(Debug)]
pub struct Publisher {
    broker: Arc<Broker>,
    confirm_timeout: Duration,
    idle: std::sync::Mutex<Vec<Channel>>,
    in_flight: Semaphore,
}

impl Publisher {
    pub fn new(broker: Arc<Broker>, confirm_timeout: Duration) -> Publisher {
        Publisher::with_channels(broker, confirm_timeout, DEFAULT_PUBLISH_CHANNELS)
    }

    /// A publisher with at most `channels` messages in flight (at least one).
    pub fn with_channels(
        broker: Arc<Broker>,
        confirm_timeout: Duration,
        channels: usize,
    ) -> Publisher {
        Publisher {
            broker,
            confirm_timeout,
            idle: std::sync::Mutex::new(Vec::new()),
            in_flight: Semaphore::new(channels.max(1)),
        }
    }

    /// The connection this publisher uses, for declaring topology on it.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Channel>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An idle confirm channel, or a new one.
    async fn confirm_channel(&self) -> Result<Channel, QueueError> {
        loop {
            let Some(channel) = self.idle().pop() else {
                break;
            };
            if channel.status().connected() {
                return Ok(channel);
            }
        }
        let channel = self.broker.channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(channel)
    }

    /// Publishes `message` as persistent and mandatory, and returns only once RabbitMQ has
    /// confirmed it: stored in every queue it routes to. Unroutable, refused or unconfirmed messages
    /// are errors, so the caller never reports success for a message the broker does not hold.
    pub async fn publish(&self, message: Outgoing<'_>) -> Result<(), QueueError> {
        let _slot = self
            .in_flight
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let channel = self.confirm_channel().await?;
        let outcome = self.publish_on(&channel, message).await;
        // The channel goes back only after a publish that ran to its end on a sound channel. If
        // this future is dropped half way, or the confirm never came, the channel is dropped (and
        // so closed): a late return or ack can never reach another message.
        if !matches!(
            outcome,
            Err(QueueError::Amqp(_)) | Err(QueueError::ConfirmTimeout { .. })
        ) && channel.status().connected()
        {
            self.idle().push(channel);
        }
        outcome
    }

    /// Publishes `messages` in this order on one channel, without waiting for each confirm before
    /// the next publish, and returns each message's outcome (as [`Publisher::publish`] would).
    /// RabbitMQ keeps the order of one channel, so consumers see them in this order.
    ///
    /// The confirms are told apart by message id, which must therefore differ: with several
    /// messages in flight on one channel lapin may hand a returned (unroutable) message to another
    /// message's confirm, so a message counts as unroutable when a return *with its id* came back
    /// on any of the batch's confirms. RabbitMQ sends a message's return before its ack, so by the
    /// time every confirm of the batch is in, every return of the batch is too.
    pub async fn publish_in_order(
        &self,
        messages: Vec<Outgoing<'_>>,
    ) -> Vec<Result<(), QueueError>> {
        if messages.is_empty() {
            return Vec::new();
        }
        let _slot = self
            .in_flight
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let channel = match self.confirm_channel().await {
            Ok(channel) => channel,
            Err(error) => {
                return messages
                    .iter()
                    .map(|m| {
                        Err(QueueError::NotSent {
                            routing_key: m.routing_key.to_owned(),
                            cause: error.to_string(),
                        })
                    })
                    .collect();
            }
        };
        let mut pending = Vec::with_capacity(messages.len());
        let mut broken = None;
        for message in messages {
            let routing_key = message.routing_key.to_owned();
            let message_id = message.message_id.clone();
            if let Some(cause) = &broken {
                pending.push((
                    routing_key.clone(),
                    message_id,
                    Err(QueueError::NotSent {
                        routing_key,
                        cause: String::clone(cause),
                    }),
                ));
                continue;
            }
            match self.send(&channel, message).await {
                Ok(confirm) => pending.push((routing_key, message_id, Ok(confirm))),
                Err(error) => {
                    broken = Some(error.to_string());
                    pending.push((routing_key, message_id, Err(error)));
                }
            }
        }
        let mut returned = std::collections::HashSet::new();
        let mut confirmed = Vec::with_capacity(pending.len());
        let mut channel_sound = broken.is_none();
        // One deadline for the batch, so a stalled broker costs one timeout, not one per message.
        let deadline = tokio::time::Instant::now() + self.confirm_timeout;
        for (routing_key, message_id, sent) in pending {
            let outcome = match sent {
                Err(error) => Err(error),
                Ok(confirm) => match tokio::time::timeout_at(deadline, confirm).await {
                    Err(_) => Err(QueueError::ConfirmTimeout {
                        routing_key: routing_key.clone(),
                        seconds: self.confirm_timeout.as_secs(),
                    }),
                    Ok(Err(error)) => Err(error.into()),
                    Ok(Ok(confirmation)) => Ok(confirmation),
                },
            };
            if matches!(
                outcome,
                Err(QueueError::Amqp(_)) | Err(QueueError::ConfirmTimeout { .. })
            ) {
                channel_sound = false;
            }
            // lapin hands a return to whichever completion comes next, a nack included.
            let outcome = outcome.map(|confirmation| {
                let (acked, ret) = match confirmation {
                    Confirmation::Ack(ret) => (true, ret),
                    Confirmation::Nack(ret) => (false, ret),
                    Confirmation::NotRequested => (false, None),
                };
                if let Some(id) = ret.and_then(|r| r.delivery.properties.message_id().clone()) {
                    returned.insert(id.to_string());
                }
                acked
            });
            confirmed.push((routing_key, message_id, outcome));
        }
        // A confirm that never came may have carried another message's return: then no ack of
        // the batch proves its message was stored.
        let returns_lost = !channel_sound;
        if channel_sound && channel.status().connected() {
            self.idle().push(channel);
        }
        confirmed
            .into_iter()
            .map(|(routing_key, message_id, outcome)| match outcome {
                Err(error) => Err(error),
                Ok(true) if returns_lost => Err(QueueError::Unsettled { routing_key }),
                Ok(false) => Err(QueueError::Nacked { routing_key }),
                Ok(true) if returned.contains(&message_id) => {
                    Err(QueueError::Unroutable { routing_key })
                }
                Ok(true) => Ok(()),
            })
            .collect()
    }

    /// Sends `message` (persistent, mandatory) and returns its confirm.
    async fn send(
        &self,
        channel: &Channel,
        message: Outgoing<'_>,
    ) -> Result<lapin::PublisherConfirm, QueueError> {
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(email2sms_proto::queue::v1::CONTENT_TYPE.into())
            .with_message_id(ShortString::from(message.message_id))
            .with_type(message.message_type.into())
            .with_timestamp(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
            )
            .with_headers(message.headers);
        Ok(channel
            .basic_publish(
                message.exchange.into(),
                message.routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                message.payload,
                properties,
            )
            .await?)
    }

    async fn publish_on(&self, channel: &Channel, message: Outgoing<'_>) -> Result<(), QueueError> {
        let routing_key = message.routing_key.to_owned();
        let confirm = self.send(channel, message).await?;
        match tokio::time::timeout(self.confirm_timeout, confirm).await {
            Err(_) => Err(QueueError::ConfirmTimeout {
                routing_key,
                seconds: self.confirm_timeout.as_secs(),
            }),
            Ok(confirmation) => match confirmation? {
                Confirmation::Ack(None) => Ok(()),
                Confirmation::Ack(Some(_)) => Err(QueueError::Unroutable { routing_key }),
                Confirmation::Nack(_) | Confirmation::NotRequested => {
                    Err(QueueError::Nacked { routing_key })
                }
            },
        }
    }
}
