//! The real pipeline behind the real SMTP listener, as the binary runs it, against the local
//! Redis and RabbitMQ (each harness with its own Redis and AMQP prefix), with one sender rule that
//! needs no DNS: `alice@corp.test`, "By IP Addresses" from 127.0.0.0/8. For the tests of what
//! reaches a job (content, bare line ends, limits); `pipeline.rs` has the richer harness with DNS.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use email2sms_ingest::pipeline::Gateway;
use email2sms_ingest::{Config, smtp};
use email2sms_proto::policy::v1::{
    CompanyLimits, CompiledSender, MatchKind, OverLimitBehavior, Readiness, SecurityType, TextMode,
};
use email2sms_proto::queue::v1::SmsJob;
use lapin::options::{BasicGetOptions, QueueDeleteOptions};
use prost::Message;
use redis::AsyncCommands;
use tokio::sync::oneshot;

pub const REDIS_URL: &str = "redis://127.0.0.1:6379";
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// The authorised sender of every harness.
pub const SENDER: &str = "alice@corp.test";
pub const RECIPIENT: &str = "+64211234567@sms.example.net";

pub struct Gw {
    pub addr: SocketAddr,
    pub prefix: String,
    pub gateway: Arc<Gateway>,
    /// The buffer budget the sessions share.
    pub budget: Arc<smtp::BufferBudget>,
    redis: redis::aio::MultiplexedConnection,
    _stop: oneshot::Sender<()>,
}

/// Starts ingest with `extra` flags (a flag given there replaces the default here).
pub async fn start(extra: &[&str]) -> Gw {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let prefix = format!("test.{id}:");
    let amqp_prefix = format!("test.{id}.");
    let mut args = vec![
        "email2sms-ingest",
        "--redis-url",
        REDIS_URL,
        "--redis-prefix",
        &prefix,
        "--amqp-url",
        AMQP_URL,
        "--amqp-prefix",
        &amqp_prefix,
        // Nothing listens there: the rule comes from Redis, and it needs no DNS.
        "--policy-url",
        "http://127.0.0.1:1",
        "--dns-servers",
        "127.0.0.1:1",
        "--sms-domains",
        "sms.example.net",
        "--smtp-hostname",
        "ingest.test",
        "--publish-timeout",
        "5s",
    ];
    for pair in extra.chunks(2) {
        if let Some(at) = args.iter().position(|a| *a == pair[0]) {
            args.drain(at..at + 2);
        }
        args.extend_from_slice(pair);
    }
    let config = Config::try_parse_from(args).unwrap();
    let gateway = Arc::new(config.gateway().unwrap());
    let declare = email2sms_ingest::spawn_background(&gateway, config.redis.redis_url.clone());
    tokio::time::timeout(Duration::from_secs(10), declare)
        .await
        .expect("RabbitMQ takes the topology within 10 s")
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let session_config = config.smtp_session_config().unwrap();
    let budget = session_config.budget.clone();
    tokio::spawn(smtp::serve(
        listener,
        Arc::new(session_config),
        config.smtp_connection_limits(),
        gateway.clone(),
        async {
            let _ = stopped.await;
        },
        Duration::from_secs(1),
    ));
    let mut redis = redis::Client::open(REDIS_URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis
        .set(format!("{prefix}policy:version"), 1)
        .await
        .unwrap();
    let rule = CompiledSender {
        match_kind: MatchKind::EmailAddress as i32,
        entry_id: "entry-alice".into(),
        matched_value: SENDER.into(),
        company_id: "company-1".into(),
        security_policy_id: "policy-1".into(),
        security_type: SecurityType::ByIpAddresses as i32,
        allowed_ip_ranges: vec!["127.0.0.0/8".into()],
        forwarding_user_id: "user-1".into(),
        forwarding_user_external_id: "ext-1".into(),
        sender_id: "ACME".into(),
        default_region: "NZ".into(),
        limits: Some(CompanyLimits {
            max_sms_parts: 3,
            over_limit_behavior: OverLimitBehavior::Truncate as i32,
            ..CompanyLimits::default()
        }),
        text_mode: TextMode::BodyOrSubject as i32,
        readiness: Some(Readiness {
            ready: true,
            ..Readiness::default()
        }),
        version: 1,
    };
    let _: () = redis
        .set(
            format!("{prefix}policy:email:{SENDER}"),
            rule.encode_to_vec(),
        )
        .await
        .unwrap();
    Gw {
        addr,
        prefix,
        gateway,
        budget,
        redis,
        _stop: stop,
    }
}

impl Gw {
    /// Takes every job now on the jobs queue.
    pub async fn jobs(&self) -> Vec<SmsJob> {
        let connection =
            lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default())
                .await
                .unwrap();
        let channel = connection.create_channel().await.unwrap();
        let queue = self.gateway.topology.jobs_queue();
        let mut jobs = Vec::new();
        while let Some(message) = channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            jobs.push(SmsJob::decode(message.delivery.data.as_slice()).unwrap());
        }
        let _ = connection.close(200, "done".into()).await;
        jobs
    }

    pub async fn cleanup(mut self) {
        let keys: Vec<String> = self
            .redis
            .keys(format!("{}*", self.prefix))
            .await
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<i64, _> = self.redis.del(keys).await;
        }
        if let Ok(connection) =
            lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default()).await
            && let Ok(channel) = connection.create_channel().await
        {
            for queue in self.gateway.topology.job_path_queues() {
                let _ = channel
                    .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
        }
    }
}

/// A mail from the authorised sender with `body` (LF line ends become CRLF).
pub fn mail(message_id: &str, subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Alice <{SENDER}>\nTo: {RECIPIENT}\nSubject: {subject}\nMessage-ID: <{message_id}>\n\n{body}\n"
    )
    .replace('\n', "\r\n")
    .into_bytes()
}

/// Sends `message` (bytes as they are) with Python's smtplib; returns the reply to DATA (or to
/// the command that refused) as `"<code> <text>"`.
pub async fn smtplib(addr: SocketAddr, message: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("message.eml");
    std::fs::write(&file, message).unwrap();
    let script = r#"
import smtplib, sys
host, port, mail_from, rcpt, path = sys.argv[1:6]
s = smtplib.SMTP(host, int(port), local_hostname="mail.client.test", timeout=60)
s.ehlo()
code, msg = s.mail(mail_from)
if code != 250:
    print(code, msg.decode()); sys.exit(0)
code, msg = s.rcpt(rcpt)
if code != 250:
    print(code, msg.decode()); sys.exit(0)
code, msg = s.data(open(path, "rb").read())
print(code, msg.decode())
s.quit()
"#;
    let args: Vec<String> = vec![
        "-c".into(),
        script.into(),
        addr.ip().to_string(),
        addr.port().to_string(),
        SENDER.into(),
        RECIPIENT.into(),
        file.to_str().unwrap().into(),
    ];
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}
