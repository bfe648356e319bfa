//! Domains through the real verification service (started in-process) and a real DNS server
//! (NSD, from the test kit): CreateDomain, VerifyDomain, recent checks, rotation and deletion.

mod support;

use clap::Parser;
use email2sms_proto::policy::v1 as pb;
use email2sms_proto::tonic::Code;
use email2sms_proto::verification::v1::VerificationState;
use email2sms_runtime::auth::Auth;
use email2sms_testkit::TestDb;
use email2sms_testkit::dns::DnsServer;
use support::{Service, assert_code};

use pb::{SecurityType, SentFromKind};

/// The verification service on 127.0.0.1:0, asking `dns` only, without its scheduler (the test
/// decides when checks run).
async fn start_verification(dns: &DnsServer) -> (TestDb, String, tokio::sync::oneshot::Sender<()>) {
    let prefix = format!("test.{}.", uuid::Uuid::new_v4().simple());
    start_verification_with(dns, &["--scheduler=false", "--amqp-prefix", &prefix]).await
}

/// The verification service on 127.0.0.1:0, asking `dns` only, with `extra` flags.
async fn start_verification_with(
    dns: &DnsServer,
    extra: &[&str],
) -> (TestDb, String, tokio::sync::oneshot::Sender<()>) {
    let db = TestDb::unique();
    email2sms_runtime::db::migrate(
        &db.url,
        email2sms_verification::SCHEMA,
        &email2sms_verification::MIGRATOR,
    )
    .await
    .expect("migrate verification");
    let pool = email2sms_runtime::db::connect(&db.url, email2sms_verification::SCHEMA, 4)
        .await
        .unwrap();
    let dns_addr = dns.addr().to_string();
    let mut args = vec![
        "email2sms-verification",
        "--insecure-no-auth",
        "--database-url",
        &db.url,
        "--dns-servers",
        &dns_addr,
    ];
    args.extend_from_slice(extra);
    let config = email2sms_verification::Config::try_parse_from(args).expect("verification config");
    let auth = Auth::from_args(&config.server).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        email2sms_verification::run(&config, &auth, pool, listener, async move {
            let _ = stopped.await;
        })
        .await
        .expect("verification serves");
    });
    (db, url, stop)
}

#[tokio::test]
async fn create_domain_returns_the_token_and_verify_domain_proves_it_through_dns() {
    let mut dns = DnsServer::start().await;
    let (_vdb, url, stop_verification) = start_verification(&dns).await;
    let mut s = Service::start_with(&["--verification-url", &url]).await;
    let company = s.company("Acme").await;
    let user = s.user(&company, "sales", true).await;
    let policy = s
        .policy(&company, SentFromKind::Domain, SecurityType::ViaSpf, &[])
        .await;
    let domain_name = format!("acme-{}.test", uuid::Uuid::new_v4().simple());

    // "Click 'Create Domain', and enter the name of your domain."
    let create = pb::CreateDomainRequest {
        company_id: company.clone(),
        security_policy_id: policy.clone(),
        domain_name: domain_name.to_uppercase(),
        forwarding_user_id: String::new(),
        request_id: uuid::Uuid::new_v4().to_string(),
    };
    let domain = s
        .policy
        .create_domain(create.clone())
        .await
        .unwrap()
        .into_inner()
        .domain
        .unwrap();
    assert_eq!(domain.domain_name, domain_name);
    let verification = domain.verification.clone().unwrap();
    // "Note the verification token provided. It will be something like 9e9e65dc…"
    assert_eq!(verification.token.len(), 32);
    assert!(
        verification
            .token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    assert_eq!(verification.txt_record_name, domain_name);
    assert!(verification.txt_record_value.contains(&verification.token));
    assert_ne!(verification.state, VerificationState::Verified as i32);
    // A retry with the same request_id is the same domain; a second create is ALREADY_EXISTS.
    let retried = s
        .policy
        .create_domain(create.clone())
        .await
        .unwrap()
        .into_inner()
        .domain
        .unwrap();
    assert_eq!(retried.domain_id, domain.domain_id);
    let mut again = create.clone();
    again.request_id = String::new();
    assert_code(s.policy.create_domain(again).await, Code::AlreadyExists);
    // Wildcards are refused.
    let mut wildcard = create.clone();
    wildcard.domain_name = "*.example.com".into();
    wildcard.request_id = String::new();
    assert_code(
        s.policy.create_domain(wildcard).await,
        Code::InvalidArgument,
    );

    // "Create a TXT record containing the value shown", then "Verify".
    dns.set_zone(
        &domain_name,
        &format!("@ TXT \"{}\"", verification.txt_record_value),
    )
    .await;
    let verified = s
        .policy
        .verify_domain(pb::VerifyDomainRequest {
            company_id: company.clone(),
            domain_id: domain.domain_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(verified.check.is_some());
    let state = verified.domain.unwrap().verification.unwrap();
    assert_eq!(state.state, VerificationState::Verified as i32, "{state:?}");

    // "Allocate to User"; mail from the domain now resolves to the user.
    s.policy
        .allocate_domain(pb::AllocateDomainRequest {
            company_id: company.clone(),
            domain_id: domain.domain_id.clone(),
            forwarding_user_id: user.clone(),
        })
        .await
        .unwrap();
    let sender = s
        .resolve(&format!("bob@{domain_name}"), "192.0.2.1")
        .await
        .unwrap();
    assert_eq!(sender.forwarding_user_id, user);
    assert!(sender.readiness.unwrap().ready);
    assert!(
        s.resolve_in_redis(&format!("bob@{domain_name}"), "192.0.2.1")
            .await
            .is_some()
    );

    let detail = s
        .policy
        .get_domain(pb::GetDomainRequest {
            company_id: company.clone(),
            domain_id: domain.domain_id.clone(),
            include_recent_checks: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!detail.recent_checks.is_empty());

    // Rotation replaces the token.
    let rotated = s
        .policy
        .rotate_domain_token(pb::RotateDomainTokenRequest {
            company_id: company.clone(),
            domain_id: domain.domain_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .domain
        .unwrap();
    assert_ne!(rotated.verification.unwrap().token, verification.token);

    // Delete: mail stops matching at once.
    s.policy
        .delete_domain(pb::DeleteDomainRequest {
            company_id: company.clone(),
            domain_id: domain.domain_id.clone(),
        })
        .await
        .unwrap();
    assert!(
        s.resolve(&format!("bob@{domain_name}"), "192.0.2.1")
            .await
            .is_none()
    );
    assert!(
        s.resolve_in_redis(&format!("bob@{domain_name}"), "192.0.2.1")
            .await
            .is_none()
    );
    s.stop().await;
    let _ = stop_verification.send(());
    dns.stop().await;
}

#[tokio::test]
async fn the_verification_services_own_check_reaches_policy_through_rabbitmq() {
    let mut dns = DnsServer::start().await;
    let prefix = format!("test.{}.", uuid::Uuid::new_v4().simple());
    // The scheduler checks by itself, often: nobody calls VerifyDomain in this test.
    let (_vdb, url, stop_verification) = start_verification_with(
        &dns,
        &[
            "--amqp-prefix",
            &prefix,
            "--poll-interval",
            "100ms",
            "--pending-first-interval",
            "200ms",
            "--pending-max-interval",
            "200ms",
            "--dns-timeout",
            "300ms",
            // NSD refuses names of zones it does not serve yet: a temporary answer.
            "--temporary-retry",
            "200ms",
        ],
    )
    .await;
    let mut s = Service::start_with(&["--verification-url", &url, "--amqp-prefix", &prefix]).await;
    let company = s.company("Acme").await;
    let policy = s
        .policy(&company, SentFromKind::Domain, SecurityType::ViaSpf, &[])
        .await;
    let domain_name = format!("acme-{}.test", uuid::Uuid::new_v4().simple());
    let domain = s
        .policy
        .create_domain(pb::CreateDomainRequest {
            company_id: company.clone(),
            security_policy_id: policy,
            domain_name: domain_name.clone(),
            forwarding_user_id: String::new(),
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .domain
        .unwrap();
    let txt = domain.verification.unwrap().txt_record_value;
    dns.set_zone(&domain_name, &format!("@ TXT \"{txt}\""))
        .await;

    let mut state = VerificationState::Unspecified as i32;
    for _ in 0..200 {
        let current = s
            .policy
            .get_domain(pb::GetDomainRequest {
                company_id: company.clone(),
                domain_id: domain.domain_id.clone(),
                include_recent_checks: false,
            })
            .await
            .unwrap()
            .into_inner()
            .domain
            .unwrap();
        state = current.verification.unwrap().state;
        if state == VerificationState::Verified as i32 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        state,
        VerificationState::Verified as i32,
        "the verification event reached the policy service"
    );
    s.stop().await;
    let _ = stop_verification.send(());
}
