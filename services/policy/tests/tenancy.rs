//! Tenant isolation, uniqueness across companies and idempotent creates.

mod support;

use email2sms_proto::policy::v1 as pb;
use email2sms_proto::tonic::Code;
use email2sms_proto::verification::v1::VerificationState;
use support::{Service, assert_code, assert_each_not_found, mask};

use pb::{SecurityType, SentFromKind};

#[tokio::test]
async fn another_company_gets_not_found_for_every_id_of_the_first() {
    let mut s = Service::start().await;
    let a = s.company("Acme").await;
    let b = s.company("Rival").await;
    let a_user = s.user(&a, "jane", true).await;
    let b_user = s.user(&b, "mallory", true).await;
    let a_emails = s
        .policy(&a, SentFromKind::EmailAddress, SecurityType::ViaSpf, &[])
        .await;
    let a_ips = s
        .policy(&a, SentFromKind::IpAddress, SecurityType::ViaSpf, &[])
        .await;
    let a_domains = s
        .policy(&a, SentFromKind::Domain, SecurityType::ViaSpf, &[])
        .await;
    let b_emails = s
        .policy(&b, SentFromKind::EmailAddress, SecurityType::ViaSpf, &[])
        .await;
    let email = s
        .email(&a, &a_emails, "jane@acme.example", &a_user)
        .await
        .unwrap()
        .email_address_id;
    let ip = s
        .ip(&a, &a_ips, "198.51.100.0/24", &a_user)
        .await
        .unwrap()
        .ip_address_id;
    let (domain, _) = s.pending_domain(&a, &a_domains, "acme.example").await;
    let p = &mut s.policy;

    // Reads.
    assert_each_not_found!(
        p,
        get_messenger_user(pb::GetMessengerUserRequest {
            company_id: b.clone(),
            messenger_user_id: a_user.clone(),
        }),
        get_security_policy(pb::GetSecurityPolicyRequest {
            company_id: b.clone(),
            security_policy_id: a_emails.clone(),
        }),
        get_email_address(pb::GetEmailAddressRequest {
            company_id: b.clone(),
            email_address_id: email.clone(),
        }),
        get_ip_address(pb::GetIpAddressRequest {
            company_id: b.clone(),
            ip_address_id: ip.clone(),
        }),
        get_domain(pb::GetDomainRequest {
            company_id: b.clone(),
            domain_id: domain.clone(),
            include_recent_checks: false,
        }),
    );

    // Lists never show or count another company's rows.
    let users = p
        .list_messenger_users(pb::ListMessengerUsersRequest {
            company_id: b.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(users.messenger_users.len(), 1);
    assert_eq!(users.messenger_users[0].messenger_user_id, b_user);
    let policies = p
        .list_security_policies(pb::ListSecurityPoliciesRequest {
            company_id: b.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(policies.security_policies.len(), 1);
    assert!(
        p.list_email_addresses(pb::ListEmailAddressesRequest {
            company_id: b.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .email_addresses
        .is_empty()
    );
    assert!(
        p.list_ip_addresses(pb::ListIpAddressesRequest {
            company_id: b.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .ip_addresses
        .is_empty()
    );
    assert!(
        p.list_domains(pb::ListDomainsRequest {
            company_id: b.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .domains
        .is_empty()
    );
    // Filtering by another company's policy finds nothing rather than its entries.
    assert!(
        p.list_email_addresses(pb::ListEmailAddressesRequest {
            company_id: b.clone(),
            security_policy_id: a_emails.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .email_addresses
        .is_empty()
    );

    // Writes.
    assert_each_not_found!(
        p,
        update_security_policy(pb::UpdateSecurityPolicyRequest {
            company_id: b.clone(),
            security_policy: Some(pb::SecurityPolicy {
                security_policy_id: a_emails.clone(),
                display_name: "hijacked".into(),
                ..Default::default()
            }),
            update_mask: mask(&["display_name"]),
        }),
        update_email_address(pb::UpdateEmailAddressRequest {
            company_id: b.clone(),
            email_address: Some(pb::EmailAddress {
                email_address_id: email.clone(),
                forwarding_user_id: b_user.clone(),
                ..Default::default()
            }),
            update_mask: mask(&["forwarding_user_id"]),
        }),
        update_ip_address(pb::UpdateIpAddressRequest {
            company_id: b.clone(),
            ip_address: Some(pb::IpAddress {
                ip_address_id: ip.clone(),
                description: "hijacked".into(),
                ..Default::default()
            }),
            update_mask: mask(&["description"]),
        }),
        allocate_domain(pb::AllocateDomainRequest {
            company_id: b.clone(),
            domain_id: domain.clone(),
            forwarding_user_id: b_user.clone(),
        }),
        verify_domain(pb::VerifyDomainRequest {
            company_id: b.clone(),
            domain_id: domain.clone(),
        }),
        rotate_domain_token(pb::RotateDomainTokenRequest {
            company_id: b.clone(),
            domain_id: domain.clone(),
        }),
        delete_email_address(pb::DeleteEmailAddressRequest {
            company_id: b.clone(),
            email_address_id: email.clone(),
        }),
        delete_ip_address(pb::DeleteIpAddressRequest {
            company_id: b.clone(),
            ip_address_id: ip.clone(),
        }),
        delete_domain(pb::DeleteDomainRequest {
            company_id: b.clone(),
            domain_id: domain.clone(),
        }),
        delete_security_policy(pb::DeleteSecurityPolicyRequest {
            company_id: b.clone(),
            security_policy_id: a_emails.clone(),
            force: true,
        }),
    );

    // Imports: another company's import is NOT_FOUND for every import RPC.
    let import = s
        .policy
        .preview_import(pb::PreviewImportRequest {
            company_id: a.clone(),
            security_policy_id: a_emails.clone(),
            csv_content: b"Email,Username\nnew@acme.example,jane\n".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .import
        .unwrap()
        .import_id;
    assert_each_not_found!(
        s.policy,
        get_import(pb::GetImportRequest {
            company_id: b.clone(),
            import_id: import.clone(),
        }),
        list_import_rows(pb::ListImportRowsRequest {
            company_id: b.clone(),
            import_id: import.clone(),
            ..Default::default()
        }),
        commit_import(pb::CommitImportRequest {
            company_id: b.clone(),
            import_id: import.clone(),
            notify: false,
        }),
    );
    // Previewing into another company's policy is refused.
    assert_code(
        s.policy
            .preview_import(pb::PreviewImportRequest {
                company_id: b.clone(),
                security_policy_id: a_emails.clone(),
                csv_content: b"Email,Username\nx@rival.example,mallory\n".to_vec(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );

    // Referencing another company's user or policy from one's own entries is refused.
    assert_code(
        s.email(&b, &b_emails, "x@rival.example", &a_user).await,
        Code::InvalidArgument,
    );
    assert_code(
        s.email(&b, &a_emails, "y@rival.example", &b_user).await,
        Code::InvalidArgument,
    );
    assert_code(
        s.policy
            .update_security_policy(pb::UpdateSecurityPolicyRequest {
                company_id: b.clone(),
                security_policy: Some(pb::SecurityPolicy {
                    security_policy_id: b_emails.clone(),
                    default_forwarding_user_id: a_user.clone(),
                    ..Default::default()
                }),
                update_mask: mask(&["default_forwarding_user_id"]),
            })
            .await,
        Code::InvalidArgument,
    );

    // Everything of the first company is untouched.
    let entry = s
        .policy
        .get_email_address(pb::GetEmailAddressRequest {
            company_id: a.clone(),
            email_address_id: email,
        })
        .await
        .unwrap()
        .into_inner()
        .email_address
        .unwrap();
    assert_eq!(entry.forwarding_user_id, a_user);
    let ip_entry = s
        .policy
        .get_ip_address(pb::GetIpAddressRequest {
            company_id: a.clone(),
            ip_address_id: ip,
        })
        .await
        .unwrap()
        .into_inner()
        .ip_address
        .unwrap();
    assert_eq!(ip_entry.description, "Office Exchange server");
    // An unknown company is NOT_FOUND too.
    assert_each_not_found!(
        s.policy,
        get_company(pb::GetCompanyRequest {
            company_id: uuid::Uuid::new_v4().to_string(),
        }),
    );
    s.stop().await;
}

#[tokio::test]
async fn uniqueness_across_companies_is_already_exists_without_the_other_company_name() {
    let mut s = Service::start().await;
    let a = s.company("Acme").await;
    let b = s.company("Rival").await;
    let a_emails = s
        .policy(&a, SentFromKind::EmailAddress, SecurityType::ViaSpf, &[])
        .await;
    let b_emails = s
        .policy(&b, SentFromKind::EmailAddress, SecurityType::ViaSpf, &[])
        .await;
    let a_ips = s
        .policy(&a, SentFromKind::IpAddress, SecurityType::ViaSpf, &[])
        .await;
    let b_ips = s
        .policy(&b, SentFromKind::IpAddress, SecurityType::ViaSpf, &[])
        .await;
    let no_names = |status: &email2sms_proto::tonic::Status| {
        let message = status.message();
        assert!(
            !message.contains("Acme") && !message.contains(&a),
            "{message}"
        );
    };

    let first = s.email(&a, &a_emails, "jo@example.com", "").await.unwrap();
    let status = assert_code(
        s.email(&b, &b_emails, "JO@example.com", "").await,
        Code::AlreadyExists,
    );
    // The neutral answer of every value another company holds (tenant_boundaries.rs).
    assert!(
        status.message().contains("not available to this company"),
        "{}",
        status.message()
    );
    no_names(&status);
    let status = assert_code(
        s.email(&a, &a_emails, "jo@example.com", "").await,
        Code::AlreadyExists,
    );
    assert!(
        status.message().contains("this company"),
        "{}",
        status.message()
    );

    // A disabled address does not claim the address.
    s.policy
        .update_email_address(pb::UpdateEmailAddressRequest {
            company_id: a.clone(),
            email_address: Some(pb::EmailAddress {
                email_address_id: first.email_address_id.clone(),
                disabled: true,
                ..Default::default()
            }),
            update_mask: mask(&["disabled"]),
        })
        .await
        .unwrap();
    s.email(&b, &b_emails, "jo@example.com", "").await.unwrap();
    // … and cannot be re-enabled while the other company holds it.
    let status = assert_code(
        s.policy
            .update_email_address(pb::UpdateEmailAddressRequest {
                company_id: a.clone(),
                email_address: Some(pb::EmailAddress {
                    email_address_id: first.email_address_id.clone(),
                    disabled: false,
                    ..Default::default()
                }),
                update_mask: mask(&["disabled"]),
            })
            .await,
        Code::AlreadyExists,
    );
    no_names(&status);

    // IP ranges: exact duplicates and overlaps across companies.
    s.ip(&a, &a_ips, "10.0.0.0/24", "").await.unwrap();
    let status = assert_code(
        s.ip(&b, &b_ips, "10.0.0.0/25", "").await,
        Code::AlreadyExists,
    );
    assert!(
        status.message().contains("not available to this company"),
        "{}",
        status.message()
    );
    no_names(&status);
    let status = assert_code(
        s.ip(&b, &b_ips, "10.0.0.0/24", "").await,
        Code::AlreadyExists,
    );
    no_names(&status);
    // Inside one company overlaps are allowed (longest prefix decides).
    s.ip(&a, &a_ips, "10.0.0.0/25", "").await.unwrap();

    // Domains: the same name may be pending for both; only one may be verified.
    let a_domains = s
        .policy(&a, SentFromKind::Domain, SecurityType::ViaSpf, &[])
        .await;
    let b_domains = s
        .policy(&b, SentFromKind::Domain, SecurityType::ViaSpf, &[])
        .await;
    let (_, a_token) = s.pending_domain(&a, &a_domains, "shared.example").await;
    let (_, b_token) = s.pending_domain(&b, &b_domains, "shared.example").await;
    s.verification_event(
        &a,
        "shared.example",
        &a_token,
        VerificationState::Verified,
        1,
    )
    .await
    .unwrap();
    let error = s
        .verification_event(
            &b,
            "shared.example",
            &b_token,
            VerificationState::Verified,
            1,
        )
        .await
        .unwrap_err();
    let status = email2sms_proto::tonic::Status::from(error);
    assert_eq!(status.code(), Code::AlreadyExists);
    no_names(&status);
    s.stop().await;
}

#[tokio::test]
async fn idempotent_create_with_the_same_request_id_returns_the_same_resource() {
    let mut s = Service::start().await;
    let company = s.company("Acme").await;
    let request_id = uuid::Uuid::new_v4().to_string();
    let create_policy = pb::CreateSecurityPolicyRequest {
        company_id: company.clone(),
        security_policy: Some(pb::SecurityPolicy {
            sent_from: SentFromKind::EmailAddress as i32,
            security_type: SecurityType::ViaSpf as i32,
            ..Default::default()
        }),
        request_id: request_id.clone(),
    };
    let first = s
        .policy
        .create_security_policy(create_policy.clone())
        .await
        .unwrap()
        .into_inner()
        .security_policy
        .unwrap();
    let retry = s
        .policy
        .create_security_policy(create_policy.clone())
        .await
        .unwrap()
        .into_inner()
        .security_policy
        .unwrap();
    assert_eq!(first.security_policy_id, retry.security_policy_id);
    let mut different = create_policy.clone();
    different.security_policy.as_mut().unwrap().security_type = SecurityType::ByOutlook as i32;
    assert_code(
        s.policy.create_security_policy(different).await,
        Code::InvalidArgument,
    );

    let create_email = pb::CreateEmailAddressRequest {
        company_id: company.clone(),
        email_address: Some(pb::EmailAddress {
            security_policy_id: first.security_policy_id.clone(),
            email_address: "jo@example.com".into(),
            ..Default::default()
        }),
        request_id: uuid::Uuid::new_v4().to_string(),
    };
    // Concurrent retries of one request create one entry; none fails with ALREADY_EXISTS.
    let mut calls = Vec::new();
    for _ in 0..5 {
        let mut client = s.policy.clone();
        let request = create_email.clone();
        calls.push(tokio::spawn(async move {
            client
                .create_email_address(request)
                .await
                .map(|r| r.into_inner().email_address.unwrap().email_address_id)
        }));
    }
    let mut ids = Vec::new();
    for call in calls {
        ids.push(call.await.unwrap().expect("every retry succeeds"));
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");

    let ip_policy = s
        .policy(&company, SentFromKind::IpAddress, SecurityType::ViaSpf, &[])
        .await;
    let create_ip = pb::CreateIpAddressRequest {
        company_id: company.clone(),
        ip_address: Some(pb::IpAddress {
            security_policy_id: ip_policy,
            ip_range: "192.0.2.0/24".into(),
            ..Default::default()
        }),
        request_id: uuid::Uuid::new_v4().to_string(),
    };
    let one = s.policy.create_ip_address(create_ip.clone()).await.unwrap();
    let two = s.policy.create_ip_address(create_ip).await.unwrap();
    assert_eq!(
        one.into_inner().ip_address.unwrap().ip_address_id,
        two.into_inner().ip_address.unwrap().ip_address_id
    );
    s.stop().await;
}
