//! Page tokens through the gRPC API: honoured by every replica of one deployment, refused when
//! altered, presented by another company, or minted by another deployment (another key).

mod support;

use email2sms_policy::PolicyApi;
use email2sms_proto::policy::v1 as pb;
use email2sms_proto::policy::v1::policy_service_server::PolicyService;
use email2sms_proto::tonic::{Code, Request, Status};
use support::Service;
use tonic_types::StatusExt;

/// INVALID_ARGUMENT with a BadRequest violation on `page_token` telling the client what to do.
fn assert_refused<T: std::fmt::Debug>(result: Result<T, Status>) {
    let status = result.expect_err("the token should be refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let violations = status
        .get_details_bad_request()
        .expect("a BadRequest detail")
        .field_violations;
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(violations[0].field, "page_token");
    assert!(
        violations[0]
            .description
            .contains("start again without a page_token"),
        "{violations:?}"
    );
}

fn list(company: &str, token: &str) -> pb::ListEmailAddressesRequest {
    pb::ListEmailAddressesRequest {
        company_id: company.into(),
        page_size: 2,
        page_token: token.into(),
        ..Default::default()
    }
}

async fn company_with_addresses(s: &mut Service, name: &str) -> String {
    let company = s.company(name).await;
    let policy = s.email_policy(&company).await;
    for i in 0..5 {
        let address = format!("{}{i}@example.com", name.to_lowercase());
        s.email(&company, &policy, &address, "").await.unwrap();
    }
    company
}

#[tokio::test]
async fn page_tokens_are_bound_to_company_filters_and_deployment() {
    let mut s = Service::start().await;
    let acme = company_with_addresses(&mut s, "Acme").await;
    let globex = company_with_addresses(&mut s, "Globex").await;
    let first = s
        .policy
        .list_email_addresses(list(&acme, ""))
        .await
        .unwrap()
        .into_inner();
    let token = first.next_page_token.clone();
    assert!(!token.is_empty());
    assert!(
        !token.contains("acme") && !token.contains(&acme),
        "the token shows what it holds: {token}"
    );

    // Another instance on the same database (a replica, or this one after a restart) carries on.
    let replica = PolicyApi::new(s.pool.clone(), s.cache.clone());
    let second = replica
        .list_email_addresses(Request::new(list(&acme, &token)))
        .await
        .unwrap()
        .into_inner();
    let addresses: Vec<&str> = second
        .email_addresses
        .iter()
        .map(|e| e.email_address.as_str())
        .collect();
    assert_eq!(addresses, ["acme2@example.com", "acme3@example.com"]);

    // Another company presenting Acme's token is refused, not shown Globex's page 2.
    assert_refused(s.policy.list_email_addresses(list(&globex, &token)).await);
    // Other filters.
    let mut filtered = list(&acme, &token);
    filtered.query = "acme".into();
    assert_refused(s.policy.list_email_addresses(filtered).await);
    // Any one character changed.
    for index in [0, token.len() / 2, token.len() - 1] {
        let mut altered = token.clone().into_bytes();
        altered[index] = if altered[index] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        assert_refused(s.policy.list_email_addresses(list(&acme, &altered)).await);
    }
    // The old hex-encoded JSON format.
    let old = hex::encode(
        br#"{"k":"acme1@example.com","i":"00000000-0000-0000-0000-000000000000","f":0}"#,
    );
    assert_refused(s.policy.list_email_addresses(list(&acme, &old)).await);

    // Another deployment (its own database, so its own key) refuses the token, even for a
    // company of the same id.
    let mut other = Service::start().await;
    other
        .policy
        .upsert_company(pb::UpsertCompanyRequest {
            company: Some(pb::Company {
                company_id: acme.clone(),
                display_name: "Acme".into(),
                admin_email_addresses: vec!["admin@acme.example".into()],
                default_region: "NZ".into(),
                ..Default::default()
            }),
            update_mask: None,
        })
        .await
        .unwrap();
    assert_refused(other.policy.list_email_addresses(list(&acme, &token)).await);

    other.stop().await;
    s.stop().await;
}
