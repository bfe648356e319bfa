//! What verification counts for Prometheus (`EMAIL2SMS_METRICS_ADDR`, see `email2sms-metrics`).
//!
//! One process-wide set, registered once. The only label is the kind of DNS answer, one of
//! [`DnsResult`]'s fixed values: never the domain, the nameserver or an error text, which a
//! customer's DNS (or a stranger's) chooses.

use std::fmt::Write as _;
use std::sync::{Arc, LazyLock};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::dns::TxtAnswer;

/// The kind of answer one TXT lookup got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DnsResult {
    /// TXT records (possibly none: NODATA).
    Records,
    NxDomain,
    ServFail,
    Refused,
    Timeout,
    Error,
}

impl DnsResult {
    pub fn of(answer: &TxtAnswer) -> DnsResult {
        match answer {
            TxtAnswer::Records(_) => DnsResult::Records,
            TxtAnswer::NxDomain => DnsResult::NxDomain,
            TxtAnswer::ServFail => DnsResult::ServFail,
            TxtAnswer::Refused => DnsResult::Refused,
            TxtAnswer::Timeout => DnsResult::Timeout,
            TxtAnswer::Error(_) => DnsResult::Error,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DnsResult::Records => "records",
            DnsResult::NxDomain => "nxdomain",
            DnsResult::ServFail => "servfail",
            DnsResult::Refused => "refused",
            DnsResult::Timeout => "timeout",
            DnsResult::Error => "error",
        }
    }
}

impl EncodeLabelValue for DnsResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DnsLabels {
    pub result: DnsResult,
}

/// Every family verification exports.
#[derive(Debug)]
pub struct Metrics {
    pub registry: Arc<Registry>,
    pub dns_checks: Family<DnsLabels, Counter>,
}

impl Metrics {
    fn register() -> Metrics {
        let mut registry = Registry::with_prefix("email2sms");
        let dns_checks = Family::<DnsLabels, Counter>::default();
        registry.register(
            "dns_checks",
            "TXT lookups of domain verification (scheduled and on demand), by the kind of answer: records, nxdomain, servfail, refused, timeout, error",
            dns_checks.clone(),
        );
        email2sms_queue::outbox_metrics::register_metrics(&mut registry);
        Metrics {
            registry: Arc::new(registry),
            dns_checks,
        }
    }

    pub fn dns_check(&self, answer: &TxtAnswer) {
        self.dns_checks
            .get_or_create(&DnsLabels {
                result: DnsResult::of(answer),
            })
            .inc();
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::register);
    &METRICS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_are_counted_by_the_kind_of_answer_never_its_text() {
        let m = Metrics::register();
        m.dns_check(&TxtAnswer::Records(vec![
            "email2sms-verification=abc".into(),
        ]));
        m.dns_check(&TxtAnswer::Timeout);
        m.dns_check(&TxtAnswer::Error("evil.example said \"x\"".into()));
        m.dns_check(&TxtAnswer::Timeout);
        let text = email2sms_metrics::encode(&m.registry);
        for line in [
            "email2sms_dns_checks_total{result=\"records\"} 1",
            "email2sms_dns_checks_total{result=\"timeout\"} 2",
            "email2sms_dns_checks_total{result=\"error\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        assert!(!text.contains("evil"), "{text}");
    }
}
