//! The policy schema enforces the product's invariants itself: these tests write rows with plain SQL
//! (no service code) and check that PostgreSQL refuses every violation by the constraint's name.

use std::sync::Arc;

use email2sms_policy::{MIGRATOR, SCHEMA};
use email2sms_runtime::db;
use email2sms_testkit::{TestDb, violated_constraint};
use sqlx::PgPool;
use sqlx::types::Uuid;

async fn exec(pool: &PgPool, sql: &str, id: Uuid) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(sql)
        .bind(id)
        .execute(pool)
        .await?
        .rows_affected())
}

async fn company(pool: &PgPool) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO companies (name, default_region) VALUES ('Acme', 'NZ') RETURNING id",
    )
    .fetch_one(pool)
    .await
    .expect("insert company")
}

async fn user(pool: &PgPool, company: Uuid) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO messenger_users (company_id, external_id, username)
         VALUES ($1, gen_random_uuid()::text, gen_random_uuid()::text) RETURNING id",
    )
    .bind(company)
    .fetch_one(pool)
    .await
    .expect("insert user")
}

/// A Via SPF policy whose entries come from `sent_from`.
async fn policy(pool: &PgPool, company: Uuid, sent_from: &str) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO security_policies (company_id, name, sent_from, security_type)
         VALUES ($1, gen_random_uuid()::text, $2, 'via_spf') RETURNING id",
    )
    .bind(company)
    .bind(sent_from)
    .fetch_one(pool)
    .await
    .expect("insert policy")
}

/// Inserts an entry into `table` (`domains`, `email_addresses` or `ip_addresses`); `value` is its
/// name, address or network.
async fn entry(
    pool: &PgPool,
    table: &str,
    company: Uuid,
    policy: Uuid,
    value: &str,
    forwarding_user: Option<Uuid>,
) -> Result<Uuid, sqlx::Error> {
    let (column, cast) = match table {
        "domains" => ("name", "text"),
        "email_addresses" => ("address", "text"),
        "ip_addresses" => ("network", "cidr"),
        other => panic!("not an entry table: {other}"),
    };
    sqlx::query_scalar(&format!(
        "INSERT INTO {table} (company_id, policy_id, {column}, forwarding_user_id)
         VALUES ($1, $2, $3::{cast}, $4) RETURNING id"
    ))
    .bind(company)
    .bind(policy)
    .bind(value)
    .bind(forwarding_user)
    .fetch_one(pool)
    .await
}

async fn add_ip(
    pool: &PgPool,
    company: Uuid,
    policy: Uuid,
    net: &str,
) -> Result<Uuid, sqlx::Error> {
    entry(pool, "ip_addresses", company, policy, net, None).await
}

/// Verification means the token was found, so a verified row always carries one (md5 gives 32 hex).
const VERIFY_DOMAIN: &str = "UPDATE domains SET state = 'verified', verified_at = now(), \
     token = coalesce(token, md5(id::text)) WHERE id = $1";

#[tokio::test]
async fn verified_domain_belongs_to_one_company() {
    let (_db, pool) = TestDb::migrated(SCHEMA, &MIGRATOR, 8).await;
    let (a, b) = (company(&pool).await, company(&pool).await);
    let (pa, pb) = (
        policy(&pool, a, "domain").await,
        policy(&pool, b, "domain").await,
    );
    let da = entry(&pool, "domains", a, pa, "example.com", None)
        .await
        .unwrap();
    let db_ = entry(&pool, "domains", b, pb, "example.com", None)
        .await
        .expect("the same name may be pending for two companies");

    exec(&pool, VERIFY_DOMAIN, da)
        .await
        .expect("first company verifies");
    assert_eq!(
        violated_constraint(exec(&pool, VERIFY_DOMAIN, db_).await),
        "domains_verified_name_key"
    );

    // Ownership moves once the old owner's row has left 'verified'.
    exec(
        &pool,
        "UPDATE domains SET state = 'revoked' WHERE id = $1",
        da,
    )
    .await
    .unwrap();
    exec(&pool, VERIFY_DOMAIN, db_)
        .await
        .expect("second company verifies after revocation");
    assert_eq!(
        violated_constraint(
            exec(
                &pool,
                "UPDATE domains SET state = 'verified', verified_at = NULL WHERE id = $1",
                da
            )
            .await
        ),
        "domains_verified_has_time"
    );
    assert_eq!(
        violated_constraint(
            exec(
                &pool,
                "UPDATE domains SET state = 'verified', token = NULL WHERE id = $1",
                db_
            )
            .await
        ),
        "domains_verified_has_token"
    );
}

#[tokio::test]
async fn domain_appears_once_per_company_and_is_normalised() {
    let (_db, pool) = TestDb::migrated(SCHEMA, &MIGRATOR, 8).await;
    let a = company(&pool).await;
    let pa = policy(&pool, a, "domain").await;
    entry(&pool, "domains", a, pa, "example.com", None)
        .await
        .unwrap();
    assert_eq!(
        violated_constraint(entry(&pool, "domains", a, pa, "example.com", None).await),
        "domains_company_name_key"
    );
    for bad in ["Example.org", "example.org.", "-x.example.org", "a..b"] {
        assert_eq!(
            violated_constraint(entry(&pool, "domains", a, pa, bad, None).await),
            "domains_name_valid",
            "{bad}"
        );
    }
}

#[tokio::test]
async fn active_email_address_belongs_to_one_company() {
    let (_db, pool) = TestDb::migrated(SCHEMA, &MIGRATOR, 8).await;
    let (a, b) = (company(&pool).await, company(&pool).await);
    let (pa, pb) = (
        policy(&pool, a, "email_address").await,
        policy(&pool, b, "email_address").await,
    );
    let ea = entry(&pool, "email_addresses", a, pa, "jo@example.com", None)
        .await
        .unwrap();
    assert_eq!(
        violated_constraint(entry(&pool, "email_addresses", b, pb, "jo@example.com", None).await),
        "email_addresses_active_address_key"
    );

    exec(
        &pool,
        "UPDATE email_addresses SET deleted_at = now() WHERE id = $1",
        ea,
    )
    .await
    .unwrap();
    entry(&pool, "email_addresses", b, pb, "jo@example.com", None)
        .await
        .expect("a soft-deleted address does not block another company");
    assert_eq!(
        violated_constraint(
            exec(
                &pool,
                "UPDATE email_addresses SET deleted_at = NULL WHERE id = $1",
                ea
            )
            .await
        ),
        "email_addresses_active_address_key",
        "reviving the old row would give the address two owners"
    );
    assert_eq!(
        violated_constraint(entry(&pool, "email_addresses", a, pa, "Jo@example.com", None).await),
        "email_addresses_address_valid"
    );
}

#[tokio::test]
async fn forwarding_user_belongs_to_the_company_of_the_entry() {
    let (_db, pool) = TestDb::migrated(SCHEMA, &MIGRATOR, 8).await;
    let (a, b) = (company(&pool).await, company(&pool).await);
    let (own, foreign) = (user(&pool, a).await, user(&pool, b).await);
    for (table, sent_from, value) in [
        ("domains", "domain", "example.com"),
        ("email_addresses", "email_address", "jo@example.com"),
        ("ip_addresses", "ip_address", "192.0.2.0/24"),
    ] {
        let pa = policy(&pool, a, sent_from).await;
        assert_eq!(
            violated_constraint(entry(&pool, table, a, pa, value, Some(foreign)).await),
            format!("{table}_forwarding_user_fk")
        );
        entry(&pool, table, a, pa, value, Some(own))
            .await
            .expect("a user of the same company");
    }
    let refused = sqlx::query(
        "INSERT INTO security_policies (company_id, name, sent_from, security_type, default_forwarding_user_id)
         VALUES ($1, 'p', 'domain', 'via_spf', $2)",
    )
    .bind(a)
    .bind(foreign)
    .execute(&pool)
    .await;
    assert_eq!(
        violated_constraint(refused),
        "security_policies_default_forwarding_user_fk"
    );
}

#[tokio::test]
async fn entry_policy_is_of_the_same_kind_and_company() {
    let (_db, pool) = TestDb::migrated(SCHEMA, &MIGRATOR, 8).await;
    let (a, b) = (company(&pool).await, company(&pool).await);
    let email_policy = policy(&pool, a, "email_address").await;
    let other_company_policy = policy(&pool, b, "domain").await;
    let own_policy = policy(&pool, a, "domain").await;

    assert_eq!(
        violated_constraint(entry(&pool, "domains", a, email_policy, "example.com", None).await),
        "domains_policy_fk"
    );
    assert_eq!(
        violated_constraint(
            entry(
                &pool,
                "domains",
                a,
                other_company_policy,
                "example.com",
                None
            )
            .await
        ),
        "domains_policy_fk"
    );
    assert_eq!(
        violated_constraint(
            entry(&pool, "ip_addresses", a, email_policy, "192.0.2.0/24", None).await
        ),
        "ip_addresses_policy_fk"
    );
    entry(&pool, "domains", a, own_policy, "example.com", None)
        .await
        .unwrap();
    assert_eq!(
        violated_constraint(
            exec(
                &pool,
                "UPDATE security_policies SET sent_from = 'email_address' WHERE id = $1",
                own_policy
            )
            .await
        ),
        "domains_policy_fk",
        "a policy's kind cannot change while it has entries"
    );
}

#[tokio::test]
async fn ip_networks_of_two_companies_never_overlap() {
    let (_db, pool) = TestDb::migrated(SCHEMA, &MIGRATOR, 8).await;
    let (a, b) = (company(&pool).await, company(&pool).await);
    let (pa, pb) = (
        policy(&pool, a, "ip_address").await,
        policy(&pool, b, "ip_address").await,
    );
    add_ip(&pool, a, pa, "10.0.0.0/8").await.unwrap();
    add_ip(&pool, a, pa, "10.1.0.0/16")
        .await
        .expect("overlap inside one company is allowed");
    add_ip(&pool, a, pa, "2001:db8::/32").await.unwrap();
    for overlapping in ["10.2.0.0/16", "10.1.2.3/32", "0.0.0.0/0", "2001:db8:1::/48"] {
        assert_eq!(
            violated_constraint(add_ip(&pool, b, pb, overlapping).await),
            "ip_addresses_no_cross_company_overlap",
            "{overlapping}"
        );
    }
    add_ip(&pool, b, pb, "11.0.0.0/8")
        .await
        .expect("a disjoint network of another company");
    assert_eq!(
        violated_constraint(add_ip(&pool, a, pa, "10.1.0.0/16").await),
        "ip_addresses_network_key"
    );
}

#[tokio::test]
async fn ip_network_with_host_bits_or_v4_mapped_is_rejected() {
    let (_db, pool) = TestDb::migrated(SCHEMA, &MIGRATOR, 8).await;
    let a = company(&pool).await;
    let pa = policy(&pool, a, "ip_address").await;
    let error = add_ip(&pool, a, pa, "10.0.0.1/8").await.unwrap_err();
    assert_eq!(
        error.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("22P02"),
        "cidr refuses host bits: {error}"
    );
    assert_eq!(
        violated_constraint(add_ip(&pool, a, pa, "::ffff:192.0.2.1/128").await),
        "ip_addresses_no_v4_mapped"
    );
    add_ip(&pool, a, pa, "192.0.2.1/32").await.unwrap();
    let host_with_mask =
        sqlx::query("INSERT INTO sender_log (company_id, ip) VALUES ($1, '192.0.2.0/24')")
            .bind(a)
            .execute(&pool)
            .await;
    assert_eq!(violated_constraint(host_with_mask), "sender_log_ip_check");
}

#[tokio::test]
async fn deleting_a_company_deletes_all_its_rows() {
    let (_db, pool) = TestDb::migrated(SCHEMA, &MIGRATOR, 8).await;
    let (a, b) = (company(&pool).await, company(&pool).await);
    for (c, n) in [(a, 1), (b, 2)] {
        let u = user(&pool, c).await;
        let pd = policy(&pool, c, "domain").await;
        let pe = policy(&pool, c, "email_address").await;
        let pi = policy(&pool, c, "ip_address").await;
        exec(&pool, "UPDATE security_policies SET default_forwarding_user_id = (SELECT id FROM messenger_users WHERE company_id = $1) WHERE company_id = $1", c).await.unwrap();
        entry(&pool, "domains", c, pd, &format!("d{n}.example"), Some(u))
            .await
            .unwrap();
        entry(
            &pool,
            "email_addresses",
            c,
            pe,
            &format!("e{n}@x.example"),
            Some(u),
        )
        .await
        .unwrap();
        entry(
            &pool,
            "ip_addresses",
            c,
            pi,
            &format!("10.{n}.0.0/16"),
            Some(u),
        )
        .await
        .unwrap();
        sqlx::query(
            "WITH i AS (INSERT INTO imports (company_id, policy_id) VALUES ($1, $2) RETURNING id),
                  r AS (INSERT INTO import_rows (import_id, line_number, raw_email, username, status)
                        SELECT id, 2, 'x', 'y', 'invalid_email' FROM i)
             INSERT INTO notifications (company_id, request_id, import_id, email_address)
             SELECT $1, 'r', id, 'e@x.example' FROM i",
        )
        .bind(c)
        .bind(pe)
        .execute(&pool)
        .await
        .unwrap();
        exec(
            &pool,
            "INSERT INTO sender_log (company_id, ip) VALUES ($1, '192.0.2.1')",
            c,
        )
        .await
        .unwrap();
        exec(&pool, "INSERT INTO idempotency_keys (company_id, method, request_id, resource_id) VALUES ($1, 'm', 'r', $1)", c).await.unwrap();
    }

    exec(&pool, "DELETE FROM companies WHERE id = $1", a)
        .await
        .expect("deleting a company cascades");

    for table in [
        "messenger_users",
        "security_policies",
        "domains",
        "email_addresses",
        "ip_addresses",
        "imports",
        "notifications",
        "sender_log",
        "idempotency_keys",
    ] {
        let (left, others): (i64, i64) = sqlx::query_as(&format!(
            "SELECT count(*) FILTER (WHERE company_id = $1), count(*) FROM {table}"
        ))
        .bind(a)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(left, 0, "{table}: nothing left of the deleted company");
        assert!(others > 0, "{table}: the other company's rows are kept");
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM import_rows")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 1, "import rows of the deleted company are gone");
}

#[tokio::test]
async fn deleting_a_policy_with_entries_is_refused() {
    let (_db, pool) = TestDb::migrated(SCHEMA, &MIGRATOR, 8).await;
    let a = company(&pool).await;
    let delete = "DELETE FROM security_policies WHERE id = $1";
    for (table, sent_from, value) in [
        ("domains", "domain", "example.com"),
        ("email_addresses", "email_address", "jo@example.com"),
        ("ip_addresses", "ip_address", "192.0.2.0/24"),
    ] {
        let p = policy(&pool, a, sent_from).await;
        let id = entry(&pool, table, a, p, value, None).await.unwrap();
        assert_eq!(
            violated_constraint(exec(&pool, delete, p).await),
            format!("{table}_policy_fk")
        );
        exec(&pool, &format!("DELETE FROM {table} WHERE id = $1"), id)
            .await
            .unwrap();
        assert_eq!(
            exec(&pool, delete, p).await.unwrap(),
            1,
            "an empty policy can go"
        );
    }
}

#[tokio::test]
async fn new_sender_ip_is_reported_exactly_once_under_concurrency() {
    const TASKS: usize = 8;
    const ROUNDS: u32 = 20;
    let (_db, pool) = TestDb::migrated(SCHEMA, &MIGRATOR, 8).await;
    let a = company(&pool).await;
    for round in 0..ROUNDS {
        let ip = format!("198.51.100.{round}");
        let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let (pool, barrier, ip) = (pool.clone(), barrier.clone(), ip.clone());
                tokio::spawn(async move {
                    let mut conn = pool.acquire().await.expect("connection");
                    barrier.wait().await;
                    sqlx::query_scalar::<_, bool>(
                        "INSERT INTO sender_log (company_id, ip) VALUES ($1, $2::inet)
                         ON CONFLICT (company_id, ip) DO UPDATE
                            SET last_seen = greatest(sender_log.last_seen, now()),
                                seen_count = sender_log.seen_count + 1
                         RETURNING (xmax = 0)",
                    )
                    .bind(a)
                    .bind(ip)
                    .fetch_one(&mut *conn)
                    .await
                    .expect("report sender ip")
                })
            })
            .collect();
        let mut new = 0;
        for task in tasks {
            new += usize::from(task.await.unwrap());
        }
        assert_eq!(
            new, 1,
            "round {round}: exactly one report sees the IP as new"
        );
        let seen: i64 = sqlx::query_scalar(
            "SELECT seen_count FROM sender_log WHERE company_id = $1 AND ip = $2::inet",
        )
        .bind(a)
        .bind(&ip)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(seen, TASKS as i64);
    }
}

#[tokio::test]
async fn notification_is_sent_once_per_request_and_address() {
    let (_db, pool) = TestDb::migrated(SCHEMA, &MIGRATOR, 8).await;
    let a = company(&pool).await;
    let notify = |request: &'static str, address: &'static str| {
        sqlx::query(
            "INSERT INTO notifications (company_id, request_id, email_address) VALUES ($1, $2, $3)",
        )
        .bind(a)
        .bind(request)
        .bind(address)
        .execute(&pool)
    };
    notify("req-1", "jo@example.com").await.unwrap();
    assert_eq!(
        violated_constraint(notify("req-1", "jo@example.com").await),
        "notifications_once_per_request"
    );
    notify("req-1", "al@example.com")
        .await
        .expect("another address");
    notify("req-2", "jo@example.com")
        .await
        .expect("another request");
    assert_eq!(
        violated_constraint(
            exec(
                &pool,
                "UPDATE notifications SET status = 'sent' WHERE company_id = $1",
                a
            )
            .await
        ),
        "notifications_sent_has_time"
    );
}

type MigrationRow = (i64, String, bool, Vec<u8>, String);

async fn applied_migrations(pool: &PgPool) -> Vec<MigrationRow> {
    sqlx::query_as(
        "SELECT version, description, success, checksum, installed_on::text
         FROM _sqlx_migrations ORDER BY version",
    )
    .fetch_all(pool)
    .await
    .expect("read _sqlx_migrations")
}

#[tokio::test]
async fn migrating_twice_is_a_no_op() {
    let (db, pool) = TestDb::migrated(SCHEMA, &MIGRATOR, 8).await;
    let before = applied_migrations(&pool).await;
    assert_eq!(before.len(), MIGRATOR.iter().count());
    assert!(before.iter().all(|row| row.2), "all applied successfully");
    db::migrate(&db.url, SCHEMA, &MIGRATOR)
        .await
        .expect("second migrate");
    assert_eq!(applied_migrations(&pool).await, before);
}

/// The cross-company overlap constraint exists and works in the policy schema of `url`.
async fn assert_overlap_enforced(url: &str) {
    let pool = db::connect(url, SCHEMA, 2).await.expect("connect");
    let (a, b) = (company(&pool).await, company(&pool).await);
    let (pa, pb) = (
        policy(&pool, a, "ip_address").await,
        policy(&pool, b, "ip_address").await,
    );
    add_ip(&pool, a, pa, "10.0.0.0/8").await.unwrap();
    assert_eq!(
        violated_constraint(add_ip(&pool, b, pb, "10.0.0.0/16").await),
        "ip_addresses_no_cross_company_overlap"
    );
    pool.close().await;
}

#[tokio::test]
async fn all_services_migrate_into_one_database() {
    let db = TestDb::unique();
    db::migrate(
        &db.url,
        email2sms_verification::SCHEMA,
        &email2sms_verification::MIGRATOR,
    )
    .await
    .expect("verification");
    db::migrate(&db.url, SCHEMA, &MIGRATOR)
        .await
        .expect("policy");
    db::migrate(
        &db.url,
        email2sms_dispatch::SCHEMA,
        &email2sms_dispatch::MIGRATOR,
    )
    .await
    .expect("dispatch");
    db::migrate(&db.url, SCHEMA, &MIGRATOR)
        .await
        .expect("policy again");

    for (schema, migrator) in [
        (
            email2sms_verification::SCHEMA,
            &email2sms_verification::MIGRATOR,
        ),
        (SCHEMA, &MIGRATOR),
        (email2sms_dispatch::SCHEMA, &email2sms_dispatch::MIGRATOR),
    ] {
        let pool = db::connect(&db.url, schema, 1).await.unwrap();
        assert_eq!(
            applied_migrations(&pool).await.len(),
            migrator.iter().count(),
            "{schema} keeps its own migration history"
        );
        pool.close().await;
    }
    assert_overlap_enforced(&db.url).await;
}

#[tokio::test]
async fn migration_uses_btree_gist_where_an_operator_installed_it() {
    let db = TestDb::create().await;
    let admin = sqlx::PgPool::connect(&db.url).await.unwrap();
    for sql in [
        "CREATE SCHEMA extensions",
        "CREATE EXTENSION btree_gist WITH SCHEMA extensions",
    ] {
        sqlx::query(sql).execute(&admin).await.unwrap();
    }
    admin.close().await;
    db::migrate(&db.url, SCHEMA, &MIGRATOR)
        .await
        .expect("policy finds btree_gist in the extensions schema");
    db::migrate(&db.url, SCHEMA, &MIGRATOR)
        .await
        .expect("and again");
    assert_overlap_enforced(&db.url).await;
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
