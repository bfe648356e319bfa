//! process_job against a real Postgres with the file and HTTP connectors (the HTTP provider is a
//! small real HTTP/1.1 server in the test).

mod support;

use std::sync::{Arc, Mutex};

use email2sms_dispatch::connector::http::HttpConnector;
use email2sms_dispatch::connector::{Connector, ErrorKind, OutgoingSms};
use email2sms_dispatch::jobs::{DispatchSettings, Dispatcher, Outcome};
use email2sms_proto::prost::Message;
use email2sms_proto::queue::v1::{SmsState, SmsStatusChanged};
use support::{database, file_dispatcher, job, job_state};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[tokio::test]
async fn the_same_job_twice_is_sent_once_and_every_committed_state_is_published() {
    let (_db, pool) = database().await;
    let dir = tempfile::tempdir().unwrap();
    let (dispatcher, path) = file_dispatcher(&pool, &dir).await;
    let sms = job("+64211234567", "Hello from the file connector €");
    assert_eq!(dispatcher.process_job(sms.clone()).await, Outcome::Done);
    assert_eq!(dispatcher.process_job(sms.clone()).await, Outcome::Done);

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "one SMS, however often the job is delivered"
    );
    assert_eq!(lines[0]["job_id"], sms.job_id.as_str());
    assert_eq!(lines[0]["recipient"], "+64211234567");
    assert_eq!(lines[0]["sender_id"], "ACME");
    assert_eq!(lines[0]["text"], "Hello from the file connector €");
    assert_eq!(lines[0]["encoding"], "gsm7");
    assert_eq!(lines[0]["parts"], 1);

    let events: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT payload FROM outbox_events WHERE routing_key = 'sms.status.changed'
         ORDER BY outbox_id, position",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let events: Vec<SmsStatusChanged> = events
        .iter()
        .map(|payload| SmsStatusChanged::decode(payload.as_slice()).unwrap())
        .collect();
    let states: Vec<(i32, i32, u64)> = events
        .iter()
        .map(|e| (e.previous_state, e.state, e.sequence))
        .collect();
    assert_eq!(
        states,
        [
            // Recorded straight in submitting: it was never committed as queued.
            (SmsState::Unspecified as i32, SmsState::Submitting as i32, 1),
            (SmsState::Submitting as i32, SmsState::Submitted as i32, 2),
        ]
    );
    assert_eq!(events[1].connector, "file");
    assert_eq!(events[1].attempt_count, 1);
    assert_eq!(
        events[1].provider_message_id,
        uuid::Uuid::parse_str(&sms.job_id)
            .unwrap()
            .simple()
            .to_string()
    );
    let history: Vec<(Option<String>, String)> = sqlx::query_as(
        "SELECT from_state, to_state FROM sms_job_history WHERE job_id = $1::uuid
             ORDER BY position",
    )
    .bind(&sms.job_id)
    .fetch_all(&pool)
    .await
    .unwrap();
    let queued = || Some("queued".to_owned());
    assert_eq!(
        history,
        [
            (None, "queued".to_owned()),
            (queued(), "submitting".to_owned()),
            (Some("submitting".to_owned()), "submitted".to_owned()),
        ],
        "the history shows the reception too"
    );
}

#[tokio::test]
async fn a_job_found_submitting_after_a_crash_is_flagged_for_review_not_resent() {
    let (_db, pool) = database().await;
    let dir = tempfile::tempdir().unwrap();
    let (dispatcher, path) = file_dispatcher(&pool, &dir).await;
    let sms = job("+64211234567", "crash victim");
    // The dispatcher committed "submitting" and died before recording the connector's answer.
    sqlx::query(
        "INSERT INTO sms_jobs (job_id, company_id, forwarding_user_id, recipient, text, encoding,
                               segments, state, connector)
         VALUES ($1::uuid, $2::uuid, $3::uuid, $4, $5, 'gsm7', 1, 'submitting', 'file')",
    )
    .bind(&sms.job_id)
    .bind(&sms.company_id)
    .bind(&sms.forwarding_user_id)
    .bind(&sms.recipient)
    .bind(&sms.text)
    .execute(&pool)
    .await
    .unwrap();

    assert_eq!(dispatcher.process_job(sms.clone()).await, Outcome::Done);
    assert_eq!(job_state(&pool, &sms.job_id).await, "needs_review");
    assert!(
        std::fs::read_to_string(&path).unwrap().is_empty(),
        "nothing was sent"
    );
    // Delivered again: still nothing sent.
    assert_eq!(dispatcher.process_job(sms.clone()).await, Outcome::Done);
    assert!(std::fs::read_to_string(&path).unwrap().is_empty());
}

#[tokio::test]
async fn poison_jobs_are_permanent_without_touching_the_database() {
    let (_db, pool) = database().await;
    let dir = tempfile::tempdir().unwrap();
    let (dispatcher, _) = file_dispatcher(&pool, &dir).await;
    let mut bad = job("+64211234567", "x");
    bad.job_id = "not-a-uuid".into();
    assert!(matches!(
        dispatcher.process_job(bad).await,
        Outcome::Permanent(_)
    ));
    let bad = job("0211234567", "national number");
    assert!(matches!(
        dispatcher.process_job(bad).await,
        Outcome::Permanent(_)
    ));
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM sms_jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(jobs, 0);
}

/// A recorded HTTP request.
#[derive(Debug, Clone)]
struct Request {
    authorization: Option<String>,
    body: serde_json::Value,
}

/// A tiny HTTP/1.1 provider answering each request with the next (status, body) of `answers`.
async fn http_provider(answers: Vec<(u16, &'static str)>) -> (String, Arc<Mutex<Vec<Request>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://secret-token@{}/sms", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    tokio::spawn(async move {
        let mut answers = answers.into_iter();
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let mut reader = BufReader::new(stream);
            // Keep-alive: one connection may carry several requests.
            loop {
                let mut length = 0;
                let mut authorization = None;
                let mut line = String::new();
                if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                    break;
                }
                loop {
                    line.clear();
                    reader.read_line(&mut line).await.unwrap();
                    let header = line.trim_end();
                    if header.is_empty() {
                        break;
                    }
                    let (name, value) = header.split_once(':').unwrap();
                    match name.to_ascii_lowercase().as_str() {
                        "content-length" => length = value.trim().parse().unwrap(),
                        "authorization" => authorization = Some(value.trim().to_owned()),
                        _ => {}
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).await.unwrap();
                seen.lock().unwrap().push(Request {
                    authorization,
                    body: serde_json::from_slice(&body).unwrap(),
                });
                let (status, answer) = answers.next().unwrap_or((500, "{}"));
                let response = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
                    answer.len()
                );
                reader
                    .get_mut()
                    .write_all(response.as_bytes())
                    .await
                    .unwrap();
            }
        }
    });
    (url, requests)
}

#[tokio::test]
async fn http_connector_maps_statuses() {
    let (url, requests) = http_provider(vec![
        (200, r#"{"message_id":"ABC-1"}"#),
        (429, "slow down"),
        (503, "maintenance"),
        (400, "bad number"),
    ])
    .await;
    let connector = HttpConnector::new(&url, None).unwrap();
    let sms = OutgoingSms {
        job_id: uuid::Uuid::now_v7(),
        recipient: "+64211234567".into(),
        sender_id: Some("ACME".into()),
        text: "Hi 😀".into(),
        valid_until: None,
    };
    let accepted = connector.submit(&sms).await.unwrap();
    assert_eq!(accepted.provider_message_ids, ["ABC-1"]);
    assert_eq!(
        connector.submit(&sms).await.unwrap_err().kind,
        ErrorKind::Throttled
    );
    let unavailable = connector.submit(&sms).await.unwrap_err();
    assert_eq!(unavailable.kind, ErrorKind::Transient);
    assert!(!unavailable.maybe_submitted);
    let refused = connector.submit(&sms).await.unwrap_err();
    assert_eq!(
        (refused.kind, refused.code.as_str()),
        (ErrorKind::Permanent, "http 400")
    );

    let requests = requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 4);
    assert_eq!(
        requests[0].authorization.as_deref(),
        Some("Bearer secret-token")
    );
    assert_eq!(requests[0].body["to"], "+64211234567");
    assert_eq!(requests[0].body["from"], "ACME");
    assert_eq!(requests[0].body["text"], "Hi 😀");
    assert_eq!(requests[0].body["encoding"], "ucs2");
    assert_eq!(requests[0].body["job_id"], sms.job_id.to_string());
}

#[tokio::test]
async fn transient_failures_retry_then_give_up_and_permanent_ones_fail_at_once() {
    let (url, _requests) = http_provider(vec![(503, ""), (503, ""), (400, "invalid number")]).await;
    let (_db, pool) = database().await;
    let dispatcher = Dispatcher::new(
        pool.clone(),
        Arc::new(HttpConnector::new(&url, None).unwrap()),
        DispatchSettings {
            max_attempts: 2,
            ..DispatchSettings::default()
        },
    );
    let sms = job("+64211234567", "retry me");
    match dispatcher.process_job(sms.clone()).await {
        Outcome::RetryLater(retry) => assert_eq!((retry.throttled, retry.attempts), (false, 1)),
        other => panic!("expected RetryLater, got {other:?}"),
    }
    assert_eq!(job_state(&pool, &sms.job_id).await, "queued");
    assert!(matches!(
        dispatcher.process_job(sms.clone()).await,
        Outcome::Permanent(_)
    ));
    assert_eq!(job_state(&pool, &sms.job_id).await, "failed");

    let refused = job("+64211234567", "refused");
    let Outcome::Permanent(reason) = dispatcher.process_job(refused.clone()).await else {
        panic!("a 400 is permanent");
    };
    assert!(reason.contains("invalid number"), "{reason}");
    let row: (String, Option<String>, Option<String>) = sqlx::query_as(
        "SELECT state, error_code, failure_kind FROM sms_jobs WHERE job_id = $1::uuid",
    )
    .bind(&refused.job_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        row,
        (
            "failed".into(),
            Some("http 400".into()),
            Some("permanent".into())
        )
    );
}

#[tokio::test]
async fn old_unmatched_receipts_are_purged() {
    let (_db, pool) = database().await;
    sqlx::query(
        "INSERT INTO unmatched_delivery_receipts (connector, provider_message_id, status, received_at)
         VALUES ('smpp', 'old', 'delivered', now() - interval '2 days'),
                ('smpp', 'new', 'delivered', now())",
    )
    .execute(&pool)
    .await
    .unwrap();
    let purged = email2sms_dispatch::jobs::purge_unmatched_receipts(
        &pool,
        std::time::Duration::from_secs(24 * 3600),
    )
    .await
    .unwrap();
    assert_eq!(purged, 1);
    let left: Vec<String> =
        sqlx::query_scalar("SELECT provider_message_id FROM unmatched_delivery_receipts")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(left, ["new"]);
}
