//! `email2sms queue`: the mailq of this product. The depth of the SMS job queue, of each retry
//! tier and of the dead-letter queue, read with passive declares (which create nothing), and the
//! dead letters themselves: listed with their reasons, replayed to the job queue, or purged.
//!
//! Every name comes from `email2sms_queue::Topology`, built from the same settings the services
//! take (`AMQP_URL`, `EMAIL2SMS_AMQP_PREFIX`, `EMAIL2SMS_RETRY_DELAYS`), so this command can
//! never look at a queue the services do not use.
//!
//! Listing takes each dead letter without acknowledging it and returns them all when the channel
//! closes: nothing is lost if this command dies half-way. RabbitMQ 3.x counts that as a delivery
//! (`x-delivery-count`) but the dead-letter queue has no delivery limit, so listing is harmless
//! (RabbitMQ 4 gives quorum queues a default limit of 20; the dead-letter queue would then need a
//! policy `delivery-limit: -1`). A replay is published with a broker confirm before the dead
//! letter is acknowledged: a crash in between leaves a copy in both queues, never in neither, and
//! dispatch drops duplicate job ids.

use std::sync::Arc;
use std::time::Duration;

use email2sms_proto::prost::Message as _;
use email2sms_proto::queue::v1::{SMS_JOB_TYPE, SmsJob};
use email2sms_queue::broker::{Broker, Outgoing, Publisher};
use email2sms_queue::topology::{DEAD_REASON_HEADER, QueueArgs, SMS_JOB_ROUTING_KEY};
use email2sms_queue::{QueueError, Topology};
use lapin::message::BasicGetMessage;
use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions, QueuePurgeOptions};
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{Value, json};

use crate::error::CliError;
use crate::output::{Column, Output, dispatch as view};

/// Most dead letters one `queue dead list` reads (each is held unacknowledged until it is done).
const MAX_LIST: u32 = 10_000;

#[derive(Debug, clap::Subcommand)]
pub enum QueueCommand {
    /// The dead-letter queue: jobs that can never be sent, or failed too often.
    Dead {
        #[command(subcommand)]
        command: DeadCommand,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum DeadCommand {
    /// List the dead letters with why each was parked (oldest first; nothing is removed).
    List {
        /// Most dead letters to show.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=MAX_LIST as i64))]
        limit: u32,
        #[command(flatten)]
        queue: QueueArgs,
    },
    /// Move one dead letter (by job id), or all of them, back to the job queue.
    Replay {
        /// The job id (the message id of the dead letter).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        job_id: Option<String>,
        /// Replay every dead letter.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        queue: QueueArgs,
    },
    /// Delete every dead letter, for good. Refused without --yes.
    Purge {
        /// Yes, delete them.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        queue: QueueArgs,
    },
}

const DEPTH_COLUMNS: &[Column] = &[
    ("QUEUE", "queue"),
    ("ROLE", "role"),
    ("MESSAGES", "messages"),
    ("CONSUMERS", "consumers"),
];

const DEAD_COLUMNS: &[Column] = &[
    ("JOB", "job_id"),
    ("COMPANY", "job.company_id"),
    ("TO", "job.recipient"),
    ("DELIVERIES", "delivery_count"),
    ("REASON", "reason"),
];

struct Session {
    broker: Arc<Broker>,
    topology: Topology,
}

impl Session {
    fn new(args: &QueueArgs) -> Result<Session, CliError> {
        args.validate()
            .map_err(|error| CliError::Usage(error.to_string()))?;
        Ok(Session {
            broker: Broker::new(args.amqp_url.clone(), "email2sms-cli"),
            topology: args.topology(),
        })
    }

    async fn channel(&self) -> Result<lapin::Channel, CliError> {
        self.broker
            .channel()
            .await
            .map_err(CliError::BrokerUnreachable)
    }

    /// (messages, consumers) of `queue`, or None when it does not exist. A passive declare of a
    /// missing queue closes its channel, so each gets a channel of its own.
    async fn depth(&self, queue: &str) -> Result<Option<(u32, u32)>, CliError> {
        let channel = self.channel().await?;
        let declared = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        match declared {
            Ok(found) => {
                let _ = channel.close(200, "inspected".into()).await;
                Ok(Some((found.message_count(), found.consumer_count())))
            }
            Err(error) if not_found(&error) => Ok(None),
            Err(error) => Err(CliError::Broker {
                what: format!("cannot inspect {queue}"),
                source: QueueError::Amqp(error),
            }),
        }
    }

    /// The dead-letter queue's depth, or a refusal saying it does not exist yet.
    async fn dead_depth(&self) -> Result<u32, CliError> {
        let queue = self.topology.dead_queue();
        match self.depth(&queue).await? {
            Some((messages, _)) => Ok(messages),
            None => Err(CliError::Refusal(format!(
                "{queue} does not exist: no service has declared it (is EMAIL2SMS_AMQP_PREFIX right?)"
            ))),
        }
    }
}

fn not_found(error: &lapin::Error) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    matches!(error.kind(), lapin::ErrorKind::ProtocolError(refusal)
        if *refusal.kind() == AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))
}

fn get_error(source: lapin::Error) -> CliError {
    CliError::Broker {
        what: "cannot read the dead-letter queue".into(),
        source: QueueError::Amqp(source),
    }
}

/// Text of header `name`, if it is a string.
fn header_text(message: &BasicGetMessage, name: &str) -> Option<String> {
    let headers = message.delivery.properties.headers().as_ref()?;
    match headers.inner().get(name)? {
        AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        AMQPValue::ShortString(text) => Some(text.as_str().to_owned()),
        _ => None,
    }
}

/// Why RabbitMQ itself dead-lettered a message without our reason header (`x-death`: the queue
/// and the reason, e.g. `delivery_limit` for a poison job).
fn death_reason(message: &BasicGetMessage) -> Option<String> {
    let headers = message.delivery.properties.headers().as_ref()?;
    let AMQPValue::FieldArray(deaths) = headers.inner().get("x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(first) = deaths.as_slice().first()? else {
        return None;
    };
    let text = |key: &str| match first.inner().get(key) {
        Some(AMQPValue::LongString(t)) => Some(String::from_utf8_lossy(t.as_bytes()).into_owned()),
        Some(AMQPValue::ShortString(t)) => Some(t.as_str().to_owned()),
        _ => None,
    };
    Some(format!(
        "dead-lettered by RabbitMQ ({}) from {}",
        text("reason").unwrap_or_default(),
        text("queue").unwrap_or_default()
    ))
}

fn message_id(message: &BasicGetMessage) -> String {
    message
        .delivery
        .properties
        .message_id()
        .as_ref()
        .map(|id| id.to_string())
        .unwrap_or_default()
}

/// One dead letter as JSON: its id, reason and the job it carries (when it decodes).
fn dead_letter(message: &BasicGetMessage) -> Value {
    let job = SmsJob::decode(message.delivery.data.as_slice()).ok();
    let delivery_count = message
        .delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| match h.inner().get("x-delivery-count") {
            Some(AMQPValue::LongLongInt(n)) => Some(*n),
            Some(AMQPValue::LongInt(n)) => Some(i64::from(*n)),
            _ => None,
        })
        .unwrap_or(0);
    let mut job_id = message_id(message);
    if job_id.is_empty()
        && let Some(job) = &job
    {
        job_id = job.job_id.clone();
    }
    json!({
        "job_id": job_id,
        "reason": header_text(message, DEAD_REASON_HEADER)
            .or_else(|| death_reason(message))
            .unwrap_or_default(),
        "delivery_count": delivery_count,
        "bytes": message.delivery.data.len(),
        "job": job.as_ref().map(view::job),
    })
}

pub async fn status(args: &QueueArgs, output: Output) -> Result<(), CliError> {
    let session = Session::new(args)?;
    let topology = &session.topology;
    let mut rows = Vec::new();
    let mut queues = vec![(topology.jobs_queue(), "jobs".to_owned())];
    for delay in &topology.retry_delays {
        queues.push((
            topology.retry_queue(*delay),
            format!("retry {}", topology.retry_tier(*delay)),
        ));
    }
    queues.push((topology.dead_queue(), "dead letters".to_owned()));
    for (queue, role) in queues {
        let depth = session.depth(&queue).await?;
        rows.push(json!({
            "queue": queue,
            "role": role,
            "exists": depth.is_some(),
            "messages": depth.map(|d| d.0),
            "consumers": depth.map(|d| d.1),
        }));
    }
    if output.json {
        output.one(&json!({ "queues": rows }));
    } else {
        output.table(&rows, DEPTH_COLUMNS);
        if rows.iter().any(|r| r["exists"] == false) {
            println!(
                "(a queue without numbers does not exist yet: dispatch and ingest declare them)"
            );
        }
    }
    Ok(())
}

pub async fn run(command: DeadCommand, output: Output) -> Result<(), CliError> {
    match command {
        DeadCommand::List { limit, queue } => {
            let session = Session::new(&queue)?;
            let depth = session.dead_depth().await?;
            let channel = session.channel().await?;
            let mut letters = Vec::new();
            while letters.len() < limit as usize {
                let Some(message) = channel
                    .basic_get(
                        session.topology.dead_queue().as_str().into(),
                        BasicGetOptions { no_ack: false },
                    )
                    .await
                    .map_err(get_error)?
                else {
                    break;
                };
                letters.push(dead_letter(&message));
            }
            // Closing the channel returns every unacknowledged dead letter to the queue.
            let _ = channel.close(200, "listed".into()).await;
            if output.json {
                output.one(&json!({ "depth": depth, "dead_letters": letters }));
            } else {
                output.table(&letters, DEAD_COLUMNS);
                if depth as usize > letters.len() {
                    println!("({} of {depth} shown; --limit shows more)", letters.len());
                }
            }
            Ok(())
        }
        DeadCommand::Replay { job_id, all, queue } => {
            let session = Session::new(&queue)?;
            let depth = session.dead_depth().await?;
            let publisher =
                Publisher::with_channels(session.broker.clone(), Duration::from_secs(10), 1);
            let channel = session.channel().await?;
            let jobs_exchange = session.topology.jobs_exchange();
            let mut replayed = Vec::new();
            // At most the depth seen at the start: a job dispatch parks again at once comes back
            // to the end of the queue and must not be replayed in a loop.
            for _ in 0..depth {
                let Some(message) = channel
                    .basic_get(
                        session.topology.dead_queue().as_str().into(),
                        BasicGetOptions { no_ack: false },
                    )
                    .await
                    .map_err(get_error)?
                else {
                    break;
                };
                let id = message_id(&message);
                if !all && job_id.as_deref() != Some(id.as_str()) {
                    continue;
                }
                publisher
                    .publish(Outgoing {
                        exchange: &jobs_exchange,
                        routing_key: SMS_JOB_ROUTING_KEY,
                        payload: &message.delivery.data,
                        message_id: id.clone(),
                        message_type: SMS_JOB_TYPE,
                        headers: FieldTable::default(),
                    })
                    .await
                    .map_err(|source| CliError::Broker {
                        what: format!("cannot publish {id} to {jobs_exchange}"),
                        source,
                    })?;
                message
                    .ack(BasicAckOptions::default())
                    .await
                    .map_err(get_error)?;
                replayed.push(id);
                if !all {
                    break;
                }
            }
            let _ = channel.close(200, "replayed".into()).await;
            if let (Some(wanted), true) = (&job_id, replayed.is_empty()) {
                return Err(CliError::Refusal(format!(
                    "no dead letter with job id {wanted} in {}",
                    session.topology.dead_queue()
                )));
            }
            output.note(&format!(
                "{} dead letter(s) moved back to {}",
                replayed.len(),
                session.topology.jobs_queue()
            ));
            if output.json {
                output.one(&json!({ "replayed": replayed }));
            }
            Ok(())
        }
        DeadCommand::Purge { yes, queue } => {
            if !yes {
                return Err(CliError::Usage(
                    "purging deletes every dead letter for good: repeat with --yes".into(),
                ));
            }
            let session = Session::new(&queue)?;
            session.dead_depth().await?;
            let channel = session.channel().await?;
            let purged = channel
                .queue_purge(
                    session.topology.dead_queue().as_str().into(),
                    QueuePurgeOptions::default(),
                )
                .await
                .map_err(get_error)?;
            let _ = channel.close(200, "purged".into()).await;
            output.note(&format!(
                "{purged} dead letter(s) deleted from {}",
                session.topology.dead_queue()
            ));
            if output.json {
                output.one(&json!({ "purged": purged }));
            }
            Ok(())
        }
    }
}
