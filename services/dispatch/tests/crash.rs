//! The dispatch binary as its own process under failure: its RabbitMQ connection killed while jobs
//! flow, and the process itself killed (SIGKILL) with submits in flight. The SMSC is the test's
//! in-process SMPP server, which counts every submit_sm it accepts; RabbitMQ is the shared broker
//! (only this process' connection is closed, the server keeps running for other tests).

mod support;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser;
use email2sms_dispatch::Config;
use email2sms_proto::prost::Message;
use email2sms_proto::queue::v1::{SMS_JOB_TYPE, SmsJob};
use email2sms_queue::topology::SMS_JOB_ROUTING_KEY;
use email2sms_queue::{Broker, Outgoing, Publisher, Topology};
use email2sms_testkit::ServiceProcess;
use lapin::types::FieldTable;
use support::{Smsc, accepted_texts, database, job};

const BINARY: &str = env!("CARGO_BIN_EXE_email2sms-dispatch");
const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// One dispatch deployment of a test: its queue prefix, database and SMSC.
struct Setup {
    prefix: String,
    db_url: String,
    connector: String,
    topology: Topology,
    publisher: Publisher,
}

impl Setup {
    async fn new(db_url: &str, connector: String) -> Setup {
        let prefix = format!("test.{}.", uuid::Uuid::new_v4().simple());
        let config = Config::try_parse_from([
            "email2sms-dispatch",
            "--amqp-prefix",
            &prefix,
            "--retry-delays",
            "200ms,400ms",
        ])
        .unwrap();
        let topology = config.queue.topology();
        let broker = Broker::new(AMQP_URL, format!("crash test {prefix}"));
        topology
            .declare_jobs(&broker.channel().await.unwrap())
            .await
            .unwrap();
        Setup {
            prefix,
            db_url: db_url.to_owned(),
            connector,
            topology,
            publisher: Publisher::new(broker, Duration::from_secs(10)),
        }
    }

    async fn spawn(&self) -> ServiceProcess {
        ServiceProcess::spawn(
            Path::new(BINARY),
            &[
                ("DATABASE_URL", &self.db_url),
                ("EMAIL2SMS_MIGRATE", "1"),
                ("EMAIL2SMS_INSECURE_NO_AUTH", "1"),
                ("EMAIL2SMS_DISPATCH_GRPC_ADDR", "127.0.0.1:0"),
                ("EMAIL2SMS_SMS_CONNECTOR", &self.connector),
                ("EMAIL2SMS_AMQP_PREFIX", &self.prefix),
                ("EMAIL2SMS_REDIS_PREFIX", &self.prefix),
                ("EMAIL2SMS_RETRY_DELAYS", "200ms,400ms"),
                ("EMAIL2SMS_DISPATCH_PREFETCH", "20"),
                ("EMAIL2SMS_THROTTLE_PER_USER", "0"),
                ("EMAIL2SMS_THROTTLE_PER_COMPANY", "0"),
            ],
        )
        .await
    }

    async fn publish(&self, jobs: &[SmsJob]) {
        for sms in jobs {
            self.publisher
                .publish(Outgoing {
                    exchange: &self.topology.jobs_exchange(),
                    routing_key: SMS_JOB_ROUTING_KEY,
                    payload: &sms.encode_to_vec(),
                    message_id: sms.job_id.clone(),
                    message_type: SMS_JOB_TYPE,
                    headers: FieldTable::default(),
                })
                .await
                .unwrap();
        }
    }
}

fn jobs(tag: &str, count: usize) -> Vec<SmsJob> {
    (0..count)
        .map(|n| job("+64211234567", &format!("{tag} {n}")))
        .collect()
}

/// How many times the SMSC accepted each text.
async fn states(pool: &sqlx::PgPool) -> HashMap<String, String> {
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT text, state FROM sms_jobs")
        .fetch_all(pool)
        .await
        .unwrap();
    rows.into_iter().collect()
}

/// Waits up to `seconds` for `check`.
async fn within<F, Fut>(seconds: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Closes the broker connections whose client properties contain every one of `needles`; returns
/// how many.
fn close_connections_named(needles: &[&str]) -> usize {
    let output = std::process::Command::new("rabbitmqctl")
        .args(["-q", "list_connections", "pid", "client_properties"])
        .output()
        .expect("rabbitmqctl is installed with RabbitMQ");
    let listing = String::from_utf8_lossy(&output.stdout);
    let pids: Vec<String> = listing
        .lines()
        .filter(|line| needles.iter().all(|needle| line.contains(needle)))
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect();
    for pid in &pids {
        let status = std::process::Command::new("rabbitmqctl")
            .args([
                "-q",
                "close_connection",
                pid,
                "test: simulated broker failure",
            ])
            .status()
            .unwrap();
        assert!(status.success());
    }
    pids.len()
}

#[tokio::test]
async fn the_consumer_recovers_from_a_killed_broker_connection_and_sends_every_job_once() {
    let (db, pool) = database().await;
    let smsc = Smsc::start().await;
    // A little latency at the SMSC keeps jobs in flight when the connection goes.
    smsc.state
        .behaviour
        .response_delay_ms
        .store(3, Ordering::SeqCst);
    let setup = Setup::new(&db.url, smsc.url("window=10")).await;
    let mut dispatch = setup.spawn().await;
    let first = jobs("before", 300);
    setup.publish(&first).await;
    within(30, "jobs flowing", || async {
        smsc.state.accepted().len() >= 40
    })
    .await;
    let jobs_queue = setup.topology.jobs_queue();
    // This process' consumer connection only: other tests share the broker.
    let closed = close_connections_named(&["email2sms-dispatch jobs", &jobs_queue]);
    assert_eq!(closed, 1, "one consumer connection to close");
    let at_cut = smsc.state.accepted().len();
    assert!(
        at_cut < first.len(),
        "the cut happened while jobs were flowing"
    );
    let second = jobs("after", 100);
    setup.publish(&second).await;
    let total = first.len() + second.len();
    within(60, "every job submitted after the reconnect", || async {
        states(&pool)
            .await
            .values()
            .filter(|state| *state == "submitted")
            .count()
            == total
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = accepted_texts(&smsc);
    assert_eq!(counts.len(), total, "every job reached the SMSC");
    assert!(
        counts.values().all(|n| *n == 1),
        "no job submitted twice: {:?}",
        counts.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    assert!(
        dispatch.stderr().contains("reconnecting"),
        "the consumer noticed and reconnected ({jobs_queue})"
    );
    dispatch.terminate();
    assert!(dispatch.wait(Duration::from_secs(30)).await.success());
}

#[tokio::test]
async fn a_dispatcher_killed_mid_window_loses_nothing_and_resends_nothing_the_smsc_took() {
    let (db, pool) = database().await;
    let smsc = Smsc::start().await;
    // A slow SMSC: submits sit in the window when the process dies.
    smsc.state
        .behaviour
        .response_delay_ms
        .store(400, Ordering::SeqCst);
    let setup = Setup::new(&db.url, smsc.url("window=10")).await;
    let dispatch = setup.spawn().await;
    let all = jobs("crash", 60);
    setup.publish(&all).await;
    within(30, "a few submits answered and more in flight", || async {
        smsc.state.accepted().len() >= 10 && smsc.state.seen.load(Ordering::SeqCst) >= 15
    })
    .await;
    // Dropping the process handle kills it with SIGKILL (kill_on_drop): no graceful stop.
    drop(dispatch);
    // Submits the SMSC was still holding complete on its side (it saw them) though their
    // responses go nowhere.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let before_restart = accepted_texts(&smsc);
    smsc.state
        .behaviour
        .response_delay_ms
        .store(0, Ordering::SeqCst);

    let mut restarted = setup.spawn().await;
    within(60, "every job accounted for", || async {
        let states = states(&pool).await;
        states.len() == all.len()
            && states
                .values()
                .all(|s| s == "submitted" || s == "needs_review")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let states = states(&pool).await;
    let counts = accepted_texts(&smsc);
    assert!(
        counts.values().all(|n| *n == 1),
        "no job the SMSC took was sent again: {:?}",
        counts.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    let review: HashSet<&String> = states
        .iter()
        .filter(|(_, s)| *s == "needs_review")
        .map(|(text, _)| text)
        .collect();
    assert!(
        !review.is_empty(),
        "jobs caught in submitting were parked for review, not resent"
    );
    for (text, state) in &states {
        if state == "submitted" {
            assert_eq!(counts.get(text), Some(&1), "{text} submitted once");
        }
    }
    // Whatever the SMSC took before the crash without the answer being recorded is in review,
    // counted, and not sent a second time.
    for text in before_restart.keys() {
        assert!(states.contains_key(text), "{text} was recorded");
    }
    let sent_after: usize = counts.len() - before_restart.len();
    assert_eq!(
        sent_after
            + before_restart.len()
            + review.iter().filter(|t| !counts.contains_key(**t)).count(),
        all.len(),
        "every job is either sent once or waiting for review: none lost"
    );
    restarted.terminate();
    assert!(restarted.wait(Duration::from_secs(30)).await.success());
}
