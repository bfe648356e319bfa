//! A company's destination rules (the regions its SMS may go to and its daily cap on SMS to other
//! regions) over gRPC: stored, validated, and compiled into every sender entry ingest reads.

mod support;

use email2sms_proto::policy::v1 as pb;
use email2sms_proto::tonic::Code;
use support::{Service, assert_code, mask};

async fn upsert_limits(
    s: &mut Service,
    company: &str,
    limits: pb::CompanyLimits,
    paths: &[&str],
) -> Result<pb::Company, email2sms_proto::tonic::Status> {
    Ok(s.policy
        .upsert_company(pb::UpsertCompanyRequest {
            company: Some(pb::Company {
                company_id: company.into(),
                display_name: "Acme".into(),
                default_region: "NZ".into(),
                limits: Some(limits),
                ..Default::default()
            }),
            update_mask: mask(paths),
        })
        .await?
        .into_inner()
        .company
        .unwrap())
}

#[tokio::test]
async fn destination_rules_default_to_the_own_region_and_reach_the_compiled_senders() {
    let mut s = Service::start().await;
    let company = s.company("Acme").await;
    let user = s.user(&company, "jo", true).await;
    let policy = s.email_policy(&company).await;
    s.email(&company, &policy, "jo@acme.example", &user)
        .await
        .unwrap();

    // A new company: its own region only, 100 international SMS a day.
    let got = s
        .policy
        .get_company(pb::GetCompanyRequest {
            company_id: company.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .company
        .unwrap();
    let limits = got.limits.unwrap();
    assert!(limits.allowed_destination_regions.is_empty());
    assert_eq!(limits.international_sms_per_day, Some(100));
    let compiled = s
        .resolve_in_redis("jo@acme.example", "192.0.2.1")
        .await
        .unwrap();
    assert_eq!(
        compiled.limits.as_ref().unwrap().international_sms_per_day,
        Some(100)
    );

    // The admin adds Australia and the UK (in any case, repeated), and sets the cap.
    let updated = upsert_limits(
        &mut s,
        &company,
        pb::CompanyLimits {
            allowed_destination_regions: vec!["gb".into(), "AU".into(), " au ".into()],
            international_sms_per_day: Some(20),
            ..Default::default()
        },
        &[
            "limits.allowed_destination_regions",
            "limits.international_sms_per_day",
        ],
    )
    .await
    .unwrap();
    let limits = updated.limits.unwrap();
    assert_eq!(limits.allowed_destination_regions, ["AU", "GB"]);
    assert_eq!(limits.international_sms_per_day, Some(20));
    assert_eq!(limits.max_sms_parts, 10, "the parts limit is left alone");
    for compiled in [
        s.resolve_in_redis("jo@acme.example", "192.0.2.1")
            .await
            .unwrap(),
        s.resolve("jo@acme.example", "192.0.2.1").await.unwrap(),
    ] {
        let limits = compiled.limits.unwrap();
        assert_eq!(limits.allowed_destination_regions, ["AU", "GB"]);
        assert_eq!(limits.international_sms_per_day, Some(20));
    }

    // Bad regions are named; a huge list is refused by its length alone.
    let error = assert_code(
        upsert_limits(
            &mut s,
            &company,
            pb::CompanyLimits {
                allowed_destination_regions: vec!["AU".into(), "Australia".into()],
                ..Default::default()
            },
            &["limits.allowed_destination_regions"],
        )
        .await,
        Code::InvalidArgument,
    );
    assert!(
        error.message().contains("allowed_destination_regions[1]")
            || format!("{:?}", error.details()).contains("allowed_destination_regions[1]"),
        "{error:?}"
    );
    let error = assert_code(
        upsert_limits(
            &mut s,
            &company,
            pb::CompanyLimits {
                allowed_destination_regions: vec!["AU".into(); 100_000],
                ..Default::default()
            },
            &["limits.allowed_destination_regions"],
        )
        .await,
        Code::InvalidArgument,
    );
    assert!(format!("{error:?}").contains("at most 250"), "{error:?}");
    s.stop().await;
}

/// `CompanyLimits.keep_typography`: off for every company until its admin turns it on, stored,
/// compiled into the senders ingest reads, and left alone by an update that does not name it.
#[tokio::test]
async fn keep_typography_is_off_by_default_and_reaches_the_compiled_senders() {
    let mut s = Service::start().await;
    let company = s.company("Acme").await;
    let user = s.user(&company, "jo", true).await;
    let policy = s.email_policy(&company).await;
    s.email(&company, &policy, "jo@acme.example", &user)
        .await
        .unwrap();
    let compiled = s
        .resolve_in_redis("jo@acme.example", "192.0.2.1")
        .await
        .unwrap();
    assert_eq!(compiled.limits.unwrap().keep_typography, Some(false));

    let updated = upsert_limits(
        &mut s,
        &company,
        pb::CompanyLimits {
            keep_typography: Some(true),
            ..Default::default()
        },
        &["limits.keep_typography"],
    )
    .await
    .unwrap();
    assert_eq!(updated.limits.unwrap().keep_typography, Some(true));
    for compiled in [
        s.resolve_in_redis("jo@acme.example", "192.0.2.1")
            .await
            .unwrap(),
        s.resolve("jo@acme.example", "192.0.2.1").await.unwrap(),
    ] {
        assert_eq!(compiled.limits.unwrap().keep_typography, Some(true));
    }

    // An update without a mask that does not name it (here: the parts limit) keeps it.
    let updated = upsert_limits(
        &mut s,
        &company,
        pb::CompanyLimits {
            max_sms_parts: 4,
            ..Default::default()
        },
        &[],
    )
    .await
    .unwrap();
    let limits = updated.limits.unwrap();
    assert_eq!(limits.max_sms_parts, 4);
    assert_eq!(limits.keep_typography, Some(true));
    s.stop().await;
}
