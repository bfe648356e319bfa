//! The transactional outbox: a service writes its events into its own `outbox` table in the same
//! transaction as the state change, and the relay publishes them afterwards. A crash between the
//! commit and the publish therefore loses nothing; it can only publish twice, and each event's
//! `message_id` lets consumers drop the duplicate.
//!
//! One row holds all the events one [`enqueue_many`] call wrote, in order (`message_ids`,
//! `routing_keys`, `payloads` are parallel arrays of `event_count` elements), so a service that
//! records hundreds of state changes per transaction writes one row, not hundreds: at dispatch's
//! rate a row per event (its insert, index entries, lock and delete) was the largest share of the
//! database's work. The table (one per service schema) has the columns `id, message_ids,
//! routing_keys, payloads, event_count, created_at, attempts, last_error`, as
//! [`crate::outbox_table`] pins them for every service's migrations. A row is deleted once
//! the broker has confirmed every event in it; what stays is what has not gone out yet, with the
//! last error of each try.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lapin::types::FieldTable;
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::Topology;
use crate::broker::{Outgoing, Publisher};
use crate::{QueueError, message_type};

/// Writes an event into the outbox of the current schema, inside the caller's transaction, and
/// wakes the relay once that transaction commits. `message_id` is the event's own id: it goes out as
/// the AMQP message-id, so a consumer that sees the event twice can tell.
pub async fn enqueue(
    conn: &mut PgConnection,
    message_id: Uuid,
    routing_key: &str,
    payload: &[u8],
) -> Result<(), sqlx::Error> {
    enqueue_many(
        conn,
        &[OutboxEvent {
            message_id,
            routing_key,
            payload: payload.to_vec(),
        }],
    )
    .await
}

/// One event for [`enqueue_many`].
#[derive(Debug, Clone)]
pub struct OutboxEvent<'a> {
    pub message_id: Uuid,
    pub routing_key: &'a str,
    pub payload: Vec<u8>,
}

/// [`enqueue`] for many events at once: one row however many there are, which is what lets a
/// service that records state changes in batches keep up. Events keep their order.
pub async fn enqueue_many(
    conn: &mut PgConnection,
    events: &[OutboxEvent<'_>],
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    if let Some(unknown) = events
        .iter()
        .find(|e| message_type(e.routing_key).is_none())
    {
        // A programming error, refused here so it cannot block the relay later.
        return Err(sqlx::Error::Protocol(format!(
            "no event type is known for routing key {}",
            unknown.routing_key
        )));
    }
    let ids: Vec<Uuid> = events.iter().map(|e| e.message_id).collect();
    let keys: Vec<&str> = events.iter().map(|e| e.routing_key).collect();
    let payloads: Vec<&[u8]> = events.iter().map(|e| e.payload.as_slice()).collect();
    let count = i32::try_from(events.len()).unwrap_or(i32::MAX);
    // NOTIFY is delivered at commit, and never if the transaction rolls back.
    sqlx::query(
        "WITH written AS (
             INSERT INTO outbox (message_ids, routing_keys, payloads, event_count)
             VALUES ($1, $2, $3, $4)
         )
         SELECT pg_notify(current_schema() || '_outbox', '')",
    )
    .bind(&ids)
    .bind(&keys)
    .bind(&payloads)
    .bind(count)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Publishes outbox rows to the events exchange.
#[derive(Debug, Clone)]
pub struct OutboxRelay {
    pub pool: PgPool,
    pub publisher: Arc<Publisher>,
    pub topology: Topology,
    /// Events published per round (a row is never split, so a round holds at least one row
    /// however many events it has).
    pub batch: i64,
    /// How often to look even without a notification (one may be missed while reconnecting).
    pub poll_interval: Duration,
}

/// One transaction's events, as [`enqueue_many`] wrote them.
#[derive(Debug, sqlx::FromRow)]
struct OutboxRow {
    id: i64,
    message_ids: Vec<Uuid>,
    routing_keys: Vec<String>,
    payloads: Vec<Vec<u8>>,
}

/// What one round of the relay did.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Round {
    /// Events confirmed and deleted.
    published: usize,
    /// Rows were left for the next round (the round was full, or another replica is relaying).
    more: bool,
    /// A row failed (why, without any event's body): it and the rows after it wait for the next
    /// try.
    stuck: Option<String>,
}

/// The advisory lock class of outbox relays (the two-key form, so no single-key lock a service
/// takes can ever collide with it); the second key is the schema's hash.
pub const RELAY_LOCK_CLASS: i32 = 0x0e25_0b0c;

impl OutboxRelay {
    /// Publishes one round of unpublished rows, oldest first, and returns how many events went
    /// out. One relay at a time per schema (a transaction-level advisory lock): the others find
    /// nothing to do, so two replicas never publish the same row at once, and rows go out in the
    /// order they were written. A row whose publish fails stays with its error recorded, and so do
    /// the rows after it: they go again next time, in order. No event waits for a subscriber:
    /// [`Topology::declare_events`], which the relay runs before its first round and again after
    /// every failed one, gives every event type a queue (status events a bounded one). A row is
    /// unroutable only when such a queue was deleted under a running relay; the relay logs that
    /// (routing key only, never the body), declares the topology again and sends the row on its
    /// next try, after the back-off (200 ms, doubling to 30 s) rather than on every commit.
    ///
    /// The round is published in order on one channel without waiting for each confirm in turn
    /// (the confirms are awaited together), so a busy service's events do not queue up behind one
    /// broker round trip each. The price is paid on a failure: the rows after the failed one were
    /// sent too and go again behind it, so a consumer may see an event twice (its id tells) and a
    /// later event of a subject before an earlier one (its sequence tells).
    pub async fn publish_pending(&self) -> Result<usize, QueueError> {
        self.publish_round().await.map(|round| round.published)
    }

    async fn publish_round(&self) -> Result<Round, QueueError> {
        let mut tx = self.pool.begin().await?;
        let relaying: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1, hashtext(current_schema()))")
                .bind(RELAY_LOCK_CLASS)
                .fetch_one(&mut *tx)
                .await?;
        if !relaying {
            // The replica holding the lock publishes these (it hears the same notifications).
            return Ok(Round {
                published: 0,
                more: false,
                stuck: None,
            });
        }
        let sizes: Vec<(i64, i32)> =
            sqlx::query_as("SELECT id, event_count FROM outbox ORDER BY id LIMIT $1")
                .bind(self.batch.max(1))
                .fetch_all(&mut *tx)
                .await?;
        let mut budget = self.batch.max(1);
        let taken: Vec<i64> = sizes
            .iter()
            .enumerate()
            .take_while(|(position, (_, count))| {
                let fits = *position == 0 || i64::from(*count) <= budget;
                budget -= i64::from(*count);
                fits
            })
            .map(|(_, (id, _))| *id)
            .collect();
        let more = taken.len() < sizes.len() || sizes.len() as i64 == self.batch.max(1);
        let rows: Vec<OutboxRow> = sqlx::query_as(
            "SELECT id, message_ids, routing_keys, payloads FROM outbox
             WHERE id = ANY($1) ORDER BY id",
        )
        .bind(&taken)
        .fetch_all(&mut *tx)
        .await?;
        let exchange = self.topology.events_exchange();
        // Events whose routing key has no event type cannot go out (a programming error): their
        // row stays, with the reason, like one the broker refused.
        // Per row: how many of its events were sent, and why any of them could not be.
        let mut planned: Vec<(i64, usize, Option<QueueError>)> = Vec::with_capacity(rows.len());
        let mut messages = Vec::new();
        for row in &rows {
            let mut refused = None;
            let mut sending = 0;
            if row.message_ids.len() != row.routing_keys.len()
                || row.message_ids.len() != row.payloads.len()
            {
                refused = Some(QueueError::NotSent {
                    routing_key: String::new(),
                    cause: "the row's arrays differ in length".into(),
                });
            } else {
                for ((message_id, routing_key), payload) in row
                    .message_ids
                    .iter()
                    .zip(&row.routing_keys)
                    .zip(&row.payloads)
                {
                    let Some(message_type) = message_type(routing_key) else {
                        refused.get_or_insert(QueueError::UnknownRoutingKey(routing_key.clone()));
                        continue;
                    };
                    sending += 1;
                    messages.push(Outgoing {
                        exchange: &exchange,
                        routing_key,
                        payload,
                        message_id: message_id.to_string(),
                        message_type,
                        headers: FieldTable::default(),
                    });
                }
            }
            planned.push((row.id, sending, refused));
        }
        // In order on one channel: consumers see a subject's events in the order they were written.
        let mut sent = self.publisher.publish_in_order(messages).await.into_iter();
        let mut published = Vec::new();
        let mut published_events = 0;
        let mut failed_ids = Vec::new();
        let mut failed_errors = Vec::new();
        let mut failure = None;
        for (id, sending, refused) in planned {
            let mut row_error = refused;
            for _ in 0..sending {
                let outcome = sent.next().unwrap_or_else(|| {
                    Err(QueueError::NotSent {
                        routing_key: String::new(),
                        cause: "no outcome was reported for it".into(),
                    })
                });
                if let Err(error) = outcome {
                    row_error.get_or_insert(error);
                }
            }
            match row_error {
                // Only the rows before the first failure count as out: the ones after it go again
                // next round, behind the failed one (the repeats carry their ids).
                None if failure.is_none() => {
                    published.push(id);
                    published_events += sending;
                }
                None => {}
                Some(error) => {
                    failed_ids.push(id);
                    failed_errors.push(error.to_string());
                    failure.get_or_insert(error);
                }
            }
        }
        sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
            .bind(&published)
            .execute(&mut *tx)
            .await?;
        if !failed_ids.is_empty() {
            sqlx::query(
                "UPDATE outbox o SET attempts = o.attempts + 1, last_error = f.error
                 FROM UNNEST($1::bigint[], $2::text[]) AS f(id, error) WHERE o.id = f.id",
            )
            .bind(&failed_ids)
            .bind(&failed_errors)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        match failure {
            Some(error) if published.is_empty() => Err(error),
            failure => Ok(Round {
                published: published_events,
                more: more && failure.is_none(),
                stuck: failure.map(|error| error.to_string()),
            }),
        }
    }

    /// Relays until `shutdown` resolves: after every notification, every `poll_interval`, and
    /// with back-off while the broker is unreachable.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let channel = self.listen_channel().await;
        let mut listener = None;
        let mut declared = false;
        let mut backoff = Duration::from_millis(200);
        let mut sampled: Option<tokio::time::Instant> = None;
        loop {
            if sampled.is_none_or(|at| at.elapsed() >= crate::outbox_metrics::SAMPLE_INTERVAL) {
                // After the rounds of the last wake-up, at most every 15 s: what is left waiting.
                if let Err(error) = crate::outbox_metrics::sample(&self.pool).await {
                    tracing::debug!(%error, "cannot read the outbox's backlog");
                }
                sampled = Some(tokio::time::Instant::now());
            }
            if listener.is_none() {
                listener = match PgListener::connect_with(&self.pool).await {
                    Ok(mut l) => match l.listen(&channel).await {
                        Ok(()) => Some(l),
                        Err(error) => {
                            tracing::warn!(%error, "outbox relay cannot LISTEN; polling instead");
                            None
                        }
                    },
                    Err(error) => {
                        tracing::warn!(%error, "outbox relay cannot LISTEN; polling instead");
                        None
                    }
                };
            }
            let mut wait = self.poll_interval;
            // After a failure only the back-off wakes the relay: every commit notifies, and each
            // would otherwise send the stuck rows (and all behind them) again at once.
            let mut backing_off = false;
            loop {
                if !declared {
                    // The exchange must exist before the first publish, and the broker may have
                    // been down when the service started.
                    match self.declare().await {
                        Ok(()) => declared = true,
                        Err(error) => {
                            tracing::warn!(%error, retry_in = ?backoff, "outbox relay cannot reach RabbitMQ");
                            wait = backoff;
                            backing_off = true;
                            backoff = (backoff * 2).min(Duration::from_secs(30));
                            break;
                        }
                    }
                }
                match self.publish_round().await {
                    Ok(Round {
                        stuck: Some(error), ..
                    }) => {
                        tracing::warn!(%error, retry_in = ?backoff, "outbox relay: a row could not be published; it and the rows after it wait");
                        wait = backoff;
                        backing_off = true;
                        // Perhaps unroutable: a queue of the topology deleted under us comes back.
                        declared = false;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                        break;
                    }
                    Ok(Round { more: true, .. }) => continue,
                    Ok(Round { more: false, .. }) => {
                        backoff = Duration::from_millis(200);
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(%error, retry_in = ?backoff, "outbox relay could not publish");
                        wait = backoff;
                        backing_off = true;
                        declared = false;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                        break;
                    }
                }
            }
            let notified = async {
                match listener.as_mut() {
                    Some(l) if !backing_off => l.recv().await.map(drop),
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(wait) => {}
                result = notified => {
                    if result.is_err() {
                        listener = None;
                    }
                }
            }
        }
    }

    async fn declare(&self) -> Result<(), QueueError> {
        let declare = async || {
            let channel = self.publisher.broker().channel().await?;
            self.topology.declare_events(&channel).await?;
            let _ = channel.close(200, "declared".into()).await;
            Ok(())
        };
        match declare().await {
            // The queue keeps its arguments (logged once); declared again on a new channel, it is
            // only checked to exist, so the relay goes on at once.
            Err(QueueError::InequivalentArguments { .. }) => declare().await,
            declared => declared,
        }
    }

    async fn listen_channel(&self) -> String {
        let schema: Result<String, _> = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&self.pool)
            .await;
        format!("{}_outbox", schema.unwrap_or_else(|_| "public".into()))
    }
}

/// A relay running in the background.
#[derive(Debug)]
pub struct RelayHandle {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl RelayHandle {
    /// Stops the relay once its current batch is done. Call it last at shutdown, so the events of
    /// the final state changes still go out.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Err(error) = self.task.await {
            tracing::error!(%error, "the outbox relay failed");
        }
    }
}

/// Starts the relay of a service's outbox in the background.
pub fn spawn_relay(pool: PgPool, args: &crate::QueueArgs, service: &str) -> RelayHandle {
    let broker = crate::Broker::new(args.amqp_url.clone(), format!("{service} outbox"));
    let relay = OutboxRelay {
        pool,
        publisher: Arc::new(Publisher::new(broker, Duration::from_secs(10))),
        topology: args.topology(),
        batch: 500,
        poll_interval: Duration::from_secs(5),
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(relay.run(stop.clone().cancelled_owned()));
    RelayHandle { stop, task }
}
