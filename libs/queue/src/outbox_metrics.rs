//! How far the outbox relay is behind, for Prometheus: the rows waiting in the service's `outbox`
//! table and the age of the oldest. A relay that cannot publish (broker down, a row refused) shows
//! as the age growing long before anybody misses a status event.
//!
//! One process-wide pair (a process relays one schema's outbox); each service registers it in its
//! own registry with [`register_metrics`]. No labels: nothing a stranger sends can add series.

use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use sqlx::PgPool;

/// The relay's gauges.
#[derive(Debug, Clone, Default)]
pub struct OutboxMetrics {
    /// Rows not yet confirmed by the broker (each one transaction's events).
    pub rows: Gauge,
    /// Age of the oldest such row; 0 when the outbox is empty.
    pub oldest_age_seconds: Gauge<f64, AtomicU64>,
}

/// How often the relay reads its backlog: Prometheus scrapes every 15-30 s, and a `count(*)` on
/// every notification (hundreds a second at dispatch's rate) would be wasted work.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(15);

/// The process's outbox gauges.
pub fn outbox_metrics() -> &'static OutboxMetrics {
    static METRICS: LazyLock<OutboxMetrics> = LazyLock::new(OutboxMetrics::default);
    &METRICS
}

/// Registers the outbox gauges (`email2sms_outbox_rows`, `email2sms_outbox_oldest_age_seconds`
/// with the registry's prefix) in a service's registry.
pub fn register_metrics(registry: &mut Registry) {
    let m = outbox_metrics();
    registry.register(
        "outbox_rows",
        "Rows in this service's outbox not yet published and confirmed by RabbitMQ, sampled every 15 s",
        m.rows.clone(),
    );
    registry.register_with_unit(
        "outbox_oldest_age",
        "Age of the oldest row in this service's outbox (0 when empty), sampled every 15 s",
        Unit::Seconds,
        m.oldest_age_seconds.clone(),
    );
}

/// Reads the backlog of the current schema's outbox into the gauges.
pub async fn sample(pool: &PgPool) -> Result<(), sqlx::Error> {
    let (rows, age): (i64, f64) = sqlx::query_as(
        "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at))::float8, 0)
         FROM outbox",
    )
    .fetch_one(pool)
    .await?;
    let m = outbox_metrics();
    m.rows.set(rows);
    m.oldest_age_seconds.set(age.max(0.0));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gauges_are_exported_with_the_registry_prefix() {
        let mut registry = Registry::with_prefix("email2sms");
        register_metrics(&mut registry);
        outbox_metrics().rows.set(3);
        outbox_metrics().oldest_age_seconds.set(42.5);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.lines().any(|l| l == "email2sms_outbox_rows 3"),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l == "email2sms_outbox_oldest_age_seconds 42.5"),
            "{text}"
        );
    }
}
