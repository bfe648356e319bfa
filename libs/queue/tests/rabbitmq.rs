//! The queue library against the real RabbitMQ on 127.0.0.1:5672. Every test uses its own name
//! prefix, so tests run in parallel on one broker and never see each other's messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use email2sms_queue::outbox::{OutboxEvent, OutboxRelay, enqueue, enqueue_many};
use email2sms_queue::outbox_table::{create_outbox_table_sql, outbox_table_differences};
use email2sms_queue::topology::{SMS_JOB_ROUTING_KEY, Topology};
use email2sms_queue::{Broker, Disposition, Outgoing, Publisher, QueueError, run_consumer};
use email2sms_testkit::TestDb;
use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicGetOptions, ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use tokio_util::sync::CancellationToken;

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const EVENT: &str = email2sms_proto::queue::v1::SENDER_IP_SEEN_ROUTING_KEY;

fn topology(retry_delays: Vec<Duration>, delivery_limit: u32) -> Topology {
    Topology {
        prefix: format!("test.{}.", uuid::Uuid::new_v4().simple()),
        retry_delays,
        delivery_limit,
        ..Topology::default()
    }
}

fn broker(name: &str) -> Arc<Broker> {
    Broker::new(
        AMQP_URL,
        format!("{name}-{}", uuid::Uuid::new_v4().simple()),
    )
}

/// Removes every queue and exchange of a test's topology (and `extra` queues), so repeated runs
/// leave nothing behind on the broker.
async fn cleanup(channel: &Channel, topology: &Topology, extra: &[String]) {
    let mut queues = topology.job_path_queues();
    // What declaring the events exchange declares too.
    queues.push(topology.status_events_queue());
    queues.push(topology.policy_events_queue());
    queues.extend(extra.iter().cloned());
    for queue in queues {
        let _ = channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    for exchange in [
        topology.jobs_exchange(),
        topology.retry_exchange(),
        topology.dead_exchange(),
        topology.events_exchange(),
    ] {
        let _ = channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
}

fn job<'a>(topology_exchange: &'a str, payload: &'a [u8], id: &str) -> Outgoing<'a> {
    Outgoing {
        exchange: topology_exchange,
        routing_key: SMS_JOB_ROUTING_KEY,
        payload,
        message_id: id.to_owned(),
        message_type: email2sms_proto::queue::v1::SMS_JOB_TYPE,
        headers: FieldTable::default(),
    }
}

/// Consumes the topology's job queue in the background, declaring the jobs topology on every
/// connection as ingest and dispatch do.
fn spawn_job_consumer<H, Fut>(
    broker: Arc<Broker>,
    topology: &Topology,
    prefetch: u16,
    handler: H,
    token: &CancellationToken,
) -> tokio::task::JoinHandle<()>
where
    H: Fn(lapin::message::Delivery) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Disposition> + Send + 'static,
{
    let declared = topology.clone();
    tokio::spawn(run_consumer(
        broker,
        topology.jobs_queue(),
        prefetch,
        move |channel| {
            let topology = declared.clone();
            async move { topology.declare_jobs(&channel).await }
        },
        handler,
        token.clone(),
    ))
}

/// Waits up to `limit` for a message on `queue`, acking it.
async fn get(
    channel: &Channel,
    queue: &str,
    limit: Duration,
) -> Option<lapin::message::BasicGetMessage> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(message) = channel
            .basic_get(queue.into(), BasicGetOptions::default())
            .await
            .unwrap()
        {
            message.ack(BasicAckOptions::default()).await.unwrap();
            return Some(message);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn topology_is_idempotent_and_a_disagreeing_declaration_fails_loudly() {
    let topology = topology(vec![Duration::from_secs(1)], 5);
    let broker = broker("topology");
    topology
        .declare_jobs(&broker.channel().await.unwrap())
        .await
        .unwrap();
    // What ingest and dispatch both do at start.
    topology
        .declare_jobs(&broker.channel().await.unwrap())
        .await
        .unwrap();

    let drifted = Topology {
        delivery_limit: 6,
        ..topology.clone()
    };
    let error = drifted
        .declare_jobs(&broker.channel().await.unwrap())
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("PRECONDITION_FAILED")
            || error.to_string().contains("inequivalent"),
        "{error}"
    );
    cleanup(&broker.channel().await.unwrap(), &topology, &[]).await;
}

#[tokio::test]
async fn a_confirmed_job_is_persistent_and_carries_its_ids() {
    let topology = topology(vec![], 5);
    let broker = broker("publish");
    let channel = broker.channel().await.unwrap();
    topology.declare_jobs(&channel).await.unwrap();
    let publisher = Publisher::new(broker.clone(), Duration::from_secs(5));
    let exchange = topology.jobs_exchange();
    publisher
        .publish(job(&exchange, b"payload", "job-1"))
        .await
        .unwrap();

    let message = get(&channel, &topology.jobs_queue(), Duration::from_secs(5))
        .await
        .expect("the confirmed job is in the queue");
    assert_eq!(message.delivery.data, b"payload");
    let properties = &message.delivery.properties;
    assert_eq!(*properties.delivery_mode(), Some(2), "persistent");
    assert_eq!(
        properties.message_id().as_ref().map(|s| s.as_str()),
        Some("job-1")
    );
    assert_eq!(
        properties.kind().as_ref().map(|s| s.as_str()),
        Some(email2sms_proto::queue::v1::SMS_JOB_TYPE)
    );
    cleanup(&channel, &topology, &[]).await;
}

#[tokio::test]
async fn a_message_no_queue_takes_is_an_error_not_a_success() {
    let topology = topology(vec![], 5);
    let broker = broker("unroutable");
    topology
        .declare_events(&broker.channel().await.unwrap())
        .await
        .unwrap();
    let publisher = Publisher::new(broker.clone(), Duration::from_secs(5));
    // Every event type's key has a queue in the topology; this key has none.
    let error = publisher
        .publish(Outgoing {
            exchange: &topology.events_exchange(),
            routing_key: "nobody.listens",
            payload: b"x",
            message_id: "e-1".into(),
            message_type: "t",
            headers: FieldTable::default(),
        })
        .await
        .unwrap_err();
    assert!(matches!(error, QueueError::Unroutable { .. }), "{error}");
    cleanup(&broker.channel().await.unwrap(), &topology, &[]).await;
}

#[tokio::test]
async fn a_batch_in_order_reports_exactly_the_unroutable_messages_and_keeps_the_order() {
    let topology = topology(vec![], 5);
    let broker = broker("in-order");
    let channel = broker.channel().await.unwrap();
    // sender.ip_seen has a queue; a routing key no event type uses has none, so the messages
    // with it in between are unroutable (every event type's key has a queue in the topology).
    let queue = format!("{}ip-seen", topology.prefix);
    topology
        .declare_event_queue(&channel, &queue, &[EVENT])
        .await
        .unwrap();
    let unroutable = "nobody.listens";
    let exchange = topology.events_exchange();
    let keys: Vec<&str> = (0..60)
        .map(|n| if n % 3 == 1 { unroutable } else { EVENT })
        .collect();
    let payloads: Vec<Vec<u8>> = (0..60u8).map(|n| vec![n]).collect();
    let messages = keys
        .iter()
        .zip(&payloads)
        .enumerate()
        .map(|(n, (key, payload))| Outgoing {
            exchange: &exchange,
            routing_key: key,
            payload,
            message_id: format!("event-{n}"),
            message_type: "t",
            headers: FieldTable::default(),
        })
        .collect();
    let publisher = Publisher::new(broker.clone(), Duration::from_secs(5));
    let outcomes = publisher.publish_in_order(messages).await;
    for (n, outcome) in outcomes.iter().enumerate() {
        if n % 3 == 1 {
            assert!(
                matches!(outcome, Err(QueueError::Unroutable { .. })),
                "message {n} has no queue: {outcome:?}"
            );
        } else {
            assert!(outcome.is_ok(), "message {n} was routed: {outcome:?}");
        }
    }
    let mut received = Vec::new();
    while let Some(message) = channel
        .basic_get(queue.as_str().into(), BasicGetOptions::default())
        .await
        .unwrap()
    {
        message.ack(BasicAckOptions::default()).await.unwrap();
        received.push(message.delivery.data[0]);
    }
    let expected: Vec<u8> = (0..60u8).filter(|n| n % 3 != 1).collect();
    assert_eq!(received, expected, "every routed message, once, in order");
    cleanup(&channel, &topology, &[queue]).await;
}

#[tokio::test]
async fn a_retry_tier_returns_the_job_to_the_queue_after_its_delay() {
    let delay = Duration::from_millis(300);
    let topology = topology(vec![delay], 5);
    let broker = broker("retry");
    let channel = broker.channel().await.unwrap();
    topology.declare_jobs(&channel).await.unwrap();
    let publisher = Publisher::new(broker.clone(), Duration::from_secs(5));
    let exchange = topology.retry_exchange();
    let tier = topology.retry_tier(delay);
    publisher
        .publish(Outgoing {
            routing_key: &tier,
            ..job(&exchange, b"again", "job-r")
        })
        .await
        .unwrap();
    let back = get(&channel, &topology.jobs_queue(), Duration::from_secs(10))
        .await
        .expect("the job comes back after the tier's delay");
    assert_eq!(back.delivery.data, b"again");
    cleanup(&channel, &topology, &[]).await;
}

#[tokio::test]
async fn a_poison_job_is_dead_lettered_after_the_delivery_limit() {
    let topology = topology(vec![], 2);
    let broker = broker("poison");
    let channel = broker.channel().await.unwrap();
    topology.declare_jobs(&channel).await.unwrap();
    let publisher = Publisher::new(broker.clone(), Duration::from_secs(5));
    let exchange = topology.jobs_exchange();
    publisher
        .publish(job(&exchange, b"poison", "job-p"))
        .await
        .unwrap();

    let attempts = Arc::new(AtomicUsize::new(0));
    let token = CancellationToken::new();
    let consumer = {
        let attempts = attempts.clone();
        spawn_job_consumer(
            broker.clone(),
            &topology,
            4,
            move |_delivery| {
                let attempts = attempts.clone();
                async move {
                    attempts.fetch_add(1, Ordering::SeqCst);
                    Disposition::Requeue
                }
            },
            &token,
        )
    };
    let dead = get(&channel, &topology.dead_queue(), Duration::from_secs(20))
        .await
        .expect("the poison job reaches the dead-letter queue");
    assert_eq!(dead.delivery.data, b"poison");
    assert!(attempts.load(Ordering::SeqCst) >= 2);
    token.cancel();
    consumer.await.unwrap();
    cleanup(&channel, &topology, &[]).await;
}

/// The name RabbitMQ shows for our connection, to close it from outside like a broker restart.
fn close_connection_named(name: &str) {
    let output = std::process::Command::new("rabbitmqctl")
        .args(["-q", "list_connections", "pid", "client_properties"])
        .output()
        .expect("rabbitmqctl is installed with RabbitMQ");
    let listing = String::from_utf8_lossy(&output.stdout);
    let pid = listing
        .lines()
        .find(|line| line.contains(name))
        .and_then(|line| line.split_whitespace().next())
        .unwrap_or_else(|| panic!("no connection named {name} in:\n{listing}"))
        .to_owned();
    let status = std::process::Command::new("rabbitmqctl")
        .args([
            "-q",
            "close_connection",
            &pid,
            "test: simulated broker failure",
        ])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn a_consumer_reconnects_by_itself_after_losing_its_connection() {
    let topology = topology(vec![], 5);
    let name = format!("reconnect-{}", uuid::Uuid::new_v4().simple());
    let consumer_broker = Broker::new(AMQP_URL, name.clone());
    let publisher_broker = broker("reconnect-publisher");
    let publisher = Publisher::new(publisher_broker.clone(), Duration::from_secs(5));
    topology
        .declare_jobs(&publisher_broker.channel().await.unwrap())
        .await
        .unwrap();
    let exchange = topology.jobs_exchange();

    let handled = Arc::new(AtomicUsize::new(0));
    let token = CancellationToken::new();
    let consumer = {
        let handled = handled.clone();
        spawn_job_consumer(
            consumer_broker,
            &topology,
            8,
            move |_delivery| {
                let handled = handled.clone();
                async move {
                    handled.fetch_add(1, Ordering::SeqCst);
                    Disposition::Ack
                }
            },
            &token,
        )
    };
    let wait_for = |n: usize| {
        let handled = handled.clone();
        async move {
            for _ in 0..400 {
                if handled.load(Ordering::SeqCst) >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("handled {} of {n}", handled.load(Ordering::SeqCst));
        }
    };
    for i in 0..5 {
        publisher
            .publish(job(&exchange, b"before", &format!("b{i}")))
            .await
            .unwrap();
    }
    wait_for(5).await;

    close_connection_named(&name);
    for i in 0..5 {
        publisher
            .publish(job(&exchange, b"after", &format!("a{i}")))
            .await
            .unwrap();
    }
    wait_for(10).await;
    assert_eq!(handled.load(Ordering::SeqCst), 10, "nothing handled twice");
    token.cancel();
    consumer.await.unwrap();
    cleanup(&publisher_broker.channel().await.unwrap(), &topology, &[]).await;
}

#[tokio::test]
async fn shutdown_lets_in_flight_deliveries_finish_and_settle() {
    let topology = topology(vec![], 5);
    let broker = broker("drain");
    let channel = broker.channel().await.unwrap();
    topology.declare_jobs(&channel).await.unwrap();
    let publisher = Publisher::new(broker.clone(), Duration::from_secs(5));
    let exchange = topology.jobs_exchange();
    for i in 0..3 {
        publisher
            .publish(job(&exchange, b"slow", &format!("s{i}")))
            .await
            .unwrap();
    }
    let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel();
    let finished = Arc::new(AtomicUsize::new(0));
    let token = CancellationToken::new();
    let consumer = {
        let finished = finished.clone();
        spawn_job_consumer(
            broker.clone(),
            &topology,
            8,
            move |_delivery| {
                let finished = finished.clone();
                let started = started_tx.clone();
                async move {
                    let _ = started.send(());
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    finished.fetch_add(1, Ordering::SeqCst);
                    Disposition::Ack
                }
            },
            &token,
        )
    };
    for _ in 0..3 {
        started_rx.recv().await.unwrap();
    }
    token.cancel();
    tokio::time::timeout(Duration::from_secs(10), consumer)
        .await
        .expect("the consumer stops once in-flight work is done")
        .unwrap();
    assert_eq!(
        finished.load(Ordering::SeqCst),
        3,
        "in-flight work finished"
    );
    assert!(
        get(&channel, &topology.jobs_queue(), Duration::from_millis(500))
            .await
            .is_none(),
        "every finished delivery was acked, none requeued"
    );
    cleanup(&channel, &topology, &[]).await;
}

/// The table the tests here create is the one the shape describes, so the relay is tested against
/// what every service is held to.
#[tokio::test]
async fn the_test_outbox_table_has_the_expected_shape() {
    let db = TestDb::create().await;
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(
        outbox_table_differences(&mut conn).await.unwrap(),
        vec!["there is no outbox table in the schema"]
    );
    sqlx::query(&create_outbox_table_sql())
        .execute(&mut *conn)
        .await
        .unwrap();
    assert_eq!(
        outbox_table_differences(&mut conn).await.unwrap(),
        Vec::<String>::new()
    );
    // The per-event table every service had before 20261127 is told apart.
    sqlx::query("ALTER TABLE outbox ADD COLUMN published_at timestamptz")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("ALTER TABLE outbox ALTER COLUMN attempts DROP DEFAULT")
        .execute(&mut *conn)
        .await
        .unwrap();
    assert_eq!(
        outbox_table_differences(&mut conn).await.unwrap(),
        vec![
            "column attempts has default none, not Expression(\"0\")",
            "column published_at is not part of the outbox",
        ]
    );
}

#[tokio::test]
async fn outbox_events_survive_a_broker_outage_and_are_published_once() {
    let db = TestDb::create().await;
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    sqlx::query(&create_outbox_table_sql())
        .execute(&pool)
        .await
        .unwrap();
    let topology = topology(vec![], 5);
    let broker = broker("outbox");
    let channel = broker.channel().await.unwrap();
    let queue = format!("{}policy.events", topology.prefix);
    topology
        .declare_event_queue(&channel, &queue, &[EVENT])
        .await
        .unwrap();

    let mut ids = Vec::new();
    let mut tx = pool.begin().await.unwrap();
    for i in 0..3u8 {
        let id = uuid::Uuid::new_v4();
        enqueue(&mut tx, id, EVENT, &[i]).await.unwrap();
        ids.push(id.to_string());
    }
    tx.commit().await.unwrap();
    let mut rolled_back = pool.begin().await.unwrap();
    enqueue(&mut rolled_back, uuid::Uuid::new_v4(), EVENT, b"never")
        .await
        .unwrap();
    rolled_back.rollback().await.unwrap();

    // The broker is unreachable: nothing is lost, the failure is recorded on the row.
    let down = OutboxRelay {
        pool: pool.clone(),
        publisher: Arc::new(Publisher::new(
            Broker::new("amqp://guest:guest@127.0.0.1:1/%2f", "down"),
            Duration::from_secs(2),
        )),
        topology: topology.clone(),
        batch: 100,
        poll_interval: Duration::from_secs(1),
    };
    assert!(down.publish_pending().await.is_err());
    let (waiting, recorded): (i64, i64) = sqlx::query_as(
        "SELECT sum(event_count), count(*) FILTER (WHERE last_error IS NOT NULL) FROM outbox",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (waiting, recorded),
        (3, 3),
        "still waiting; every row says why"
    );
    // The backlog gauges see the three rows waiting, the oldest of them aged.
    let gauges = email2sms_queue::outbox_metrics::outbox_metrics();
    email2sms_queue::outbox_metrics::sample(&pool)
        .await
        .unwrap();
    assert_eq!(gauges.rows.get(), 3);
    assert!(gauges.oldest_age_seconds.get() > 0.0);

    // The broker is back: each event goes out exactly once, in order.
    let relay = OutboxRelay {
        publisher: Arc::new(Publisher::new(broker.clone(), Duration::from_secs(5))),
        ..down
    };
    assert_eq!(relay.publish_pending().await.unwrap(), 3);
    assert_eq!(relay.publish_pending().await.unwrap(), 0);
    assert_eq!(drain_message_ids(&channel, &queue).await, ids);
    email2sms_queue::outbox_metrics::sample(&pool)
        .await
        .unwrap();
    assert_eq!(
        (gauges.rows.get(), gauges.oldest_age_seconds.get()),
        (0, 0.0)
    );
    cleanup(&channel, &topology, &[queue]).await;
}

/// The message ids of everything waiting in `queue`, in order.
async fn drain_message_ids(channel: &Channel, queue: &str) -> Vec<String> {
    let mut received = Vec::new();
    while let Some(message) = get(channel, queue, Duration::from_millis(500)).await {
        received.push(
            message
                .delivery
                .properties
                .message_id()
                .as_ref()
                .unwrap()
                .to_string(),
        );
    }
    received
}

#[tokio::test]
async fn rows_go_out_whole_and_in_order_within_the_event_budget_one_relay_at_a_time() {
    let db = TestDb::create().await;
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    sqlx::query(&create_outbox_table_sql())
        .execute(&pool)
        .await
        .unwrap();
    let topology = topology(vec![], 5);
    let broker = broker("outbox-rows");
    let channel = broker.channel().await.unwrap();
    let queue = format!("{}rows.events", topology.prefix);
    topology
        .declare_event_queue(&channel, &queue, &[EVENT])
        .await
        .unwrap();

    // Three transactions of 3, 1 and 2 events: three rows.
    let mut ids = Vec::new();
    for size in [3u8, 1, 2] {
        let events: Vec<OutboxEvent<'_>> = (0..size)
            .map(|i| OutboxEvent {
                message_id: uuid::Uuid::now_v7(),
                routing_key: EVENT,
                payload: vec![size, i],
            })
            .collect();
        ids.extend(events.iter().map(|e| e.message_id.to_string()));
        let mut tx = pool.begin().await.unwrap();
        enqueue_many(&mut tx, &events).await.unwrap();
        tx.commit().await.unwrap();
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 3, "one row per transaction");

    let relay = OutboxRelay {
        pool: pool.clone(),
        publisher: Arc::new(Publisher::new(broker.clone(), Duration::from_secs(5))),
        topology: topology.clone(),
        batch: 2,
        poll_interval: Duration::from_secs(1),
    };
    // Another replica is relaying: this one leaves the rows to it.
    let mut other_replica = pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))")
        .bind(email2sms_queue::outbox::RELAY_LOCK_CLASS)
        .execute(&mut *other_replica)
        .await
        .unwrap();
    assert_eq!(relay.publish_pending().await.unwrap(), 0);
    assert!(drain_message_ids(&channel, &queue).await.is_empty());
    other_replica.rollback().await.unwrap();

    // A row is never split: the first round takes the 3-event row whole although the budget is 2;
    // the next takes the 1-event row, and the 2-event row no longer fits behind it.
    assert_eq!(relay.publish_pending().await.unwrap(), 3);
    assert_eq!(relay.publish_pending().await.unwrap(), 1);
    assert_eq!(relay.publish_pending().await.unwrap(), 2);
    assert_eq!(relay.publish_pending().await.unwrap(), 0);
    assert_eq!(drain_message_ids(&channel, &queue).await, ids);
    cleanup(&channel, &topology, &[queue]).await;
}

#[tokio::test]
async fn the_relay_publishes_soon_after_commit_without_waiting_for_its_poll() {
    let db = TestDb::create().await;
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    sqlx::query(&create_outbox_table_sql())
        .execute(&pool)
        .await
        .unwrap();
    let topology = topology(vec![], 5);
    let broker = broker("outbox-notify");
    let channel = broker.channel().await.unwrap();
    let queue = format!("{}notify.events", topology.prefix);
    topology
        .declare_event_queue(&channel, &queue, &[EVENT])
        .await
        .unwrap();
    let token = CancellationToken::new();
    let relay = OutboxRelay {
        pool: pool.clone(),
        publisher: Arc::new(Publisher::new(broker.clone(), Duration::from_secs(5))),
        topology: topology.clone(),
        batch: 100,
        // Far longer than the test waits: only the notification can explain a prompt publish.
        poll_interval: Duration::from_secs(3600),
    };
    let running = tokio::spawn({
        let token = token.clone();
        async move { relay.run(token.cancelled_owned()).await }
    });
    // Let the relay reach its wait (its first pass finds nothing).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut tx = pool.begin().await.unwrap();
    enqueue(&mut tx, uuid::Uuid::new_v4(), EVENT, b"prompt")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let message = get(&channel, &queue, Duration::from_secs(10))
        .await
        .expect("published after the commit's notification");
    assert_eq!(message.delivery.data, b"prompt");
    token.cancel();
    running.await.unwrap();
    cleanup(&channel, &topology, &[queue]).await;
}
