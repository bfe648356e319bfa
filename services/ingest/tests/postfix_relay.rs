//! A real Postfix relaying to ingest, as a mail administrator sets it up: the client IP reaches
//! ingest through XFORWARD (`smtp_send_xforward_command = yes`) and decides; ingest's 250 names
//! the SMS jobs in Postfix's log; a refusal comes back to the original sender as Postfix's
//! bounce with ingest's text; a temporary failure stays in Postfix's queue until a flush after
//! the fix delivers it.

mod common;

use std::time::Duration;

use common::gateway::{AMQP_URL, Harness, RECIPIENT, Setup, Topology, entry, launch};
use common::postfix::Postfix;
use email2sms_ingest::smtp::Reply;
use email2sms_proto::ingest::v1::{Decision, DiagnoseRequest};
use email2sms_proto::policy::v1::{MatchKind, SecurityType};
use email2sms_proto::queue::v1::{
    PolicyCacheInvalidated, SENDER_IP_SEEN_ROUTING_KEY, SenderIpSeen,
};
use email2sms_testkit::{eventually, eventually_some, eventually_within};
use lapin::options::{BasicGetOptions, QueueDeleteOptions};
use prost::Message;

/// The company's only rule: mail from its server 127.0.0.77, whatever the address.
const COMPANY_SERVER: &str = "127.0.0.77";
/// At common::postfix::HELD_DOMAIN, so Postfix keeps what it sends back to this sender.
const SENDER: &str = "office@held.test";
/// What Python's smtplib says in EHLO (common::gateway::smtplib_from_each).
const CLIENT_HELO: &str = "mail.client.test";
/// Longest the relayed mail may take to show its outcome in Postfix: a delivery is about 0.2 s
/// here; Postfix's queue manager wakes at once for new mail.
const RELAY_LIMIT: Duration = Duration::from_secs(30);

/// Ingest trusting the relay on 127.0.0.1, no DNS, sender-log reports every 200 ms.
async fn ingest(policy_compiled: bool) -> Harness {
    launch(Setup {
        flags: &[
            "--dns-servers",
            "127.0.0.1:1",
            "--trusted-relays",
            "127.0.0.1/32",
            "--sighting-flush",
            "200ms",
        ],
        topology: Topology::Require(Duration::from_secs(10)),
        policy_version: policy_compiled,
        ..Setup::default()
    })
    .await
}

async fn allow_company_server(h: &mut Harness) {
    let cidr = format!("{COMPANY_SERVER}/32");
    let mut rule = entry(MatchKind::IpAddress, &cidr, SecurityType::ByIpAddresses);
    rule.allowed_ip_ranges = vec![cidr.clone()];
    h.put_ip(&cidr, &rule).await;
}

/// Sends one mail to Postfix from `source` (a loopback address the client socket is bound to);
/// Postfix's reply.
async fn relay_from(postfix: &Postfix, source: &str, message_id: &str) -> String {
    let message = format!(
        "From: Office <{SENDER}>\nTo: {RECIPIENT}\nSubject: Pump\nMessage-ID: <{message_id}>\n\nPump 3 failed\n"
    );
    let replies = common::gateway::smtplib_from_each(
        postfix.addr,
        &[source.to_owned()],
        1,
        SENDER,
        RECIPIENT,
        &message,
    )
    .await;
    replies.concat()
}

/// What Diagnose says about a mail from `client_ip`, as `"<code> <enhanced> <text>"`.
async fn diagnosed(h: &Harness, client_ip: &str) -> (Decision, String) {
    let answer = h
        .diagnose_api()
        .diagnose(DiagnoseRequest {
            client_ip: client_ip.into(),
            helo: CLIENT_HELO.into(),
            envelope_sender: SENDER.into(),
            from_header: format!("Office <{SENDER}>"),
            recipient: RECIPIENT.into(),
            ..DiagnoseRequest::default()
        })
        .await
        .unwrap();
    let reply = answer.reply.clone().unwrap();
    (
        answer.decision(),
        format!("{} {} {}", reply.code, reply.enhanced_code, reply.text),
    )
}

/// The reply ingest gave for the delivery Postfix logged as `status=sent (…)`.
fn sent_reply(log: &str) -> Option<String> {
    let start = log.find("status=sent (")? + "status=sent (".len();
    let end = start + log[start..].find(")\n")?;
    Some(log[start..end].to_owned())
}

/// Text with every run of whitespace (Postfix wraps bounce lines) as one space.
fn unwrapped(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[tokio::test]
async fn postfix_relaying_for_the_company_server_gets_its_mail_accepted_and_a_stranger_bounced() {
    let mut h = ingest(true).await;
    allow_company_server(&mut h).await;
    let Some(postfix) = Postfix::start(h.addr).await else {
        return;
    };
    let connection = lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let events_queue = format!("{}ip-seen-postfix", h.gateway.topology.jobs_queue());
    h.gateway
        .topology
        .declare_event_queue(&channel, &events_queue, &[SENDER_IP_SEEN_ROUTING_KEY])
        .await
        .unwrap();

    // The company's server relays through Postfix, which connects from 127.0.0.1.
    let reply = relay_from(&postfix, COMPANY_SERVER, "m1@held.test").await;
    assert_eq!(reply, "250", "Postfix takes the mail: {reply}");
    let ingest_reply = eventually_some("Postfix delivering to ingest", RELAY_LIMIT, || async {
        sent_reply(&postfix.log())
    })
    .await;
    let jobs = h.jobs().await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let job = &jobs[0];
    // "queued as", as Postfix logs its own queue ids: the job GetMessage finds.
    assert_eq!(
        ingest_reply,
        format!("250 2.0.0 queued 1 SMS as {}", job.job_id)
    );
    let origin = job.origin.as_ref().unwrap();
    assert_eq!(
        origin.client_ip, COMPANY_SERVER,
        "the original client decides"
    );
    assert_eq!(origin.helo, CLIENT_HELO);
    // Diagnose gives the words of the real reply.
    let (decision, diagnose_reply) = diagnosed(&h, COMPANY_SERVER).await;
    assert_eq!(decision, Decision::Accept);
    assert_eq!(
        diagnose_reply,
        Reply::queued(&["<job id>"]).to_string(),
        "{diagnose_reply}"
    );
    assert_eq!(
        diagnose_reply.replace("<job id>", &job.job_id),
        ingest_reply
    );

    // The sender log shows the company's server, not the relay.
    let seen = eventually_some("the sender-log report", RELAY_LIMIT, || async {
        channel
            .basic_get(
                events_queue.as_str().into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()
            .map(|message| SenderIpSeen::decode(message.delivery.data.as_slice()).unwrap())
    })
    .await;
    assert_eq!(seen.client_ip, COMPANY_SERVER, "{seen:?}");
    assert_eq!(seen.helo, CLIENT_HELO, "{seen:?}");
    assert!(seen.accepted, "{seen:?}");

    // Another server of the same network is refused; the original sender gets Postfix's
    // bounce with ingest's reason, which Diagnose gives too.
    let reply = relay_from(&postfix, "127.0.0.78", "m2@held.test").await;
    assert_eq!(reply, "250", "Postfix takes the mail: {reply}");
    let (decision, refusal) = diagnosed(&h, "127.0.0.78").await;
    assert_eq!(decision, Decision::Reject, "{refusal}");
    assert!(refusal.starts_with("550 5."), "{refusal}");
    let bounce_to_sender = |queue: &[serde_json::Value]| {
        queue.iter().find_map(|message| {
            // `postqueue -j` names the null sender of a bounce MAILER-DAEMON.
            let to_sender = message["sender"] == "MAILER-DAEMON"
                && message["recipients"][0]["address"] == SENDER;
            to_sender.then(|| message["queue_id"].as_str().unwrap().to_owned())
        })
    };
    let queue = eventually_within(
        "Postfix's bounce to the sender in its queue",
        RELAY_LIMIT,
        || async { (postfix.queue().await, postfix.log()) },
        |(queue, _)| bounce_to_sender(queue).is_some(),
    )
    .await
    .0;
    let bounce_id = bounce_to_sender(&queue).unwrap();
    let bounce = unwrapped(&postfix.message(&bounce_id).await);
    assert!(
        bounce.contains(&format!(
            "said: {refusal} (in reply to end of DATA command)"
        )),
        "the bounce carries ingest's reply {refusal:?}: {bounce}"
    );
    assert!(h.jobs().await.is_empty(), "nothing queued for the stranger");

    let _ = channel
        .queue_delete(events_queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    drop(postfix);
    h.cleanup().await;
}

#[tokio::test]
async fn a_temporary_refusal_stays_in_postfix_queue_until_a_flush_after_the_fix_delivers_it() {
    // No compiled policy in Redis yet and no policy service: ingest cannot decide, so 451.
    let mut h = ingest(false).await;
    let Some(postfix) = Postfix::start(h.addr).await else {
        return;
    };
    let reply = relay_from(&postfix, COMPANY_SERVER, "m3@held.test").await;
    assert_eq!(reply, "250", "Postfix takes the mail: {reply}");
    let (decision, tempfail) = diagnosed(&h, COMPANY_SERVER).await;
    assert_eq!(decision, Decision::Tempfail, "{tempfail}");
    let deferred = eventually_some("Postfix deferring the mail", RELAY_LIMIT, || async {
        postfix.queue().await.into_iter().find(|message| {
            message["queue_name"] == "deferred"
                && message["recipients"][0]["delay_reason"]
                    .as_str()
                    .is_some_and(|reason| reason.contains(&tempfail))
        })
    })
    .await;
    assert_eq!(deferred["sender"], SENDER, "{deferred}");
    assert!(h.jobs().await.is_empty());

    // The policy service compiles the company's rule and announces it.
    h.index.raise_version(1).await.unwrap();
    allow_company_server(&mut h).await;
    h.index
        .publish(&PolicyCacheInvalidated {
            version: 1,
            ip_table_changed: true,
            ..PolicyCacheInvalidated::default()
        })
        .await
        .unwrap();
    eventually(
        "ingest seeing the compiled rule",
        || async { diagnosed(&h, COMPANY_SERVER).await.0 },
        |decision| *decision == Decision::Accept,
    )
    .await;

    // Postfix would retry after its backoff (300 s at first); a flush retries now.
    postfix.flush().await;
    let ingest_reply = eventually_some(
        "Postfix delivering after the flush",
        RELAY_LIMIT,
        || async { sent_reply(&postfix.log()) },
    )
    .await;
    let jobs = h.jobs().await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(
        ingest_reply,
        format!("250 2.0.0 queued 1 SMS as {}", jobs[0].job_id)
    );
    assert_eq!(jobs[0].origin.as_ref().unwrap().client_ip, COMPANY_SERVER);
    eventually(
        "Postfix's queue emptied",
        || postfix.queue(),
        |queue| queue.is_empty(),
    )
    .await;
    drop(postfix);
    h.cleanup().await;
}
