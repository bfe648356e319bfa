//! CSV import: preview judges every row at its line, commit applies exactly the OK rows once.

mod support;

use std::time::Instant;

use email2sms_proto::policy::v1 as pb;
use email2sms_proto::tonic::Code;
use support::{Service, assert_code};

use pb::ImportRowStatus as S;

async fn preview(
    s: &mut Service,
    company: &str,
    policy: &str,
    csv: &str,
) -> Result<pb::PreviewImportResponse, email2sms_proto::tonic::Status> {
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

async fn commit(s: &mut Service, company: &str, import: &str) -> pb::Import {
    s.policy
        .commit_import(pb::CommitImportRequest {
            company_id: company.into(),
            import_id: import.into(),
            notify: false,
        })
        .await
        .unwrap()
        .into_inner()
        .import
        .unwrap()
}

#[tokio::test]
async fn csv_with_every_kind_of_bad_row_shows_each_at_its_line() {
    let mut s = Service::start().await;
    let company = s.company("Acme").await;
    let other = s.company("Rival").await;
    s.user(&company, "james.smith", true).await;
    s.user(&company, "gone", false).await;
    let rival = s.user(&other, "rival", true).await;
    let policy = s.email_policy(&company).await;
    let other_policy = s.email_policy(&other).await;
    s.email(&company, &policy, "already@example.com", "")
        .await
        .unwrap();
    s.email(&other, &other_policy, "taken@example.com", &rival)
        .await
        .unwrap();

    let csv = "\u{feff}email,USERNAME\r\n\
               James.Smith@example.com , james.smith\r\n\
               \r\n\
               not-an-email,james.smith\r\n\
               nobody@example.com,no.such.user\r\n\
               inactive@example.com,gone\r\n\
               JAMES.SMITH@example.com,james.smith\r\n\
               already@example.com,james.smith\r\n\
               taken@example.com,james.smith\r\n\
               too,many,fields\r\n\
               \"quoted@example.com\",\"James.Smith\"\r\n";
    let response = preview(&mut s, &company, &policy, csv).await.unwrap();
    let import = response.import.unwrap();
    assert_eq!(import.state, pb::ImportState::Previewed as i32);
    let verdicts: Vec<(u32, i32)> = response
        .rows
        .iter()
        .map(|r| (r.line_number, r.status))
        .collect();
    assert_eq!(
        verdicts,
        vec![
            (2, S::Ok as i32),
            (4, S::InvalidEmail as i32),
            (5, S::UnknownUser as i32),
            (6, S::InactiveUser as i32),
            (7, S::DuplicateInFile as i32),
            (8, S::AlreadyRegistered as i32),
            (9, S::RegisteredToOtherCompany as i32),
            (10, S::MalformedRow as i32),
            (11, S::Ok as i32),
        ]
    );
    assert!(
        response.rows[4].message.contains("line 2"),
        "{:?}",
        response.rows[4]
    );
    assert_eq!(
        response.rows[0].normalized_email_address,
        "james.smith@example.com"
    );
    assert!(!response.rows[6].message.contains("Rival"));
    let totals = import.totals.unwrap();
    assert_eq!(
        (totals.total_rows, totals.ok_rows, totals.malformed_rows),
        (9, 2, 1)
    );

    // Only the problems, paged.
    let problems = s
        .policy
        .list_import_rows(pb::ListImportRowsRequest {
            company_id: company.clone(),
            import_id: import.import_id.clone(),
            page_size: 3,
            page_token: String::new(),
            statuses: vec![S::UnknownUser as i32, S::InactiveUser as i32],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(problems.rows.len(), 2);
    assert!(problems.next_page_token.is_empty());

    // Files that cannot be imported at all.
    for bad in ["Address,User\nx@example.com,y\n", ""] {
        assert_code(
            preview(&mut s, &company, &policy, bad).await,
            Code::InvalidArgument,
        );
    }
    // Another company cannot see the import.
    assert_code(
        s.policy
            .get_import(pb::GetImportRequest {
                company_id: other.clone(),
                import_id: import.import_id.clone(),
            })
            .await,
        Code::NotFound,
    );
    s.stop().await;
}

#[tokio::test]
async fn commit_applies_the_ok_rows_once_and_committing_twice_creates_nothing() {
    let mut s = Service::start().await;
    let company = s.company("Acme").await;
    let jane = s.user(&company, "jane.smith", true).await;
    let policy = s.email_policy(&company).await;
    let csv = "Email,Username\n\
               james.smith@example.com,jane.smith\n\
               jason.jones@example.com,jane.smith\n\
               mike.jones@example.com,nobody\n";
    let import = preview(&mut s, &company, &policy, csv)
        .await
        .unwrap()
        .import
        .unwrap();
    // Nothing is written by the preview.
    assert!(
        s.resolve("james.smith@example.com", "192.0.2.1")
            .await
            .is_none()
    );

    let first = commit(&mut s, &company, &import.import_id).await;
    assert_eq!(first.state, pb::ImportState::Committed as i32);
    assert_eq!(first.created_count, 2);
    let again = commit(&mut s, &company, &import.import_id).await;
    assert_eq!(again.created_count, 2);
    assert_eq!(again.commit_time, first.commit_time);

    let listed = s
        .policy
        .list_email_addresses(pb::ListEmailAddressesRequest {
            company_id: company.clone(),
            import_id: import.import_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .email_addresses;
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .all(|e| e.source == pb::EntrySource::Import as i32)
    );
    let sender = s
        .resolve("james.smith@example.com", "192.0.2.1")
        .await
        .unwrap();
    assert_eq!(sender.forwarding_user_id, jane);
    assert!(
        s.resolve_in_redis("jason.jones@example.com", "192.0.2.1")
            .await
            .is_some()
    );

    // Previewing the same file again finds everything registered already.
    let second = preview(&mut s, &company, &policy, csv).await.unwrap();
    assert_eq!(
        second
            .import
            .unwrap()
            .totals
            .unwrap()
            .already_registered_rows,
        2
    );
    s.stop().await;
}

#[tokio::test]
async fn hundred_thousand_rows_preview_and_commit() {
    let mut s = Service::start().await;
    let company = s.company("Acme").await;
    for i in 0..10 {
        s.user(&company, &format!("user{i}"), true).await;
    }
    let policy = s.email_policy(&company).await;
    let mut csv = String::from("Email,Username\n");
    for i in 0..100_000 {
        csv.push_str(&format!("person{i}@big.example,user{}\n", i % 10));
    }
    let started = Instant::now();
    let response = preview(&mut s, &company, &policy, &csv).await.unwrap();
    let preview_time = started.elapsed();
    let import = response.import.unwrap();
    assert_eq!(import.totals.unwrap().ok_rows, 100_000);
    let started = Instant::now();
    let committed = commit(&mut s, &company, &import.import_id).await;
    let commit_time = started.elapsed();
    assert_eq!(committed.created_count, 100_000);
    eprintln!("100,000-row import: preview {preview_time:?}, commit {commit_time:?}");
    assert!(
        s.resolve("person99999@big.example", "192.0.2.1")
            .await
            .is_some()
    );
    s.stop().await;
}
