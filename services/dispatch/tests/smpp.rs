//! The SMPP connector and the job state machine against a real SMPP 3.4 server (the `smpp34`
//! crate's SMSC, in-process) and a real Postgres.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use email2sms_dispatch::connector::receipt::{DeliveryReceipt, IdForms, ReceiptStatus};
use email2sms_dispatch::connector::smpp::{SmppConnector, SmppSettings};
use email2sms_dispatch::connector::{Connector, OutgoingSms, ReceiptDelivery};
use email2sms_dispatch::jobs::{DispatchSettings, Dispatcher, Outcome, run_receipt_recorder};
use email2sms_sms::{gsm7_decode, ucs2_decode};
use sqlx::PgPool;
use support::{Smsc, database, eventually, job, job_state};
use tokio::sync::mpsc;

fn connector(smsc: &Smsc, query: &str) -> (SmppConnector, mpsc::Receiver<ReceiptDelivery>) {
    let mut settings = SmppSettings::from_url(&smsc.url(query)).unwrap();
    settings.session_wait = Duration::from_secs(10);
    settings.response_timeout = Duration::from_secs(5);
    settings.throttle_pause = Duration::from_millis(20);
    settings.reconnect_min = Duration::from_millis(50);
    let (sender, receiver) = mpsc::channel(256);
    (SmppConnector::start(settings, sender), receiver)
}

/// A dispatcher over an SMPP connector, recording receipts as they come.
fn dispatcher(smsc: &Smsc, query: &str, pool: &PgPool) -> (Dispatcher, SmppConnector) {
    let (smpp, receipts) = connector(smsc, query);
    tokio::spawn(run_receipt_recorder(pool.clone(), receipts));
    let dispatcher = Dispatcher::new(
        pool.clone(),
        Arc::new(smpp.clone()),
        DispatchSettings::default(),
    );
    (dispatcher, smpp)
}

async fn process_all(dispatcher: &Dispatcher, jobs: Vec<email2sms_proto::queue::v1::SmsJob>) {
    let outcomes = futures::future::join_all(
        jobs.into_iter()
            .map(|job| async move { dispatcher.process_job(job).await }),
    )
    .await;
    assert!(outcomes.iter().all(|o| *o == Outcome::Done), "{outcomes:?}");
}

#[tokio::test]
async fn binds_and_submits_through_a_window() {
    let smsc = Smsc::start().await;
    smsc.state
        .behaviour
        .response_delay_ms
        .store(100, Ordering::SeqCst);
    let (_db, pool) = database().await;
    let (dispatcher, _smpp) = dispatcher(&smsc, "window=5", &pool);
    let jobs: Vec<_> = (0..20)
        .map(|n| job("+64211234567", &format!("message {n}")))
        .collect();
    let ids: Vec<String> = jobs.iter().map(|j| j.job_id.clone()).collect();
    process_all(&dispatcher, jobs).await;

    let accepted = smsc.state.accepted();
    assert_eq!(accepted.len(), 20);
    let max = smsc.state.max_in_flight.load(Ordering::SeqCst);
    assert!((2..=5).contains(&max), "window of 5, saw {max} in flight");
    assert_eq!(smsc.state.binds.load(Ordering::SeqCst), 1);
    for id in &ids {
        assert_eq!(job_state(&pool, id).await, "submitted");
    }
    // The provider ids are recorded normalised (lower-case hex as the SMSC gave them).
    let recorded: Vec<String> = sqlx::query_scalar(
        "SELECT provider_message_id FROM sms_job_parts ORDER BY provider_message_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut expected: Vec<String> = accepted
        .iter()
        .map(|a| a.message_id.to_ascii_lowercase())
        .collect();
    expected.sort();
    assert_eq!(recorded, expected);
}

#[tokio::test]
async fn receipts_move_jobs_to_delivered_even_before_the_submit_is_recorded() {
    let smsc = Smsc::start().await;
    smsc.state.behaviour.receipts.store(true, Ordering::SeqCst);
    let (_db, pool) = database().await;
    let (dispatcher, _smpp) = dispatcher(&smsc, "window=4", &pool);

    // Receipts (with decimal ids) after the hex submit_sm_resp ids.
    let jobs: Vec<_> = (0..3)
        .map(|n| job("+64211234567", &format!("receipt {n}")))
        .collect();
    let ids: Vec<String> = jobs.iter().map(|j| j.job_id.clone()).collect();
    process_all(&dispatcher, jobs).await;
    for id in &ids {
        eventually("delivered", || async {
            job_state(&pool, id).await == "delivered"
        })
        .await;
    }

    // A receipt that arrives before the submit response: parked, then matched when recorded.
    smsc.state.behaviour.receipts.store(false, Ordering::SeqCst);
    smsc.state
        .behaviour
        .receipt_before_response
        .store(true, Ordering::SeqCst);
    let early = job("+64211234567", "early receipt");
    let early_id = early.job_id.clone();
    assert_eq!(dispatcher.process_job(early).await, Outcome::Done);
    assert_eq!(job_state(&pool, &early_id).await, "delivered");
    let unmatched: i64 = sqlx::query_scalar("SELECT count(*) FROM unmatched_delivery_receipts")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(unmatched, 0, "the early receipt was applied and removed");
    let history: Vec<String> = sqlx::query_scalar(
        "SELECT to_state FROM sms_job_history WHERE job_id = $1::uuid ORDER BY position",
    )
    .bind(&early_id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(history, ["queued", "submitting", "submitted", "delivered"]);
}

#[tokio::test]
async fn a_burst_of_receipts_completes_each_job_by_all_its_parts() {
    let smsc = Smsc::start().await;
    let (_db, pool) = database().await;
    let (dispatcher, _smpp) = dispatcher(&smsc, "window=8", &pool);
    let long = "Two parts: ".to_owned() + &"x".repeat(200);
    let jobs = vec![
        job("+64211234567", "all delivered"),
        job("+64211234567", &long),
        job("+64211234567", "undeliverable"),
        job("+64211234567", "still on its way"),
        job("+64211234567", &format!("Failed part: {}", "y".repeat(200))),
        job(
            "+64211234567",
            &format!("Expired, then failed: {}", "z".repeat(200)),
        ),
    ];
    let ids: Vec<String> = jobs.iter().map(|j| j.job_id.clone()).collect();
    process_all(&dispatcher, jobs).await;
    let parts: Vec<(String, i32, String)> = sqlx::query_as(
        "SELECT job_id::text, part_number, provider_message_id FROM sms_job_parts
         ORDER BY job_id, part_number",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let part = |job: usize, number: i32| {
        parts
            .iter()
            .find(|(id, n, _)| *id == ids[job] && *n == number)
            .map(|(_, _, provider)| provider.clone())
            .unwrap_or_else(|| panic!("job {job} has a part {number}: {parts:?}"))
    };
    let receipt = |id: String, status: ReceiptStatus, error: Option<&str>| DeliveryReceipt {
        connector: "smpp".into(),
        provider_message_id: id,
        status,
        error_code: error.map(str::to_owned),
        raw: format!("stat:{status:?}"),
        id_forms: IdForms::EitherBase,
    };
    let burst = vec![
        receipt(part(0, 1), ReceiptStatus::Delivered, None),
        receipt(part(1, 1), ReceiptStatus::Delivered, None),
        // The same part twice in one burst: the later, final one wins.
        receipt(part(1, 2), ReceiptStatus::Enroute, None),
        receipt(part(1, 2), ReceiptStatus::Delivered, None),
        receipt(part(2, 1), ReceiptStatus::Undeliverable, Some("00B")),
        receipt(part(3, 1), ReceiptStatus::Enroute, None),
        // Its first part fails; the delivered second part's receipt completes it.
        receipt(part(4, 1), ReceiptStatus::Undeliverable, Some("00D")),
        receipt(part(4, 2), ReceiptStatus::Delivered, None),
        // An expired part and an undeliverable one: the job failed, for the undeliverable one.
        receipt(part(5, 1), ReceiptStatus::Expired, Some("0FE")),
        receipt(part(5, 2), ReceiptStatus::Undeliverable, Some("00C")),
        // For a message this dispatcher never sent (or whose submit is not recorded yet).
        receipt("FFFF0001".into(), ReceiptStatus::Delivered, None),
    ];
    let (sink, receipts) = mpsc::channel(64);
    tokio::spawn(run_receipt_recorder(pool.clone(), receipts));
    let mut answers = Vec::new();
    for receipt in burst {
        let (recorded, answer) = tokio::sync::oneshot::channel();
        sink.send(ReceiptDelivery { receipt, recorded })
            .await
            .unwrap();
        answers.push(answer);
    }
    for answer in answers {
        assert!(answer.await.unwrap(), "every receipt is recorded");
    }

    assert_eq!(job_state(&pool, &ids[0]).await, "delivered");
    assert_eq!(
        job_state(&pool, &ids[1]).await,
        "delivered",
        "both parts delivered"
    );
    assert_eq!(job_state(&pool, &ids[2]).await, "failed");
    assert_eq!(
        job_state(&pool, &ids[3]).await,
        "submitted",
        "no final receipt yet"
    );
    let (kind, code): (Option<String>, Option<String>) =
        sqlx::query_as("SELECT failure_kind, error_code FROM sms_jobs WHERE job_id = $1::uuid")
            .bind(&ids[2])
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (kind.as_deref(), code.as_deref()),
        (Some("permanent"), Some("00B"))
    );
    let (state, code, error): (String, Option<String>, Option<String>) = sqlx::query_as(
        "SELECT state, error_code, last_error FROM sms_jobs WHERE job_id = $1::uuid",
    )
    .bind(&ids[4])
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(state, "failed");
    assert_eq!(
        code.as_deref(),
        Some("00D"),
        "the failed part's code, not the last receipt's"
    );
    assert!(
        error
            .as_deref()
            .unwrap()
            .starts_with("part 1 of 2 undeliverable"),
        "{error:?}"
    );
    let (state, code): (String, Option<String>) =
        sqlx::query_as("SELECT state, error_code FROM sms_jobs WHERE job_id = $1::uuid")
            .bind(&ids[5])
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((state.as_str(), code.as_deref()), ("failed", Some("00C")));
    let waiting: Vec<String> =
        sqlx::query_scalar("SELECT provider_message_id FROM unmatched_delivery_receipts")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(waiting, ["FFFF0001"]);
    let finals: Vec<(String, String)> = sqlx::query_as(
        "SELECT job_id::text, to_state FROM sms_job_history
         WHERE to_state IN ('delivered', 'failed') ORDER BY job_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        finals.len(),
        5,
        "one final event per completed job: {finals:?}"
    );
}

#[tokio::test]
async fn throttling_is_retried_without_counting_as_a_failure() {
    let smsc = Smsc::start().await;
    let (_db, pool) = database().await;
    let (dispatcher, _smpp) = dispatcher(&smsc, "", &pool);

    // Two throttling answers, then success: the connector backs off and retries the part.
    smsc.state
        .behaviour
        .throttle_next
        .store(2, Ordering::SeqCst);
    let first = job("+64211234567", "throttled then sent");
    let first_id = first.job_id.clone();
    assert_eq!(dispatcher.process_job(first).await, Outcome::Done);
    assert_eq!(smsc.state.seen.load(Ordering::SeqCst), 3);
    assert_eq!(smsc.state.accepted().len(), 1);
    assert_eq!(job_state(&pool, &first_id).await, "submitted");

    // Throttled beyond the connector's patience: the job goes back to the queue, attempts unchanged.
    smsc.state
        .behaviour
        .throttle_next
        .store(100, Ordering::SeqCst);
    let second = job("+64211234567", "throttled for a while");
    let second_id = second.job_id.clone();
    match dispatcher.process_job(second.clone()).await {
        Outcome::RetryLater(retry) => {
            assert!(retry.throttled);
            assert_eq!(retry.attempts, 0);
        }
        other => panic!("expected RetryLater, got {other:?}"),
    }
    assert_eq!(job_state(&pool, &second_id).await, "queued");
    smsc.state
        .behaviour
        .throttle_next
        .store(0, Ordering::SeqCst);
    assert_eq!(dispatcher.process_job(second).await, Outcome::Done);
    assert_eq!(smsc.state.accepted().len(), 2);
    let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM sms_jobs WHERE job_id = $1::uuid")
        .bind(&second_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(attempts, 1, "only the successful submit counts");
}

#[tokio::test]
async fn smsc_unbinding_mid_window_reconnects_and_submits_every_job_exactly_once() {
    let smsc = Smsc::start().await;
    smsc.state
        .behaviour
        .response_delay_ms
        .store(40, Ordering::SeqCst);
    smsc.state.behaviour.unbind_after.store(5, Ordering::SeqCst);
    let (_db, pool) = database().await;
    let (dispatcher, _smpp) = dispatcher(&smsc, "window=8", &pool);
    let jobs: Vec<_> = (0..30)
        .map(|n| job("+64211234567", &format!("exactly once {n}")))
        .collect();
    process_all(&dispatcher, jobs).await;

    let texts: Vec<String> = smsc
        .state
        .accepted()
        .iter()
        .map(|a| gsm7_decode(&a.submit.short_message).unwrap())
        .collect();
    let distinct: HashSet<&String> = texts.iter().collect();
    assert_eq!(
        texts.len(),
        30,
        "every job reached the SMSC once: {texts:?}"
    );
    assert_eq!(distinct.len(), 30);
    assert!(
        smsc.state.binds.load(Ordering::SeqCst) >= 2,
        "it bound again"
    );
}

#[tokio::test]
async fn encodings_udh_and_addresses_as_the_smsc_sees_them() {
    let smsc = Smsc::start().await;
    let (smpp, _receipts) = connector(&smsc, "");
    let sms = |sender: &str, text: &str| OutgoingSms {
        job_id: uuid::Uuid::now_v7(),
        recipient: "+64211234567".into(),
        sender_id: Some(sender.into()),
        text: text.into(),
        valid_until: None,
    };

    let gsm = "Price 5€ [ok] {x} ~^|\\ Ça";
    let submitted = smpp.submit(&sms("ACME", gsm)).await.unwrap();
    assert_eq!(submitted.provider_message_ids.len(), 1);
    let emoji = "Hi 😀 there";
    smpp.submit(&sms("+6421000000", emoji)).await.unwrap();
    let long: String = (0..400)
        .map(|n| char::from(b'a' + (n % 26) as u8))
        .collect();
    let three = smpp.submit(&sms("ACME", &long)).await.unwrap();
    assert_eq!(three.provider_message_ids.len(), 3);

    let accepted = smsc.state.accepted();
    assert_eq!(accepted.len(), 5);

    let gsm_submit = &accepted[0].submit;
    assert_eq!(gsm_submit.data_coding, 0x00);
    assert_eq!(gsm_submit.esm_class & 0x40, 0);
    assert_eq!(
        gsm_submit
            .short_message
            .iter()
            .filter(|&&b| b == 0x1B)
            .count(),
        9
    );
    assert_eq!(gsm7_decode(&gsm_submit.short_message).unwrap(), gsm);
    assert_eq!(
        (gsm_submit.source_addr_ton, gsm_submit.source_addr_npi),
        (5, 0)
    );
    assert_eq!(gsm_submit.source_addr, "ACME");
    assert_eq!(gsm_submit.destination_addr, "64211234567");
    assert_eq!((gsm_submit.dest_addr_ton, gsm_submit.dest_addr_npi), (1, 1));
    assert_eq!(gsm_submit.registered_delivery, 1);

    let ucs_submit = &accepted[1].submit;
    assert_eq!(ucs_submit.data_coding, 0x08);
    assert_eq!(
        ucs_submit.short_message.len(),
        2 * 11,
        "the emoji is a surrogate pair"
    );
    assert_eq!(ucs2_decode(&ucs_submit.short_message).unwrap(), emoji);
    assert_eq!(
        (
            ucs_submit.source_addr_ton,
            ucs_submit.source_addr_npi,
            ucs_submit.source_addr.as_str()
        ),
        (1, 1, "6421000000")
    );

    let parts = &accepted[2..];
    let reference = parts[0].submit.short_message[3];
    let mut joined = String::new();
    for (index, part) in parts.iter().enumerate() {
        let message = &part.submit.short_message;
        assert_eq!(part.submit.esm_class & 0x40, 0x40, "UDHI set");
        assert_eq!(
            message[..6],
            [0x05, 0x00, 0x03, reference, 3, index as u8 + 1],
            "UDH with one reference, total 3 and the part number, in order"
        );
        joined.push_str(&gsm7_decode(&message[6..]).unwrap());
    }
    assert_eq!(joined, long);
}

#[tokio::test]
async fn connection_lost_mid_window_never_resends_what_the_smsc_may_have_taken() {
    let smsc = Smsc::start().await;
    smsc.state
        .behaviour
        .response_delay_ms
        .store(400, Ordering::SeqCst);
    let proxy = support::CuttableProxy::start(smsc.port).await;
    let (_db, pool) = database().await;
    let url = format!("smpp://test:secret@127.0.0.1:{}?window=4", proxy.port);
    let mut settings = SmppSettings::from_url(&url).unwrap();
    settings.session_wait = Duration::from_secs(10);
    settings.reconnect_min = Duration::from_millis(50);
    let (sender, receipts) = mpsc::channel(16);
    let smpp = SmppConnector::start(settings, sender);
    tokio::spawn(run_receipt_recorder(pool.clone(), receipts));
    eventually("the bind", || async { smpp.is_bound() }).await;
    let dispatcher = Dispatcher::new(
        pool.clone(),
        Arc::new(smpp.clone()),
        DispatchSettings::default(),
    );

    let jobs: Vec<_> = (0..8)
        .map(|n| job("+64211234567", &format!("cut {n}")))
        .collect();
    let cut = async {
        // Four submits are on the bind awaiting their answers, four wait for a window slot. (The
        // SMSC may not have read all four yet: the connector cannot know that either.)
        eventually("a full window", || async {
            smpp.in_flight() == 4 && smsc.state.seen.load(Ordering::SeqCst) >= 1
        })
        .await;
        proxy.cut();
    };
    let (_, ()) = tokio::join!(process_all(&dispatcher, jobs), cut);

    let texts: Vec<String> = smsc
        .state
        .accepted()
        .iter()
        .map(|a| gsm7_decode(&a.submit.short_message).unwrap())
        .collect();
    let distinct: HashSet<&String> = texts.iter().collect();
    assert_eq!(
        distinct.len(),
        texts.len(),
        "nothing reached the SMSC twice: {texts:?}"
    );
    let states: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM sms_jobs GROUP BY state ORDER BY state")
            .fetch_all(&pool)
            .await
            .unwrap();
    // The four in flight may have been taken: flagged for review, not resent. The four that had
    // not been written went out on the new bind.
    assert_eq!(
        states,
        [("needs_review".to_owned(), 4), ("submitted".to_owned(), 4)]
    );
    assert_eq!(smsc.state.binds.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn throughput_limit_spaces_submits_on_the_bind() {
    let smsc = Smsc::start().await;
    let (smpp, _receipts) = connector(&smsc, "window=10&tps=20");
    eventually("the bind", || async { smpp.is_bound() }).await;
    let started = std::time::Instant::now();
    let submits = (0..10).map(|n| {
        let smpp = smpp.clone();
        async move {
            smpp.submit(&OutgoingSms {
                job_id: uuid::Uuid::now_v7(),
                recipient: "+64211234567".into(),
                sender_id: None,
                text: format!("paced {n}"),
                valid_until: None,
            })
            .await
            .unwrap()
        }
    });
    futures::future::join_all(submits).await;
    // 10 submits at 20 per second: the tenth leaves 9 × 50 ms after the first.
    assert!(
        started.elapsed() >= Duration::from_millis(440),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(smsc.state.accepted().len(), 10);
}

#[tokio::test]
async fn the_same_job_delivered_twice_at_once_reaches_the_smsc_once() {
    let smsc = Smsc::start().await;
    smsc.state
        .behaviour
        .response_delay_ms
        .store(200, Ordering::SeqCst);
    let (_db, pool) = database().await;
    let (dispatcher, _smpp) = dispatcher(&smsc, "", &pool);
    let sms = job("+64211234567", "redelivered while in flight");
    // The broker redelivers a job still being sent (e.g. after a channel loss).
    let (first, second) = tokio::join!(
        dispatcher.process_job(sms.clone()),
        dispatcher.process_job(sms.clone())
    );
    assert_eq!((first, second), (Outcome::Done, Outcome::Done));
    assert_eq!(smsc.state.accepted().len(), 1);
    // The copy that found it "submitting" flagged it; the sender's record then superseded that.
    assert_eq!(job_state(&pool, &sms.job_id).await, "submitted");
}
