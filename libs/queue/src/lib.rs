//! RabbitMQ for every Email2SMS service: the one topology declaration that ingest and dispatch both
//! call, publishing with publisher confirms, the transactional outbox relay, and consumers that
//! reconnect by themselves.
#![forbid(unsafe_code)]

pub mod broker;
pub mod consumer;
pub mod outbox;
pub mod outbox_metrics;
pub mod outbox_table;
pub mod topology;

pub use broker::{Broker, DEFAULT_PUBLISH_CHANNELS, Outgoing, Publisher};
pub use consumer::{Disposition, run_consumer};
pub use topology::{QueueArgs, Topology};

/// How long connecting, opening a channel or setting up a consumer may take: a broker that went
/// away can leave a connection that looks open and never answers again.
pub const BROKER_ANSWER_SECONDS: u64 = 10;

/// Everything that can go wrong talking to the broker.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("RabbitMQ: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("RabbitMQ refused the message (nack) for {routing_key}")]
    Nacked { routing_key: String },
    #[error("RabbitMQ could not route the message for {routing_key} to any queue")]
    Unroutable { routing_key: String },
    #[error("RabbitMQ did not confirm the message for {routing_key} within {seconds} s")]
    ConfirmTimeout { routing_key: String, seconds: u64 },
    #[error("the message for {routing_key} was not sent: {cause}")]
    NotSent { routing_key: String, cause: String },
    #[error(
        "RabbitMQ acked the message for {routing_key}, but another confirm of its batch never came, \
         so whether it was routed is unknown"
    )]
    Unsettled { routing_key: String },
    #[error("no message type is known for routing key {0}")]
    UnknownRoutingKey(String),
    #[error("RabbitMQ did not answer {0} within {BROKER_ANSWER_SECONDS} s")]
    NoAnswer(&'static str),
    /// The queue exists with other arguments than this process declares; it keeps them (see
    /// [`topology`]), and the next declaration, on a new channel, succeeds.
    #[error("queue {queue} keeps the arguments it was declared with: {detail}")]
    InequivalentArguments { queue: String, detail: String },
    #[error("outbox: {0}")]
    Database(#[from] sqlx::Error),
}

/// The protobuf message name carried by each event routing key, sent as the AMQP `type` property so
/// a consumer can tell what it is decoding.
pub fn message_type(routing_key: &str) -> Option<&'static str> {
    use email2sms_proto::queue::v1 as q;
    match routing_key {
        q::DOMAIN_VERIFICATION_CHANGED_ROUTING_KEY => Some(q::DOMAIN_VERIFICATION_CHANGED_TYPE),
        q::SENDER_IP_SEEN_ROUTING_KEY => Some(q::SENDER_IP_SEEN_TYPE),
        q::SMS_STATUS_CHANGED_ROUTING_KEY => Some(q::SMS_STATUS_CHANGED_TYPE),
        _ => None,
    }
}
