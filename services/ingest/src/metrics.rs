//! What ingest counts for Prometheus (`EMAIL2SMS_METRICS_ADDR`, see `email2sms-metrics`).
//!
//! One process-wide set, registered once: the SMTP session, the decision and the publisher all
//! count into it without being handed anything. Every label value is chosen by this code (an
//! enhanced code ingest wrote, a step name, a cache layer, an SPF result), so the number of
//! series is bounded whatever a client sends.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use email2sms_metrics::latency_buckets;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::fmt::Write as _;

use crate::decision::StepName;
use crate::policy::Source;
use crate::smtp::Reply;

/// What became of a message at the end of DATA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageOutcome {
    /// 2xx: queued.
    Accepted,
    /// 4xx: the relay keeps it and retries.
    Deferred,
    /// 5xx: refused for good.
    Refused,
}

impl MessageOutcome {
    pub fn of(reply: &Reply) -> MessageOutcome {
        match reply.code {
            200..=399 => MessageOutcome::Accepted,
            400..=499 => MessageOutcome::Deferred,
            _ => MessageOutcome::Refused,
        }
    }
}

/// A label value given as the `&'static str` this code chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Name(pub &'static str);

impl EncodeLabelValue for Name {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.0)
    }
}

impl EncodeLabelValue for MessageOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            MessageOutcome::Accepted => "accepted",
            MessageOutcome::Deferred => "deferred",
            MessageOutcome::Refused => "refused",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct MessageLabels {
    pub outcome: MessageOutcome,
    /// The RFC 3463 code of the reply, e.g. `5.7.1`; `none` when a reply has none.
    pub enhanced_code: Name,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct StepLabels {
    pub step: Name,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct LayerLabels {
    /// `memory`, `redis` or `policy_service`: the layer that answered.
    pub layer: Name,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: Name,
}

/// Every family ingest exports.
#[derive(Debug)]
pub struct Metrics {
    pub registry: Arc<Registry>,
    pub smtp_sessions_open: Gauge,
    pub smtp_sessions: Counter,
    pub smtp_messages: Family<MessageLabels, Counter>,
    pub smtp_data_reply: Histogram,
    pub decision_steps: Family<StepLabels, Histogram>,
    pub policy_lookups: Family<LayerLabels, Counter>,
    pub spf_checks: Family<ResultLabels, Counter>,
    pub publish_confirm: Histogram,
}

fn histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

impl Metrics {
    fn register() -> Metrics {
        let mut registry = Registry::with_prefix("email2sms");
        let smtp_sessions_open = Gauge::default();
        registry.register(
            "smtp_sessions_open",
            "SMTP sessions open now",
            smtp_sessions_open.clone(),
        );
        let smtp_sessions = Counter::default();
        registry.register(
            "smtp_sessions",
            "SMTP sessions accepted since start",
            smtp_sessions.clone(),
        );
        let smtp_messages = Family::<MessageLabels, Counter>::default();
        registry.register(
            "smtp_messages",
            "Messages answered at the end of DATA, by outcome and enhanced status code",
            smtp_messages.clone(),
        );
        let smtp_data_reply = histogram();
        registry.register_with_unit(
            "smtp_data_reply",
            "Time from the end of DATA to the reply (decision, and queueing when accepted)",
            Unit::Seconds,
            smtp_data_reply.clone(),
        );
        let decision_steps =
            Family::<StepLabels, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        registry.register_with_unit(
            "decision_step",
            "Time each decision step took (skipped steps are not observed)",
            Unit::Seconds,
            decision_steps.clone(),
        );
        let policy_lookups = Family::<LayerLabels, Counter>::default();
        registry.register(
            "policy_lookups",
            "Sender lookups by the layer that answered: memory (in-process cache), redis, policy_service (gRPC fallback)",
            policy_lookups.clone(),
        );
        let spf_checks = Family::<ResultLabels, Counter>::default();
        registry.register(
            "spf_checks",
            "SPF evaluations by result (RFC 7208: pass, fail, softfail, neutral, none, temperror, permerror)",
            spf_checks.clone(),
        );
        let publish_confirm = histogram();
        registry.register_with_unit(
            "publish_confirm",
            "Time from publishing a message's SMS jobs to the broker confirming all of them",
            Unit::Seconds,
            publish_confirm.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            smtp_sessions_open,
            smtp_sessions,
            smtp_messages,
            smtp_data_reply,
            decision_steps,
            policy_lookups,
            spf_checks,
            publish_confirm,
        }
    }

    /// Counts a message's reply and how long it took.
    pub fn message_answered(&self, reply: &Reply, took: Duration) {
        self.smtp_messages
            .get_or_create(&MessageLabels {
                outcome: MessageOutcome::of(reply),
                enhanced_code: Name(reply.enhanced.unwrap_or("none")),
            })
            .inc();
        self.smtp_data_reply.observe(took.as_secs_f64());
    }

    pub fn step_took(&self, step: StepName, took: Duration) {
        self.decision_steps
            .get_or_create(&StepLabels {
                step: Name(step.as_str()),
            })
            .observe(took.as_secs_f64());
    }

    pub fn lookup_answered_by(&self, source: Source) {
        let layer = match source {
            Source::Memory => "memory",
            Source::Redis => "redis",
            Source::PolicyService => "policy_service",
        };
        self.policy_lookups
            .get_or_create(&LayerLabels { layer: Name(layer) })
            .inc();
    }

    pub fn spf_result(&self, result: &'static str) {
        self.spf_checks
            .get_or_create(&ResultLabels {
                result: Name(result),
            })
            .inc();
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::register);
    &METRICS
}

/// Counts a session as open until dropped.
#[derive(Debug)]
pub struct OpenSession(());

impl OpenSession {
    pub fn start() -> OpenSession {
        let m = metrics();
        m.smtp_sessions.inc();
        m.smtp_sessions_open.inc();
        OpenSession(())
    }
}

impl Drop for OpenSession {
    fn drop(&mut self) {
        metrics().smtp_sessions_open.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_counted_by_outcome_and_enhanced_code() {
        let m = Metrics::register();
        m.message_answered(
            &Reply::new(250, "2.0.0", "queued"),
            Duration::from_millis(2),
        );
        m.message_answered(&Reply::new(550, "5.7.1", "no"), Duration::from_millis(1));
        m.message_answered(&Reply::new(550, "5.7.1", "no"), Duration::from_millis(1));
        m.message_answered(&Reply::new(451, "4.3.0", "later"), Duration::from_millis(1));
        let text = email2sms_metrics::encode(&m.registry);
        for line in [
            "email2sms_smtp_messages_total{outcome=\"accepted\",enhanced_code=\"2.0.0\"} 1",
            "email2sms_smtp_messages_total{outcome=\"refused\",enhanced_code=\"5.7.1\"} 2",
            "email2sms_smtp_messages_total{outcome=\"deferred\",enhanced_code=\"4.3.0\"} 1",
            "email2sms_smtp_data_reply_seconds_count 4",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }
}
