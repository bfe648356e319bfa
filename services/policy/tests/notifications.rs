//! Notification emails through a real SMTP sink (aiosmtpd): one email per address, never twice
//! for the same request, failures kept per address and retried.

mod support;

use std::time::Duration;

use email2sms_proto::policy::v1 as pb;
use email2sms_proto::tonic::Code;
use support::sink::{Sink, free_port};
use support::{Service, assert_code, assert_each_not_found};
use uuid::Uuid;

use pb::{NotificationOutcome as O, NotificationState};

async fn start(relay: &str) -> Service {
    Service::start_with(&[
        "--smtp-relay",
        relay,
        "--sms-domains",
        "sms.example.net,sms2.example.net",
        "--notify-from",
        "email2sms@gateway.example",
    ])
    .await
}

async fn wait_completed(s: &mut Service, company: &str, id: &str) -> pb::Notification {
    for _ in 0..200 {
        let n = s
            .policy
            .get_notification(pb::GetNotificationRequest {
                company_id: company.into(),
                notification_id: id.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .notification
            .unwrap();
        if n.state == NotificationState::Completed as i32 {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("notification {id} did not complete");
}

#[tokio::test]
async fn commit_with_notify_emails_each_address_once() {
    let sink = Sink::start().await;
    let mut s = start(&sink.url()).await;
    let company = s.company("Acme").await;
    s.user(&company, "james.smith", true).await;
    s.user(&company, "mary.jones", true).await;
    let policy = s.email_policy(&company).await;
    let csv = "Email,Username\njames@example.com,james.smith\nMary@Example.com,mary.jones\nbad-row,james.smith\n";
    let preview = s
        .policy
        .preview_import(pb::PreviewImportRequest {
            company_id: company.clone(),
            security_policy_id: policy.clone(),
            csv_content: csv.as_bytes().to_vec(),
            file_name: "staff.csv".into(),
            page_size: 10,
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let import = preview.import.unwrap().import_id;
    let commit = |s: &mut Service| {
        let mut client = s.policy.clone();
        let company = company.clone();
        let import = import.clone();
        async move {
            client
                .commit_import(pb::CommitImportRequest {
                    company_id: company,
                    import_id: import,
                    notify: true,
                })
                .await
                .unwrap()
                .into_inner()
        }
    };
    let first = commit(&mut s).await;
    let notification = first.notification.expect("a batch is started");
    assert_eq!(
        first.import.unwrap().notification_id,
        notification.notification_id
    );
    assert_eq!(notification.totals.unwrap().total, 2);
    let done = wait_completed(&mut s, &company, &notification.notification_id).await;
    assert_eq!(done.totals.unwrap().sent, 2);

    let mut got = sink.wait_for(2).await;
    got.sort_by(|a, b| a.rcpt.cmp(&b.rcpt));
    assert_eq!(
        got.iter().map(|r| r.rcpt.as_str()).collect::<Vec<_>>(),
        ["james@example.com", "mary@example.com"]
    );
    let james = &got[0].text();
    assert!(james.contains("From: email2sms@gateway.example"), "{james}");
    assert!(james.contains("64211234567@sms.example.net"), "{james}");
    assert!(james.contains("james.smith"), "{james}");
    assert!(james.contains("authorised to send SMS by email"), "{james}");
    assert!(james.contains("text/plain"), "{james}");

    // A second commit (with notify again) creates and sends nothing.
    let again = commit(&mut s).await;
    assert!(again.notification.is_none());
    assert_eq!(
        again.import.unwrap().notification_id,
        notification.notification_id
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.received().len(), 2);

    // The same SendNotification request twice: one email per address in all.
    let request_id = Uuid::new_v4().to_string();
    for _ in 0..2 {
        let sent = s
            .policy
            .send_notification(pb::SendNotificationRequest {
                company_id: company.clone(),
                target: Some(pb::send_notification_request::Target::ImportId(
                    import.clone(),
                )),
                request_id: request_id.clone(),
                page_size: 0,
            })
            .await
            .unwrap()
            .into_inner();
        let n = sent.notification.unwrap();
        // Two addresses is a small batch: sent before the answer.
        assert_eq!(n.state, NotificationState::Completed as i32);
        assert_eq!(n.totals.unwrap().sent, 2);
        assert_eq!(sent.results.len(), 2);
        assert!(sent.results.iter().all(|r| r.outcome == O::Sent as i32
            && r.attempt_count == 1
            && !r.email_address_id.is_empty()));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.received().len(), 4);

    // Another company sees none of it.
    let other = s.company("Rival").await;
    assert_each_not_found!(
        s.policy,
        get_notification(pb::GetNotificationRequest {
            company_id: other.clone(),
            notification_id: notification.notification_id.clone(),
        }),
        list_notification_results(pb::ListNotificationResultsRequest {
            company_id: other.clone(),
            notification_id: notification.notification_id.clone(),
            ..Default::default()
        }),
        retry_notification(pb::RetryNotificationRequest {
            company_id: other.clone(),
            notification_id: notification.notification_id.clone(),
        }),
        send_notification(pb::SendNotificationRequest {
            company_id: other,
            target: Some(pb::send_notification_request::Target::ImportId(import)),
            request_id: Uuid::new_v4().to_string(),
            page_size: 0,
        }),
    );
    s.stop().await;
}

#[tokio::test]
async fn failed_sends_are_kept_and_retry_sends_only_those() {
    let port = free_port();
    let mut sink = Sink::down(port);
    let mut s = start(&format!("smtp://127.0.0.1:{port}")).await;
    let company = s.company("Acme").await;
    let user = s.user(&company, "james.smith", true).await;
    let policy = s.email_policy(&company).await;
    let mut ids = Vec::new();
    for address in ["a@example.com", "b@example.com", "c@example.com"] {
        ids.push(
            s.email(&company, &policy, address, &user)
                .await
                .unwrap()
                .email_address_id,
        );
    }
    let sent = s
        .policy
        .send_notification(pb::SendNotificationRequest {
            company_id: company.clone(),
            target: Some(pb::send_notification_request::Target::EmailAddressIds(
                pb::EmailAddressIds {
                    email_address_ids: ids[..2].to_vec(),
                },
            )),
            request_id: Uuid::new_v4().to_string(),
            page_size: 1,
        })
        .await
        .unwrap()
        .into_inner();
    let n = sent.notification.unwrap();
    let totals = n.totals.unwrap();
    assert_eq!(n.state, NotificationState::Completed as i32);
    assert_eq!((totals.total, totals.failed, totals.retryable), (2, 2, 2));
    assert_eq!(sent.results.len(), 1);
    assert!(!sent.next_page_token.is_empty());
    let failed = &sent.results[0];
    assert_eq!(failed.outcome, O::Failed as i32);
    assert!(failed.retryable);
    assert!(!failed.error.is_empty());

    // Page through the failures.
    let page2 = s
        .policy
        .list_notification_results(pb::ListNotificationResultsRequest {
            company_id: company.clone(),
            notification_id: n.notification_id.clone(),
            page_size: 1,
            page_token: sent.next_page_token.clone(),
            outcomes: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page2.results.len(), 1);
    assert_eq!(page2.results[0].email_address, "b@example.com");
    assert!(page2.next_page_token.is_empty());

    // Smarthost back: the retry sends exactly the failed ones.
    sink.up().await;
    let retried = s
        .policy
        .retry_notification(pb::RetryNotificationRequest {
            company_id: company.clone(),
            notification_id: n.notification_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .notification
        .unwrap();
    assert_eq!(retried.state, NotificationState::Completed as i32);
    assert_eq!(retried.totals.unwrap().sent, 2);
    let got = sink.wait_for(2).await;
    let mut rcpts: Vec<_> = got.iter().map(|r| r.rcpt.clone()).collect();
    rcpts.sort();
    assert_eq!(rcpts, ["a@example.com", "b@example.com"]);
    let sent_results = s
        .policy
        .list_notification_results(pb::ListNotificationResultsRequest {
            company_id: company.clone(),
            notification_id: n.notification_id.clone(),
            page_size: 10,
            page_token: String::new(),
            outcomes: vec![O::Sent as i32],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent_results.results.len(), 2);
    assert!(sent_results.results.iter().all(|r| r.attempt_count == 2));

    // A second retry has nothing left to send.
    s.policy
        .retry_notification(pb::RetryNotificationRequest {
            company_id: company.clone(),
            notification_id: n.notification_id.clone(),
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.received().len(), 2);

    // Unknown (or other company's) entry ids are NOT_FOUND and nothing is sent.
    assert_code(
        s.policy
            .send_notification(pb::SendNotificationRequest {
                company_id: company.clone(),
                target: Some(pb::send_notification_request::Target::EmailAddressIds(
                    pb::EmailAddressIds {
                        email_address_ids: vec![Uuid::new_v4().to_string()],
                    },
                )),
                request_id: Uuid::new_v4().to_string(),
                page_size: 0,
            })
            .await,
        Code::NotFound,
    );
    assert_code(
        s.policy
            .send_notification(pb::SendNotificationRequest {
                company_id: company,
                target: Some(pb::send_notification_request::Target::EmailAddressIds(
                    pb::EmailAddressIds {
                        email_address_ids: ids,
                    },
                )),
                request_id: String::new(),
                page_size: 0,
            })
            .await,
        Code::InvalidArgument,
    );
    s.stop().await;
}
