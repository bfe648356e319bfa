//! Dispatch as deployed: jobs arrive on RabbitMQ, reach a real SMPP server exactly once, transient
//! refusals go through a retry tier, permanent ones land in the dead-letter queue with the reason,
//! and every status change is published as an event.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser;
use email2sms_dispatch::Config;
use email2sms_proto::prost::Message;
use email2sms_proto::queue::v1::{
    SMS_JOB_TYPE, SMS_STATUS_CHANGED_ROUTING_KEY, SmsJob, SmsState, SmsStatusChanged,
};
use email2sms_queue::topology::{DEAD_REASON_HEADER, SMS_JOB_ROUTING_KEY};
use email2sms_queue::{Broker, Outgoing, Publisher, Topology};
use email2sms_runtime::auth::Auth;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::types::{AMQPValue, FieldTable};
use support::{Smsc, database, eventually, job, job_state};

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

struct Running {
    grpc_addr: std::net::SocketAddr,
    topology: Topology,
    publisher: Publisher,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<Result<(), email2sms_runtime::service::StartError>>,
}

/// Starts dispatch in-process against `connector`, with its own queue names and short retry tiers.
/// No throttles unless `extra` sets them.
async fn start(pool: &sqlx::PgPool, db_url: &str, connector: &str) -> Running {
    start_with(pool, db_url, connector, &[]).await
}

/// [`start`] with more flags (they win over the defaults here).
async fn start_with(pool: &sqlx::PgPool, db_url: &str, connector: &str, extra: &[&str]) -> Running {
    let prefix = format!("test.{}.", uuid::Uuid::new_v4().simple());
    let mut args = vec![
        "email2sms-dispatch",
        "--database-url",
        db_url,
        "--sms-connector",
        connector,
        "--amqp-prefix",
        &prefix,
        "--redis-prefix",
        &prefix,
        "--retry-delays",
        "200ms,400ms",
        "--throttle-per-user",
        "0",
        "--throttle-per-company",
        "0",
        "--insecure-no-auth",
    ];
    // clap refuses a flag given twice: drop the defaults `extra` overrides.
    for pair in extra.chunks(2) {
        if let Some(at) = args.iter().position(|arg| *arg == pair[0]) {
            args.drain(at..at + 2);
        }
    }
    args.extend_from_slice(extra);
    let config = Config::try_parse_from(args).unwrap();
    let topology = config.queue.topology();
    let broker = Broker::new(AMQP_URL, "dispatch test");
    topology
        .declare_jobs(&broker.channel().await.unwrap())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let pool = pool.clone();
    let served = tokio::spawn(async move {
        let auth = Auth::from_args(&config.server).unwrap();
        email2sms_dispatch::run(&config, &auth, pool, listener, async {
            let _ = stopped.await;
        })
        .await
    });
    Running {
        grpc_addr,
        topology,
        publisher: Publisher::new(broker, Duration::from_secs(5)),
        stop: Some(stop),
        served,
    }
}

impl Running {
    async fn publish(&self, payload: &[u8], id: &str) {
        self.publisher
            .publish(Outgoing {
                exchange: &self.topology.jobs_exchange(),
                routing_key: SMS_JOB_ROUTING_KEY,
                payload,
                message_id: id.to_owned(),
                message_type: SMS_JOB_TYPE,
                headers: FieldTable::default(),
            })
            .await
            .unwrap();
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(30), self.served)
            .await
            .expect("dispatch stops")
            .unwrap()
            .unwrap();
        // Every queue is a quorum queue (a Raft cluster on the broker): leave none behind.
        if let Ok(channel) = self.publisher.broker().channel().await {
            let mut queues = self.topology.job_path_queues();
            queues.push(self.topology.status_events_queue());
            queues.push(self.topology.policy_events_queue());
            for queue in queues {
                let _ = channel
                    .queue_delete(queue.as_str().into(), Default::default())
                    .await;
            }
            for exchange in [
                self.topology.jobs_exchange(),
                self.topology.retry_exchange(),
                self.topology.dead_exchange(),
                self.topology.events_exchange(),
            ] {
                let _ = channel
                    .exchange_delete(exchange.as_str().into(), Default::default())
                    .await;
            }
        }
    }
}

/// Takes (and acks) messages from `queue` until `enough` holds for them or 10 s pass.
async fn collect(
    channel: &lapin::Channel,
    queue: &str,
    enough: impl Fn(&[lapin::message::BasicGetMessage]) -> bool,
) -> Vec<lapin::message::BasicGetMessage> {
    let mut taken = Vec::new();
    for _ in 0..200 {
        while let Some(message) = channel
            .basic_get(queue.into(), BasicGetOptions::default())
            .await
            .unwrap()
        {
            message.ack(BasicAckOptions::default()).await.unwrap();
            taken.push(message);
        }
        if enough(&taken) {
            return taken;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("only {} messages arrived on {queue}", taken.len());
}

fn encoded(job: &SmsJob) -> Vec<u8> {
    job.encode_to_vec()
}

#[tokio::test]
async fn queued_jobs_reach_the_smsc_once_and_their_status_is_published() {
    let (db, pool) = database().await;
    let smsc = Smsc::start().await;
    let running = start(&pool, &db.url, &smsc.url("window=4")).await;
    let channel = running.publisher.broker().channel().await.unwrap();
    let events = format!("{}portal.status", running.topology.prefix);
    running
        .topology
        .declare_event_queue(&channel, &events, &[SMS_STATUS_CHANGED_ROUTING_KEY])
        .await
        .unwrap();

    let jobs: Vec<SmsJob> = (0..6)
        .map(|n| job("+64211234567", &format!("queued {n}")))
        .collect();
    for sms in &jobs {
        running.publish(&encoded(sms), &sms.job_id).await;
    }
    // A relay retrying after a lost confirm publishes the same job again.
    running.publish(&encoded(&jobs[0]), &jobs[0].job_id).await;

    eventually("every job submitted", || async {
        smsc.state.accepted().len() >= jobs.len()
    })
    .await;
    for sms in &jobs {
        eventually("the job is recorded as submitted", || async {
            job_state(&pool, &sms.job_id).await == "submitted"
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        smsc.state.accepted().len(),
        jobs.len(),
        "the duplicate was not sent"
    );

    let submitted_events = |messages: &[lapin::message::BasicGetMessage]| {
        messages
            .iter()
            .map(|m| SmsStatusChanged::decode(m.delivery.data.as_slice()).unwrap())
            .filter(|event| event.state() == SmsState::Submitted)
            .map(|event| event.job_id)
            .collect::<Vec<_>>()
    };
    let messages = collect(&channel, &events, |m| {
        submitted_events(m).len() >= jobs.len()
    })
    .await;
    let submitted = submitted_events(&messages);
    let distinct: std::collections::HashSet<_> = submitted.iter().collect();
    assert_eq!(
        distinct.len(),
        submitted.len(),
        "one submitted event per job"
    );
    running.stop().await;
}

#[tokio::test]
async fn a_throttled_job_goes_through_a_retry_tier_and_is_then_sent() {
    let (db, pool) = database().await;
    let smsc = Smsc::start().await;
    smsc.state
        .behaviour
        .throttle_next
        .store(1, Ordering::SeqCst);
    let running = start(&pool, &db.url, &smsc.url("window=1")).await;
    let sms = job("+64211234567", "slow down");
    running.publish(&encoded(&sms), &sms.job_id).await;
    eventually("sent after the throttle", || async {
        !smsc.state.accepted().is_empty()
    })
    .await;
    eventually("recorded as submitted", || async {
        job_state(&pool, &sms.job_id).await == "submitted"
    })
    .await;
    assert_eq!(smsc.state.accepted().len(), 1);
    assert!(
        smsc.state.seen.load(Ordering::SeqCst) >= 2,
        "refused once, then accepted"
    );
    running.stop().await;
}

#[tokio::test]
async fn permanent_failures_and_poison_land_in_the_dead_letter_queue_with_the_reason() {
    let logs = support::captured_logs();
    let (db, pool) = database().await;
    let dir = tempfile::tempdir().unwrap();
    let connector = format!("file:{}", dir.path().join("sms.jsonl").display());
    let running = start(&pool, &db.url, &connector).await;
    let channel = running.publisher.broker().channel().await.unwrap();
    let national = job("0211234567", "not E.164");
    running.publish(&encoded(&national), &national.job_id).await;
    running.publish(b"\xff\xfe not protobuf", "garbage").await;

    let parked = collect(&channel, &running.topology.dead_queue(), |m| m.len() >= 2).await;
    let reasons: Vec<String> = parked
        .iter()
        .map(|message| {
            match message
                .delivery
                .properties
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get(DEAD_REASON_HEADER).cloned())
            {
                Some(AMQPValue::LongString(text)) => {
                    String::from_utf8_lossy(text.as_bytes()).into_owned()
                }
                other => panic!("no reason header: {other:?}"),
            }
        })
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("not an SMS job")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("*******567")),
        "{reasons:?}"
    );
    running.stop().await;
    // The dead-lettering path logged the reason, with the number masked.
    assert!(logs.text().contains("dead-lettered"), "{}", logs.text());
    logs.assert_never_shows(&["0211234567", "not protobuf"]);
}

#[tokio::test]
async fn jobs_over_a_users_rate_wait_in_a_retry_tier_and_are_all_sent_once() {
    let (db, pool) = database().await;
    let smsc = Smsc::start().await;
    let running = start_with(
        &pool,
        &db.url,
        &smsc.url("window=10"),
        &["--throttle-per-user", "2/s"],
    )
    .await;
    let channel = running.publisher.broker().channel().await.unwrap();
    let started = std::time::Instant::now();
    let jobs: Vec<SmsJob> = (0..6)
        .map(|n| job("+64211234567", &format!("rated {n}")))
        .collect();
    for sms in &jobs {
        running.publish(&encoded(sms), &sms.job_id).await;
    }
    eventually("every throttled job is sent in the end", || async {
        let submitted: i64 =
            sqlx::query_scalar("SELECT count(*) FROM sms_jobs WHERE state = 'submitted'")
                .fetch_one(&pool)
                .await
                .unwrap();
        submitted == 6
    })
    .await;
    // A burst of 2, then 2 per second: the last of 6 cannot go before ~2 s.
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "the rate held: {:?}",
        started.elapsed()
    );
    assert_eq!(smsc.state.accepted().len(), jobs.len(), "each sent once");
    let attempts: Vec<i32> = sqlx::query_scalar("SELECT attempts FROM sms_jobs")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(
        attempts.iter().all(|a| *a == 1),
        "waits were not counted: {attempts:?}"
    );
    let dead = channel
        .basic_get(
            running.topology.dead_queue().as_str().into(),
            BasicGetOptions::default(),
        )
        .await
        .unwrap();
    assert!(dead.is_none(), "a throttled job is never dropped or parked");
    running.stop().await;
}

#[tokio::test]
async fn an_expired_job_is_dead_lettered_unsent_and_a_valid_one_carries_its_validity() {
    let (db, pool) = database().await;
    let smsc = Smsc::start().await;
    let running = start(&pool, &db.url, &smsc.url("window=4")).await;
    let channel = running.publisher.broker().channel().await.unwrap();
    let now = std::time::SystemTime::now();
    let mut stale = job("+64211234567", "too late");
    stale.expire_time = Some((now - Duration::from_secs(5)).into());
    let mut fresh = job("+64211234568", "in time");
    fresh.expire_time = Some((now + Duration::from_secs(3600)).into());
    running.publish(&encoded(&stale), &stale.job_id).await;
    running.publish(&encoded(&fresh), &fresh.job_id).await;

    let parked = collect(&channel, &running.topology.dead_queue(), |m| !m.is_empty()).await;
    assert_eq!(parked.len(), 1);
    let reason = match parked[0]
        .delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(DEAD_REASON_HEADER).cloned())
    {
        Some(AMQPValue::LongString(text)) => String::from_utf8_lossy(text.as_bytes()).into_owned(),
        other => panic!("no reason header: {other:?}"),
    };
    assert!(reason.contains("validity period"), "{reason}");
    assert_eq!(job_state(&pool, &stale.job_id).await, "expired");

    eventually("the valid job is sent", || async {
        job_state(&pool, &fresh.job_id).await == "submitted"
    })
    .await;
    let accepted = smsc.state.accepted();
    assert_eq!(accepted.len(), 1, "the expired job never reached the SMSC");
    assert_eq!(accepted[0].submit.destination_addr, "64211234568");
    // Relative validity (YYMMDDhhmmss000R): what is left of the hour, rounded up.
    let validity = &accepted[0].submit.validity_period;
    assert!(
        validity == "000000010000000R" || validity.starts_with("00000000595"),
        "{validity}"
    );
    running.stop().await;
}

#[tokio::test]
async fn a_message_resolved_for_resending_goes_through_the_queue_and_is_sent_again() {
    use email2sms_proto::dispatch::v1::dispatch_service_client::DispatchServiceClient;
    use email2sms_proto::dispatch::v1::{ResolveMessageReviewRequest, ReviewResolution};

    let (db, pool) = database().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sms.jsonl");
    let running = start(&pool, &db.url, &format!("file:{}", path.display())).await;
    let sms = job("+64211234567", "sent again after review");
    running.publish(&encoded(&sms), &sms.job_id).await;
    let state_is = |want: &'static str| {
        let pool = pool.clone();
        let job_id = sms.job_id.clone();
        move || {
            let pool = pool.clone();
            let job_id = job_id.clone();
            async move { support::recorded_state(&pool, &job_id).await.as_deref() == Some(want) }
        }
    };
    eventually("sent", state_is("submitted")).await;
    // As after a crash between the connector's answer and its record, then a redelivery.
    sqlx::query("UPDATE sms_jobs SET state = 'submitting' WHERE job_id = $1::uuid")
        .bind(&sms.job_id)
        .execute(&pool)
        .await
        .unwrap();
    running.publish(&encoded(&sms), &sms.job_id).await;
    eventually("held for review", state_is("needs_review")).await;

    // Whoever checked with the provider (it never got it) has it sent again, over gRPC.
    let mut client = DispatchServiceClient::connect(format!("http://{}", running.grpc_addr))
        .await
        .unwrap();
    let message = client
        .resolve_message_review(ResolveMessageReviewRequest {
            company_id: sms.company_id.clone(),
            job_id: sms.job_id.clone(),
            resolution: ReviewResolution::Resend as i32,
            note: "provider has no record of it".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .message
        .unwrap();
    assert_eq!(message.state, SmsState::Queued as i32);
    eventually("sent again", state_is("submitted")).await;
    let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM sms_jobs WHERE job_id = $1::uuid")
        .bind(&sms.job_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(attempts, 1, "a resend starts its attempts over");

    let sent: Vec<serde_json::Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(
        sent.len(),
        2,
        "once before the crash, once after the review"
    );
    assert!(
        sent.iter()
            .all(|line| line["job_id"] == sms.job_id.as_str())
    );
    let history: Vec<String> = sqlx::query_scalar(
        "SELECT to_state FROM sms_job_history WHERE job_id = $1::uuid ORDER BY position",
    )
    .bind(&sms.job_id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        history[history.len() - 4..],
        ["needs_review", "queued", "submitting", "submitted"]
    );
    running.stop().await;
}

#[tokio::test]
async fn jobs_flowing_through_a_broker_outage_are_all_sent_once() {
    let (db, pool) = database().await;
    let smsc = Smsc::start().await;
    // Dispatch reaches RabbitMQ only through the proxy; the test publishes to it directly.
    let proxy = support::CuttableProxy::start(5672).await;
    let amqp_url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port);
    let running = start_with(
        &pool,
        &db.url,
        &smsc.url("window=4"),
        &["--amqp-url", &amqp_url],
    )
    .await;
    let jobs: Vec<SmsJob> = (0..40)
        .map(|n| job("+64211234567", &format!("through the outage {n}")))
        .collect();
    for (n, sms) in jobs.iter().enumerate() {
        running.publish(&encoded(sms), &sms.job_id).await;
        if n == 10 || n == 25 {
            // As RabbitMQ restarting: every connection dropped, none taken for a while.
            tokio::time::sleep(Duration::from_millis(100)).await;
            proxy.outage(Duration::from_secs(2));
        }
    }
    // A reconnect that meets a dead connection gives up on it after BROKER_ANSWER_SECONDS (10 s)
    // and backs off (doubling to 30 s), so allow for a few of those on top of the outages: with
    // the whole suite loading the broker, 40 s once ended with the consumer still reconnecting
    // (11 of 40 sent). Alone the test takes about 4 s.
    let started = std::time::Instant::now();
    loop {
        let states: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, count(*) FROM sms_jobs GROUP BY state ORDER BY state")
                .fetch_all(&pool)
                .await
                .unwrap();
        if states == [("submitted".to_owned(), 40)] {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "jobs by state after 90 s: {states:?}, at the SMSC: {}",
            smsc.state.accepted().len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sent = support::accepted_texts(&smsc);
    for sms in &jobs {
        assert_eq!(sent.get(&sms.text), Some(&1), "{} sent once", sms.text);
    }
    running.stop().await;
}

/// The text of a header of a message taken from a queue.
fn header_text(message: &lapin::message::BasicGetMessage, name: &str) -> Option<String> {
    match message
        .delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(name).cloned())
    {
        Some(AMQPValue::LongString(text)) => {
            Some(String::from_utf8_lossy(text.as_bytes()).into_owned())
        }
        _ => None,
    }
}

/// A copy of every job dispatch sends through a retry tier (an extra queue bound to the retry
/// exchange with every tier's key), so a test can count a job's deliveries: one, plus one per
/// retry. Exclusive: it goes away with the test's connection.
async fn tap_retries(running: &Running, channel: &lapin::Channel) -> String {
    use lapin::options::{QueueBindOptions, QueueDeclareOptions};
    let tap = format!("{}tap.retries", running.topology.prefix);
    channel
        .queue_declare(
            tap.as_str().into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    for delay in &running.topology.retry_delays {
        channel
            .queue_bind(
                tap.as_str().into(),
                running.topology.retry_exchange().as_str().into(),
                running.topology.retry_tier(*delay).as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
    }
    tap
}

/// Everything on `queue` now (acked).
async fn drain(channel: &lapin::Channel, queue: &str) -> Vec<lapin::message::BasicGetMessage> {
    let mut taken = Vec::new();
    while let Some(message) = channel
        .basic_get(queue.into(), BasicGetOptions::default())
        .await
        .unwrap()
    {
        message.ack(BasicAckOptions::default()).await.unwrap();
        taken.push(message);
    }
    taken
}

#[tokio::test]
async fn a_job_whose_text_the_database_refuses_is_delivered_once_and_dead_lettered_with_the_reason()
{
    let (db, pool) = database().await;
    let smsc = Smsc::start().await;
    let running = start(&pool, &db.url, &smsc.url("window=4")).await;
    let channel = running.publisher.broker().channel().await.unwrap();
    let tap = tap_retries(&running, &channel).await;
    // As ingest published it before it refused NUL bytes: PostgreSQL cannot store the text
    // (SQLSTATE 22021), which no retry will change.
    let poisoned = job("+64211234567", "before\0after");
    running.publish(&encoded(&poisoned), &poisoned.job_id).await;

    let parked = collect(&channel, &running.topology.dead_queue(), |m| !m.is_empty()).await;
    assert_eq!(parked.len(), 1);
    let reason = header_text(&parked[0], DEAD_REASON_HEADER).expect("a reason header");
    assert!(reason.contains("0x00"), "{reason}");
    eventually("the job is recorded as failed", || async {
        support::recorded_state(&pool, &poisoned.job_id)
            .await
            .as_deref()
            == Some("failed")
    })
    .await;
    let last_error: String =
        sqlx::query_scalar("SELECT last_error FROM sms_jobs WHERE job_id = $1::uuid")
            .bind(&poisoned.job_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(last_error.contains("0x00"), "{last_error}");
    // Absence needs a wait: a retry would have come back within the two tiers (200 + 400 ms).
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(
        drain(&channel, &tap).await.len(),
        0,
        "delivered once: never sent through a retry tier"
    );
    assert!(
        drain(&channel, &running.topology.dead_queue())
            .await
            .is_empty()
    );
    assert_eq!(smsc.state.seen.load(Ordering::SeqCst), 0, "never sent");
    running.stop().await;
}

#[tokio::test]
async fn a_transient_fault_walks_the_retry_tiers_and_stops_at_the_delivery_limit() {
    let logs = support::captured_logs();
    let (db, pool) = database().await;
    let smsc = Smsc::start().await;
    // The SMSC says "system error, try later" to every submit.
    smsc.state
        .behaviour
        .fail_next
        .store(usize::MAX, Ordering::SeqCst);
    // Four deliveries, fewer than the eight submit attempts after which a job fails by itself:
    // the delivery limit is what stops it.
    let running = start_with(
        &pool,
        &db.url,
        &smsc.url("window=1"),
        &[
            "--retry-delays",
            "100ms,200ms,300ms",
            "--delivery-limit",
            "4",
        ],
    )
    .await;
    let channel = running.publisher.broker().channel().await.unwrap();
    let tap = tap_retries(&running, &channel).await;
    let sms = job("+64211234567", "the SMSC is unwell");
    running.publish(&encoded(&sms), &sms.job_id).await;

    let parked = collect(&channel, &running.topology.dead_queue(), |m| !m.is_empty()).await;
    let reason = header_text(&parked[0], DEAD_REASON_HEADER).expect("a reason header");
    assert!(reason.contains("4 deliveries"), "{reason}");
    assert!(reason.contains("0x00000008"), "{reason}");
    let tiers: Vec<String> = drain(&channel, &tap)
        .await
        .iter()
        .map(|m| m.delivery.routing_key.to_string())
        .collect();
    assert_eq!(
        tiers,
        ["100ms", "200ms", "300ms"],
        "each tier once, in order"
    );
    assert_eq!(
        smsc.state.seen.load(Ordering::SeqCst),
        4,
        "one submit per delivery"
    );
    eventually("the job is recorded as failed", || async {
        support::recorded_state(&pool, &sms.job_id).await.as_deref() == Some("failed")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        smsc.state.seen.load(Ordering::SeqCst),
        4,
        "nothing after the limit"
    );
    running.stop().await;
    // Every retry and the dead-lettering were logged, without the number or the text.
    assert!(logs.text().contains("job retried later"), "{}", logs.text());
    logs.assert_never_shows(&["64211234567", "the SMSC is unwell"]);
}

#[tokio::test]
async fn list_messages_finds_an_sms_by_the_number_as_people_type_it() {
    use email2sms_proto::dispatch::v1::ListMessagesRequest;
    use email2sms_proto::dispatch::v1::dispatch_service_client::DispatchServiceClient;

    let (db, pool) = database().await;
    let dir = tempfile::tempdir().unwrap();
    let connector = format!("file:{}", dir.path().join("sms.jsonl").display());
    let running = start(&pool, &db.url, &connector).await;
    // As ingest publishes them for an NZ company: the recipient in E.164, read with its region.
    let mut wanted = job("+64211000003", "the one");
    wanted.company_region = "NZ".into();
    let mut other = job("+64211000004", "another");
    other.company_region = "NZ".into();
    for sms in [&wanted, &other] {
        running.publish(&encoded(sms), &sms.job_id).await;
        eventually("recorded", || async {
            support::recorded_state(&pool, &sms.job_id).await.is_some()
        })
        .await;
    }
    let mut client = DispatchServiceClient::connect(format!("http://{}", running.grpc_addr))
        .await
        .unwrap();
    let list = |recipient: &str| ListMessagesRequest {
        company_id: wanted.company_id.clone(),
        recipient: recipient.into(),
        ..ListMessagesRequest::default()
    };
    for typed in [
        "0211000003",
        "021 100 0003",
        "021-100-0003",
        "64211000003",
        "+64211000003",
        "+64 21 100 0003",
        "0064 21 100 0003",
    ] {
        let found: Vec<String> = client
            .list_messages(list(typed))
            .await
            .unwrap_or_else(|status| panic!("{typed:?} refused: {}", status.message()))
            .into_inner()
            .messages
            .into_iter()
            .map(|m| m.job_id)
            .collect();
        assert_eq!(found, [wanted.job_id.clone()], "{typed:?}");
    }
    for (garbage, says) in [
        ("hello", "letters"),
        ("+64", "too few digits"),
        ("021 100 0003 ext 5", "letters"),
        ("+999 21 100 0003", "country code that does not exist"),
    ] {
        let status = client.list_messages(list(garbage)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{garbage:?}");
        assert!(
            status.message().contains("recipient") && status.message().contains(says),
            "{garbage:?}: {}",
            status.message()
        );
    }
    running.stop().await;
}
