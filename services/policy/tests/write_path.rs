//! The write path's contract, seen from outside: every committed change of compiled data bumps
//! the compile version exactly once; a retried create, a refusal and a rolled-back error do not;
//! a refusal's record is committed all the same.

mod support;

use email2sms_proto::policy::v1 as pb;
use email2sms_proto::tonic::Code;
use prost::Message;
use sqlx::PgPool;
use support::{Service, assert_code, mask};

async fn version(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT version FROM cache_version")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Redis keeps the version each key was compiled at; everything else must equal Postgres.
fn without_version(sender: Option<pb::CompiledSender>) -> Option<Vec<u8>> {
    sender.map(|mut s| {
        s.version = 0;
        s.encode_to_vec()
    })
}

async fn refusals(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM conflict_refusals")
        .fetch_one(pool)
        .await
        .unwrap()
}

fn create_email(
    company: &str,
    policy: &str,
    address: &str,
    request_id: &str,
) -> pb::CreateEmailAddressRequest {
    pb::CreateEmailAddressRequest {
        company_id: company.into(),
        email_address: Some(pb::EmailAddress {
            security_policy_id: policy.into(),
            email_address: address.into(),
            ..Default::default()
        }),
        request_id: request_id.into(),
    }
}

#[tokio::test]
async fn each_committed_change_bumps_the_version_once_and_nothing_else_does() {
    let mut s = Service::start().await;
    let start = version(&s.pool).await;
    let a = s.company("Acme").await;
    let b = s.company("Rival").await;
    assert_eq!(version(&s.pool).await, start + 2, "two companies");
    let policy_a = s.email_policy(&a).await;
    let policy_b = s.email_policy(&b).await;
    assert_eq!(
        version(&s.pool).await,
        start + 2,
        "a new security policy has no entries: nothing compiled changed"
    );

    let request_id = uuid::Uuid::new_v4().to_string();
    let created = s
        .policy
        .create_email_address(create_email(&a, &policy_a, "jo@acme.example", &request_id))
        .await
        .unwrap()
        .into_inner()
        .email_address
        .unwrap();
    assert_eq!(version(&s.pool).await, start + 3, "a created entry");
    let retried = s
        .policy
        .create_email_address(create_email(&a, &policy_a, "jo@acme.example", &request_id))
        .await
        .unwrap()
        .into_inner()
        .email_address
        .unwrap();
    assert_eq!(retried.email_address_id, created.email_address_id);
    assert_eq!(version(&s.pool).await, start + 3, "a retried create");

    let before = refusals(&s.pool).await;
    assert_code(
        s.policy
            .create_email_address(create_email(&b, &policy_b, "jo@acme.example", ""))
            .await,
        Code::AlreadyExists,
    );
    assert_eq!(
        refusals(&s.pool).await,
        before + 1,
        "the refusal is recorded"
    );
    assert_eq!(version(&s.pool).await, start + 3, "a refused create");

    assert_code(
        s.policy
            .create_email_address(create_email(&a, &policy_a, "jo@acme.example", ""))
            .await,
        Code::AlreadyExists,
    );
    assert_eq!(
        version(&s.pool).await,
        start + 3,
        "a create of this company's own address again fails and rolls back"
    );

    s.policy
        .update_email_address(pb::UpdateEmailAddressRequest {
            company_id: a.clone(),
            email_address: Some(pb::EmailAddress {
                email_address_id: created.email_address_id.clone(),
                disabled: true,
                ..Default::default()
            }),
            update_mask: mask(&["disabled"]),
        })
        .await
        .unwrap();
    assert_eq!(version(&s.pool).await, start + 4, "an update");
    s.policy
        .delete_email_address(pb::DeleteEmailAddressRequest {
            company_id: a.clone(),
            email_address_id: created.email_address_id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(version(&s.pool).await, start + 5, "a delete");
    assert_code(
        s.policy
            .delete_email_address(pb::DeleteEmailAddressRequest {
                company_id: a.clone(),
                email_address_id: created.email_address_id,
            })
            .await,
        Code::NotFound,
    );
    assert_eq!(version(&s.pool).await, start + 5, "a delete of nothing");
    s.stop().await;
}

/// A messenger user's change reaches the compiled entries that forward through it by their
/// policy's default, even one another transaction creates meanwhile. Creating such an entry locks
/// nothing of the user (its row names the policy, not the user), so only the version lock orders
/// the two: UpsertMessengerUser must read the entries to recompile after taking it, or an entry
/// committed in between keeps the user's old state in Redis (the creator recompiled it before
/// the user's change committed). Here the creating transaction is the test's own, holding the
/// version lock, and never recompiles: whatever Redis has for its entry, the upsert compiled.
#[tokio::test]
async fn a_user_change_recompiles_entries_created_while_it_waited_for_the_version_lock() {
    let mut s = Service::start().await;
    let a = s.company("Acme").await;
    let user = s.user(&a, "jo", true).await;
    let policy = s
        .policy
        .create_security_policy(pb::CreateSecurityPolicyRequest {
            company_id: a.clone(),
            security_policy: Some(pb::SecurityPolicy {
                display_name: "Head office".into(),
                sent_from: pb::SentFromKind::EmailAddress as i32,
                security_type: pb::SecurityType::ViaSpf as i32,
                default_forwarding_user_id: user.clone(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .security_policy
        .unwrap()
        .security_policy_id;

    let mut creator = s.pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO email_addresses (company_id, policy_id, address)
         VALUES ($1::uuid, $2::uuid, 'late@acme.example')",
    )
    .bind(&a)
    .bind(&policy)
    .execute(&mut *creator)
    .await
    .unwrap();
    sqlx::query("UPDATE cache_version SET version = version + 1")
        .execute(&mut *creator)
        .await
        .unwrap();

    let mut client = s.policy.clone();
    let company = a.clone();
    let upsert = tokio::spawn(async move {
        client
            .upsert_messenger_user(pb::UpsertMessengerUserRequest {
                company_id: company,
                messenger_user: Some(pb::MessengerUser {
                    external_id: "ext-jo".into(),
                    active: false,
                    ..Default::default()
                }),
                update_mask: mask(&["active"]),
            })
            .await
    });
    let pool = s.pool.clone();
    email2sms_testkit::eventually(
        "the upsert waits for the version lock",
        || {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM pg_stat_activity
                      WHERE datname = current_database() AND wait_event_type = 'Lock'
                        AND query LIKE 'UPDATE cache_version%'",
                )
                .fetch_one(&pool)
                .await
                .unwrap()
            }
        },
        |waiting| *waiting == 1,
    )
    .await;
    creator.commit().await.unwrap();
    upsert.await.unwrap().unwrap();

    let postgres = s.resolve("late@acme.example", "192.0.2.1").await;
    let redis = s.resolve_in_redis("late@acme.example", "192.0.2.1").await;
    assert!(postgres.is_some(), "the entry resolves from Postgres");
    assert_eq!(
        without_version(redis),
        without_version(postgres),
        "Redis has the entry as Postgres resolves it, with the user inactive"
    );
    s.stop().await;
}
