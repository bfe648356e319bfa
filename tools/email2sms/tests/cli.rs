//! `email2sms migrate` and `email2sms dev` as an operator runs them.

use std::path::Path;

use email2sms_testkit::{TestDb, run_to_exit};
use sqlx::Connection;

const BINARY: &str = env!("CARGO_BIN_EXE_email2sms");

/// Tables per schema, and how many migrations each schema has recorded.
async fn schema_state(url: &str) -> Vec<(String, i64, i64)> {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let mut state = Vec::new();
    for schema in ["policy", "verification", "dispatch"] {
        let tables: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1",
        )
        .bind(schema)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        let applied: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {schema}._sqlx_migrations WHERE success"
        ))
        .fetch_one(&mut conn)
        .await
        .unwrap();
        state.push((schema.to_owned(), tables, applied));
    }
    state
}

#[tokio::test]
async fn migrate_creates_the_database_and_every_schema_and_is_idempotent() {
    let db = TestDb::unique();
    let env = [("DATABASE_URL", db.url.as_str())];
    let (status, output) = run_to_exit(Path::new(BINARY), &env, &["migrate"]).await;
    assert_eq!(status.code(), Some(0), "{output}");
    let first = schema_state(&db.url).await;
    for (schema, tables, applied) in &first {
        // More than the bookkeeping table alone, and at least one migration recorded.
        assert!(*tables > 1, "{schema} has no tables");
        assert!(*applied >= 1, "{schema} recorded no migration");
    }

    let (status, output) = run_to_exit(Path::new(BINARY), &env, &["migrate"]).await;
    assert_eq!(status.code(), Some(0), "second run: {output}");
    assert_eq!(
        schema_state(&db.url).await,
        first,
        "a second run changes nothing"
    );
}

#[tokio::test]
async fn migrate_against_an_unreachable_server_exits_69() {
    let (status, output) = run_to_exit(
        Path::new(BINARY),
        &[("DATABASE_URL", "postgres://postgres@127.0.0.1:1/email2sms")],
        &["migrate"],
    )
    .await;
    assert_eq!(status.code(), Some(69), "{output}");
}

#[tokio::test]
async fn policy_rebuild_cache_calls_the_policy_service() {
    use clap::Parser;

    let db = TestDb::unique();
    let schema = email2sms_policy::SCHEMA;
    email2sms_runtime::db::migrate(&db.url, schema, &email2sms_policy::MIGRATOR)
        .await
        .unwrap();
    let pool = email2sms_runtime::db::connect(&db.url, schema, 4)
        .await
        .unwrap();
    // Names of its own, so that nothing another test (or a running cluster) uses is touched.
    let unique = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let redis_prefix = format!("email2sms-cli-test-{unique}:");
    let amqp_prefix = format!("test.cli.{unique}.");
    let config = email2sms_policy::Config::try_parse_from([
        "email2sms-policy",
        "--insecure-no-auth",
        "--database-url",
        &db.url,
        "--redis-prefix",
        &redis_prefix,
        "--amqp-prefix",
        &amqp_prefix,
        "--cache-repair-interval",
        "1h",
    ])
    .unwrap();
    let auth = email2sms_runtime::auth::Auth::from_args(&config.server).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        email2sms_policy::run(&config, &auth, pool, listener, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    let (status, output) = run_to_exit(
        Path::new(BINARY),
        &[
            ("EMAIL2SMS_POLICY_URL", url.as_str()),
            ("EMAIL2SMS_API_TOKEN", "operator-token"),
        ],
        &["policy", "rebuild-cache"],
    )
    .await;
    assert_eq!(status.code(), Some(0), "{output}");
    assert!(output.contains("cache rebuilt"), "{output}");
    let _ = stop.send(());
    server.await.unwrap();

    let (status, output) = run_to_exit(
        Path::new(BINARY),
        &[("EMAIL2SMS_POLICY_URL", "http://127.0.0.1:1")],
        &["policy", "rebuild-cache"],
    )
    .await;
    assert_eq!(status.code(), Some(69), "{output}");
}
