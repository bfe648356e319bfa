//! The real pipeline behind the real SMTP listener, as the binary runs it, in this process against
//! the local Redis and RabbitMQ, each harness with its own Redis and AMQP prefix (or the ones it
//! shares with an in-process policy service). [`launch`] starts it with the caller's flags;
//! [`start`] is the plain one for the tests of what reaches a job (content, bare line ends,
//! limits): one sender rule that needs no DNS, `alice@corp.test`, "By IP Addresses" from
//! 127.0.0.0/8.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use email2sms_ingest::pipeline::Gateway;
use email2sms_ingest::{Config, IngestApi, smtp};
use email2sms_proto::policy::v1::{
    CompanyLimits, CompiledSender, MatchKind, OverLimitBehavior, Readiness, SecurityType, TextMode,
};
use email2sms_proto::queue::v1::SmsJob;
use email2sms_sender_index::{KeyLayout, Write, Writer};
use lapin::options::{BasicGetOptions, QueueDeleteOptions};
use prost::Message;
use redis::AsyncCommands;
use tokio::sync::oneshot;

pub const REDIS_URL: &str = "redis://127.0.0.1:6379";
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// The authorised sender of every [`start`]ed harness.
pub const SENDER: &str = "alice@corp.test";
pub const RECIPIENT: &str = "+64211234567@sms.example.net";

/// A test's own Redis prefix (`test.<id>:`) and AMQP prefix (`test.<id>.`).
#[derive(Clone, Debug)]
pub struct Prefixes {
    pub redis: String,
    pub amqp: String,
}

impl Prefixes {
    pub fn fresh() -> Prefixes {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Prefixes {
            redis: format!("test.{id}:"),
            amqp: format!("test.{id}."),
        }
    }
}

/// How long [`launch`] waits for the RabbitMQ topology before the first mail.
#[derive(Clone, Copy, Debug)]
pub enum Topology {
    /// At most this long; against a dead broker it keeps trying in the background.
    Try(Duration),
    /// It must be declared within this long.
    Require(Duration),
}

/// What [`launch`] starts.
pub struct Setup<'a> {
    /// Flags after the defaults (a flag given here replaces the default, or an earlier pair).
    pub flags: &'a [&'a str],
    /// Fresh ones unless shared with a policy service.
    pub prefixes: Option<Prefixes>,
    pub topology: Topology,
    /// Writes `policy:version` 1, as the policy service leaves it after a compile: without it a
    /// miss is not final.
    pub policy_version: bool,
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Setup {
            flags: &[],
            prefixes: None,
            topology: Topology::Try(Duration::from_secs(5)),
            policy_version: true,
        }
    }
}

pub struct Harness {
    pub addr: SocketAddr,
    pub prefix: String,
    pub gateway: Arc<Gateway>,
    /// The buffer budget the sessions share.
    pub budget: Arc<smtp::BufferBudget>,
    pub redis: redis::aio::MultiplexedConnection,
    /// Seeds the compiled sender rules as the policy service writes them (same library).
    pub index: Writer,
    _stop: oneshot::Sender<()>,
}

/// Starts ingest's gateway and SMTP server (on 127.0.0.1:0) as the binary starts them.
pub async fn launch(setup: Setup<'_>) -> Harness {
    let prefixes = setup.prefixes.unwrap_or_else(Prefixes::fresh);
    let mut args = vec![
        "email2sms-ingest",
        "--redis-url",
        REDIS_URL,
        "--redis-prefix",
        &prefixes.redis,
        "--amqp-url",
        AMQP_URL,
        "--amqp-prefix",
        &prefixes.amqp,
        // Nothing listens there: unless a test gives its own, the rules come from Redis alone.
        "--policy-url",
        "http://127.0.0.1:1",
        "--sms-domains",
        "sms.example.net",
        "--smtp-hostname",
        "ingest.test",
        "--publish-timeout",
        "3s",
    ];
    for pair in setup.flags.chunks(2) {
        if let Some(at) = args.iter().position(|a| *a == pair[0]) {
            args.drain(at..at + 2);
        }
        args.extend_from_slice(pair);
    }
    let config = Config::try_parse_from(args).unwrap();
    let gateway = Arc::new(config.gateway().unwrap());
    // The jobs queue must exist before the first mail.
    let declare = email2sms_ingest::spawn_background(&gateway, config.redis.redis_url.clone());
    match setup.topology {
        Topology::Try(limit) => {
            let _ = tokio::time::timeout(limit, declare).await;
        }
        Topology::Require(limit) => tokio::time::timeout(limit, declare)
            .await
            .unwrap_or_else(|_| panic!("RabbitMQ takes the topology within {limit:?}"))
            .unwrap(),
    }
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
    let redis = redis::Client::open(REDIS_URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let index = Writer::new(
        redis::Client::open(REDIS_URL)
            .unwrap()
            .get_connection_manager()
            .await
            .unwrap(),
        KeyLayout::new(&prefixes.redis),
    );
    if setup.policy_version {
        index.raise_version(1).await.unwrap();
    }
    Harness {
        addr,
        prefix: prefixes.redis,
        gateway,
        budget,
        redis,
        index,
        _stop: stop,
    }
}

/// Starts ingest with no DNS (127.0.0.1:1), a 5 s publish timeout and `extra` flags (a flag
/// given there replaces the default), with [`SENDER`] allowed from 127.0.0.0/8.
pub async fn start(extra: &[&str]) -> Harness {
    let mut flags = vec!["--dns-servers", "127.0.0.1:1", "--publish-timeout", "5s"];
    flags.extend_from_slice(extra);
    let mut h = launch(Setup {
        flags: &flags,
        topology: Topology::Require(Duration::from_secs(10)),
        ..Setup::default()
    })
    .await;
    let mut rule = entry(MatchKind::EmailAddress, SENDER, SecurityType::ByIpAddresses);
    rule.entry_id = "entry-alice".into();
    h.put_email(SENDER, &rule).await;
    h
}

/// A ready compiled entry of company-1 (NZ, at most 3 parts, truncated) for `value`; "By IP
/// Addresses" allows 127.0.0.0/8.
pub fn entry(kind: MatchKind, value: &str, security: SecurityType) -> CompiledSender {
    CompiledSender {
        match_kind: kind as i32,
        entry_id: format!("entry-{value}"),
        matched_value: value.into(),
        company_id: "company-1".into(),
        security_policy_id: "policy-1".into(),
        security_type: security as i32,
        allowed_ip_ranges: if security == SecurityType::ByIpAddresses {
            vec!["127.0.0.0/8".into()]
        } else {
            Vec::new()
        },
        forwarding_user_id: "user-1".into(),
        forwarding_user_external_id: "ext-1".into(),
        forwarding_username: "jo".into(),
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
    }
}

impl Harness {
    /// The names of the compiled sender rules under this harness's prefix.
    pub fn layout(&self) -> &KeyLayout {
        self.index.layout()
    }

    /// Writes `write` at the version of `sender`, as a recompile does (the version key is left
    /// alone: [`Setup::policy_version`] decides it).
    async fn put(&self, write: Write, sender: &CompiledSender) {
        self.index
            .write_all(&[write], sender.version)
            .await
            .unwrap();
    }

    pub async fn put_email(&mut self, address: &str, sender: &CompiledSender) {
        let write = Write::email(self.layout(), address, Some(sender));
        self.put(write, sender).await;
    }

    pub async fn put_domain(&mut self, domain: &str, sender: &CompiledSender) {
        let write = Write::domain(self.layout(), domain, Some(sender));
        self.put(write, sender).await;
    }

    pub async fn put_ip(&mut self, cidr: &str, sender: &CompiledSender) {
        let net: ipnet::IpNet = cidr.parse().expect("a CIDR");
        let write = Write::ip(self.layout(), &net, Some(sender));
        self.put(write, sender).await;
    }

    /// Stores the compiled entry for `address` (an email-address rule with `security`).
    pub async fn allow_email(&mut self, address: &str, security: SecurityType) {
        let sender = entry(MatchKind::EmailAddress, address, security);
        self.put_email(address, &sender).await;
    }

    /// Stores the compiled entry for `domain` (a domain rule with `security`).
    pub async fn allow_domain(&mut self, domain: &str, security: SecurityType) {
        let sender = entry(MatchKind::Domain, domain, security);
        self.put_domain(domain, &sender).await;
    }

    /// Stores the compiled entry for `cidr` (an IP-address rule with `security`).
    pub async fn allow_ip(&mut self, cidr: &str, security: SecurityType) {
        let sender = entry(MatchKind::IpAddress, cidr, security);
        self.put_ip(cidr, &sender).await;
    }

    /// Sends `message` (LF line ends become CRLF) with [`smtplib`].
    pub async fn send(&self, mail_from: &str, rcpts: &[&str], message: &str) -> String {
        smtplib(
            self.addr,
            mail_from,
            rcpts,
            message.replace('\n', "\r\n").as_bytes(),
        )
        .await
    }

    /// Ingest's Diagnose over this gateway's engine.
    pub fn diagnose_api(&self) -> IngestApi {
        IngestApi {
            engine: Some(self.gateway.engine.clone()),
            max_message_size: 1 << 20,
        }
    }

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

    /// Leaves the shared Redis and RabbitMQ as found: every key of this prefix, every queue of
    /// the job path.
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

/// Runs `python3 -c script args…`, asserts it succeeded and returns its stdout.
async fn python(script: &str, args: Vec<String>) -> String {
    let mut argv = vec!["-c".to_owned(), script.to_owned()];
    argv.extend(args);
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(&argv)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// Sends `message` (bytes as they are) from `mail_from` to `rcpts` in one session of Python's
/// smtplib; returns the reply to DATA (or to the command that refused) as `"<code> <text>"`.
pub async fn smtplib(addr: SocketAddr, mail_from: &str, rcpts: &[&str], message: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("message.eml");
    std::fs::write(&file, message).unwrap();
    let script = r#"
import smtplib, sys
host, port, mail_from, rcpts, path = sys.argv[1:6]
s = smtplib.SMTP(host, int(port), local_hostname="mail.client.test", timeout=60)
s.ehlo()
code, msg = s.mail(mail_from)
if code != 250:
    print(code, msg.decode()); sys.exit(0)
for r in rcpts.split(","):
    code, msg = s.rcpt(r)
    if code != 250:
        print(code, msg.decode()); sys.exit(0)
code, msg = s.data(open(path, "rb").read())
print(code, msg.decode())
s.quit()
"#;
    let args = vec![
        addr.ip().to_string(),
        addr.port().to_string(),
        mail_from.into(),
        rcpts.join(","),
        file.to_str().unwrap().into(),
    ];
    python(script, args).await.trim().to_owned()
}

/// Sends `count` copies of a message from each source address in one smtplib session per
/// address (`{n}` and `{source}` in `message` become the copy's number and the address, LF line
/// ends CRLF); returns every DATA reply (or refusing reply) as `"<code> <text>"`.
pub async fn smtplib_from_each(
    addr: SocketAddr,
    sources: &[String],
    count: usize,
    mail_from: &str,
    rcpt: &str,
    message: &str,
) -> Vec<String> {
    let script = r#"
import smtplib, sys
host, port, sources, count, mail_from, rcpt, message = sys.argv[1:8]
for source in sources.split(","):
    s = smtplib.SMTP(host, int(port), local_hostname="mail.client.test", timeout=30,
                     source_address=(source, 0))
    for n in range(int(count)):
        body = message.replace("{n}", str(n)).replace("{source}", source).replace("\n", "\r\n")
        try:
            s.sendmail(mail_from, [rcpt], body.encode())
            print("250")
        except smtplib.SMTPRecipientsRefused as e:
            code, msg = list(e.recipients.values())[0]
            print(code, msg.decode())
        except smtplib.SMTPResponseException as e:
            print(e.smtp_code, e.smtp_error.decode())
            s.rset()
    s.quit()
"#;
    let args = vec![
        addr.ip().to_string(),
        addr.port().to_string(),
        sources.join(","),
        count.to_string(),
        mail_from.into(),
        rcpt.into(),
        message.into(),
    ];
    python(script, args)
        .await
        .lines()
        .map(str::to_owned)
        .collect()
}
