//! GetMessage and ListMessages against a real Postgres filled by process_job.

mod support;

use std::sync::Arc;

use email2sms_dispatch::DispatchApi;
use email2sms_dispatch::connector::jsonl::JsonLinesConnector;
use email2sms_dispatch::jobs::{DispatchSettings, Dispatcher, Outcome};
use email2sms_proto::dispatch::v1::dispatch_service_server::DispatchService;
use email2sms_proto::dispatch::v1::{GetMessageRequest, ListMessagesRequest};
use email2sms_proto::prost_types::Timestamp;
use email2sms_proto::queue::v1::{EmailOrigin, SmsEncoding, SmsState};
use support::{database, job};
use tonic::{Code, Request};
use tonic_types::StatusExt;

const COMPANY: &str = "0190f1c2-0000-7000-8000-000000000001";
const OTHER_COMPANY: &str = "0190f1c2-0000-7000-8000-0000000000ff";

#[tokio::test]
async fn get_and_list_messages_scoped_to_the_company() {
    let (_db, pool) = database().await;
    let dir = tempfile::tempdir().unwrap();
    let connector = JsonLinesConnector::file(&dir.path().join("sms.jsonl"))
        .await
        .unwrap();
    let dispatcher = Dispatcher::new(
        pool.clone(),
        Arc::new(connector),
        DispatchSettings::default(),
    );
    let mut ids = Vec::new();
    for n in 0..5 {
        let recipient = if n % 2 == 0 {
            "+64211111111"
        } else {
            "+64212222222"
        };
        let mut sms = job(recipient, &format!("status {n} 😀"));
        sms.origin = Some(EmailOrigin {
            message_id: format!("mail-{n}@example.com"),
            subject: "Hello".into(),
            ..EmailOrigin::default()
        });
        assert_eq!(dispatcher.process_job(sms.clone()).await, Outcome::Done);
        // Distinct, known record times: job n was recorded n minutes after the first.
        sqlx::query(
            "UPDATE sms_jobs SET created_at = '2026-11-27T00:00:00Z'::timestamptz + make_interval(mins => $2)
             WHERE job_id = $1::uuid",
        )
        .bind(&sms.job_id)
        .bind(n)
        .execute(&pool)
        .await
        .unwrap();
        ids.push(sms.job_id);
    }
    let mut other = job("+64211111111", "someone else's");
    other.company_id = OTHER_COMPANY.into();
    assert_eq!(dispatcher.process_job(other.clone()).await, Outcome::Done);

    let api = DispatchApi::new(pool.clone());
    let got = api
        .get_message(Request::new(GetMessageRequest {
            company_id: COMPANY.into(),
            job_id: ids[1].clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    let message = got.message.unwrap();
    assert_eq!(message.recipient, "+64212222222");
    assert_eq!(message.state, SmsState::Submitted as i32);
    assert_eq!(message.encoding, SmsEncoding::Ucs2 as i32);
    assert_eq!(message.connector, "file");
    assert_eq!(message.attempt_count, 1);
    assert_eq!(message.origin.unwrap().message_id, "mail-1@example.com");
    assert!(message.submit_time.is_some());
    let history: Vec<i32> = got.history.iter().map(|h| h.state).collect();
    assert_eq!(
        history,
        [
            SmsState::Queued as i32,
            SmsState::Submitting as i32,
            SmsState::Submitted as i32
        ]
    );

    // Another company's message is NOT_FOUND, exactly like a missing one.
    let status = api
        .get_message(Request::new(GetMessageRequest {
            company_id: COMPANY.into(),
            job_id: other.job_id.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    // Bad fields come back as google.rpc.BadRequest violations.
    let status = api
        .get_message(Request::new(GetMessageRequest {
            company_id: "nope".into(),
            job_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let violations = status.get_details_bad_request().unwrap().field_violations;
    let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(fields, ["company_id", "job_id"]);

    // Paging: newest first, two per page, tokens carry on where the last page stopped.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = api
            .list_messages(Request::new(ListMessagesRequest {
                company_id: COMPANY.into(),
                page_size: 2,
                page_token: token.clone(),
                ..ListMessagesRequest::default()
            }))
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.messages.into_iter().map(|m| m.job_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);

    // Filters: recipient and time range.
    let filtered = api
        .list_messages(Request::new(ListMessagesRequest {
            company_id: COMPANY.into(),
            recipient: "+64 21 111 1111".into(),
            start_time: Some(Timestamp {
                seconds: 1_795_737_600 + 60,
                nanos: 0,
            }),
            end_time: Some(Timestamp {
                seconds: 1_795_737_600 + 5 * 60,
                nanos: 0,
            }),
            ..ListMessagesRequest::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let filtered: Vec<String> = filtered.messages.into_iter().map(|m| m.job_id).collect();
    assert_eq!(filtered, [ids[4].clone(), ids[2].clone()]);

    let by_state = api
        .list_messages(Request::new(ListMessagesRequest {
            company_id: COMPANY.into(),
            states: vec![SmsState::Delivered as i32],
            ..ListMessagesRequest::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(by_state.messages.is_empty());

    // A token is only good with the filters it was issued for.
    let first = api
        .list_messages(Request::new(ListMessagesRequest {
            company_id: COMPANY.into(),
            page_size: 1,
            ..ListMessagesRequest::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let status = api
        .list_messages(Request::new(ListMessagesRequest {
            company_id: COMPANY.into(),
            page_size: 1,
            page_token: first.next_page_token,
            recipient: "+64211111111".into(),
            ..ListMessagesRequest::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    let status = api
        .list_messages(Request::new(ListMessagesRequest {
            company_id: COMPANY.into(),
            recipient: "021 111 1111".into(),
            ..ListMessagesRequest::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}
