//! The queue topology, declared by one function that ingest and dispatch both call at start, so the
//! arguments of the queues they share come from one place.
//!
//! Some arguments are settings (the status queue's bound, the job queue's delivery limit), and
//! RabbitMQ refuses to redeclare a queue with other arguments than it has (`PRECONDITION_FAILED -
//! inequivalent arg`), closing the channel. Were that an error like any other, changing
//! `EMAIL2SMS_STATUS_QUEUE_MAX_LENGTH`, or two replicas rolled out with different values, would
//! make every outbox relay and consumer retry its declaration forever and publish nothing. So a
//! queue found with other arguments keeps its own: the mismatch is logged once per process as an
//! error naming the argument and how to change it (a RabbitMQ policy, or deleting the queue), and
//! from then on the queue is only checked to exist (a passive declare) until it is gone.
//!
//! ```text
//!  ingest ──▶ {prefix}jobs (direct) ──sms.job──▶ {prefix}sms.jobs (quorum, delivery limit)
//!                    ▲                                   │ poison (delivery limit) / permanent
//!                    │ TTL expiry                         ▼
//!  {prefix}retry (direct) ──<tier>──▶ {prefix}sms.retry.<tier>   {prefix}dead ──▶ {prefix}sms.dead
//!
//!  every service ──▶ {prefix}events (topic) ─sms.status.changed──▶ {prefix}sms.status (bounded)
//!                                          ├─domain.verification.changed, sender.ip_seen──▶
//!                                          │                             {prefix}policy.events
//!                                          └─<routing key>──▶ any other consumer's own queue
//! ```

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

use email2sms_runtime::config::{ConfigError, check_url};

use crate::QueueError;
use email2sms_proto::queue::v1::SMS_STATUS_CHANGED_ROUTING_KEY;

/// Routing key of SMS jobs on the jobs exchange and of their way back from a retry tier.
pub const SMS_JOB_ROUTING_KEY: &str = "sms.job";
/// Routing key of jobs parked in the dead-letter queue.
pub const SMS_DEAD_ROUTING_KEY: &str = "sms.dead";
/// The routing keys of the policy service's queue ([`Topology::policy_events_queue`]).
pub const POLICY_EVENT_ROUTING_KEYS: [&str; 2] = [
    email2sms_proto::queue::v1::DOMAIN_VERIFICATION_CHANGED_ROUTING_KEY,
    email2sms_proto::queue::v1::SENDER_IP_SEEN_ROUTING_KEY,
];
/// Header carrying why a job was dead-lettered, for the operator reading the queue.
pub const DEAD_REASON_HEADER: &str = "x-email2sms-reason";

/// The queue settings every service takes: where the broker is and the topology's names and
/// arguments. Every service should be given the same values: a queue declared first with other
/// arguments keeps them, and the others log an error saying so (see the module doc).
#[derive(Debug, Clone, clap::Args)]
pub struct QueueArgs {
    /// RabbitMQ URL.
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true
    )]
    pub amqp_url: String,

    /// Prefix of every exchange and queue name, to keep deployments sharing a broker apart.
    #[arg(long, env = "EMAIL2SMS_AMQP_PREFIX", default_value = "email2sms.")]
    pub amqp_prefix: String,

    /// Delays of the SMS retry tiers, shortest first, comma-separated (e.g. 10s,1m,10m,1h).
    #[arg(long, env = "EMAIL2SMS_RETRY_DELAYS", value_delimiter = ',', default_value = "10s,1m,10m,1h", value_parser = parse_delay)]
    pub retry_delays: Vec<Duration>,

    /// Deliveries of one SMS job before it is treated as poison and dead-lettered.
    #[arg(long, env = "EMAIL2SMS_DELIVERY_LIMIT", default_value_t = 10)]
    pub delivery_limit: u32,

    /// Status events the status queue holds at most; when full the oldest are dropped.
    #[arg(long, env = "EMAIL2SMS_STATUS_QUEUE_MAX_LENGTH", default_value_t = DEFAULT_STATUS_QUEUE_MAX_LENGTH)]
    pub status_queue_max_length: u64,

    /// How long an unread status event stays in the status queue (e.g. 1d, 12h).
    #[arg(long, env = "EMAIL2SMS_STATUS_QUEUE_TTL", default_value = "1d", value_parser = parse_delay)]
    pub status_queue_ttl: Duration,
}

/// The status queue's default bound: with ~250-byte events (four or five per SMS), at most about
/// 250 MB of the broker's disk for some 200,000 SMS, a few hours of a busy gateway's traffic kept
/// for a portal that is down.
pub const DEFAULT_STATUS_QUEUE_MAX_LENGTH: u64 = 1_000_000;
/// The status queue's default TTL: a day, long enough for a portal to come back from an outage,
/// short enough that an unread queue empties itself.
pub const DEFAULT_STATUS_QUEUE_TTL: Duration = Duration::from_secs(86_400);

/// The bound of the status events queue ([`Topology::status_events_queue`]): it is read by the
/// portal or any subscriber, and must not fill the broker when nobody reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusQueueBounds {
    /// Events held at most (`x-max-length`); when full the oldest go (`x-overflow: drop-head`).
    pub max_length: u64,
    /// How long an event stays unread (`x-message-ttl`).
    pub ttl: Duration,
}

impl Default for StatusQueueBounds {
    fn default() -> Self {
        StatusQueueBounds {
            max_length: DEFAULT_STATUS_QUEUE_MAX_LENGTH,
            ttl: DEFAULT_STATUS_QUEUE_TTL,
        }
    }
}

fn parse_delay(text: &str) -> Result<Duration, String> {
    let delay = email2sms_runtime::config::parse_duration(text)?;
    if delay.is_zero() {
        return Err("a retry delay must be longer than zero".into());
    }
    Ok(delay)
}

impl QueueArgs {
    /// Checks the settings without connecting; the message names the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_url("AMQP_URL", &self.amqp_url, &["amqp", "amqps"])?;
        let invalid = |name, reason: &str| ConfigError::Invalid {
            name,
            reason: reason.into(),
        };
        if self.amqp_prefix.is_empty() || self.amqp_prefix.len() > 100 {
            return Err(invalid(
                "EMAIL2SMS_AMQP_PREFIX",
                "must be 1 to 100 characters",
            ));
        }
        if self.delivery_limit == 0 {
            return Err(invalid("EMAIL2SMS_DELIVERY_LIMIT", "must be at least 1"));
        }
        if self.status_queue_max_length == 0 || self.status_queue_max_length > i64::MAX as u64 {
            return Err(invalid(
                "EMAIL2SMS_STATUS_QUEUE_MAX_LENGTH",
                "must be between 1 and 9223372036854775807",
            ));
        }
        if self.status_queue_ttl > Duration::from_secs(365 * 86_400) {
            return Err(invalid(
                "EMAIL2SMS_STATUS_QUEUE_TTL",
                "must be at most a year",
            ));
        }
        if self.retry_delays.windows(2).any(|w| w[0] >= w[1]) {
            return Err(invalid(
                "EMAIL2SMS_RETRY_DELAYS",
                "the delays must grow: shortest first",
            ));
        }
        Ok(())
    }

    pub fn topology(&self) -> Topology {
        Topology {
            prefix: self.amqp_prefix.clone(),
            retry_delays: self.retry_delays.clone(),
            delivery_limit: self.delivery_limit,
            status_events: StatusQueueBounds {
                max_length: self.status_queue_max_length,
                ttl: self.status_queue_ttl,
            },
        }
    }
}

/// Names and arguments of every exchange and queue. `prefix` keeps deployments (and parallel tests)
/// sharing one broker apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub prefix: String,
    /// Delays of the retry tiers, shortest first. Each tier is its own TTL queue named after its
    /// delay, so changing the delays adds queues rather than conflicting with the old ones.
    pub retry_delays: Vec<Duration>,
    /// Deliveries of one job before RabbitMQ treats it as poison and dead-letters it.
    pub delivery_limit: u32,
    /// The bound of the status events queue.
    pub status_events: StatusQueueBounds,
}

impl Default for Topology {
    fn default() -> Self {
        Topology {
            prefix: "email2sms.".into(),
            retry_delays: vec![
                Duration::from_secs(10),
                Duration::from_secs(60),
                Duration::from_secs(600),
                Duration::from_secs(3600),
            ],
            delivery_limit: 10,
            status_events: StatusQueueBounds::default(),
        }
    }
}

fn string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value.as_bytes().to_vec()))
}

fn tier_label(delay: Duration) -> String {
    let ms = delay.as_millis();
    if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

impl Topology {
    pub fn jobs_exchange(&self) -> String {
        format!("{}jobs", self.prefix)
    }
    pub fn jobs_queue(&self) -> String {
        format!("{}sms.jobs", self.prefix)
    }
    pub fn retry_exchange(&self) -> String {
        format!("{}retry", self.prefix)
    }
    /// The routing key (and queue suffix) of the retry tier with `delay`.
    pub fn retry_tier(&self, delay: Duration) -> String {
        tier_label(delay)
    }
    pub fn retry_queue(&self, delay: Duration) -> String {
        format!("{}sms.retry.{}", self.prefix, tier_label(delay))
    }
    pub fn dead_exchange(&self) -> String {
        format!("{}dead", self.prefix)
    }
    pub fn dead_queue(&self) -> String {
        format!("{}sms.dead", self.prefix)
    }
    /// Every queue [`Topology::declare_jobs`] declares: the job queue, each retry tier and the
    /// dead-letter queue (what a test or benchmark deletes when it is done).
    pub fn job_path_queues(&self) -> Vec<String> {
        let mut queues = vec![self.jobs_queue()];
        queues.extend(self.retry_delays.iter().map(|d| self.retry_queue(*d)));
        queues.push(self.dead_queue());
        queues
    }
    pub fn events_exchange(&self) -> String {
        format!("{}events", self.prefix)
    }
    /// The queue of `sms.status.changed` events, read by the portal (or any subscriber).
    pub fn status_events_queue(&self) -> String {
        format!("{}sms.status", self.prefix)
    }
    /// The policy service's queue: `domain.verification.changed` and `sender.ip_seen`.
    pub fn policy_events_queue(&self) -> String {
        format!("{}policy.events", self.prefix)
    }

    /// The retry tier for a job that has already failed `attempts` times: the delays grow with each
    /// attempt and stay at the longest. `None` when there are no tiers.
    pub fn retry_delay_for(&self, attempts: u32) -> Option<Duration> {
        let index = (attempts as usize).min(self.retry_delays.len().checked_sub(1)?);
        self.retry_delays.get(index).copied()
    }

    /// Declares the SMS job path: exchanges, the quorum job queue, the retry tiers and the
    /// dead-letter queue. Idempotent.
    pub async fn declare_jobs(&self, channel: &Channel) -> Result<(), QueueError> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        for exchange in [
            self.jobs_exchange(),
            self.retry_exchange(),
            self.dead_exchange(),
        ] {
            channel
                .exchange_declare(
                    exchange.into(),
                    ExchangeKind::Direct,
                    durable,
                    FieldTable::default(),
                )
                .await?;
        }

        let mut jobs = quorum_arguments();
        jobs.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(i32::try_from(self.delivery_limit).unwrap_or(i32::MAX)),
        );
        jobs.insert(
            "x-dead-letter-exchange".into(),
            string(&self.dead_exchange()),
        );
        jobs.insert(
            "x-dead-letter-routing-key".into(),
            string(SMS_DEAD_ROUTING_KEY),
        );
        self.declare_bound_queue(
            channel,
            &self.jobs_queue(),
            jobs,
            &self.jobs_exchange(),
            &[SMS_JOB_ROUTING_KEY],
        )
        .await?;

        for delay in &self.retry_delays {
            let mut tier = quorum_arguments();
            tier.insert(
                "x-message-ttl".into(),
                AMQPValue::LongLongInt(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)),
            );
            tier.insert(
                "x-dead-letter-exchange".into(),
                string(&self.jobs_exchange()),
            );
            tier.insert(
                "x-dead-letter-routing-key".into(),
                string(SMS_JOB_ROUTING_KEY),
            );
            // Quorum queues dead-letter at most once unless told otherwise; a job leaving a retry
            // tier must never be lost on the way back.
            tier.insert("x-dead-letter-strategy".into(), string("at-least-once"));
            tier.insert("x-overflow".into(), string("reject-publish"));
            self.declare_bound_queue(
                channel,
                &self.retry_queue(*delay),
                tier,
                &self.retry_exchange(),
                &[self.retry_tier(*delay).as_str()],
            )
            .await?;
        }

        self.declare_bound_queue(
            channel,
            &self.dead_queue(),
            quorum_arguments(),
            &self.dead_exchange(),
            &[SMS_DEAD_ROUTING_KEY],
        )
        .await
    }

    /// Declares the events exchange every service publishes to, and a home for every event type
    /// the services publish, so that no event is unroutable for want of a subscriber that has not
    /// started yet (or, for status events, does not exist at all): the status events queue and the
    /// policy service's queue. Idempotent.
    pub async fn declare_events(&self, channel: &Channel) -> Result<(), QueueError> {
        channel
            .exchange_declare(
                self.events_exchange().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        self.declare_bound_queue(
            channel,
            &self.status_events_queue(),
            self.status_events_arguments(),
            &self.events_exchange(),
            &[SMS_STATUS_CHANGED_ROUTING_KEY],
        )
        .await?;
        self.bind_event_queue(
            channel,
            &self.policy_events_queue(),
            &POLICY_EVENT_ROUTING_KEYS,
        )
        .await
    }

    /// The status queue's arguments: a quorum queue (one consumer sees the events in the order
    /// they were published) bounded in length and age. When full it drops the oldest event
    /// (`drop-head`) rather than refusing the newest (`reject-publish`): refused events would stay
    /// in every publisher's outbox and hold back all the events behind them, so an unread queue
    /// would fill PostgreSQL instead of the broker. A subscriber that finds a gap in a job's
    /// `sequence` reads the job's state with `GetMessage`.
    fn status_events_arguments(&self) -> FieldTable {
        let mut arguments = quorum_arguments();
        arguments.insert(
            "x-max-length".into(),
            AMQPValue::LongLongInt(
                i64::try_from(self.status_events.max_length).unwrap_or(i64::MAX),
            ),
        );
        arguments.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(
                i64::try_from(self.status_events.ttl.as_millis()).unwrap_or(i64::MAX),
            ),
        );
        arguments.insert("x-overflow".into(), string("drop-head"));
        arguments
    }

    /// Declares a consumer's own durable queue on the events exchange, bound to `routing_keys`.
    pub async fn declare_event_queue(
        &self,
        channel: &Channel,
        queue: &str,
        routing_keys: &[&str],
    ) -> Result<(), QueueError> {
        self.declare_events(channel).await?;
        self.bind_event_queue(channel, queue, routing_keys).await
    }

    /// Declares a durable quorum queue bound to the events exchange under `routing_keys`.
    async fn bind_event_queue(
        &self,
        channel: &Channel,
        queue: &str,
        routing_keys: &[&str],
    ) -> Result<(), QueueError> {
        self.declare_bound_queue(
            channel,
            queue,
            quorum_arguments(),
            &self.events_exchange(),
            routing_keys,
        )
        .await
    }

    /// Declares `queue` with `arguments` (or, once it was found with others, checks that it
    /// exists: see the module doc) and binds it to `exchange` under each of `routing_keys`.
    async fn declare_bound_queue(
        &self,
        channel: &Channel,
        queue: &str,
        arguments: FieldTable,
        exchange: &str,
        routing_keys: &[&str],
    ) -> Result<(), QueueError> {
        let keeps_its_own = KEEPING_THEIR_ARGUMENTS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(queue);
        let options = QueueDeclareOptions {
            durable: true,
            passive: keeps_its_own,
            ..Default::default()
        };
        let arguments = if keeps_its_own {
            FieldTable::default()
        } else {
            arguments
        };
        match channel
            .queue_declare(ShortString::from(queue), options, arguments)
            .await
        {
            Ok(_) => {}
            Err(error) => return Err(declare_refused(queue, keeps_its_own, error)),
        }
        for routing_key in routing_keys {
            channel
                .queue_bind(
                    queue.into(),
                    exchange.into(),
                    (*routing_key).into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }
}

/// The queues of this process found with other arguments than it declares, which keep theirs: it
/// only checks that they exist from then on.
static KEEPING_THEIR_ARGUMENTS: LazyLock<Mutex<HashSet<String>>> =
    LazyLock::new(|| Mutex::new(HashSet::new()));

/// What a refused declaration of `queue` means. A queue with other arguments is remembered as
/// keeping them, with one error in the log; a queue that was kept but is gone now (an operator
/// deleted it) is declared with this process's arguments next time. Either way the channel is
/// closed by the broker and the caller declares again on a new one.
fn declare_refused(queue: &str, was_kept: bool, error: lapin::Error) -> QueueError {
    let refusal = match error.kind() {
        lapin::ErrorKind::ProtocolError(refusal) => Some(refusal),
        _ => None,
    };
    let soft = |expected: AMQPSoftError| {
        refusal.is_some_and(|r| *r.kind() == AMQPErrorKind::Soft(expected))
    };
    let mut kept = KEEPING_THEIR_ARGUMENTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if was_kept && soft(AMQPSoftError::NOTFOUND) {
        kept.remove(queue);
        return QueueError::Amqp(error);
    }
    let detail = refusal.map(|r| r.get_message().to_string());
    match detail {
        Some(detail)
            if soft(AMQPSoftError::PRECONDITIONFAILED) && detail.contains("inequivalent arg") =>
        {
            if kept.insert(queue.to_owned()) {
                tracing::error!(
                    queue,
                    broker = %detail,
                    "the queue exists with other arguments than this service's settings \
                     (EMAIL2SMS_STATUS_QUEUE_MAX_LENGTH, EMAIL2SMS_STATUS_QUEUE_TTL, \
                     EMAIL2SMS_DELIVERY_LIMIT); it keeps its own. To change them on a running \
                     broker, set a RabbitMQ policy on the queue, or delete it once it is empty"
                );
            }
            QueueError::InequivalentArguments {
                queue: queue.to_owned(),
                detail,
            }
        }
        _ => QueueError::Amqp(error),
    }
}

/// Quorum queues replicate every message before confirming it, so a broker node lost after a
/// confirm does not lose the job.
fn quorum_arguments() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), string("quorum"));
    arguments
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_settings_are_checked() {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(flatten)]
            queue: QueueArgs,
        }
        let ok = Cli::try_parse_from(["x", "--retry-delays", "500ms,2s"]).unwrap();
        assert!(ok.queue.validate().is_ok());
        assert_eq!(
            ok.queue.topology().retry_delays,
            vec![Duration::from_millis(500), Duration::from_secs(2)]
        );
        let shrinking = Cli::try_parse_from(["x", "--retry-delays", "1m,10s"]).unwrap();
        assert!(shrinking.queue.validate().is_err());
        assert!(Cli::try_parse_from(["x", "--retry-delays", "0s"]).is_err());
        let http = Cli::try_parse_from(["x", "--amqp-url", "http://rabbit"]).unwrap();
        assert!(http.queue.validate().is_err());
        let bounds = ok.queue.topology().status_events;
        assert_eq!(bounds, StatusQueueBounds::default());
        let unbounded = Cli::try_parse_from(["x", "--status-queue-max-length", "0"]).unwrap();
        assert!(matches!(
            unbounded.queue.validate(),
            Err(ConfigError::Invalid {
                name: "EMAIL2SMS_STATUS_QUEUE_MAX_LENGTH",
                ..
            })
        ));
        let short = Cli::try_parse_from(["x", "--status-queue-ttl", "2h"]).unwrap();
        assert_eq!(
            short.queue.topology().status_events.ttl,
            Duration::from_secs(7200)
        );
        assert!(Cli::try_parse_from(["x", "--status-queue-ttl", "0s"]).is_err());
    }

    #[test]
    fn tiers_are_named_after_their_delay() {
        let topology = Topology::default();
        assert_eq!(
            topology.retry_queue(Duration::from_secs(10)),
            "email2sms.sms.retry.10s"
        );
        assert_eq!(topology.retry_tier(Duration::from_secs(3600)), "1h");
        assert_eq!(topology.retry_tier(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn retry_delays_grow_then_stay_at_the_longest() {
        let topology = Topology::default();
        assert_eq!(topology.retry_delay_for(0), Some(Duration::from_secs(10)));
        assert_eq!(topology.retry_delay_for(1), Some(Duration::from_secs(60)));
        assert_eq!(
            topology.retry_delay_for(99),
            Some(Duration::from_secs(3600))
        );
        let none = Topology {
            retry_delays: vec![],
            ..Topology::default()
        };
        assert_eq!(none.retry_delay_for(0), None);
    }
}
