//! Postgres access: each service owns one schema and applies its own migrations into it.
//!
//! The schema is selected through `search_path` on every connection, so sqlx's `_sqlx_migrations`
//! bookkeeping and every table land in the service's schema and no service can name another's
//! tables by accident.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/email2sms";

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("DATABASE_URL is not a valid PostgreSQL URL: {0}")]
    BadUrl(sqlx::Error),
    #[error("cannot reach PostgreSQL at {target}: {source}")]
    Unreachable { target: String, source: sqlx::Error },
    #[error("cannot create the database {target}: {source}")]
    CreateDatabase { target: String, source: sqlx::Error },
    #[error("cannot apply the {schema} migrations: {source}")]
    Migrate {
        schema: String,
        source: sqlx::migrate::MigrateError,
    },
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
}

/// `host:port/database` of a URL, for messages (never the password).
pub fn describe(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}:{}{}",
            u.host_str().unwrap_or("?"),
            u.port().unwrap_or(5432),
            u.path()
        ),
        Err(_) => "<unparseable URL>".into(),
    }
}

fn options(url: &str, schema: &str) -> Result<PgConnectOptions, DbError> {
    Ok(PgConnectOptions::from_str(url)
        .map_err(DbError::BadUrl)?
        .options([("search_path", schema)]))
}

/// Opens a pool whose connections all work inside `schema`.
pub async fn connect(url: &str, schema: &str, max_connections: u32) -> Result<PgPool, DbError> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options(url, schema)?)
        .await
        .map_err(|source| DbError::Unreachable {
            target: describe(url),
            source,
        })
}

/// Creates the database when missing, then the schema, then applies `migrator` inside it.
/// Running it again changes nothing.
pub async fn migrate(url: &str, schema: &str, migrator: &Migrator) -> Result<(), DbError> {
    ensure_database(url).await?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options(url, schema)?)
        .await
        .map_err(|source| DbError::Unreachable {
            target: describe(url),
            source,
        })?;
    // Identifiers cannot be bound as parameters; the schema names are our own constants.
    debug_assert!(schema.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
    let create = format!("CREATE SCHEMA IF NOT EXISTS {schema}");
    if let Err(error) = sqlx::query(&create).execute(&pool).await {
        // Two services migrating at once can race on the catalogue; the schema exists either way.
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                .bind(schema)
                .fetch_one(&pool)
                .await?;
        if !exists {
            return Err(error.into());
        }
    }
    migrator
        .run(&pool)
        .await
        .map_err(|source| DbError::Migrate {
            schema: schema.to_owned(),
            source,
        })?;
    pool.close().await;
    Ok(())
}

/// Creates the database named in `url` if it does not exist yet.
pub async fn ensure_database(url: &str) -> Result<(), DbError> {
    let exists = Postgres::database_exists(url)
        .await
        .map_err(|source| DbError::Unreachable {
            target: describe(url),
            source,
        })?;
    if !exists {
        if let Err(source) = Postgres::create_database(url).await {
            // Another process may have created it in the meantime.
            if !Postgres::database_exists(url).await.unwrap_or(false) {
                return Err(DbError::CreateDatabase {
                    target: describe(url),
                    source,
                });
            }
        }
        tracing::info!(database = %describe(url), "created database");
    }
    Ok(())
}

/// Applies the service's migrations when the operator asked for it, then opens its pool.
pub async fn prepare(
    args: &crate::config::DatabaseArgs,
    schema: &str,
    migrator: &Migrator,
) -> Result<PgPool, DbError> {
    if args.migrate {
        migrate(&args.database_url, schema, migrator).await?;
        tracing::info!(schema, "migrations applied");
    }
    connect(&args.database_url, schema, args.db_max_connections).await
}
