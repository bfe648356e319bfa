//! Tenant boundaries (issue 10): an email entry never beats another company's verified domain, IP
//! entries cannot claim the internet, refusals over other companies' values are neutral and
//! budgeted, admin input has cheap bounds, and company ids are checked where they are made.

mod support;

use std::time::Instant;

use email2sms_proto::policy::v1 as pb;
use email2sms_proto::tonic::{Code, Status};
use email2sms_proto::verification::v1::VerificationState;
use support::{Service, assert_code, mask};
use tonic_types::StatusExt;

use pb::{SecurityType, SentFromKind};

/// The refusal with the value and the operator's reference blanked out, so that refusals of
/// different cases can be compared.
fn shape(status: &Status, value: &str) -> (Code, String) {
    (status.code(), message_shape(status.message(), value))
}

fn message_shape(message: &str, value: &str) -> String {
    let text = message.replace(value, "<value>");
    match text.find("reference ") {
        Some(at) => format!("{}reference <ref>", &text[..at]),
        None => text,
    }
}

async fn preview(
    s: &mut Service,
    company: &str,
    policy: &str,
    csv: &str,
) -> Result<pb::PreviewImportResponse, Status> {
    Ok(s.policy
        .preview_import(pb::PreviewImportRequest {
            company_id: company.into(),
            security_policy_id: policy.into(),
            csv_content: csv.as_bytes().to_vec(),
            file_name: "staff.csv".into(),
            page_size: 1000,
            request_id: String::new(),
        })
        .await?
        .into_inner())
}

async fn get_email(s: &mut Service, company: &str, id: &str) -> pb::EmailAddress {
    s.policy
        .get_email_address(pb::GetEmailAddressRequest {
            company_id: company.into(),
            email_address_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .email_address
        .unwrap()
}

#[tokio::test]
async fn an_email_entry_never_beats_another_companys_verified_domain() {
    let mut s = Service::start().await;
    let a = s.company("Acme").await;
    let b = s.company("Rival").await;
    let a_user = s.user(&a, "jane", true).await;
    let b_user = s.user(&b, "mallory", true).await;
    let a_domains = s
        .policy(&a, SentFromKind::Domain, SecurityType::ViaSpf, &[])
        .await;
    let b_emails = s.email_policy(&b).await;
    s.allocated_domain(&a, &a_domains, "a.example", &a_user)
        .await;

    // B cannot register an address at A's verified domain: the same neutral refusal as an address
    // A registered itself.
    let status = assert_code(
        s.email(&b, &b_emails, "ceo@a.example", &b_user).await,
        Code::AlreadyExists,
    );
    assert!(
        status.message().contains("not available to this company"),
        "{status:?}"
    );
    assert!(!status.message().contains("Acme") && !status.message().contains(&a));
    // A disabled entry there too: its readiness would tell whose domain is verified.
    let disabled = s
        .policy
        .create_email_address(pb::CreateEmailAddressRequest {
            company_id: b.clone(),
            email_address: Some(pb::EmailAddress {
                security_policy_id: b_emails.clone(),
                email_address: "cfo@a.example".into(),
                disabled: true,
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await;
    assert_code(disabled, Code::AlreadyExists);
    let sender = s.resolve("ceo@a.example", "192.0.2.1").await.unwrap();
    assert_eq!(sender.company_id, a);
    assert_eq!(sender.match_kind(), pb::MatchKind::Domain);

    // An entry made while nobody had verified the domain stops matching once another company
    // verifies it: Get and List say why, ResolveSender and Redis answer with the domain's owner.
    let early = s
        .email(&b, &b_emails, "cfo@later.example", &b_user)
        .await
        .unwrap();
    assert!(early.readiness.unwrap().ready);
    assert_eq!(
        s.resolve("cfo@later.example", "192.0.2.1")
            .await
            .unwrap()
            .company_id,
        b
    );
    assert_eq!(
        s.resolve_in_redis("cfo@later.example", "192.0.2.1")
            .await
            .unwrap()
            .company_id,
        b
    );
    let (later_id, later_token) = s.pending_domain(&a, &a_domains, "later.example").await;
    s.verification_event(
        &a,
        "later.example",
        &later_token,
        VerificationState::Verified,
        1,
    )
    .await
    .unwrap();
    s.policy
        .allocate_domain(pb::AllocateDomainRequest {
            company_id: a.clone(),
            domain_id: later_id,
            forwarding_user_id: a_user.clone(),
        })
        .await
        .unwrap();
    let blocked = get_email(&mut s, &b, &early.email_address_id).await;
    let readiness = blocked.readiness.unwrap();
    assert!(!readiness.ready);
    assert_eq!(
        readiness.reason_code(),
        pb::NotReadyReason::BlockedByVerifiedDomain
    );
    assert!(readiness.reason.contains("later.example"), "{readiness:?}");
    assert!(!readiness.reason.contains("Acme"), "{readiness:?}");
    let not_ready = s
        .policy
        .list_email_addresses(pb::ListEmailAddressesRequest {
            company_id: b.clone(),
            ready: Some(false),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .email_addresses;
    assert_eq!(not_ready.len(), 1, "{not_ready:?}");
    assert_eq!(
        not_ready[0].readiness.as_ref().unwrap().reason_code(),
        pb::NotReadyReason::BlockedByVerifiedDomain
    );
    for (stage, sender) in [
        (
            "ResolveSender",
            s.resolve("cfo@later.example", "192.0.2.1").await,
        ),
        (
            "Redis",
            s.resolve_in_redis("cfo@later.example", "192.0.2.1").await,
        ),
    ] {
        let sender = sender.unwrap_or_else(|| panic!("{stage}: no match"));
        assert_eq!(sender.company_id, a, "{stage}");
        assert_eq!(sender.match_kind(), pb::MatchKind::Domain, "{stage}");
    }

    // When the domain stops being verified, the entry matches again by itself.
    s.verification_event(
        &a,
        "later.example",
        &later_token,
        VerificationState::Revoked,
        2,
    )
    .await
    .unwrap();
    assert!(
        get_email(&mut s, &b, &early.email_address_id)
            .await
            .readiness
            .unwrap()
            .ready
    );
    assert_eq!(
        s.resolve_in_redis("cfo@later.example", "192.0.2.1")
            .await
            .unwrap()
            .company_id,
        b
    );

    // A row that slipped past the API (an old one, or one written by hand) cannot win either:
    // the resolution SQL and the compiler both refuse it.
    sqlx::query(
        "INSERT INTO email_addresses (company_id, policy_id, address, forwarding_user_id)
         VALUES ($1::uuid, $2::uuid, 'cto@a.example', $3::uuid)",
    )
    .bind(&b)
    .bind(&b_emails)
    .bind(&b_user)
    .execute(&s.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE cache_version SET version = version + 1")
        .execute(&s.pool)
        .await
        .unwrap();
    s.resolution
        .rebuild_cache(pb::RebuildCacheRequest::default())
        .await
        .unwrap();
    for (stage, sender) in [
        (
            "ResolveSender",
            s.resolve("cto@a.example", "192.0.2.1").await,
        ),
        (
            "Redis",
            s.resolve_in_redis("cto@a.example", "192.0.2.1").await,
        ),
    ] {
        assert_eq!(sender.unwrap().company_id, a, "{stage}");
    }

    // An import row at the verified domain gets the same neutral verdict.
    let import = preview(
        &mut s,
        &b,
        &b_emails,
        "Email,Username\nboss@a.example,mallory\nfree@b.example,mallory\n",
    )
    .await
    .unwrap();
    assert_eq!(
        import.rows[0].status(),
        pb::ImportRowStatus::RegisteredToOtherCompany,
        "{:?}",
        import.rows
    );
    assert!(
        import.rows[0]
            .message
            .contains("not available to this company"),
        "{:?}",
        import.rows[0]
    );
    assert_eq!(import.rows[1].status(), pb::ImportRowStatus::Ok);
    s.stop().await;
}

#[tokio::test]
async fn ip_entries_cannot_claim_the_internet() {
    let mut s = Service::start().await;
    let a = s.company("Acme").await;
    let b = s.company("Rival").await;
    let a_ips = s
        .policy(&a, SentFromKind::IpAddress, SecurityType::ViaSpf, &[])
        .await;
    let b_ips = s
        .policy(&b, SentFromKind::IpAddress, SecurityType::ViaSpf, &[])
        .await;
    for (range, limit) in [
        ("0.0.0.0/0", "/24"),
        ("10.0.0.0/8", "/24"),
        ("198.51.100.0/23", "/24"),
        ("::/0", "/48"),
        ("2001:db8::/47", "/48"),
    ] {
        let status = assert_code(s.ip(&a, &a_ips, range, "").await, Code::InvalidArgument);
        assert!(status.message().contains(limit), "{range}: {status:?}");
        let details = status.get_error_details();
        assert_eq!(
            details.bad_request().unwrap().field_violations[0].field,
            "ip_address.ip_range"
        );
    }
    s.ip(&a, &a_ips, "198.51.100.0/24", "").await.unwrap();
    s.ip(&a, &a_ips, "2001:db8::/48", "").await.unwrap();
    // B's mail server is not locked out by a squatter on the whole internet.
    s.ip(&b, &b_ips, "203.0.113.7", "").await.unwrap();

    // The same bound for a policy's allowed ranges, on create and on update.
    let status = assert_code(
        s.policy
            .create_security_policy(pb::CreateSecurityPolicyRequest {
                company_id: a.clone(),
                security_policy: Some(pb::SecurityPolicy {
                    sent_from: SentFromKind::EmailAddress as i32,
                    security_type: SecurityType::ByIpAddresses as i32,
                    allowed_ip_ranges: vec!["192.0.2.1".into(), "0.0.0.0/0".into()],
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("/24"), "{status:?}");
    assert_eq!(
        status
            .get_error_details()
            .bad_request()
            .unwrap()
            .field_violations[0]
            .field,
        "security_policy.allowed_ip_ranges[1]"
    );
    let policy = s
        .policy(
            &a,
            SentFromKind::EmailAddress,
            SecurityType::ByIpAddresses,
            &["192.0.2.0/24"],
        )
        .await;
    let status = assert_code(
        s.policy
            .update_security_policy(pb::UpdateSecurityPolicyRequest {
                company_id: a.clone(),
                security_policy: Some(pb::SecurityPolicy {
                    security_policy_id: policy,
                    allowed_ip_ranges: vec!["::/0".into()],
                    ..Default::default()
                }),
                update_mask: mask(&["allowed_ip_ranges"]),
            })
            .await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("/48"), "{status:?}");
    s.stop().await;

    // The limit is the operator's to set, and a nonsensical one stops the binary naming it.
    let mut s = Service::start_with(&["--widest-ipv4-prefix", "16"]).await;
    let a = s.company("Acme").await;
    let a_ips = s
        .policy(&a, SentFromKind::IpAddress, SecurityType::ViaSpf, &[])
        .await;
    s.ip(&a, &a_ips, "10.1.0.0/16", "").await.unwrap();
    assert_code(
        s.ip(&a, &a_ips, "10.0.0.0/15", "").await,
        Code::InvalidArgument,
    );
    s.stop().await;
    use clap::Parser;
    use email2sms_runtime::service::ServiceConfig;
    for (flag, value) in [
        ("--widest-ipv4-prefix", "33"),
        ("--widest-ipv6-prefix", "129"),
    ] {
        let config =
            email2sms_policy::Config::try_parse_from(["email2sms-policy", flag, value]).unwrap();
        let error = config.validate().unwrap_err().to_string();
        let setting = if flag.contains("ipv4") {
            "EMAIL2SMS_POLICY_WIDEST_IPV4_PREFIX"
        } else {
            "EMAIL2SMS_POLICY_WIDEST_IPV6_PREFIX"
        };
        assert!(error.contains(setting), "{error}");
    }
}

/// Before: from 0.0.0.0/0 down to a /32, 47 CreateIpAddress calls found another company's
/// address, each overlap refusal saying "another company". Now the widest range is a /24, every
/// refusal is the same neutral one, and the company's budget of them stops the search.
#[tokio::test]
async fn bisecting_for_another_companys_ip_stops_at_the_conflict_budget() {
    let mut s = Service::start_with(&["--conflict-budget", "3"]).await;
    let a = s.company("Acme").await;
    let b = s.company("Rival").await;
    let a_ips = s
        .policy(&a, SentFromKind::IpAddress, SecurityType::ViaSpf, &[])
        .await;
    let b_ips = s
        .policy(&b, SentFromKind::IpAddress, SecurityType::ViaSpf, &[])
        .await;
    let a_emails = s.email_policy(&a).await;
    let b_emails = s.email_policy(&b).await;
    s.ip(&a, &a_ips, "198.51.100.77", "").await.unwrap();
    s.email(&a, &a_emails, "jo@acme.example", "").await.unwrap();

    // B's own duplicates are ordinary conflicts and cost nothing.
    s.ip(&b, &b_ips, "203.0.113.0/24", "").await.unwrap();
    for _ in 0..5 {
        let status = assert_code(
            s.ip(&b, &b_ips, "203.0.113.0/24", "").await,
            Code::AlreadyExists,
        );
        assert!(status.message().contains("this company"), "{status:?}");
    }

    // Exact, overlapping, and an email address: one neutral shape for all of them.
    let exact = assert_code(
        s.ip(&b, &b_ips, "198.51.100.77", "").await,
        Code::AlreadyExists,
    );
    let overlap = assert_code(
        s.ip(&b, &b_ips, "198.51.100.0/24", "").await,
        Code::AlreadyExists,
    );
    let email = assert_code(
        s.email(&b, &b_emails, "jo@acme.example", "").await,
        Code::AlreadyExists,
    );
    assert_eq!(
        shape(&exact, "198.51.100.77/32"),
        shape(&overlap, "198.51.100.0/24")
    );
    assert_eq!(
        shape(&exact, "198.51.100.77/32"),
        shape(&email, "jo@acme.example")
    );
    for status in [&exact, &overlap, &email] {
        assert!(!status.message().contains("Acme") && !status.message().contains(&a));
        assert!(!status.message().contains("overlap"), "{status:?}");
    }

    // The budget (3) is spent: the next search step, and a range nobody holds, get the same
    // answer, so the bisection cannot go on.
    let blocked = assert_code(
        s.ip(&b, &b_ips, "198.51.100.64/26", "").await,
        Code::ResourceExhausted,
    );
    let free = assert_code(
        s.ip(&b, &b_ips, "192.0.2.0/24", "").await,
        Code::ResourceExhausted,
    );
    assert_eq!(blocked.message(), free.message());
    assert_code(
        s.email(&b, &b_emails, "free@rival.example", "").await,
        Code::ResourceExhausted,
    );
    // Reads and other companies are unaffected.
    s.ip(&a, &a_ips, "192.0.2.0/24", "").await.unwrap();
    s.policy
        .list_ip_addresses(pb::ListIpAddressesRequest {
            company_id: b.clone(),
            ..Default::default()
        })
        .await
        .unwrap();

    // Every refusal is recorded for the platform operator, with the value asked for.
    let recorded: Vec<(String, String)> = sqlx::query_as(
        "SELECT kind, value FROM conflict_refusals WHERE company_id = $1::uuid ORDER BY id",
    )
    .bind(&b)
    .fetch_all(&s.pool)
    .await
    .unwrap();
    assert_eq!(
        recorded,
        [
            ("ip_address".to_owned(), "198.51.100.77/32".to_owned()),
            ("ip_address".to_owned(), "198.51.100.0/24".to_owned()),
            ("email_address".to_owned(), "jo@acme.example".to_owned()),
        ]
    );
    // Once the window has passed, the company may register again.
    sqlx::query("UPDATE conflict_refusals SET created_at = created_at - interval '25 hours'")
        .execute(&s.pool)
        .await
        .unwrap();
    s.ip(&b, &b_ips, "192.0.2.128/25", "")
        .await
        .expect_err("overlaps A's new /24");
    s.ip(&b, &b_ips, "198.18.0.0/24", "").await.unwrap();
    s.stop().await;
}

/// Before: PreviewImport answered "registered to another company" per row for up to 200,000 rows
/// a call. Now each such row costs one unit of the budget, and a file with more than is left is
/// refused whole, without verdicts.
#[tokio::test]
async fn preview_import_reveals_no_more_rows_than_the_budget() {
    let mut s = Service::start_with(&["--conflict-budget", "3"]).await;
    let a = s.company("Acme").await;
    let b = s.company("Rival").await;
    let a_emails = s.email_policy(&a).await;
    let b_emails = s.email_policy(&b).await;
    s.user(&b, "mallory", true).await;
    for i in 0..6 {
        s.email(&a, &a_emails, &format!("x{i}@acme.example"), "")
            .await
            .unwrap();
    }
    let import = preview(
        &mut s,
        &b,
        &b_emails,
        "Email,Username\nx0@acme.example,mallory\nnew1@rival.example,mallory\nx1@acme.example,mallory\n",
    )
    .await
    .unwrap();
    let statuses: Vec<_> = import.rows.iter().map(|r| r.status()).collect();
    use pb::ImportRowStatus as S;
    assert_eq!(
        statuses,
        [
            S::RegisteredToOtherCompany,
            S::Ok,
            S::RegisteredToOtherCompany
        ]
    );
    assert_eq!(
        message_shape(&import.rows[0].message, "x0@acme.example"),
        message_shape(&import.rows[2].message, "x1@acme.example")
    );

    // One unit left, four such rows in the file: refused whole, no row verdict at all.
    let mut csv = String::from("Email,Username\n");
    for i in 2..6 {
        csv.push_str(&format!("x{i}@acme.example,mallory\n"));
    }
    csv.push_str("new2@rival.example,mallory\n");
    let status = assert_code(
        preview(&mut s, &b, &b_emails, &csv).await,
        Code::ResourceExhausted,
    );
    for i in 2..6 {
        assert!(!status.message().contains(&format!("x{i}@")), "{status:?}");
    }
    // … and the budget is spent for everything else too.
    assert_code(
        preview(
            &mut s,
            &b,
            &b_emails,
            "Email,Username\nnew3@rival.example,mallory\n",
        )
        .await,
        Code::ResourceExhausted,
    );
    s.stop().await;
}

#[tokio::test]
async fn repeated_admin_fields_are_refused_at_their_bound_before_any_item_is_read() {
    let mut s = Service::start().await;
    let company = s.company("Acme").await;
    // 100,000 addresses, one in a thousand malformed: before, each was normalised and deduped
    // against all earlier ones (43 s) and every malformed one reported after the bound.
    let addresses: Vec<String> = (0..100_000)
        .map(|i| {
            if i % 1000 == 7 {
                format!("broken {i}")
            } else {
                format!("admin{i}@acme.example")
            }
        })
        .collect();
    let started = Instant::now();
    let status = assert_code(
        s.policy
            .upsert_company(pb::UpsertCompanyRequest {
                company: Some(pb::Company {
                    company_id: company.clone(),
                    display_name: "Acme".into(),
                    admin_email_addresses: addresses,
                    default_region: "NZ".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["admin_email_addresses"]),
            })
            .await,
        Code::InvalidArgument,
    );
    println!(
        "UpsertCompany with 100,000 admin_email_addresses refused in {:?}",
        started.elapsed()
    );
    assert!(status.message().contains("50"), "{}", status.message());
    let details = status.get_error_details();
    let violations = &details.bad_request().unwrap().field_violations;
    assert_eq!(violations.len(), 1, "{:?}", &violations[..3]);
    assert_eq!(violations[0].field, "company.admin_email_addresses");

    // Up to the bound, duplicates (in any case) collapse to one.
    let company_row = s
        .policy
        .upsert_company(pb::UpsertCompanyRequest {
            company: Some(pb::Company {
                company_id: company.clone(),
                admin_email_addresses: vec![
                    "Ops@acme.example".into(),
                    "ops@ACME.example".into(),
                    "it@acme.example".into(),
                ],
                ..Default::default()
            }),
            update_mask: mask(&["admin_email_addresses"]),
        })
        .await
        .unwrap()
        .into_inner()
        .company
        .unwrap();
    assert_eq!(
        company_row.admin_email_addresses,
        ["ops@acme.example", "it@acme.example"]
    );

    // A policy's allowed ranges: the same rule.
    let started = Instant::now();
    let status = assert_code(
        s.policy
            .create_security_policy(pb::CreateSecurityPolicyRequest {
                company_id: company.clone(),
                security_policy: Some(pb::SecurityPolicy {
                    sent_from: SentFromKind::EmailAddress as i32,
                    security_type: SecurityType::ByIpAddresses as i32,
                    allowed_ip_ranges: (0..100_000u32)
                        .map(|i| std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string())
                        .collect(),
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await,
        Code::InvalidArgument,
    );
    println!(
        "CreateSecurityPolicy with 100,000 allowed_ip_ranges refused in {:?}",
        started.elapsed()
    );
    assert!(status.message().contains("1000"), "{}", status.message());

    // Notification targets: before, 100,000 ids were parsed and looked up (NOT_FOUND).
    let started = Instant::now();
    let status = assert_code(
        s.policy
            .send_notification(pb::SendNotificationRequest {
                company_id: company.clone(),
                target: Some(pb::send_notification_request::Target::EmailAddressIds(
                    pb::EmailAddressIds {
                        email_address_ids: (0..100_000)
                            .map(|_| uuid::Uuid::new_v4().to_string())
                            .collect(),
                    },
                )),
                request_id: uuid::Uuid::new_v4().to_string(),
                page_size: 0,
            })
            .await,
        Code::InvalidArgument,
    );
    println!(
        "SendNotification with 100,000 email_address_ids refused in {:?}",
        started.elapsed()
    );
    assert!(status.message().contains("1000"), "{}", status.message());
    s.stop().await;
}

#[tokio::test]
async fn company_ids_are_checked_by_one_rule_where_they_are_made_and_used() {
    let mut s = Service::start().await;
    let upsert = s
        .policy
        .upsert_company(pb::UpsertCompanyRequest {
            company: Some(pb::Company {
                company_id: "acme-1".into(),
                display_name: "Acme".into(),
                default_region: "NZ".into(),
                ..Default::default()
            }),
            update_mask: None,
        })
        .await;
    let made = assert_code(upsert, Code::InvalidArgument);
    assert!(made.message().contains("UUID"), "{made:?}");
    let field = |status: &Status| {
        status
            .get_error_details()
            .bad_request()
            .unwrap()
            .field_violations[0]
            .description
            .clone()
    };
    let description = field(&made);

    // Every RPC that names a company answers with the same words.
    let p = &mut s.policy;
    let answers = [
        (
            "GetCompany",
            p.get_company(pb::GetCompanyRequest {
                company_id: "acme-1".into(),
            })
            .await
            .map(|_| ()),
        ),
        (
            "CreateDomain",
            p.create_domain(pb::CreateDomainRequest {
                company_id: "acme-1".into(),
                security_policy_id: uuid::Uuid::new_v4().to_string(),
                domain_name: "acme.example".into(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
        ),
        (
            "ListEmailAddresses",
            p.list_email_addresses(pb::ListEmailAddressesRequest {
                company_id: "acme-1".into(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
        ),
        (
            "UpsertMessengerUser",
            p.upsert_messenger_user(pb::UpsertMessengerUserRequest {
                company_id: "acme-1".into(),
                messenger_user: Some(pb::MessengerUser {
                    external_id: "u1".into(),
                    username: "jane".into(),
                    ..Default::default()
                }),
                update_mask: None,
            })
            .await
            .map(|_| ()),
        ),
        (
            "ListSenderLog",
            p.list_sender_log(pb::ListSenderLogRequest {
                company_id: "acme-1".into(),
                ..Default::default()
            })
            .await
            .map(|_| ()),
        ),
    ];
    for (rpc, answer) in answers {
        let status = support::assert_rpc_code(rpc, answer, Code::InvalidArgument);
        assert_eq!(field(&status), description, "{rpc}");
    }
    let status = assert_code(
        s.resolution
            .rebuild_cache(pb::RebuildCacheRequest {
                company_id: "acme-1".into(),
            })
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(field(&status), description);

    // A UUID in upper case is the same company, shown in the canonical form.
    let id = uuid::Uuid::new_v4();
    let created = s
        .policy
        .upsert_company(pb::UpsertCompanyRequest {
            company: Some(pb::Company {
                company_id: id.to_string().to_uppercase(),
                display_name: "Acme".into(),
                default_region: "NZ".into(),
                ..Default::default()
            }),
            update_mask: None,
        })
        .await
        .unwrap()
        .into_inner()
        .company
        .unwrap();
    assert_eq!(created.company_id, id.to_string());
    s.policy
        .get_company(pb::GetCompanyRequest {
            company_id: id.to_string(),
        })
        .await
        .unwrap();
    s.stop().await;
}
