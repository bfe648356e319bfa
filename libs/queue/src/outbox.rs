//! The transactional outbox: a service writes its event into its own `outbox` table in the same
//! transaction as the state change, and the relay publishes it afterwards. A crash between the
//! commit and the publish therefore loses nothing; it can only publish twice, and the event's
//! `message_id` lets consumers drop the duplicate.
//!
//! The table (one per service schema) has the columns `id, message_id, routing_key, payload,
//! created_at, published_at, attempts, last_error`. A row is deleted once the broker has confirmed
//! it; what stays is what has not gone out yet, with the last error of each try.

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

/// [`enqueue`] for many events at once: one statement however many there are, which is what lets a
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
    // WITH ORDINALITY keeps the identity column in the callers' order.
    sqlx::query(
        "INSERT INTO outbox (message_id, routing_key, payload)
         SELECT message_id, routing_key, payload
         FROM UNNEST($1::uuid[], $2::text[], $3::bytea[]) WITH ORDINALITY
              AS e(message_id, routing_key, payload, position)
         ORDER BY position",
    )
    .bind(&ids)
    .bind(&keys)
    .bind(&payloads)
    .execute(&mut *conn)
    .await?;
    // NOTIFY is delivered at commit, and never if the transaction rolls back.
    sqlx::query("SELECT pg_notify(current_schema() || '_outbox', '')")
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
    /// Rows published per transaction.
    pub batch: i64,
    /// How often to look even without a notification (one may be missed while reconnecting).
    pub poll_interval: Duration,
}

impl OutboxRelay {
    /// Publishes one batch of unpublished rows, oldest first, and returns how many went out. Rows are
    /// claimed with `SKIP LOCKED`, so several replicas can relay at once without publishing the same
    /// row twice; a row whose publish fails stays unpublished with its error recorded, and so do the
    /// rows after it (they go again next time, in order). A row nobody can take (no queue bound to
    /// its routing key) therefore holds back the rest until a consumer declares its queue: events
    /// wait rather than vanish.
    ///
    /// The batch is published in order on one channel without waiting for each confirm in turn
    /// (the confirms are awaited together), so a busy service's events do not queue up behind one
    /// broker round trip each, and consumers still get them in the order they were written.
    pub async fn publish_pending(&self) -> Result<usize, QueueError> {
        let mut tx = self.pool.begin().await?;
        let rows: Vec<(i64, Uuid, String, Vec<u8>)> = sqlx::query_as(
            "SELECT id, message_id, routing_key, payload FROM outbox \
             WHERE published_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(self.batch)
        .fetch_all(&mut *tx)
        .await?;
        let exchange = self.topology.events_exchange();
        // Rows whose routing key has no event type cannot go out (a programming error); they stay,
        // with the reason, and do not hold up the others.
        let mut outcomes: Vec<Option<Result<(), QueueError>>> = Vec::with_capacity(rows.len());
        let mut messages = Vec::with_capacity(rows.len());
        for (_, message_id, routing_key, payload) in &rows {
            match message_type(routing_key) {
                None => outcomes.push(Some(Err(QueueError::UnknownRoutingKey(
                    routing_key.clone(),
                )))),
                Some(message_type) => {
                    outcomes.push(None);
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
        }
        // In order on one channel: consumers see a subject's events in the order they were written.
        let mut sent = self.publisher.publish_in_order(messages).await.into_iter();
        let outcomes: Vec<Result<(), QueueError>> = outcomes
            .into_iter()
            .map(|known| {
                known.unwrap_or_else(|| {
                    sent.next().unwrap_or_else(|| {
                        Err(QueueError::NotSent {
                            routing_key: String::new(),
                            cause: "no outcome was reported for it".into(),
                        })
                    })
                })
            })
            .collect();
        let mut published = Vec::new();
        let mut failed_ids = Vec::new();
        let mut failed_errors = Vec::new();
        let mut failure = None;
        for ((id, ..), outcome) in rows.iter().zip(outcomes) {
            match outcome {
                // Only the rows before the first failure count as out: the ones after it go again
                // next round, behind the failed one, so no consumer sees a subject's events out
                // of order (the repeats carry their ids, so consumers drop them).
                Ok(()) if failure.is_none() => published.push(*id),
                Ok(()) => {}
                Err(error) => {
                    failed_ids.push(*id);
                    failed_errors.push(error.to_string());
                    failure.get_or_insert(error);
                }
            }
        }
        // Published rows go: keeping them would cost a new row version (and its index entries) per
        // event, which at dispatch's rate is a large share of the database's work.
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
            _ => Ok(published.len()),
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
        loop {
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
            loop {
                if !declared {
                    // The exchange must exist before the first publish, and the broker may have
                    // been down when the service started.
                    match self.declare().await {
                        Ok(()) => declared = true,
                        Err(error) => {
                            tracing::warn!(%error, retry_in = ?backoff, "outbox relay cannot reach RabbitMQ");
                            wait = backoff;
                            backoff = (backoff * 2).min(Duration::from_secs(30));
                            break;
                        }
                    }
                }
                match self.publish_pending().await {
                    Ok(n) if n as i64 == self.batch => continue,
                    Ok(_) => {
                        backoff = Duration::from_millis(200);
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(%error, retry_in = ?backoff, "outbox relay could not publish");
                        wait = backoff;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                        break;
                    }
                }
            }
            let notified = async {
                match listener.as_mut() {
                    Some(l) => l.recv().await.map(drop),
                    None => std::future::pending().await,
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
        let channel = self.publisher.broker().channel().await?;
        self.topology.declare_events(&channel).await?;
        let _ = channel.close(200, "declared".into()).await;
        Ok(())
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
