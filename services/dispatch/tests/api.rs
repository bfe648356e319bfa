//! GetMessage, ListMessages and ResolveMessageReview against a real Postgres filled by
//! process_job.

mod support;

use std::sync::Arc;

use email2sms_dispatch::jobs::{DispatchSettings, Dispatcher, Outcome};
use email2sms_dispatch::{DispatchApi, JobRequeue};
use email2sms_proto::dispatch::v1::dispatch_service_server::DispatchService;
use email2sms_proto::dispatch::v1::{
    GetMessageRequest, ListMessagesRequest, ResolveMessageReviewRequest, ReviewResolution,
};
use email2sms_proto::prost_types::Timestamp;
use email2sms_proto::queue::v1::{EmailOrigin, SmsEncoding, SmsState};
use support::{database, file_dispatcher, job};
use tonic::{Code, Request};
use tonic_types::StatusExt;

const COMPANY: &str = "0190f1c2-0000-7000-8000-000000000001";
const OTHER_COMPANY: &str = "0190f1c2-0000-7000-8000-0000000000ff";

/// A job queue nobody can reach: what a resend meets while RabbitMQ is down.
fn unreachable_queue() -> JobRequeue {
    let broker = email2sms_queue::Broker::new("amqp://guest:guest@127.0.0.1:1/%2f", "down");
    JobRequeue::new(
        Arc::new(email2sms_queue::Publisher::new(
            broker,
            std::time::Duration::from_secs(2),
        )),
        email2sms_queue::Topology::default(),
    )
}

#[tokio::test]
async fn get_and_list_messages_scoped_to_the_company() {
    let (_db, pool) = database().await;
    let dir = tempfile::tempdir().unwrap();
    let (dispatcher, _) = file_dispatcher(&pool, &dir).await;
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

    let api = DispatchApi::new(pool.clone(), unreachable_queue());
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
            page_token: first.next_page_token.clone(),
            recipient: "+64211111111".into(),
            ..ListMessagesRequest::default()
        }))
        .await
        .unwrap_err();
    assert_page_token_refused(&status);
    // Nor with another company, nor altered in any one byte.
    let status = api
        .list_messages(Request::new(ListMessagesRequest {
            company_id: OTHER_COMPANY.into(),
            page_size: 1,
            page_token: first.next_page_token.clone(),
            ..ListMessagesRequest::default()
        }))
        .await
        .unwrap_err();
    assert_page_token_refused(&status);
    let mut altered = first.next_page_token.clone().into_bytes();
    altered[5] = if altered[5] == b'A' { b'B' } else { b'A' };
    let status = api
        .list_messages(Request::new(ListMessagesRequest {
            company_id: COMPANY.into(),
            page_size: 1,
            page_token: String::from_utf8(altered).unwrap(),
            ..ListMessagesRequest::default()
        }))
        .await
        .unwrap_err();
    assert_page_token_refused(&status);
    // A second API on the same database (another replica, or after a restart) honours it.
    let replica = DispatchApi::new(pool.clone(), unreachable_queue());
    let second = replica
        .list_messages(Request::new(ListMessagesRequest {
            company_id: COMPANY.into(),
            page_size: 1,
            page_token: first.next_page_token.clone(),
            ..ListMessagesRequest::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.messages.len(), 1);
    assert_ne!(second.messages[0].job_id, first.messages[0].job_id);

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

/// INVALID_ARGUMENT with a BadRequest violation on `page_token` telling the client what to do.
fn assert_page_token_refused(status: &tonic::Status) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let details = status.get_error_details();
    let violation = &details
        .bad_request()
        .expect("a BadRequest detail")
        .field_violations[0];
    assert_eq!(violation.field, "page_token");
    assert!(
        violation
            .description
            .contains("start again without a page_token"),
        "{violation:?}"
    );
}

/// A job sent once, then found in "submitting" when delivered again (as after a crash mid-send):
/// held for review by the real path.
async fn held_for_review(dispatcher: &Dispatcher, pool: &sqlx::PgPool, text: &str) -> String {
    let sms = job("+64211234567", text);
    assert_eq!(dispatcher.process_job(sms.clone()).await, Outcome::Done);
    sqlx::query("UPDATE sms_jobs SET state = 'submitting' WHERE job_id = $1::uuid")
        .bind(&sms.job_id)
        .execute(pool)
        .await
        .unwrap();
    assert_eq!(dispatcher.process_job(sms.clone()).await, Outcome::Done);
    assert_eq!(support::job_state(pool, &sms.job_id).await, "needs_review");
    sms.job_id
}

fn resolve(
    job_id: &str,
    resolution: ReviewResolution,
    note: &str,
) -> Request<ResolveMessageReviewRequest> {
    Request::new(ResolveMessageReviewRequest {
        company_id: COMPANY.into(),
        job_id: job_id.into(),
        resolution: resolution as i32,
        note: note.into(),
    })
}

#[tokio::test]
async fn a_message_held_for_review_is_resolved_as_sent_or_not_sent_and_nothing_else_is() {
    let (_db, pool) = database().await;
    let dir = tempfile::tempdir().unwrap();
    let (dispatcher, _) = file_dispatcher(&pool, &dir).await;
    let api = DispatchApi::new(pool.clone(), unreachable_queue());

    let sent = held_for_review(&dispatcher, &pool, "reached the SMSC").await;
    let message = api
        .resolve_message_review(resolve(&sent, ReviewResolution::Sent, "provider ticket 42"))
        .await
        .unwrap()
        .into_inner()
        .message
        .unwrap();
    assert_eq!(message.state, SmsState::Submitted as i32);
    assert!(!message.needs_review);
    let history = api
        .get_message(Request::new(GetMessageRequest {
            company_id: COMPANY.into(),
            job_id: sent.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .history;
    let last = history.last().unwrap();
    assert_eq!(last.state, SmsState::Submitted as i32);
    assert!(
        last.detail.contains("provider ticket 42"),
        "{}",
        last.detail
    );

    let not_sent = held_for_review(&dispatcher, &pool, "never reached the SMSC").await;
    let message = api
        .resolve_message_review(resolve(&not_sent, ReviewResolution::NotSent, ""))
        .await
        .unwrap()
        .into_inner()
        .message
        .unwrap();
    assert_eq!(message.state, SmsState::Failed as i32);
    assert_eq!(message.error_code, "not_sent");
    assert!(
        message.error_message.contains("not sent again"),
        "{}",
        message.error_message
    );

    // Resolved already: a second resolution is refused, and says why.
    let refused = api
        .resolve_message_review(resolve(&not_sent, ReviewResolution::Resend, ""))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("is failed, not held for review"),
        "{}",
        refused.message()
    );

    // Another company's message is not found; a request without a resolution names the field.
    let mut other = resolve(&sent, ReviewResolution::Sent, "");
    other.get_mut().company_id = OTHER_COMPANY.into();
    assert_eq!(
        api.resolve_message_review(other).await.unwrap_err().code(),
        Code::NotFound
    );
    let unspecified = api
        .resolve_message_review(resolve(
            &sent,
            ReviewResolution::Unspecified,
            &"x".repeat(501),
        ))
        .await
        .unwrap_err();
    assert_eq!(unspecified.code(), Code::InvalidArgument);
    let fields: Vec<String> = unspecified
        .get_details_bad_request()
        .unwrap()
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["resolution", "note"]);

    // A resend that cannot reach the job queue changes nothing.
    let stuck = held_for_review(&dispatcher, &pool, "broker down").await;
    let unavailable = api
        .resolve_message_review(resolve(&stuck, ReviewResolution::Resend, ""))
        .await
        .unwrap_err();
    assert_eq!(unavailable.code(), Code::Unavailable);
    assert_eq!(support::job_state(&pool, &stuck).await, "needs_review");
}

/// A connector caught mid-send: its submit waits until the test lets it answer.
#[derive(Debug, Default)]
struct HeldConnector {
    entered: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl email2sms_dispatch::connector::Connector for HeldConnector {
    fn name(&self) -> &'static str {
        "held"
    }

    async fn submit(
        &self,
        _sms: &email2sms_dispatch::connector::OutgoingSms,
    ) -> Result<
        email2sms_dispatch::connector::Submitted,
        email2sms_dispatch::connector::ConnectorError,
    > {
        self.entered.notify_one();
        self.release.notified().await;
        Ok(email2sms_dispatch::connector::Submitted {
            provider_message_ids: vec!["held-1".into()],
        })
    }
}

#[tokio::test]
async fn an_acceptance_arriving_after_a_review_said_sent_still_records_the_message_id() {
    let (_db, pool) = database().await;
    let connector = Arc::new(HeldConnector::default());
    let dispatcher = Arc::new(Dispatcher::new(
        pool.clone(),
        connector.clone(),
        DispatchSettings::default(),
    ));
    let api = DispatchApi::new(pool.clone(), unreachable_queue());
    let sms = job("+64211234567", "slow provider");
    let first = tokio::spawn({
        let dispatcher = dispatcher.clone();
        let sms = sms.clone();
        async move { dispatcher.process_job(sms).await }
    });
    connector.entered.notified().await;
    // Delivered again while the first is still waiting for the provider: held for review, and
    // someone records it as sent before the provider's answer is in.
    assert_eq!(dispatcher.process_job(sms.clone()).await, Outcome::Done);
    assert_eq!(support::job_state(&pool, &sms.job_id).await, "needs_review");
    api.resolve_message_review(resolve(&sms.job_id, ReviewResolution::Sent, ""))
        .await
        .unwrap();

    connector.release.notify_one();
    assert_eq!(first.await.unwrap(), Outcome::Done);
    let (state, provider_id): (String, Option<String>) =
        sqlx::query_as("SELECT state, provider_message_id FROM sms_jobs WHERE job_id = $1::uuid")
            .bind(&sms.job_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(state, "submitted");
    assert_eq!(
        provider_id.as_deref(),
        Some("held-1"),
        "receipts can match it again"
    );
}
