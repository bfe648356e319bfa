//! The admin flows of the product description, through the gRPC API of the service started
//! in-process, with ResolveSender answering what ingest would be told.

mod support;

use email2sms_proto::policy::v1 as pb;
use email2sms_proto::tonic::Code;
use email2sms_proto::verification::v1::VerificationState;
use support::{Service, assert_code, mask};
use tonic_types::StatusExt;

use pb::{NotReadyReason, SecurityType, SentFromKind};

#[tokio::test]
async fn email_address_flow_resolves_to_the_forwarding_user() {
    let mut s = Service::start().await;
    let company = s.company("Acme").await;
    let james = s.user(&company, "james.smith", true).await;
    // "Configure 'Emails Sent From' to 'Email Addresses'", "Security Type: Via SPF".
    let policy = s.email_policy(&company).await;
    // "Click 'Create Email' and select an email address … and the Messenger user".
    let entry = s
        .email(&company, &policy, " James.Smith@Example.COM ", &james)
        .await
        .unwrap();
    assert_eq!(entry.email_address, "james.smith@example.com");
    assert_eq!(entry.company_id, company);
    let readiness = entry.readiness.unwrap();
    assert!(readiness.ready, "{readiness:?}");
    assert_eq!(readiness.effective_forwarding_user_id, james);

    let sender = s
        .resolve("JAMES.smith@example.com", "192.0.2.1")
        .await
        .expect("the address matches");
    assert_eq!(sender.match_kind, pb::MatchKind::EmailAddress as i32);
    assert_eq!(sender.entry_id, entry.email_address_id);
    assert_eq!(sender.matched_value, "james.smith@example.com");
    assert_eq!(sender.company_id, company);
    assert_eq!(sender.security_policy_id, policy);
    assert_eq!(sender.security_type, SecurityType::ViaSpf as i32);
    assert_eq!(sender.forwarding_user_id, james);
    assert_eq!(sender.forwarding_user_external_id, "ext-james.smith");
    assert_eq!(sender.forwarding_username, "james.smith");
    assert_eq!(sender.sender_id, "Acme");
    assert_eq!(sender.default_region, "NZ");
    assert_eq!(sender.text_mode, pb::TextMode::BodyOrSubject as i32);
    assert!(sender.readiness.unwrap().ready);
    assert!(sender.version > 0);

    // Another address of the same domain is not covered by an email entry.
    assert!(
        s.resolve("jason.jones@example.com", "192.0.2.1")
            .await
            .is_none()
    );
    s.stop().await;
}

#[tokio::test]
async fn ip_address_flow_picks_the_longest_prefix() {
    let mut s = Service::start().await;
    let company = s.company("Acme").await;
    let (office, server) = (
        s.user(&company, "office", true).await,
        s.user(&company, "server", true).await,
    );
    let policy = s
        .policy(
            &company,
            SentFromKind::IpAddress,
            SecurityType::ByIpAddresses,
            &["203.0.113.0/24"],
        )
        .await;
    let wide = s
        .ip(&company, &policy, "203.0.113.0/24", &office)
        .await
        .unwrap();
    let single = s
        .ip(&company, &policy, "203.0.113.7", &server)
        .await
        .unwrap();
    assert_eq!(
        single.ip_range, "203.0.113.7/32",
        "a single IP is returned as /32"
    );
    assert_eq!(wide.description, "Office Exchange server");

    let exact = s
        .resolve("anyone@anywhere.example", "203.0.113.7")
        .await
        .unwrap();
    assert_eq!(exact.entry_id, single.ip_address_id);
    assert_eq!(exact.match_kind, pb::MatchKind::IpAddress as i32);
    assert_eq!(exact.forwarding_user_id, server);
    assert_eq!(exact.allowed_ip_ranges, vec!["203.0.113.0/24"]);
    let mapped = s
        .resolve("anyone@anywhere.example", "::ffff:203.0.113.8")
        .await
        .unwrap();
    assert_eq!(
        mapped.entry_id, wide.ip_address_id,
        "IPv4-mapped IPv6 is IPv4"
    );
    assert!(
        s.resolve("anyone@anywhere.example", "198.51.100.1")
            .await
            .is_none()
    );

    // Host bits set is refused, not silently masked.
    let status = assert_code(
        s.ip(&company, &policy, "10.0.0.1/8", &office).await,
        Code::InvalidArgument,
    );
    let details = status.get_error_details();
    let bad = details.bad_request().expect("field violations");
    assert_eq!(bad.field_violations[0].field, "ip_address.ip_range");

    // "Which entry covers 203.0.113.7?"
    let covering = s
        .policy
        .list_ip_addresses(pb::ListIpAddressesRequest {
            company_id: company.clone(),
            contains_ip: "203.0.113.7".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(covering.ip_addresses.len(), 2);
    assert_eq!(
        covering.ip_addresses[0].ip_range, "203.0.113.0/24",
        "ordered by address"
    );
    s.stop().await;
}

#[tokio::test]
async fn domain_flow_verification_event_then_allocation_makes_it_ready() {
    let mut s = Service::start().await;
    let company = s.company("Acme").await;
    let user = s.user(&company, "sales", true).await;
    let policy = s
        .policy(&company, SentFromKind::Domain, SecurityType::ViaSpf, &[])
        .await;
    let (domain_id, token) = s.pending_domain(&company, &policy, "example.com").await;

    let domain = s
        .policy
        .get_domain(pb::GetDomainRequest {
            company_id: company.clone(),
            domain_id: domain_id.clone(),
            include_recent_checks: false,
        })
        .await
        .unwrap()
        .into_inner()
        .domain
        .unwrap();
    let verification = domain.verification.unwrap();
    assert_eq!(verification.token.len(), 32);
    assert!(
        verification
            .token
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert_eq!(verification.txt_record_name, "example.com");
    assert_eq!(
        verification.txt_record_value,
        format!("email2sms-verification={token}")
    );
    let readiness = domain.readiness.unwrap();
    assert_eq!(
        readiness.reason_code,
        NotReadyReason::NoForwardingUser as i32
    );
    // A pending domain matches no mail.
    assert!(s.resolve("bob@example.com", "192.0.2.1").await.is_none());

    let applied = s
        .verification_event(
            &company,
            "example.com",
            &token,
            VerificationState::Verified,
            2,
        )
        .await
        .unwrap();
    assert_eq!(applied, email2sms_policy::EventOutcome::Applied);
    let matched = s.resolve("bob@example.com", "192.0.2.1").await.unwrap();
    assert_eq!(matched.match_kind, pb::MatchKind::Domain as i32);
    let readiness = matched.readiness.unwrap();
    assert!(!readiness.ready, "verified but not allocated");
    assert_eq!(
        readiness.reason_code,
        NotReadyReason::NoForwardingUser as i32
    );
    assert!(
        readiness.reason.contains("allocate example.com"),
        "{}",
        readiness.reason
    );

    // "Allocate to User".
    let allocated = s
        .policy
        .allocate_domain(pb::AllocateDomainRequest {
            company_id: company.clone(),
            domain_id: domain_id.clone(),
            forwarding_user_id: user.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .domain
        .unwrap();
    assert!(allocated.readiness.unwrap().ready);
    assert!(allocated.verification.unwrap().verify_time.is_some());
    let matched = s.resolve("Bob@Example.com", "192.0.2.1").await.unwrap();
    assert_eq!(matched.entry_id, domain_id);
    assert_eq!(matched.forwarding_user_id, user);
    assert!(matched.readiness.unwrap().ready);

    // A redelivered or overtaken event never rolls the state back.
    let stale = s
        .verification_event(
            &company,
            "example.com",
            &token,
            VerificationState::Pending,
            1,
        )
        .await
        .unwrap();
    assert_eq!(stale, email2sms_policy::EventOutcome::Stale);
    assert!(s.resolve("bob@example.com", "192.0.2.1").await.is_some());

    // Revoked: mail from the domain stops matching.
    s.verification_event(
        &company,
        "example.com",
        &token,
        VerificationState::Revoked,
        3,
    )
    .await
    .unwrap();
    assert!(s.resolve("bob@example.com", "192.0.2.1").await.is_none());
    s.stop().await;
}

#[tokio::test]
async fn subdomains_are_not_covered_by_a_verified_domain() {
    let mut s = Service::start().await;
    let company = s.company("Acme").await;
    let user = s.user(&company, "sales", true).await;
    let policy = s
        .policy(&company, SentFromKind::Domain, SecurityType::ViaSpf, &[])
        .await;
    s.allocated_domain(&company, &policy, "example.com", &user)
        .await;
    assert!(s.resolve("bob@example.com", "192.0.2.1").await.is_some());
    assert!(
        s.resolve("bob@sales.example.com", "192.0.2.1")
            .await
            .is_none()
    );
    s.stop().await;
}

#[tokio::test]
async fn email_entry_wins_over_domain_and_not_ready_entry_still_wins() {
    let mut s = Service::start().await;
    let company = s.company("Acme").await;
    let active = s.user(&company, "active", true).await;
    let inactive = s.user(&company, "gone", false).await;
    let domains = s
        .policy(&company, SentFromKind::Domain, SecurityType::ViaSpf, &[])
        .await;
    let emails = s
        .policy(
            &company,
            SentFromKind::EmailAddress,
            SecurityType::ByGoogleMail,
            &[],
        )
        .await;
    s.allocated_domain(&company, &domains, "example.com", &active)
        .await;
    s.email(&company, &emails, "ceo@example.com", &inactive)
        .await
        .unwrap();
    let matched = s.resolve("ceo@example.com", "192.0.2.1").await.unwrap();
    assert_eq!(matched.match_kind, pb::MatchKind::EmailAddress as i32);
    assert_eq!(matched.security_type, SecurityType::ByGoogleMail as i32);
    let readiness = matched.readiness.unwrap();
    assert!(!readiness.ready);
    assert_eq!(
        readiness.reason_code,
        NotReadyReason::ForwardingUserInactive as i32,
        "the admin learns what to fix instead of the mail silently going elsewhere"
    );
    s.stop().await;
}

#[tokio::test]
async fn readiness_follows_the_forwarding_user_and_policy_default() {
    let mut s = Service::start().await;
    let company = s.company("Acme").await;
    let user = s.user(&company, "jane", true).await;
    let policy = s.email_policy(&company).await;
    let entry = s
        .email(&company, &policy, "jane@example.com", "")
        .await
        .unwrap();
    let readiness = entry.readiness.unwrap();
    assert!(!readiness.ready);
    assert_eq!(
        readiness.reason_code,
        NotReadyReason::NoForwardingUser as i32
    );

    // The policy's default forwarding user applies to entries without their own.
    s.policy
        .update_security_policy(pb::UpdateSecurityPolicyRequest {
            company_id: company.clone(),
            security_policy: Some(pb::SecurityPolicy {
                security_policy_id: policy.clone(),
                default_forwarding_user_id: user.clone(),
                ..Default::default()
            }),
            update_mask: mask(&["default_forwarding_user_id"]),
        })
        .await
        .unwrap();
    let get = |s: &mut Service| {
        let mut client = s.policy.clone();
        let request = pb::GetEmailAddressRequest {
            company_id: company.clone(),
            email_address_id: entry.email_address_id.clone(),
        };
        async move {
            client
                .get_email_address(request)
                .await
                .unwrap()
                .into_inner()
                .email_address
                .unwrap()
        }
    };
    let now = get(&mut s).await;
    let readiness = now.readiness.unwrap();
    assert!(readiness.ready);
    assert_eq!(readiness.effective_forwarding_user_id, user);
    assert_eq!(
        now.forwarding_user_id, "",
        "the entry's own user stays empty"
    );

    // Deactivating the user makes the entry not ready at once.
    s.policy
        .upsert_messenger_user(pb::UpsertMessengerUserRequest {
            company_id: company.clone(),
            messenger_user: Some(pb::MessengerUser {
                external_id: "ext-jane".into(),
                active: false,
                ..Default::default()
            }),
            update_mask: mask(&["active"]),
        })
        .await
        .unwrap();
    let readiness = get(&mut s).await.readiness.unwrap();
    assert_eq!(
        readiness.reason_code,
        NotReadyReason::ForwardingUserInactive as i32
    );
    let not_ready = s
        .policy
        .list_email_addresses(pb::ListEmailAddressesRequest {
            company_id: company.clone(),
            ready: Some(false),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(not_ready.email_addresses.len(), 1);
    let resolved = s.resolve("jane@example.com", "192.0.2.1").await.unwrap();
    assert!(!resolved.readiness.unwrap().ready);

    // Suspending the company stops every entry without deleting anything.
    s.policy
        .upsert_messenger_user(pb::UpsertMessengerUserRequest {
            company_id: company.clone(),
            messenger_user: Some(pb::MessengerUser {
                external_id: "ext-jane".into(),
                active: true,
                ..Default::default()
            }),
            update_mask: mask(&["active"]),
        })
        .await
        .unwrap();
    s.policy
        .upsert_company(pb::UpsertCompanyRequest {
            company: Some(pb::Company {
                company_id: company.clone(),
                suspended: true,
                ..Default::default()
            }),
            update_mask: mask(&["suspended"]),
        })
        .await
        .unwrap();
    let readiness = get(&mut s).await.readiness.unwrap();
    assert_eq!(
        readiness.reason_code,
        NotReadyReason::CompanySuspended as i32
    );
    s.stop().await;
}

#[tokio::test]
async fn policy_with_entries_is_not_deleted_without_force() {
    let mut s = Service::start().await;
    let company = s.company("Acme").await;
    let user = s.user(&company, "jane", true).await;
    let policy = s.email_policy(&company).await;
    s.email(&company, &policy, "jane@example.com", &user)
        .await
        .unwrap();
    let fetched = s
        .policy
        .get_security_policy(pb::GetSecurityPolicyRequest {
            company_id: company.clone(),
            security_policy_id: policy.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .security_policy
        .unwrap();
    assert_eq!(fetched.entry_count, 1);
    let delete = |force| pb::DeleteSecurityPolicyRequest {
        company_id: company.clone(),
        security_policy_id: policy.clone(),
        force,
    };
    assert_code(
        s.policy.delete_security_policy(delete(false)).await,
        Code::FailedPrecondition,
    );
    let deleted = s
        .policy
        .delete_security_policy(delete(true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.deleted_entry_count, 1);
    assert!(s.resolve("jane@example.com", "192.0.2.1").await.is_none());
    s.stop().await;
}

#[tokio::test]
async fn validation_failures_carry_field_violations() {
    let mut s = Service::start().await;
    let company = s.company("Acme").await;
    let status = assert_code(
        s.policy
            .create_security_policy(pb::CreateSecurityPolicyRequest {
                company_id: company.clone(),
                security_policy: Some(pb::SecurityPolicy::default()),
                request_id: String::new(),
            })
            .await,
        Code::InvalidArgument,
    );
    let details = status.get_error_details();
    let fields: Vec<String> = details
        .bad_request()
        .unwrap()
        .field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect();
    assert_eq!(
        fields,
        ["security_policy.sent_from", "security_policy.security_type"]
    );
    // "By IP Addresses" without any IP can never pass.
    assert_code(
        s.policy
            .create_security_policy(pb::CreateSecurityPolicyRequest {
                company_id: company.clone(),
                security_policy: Some(pb::SecurityPolicy {
                    sent_from: SentFromKind::Domain as i32,
                    security_type: SecurityType::ByIpAddresses as i32,
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await,
        Code::InvalidArgument,
    );
    let policy = s.email_policy(&company).await;
    let status = assert_code(
        s.email(&company, &policy, "a@b@example.com", "").await,
        Code::InvalidArgument,
    );
    let details = status.get_error_details();
    let violation = &details.bad_request().unwrap().field_violations[0];
    assert_eq!(violation.field, "email_address.email_address");
    assert!(!violation.reason.is_empty());
    // An entry must hang under a policy of its own kind.
    let ip_policy = s
        .policy(&company, SentFromKind::IpAddress, SecurityType::ViaSpf, &[])
        .await;
    assert_code(
        s.email(&company, &ip_policy, "a@example.com", "").await,
        Code::InvalidArgument,
    );
    // An empty update mask never wipes anything.
    assert_code(
        s.policy
            .update_security_policy(pb::UpdateSecurityPolicyRequest {
                company_id: company.clone(),
                security_policy: Some(pb::SecurityPolicy {
                    security_policy_id: policy.clone(),
                    ..Default::default()
                }),
                update_mask: None,
            })
            .await,
        Code::InvalidArgument,
    );
    s.stop().await;
}

#[tokio::test]
async fn lists_page_through_every_entry_once_in_order() {
    let mut s = Service::start().await;
    let company = s.company("Acme").await;
    let policy = s.email_policy(&company).await;
    let mut expected = Vec::new();
    for i in 0..23 {
        let address = format!("user{i:02}@example.com");
        s.email(&company, &policy, &address, "").await.unwrap();
        expected.push(address);
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = s
            .policy
            .list_email_addresses(pb::ListEmailAddressesRequest {
                company_id: company.clone(),
                page_size: 5,
                page_token: token.clone(),
                security_policy_id: policy.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.email_addresses.len() <= 5);
        seen.extend(page.email_addresses.into_iter().map(|e| e.email_address));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, expected);
    // A token is only valid with the filters it was issued for.
    let first = s
        .policy
        .list_email_addresses(pb::ListEmailAddressesRequest {
            company_id: company.clone(),
            page_size: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_code(
        s.policy
            .list_email_addresses(pb::ListEmailAddressesRequest {
                company_id: company.clone(),
                page_size: 5,
                page_token: first.next_page_token,
                query: "user1".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    s.stop().await;
}
