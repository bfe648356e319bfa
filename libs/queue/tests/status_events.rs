//! Status events have a home: the shared topology declares a bounded queue for
//! `sms.status.changed`, so an event published with no subscriber is kept (within the bound) for
//! whoever reads it, and nothing of an event's body reaches a log line, on any path.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use email2sms_proto::prost::Message;
use email2sms_proto::queue::v1::{SMS_STATUS_CHANGED_ROUTING_KEY, SmsState, SmsStatusChanged};
use email2sms_queue::outbox::{OutboxEvent, OutboxRelay, enqueue_many};
use email2sms_queue::outbox_table::create_outbox_table_sql;
use email2sms_queue::topology::{StatusQueueBounds, Topology};
use email2sms_queue::{Broker, Publisher};
use email2sms_testkit::{TestDb, eventually};
use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicGetOptions, ExchangeDeleteOptions, QueueDeleteOptions};

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const RECIPIENT: &str = "+64211000003";

fn topology(status: StatusQueueBounds) -> Topology {
    Topology {
        prefix: format!("test.{}.", uuid::Uuid::new_v4().simple()),
        status_events: status,
        ..Topology::default()
    }
}

struct Setup {
    _db: TestDb,
    pool: sqlx::PgPool,
    topology: Topology,
    broker: Arc<Broker>,
    channel: Channel,
    relay: OutboxRelay,
    stop: tokio_util::sync::CancellationToken,
}

async fn setup(status: StatusQueueBounds) -> Setup {
    let db = TestDb::create().await;
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    sqlx::query(&create_outbox_table_sql())
        .execute(&pool)
        .await
        .unwrap();
    let topology = topology(status);
    // The test reads on a connection of its own: asking a quorum queue that is being deleted or
    // declared for a message can make RabbitMQ close the whole connection.
    let broker = Broker::new(AMQP_URL, "status events test reader");
    let channel = broker.channel().await.unwrap();
    let relay = OutboxRelay {
        pool: pool.clone(),
        publisher: Arc::new(Publisher::new(
            Broker::new(AMQP_URL, "status events test relay"),
            Duration::from_secs(5),
        )),
        topology: topology.clone(),
        batch: 100,
        poll_interval: Duration::from_secs(1),
    };
    Setup {
        _db: db,
        pool,
        topology,
        broker,
        channel,
        relay,
        stop: tokio_util::sync::CancellationToken::new(),
    }
}

impl Setup {
    /// Writes `count` status events of one job into the outbox, as dispatch does.
    async fn write_events(&self, count: u64) -> Vec<String> {
        let job_id = uuid::Uuid::now_v7().to_string();
        let events: Vec<(uuid::Uuid, Vec<u8>)> = (1..=count)
            .map(|sequence| {
                let id = uuid::Uuid::now_v7();
                let event = SmsStatusChanged {
                    event_id: id.to_string(),
                    job_id: job_id.clone(),
                    recipient: RECIPIENT.into(),
                    state: SmsState::Submitted as i32,
                    error_message: format!("the handset of {RECIPIENT} is off"),
                    sequence,
                    ..SmsStatusChanged::default()
                };
                (id, event.encode_to_vec())
            })
            .collect();
        let rows: Vec<OutboxEvent<'_>> = events
            .iter()
            .map(|(id, payload)| OutboxEvent {
                message_id: *id,
                routing_key: SMS_STATUS_CHANGED_ROUTING_KEY,
                payload: payload.clone(),
            })
            .collect();
        let mut tx = self.pool.begin().await.unwrap();
        enqueue_many(&mut tx, &rows).await.unwrap();
        tx.commit().await.unwrap();
        events.iter().map(|(id, _)| id.to_string()).collect()
    }

    /// Starts the relay as a service does (it declares the topology first).
    fn start_relay(&self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.relay.clone().run(self.stop.clone().cancelled_owned()))
    }

    /// Everything in the status queue now, decoded, in order (acked); nothing while the queue
    /// does not exist.
    async fn read_status_queue(&self) -> Vec<SmsStatusChanged> {
        // A fresh channel each time: asking for a queue that does not exist closes the channel.
        let mut events = Vec::new();
        let Ok(channel) = self.broker.channel().await else {
            return events;
        };
        while let Ok(Some(message)) = channel
            .basic_get(
                self.topology.status_events_queue().as_str().into(),
                BasicGetOptions::default(),
            )
            .await
        {
            message.ack(BasicAckOptions::default()).await.unwrap();
            events.push(SmsStatusChanged::decode(message.delivery.data.as_slice()).unwrap());
        }
        events
    }

    /// Reads the status queue until `count` events came, for at most 10 s.
    async fn read_events(&self, count: usize) -> Vec<SmsStatusChanged> {
        let events = Mutex::new(Vec::new());
        eventually(
            &format!("{count} events in {}", self.topology.status_events_queue()),
            || async {
                let read = self.read_status_queue().await;
                let mut events = events.lock().unwrap();
                events.extend(read);
                events.len()
            },
            |read| *read >= count,
        )
        .await;
        events.into_inner().unwrap()
    }

    /// Waits until the relay has declared the events topology, for at most 10 s (the policy
    /// queue is declared last).
    async fn status_queue_declared(&self) {
        eventually(
            "the relay to declare the events topology",
            || async {
                let Ok(channel) = self.broker.channel().await else {
                    return false;
                };
                channel
                    .queue_declare(
                        self.topology.policy_events_queue().as_str().into(),
                        lapin::options::QueueDeclareOptions {
                            passive: true,
                            ..Default::default()
                        },
                        lapin::types::FieldTable::default(),
                    )
                    .await
                    .is_ok()
            },
            |declared| *declared,
        )
        .await;
    }

    /// Rows waiting in the outbox.
    async fn outbox_rows(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Messages in the status queue now.
    async fn held(&self) -> u32 {
        self.channel
            .queue_declare(
                self.topology.status_events_queue().as_str().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .unwrap()
            .message_count()
    }

    async fn cleanup(self, relay: tokio::task::JoinHandle<()>) {
        self.stop.cancel();
        relay.await.unwrap();
        for queue in [
            self.topology.status_events_queue(),
            self.topology.policy_events_queue(),
        ] {
            let _ = self
                .channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        let _ = self
            .channel
            .exchange_delete(
                self.topology.events_exchange().as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await;
    }
}

#[tokio::test]
async fn with_no_subscriber_status_events_land_in_their_queue_in_order_and_can_be_read() {
    let s = setup(StatusQueueBounds::default()).await;
    // A fresh deployment: nothing but the relay has declared anything.
    let relay = s.start_relay();
    let ids = s.write_events(3).await;
    let events = s.read_events(3).await;
    let read: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(read, ids, "every event, in the order written");
    let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, [1, 2, 3]);
    let remaining: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&s.pool)
        .await
        .unwrap();
    assert_eq!(remaining, 0, "nothing waits in the outbox");
    s.cleanup(relay).await;
}

#[tokio::test]
async fn an_unread_status_queue_keeps_only_the_newest_events_within_its_bound() {
    let s = setup(StatusQueueBounds {
        max_length: 5,
        ttl: Duration::from_millis(800),
    })
    .await;
    let relay = s.start_relay();
    s.status_queue_declared().await;
    let ids = s.write_events(8).await;
    // Full: the oldest go (drop-head). The relay is never refused, so the outbox never backs up.
    eventually(
        "the relay to empty the outbox",
        || s.outbox_rows(),
        |rows| *rows == 0,
    )
    .await;
    let queue = s.topology.status_events_queue();
    let held = s.held().await;
    assert!(held <= 5, "{queue} holds {held}, more than its bound");
    // Unread for longer than the TTL: gone. Until then, only the newest five are there.
    eventually(
        "the events to outlive the TTL",
        || async {
            let message = s
                .channel
                .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
                .await
                .unwrap();
            let message = message?;
            let id = message.delivery.properties.message_id().clone().unwrap();
            assert!(ids[3..].contains(&id.to_string()), "{id} is an old event");
            message
                .nack(lapin::options::BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await
                .unwrap();
            Some(id.to_string())
        },
        Option::is_none,
    )
    .await;
    s.cleanup(relay).await;
}

/// Captures every log line written while it is the thread's subscriber, filtered as the services
/// filter theirs (at debug, so more than a service logs by default).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// For the whole process: lapin logs from threads of its own.
    fn install(&self) {
        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(email2sms_runtime::telemetry::log_filter("debug").unwrap())
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    }

    /// For this thread only: the relay's task runs on the test's (current-thread) runtime.
    fn install_here(&self) -> tracing::subscriber::DefaultGuard {
        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(email2sms_runtime::telemetry::log_filter("debug").unwrap())
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn an_unroutable_event_is_logged_without_its_body_and_goes_out_once_its_home_is_back() {
    let captured = Captured::default();
    captured.install();
    let s = setup(StatusQueueBounds::default()).await;
    let relay = s.start_relay();
    s.status_queue_declared().await;
    // The status queue deleted under the running relay (say, by an operator): nothing takes the
    // event now.
    s.channel
        .queue_delete(
            s.topology.status_events_queue().as_str().into(),
            QueueDeleteOptions::default(),
        )
        .await
        .unwrap();
    let ids = s.write_events(1).await;
    let body: Vec<u8> = sqlx::query_scalar("SELECT payloads[1] FROM outbox")
        .fetch_one(&s.pool)
        .await
        .unwrap();
    // The relay declares the topology again after the refusal, and the next try goes out.
    let read: Vec<String> = s
        .read_events(1)
        .await
        .into_iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(read, ids);

    let logs = captured.text();
    assert!(logs.contains("route"), "the refusal was logged: {logs}");
    let digits = RECIPIENT.trim_start_matches('+');
    assert!(
        !logs.contains(digits),
        "a full phone number in the log: {logs}"
    );
    // lapin's Debug form of a body is its bytes as a list of numbers.
    let as_bytes = format!("{:?}", &body[..16]);
    let as_bytes = as_bytes.trim_matches(|c| c == '[' || c == ']');
    assert!(!logs.contains(as_bytes), "body bytes in the log: {logs}");
    assert!(!logs.contains("is off"), "body text in the log: {logs}");
    s.cleanup(relay).await;
}

#[tokio::test]
async fn a_status_queue_declared_with_another_bound_keeps_it_and_the_relay_still_publishes() {
    let captured = Captured::default();
    let _logs = captured.install_here();
    // The queue as the first service declared it: five events at most.
    let s = setup(StatusQueueBounds {
        max_length: 5,
        ttl: Duration::from_secs(600),
    })
    .await;
    s.topology
        .declare_events(&s.broker.channel().await.unwrap())
        .await
        .expect("the first declaration");
    // A relay whose settings differ: a replica rolled out with the default bound.
    let mut differing = s.relay.clone();
    differing.topology.status_events = StatusQueueBounds::default();
    let other_bound = differing.topology.clone();
    let relay = tokio::spawn(differing.run(s.stop.clone().cancelled_owned()));
    let ids = s.write_events(8).await;
    eventually(
        "the relay with the other bound to publish every event",
        || s.outbox_rows(),
        |rows| *rows == 0,
    )
    .await;
    // The queue kept its own bound: the newest five are there.
    let queue = s.topology.status_events_queue();
    let held = s.held().await;
    assert_eq!(held, 5, "{queue} holds {held}");
    let read: Vec<String> = s
        .read_status_queue()
        .await
        .into_iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(read, ids[3..], "the newest five, in order");
    // From now on this process only checks that the queue is there.
    other_bound
        .declare_events(&s.broker.channel().await.unwrap())
        .await
        .expect("a declaration with the other bound, once the queue is known to keep its own");
    let logs = captured.text();
    assert_eq!(
        logs.matches("it keeps its own").count(),
        1,
        "one error, naming the argument: {logs}"
    );
    assert!(logs.contains("x-max-length"), "{logs}");

    // Deleted by an operator, the queue comes back with the settings of who declares it next.
    s.channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    let gone = other_bound
        .declare_events(&s.broker.channel().await.unwrap())
        .await;
    assert!(gone.is_err(), "the kept queue is missing: {gone:?}");
    other_bound
        .declare_events(&s.broker.channel().await.unwrap())
        .await
        .expect("declared anew with this process's bound");
    let first_bound = s
        .topology
        .declare_events(&s.broker.channel().await.unwrap())
        .await;
    assert!(
        matches!(
            first_bound,
            Err(email2sms_queue::QueueError::InequivalentArguments { .. })
        ),
        "now the five-event bound is the one that differs: {first_bound:?}"
    );
    s.cleanup(relay).await;
}
