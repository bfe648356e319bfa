//! The verification schema enforces the challenge invariants itself: rows are written with plain SQL
//! and every violation must be refused by the named constraint.

use email2sms_testkit::{TestDb, violated_constraint};
use email2sms_verification::{MIGRATOR, SCHEMA};
use sqlx::PgPool;
use sqlx::types::Uuid;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

async fn challenge(
    pool: &PgPool,
    company: Uuid,
    domain: &str,
    token: &str,
) -> Result<Uuid, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO challenges (company_id, domain, token) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(company)
    .bind(domain)
    .bind(token)
    .fetch_one(pool)
    .await
}

async fn update(pool: &PgPool, set: &str, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(&format!("UPDATE challenges SET {set} WHERE id = $1"))
        .bind(id)
        .execute(pool)
        .await
        .map(|_| ())
}

const A: Uuid = Uuid::from_u128(0xa);
const B: Uuid = Uuid::from_u128(0xb);

#[tokio::test]
async fn one_challenge_per_company_and_domain() {
    let (_db, pool) = TestDb::migrated(SCHEMA, &MIGRATOR, 2).await;
    challenge(&pool, A, "example.com", TOKEN).await.unwrap();
    assert_eq!(
        violated_constraint(challenge(&pool, A, "example.com", TOKEN).await),
        "challenges_company_domain_key"
    );
    challenge(&pool, B, "example.com", TOKEN)
        .await
        .expect("another company may challenge the same domain");
    challenge(&pool, A, "sales.example.com", TOKEN)
        .await
        .expect("a subdomain is a domain of its own");
}

#[tokio::test]
async fn challenge_token_is_32_lower_case_hex() {
    let (_db, pool) = TestDb::migrated(SCHEMA, &MIGRATOR, 2).await;
    for bad in [
        "0123456789ABCDEF0123456789ABCDEF",
        "0123456789abcdef0123456789abcde",
        "0123456789abcdef0123456789abcdef0",
        "0123456789abcdef0123456789abcdeg",
        "",
    ] {
        assert_eq!(
            violated_constraint(challenge(&pool, A, "example.com", bad).await),
            "challenges_token_check",
            "{bad:?}"
        );
    }
    let id = challenge(&pool, A, "example.com", TOKEN).await.unwrap();
    assert_eq!(
        violated_constraint(update(&pool, "token = upper(token)", id).await),
        "challenges_token_check",
        "rotation keeps the format"
    );
}

#[tokio::test]
async fn challenge_domain_is_normalised() {
    let (_db, pool) = TestDb::migrated(SCHEMA, &MIGRATOR, 2).await;
    for bad in [
        "Example.com",
        "example.com.",
        "exa mple.com",
        "-example.com",
    ] {
        assert_eq!(
            violated_constraint(challenge(&pool, A, bad, TOKEN).await),
            "challenges_domain_valid",
            "{bad:?}"
        );
    }
}

#[tokio::test]
async fn at_most_one_verified_challenge_per_domain() {
    let (_db, pool) = TestDb::migrated(SCHEMA, &MIGRATOR, 2).await;
    let a = challenge(&pool, A, "example.com", TOKEN).await.unwrap();
    let b = challenge(&pool, B, "example.com", TOKEN).await.unwrap();
    let verify = "state = 'verified', verified_at = now()";

    assert_eq!(
        violated_constraint(update(&pool, "state = 'verified'", a).await),
        "challenges_verified_has_time"
    );
    update(&pool, verify, a).await.expect("the first verifies");
    assert_eq!(
        violated_constraint(update(&pool, verify, b).await),
        "challenges_verified_domain_key"
    );
    update(&pool, "state = 'revoked'", a).await.unwrap();
    update(&pool, verify, b)
        .await
        .expect("the second verifies once the first is revoked");
}

#[tokio::test]
async fn lease_owner_and_until_are_set_together() {
    let (_db, pool) = TestDb::migrated(SCHEMA, &MIGRATOR, 2).await;
    let id = challenge(&pool, A, "example.com", TOKEN).await.unwrap();
    for half in ["lease_owner = 'replica-1'", "lease_until = now()"] {
        assert_eq!(
            violated_constraint(update(&pool, half, id).await),
            "challenges_lease_complete",
            "{half}"
        );
    }
    update(
        &pool,
        "lease_owner = 'replica-1', lease_until = now() + interval '1 minute'",
        id,
    )
    .await
    .expect("a complete lease");
    assert_eq!(
        violated_constraint(update(&pool, "lease_owner = NULL", id).await),
        "challenges_lease_complete"
    );
    update(&pool, "lease_owner = NULL, lease_until = NULL", id)
        .await
        .expect("a released lease");
}

#[tokio::test]
async fn check_outcome_agrees_with_temporary() {
    let (_db, pool) = TestDb::migrated(SCHEMA, &MIGRATOR, 2).await;
    let id = challenge(&pool, A, "example.com", TOKEN).await.unwrap();
    let check = |outcome: &'static str, temporary: bool| {
        sqlx::query("INSERT INTO checks (challenge_id, outcome, temporary) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(outcome)
            .bind(temporary)
            .execute(&pool)
    };
    assert_eq!(
        violated_constraint(check("timeout", false).await),
        "checks_temporary_matches_outcome"
    );
    assert_eq!(
        violated_constraint(check("nxdomain", true).await),
        "checks_temporary_matches_outcome"
    );
    assert_eq!(
        violated_constraint(check("lost", false).await),
        "checks_outcome_check"
    );
    check("servfail", true).await.unwrap();
    check("found", false).await.unwrap();
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
