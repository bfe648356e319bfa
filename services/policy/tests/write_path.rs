//! The write path's contract, seen from outside: every committed change of compiled data bumps
//! the compile version exactly once; a retried create, a refusal and a rolled-back error do not;
//! a refusal's record is committed all the same.

mod support;

use email2sms_proto::policy::v1 as pb;
use email2sms_proto::tonic::Code;
use sqlx::PgPool;
use support::{Service, assert_code, mask};

async fn version(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT version FROM cache_version")
        .fetch_one(pool)
        .await
        .unwrap()
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
