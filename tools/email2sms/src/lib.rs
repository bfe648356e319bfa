//! The operator's command: run migrations, start the whole cluster locally, and do over gRPC what
//! the portal does (companies, users, policies, entries, imports, messages) and over AMQP what the
//! operator does (the job queue, its retry tiers and dead letters).
#![forbid(unsafe_code)]

pub mod client;
pub mod commands;
pub mod dev;
pub mod error;
pub mod output;

use email2sms_runtime::db::{self, DbError};
use sqlx::migrate::Migrator;

/// Every service that owns a schema, with its migrations. Ingest owns none: it reads compiled
/// policies from Redis and asks the policy service.
pub fn migration_sets() -> [(&'static str, &'static Migrator); 3] {
    [
        (email2sms_policy::SCHEMA, &email2sms_policy::MIGRATOR),
        (
            email2sms_verification::SCHEMA,
            &email2sms_verification::MIGRATOR,
        ),
        (email2sms_dispatch::SCHEMA, &email2sms_dispatch::MIGRATOR),
    ]
}

/// Creates the database if missing and brings every service's schema up to date. Idempotent.
pub async fn migrate_all(database_url: &str) -> Result<(), DbError> {
    for (schema, migrator) in migration_sets() {
        db::migrate(database_url, schema, migrator).await?;
        let latest = migrator.iter().map(|m| m.version).max().unwrap_or(0);
        tracing::info!(schema, latest, "schema up to date");
    }
    Ok(())
}
