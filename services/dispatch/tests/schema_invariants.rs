//! The dispatch schema enforces the job invariants itself: rows are written with plain SQL and every
//! violation must be refused by the named constraint.

use email2sms_dispatch::{MIGRATOR, SCHEMA};
use email2sms_testkit::{TestDb, violated_constraint};
use sqlx::PgPool;
use sqlx::types::Uuid;

/// Inserts job `job` for `recipient`; `extra` adds `column = value` pairs (SQL literals).
async fn job(
    pool: &PgPool,
    job: u128,
    recipient: &str,
    extra: &[(&str, &str)],
) -> Result<u64, sqlx::Error> {
    let columns: String = extra.iter().map(|(c, _)| format!(", {c}")).collect();
    let values: String = extra.iter().map(|(_, v)| format!(", {v}")).collect();
    sqlx::query(&format!(
        "INSERT INTO sms_jobs (job_id, company_id, forwarding_user_id, recipient, text, encoding, segments{columns})
         VALUES ($1, gen_random_uuid(), gen_random_uuid(), $2, 'hello', 'gsm7', 1{values})
         ON CONFLICT (job_id) DO NOTHING"
    ))
    .bind(Uuid::from_u128(job))
    .bind(recipient)
    .execute(pool)
    .await
    .map(|done| done.rows_affected())
}

const TO: &str = "+64211234567";

#[tokio::test]
async fn job_id_is_the_idempotency_key() {
    let (_db, pool) = TestDb::migrated(SCHEMA, &MIGRATOR, 2).await;
    assert_eq!(job(&pool, 1, TO, &[]).await.unwrap(), 1);
    assert_eq!(
        job(&pool, 1, "+64219999999", &[]).await.unwrap(),
        0,
        "a redelivered job is a no-op"
    );
    let again = sqlx::query(
        "INSERT INTO sms_jobs (job_id, company_id, forwarding_user_id, recipient, text, encoding, segments)
         SELECT job_id, company_id, forwarding_user_id, recipient, text, encoding, segments FROM sms_jobs",
    )
    .execute(&pool)
    .await;
    assert_eq!(violated_constraint(again), "sms_jobs_pkey");
}

#[tokio::test]
async fn recipient_is_e164() {
    let (_db, pool) = TestDb::migrated(SCHEMA, &MIGRATOR, 2).await;
    for bad in [
        "64211234567",
        "0211234567",
        "+0211234567",
        "+64 21 123 4567",
        "+1234",
        "+1234567890123456",
    ] {
        assert_eq!(
            violated_constraint(job(&pool, 1, bad, &[]).await),
            "sms_jobs_recipient_check",
            "{bad:?}"
        );
    }
    job(&pool, 1, TO, &[]).await.expect("E.164");
    job(&pool, 2, "+123456789012345", &[])
        .await
        .expect("15 digits is the E.164 maximum");
}

#[tokio::test]
async fn provider_message_id_is_unique_per_connector() {
    let (_db, pool) = TestDb::migrated(SCHEMA, &MIGRATOR, 2).await;
    let submitted = |connector| {
        [
            ("state", "'submitted'"),
            ("submitted_at", "now()"),
            ("connector", connector),
            ("provider_message_id", "'msg-1'"),
        ]
    };
    // The job's copy of its first part's id is for display; the parts hold the unique key.
    job(&pool, 1, TO, &submitted("'smpp-a'")).await.unwrap();
    job(&pool, 2, TO, &submitted("'smpp-b'")).await.unwrap();
    assert_eq!(
        violated_constraint(job(&pool, 3, TO, &[("provider_message_id", "'msg-2'")]).await),
        "sms_jobs_provider_id_has_connector"
    );

    let part = |job: u128, provider_id: &'static str| {
        sqlx::query(
            "INSERT INTO sms_job_parts (job_id, part_number, connector, provider_message_id)
             VALUES ($1, 1, 'smpp-a', $2)",
        )
        .bind(Uuid::from_u128(job))
        .bind(provider_id)
        .execute(&pool)
    };
    part(1, "part-1").await.unwrap();
    assert_eq!(
        violated_constraint(part(2, "part-1").await),
        "sms_job_parts_connector_provider_id_key"
    );
    assert_eq!(
        violated_constraint(part(9, "part-9").await),
        "sms_job_parts_job_id_fkey"
    );
}

#[tokio::test]
async fn job_state_values_are_checked() {
    let (_db, pool) = TestDb::migrated(SCHEMA, &MIGRATOR, 2).await;
    assert_eq!(
        violated_constraint(job(&pool, 1, TO, &[("state", "'sent'")]).await),
        "sms_jobs_state_check"
    );
    assert_eq!(
        violated_constraint(job(&pool, 1, TO, &[("state", "'submitted'")]).await),
        "sms_jobs_submitted_has_time"
    );
    assert_eq!(
        violated_constraint(job(&pool, 1, TO, &[("state", "'failed'")]).await),
        "sms_jobs_final_has_time"
    );
    for (n, state) in ["queued", "submitting", "needs_review"]
        .into_iter()
        .enumerate()
    {
        let literal = format!("'{state}'");
        job(&pool, n as u128 + 1, TO, &[("state", &literal)])
            .await
            .expect(state);
    }
    job(
        &pool,
        9,
        TO,
        &[
            ("state", "'delivered'"),
            ("submitted_at", "now()"),
            ("final_at", "now()"),
        ],
    )
    .await
    .expect("delivered with its times");

    let pool = &pool;
    let history = |id: u128, history: &'static str| {
        let literal = format!("'{history}'");
        async move { job(pool, id, TO, &[("history", &literal)]).await }
    };
    assert_eq!(
        violated_constraint(history(10, r#"{"to_state": "queued"}"#).await),
        "sms_jobs_history_is_an_array"
    );
    history(
        10,
        r#"[{"to_state": "queued"}, {"to_state": "submitting"}]"#,
    )
    .await
    .unwrap();
}

/// The values a CHECK constraint lists (`col IN ('a', 'b')`, which PostgreSQL keeps as
/// `col = ANY (ARRAY['a'::text, 'b'::text])`), sorted.
async fn listed_values(pool: &PgPool, constraint: &str) -> Vec<String> {
    let definition: String = sqlx::query_scalar(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint
         WHERE conname = $1 AND connamespace = current_schema()::regnamespace",
    )
    .bind(constraint)
    .fetch_one(pool)
    .await
    .unwrap_or_else(|error| panic!("no constraint {constraint}: {error}"));
    // Every other piece between quotes is a literal.
    let mut values: Vec<String> = definition
        .split('\'')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    values.sort();
    assert!(
        !values.is_empty(),
        "{constraint} lists nothing: {definition}"
    );
    values
}

fn sorted<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut values: Vec<String> = values.into_iter().map(str::to_owned).collect();
    values.sort();
    values
}

#[tokio::test]
async fn the_schema_checks_exactly_the_states_receipt_statuses_and_failure_kinds_the_code_stores() {
    use email2sms_dispatch::connector::ReceiptStatus;
    use email2sms_dispatch::jobs::JobState;
    use email2sms_dispatch::jobs::state::{STORED_FAILURE_KINDS, stored_failure_kind};

    let (_db, pool) = TestDb::migrated(SCHEMA, &MIGRATOR, 2).await;
    assert_eq!(
        listed_values(&pool, "sms_jobs_state_check").await,
        sorted(JobState::ALL.map(JobState::as_str)),
        "JobState and the state column"
    );
    let statuses = sorted(ReceiptStatus::ALL.map(ReceiptStatus::as_str));
    for constraint in [
        "sms_job_parts_receipt_status_check",
        "unmatched_delivery_receipts_status_check",
    ] {
        assert_eq!(
            listed_values(&pool, constraint).await,
            statuses,
            "ReceiptStatus and {constraint}"
        );
    }
    assert_eq!(
        listed_values(&pool, "sms_jobs_failure_kind_check").await,
        sorted(STORED_FAILURE_KINDS.map(|kind| stored_failure_kind(kind).unwrap())),
        "the stored failure kinds and the failure_kind column"
    );
}

/// The outbox this service's migrations leave is the one libs/queue's relay reads and writes.
#[tokio::test]
async fn outbox_table_has_the_shape_the_relay_expects() {
    let (_db, pool) = TestDb::migrated(SCHEMA, &MIGRATOR, 2).await;
    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(
        email2sms_queue::outbox_table::outbox_table_differences(&mut conn)
            .await
            .unwrap(),
        Vec::<String>::new()
    );
}
