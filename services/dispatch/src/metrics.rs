//! What dispatch counts for Prometheus (`EMAIL2SMS_METRICS_ADDR`, see `email2sms-metrics`).
//!
//! One process-wide set, registered once: the job store, the receipt recorder, the SMPP connector
//! and the queue sampler count into it without being handed anything. Every label value is chosen
//! by this code (a [`JobState`], a connector kind, a queue of the topology), never a job, company,
//! address or provider id, so the number of series is bounded whatever the SMSC or a sender does.

use std::fmt::Write as _;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use email2sms_queue::Topology;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::jobs::JobState;

/// A label value given as the `&'static str` this code chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Name(pub &'static str);

impl EncodeLabelValue for Name {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.0)
    }
}

impl EncodeLabelValue for JobState {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// The connector kinds (`Connector::name`). A name read back from the database (a job row, a
/// receipt) is mapped onto these, so a row written by some other build cannot add series.
pub const CONNECTOR_NAMES: [&str; 4] = ["stdout", "file", "smpp", "http"];

/// `name` as one of [`CONNECTOR_NAMES`], `none` when a job has not been handed to a connector,
/// `other` for anything else.
pub fn connector_label(name: Option<&str>) -> Name {
    match name {
        None | Some("") => Name("none"),
        Some(name) => Name(
            CONNECTOR_NAMES
                .into_iter()
                .find(|known| *known == name)
                .unwrap_or("other"),
        ),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct StateLabels {
    pub state: JobState,
    pub connector: Name,
}

/// Whether a delivery receipt found the part it is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReceiptMatch {
    Matched,
    /// Kept in `unmatched_delivery_receipts` until its submit is recorded (or purged after a day).
    Unmatched,
    /// One that was unmatched, matched when its submit response was recorded (it had beaten it).
    MatchedLate,
}

impl EncodeLabelValue for ReceiptMatch {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            ReceiptMatch::Matched => "matched",
            ReceiptMatch::Unmatched => "unmatched",
            ReceiptMatch::MatchedLate => "matched_late",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReceiptLabels {
    pub result: ReceiptMatch,
    pub connector: Name,
}

/// A queue of the SMS job path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobQueue {
    Jobs,
    Retry,
    Dead,
}

impl EncodeLabelValue for JobQueue {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            JobQueue::Jobs => "jobs",
            JobQueue::Retry => "retry",
            JobQueue::Dead => "dead",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct QueueLabels {
    pub queue: JobQueue,
    /// The retry tier (`10s`, `1m`, … from `EMAIL2SMS_RETRY_DELAYS`, operator configuration with a
    /// handful of values); empty for the job and dead-letter queues.
    pub tier: String,
}

/// Every family dispatch exports.
#[derive(Debug)]
pub struct Metrics {
    pub registry: Arc<Registry>,
    pub state_changes: Family<StateLabels, Counter>,
    pub receipts: Family<ReceiptLabels, Counter>,
    pub smpp_window_in_use: Gauge,
    pub smpp_bound: Gauge,
    pub smpp_throttled: Counter,
    pub queue_messages: Family<QueueLabels, Gauge>,
    pub queue_sample_failures: Counter,
}

impl Metrics {
    fn register() -> Metrics {
        let mut registry = Registry::with_prefix("email2sms");
        let state_changes = Family::<StateLabels, Counter>::default();
        registry.register(
            "sms_state_changes",
            "SMS job state changes committed (each with its sms.status.changed event), by new state and connector",
            state_changes.clone(),
        );
        let receipts = Family::<ReceiptLabels, Counter>::default();
        registry.register(
            "delivery_receipts",
            "Delivery receipts recorded, by whether they matched a submitted part, and connector",
            receipts.clone(),
        );
        let smpp_window_in_use = Gauge::default();
        registry.register(
            "smpp_window_in_use",
            "submit_sm sent to the SMSC and not answered yet (at most the SMPP window)",
            smpp_window_in_use.clone(),
        );
        let smpp_bound = Gauge::default();
        registry.register(
            "smpp_bound",
            "1 while the SMPP transceiver is bound to the SMSC, 0 otherwise (absent without an SMPP connector)",
            smpp_bound.clone(),
        );
        let smpp_throttled = Counter::default();
        registry.register(
            "smpp_throttled",
            "submit_sm responses asking to slow down (ESME_RTHROTTLED, ESME_RMSGQFUL)",
            smpp_throttled.clone(),
        );
        let queue_messages = Family::<QueueLabels, Gauge>::default();
        registry.register(
            "queue_messages",
            "Messages ready in the queues of the SMS job path (jobs, each retry tier, dead letters), sampled every 15 s",
            queue_messages.clone(),
        );
        let queue_sample_failures = Counter::default();
        registry.register(
            "queue_sample_failures",
            "Rounds of the queue sampler that could not read a queue's depth from RabbitMQ",
            queue_sample_failures.clone(),
        );
        email2sms_queue::outbox_metrics::register_metrics(&mut registry);
        Metrics {
            registry: Arc::new(registry),
            state_changes,
            receipts,
            smpp_window_in_use,
            smpp_bound,
            smpp_throttled,
            queue_messages,
            queue_sample_failures,
        }
    }

    /// Counts state changes whose transaction has committed.
    pub fn committed(&self, announced: &Announced) {
        for (state, connector) in &announced.0 {
            self.state_changes
                .get_or_create(&StateLabels {
                    state: *state,
                    connector: *connector,
                })
                .inc();
        }
    }

    pub fn receipt(&self, result: ReceiptMatch, connector: &str) {
        self.receipts
            .get_or_create(&ReceiptLabels {
                result,
                connector: connector_label(Some(connector)),
            })
            .inc();
    }

    pub fn set_depth(&self, queue: JobQueue, tier: String, messages: u32) {
        self.queue_messages
            .get_or_create(&QueueLabels { queue, tier })
            .set(i64::from(messages));
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::register);
    &METRICS
}

/// State changes written in a transaction that has not committed yet: counted by
/// [`Announced::committed`] once it has, so a rolled-back batch (retried, perhaps split) is not
/// counted twice.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
#[must_use = "count the changes once their transaction commits"]
pub struct Announced(pub Vec<(JobState, Name)>);

impl Announced {
    pub fn add(&mut self, other: Announced) {
        self.0.extend(other.0);
    }

    /// Counts these changes in the process's metrics; call it after the commit.
    pub fn committed(self) {
        metrics().committed(&self);
    }
}

/// The job path's queues with their label values: the job queue, each retry tier, the dead
/// letters.
pub fn sampled_queues(topology: &Topology) -> Vec<(String, JobQueue, String)> {
    let mut queues = vec![(topology.jobs_queue(), JobQueue::Jobs, String::new())];
    queues.extend(topology.retry_delays.iter().map(|delay| {
        (
            topology.retry_queue(*delay),
            JobQueue::Retry,
            topology.retry_tier(*delay),
        )
    }));
    queues.push((topology.dead_queue(), JobQueue::Dead, String::new()));
    queues
}

/// How often the queue depths are read: Prometheus scrapes every 15-30 s, so sampling faster
/// would only load the broker.
pub const QUEUE_SAMPLE_INTERVAL: Duration = Duration::from_secs(15);

/// Reads the depth of every queue of the job path every [`QUEUE_SAMPLE_INTERVAL`] with passive
/// declares (which never create or change a queue) until `shutdown` resolves.
pub async fn sample_queues(
    amqp_url: String,
    topology: Topology,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let broker = email2sms_queue::Broker::new(amqp_url, "email2sms-dispatch queue sampler");
    let queues = sampled_queues(&topology);
    let mut every = tokio::time::interval(QUEUE_SAMPLE_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = every.tick() => {}
        }
        if let Err(error) = sample_once(&broker, &queues).await {
            metrics().queue_sample_failures.inc();
            tracing::debug!(%error, "cannot read the job queues' depths");
        }
    }
}

async fn sample_once(
    broker: &email2sms_queue::Broker,
    queues: &[(String, JobQueue, String)],
) -> Result<(), email2sms_queue::QueueError> {
    let channel = broker.channel().await?;
    for (name, queue, tier) in queues {
        // A missing queue closes the channel (404): that round ends, the next one opens a new one.
        let declared = tokio::time::timeout(
            Duration::from_secs(5),
            channel.queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            ),
        )
        .await
        .map_err(|_| email2sms_queue::QueueError::NoAnswer("a passive queue declare"))?
        .map_err(email2sms_queue::QueueError::from)?;
        metrics().set_depth(*queue, tier.clone(), declared.message_count());
    }
    let _ = channel.close(200, "sampled".into()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_changes_are_counted_by_state_and_connector() {
        let m = Metrics::register();
        m.committed(&Announced(vec![
            (JobState::Submitting, connector_label(Some("smpp"))),
            (JobState::Submitted, connector_label(Some("smpp"))),
            (JobState::Submitted, connector_label(Some("smpp"))),
            (JobState::Queued, connector_label(None)),
        ]));
        m.receipt(ReceiptMatch::Unmatched, "smpp");
        m.receipt(ReceiptMatch::Matched, "somebody else's");
        m.set_depth(JobQueue::Retry, "10s".into(), 7);
        let text = email2sms_metrics::encode(&m.registry);
        for line in [
            "email2sms_sms_state_changes_total{state=\"submitted\",connector=\"smpp\"} 2",
            "email2sms_sms_state_changes_total{state=\"submitting\",connector=\"smpp\"} 1",
            "email2sms_sms_state_changes_total{state=\"queued\",connector=\"none\"} 1",
            "email2sms_delivery_receipts_total{result=\"unmatched\",connector=\"smpp\"} 1",
            "email2sms_delivery_receipts_total{result=\"matched\",connector=\"other\"} 1",
            "email2sms_queue_messages{queue=\"retry\",tier=\"10s\"} 7",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }

    #[test]
    fn connector_names_from_the_database_are_bounded() {
        assert_eq!(connector_label(Some("http")), Name("http"));
        assert_eq!(connector_label(Some("")), Name("none"));
        assert_eq!(connector_label(Some("x'; DROP")), Name("other"));
    }

    /// Against the real broker: the depths are what the queues hold, read without changing them.
    #[tokio::test]
    async fn the_sampler_reads_each_queues_depth_from_rabbitmq() {
        let topology = Topology {
            prefix: format!("test.metrics.{}.", uuid::Uuid::new_v4().simple()),
            retry_delays: vec![Duration::from_secs(10)],
            ..Topology::default()
        };
        let broker = email2sms_queue::Broker::new(
            "amqp://guest:guest@127.0.0.1:5672/%2f",
            "dispatch metrics test",
        );
        let channel = broker.channel().await.unwrap();
        topology.declare_jobs(&channel).await.unwrap();
        let publisher = email2sms_queue::Publisher::new(broker.clone(), Duration::from_secs(5));
        let exchange = topology.jobs_exchange();
        for i in 0..3u8 {
            publisher
                .publish(email2sms_queue::Outgoing {
                    exchange: &exchange,
                    routing_key: email2sms_queue::topology::SMS_JOB_ROUTING_KEY,
                    payload: &[i],
                    message_id: format!("m{i}"),
                    message_type: email2sms_proto::queue::v1::SMS_JOB_TYPE,
                    headers: FieldTable::default(),
                })
                .await
                .unwrap();
        }
        let queues = sampled_queues(&topology);
        sample_once(&broker, &queues).await.unwrap();
        let depth = |queue, tier: &str| {
            metrics()
                .queue_messages
                .get_or_create(&QueueLabels {
                    queue,
                    tier: tier.to_owned(),
                })
                .get()
        };
        assert_eq!(depth(JobQueue::Jobs, ""), 3);
        assert_eq!(depth(JobQueue::Retry, "10s"), 0);
        assert_eq!(depth(JobQueue::Dead, ""), 0);
        for name in topology.job_path_queues() {
            let _ = channel
                .queue_delete(
                    name.as_str().into(),
                    lapin::options::QueueDeleteOptions::default(),
                )
                .await;
        }
        // A queue that is gone fails the round (counted), and creates nothing.
        assert!(sample_once(&broker, &queues).await.is_err());
    }

    #[test]
    fn every_queue_of_the_job_path_is_sampled() {
        let topology = Topology::default();
        let sampled: Vec<String> = sampled_queues(&topology)
            .into_iter()
            .map(|(name, _, _)| name)
            .collect();
        assert_eq!(sampled, topology.job_path_queues());
    }
}
