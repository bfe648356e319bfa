//! The real [`MessageHandler`]: decide, then queue one SMS job per recipient and answer 250 only
//! once RabbitMQ has confirmed every one of them.
//!
//! Reading a message ([`text::parse`]: MIME, decoding, HTML to text, cleaning) runs on tokio's
//! blocking pool, not on the async workers: two 24 MB messages parsed on the workers stalled
//! every other session for 2 s in a release build and 60 s in a debug one.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use email2sms_proto::queue::v1::{self as q, EmailOrigin, SenderIpSeen, SmsJob};
use email2sms_queue::broker::Outgoing;
use email2sms_queue::topology::{SMS_JOB_ROUTING_KEY, Topology};
use email2sms_runtime::grpc_error::Chain;
use lapin::types::FieldTable;
use prost::Message;

use crate::decision::{Engine, MailFacts, Outcome};
use crate::destinations::{self, DestinationRules};
use crate::error::IngestError;
use crate::sender_sightings::Sightings;
use crate::smtp::command::ReversePath;
use crate::smtp::{Envelope, MessageHandler, ReceivedMessage, Reply};
use crate::text;

/// The pipeline behind the SMTP server.
#[derive(Debug)]
pub struct Gateway {
    pub engine: Engine,
    pub publisher: Arc<email2sms_queue::Publisher>,
    pub topology: Topology,
    /// How long a Message-ID is remembered to drop a relay's re-delivery.
    pub dedupe_window: Duration,
    /// Upper bound for queueing all jobs of one message, so a stuck broker becomes a 451.
    pub publish_timeout: Duration,
    /// The mail servers seen per company since the last sender-log report.
    pub sightings: Arc<Sightings>,
    /// How often those are reported.
    pub sighting_flush: Duration,
    /// Big messages parsed at once ([`ParseSlots::for_this_machine`]).
    pub parse_slots: ParseSlots,
}

/// How many big messages are parsed at once. Parsing is CPU work, so more at once than there
/// are CPUs only adds memory: each parse briefly holds about as much again as its message (the
/// decoded attachments). Measured with six 25.8 MB messages at once on 2 CPUs: 255 MiB peak RSS
/// parsing all six together, against the buffers alone with two at a time.
#[derive(Debug, Clone)]
pub struct ParseSlots(Arc<tokio::sync::Semaphore>);

impl ParseSlots {
    pub fn new(slots: usize) -> ParseSlots {
        ParseSlots(Arc::new(tokio::sync::Semaphore::new(slots.max(1))))
    }

    /// One per CPU.
    pub fn for_this_machine() -> ParseSlots {
        ParseSlots::new(std::thread::available_parallelism().map_or(2, usize::from))
    }
}

/// Messages up to this size are parsed where they are: about 0.1 ms of work, less than handing it
/// to another thread and back costs a small message in latency.
const PARSE_IN_PLACE_MAX: usize = 32 * 1024;

/// Parses the message off the async workers when it is big, at most one per parse slot at once;
/// the message (and its share of the buffer budget) is dropped once parsed, on the thread that
/// parsed it.
async fn parse_off_the_workers(
    message: ReceivedMessage,
    slots: &ParseSlots,
) -> Option<text::ParsedMail> {
    if message.len() <= PARSE_IN_PLACE_MAX {
        return Some(text::parse(&message));
    }
    // The semaphore is never closed, so this waits for a slot and never fails.
    let slot = slots.0.clone().acquire_owned().await.ok();
    let parsed = tokio::task::spawn_blocking(move || {
        let mail = text::parse(&message);
        drop((message, slot));
        mail
    });
    match parsed.await {
        Ok(mail) => Some(mail),
        Err(error) => {
            tracing::error!(%error, "parsing a message failed; answering 451 so the relay retries");
            None
        }
    }
}

fn nothing_sent() -> Reply {
    Reply::new(
        451,
        "4.3.0",
        "the SMS queue is unavailable right now; nothing was sent, and your mail server will try again later",
    )
}

/// Where the job ids of a message are remembered, next to its dedupe key. Its own namespace: a
/// Message-ID ending in some suffix can never name this hash.
fn job_ids_key(dedupe_key: &str) -> String {
    dedupe_key.replacen("ingest:dedupe:", "ingest:jobids:", 1)
}

/// The facts of an SMTP envelope as the decision wants them.
pub fn recipients_of(envelope: &Envelope) -> Vec<String> {
    envelope
        .recipients
        .iter()
        .map(|m| format!("{}@{}", m.local_part, m.domain))
        .collect()
}

impl Gateway {
    fn dedupe_key(&self, message_id: &str, from: &str) -> String {
        // Bounded key length: a hostile Message-ID must not make huge Redis keys.
        let id: String = message_id.chars().take(300).collect();
        format!("{}ingest:dedupe:{}|{id}", self.engine.policy.prefix(), from)
    }

    async fn is_duplicate(&self, key: &str) -> bool {
        let mut redis = self.engine.policy.redis();
        match redis::cmd("EXISTS")
            .arg(key)
            .query_async::<bool>(&mut redis)
            .await
        {
            Ok(seen) => seen,
            Err(error) => {
                // Without Redis a re-delivery may produce a second SMS; refusing the mail would
                // lose the first. Sending twice is the lesser harm.
                tracing::warn!(%error, "cannot check for a duplicate Message-ID");
                false
            }
        }
    }

    async fn mark_delivered(&self, key: &str) {
        let mut redis = self.engine.policy.redis();
        let result = redis::cmd("SET")
            .arg(key)
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(self.dedupe_window.as_secs().max(1))
            .query_async::<Option<String>>(&mut redis)
            .await;
        if let Err(error) = result {
            tracing::warn!(%error, "cannot remember the Message-ID for duplicate detection");
        }
    }

    /// One job id per recipient. With a Message-ID the ids are remembered in Redis for the dedupe
    /// window, so when a publish fails half-way (some jobs confirmed, then 451) the relay's retry
    /// republishes the same ids and dispatch, idempotent on the job id, sends each SMS once.
    async fn job_ids(&self, dedupe_key: Option<&str>, outcome: &Outcome) -> Vec<String> {
        let fresh: Vec<String> = outcome
            .recipients
            .iter()
            .map(|_| uuid::Uuid::now_v7().to_string())
            .collect();
        let Some(dedupe_key) = dedupe_key else {
            return fresh;
        };
        let key = job_ids_key(dedupe_key);
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (recipient, id) in outcome.recipients.iter().zip(&fresh) {
            pipe.cmd("HSETNX")
                .arg(&key)
                .arg(&recipient.e164)
                .arg(id)
                .ignore();
        }
        pipe.cmd("EXPIRE")
            .arg(&key)
            .arg(self.dedupe_window.as_secs().max(1))
            .ignore();
        let mut get = redis::cmd("HMGET");
        get.arg(&key);
        for recipient in &outcome.recipients {
            get.arg(&recipient.e164);
        }
        pipe.add_command(get);
        let mut redis = self.engine.policy.redis();
        match pipe.query_async::<(Vec<Option<String>>,)>(&mut redis).await {
            Ok((stored,)) if stored.len() == fresh.len() => stored
                .into_iter()
                .zip(fresh)
                .map(|(stored, fresh)| stored.unwrap_or(fresh))
                .collect(),
            Ok(_) => fresh,
            Err(error) => {
                tracing::warn!(%error, "cannot remember the job ids; a retry would get new ones");
                fresh
            }
        }
    }

    /// The job ids a re-delivered message got the first time, when all are still remembered.
    async fn earlier_job_ids(&self, dedupe_key: &str, outcome: &Outcome) -> Option<Vec<String>> {
        let mut get = redis::cmd("HMGET");
        get.arg(job_ids_key(dedupe_key));
        for recipient in &outcome.recipients {
            get.arg(&recipient.e164);
        }
        let mut redis = self.engine.policy.redis();
        let stored: Vec<Option<String>> = get.query_async(&mut redis).await.ok()?;
        stored.into_iter().collect()
    }

    /// Builds the jobs of an accepted message, `ids[i]` for recipient `i`.
    pub fn jobs(&self, outcome: &Outcome, facts: &MailFacts<'_>, ids: &[String]) -> Vec<SmsJob> {
        let (Some(sender), Some(sms)) = (&outcome.sender, &outcome.sms) else {
            return Vec::new();
        };
        let now = prost_types::Timestamp::from(SystemTime::now());
        let email_id = uuid::Uuid::now_v7().to_string();
        let count = u32::try_from(outcome.recipients.len()).unwrap_or(u32::MAX);
        outcome
            .recipients
            .iter()
            .zip(ids)
            .enumerate()
            .map(|(index, (recipient, job_id))| SmsJob {
                job_id: job_id.clone(),
                create_time: Some(now),
                expire_time: None,
                company_id: sender.company_id.clone(),
                security_policy_id: sender.security_policy_id.clone(),
                match_kind: sender.match_kind,
                entry_id: sender.entry_id.clone(),
                forwarding_user_id: sender.forwarding_user_id.clone(),
                forwarding_user_external_id: sender.forwarding_user_external_id.clone(),
                sender_id: sender.sender_id.clone(),
                recipient: recipient.e164.clone(),
                recipient_address: recipient.address.clone(),
                text: sms.text.clone(),
                encoding: sms.encoding as i32,
                segment_count: sms.segments,
                truncated: sms.truncated,
                origin: Some(EmailOrigin {
                    message_id: facts.mail.message_id.clone().unwrap_or_default(),
                    envelope_sender: facts.envelope_sender.unwrap_or_default().to_owned(),
                    from_address: outcome.from.clone().unwrap_or_default(),
                    subject: facts.mail.subject.clone(),
                    client_ip: facts.client_ip.to_string(),
                    helo: facts.helo.to_owned(),
                    receive_time: Some(now),
                    email_id: email_id.clone(),
                }),
                authentication: outcome.authentication.clone(),
                recipient_index: u32::try_from(index).unwrap_or(u32::MAX),
                recipient_count: count,
                company_region: sender.default_region.clone(),
            })
            .collect()
    }

    async fn publish_jobs(&self, jobs: &[SmsJob]) -> Result<(), IngestError> {
        let exchange = self.topology.jobs_exchange();
        // Published concurrently: the confirms arrive together, so a message with many
        // recipients costs one broker round trip, not one per recipient.
        let publishes = jobs.iter().map(|job| {
            let payload = job.encode_to_vec();
            let exchange = exchange.clone();
            async move {
                self.publisher
                    .publish(Outgoing {
                        exchange: &exchange,
                        routing_key: SMS_JOB_ROUTING_KEY,
                        payload: &payload,
                        message_id: job.job_id.clone(),
                        message_type: q::SMS_JOB_TYPE,
                        headers: trace_headers(),
                    })
                    .await
            }
        });
        let started = std::time::Instant::now();
        for result in futures::future::join_all(publishes).await {
            result?;
        }
        crate::metrics::metrics()
            .publish_confirm
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Takes the email's SMS to other regions from the company's daily budget (see
    /// [`crate::destinations`]); what to give back if the email is not queued, when there were
    /// any.
    async fn reserve_international(
        &self,
        outcome: &Outcome,
    ) -> Result<Option<destinations::Reservation>, Reply> {
        let count = outcome
            .recipients
            .iter()
            .filter(|r| r.international)
            .count();
        let Some(sender) = outcome.sender.as_ref().filter(|_| count > 0) else {
            return Ok(None);
        };
        let per_day = DestinationRules::of(sender).international_per_day;
        let now = chrono::Utc::now();
        if count > usize::try_from(per_day).unwrap_or(usize::MAX) {
            return Err(destinations::cap_reached(per_day, now));
        }
        let key = destinations::daily_key(self.engine.policy.prefix(), &sender.company_id, now);
        let mut redis = self.engine.policy.redis();
        let taken: Result<i64, _> = destinations::RESERVE_SCRIPT
            .key(&key)
            .arg(count)
            .arg(per_day)
            .invoke_async(&mut redis)
            .await;
        match taken {
            Ok(n) if n >= 0 => Ok(Some(destinations::Reservation { key, count })),
            Ok(_) => {
                tracing::info!(company = %sender.company_id, per_day, "daily international SMS limit reached");
                Err(destinations::cap_reached(per_day, now))
            }
            Err(error) => {
                // The cap is a fraud control: without its count, no SMS to other countries.
                tracing::warn!(%error, "cannot count the SMS to other countries");
                Err(Reply::new(
                    451,
                    "4.3.0",
                    "the daily limit of SMS to other countries cannot be checked right now; nothing was sent, and your mail server will try again later",
                ))
            }
        }
    }

    async fn release_international(&self, reservation: &destinations::Reservation) {
        let mut redis = self.engine.policy.redis();
        let result: Result<i64, _> = redis::cmd("DECRBY")
            .arg(&reservation.key)
            .arg(reservation.count)
            .query_async(&mut redis)
            .await;
        if let Err(error) = result {
            tracing::warn!(%error, "cannot give back the international SMS count of an unsent email");
        }
    }

    /// Counts an authenticated mail for the sender log (see [`crate::sender_sightings`]); mail
    /// that did not pass the company's authentication is never reported.
    fn note_sighting(
        &self,
        outcome: &Outcome,
        facts: &MailFacts<'_>,
        reverse_name: Option<&str>,
        reply: &Reply,
    ) {
        let Some(sender) = outcome.sender.as_ref() else {
            return;
        };
        if !outcome.authenticated {
            return;
        }
        let ip = email2sms_domain::canonical_ip(facts.client_ip);
        let accepted = reply.is_positive();
        self.sightings
            .note(&sender.company_id, ip, accepted, || SenderIpSeen {
                event_id: String::new(),
                occur_time: Some(prost_types::Timestamp::from(SystemTime::now())),
                company_id: sender.company_id.clone(),
                client_ip: ip.to_string(),
                envelope_sender: facts.envelope_sender.unwrap_or_default().to_owned(),
                from_address: outcome.from.clone().unwrap_or_default(),
                helo: facts.helo.to_owned(),
                reverse_dns_name: reverse_name.unwrap_or_default().to_owned(),
                match_kind: sender.match_kind,
                entry_id: sender.entry_id.clone(),
                accepted,
                smtp_reply: String::from_utf8_lossy(&reply.to_wire())
                    .trim_end()
                    .to_owned(),
                accepted_messages: 0,
            });
    }

    /// What reports the counted sightings, detached from the gateway so it can outlive it.
    pub fn sighting_reporter(&self) -> SightingReporter {
        SightingReporter {
            sightings: self.sightings.clone(),
            publisher: self.publisher.clone(),
            exchange: self.topology.events_exchange(),
            interval: self.sighting_flush,
        }
    }
}

/// Publishes the sender-log counts every interval (and early when the table is full).
#[derive(Debug, Clone)]
pub struct SightingReporter {
    sightings: Arc<Sightings>,
    publisher: Arc<email2sms_queue::Publisher>,
    exchange: String,
    interval: Duration,
}

impl SightingReporter {
    /// Reports forever; the binary calls [`Self::flush`] once more after the SMTP drain.
    pub async fn run(self) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.sightings.filled() => {}
            }
            self.flush().await;
        }
    }

    /// Publishes one `sender.ip_seen` per (company, server) counted since the last flush. What the
    /// broker did not take is put back for the next flush.
    pub async fn flush(&self) {
        let events = self.sightings.take();
        if events.is_empty() {
            return;
        }
        let publishes = events.into_iter().map(|mut event| async move {
            event.event_id = uuid::Uuid::now_v7().to_string();
            let payload = event.encode_to_vec();
            let result = self
                .publisher
                .publish(Outgoing {
                    exchange: &self.exchange,
                    routing_key: q::SENDER_IP_SEEN_ROUTING_KEY,
                    payload: &payload,
                    message_id: event.event_id.clone(),
                    message_type: q::SENDER_IP_SEEN_TYPE,
                    headers: FieldTable::default(),
                })
                .await;
            result.err().map(|error| (error, event))
        });
        let failed: Vec<_> = futures::future::join_all(publishes)
            .await
            .into_iter()
            .flatten()
            .collect();
        if let Some((error, _)) = failed.first() {
            tracing::info!(%error, events = failed.len(), "sender.ip_seen not published; kept for the next report");
            self.sightings
                .restore(failed.into_iter().map(|(_, event)| event).collect());
        }
    }
}

impl MessageHandler for Gateway {
    async fn accept(&self, envelope: &Envelope, message: ReceivedMessage) -> Reply {
        let Some(mail) = parse_off_the_workers(message, &self.parse_slots).await else {
            return Reply::new(
                451,
                "4.3.0",
                "temporary problem in the gateway; your server will retry",
            );
        };
        let recipients = recipients_of(envelope);
        let envelope_sender = match &envelope.reverse_path {
            ReversePath::Null => None,
            ReversePath::Mailbox(m) => Some(format!("{}@{}", m.local_part, m.domain)),
        };
        let facts = MailFacts {
            client_ip: envelope.client.ip,
            helo: envelope.client.helo.as_deref().unwrap_or_default(),
            envelope_sender: envelope_sender.as_deref(),
            recipients: &recipients,
            mail: &mail,
        };
        let outcome = self.engine.decide(&facts, None).await;
        if !outcome.accepted() {
            // Refused after it authenticated (a bad recipient, no forwarding user): the server is
            // the company's, and the admin may well want to hear about it.
            self.note_sighting(
                &outcome,
                &facts,
                envelope.client.reverse_name.as_deref(),
                &outcome.reply,
            );
            tracing::info!(
                client = %facts.client_ip,
                from = outcome.from.as_deref().unwrap_or(""),
                code = outcome.reply.code,
                reason = %outcome.reply.text,
                "message refused"
            );
            return outcome.reply;
        }
        let dedupe_key = mail
            .message_id
            .as_deref()
            .map(|id| self.dedupe_key(id, outcome.from.as_deref().unwrap_or_default()));
        if let Some(key) = &dedupe_key
            && self.is_duplicate(key).await
        {
            tracing::info!(message_id = ?mail.message_id, "duplicate delivery; no second set of SMS");
            let text = match self.earlier_job_ids(key, &outcome).await {
                Some(ids) if !ids.is_empty() => format!(
                    "{} earlier (same Message-ID); not sent again",
                    Reply::queued(&ids).text
                ),
                _ => "already accepted earlier (same Message-ID); not sent again".to_owned(),
            };
            return Reply::ok(text);
        }
        let international = match self.reserve_international(&outcome).await {
            Ok(reserved) => reserved,
            Err(reply) => return reply,
        };
        let ids = self.job_ids(dedupe_key.as_deref(), &outcome).await;
        let jobs = self.jobs(&outcome, &facts, &ids);
        let published =
            match tokio::time::timeout(self.publish_timeout, self.publish_jobs(&jobs)).await {
                Ok(Ok(())) => true,
                Ok(Err(error)) => {
                    tracing::warn!(error = %Chain(&error), "cannot queue the SMS jobs");
                    false
                }
                Err(_) => {
                    tracing::warn!("queueing the SMS jobs timed out");
                    false
                }
            };
        if !published {
            // The relay retries after the 451: its retry takes the count again.
            if let Some(reservation) = &international {
                self.release_international(reservation).await;
            }
            return nothing_sent();
        }
        // Only now: marking before every confirm could make a retry look like a duplicate of a
        // message that was never queued.
        if let Some(key) = &dedupe_key {
            self.mark_delivered(key).await;
        }
        let job_ids: Vec<&str> = jobs.iter().map(|job| job.job_id.as_str()).collect();
        let reply = Reply::queued(&job_ids);
        self.note_sighting(
            &outcome,
            &facts,
            envelope.client.reverse_name.as_deref(),
            &reply,
        );
        tracing::info!(
            client = %facts.client_ip,
            from = outcome.from.as_deref().unwrap_or(""),
            jobs = jobs.len(),
            "message accepted"
        );
        reply
    }
}

/// The W3C `traceparent` of the current span as an AMQP header, so dispatch's work on the job can
/// join the trace of the email; empty when tracing export is off (no valid span context).
fn trace_headers() -> FieldTable {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    let mut headers = FieldTable::default();
    if span_context.is_valid() {
        headers.insert(
            "traceparent".into(),
            lapin::types::AMQPValue::LongString(
                format!(
                    "00-{}-{}-{:02x}",
                    span_context.trace_id(),
                    span_context.span_id(),
                    span_context.trace_flags().to_u8()
                )
                .into(),
            ),
        );
    }
    headers
}
