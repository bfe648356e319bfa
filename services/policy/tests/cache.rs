//! The compiled lookups in Redis always give the answer ResolveSender gives from Postgres.

mod support;

use email2sms_proto::policy::v1 as pb;
use email2sms_proto::verification::v1::VerificationState;
use prost::Message;
use rand::Rng;
use support::{Service, mask};

use pb::{SecurityType, SentFromKind};

/// Random senders over the addresses, domains and networks the test uses, plus strangers.
fn random_senders(count: usize) -> Vec<(String, String)> {
    let mut rng = rand::rng();
    let locals = ["jo", "ceo", "sales", "bob", "x"];
    let domains = [
        "acme.example",
        "sub.acme.example",
        "rival.example",
        "nobody.example",
    ];
    (0..count)
        .map(|_| {
            let from = format!(
                "{}@{}",
                locals[rng.random_range(0..locals.len())],
                domains[rng.random_range(0..domains.len())]
            );
            let ip = match rng.random_range(0..4) {
                0 => format!(
                    "10.1.{}.{}",
                    rng.random_range(0..3),
                    rng.random_range(0..255)
                ),
                1 => format!("10.{}.0.1", rng.random_range(0..3)),
                2 => format!("192.0.2.{}", rng.random_range(0..255)),
                _ => format!("2001:db8::{:x}", rng.random_range(0..0xffff)),
            };
            (from, ip)
        })
        .collect()
}

/// The version stamps differ by design (Redis keeps the version each key was compiled at);
/// everything else must be equal.
fn without_version(sender: Option<pb::CompiledSender>) -> Option<Vec<u8>> {
    sender.map(|mut s| {
        s.version = 0;
        s.encode_to_vec()
    })
}

async fn assert_redis_equals_postgres(s: &mut Service, stage: &str) {
    for (from, ip) in random_senders(60).into_iter().chain([
        ("jo@acme.example".to_owned(), "10.1.0.7".to_owned()),
        ("bob@acme.example".to_owned(), "10.1.0.7".to_owned()),
        ("x@nobody.example".to_owned(), "10.1.0.7".to_owned()),
    ]) {
        let postgres = s.resolve(&from, &ip).await;
        let redis = s.resolve_in_redis(&from, &ip).await;
        assert_eq!(
            without_version(redis.clone()),
            without_version(postgres.clone()),
            "{stage}: {from} from {ip}: redis {redis:?} postgres {postgres:?}"
        );
    }
}

#[tokio::test]
async fn redis_view_equals_resolve_sender_after_every_kind_of_change() {
    let mut s = Service::start().await;
    let a = s.company("Acme").await;
    let b = s.company("Rival").await;
    let jo = s.user(&a, "jo", true).await;
    let ops = s.user(&a, "ops", true).await;
    let rival = s.user(&b, "rival", true).await;
    let emails = s
        .policy(&a, SentFromKind::EmailAddress, SecurityType::ViaSpf, &[])
        .await;
    let ips = s
        .policy(
            &a,
            SentFromKind::IpAddress,
            SecurityType::ByIpAddresses,
            &["10.1.0.0/24"],
        )
        .await;
    let domains = s
        .policy(&a, SentFromKind::Domain, SecurityType::ByGoogleMail, &[])
        .await;
    let b_emails = s
        .policy(&b, SentFromKind::EmailAddress, SecurityType::ByOutlook, &[])
        .await;

    // Create.
    let ceo = s.email(&a, &emails, "ceo@acme.example", &jo).await.unwrap();
    s.email(&b, &b_emails, "sales@rival.example", &rival)
        .await
        .unwrap();
    s.email(&a, &emails, "x@sub.acme.example", "")
        .await
        .unwrap();
    let wide = s.ip(&a, &ips, "10.1.0.0/24", &ops).await.unwrap();
    s.ip(&a, &ips, "10.1.0.0/25", &jo).await.unwrap();
    s.ip(&a, &ips, "2001:db8::/48", "").await.unwrap();
    let (domain, token) = s.pending_domain(&a, &domains, "acme.example").await;
    assert_redis_equals_postgres(&mut s, "after create").await;

    // Verification arrives, then allocation.
    s.verification_event(&a, "acme.example", &token, VerificationState::Verified, 1)
        .await
        .unwrap();
    assert_redis_equals_postgres(&mut s, "after verification").await;
    s.policy
        .allocate_domain(pb::AllocateDomainRequest {
            company_id: a.clone(),
            domain_id: domain.clone(),
            forwarding_user_id: ops.clone(),
        })
        .await
        .unwrap();
    assert_redis_equals_postgres(&mut s, "after allocation").await;
    assert!(
        s.resolve_in_redis("bob@acme.example", "192.0.2.1")
            .await
            .is_some()
    );

    // Update: an entry, a policy (type and ranges), a user, the company.
    s.policy
        .update_email_address(pb::UpdateEmailAddressRequest {
            company_id: a.clone(),
            email_address: Some(pb::EmailAddress {
                email_address_id: ceo.email_address_id.clone(),
                forwarding_user_id: ops.clone(),
                ..Default::default()
            }),
            update_mask: mask(&["forwarding_user_id"]),
        })
        .await
        .unwrap();
    s.policy
        .update_security_policy(pb::UpdateSecurityPolicyRequest {
            company_id: a.clone(),
            security_policy: Some(pb::SecurityPolicy {
                security_policy_id: ips.clone(),
                allowed_ip_ranges: vec!["10.1.0.0/24".into(), "192.0.2.0/24".into()],
                text_mode: pb::TextMode::Subject as i32,
                ..Default::default()
            }),
            update_mask: mask(&["allowed_ip_ranges", "text_mode"]),
        })
        .await
        .unwrap();
    s.policy
        .upsert_messenger_user(pb::UpsertMessengerUserRequest {
            company_id: a.clone(),
            messenger_user: Some(pb::MessengerUser {
                external_id: "ext-ops".into(),
                sender_id: "OpsDesk".into(),
                ..Default::default()
            }),
            update_mask: mask(&["sender_id"]),
        })
        .await
        .unwrap();
    s.policy
        .upsert_company(pb::UpsertCompanyRequest {
            company: Some(pb::Company {
                company_id: a.clone(),
                default_region: "AU".into(),
                ..Default::default()
            }),
            update_mask: mask(&["default_region"]),
        })
        .await
        .unwrap();
    assert_redis_equals_postgres(&mut s, "after updates").await;
    let cached = s
        .resolve_in_redis("bob@acme.example", "192.0.2.1")
        .await
        .unwrap();
    assert_eq!(cached.sender_id, "OpsDesk");
    assert_eq!(cached.default_region, "AU");

    // Delete.
    s.policy
        .delete_email_address(pb::DeleteEmailAddressRequest {
            company_id: a.clone(),
            email_address_id: ceo.email_address_id.clone(),
        })
        .await
        .unwrap();
    s.policy
        .delete_ip_address(pb::DeleteIpAddressRequest {
            company_id: a.clone(),
            ip_address_id: wide.ip_address_id.clone(),
        })
        .await
        .unwrap();
    assert_redis_equals_postgres(&mut s, "after deletes").await;

    // Verification revoked.
    s.verification_event(&a, "acme.example", &token, VerificationState::Revoked, 2)
        .await
        .unwrap();
    assert_redis_equals_postgres(&mut s, "after revocation").await;
    assert!(
        s.resolve_in_redis("bob@acme.example", "192.0.2.1")
            .await
            .is_none()
    );

    // Redis flushed (this test's keys only) → RebuildCache restores it.
    s.verification_event(&a, "acme.example", &token, VerificationState::Verified, 3)
        .await
        .unwrap();
    s.flush_redis().await;
    assert!(
        s.resolve_in_redis("bob@acme.example", "192.0.2.1")
            .await
            .is_none()
    );
    let rebuilt = s
        .resolution
        .rebuild_cache(pb::RebuildCacheRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(rebuilt.keys_written >= 5, "{rebuilt:?}");
    assert_eq!(rebuilt.keys_removed, 0);
    assert_redis_equals_postgres(&mut s, "after rebuild").await;
    assert!(
        s.resolve_in_redis("bob@acme.example", "192.0.2.1")
            .await
            .is_some()
    );
    s.stop().await;
}

#[tokio::test]
async fn rebuild_removes_keys_that_postgres_no_longer_backs() {
    let mut s = Service::start().await;
    let a = s.company("Acme").await;
    let user = s.user(&a, "jo", true).await;
    let emails = s
        .policy(&a, SentFromKind::EmailAddress, SecurityType::ViaSpf, &[])
        .await;
    let entry = s
        .email(&a, &emails, "jo@acme.example", &user)
        .await
        .unwrap();
    // Changed behind the service's back (as after a lost recompile).
    sqlx::query("UPDATE email_addresses SET deleted_at = now() WHERE id = $1::uuid")
        .bind(&entry.email_address_id)
        .execute(&s.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE cache_version SET version = version + 1")
        .execute(&s.pool)
        .await
        .unwrap();
    assert!(
        s.resolve_in_redis("jo@acme.example", "192.0.2.1")
            .await
            .is_some()
    );
    let rebuilt = s
        .resolution
        .rebuild_cache(pb::RebuildCacheRequest {
            company_id: a.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rebuilt.keys_removed, 1, "{rebuilt:?}");
    assert!(
        s.resolve_in_redis("jo@acme.example", "192.0.2.1")
            .await
            .is_none()
    );
    s.stop().await;
}

#[tokio::test]
async fn writes_succeed_with_redis_down_and_the_cache_is_marked_dirty() {
    // A service whose Redis is unreachable (nothing listens on port 1).
    let db = email2sms_testkit::TestDb::unique();
    email2sms_runtime::db::migrate(
        &db.url,
        email2sms_policy::SCHEMA,
        &email2sms_policy::MIGRATOR,
    )
    .await
    .unwrap();
    let pool = email2sms_runtime::db::connect(&db.url, email2sms_policy::SCHEMA, 4)
        .await
        .unwrap();
    let cache = email2sms_policy::Cache::new("redis://127.0.0.1:1", "email2sms-down:").unwrap();
    let api = email2sms_policy::PolicyApi::new(pool.clone(), cache.clone());
    use email2sms_proto::policy::v1::policy_service_server::PolicyService;
    use email2sms_proto::tonic::Request;
    let company = uuid::Uuid::new_v4().to_string();
    api.upsert_company(Request::new(pb::UpsertCompanyRequest {
        company: Some(pb::Company {
            company_id: company.clone(),
            display_name: "Acme".into(),
            default_region: "NZ".into(),
            ..Default::default()
        }),
        update_mask: None,
    }))
    .await
    .unwrap();
    let policy = api
        .create_security_policy(Request::new(pb::CreateSecurityPolicyRequest {
            company_id: company.clone(),
            security_policy: Some(pb::SecurityPolicy {
                sent_from: SentFromKind::EmailAddress as i32,
                security_type: SecurityType::ViaSpf as i32,
                ..Default::default()
            }),
            request_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .security_policy
        .unwrap();
    assert!(!cache.is_dirty());
    api.create_email_address(Request::new(pb::CreateEmailAddressRequest {
        company_id: company.clone(),
        email_address: Some(pb::EmailAddress {
            security_policy_id: policy.security_policy_id,
            email_address: "jo@acme.example".into(),
            ..Default::default()
        }),
        request_id: String::new(),
    }))
    .await
    .expect("the write succeeds in Postgres");
    assert!(cache.is_dirty(), "a rebuild is due once Redis answers");
    let from = email2sms_domain::EmailAddress::parse("jo@acme.example").unwrap();
    let found =
        email2sms_policy::resolve::resolve_sender(&pool, &from, "192.0.2.1".parse().unwrap())
            .await
            .unwrap();
    assert!(found.is_some(), "ResolveSender answers from Postgres");
    pool.close().await;
}
