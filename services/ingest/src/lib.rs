//! Ingest service: the SMTP server mail relays deliver to; it authenticates each sender, resolves
//! its policy and turns authorised mail into SMS jobs.
//!
//! The SMTP server is in [`smtp`]; what happens to a message is decided by a
//! [`smtp::MessageHandler`]: the binary runs [`pipeline::Gateway`], which reads the message
//! ([`text`]), decides ([`decision`], with the sender rules from [`policy`]) and queues one SMS job
//! per recipient. [`diagnose`] runs the same decision for support without sending anything.
#![forbid(unsafe_code)]

pub mod decision;
pub mod destinations;
pub mod diagnose;
pub mod error;
pub mod metrics;
pub mod pipeline;
pub mod policy;
pub mod sender_sightings;
pub mod smtp;
pub mod text;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use email2sms_proto::ingest::v1::ingest_service_server::{self, IngestServiceServer};
use email2sms_proto::tonic::service::Routes;
use email2sms_runtime::auth::{Auth, Scope};
use email2sms_runtime::config::{
    ClientTokenArgs, ConfigError, DnsArgs, RedisArgs, ServerArgs, SmsDomainsArgs, check_url,
    parse_duration, parse_listen_addr,
};
use email2sms_runtime::grpc::ApiServices;
use email2sms_runtime::lifecycle::Lifecycle;
use email2sms_runtime::prober::Probe;
use email2sms_runtime::readiness;
use email2sms_runtime::service::{ServiceConfig, StartError, bind_and_announce};
use email2sms_runtime::shutdown;
use email2sms_runtime::telemetry::TelemetryArgs;
use ipnet::IpNet;

pub use error::IngestError;
use smtp::{ConnectionLimits, Limits, MessageHandler, SessionConfig};

pub use diagnose::IngestApi;

pub const BINARY: &str = "email2sms-ingest";

/// Configuration of `email2sms-ingest`: every flag is also an environment variable.
#[derive(Debug, Clone, Parser)]
#[command(name = BINARY, version, about = "Email2SMS ingest service: the SMTP server that turns authorised mail into SMS jobs")]
pub struct Config {
    /// Address the gRPC admin API (Diagnose) listens on.
    #[arg(long, env = "EMAIL2SMS_INGEST_GRPC_ADDR", default_value = "127.0.0.1:50053", value_parser = parse_listen_addr)]
    pub grpc_addr: SocketAddr,

    /// Address the SMTP server listens on.
    #[arg(long, env = "EMAIL2SMS_INGEST_SMTP_ADDR", default_value = "127.0.0.1:2525", value_parser = parse_listen_addr)]
    pub smtp_addr: SocketAddr,

    /// The host name in the SMTP greeting and EHLO reply (default: this machine's host name).
    #[arg(long, env = "EMAIL2SMS_INGEST_HOSTNAME")]
    pub smtp_hostname: Option<String>,

    /// PEM file with the certificate chain for STARTTLS (leaf first). Without it and the key,
    /// STARTTLS is not offered.
    #[arg(long, env = "EMAIL2SMS_INGEST_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM file with the private key of the STARTTLS certificate.
    #[arg(long, env = "EMAIL2SMS_INGEST_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// Largest message accepted, announced as SIZE: bytes, or with a K, M or G suffix (1024-based).
    #[arg(long, env = "EMAIL2SMS_INGEST_MAX_MESSAGE_SIZE", default_value = "25M", value_parser = parse_size)]
    pub max_message_size: usize,

    /// Recipients accepted per message; further ones get 452 and are sent by the relay later.
    #[arg(long, env = "EMAIL2SMS_INGEST_MAX_RECIPIENTS", default_value_t = 100)]
    pub max_recipients: usize,

    /// Longest line, CRLF included, in commands and in messages (RFC 5321: 1000).
    #[arg(long, env = "EMAIL2SMS_INGEST_MAX_LINE_LENGTH", default_value_t = 1000)]
    pub max_line_length: usize,

    /// How long a client may take to send a command before the session is closed (RFC 5321: 5m).
    #[arg(long, env = "EMAIL2SMS_INGEST_COMMAND_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub command_timeout: Duration,

    /// How long a client may stay silent while sending a message (RFC 5321: 3m).
    #[arg(long, env = "EMAIL2SMS_INGEST_DATA_TIMEOUT", default_value = "3m", value_parser = parse_duration)]
    pub data_timeout: Duration,

    /// Longest one message may take from the 354 reply to its end, however steadily it arrives
    /// (the DATA timeout restarts with every byte): 25 MiB at 43 KiB/s, and Exchange's limit for a
    /// whole receive connection.
    #[arg(long, env = "EMAIL2SMS_INGEST_DATA_DEADLINE", default_value = "10m", value_parser = parse_duration)]
    pub data_deadline: Duration,

    /// Longest a write of replies may wait for the client to read them; then the session is
    /// dropped. Only a client that stops reading while it pipelines (hundreds of KiB of unread
    /// replies) ever waits at all.
    #[arg(long, env = "EMAIL2SMS_INGEST_WRITE_TIMEOUT", default_value = "1m", value_parser = parse_duration)]
    pub write_timeout: Duration,

    /// Longest one SMTP session may last, whatever it does; then 421 and the relay connects
    /// again. Postfix reuses a connection for at most 5 minutes, so only a stuck or hostile
    /// client comes near 30.
    #[arg(long, env = "EMAIL2SMS_INGEST_MAX_SESSION_DURATION", default_value = "30m", value_parser = parse_duration)]
    pub max_session_duration: Duration,

    /// A bare LF (without CR) in a message: `refuse` it with 554 5.5.2, as Postfix does by
    /// default, or `normalize` it to a line end for old clients (a fake end of DATA such as
    /// `\n.\n` is refused either way). A bare CR is always refused.
    #[arg(long, env = "EMAIL2SMS_INGEST_BARE_LF", default_value = "refuse")]
    pub bare_lf: smtp::BareLf,

    /// Bytes of message content all sessions together may hold while messages arrive and are
    /// read (K, M or G suffix); beyond it a message gets 452 4.3.1 and the relay retries. At
    /// least the largest message. 256M is ten messages of 25 MiB at once, or 2,000 of 128 KiB;
    /// parsing a message briefly needs about as much again.
    #[arg(long, env = "EMAIL2SMS_INGEST_BUFFER_BUDGET", default_value = "256M", value_parser = parse_size)]
    pub buffer_budget: usize,

    /// SMTP sessions open at once.
    #[arg(long, env = "EMAIL2SMS_INGEST_MAX_CONNECTIONS", default_value_t = 2000)]
    pub max_connections: usize,

    /// SMTP sessions open at once from one client IP (trusted relays are exempt).
    #[arg(
        long,
        env = "EMAIL2SMS_INGEST_MAX_CONNECTIONS_PER_IP",
        default_value_t = 50
    )]
    pub max_connections_per_ip: usize,

    /// Protocol errors tolerated in one session before it is closed.
    #[arg(long, env = "EMAIL2SMS_INGEST_MAX_BAD_COMMANDS", default_value_t = 20)]
    pub max_bad_commands: u32,

    /// How long to wait for a PROXY protocol header from a trusted relay before greeting; 0 turns
    /// the PROXY protocol off.
    #[arg(long, env = "EMAIL2SMS_INGEST_PROXY_WAIT", default_value = "300ms", value_parser = parse_duration)]
    pub proxy_wait: Duration,

    #[command(flatten)]
    pub sms: SmsDomainsArgs,

    /// Comma-separated CIDRs of relays allowed to state the real client through XCLIENT, XFORWARD
    /// or PROXY; only they are offered XCLIENT and XFORWARD in EHLO.
    #[arg(long, env = "EMAIL2SMS_TRUSTED_RELAYS", value_delimiter = ',')]
    pub trusted_relays: Vec<IpNet>,

    /// The SPF record that lists Google's outbound mail servers.
    #[arg(
        long,
        env = "EMAIL2SMS_GOOGLE_SPF_DOMAIN",
        default_value = "_spf.google.com"
    )]
    pub google_spf_domain: String,

    /// The SPF record that lists Microsoft's outbound mail servers.
    #[arg(
        long,
        env = "EMAIL2SMS_OUTLOOK_SPF_DOMAIN",
        default_value = "spf.protection.outlook.com"
    )]
    pub outlook_spf_domain: String,

    /// Time allowed for one DNS query of an SPF check before it is sent again or, after the last
    /// attempt, counts as a timeout (the check gives temperror: 451 4.4.3).
    #[arg(long, env = "EMAIL2SMS_INGEST_DNS_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub dns_timeout: Duration,

    /// How many times one DNS query of an SPF check is sent (the first plus retries, 1 to 10):
    /// a dead DNS server is answered with 451 4.4.3 after DNS timeout × attempts.
    #[arg(long, env = "EMAIL2SMS_INGEST_DNS_ATTEMPTS", default_value_t = email2sms_spf::DEFAULT_ATTEMPTS)]
    pub dns_attempts: usize,

    /// Longest one SPF check may take, all its DNS lookups together, before it gives temperror
    /// (451 4.4.3); at most 5m. RFC 7208 section 4.6.4 asks for at least 20 s.
    #[arg(long, env = "EMAIL2SMS_INGEST_SPF_DEADLINE", default_value = "20s", value_parser = parse_duration)]
    pub spf_deadline: Duration,

    /// The policy service, asked when Redis cannot answer.
    #[arg(
        long,
        env = "EMAIL2SMS_POLICY_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub policy_url: String,

    /// Prefix of every Redis key and channel (the policy service's compiled lookups and ingest's
    /// own duplicate and sender-log marks); must equal the policy service's.
    #[arg(long, env = "EMAIL2SMS_REDIS_PREFIX", default_value = "email2sms:")]
    pub redis_prefix: String,

    /// How long a sender rule is kept in memory; changes announced by the policy service clear
    /// it at once, so this only bounds staleness while that announcement channel is down.
    #[arg(long, env = "EMAIL2SMS_INGEST_POLICY_CACHE_TTL", default_value = "10s", value_parser = parse_duration)]
    pub policy_cache_ttl: Duration,

    /// How long a Message-ID is remembered, so a relay's re-delivery sends no second SMS.
    #[arg(long, env = "EMAIL2SMS_INGEST_DEDUPE_WINDOW", default_value = "24h", value_parser = parse_duration)]
    pub dedupe_window: Duration,

    /// Longest wait for RabbitMQ to confirm every SMS job of a message; then 451.
    #[arg(long, env = "EMAIL2SMS_INGEST_PUBLISH_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub publish_timeout: Duration,

    /// AMQP channels used to publish at once; each carries one unconfirmed message at a time, so
    /// this bounds the publishes in flight (further ones wait for a free channel).
    #[arg(long, env = "EMAIL2SMS_INGEST_PUBLISH_CHANNELS", default_value_t = email2sms_queue::DEFAULT_PUBLISH_CHANNELS)]
    pub publish_channels: usize,

    /// Most SMS parts per recipient for companies that set no limit of their own.
    #[arg(long, env = "EMAIL2SMS_MAX_SMS_PARTS", default_value_t = 10)]
    pub max_sms_parts: u32,

    /// How often the mail servers seen for each company (authenticated mail only) are reported to
    /// the policy's sender log, one event per company and server with its count. 10 s keeps a new
    /// server's admin alert prompt while a busy server costs one event per 10 s, not one per mail.
    #[arg(long, env = "EMAIL2SMS_INGEST_SIGHTING_FLUSH", default_value = "10s", value_parser = parse_duration)]
    pub sighting_flush: Duration,

    #[command(flatten)]
    pub dns: DnsArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub queue: email2sms_queue::QueueArgs,
    #[command(flatten)]
    pub client: ClientTokenArgs,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,

    #[command(flatten)]
    pub metrics: email2sms_metrics::MetricsArgs,
}

/// Parses `25M`, `512K`, `1G` (1024-based) or a bare number of bytes.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size; write e.g. 25M, 512K or 1000000"))?;
    let factor: usize = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => return Err(format!("{text:?} has an unknown unit; use K, M or G")),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// A DNS name as it may appear in configuration: SPF include targets such as `_spf.google.com`
/// start with an underscore, which a host name may not, so this is looser than a sender domain.
fn check_dns_name(name: &'static str, value: &str) -> Result<(), ConfigError> {
    let valid = !value.is_empty()
        && value.len() <= 253
        && value.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if valid {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            name,
            reason: format!("{value:?} is not a DNS name"),
        })
    }
}

impl ServiceConfig for Config {
    fn telemetry(&self) -> &TelemetryArgs {
        &self.telemetry
    }

    fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.redis.validate()?;
        self.queue.validate()?;
        self.client.validate()?;
        self.telemetry.validate()?;
        check_url("EMAIL2SMS_POLICY_URL", &self.policy_url, &["http", "https"])?;
        self.sms.validate()?;
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::Invalid {
                name: "EMAIL2SMS_INGEST_TLS_CERT",
                reason: IngestError::TlsHalfConfigured.to_string(),
            });
        }
        for (name, value, min) in [
            (
                "EMAIL2SMS_INGEST_MAX_MESSAGE_SIZE",
                self.max_message_size,
                1024,
            ),
            ("EMAIL2SMS_INGEST_MAX_RECIPIENTS", self.max_recipients, 1),
            // RFC 5321 §4.5.3.1: commands of 512 and text lines of 1000 octets must be accepted.
            (
                "EMAIL2SMS_INGEST_MAX_LINE_LENGTH",
                self.max_line_length,
                1000,
            ),
            ("EMAIL2SMS_INGEST_MAX_CONNECTIONS", self.max_connections, 1),
            (
                "EMAIL2SMS_INGEST_PUBLISH_CHANNELS",
                self.publish_channels,
                1,
            ),
            (
                "EMAIL2SMS_INGEST_MAX_CONNECTIONS_PER_IP",
                self.max_connections_per_ip,
                1,
            ),
            (
                "EMAIL2SMS_INGEST_MAX_BAD_COMMANDS",
                self.max_bad_commands as usize,
                1,
            ),
        ] {
            if value < min {
                return Err(ConfigError::Invalid {
                    name,
                    reason: format!("must be at least {min}"),
                });
            }
        }
        if self.publish_channels > 2000 {
            return Err(ConfigError::Invalid {
                name: "EMAIL2SMS_INGEST_PUBLISH_CHANNELS",
                reason: "must be at most 2000 (RabbitMQ allows 2047 channels per connection)"
                    .into(),
            });
        }
        if self.redis_prefix.is_empty() || self.redis_prefix.len() > 100 {
            return Err(ConfigError::Invalid {
                name: "EMAIL2SMS_REDIS_PREFIX",
                reason: "must be 1 to 100 characters and equal the policy service's".into(),
            });
        }
        if !(1..=255).contains(&self.max_sms_parts) {
            return Err(ConfigError::Invalid {
                name: "EMAIL2SMS_MAX_SMS_PARTS",
                reason: "must be between 1 and 255 (the most parts one SMS can have)".into(),
            });
        }
        for (name, value) in [
            ("EMAIL2SMS_INGEST_COMMAND_TIMEOUT", self.command_timeout),
            ("EMAIL2SMS_INGEST_DATA_TIMEOUT", self.data_timeout),
            ("EMAIL2SMS_INGEST_DATA_DEADLINE", self.data_deadline),
            ("EMAIL2SMS_INGEST_WRITE_TIMEOUT", self.write_timeout),
            (
                "EMAIL2SMS_INGEST_MAX_SESSION_DURATION",
                self.max_session_duration,
            ),
            ("EMAIL2SMS_INGEST_POLICY_CACHE_TTL", self.policy_cache_ttl),
            ("EMAIL2SMS_INGEST_DEDUPE_WINDOW", self.dedupe_window),
            ("EMAIL2SMS_INGEST_PUBLISH_TIMEOUT", self.publish_timeout),
            ("EMAIL2SMS_INGEST_SIGHTING_FLUSH", self.sighting_flush),
        ] {
            if value.is_zero() {
                return Err(ConfigError::Invalid {
                    name,
                    reason: "must be longer than zero".into(),
                });
            }
        }
        self.validate_spf_timing()?;
        // Each bound must leave room for the one inside it, or the inner one never applies.
        for (name, value, inner, what) in [
            (
                "EMAIL2SMS_INGEST_DATA_DEADLINE",
                self.data_deadline,
                self.data_timeout,
                "EMAIL2SMS_INGEST_DATA_TIMEOUT",
            ),
            (
                "EMAIL2SMS_INGEST_MAX_SESSION_DURATION",
                self.max_session_duration,
                self.data_deadline,
                "EMAIL2SMS_INGEST_DATA_DEADLINE",
            ),
        ] {
            if value < inner {
                return Err(ConfigError::Invalid {
                    name,
                    reason: format!("must be at least {what} ({inner:?})"),
                });
            }
        }
        if self.buffer_budget < self.max_message_size {
            return Err(ConfigError::Invalid {
                name: "EMAIL2SMS_INGEST_BUFFER_BUDGET",
                reason: format!(
                    "must be at least EMAIL2SMS_INGEST_MAX_MESSAGE_SIZE ({} bytes), or the largest message could never be received",
                    self.max_message_size
                ),
            });
        }
        if let Some(hostname) = &self.smtp_hostname {
            check_dns_name("EMAIL2SMS_INGEST_HOSTNAME", hostname)?;
        }
        check_dns_name("EMAIL2SMS_GOOGLE_SPF_DOMAIN", &self.google_spf_domain)?;
        check_dns_name("EMAIL2SMS_OUTLOOK_SPF_DOMAIN", &self.outlook_spf_domain)?;
        Ok(())
    }
}

/// The gRPC services of this binary: support staff (admin) ask it to explain a decision.
pub fn api_services(auth: &Auth, api: IngestApi) -> ApiServices {
    ApiServices {
        routes: Routes::new(IngestServiceServer::with_interceptor(
            api,
            auth.require(&[Scope::Admin]),
        )),
        names: vec![ingest_service_server::SERVICE_NAME],
        file_descriptor_set: email2sms_proto::FILE_DESCRIPTOR_SET,
    }
}

impl Config {
    /// The SMTP session settings, loading the TLS certificate when one is configured.
    pub fn smtp_session_config(&self) -> Result<SessionConfig, IngestError> {
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(smtp::tls::load_acceptor(cert, key)?),
            (None, None) => None,
            _ => return Err(IngestError::TlsHalfConfigured),
        };
        Ok(SessionConfig {
            hostname: self.smtp_hostname.clone().unwrap_or_else(host_name),
            sms_domains: self.sms.names(),
            trusted_relays: self.trusted_relays.clone(),
            tls,
            limits: Limits {
                max_message_size: self.max_message_size,
                max_recipients: self.max_recipients,
                max_line_length: self.max_line_length,
                command_timeout: self.command_timeout,
                data_timeout: self.data_timeout,
                data_deadline: self.data_deadline,
                write_timeout: self.write_timeout,
                max_session_duration: self.max_session_duration,
                bare_lf: self.bare_lf,
                max_bad_commands: self.max_bad_commands,
                proxy_wait: self.proxy_wait,
            },
            budget: smtp::BufferBudget::new(self.buffer_budget),
        })
    }

    pub fn smtp_connection_limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
        }
    }
}

/// This machine's host name for the greeting, from the kernel (no extra dependency for one line).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty() && check_dns_name("hostname", name).is_ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Everything `main` does after configuration: load the TLS certificate, authenticate, build the
/// pipeline, bind both listeners, serve until SIGTERM.
pub async fn start(config: Config) -> Result<(), StartError> {
    let auth = Auth::from_args(&config.server)?;
    // An unreadable certificate is bad configuration (exit 64), found before anything is bound.
    let session_config = config.smtp_session_config().map_err(|error| {
        let name = match &error {
            IngestError::TlsKey { .. } | IngestError::TlsKeyUnusable { .. } => {
                "EMAIL2SMS_INGEST_TLS_KEY"
            }
            IngestError::Setup { what, .. } => what,
            IngestError::TlsCertificate { .. }
            | IngestError::TlsNoCertificate { .. }
            | IngestError::TlsHalfConfigured
            | IngestError::NoPipeline
            | IngestError::PolicyUnavailable { .. }
            | IngestError::Queue(_)
            | IngestError::Redis(_)
            | IngestError::InvalidArgument { .. } => "EMAIL2SMS_INGEST_TLS_CERT",
        };
        ConfigError::Invalid {
            name,
            reason: error.reason(),
        }
    })?;
    let gateway = config.gateway().map_err(|error| {
        let name = match &error {
            IngestError::Setup { what, .. } => what,
            _ => "EMAIL2SMS_POLICY_URL",
        };
        ConfigError::Invalid {
            name,
            reason: error.reason(),
        }
    })?;
    let grpc_listener = bind_and_announce(
        BINARY,
        "EMAIL2SMS_INGEST_GRPC_ADDR",
        "grpc",
        config.grpc_addr,
    )
    .await?;
    let smtp_listener = bind_and_announce(
        BINARY,
        "EMAIL2SMS_INGEST_SMTP_ADDR",
        "smtp",
        config.smtp_addr,
    )
    .await?;
    let life = Lifecycle::new(&config.server);
    email2sms_metrics::start(
        BINARY,
        &config.metrics,
        metrics::metrics().registry.clone(),
        &life,
    )
    .await?;
    spawn_tracked(&life, &gateway, config.redis.redis_url.clone());
    life.watch_readiness(readiness::INGEST, probes(&config, &gateway)?);
    let sightings = gateway.sighting_reporter();
    let api = IngestApi {
        engine: Some(gateway.engine.clone()),
        max_message_size: config.max_message_size,
    };
    serve(
        &config,
        &auth,
        grpc_listener,
        api,
        Listeners {
            smtp: smtp_listener,
            session: Arc::new(session_config),
            handler: Arc::new(gateway),
        },
        life,
        shutdown::signal(),
        // The counts of the last window, once no more mail can come; bounded like any publish,
        // and inside the one grace.
        async move { sightings.flush().await },
    )
    .await
}

/// What ingest's `readiness` asks every 2 s: Redis answers PING on the connection lookups use, the
/// policy service (the fallback) answers its own `readiness`, and the publisher's broker
/// connection is up (reconnecting when it is not, so a returning RabbitMQ is noticed).
fn probes(config: &Config, gateway: &pipeline::Gateway) -> Result<Vec<Probe>, StartError> {
    let redis = gateway.engine.policy.redis();
    let broker = gateway.publisher.broker().clone();
    let policy = Probe::grpc_health(
        readiness::Dependency::Policy,
        &config.policy_url,
        email2sms_runtime::lifecycle::READINESS,
    )
    .map_err(|reason| ConfigError::Invalid {
        name: "EMAIL2SMS_POLICY_URL",
        reason,
    })?;
    Ok(vec![
        Probe::new(readiness::Dependency::Redis, move || {
            let mut redis = redis.clone();
            async move {
                redis::cmd("PING")
                    .query_async::<String>(&mut redis)
                    .await
                    .map(|_| ())
                    .map_err(|error| error.to_string())
            }
        }),
        policy,
        Probe::new(readiness::Dependency::Broker, move || {
            let broker = broker.clone();
            async move {
                broker
                    .connection()
                    .await
                    .map(|_| ())
                    .map_err(|error| error.to_string())
            }
        }),
    ])
}

/// [`spawn_background`] on the binary's lifecycle: the subscription and the declaration end at
/// the stop; the sighting reporter too (its last window is flushed by the stop's finish).
fn spawn_tracked(life: &Lifecycle, gateway: &pipeline::Gateway, redis_url: String) {
    life.spawn_until_stopped(
        "policy invalidations",
        gateway
            .engine
            .policy
            .clone()
            .follow_invalidations(redis_url),
    );
    life.spawn_until_stopped("sighting reporter", gateway.sighting_reporter().run());
    life.spawn_until_stopped(
        "topology declaration",
        declare_topology(gateway.publisher.broker().clone(), gateway.topology.clone()),
    );
}

/// Starts the gateway's background work, which must never block mail: the policy invalidation
/// subscription, and declaring the jobs topology until RabbitMQ answers (until then publishing
/// fails and mail gets 451). Returns the declaration's task, which ends once it is done. For
/// gateways embedded in tests; the binary registers the same tasks with its lifecycle.
pub fn spawn_background(
    gateway: &pipeline::Gateway,
    redis_url: String,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(
        gateway
            .engine
            .policy
            .clone()
            .follow_invalidations(redis_url),
    );
    tokio::spawn(gateway.sighting_reporter().run());
    tokio::spawn(declare_topology(
        gateway.publisher.broker().clone(),
        gateway.topology.clone(),
    ))
}

/// Most (company, mail server) pairs counted between two sender-log reports: 10,000 entries of
/// well under 1 KiB each. Only authenticated mail adds pairs, so reaching it takes thousands of
/// real servers in one interval; then the report goes out early.
const SIGHTING_PAIRS: usize = 10_000;

/// Declares the jobs topology, retrying every few seconds until RabbitMQ accepts it.
pub async fn declare_topology(
    broker: Arc<email2sms_queue::Broker>,
    topology: email2sms_queue::Topology,
) {
    loop {
        let result = async {
            let channel = broker.channel().await?;
            topology.declare_jobs(&channel).await?;
            topology.declare_events(&channel).await
        }
        .await;
        match result {
            Ok(()) => {
                tracing::info!("RabbitMQ topology declared");
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot declare the RabbitMQ topology yet; mail gets 451 until it can");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

impl Config {
    /// The decision engine and the publisher. Connects to nothing yet: every dependency is
    /// reached lazily, so ingest starts (and answers 451) while any of them is down.
    pub fn gateway(&self) -> Result<pipeline::Gateway, IngestError> {
        let policy = policy::PolicyLookup::new(
            &self.redis.redis_url,
            &self.redis_prefix,
            &self.policy_url,
            self.client.api_token.as_deref(),
            self.policy_cache_ttl,
        )?;
        let spf_settings = self.spf_settings();
        let setup = |what: &'static str| {
            move |error: email2sms_spf::SpfError| IngestError::setup(what, error)
        };
        let spf = email2sms_spf::SpfVerifier::new(&spf_settings)
            .map_err(setup("EMAIL2SMS_DNS_SERVERS"))?;
        let engine = decision::Engine {
            spf: Arc::new(spf),
            google: email2sms_spf::ProviderDomain::new(&self.google_spf_domain)
                .map_err(setup("EMAIL2SMS_GOOGLE_SPF_DOMAIN"))?,
            outlook: email2sms_spf::ProviderDomain::new(&self.outlook_spf_domain)
                .map_err(setup("EMAIL2SMS_OUTLOOK_SPF_DOMAIN"))?,
            policy,
            max_parts: self.max_sms_parts,
            sms_domains: self.sms.names(),
        };
        let broker = email2sms_queue::Broker::new(self.queue.amqp_url.clone(), BINARY);
        Ok(pipeline::Gateway {
            engine,
            publisher: Arc::new(email2sms_queue::Publisher::with_channels(
                broker,
                self.publish_timeout,
                self.publish_channels,
            )),
            topology: self.queue.topology(),
            dedupe_window: self.dedupe_window,
            publish_timeout: self.publish_timeout,
            sightings: Arc::new(sender_sightings::Sightings::new(SIGHTING_PAIRS)),
            sighting_flush: self.sighting_flush,
            parse_slots: pipeline::ParseSlots::for_this_machine(),
        })
    }
}

/// The longest SPF deadline accepted: relays wait 10 minutes for the reply to the end of DATA
/// (RFC 5321 section 4.5.3.2.6), and the decision must come well before that.
const MAX_SPF_DEADLINE: Duration = Duration::from_secs(5 * 60);
/// The most tries of one DNS query accepted; more only hide a dead resolver for longer.
const MAX_DNS_ATTEMPTS: usize = 10;

impl Config {
    /// The SPF checks' DNS and time limits. A dead DNS server is answered after
    /// `dns_timeout × dns_attempts` (the first failed lookup ends the check: 4 s by default); a
    /// slow one at most after `spf_deadline` (20 s by default), however many lookups the record
    /// needs (up to 10 mechanisms, each MX host, …), so a relay always has its 451 within a minute.
    pub fn spf_settings(&self) -> email2sms_spf::SpfSettings {
        email2sms_spf::SpfSettings {
            dns: email2sms_spf::DnsSettings {
                nameservers: self.dns.dns_servers.clone(),
                query_timeout: self.dns_timeout,
                attempts: self.dns_attempts,
            },
            overall_timeout: self.spf_deadline,
            hostname: self.smtp_hostname.clone(),
            ..email2sms_spf::SpfSettings::default()
        }
    }

    fn validate_spf_timing(&self) -> Result<(), ConfigError> {
        let invalid = |name, reason: String| Err(ConfigError::Invalid { name, reason });
        if self.dns_timeout.is_zero() {
            return invalid(
                "EMAIL2SMS_INGEST_DNS_TIMEOUT",
                "must be longer than zero".into(),
            );
        }
        if !(1..=MAX_DNS_ATTEMPTS).contains(&self.dns_attempts) {
            return invalid(
                "EMAIL2SMS_INGEST_DNS_ATTEMPTS",
                format!("must be between 1 and {MAX_DNS_ATTEMPTS}"),
            );
        }
        if self.spf_deadline.is_zero() || self.spf_deadline > MAX_SPF_DEADLINE {
            return invalid(
                "EMAIL2SMS_INGEST_SPF_DEADLINE",
                "must be longer than zero and at most 5m (relays wait 10 minutes for the reply to a message)".into(),
            );
        }
        if self.dns_timeout > self.spf_deadline {
            return invalid(
                "EMAIL2SMS_INGEST_DNS_TIMEOUT",
                format!(
                    "{:?} is longer than EMAIL2SMS_INGEST_SPF_DEADLINE ({:?}), so it could never take effect",
                    self.dns_timeout, self.spf_deadline
                ),
            );
        }
        Ok(())
    }
}

/// The SMTP side of [`run`]: its listener, its settings and the handler that decides about mail.
#[derive(Debug)]
pub struct Listeners<H> {
    pub smtp: tokio::net::TcpListener,
    pub session: Arc<SessionConfig>,
    pub handler: Arc<H>,
}

/// Serves gRPC on `grpc_listener` and SMTP until `shutdown` resolves; both then drain within the
/// one shutdown grace. No shutdown delay and nothing probed: for embedding.
pub async fn run<H: MessageHandler>(
    config: &Config,
    auth: &Auth,
    grpc_listener: tokio::net::TcpListener,
    api: IngestApi,
    smtp: Listeners<H>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let life = Lifecycle::with_timing(Duration::ZERO, config.server.shutdown_grace);
    life.watch_readiness(&[], Vec::new());
    serve(
        config,
        auth,
        grpc_listener,
        api,
        smtp,
        life,
        shutdown,
        async {},
    )
    .await
}

/// Serves both listeners on `life` until `shutdown` (or a failed gRPC server, which stops SMTP
/// too: a half-running service would hide the failure), then stops them together.
#[allow(clippy::too_many_arguments)]
async fn serve<H: MessageHandler>(
    config: &Config,
    auth: &Auth,
    grpc_listener: tokio::net::TcpListener,
    api: IngestApi,
    smtp: Listeners<H>,
    life: Lifecycle,
    shutdown: impl Future<Output = ()>,
    finish: impl Future<Output = ()>,
) -> Result<(), StartError> {
    life.spawn(
        "SMTP server",
        smtp::serve(
            smtp.smtp,
            smtp.session,
            config.smtp_connection_limits(),
            smtp.handler,
            life.stopped(),
            life.grace(),
        ),
    );
    life.serve_grpc(api_services(auth, api), grpc_listener)
        .await?;
    life.run(shutdown, finish).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_size;
    use super::*;

    fn config(args: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("email2sms-ingest").chain(args.iter().copied()))
            .unwrap()
    }

    /// The defaults answer a dead DNS server after 4 s and any SPF check within 20 s: well
    /// inside the minute some relays wait (the fixed settings before took 15 s per lookup).
    #[test]
    fn spf_timing_defaults_answer_well_inside_a_minute() {
        let settings = config(&[]).spf_settings();
        assert_eq!(settings.dns.query_timeout, Duration::from_secs(2));
        assert_eq!(settings.dns.attempts, 2);
        assert_eq!(settings.dns.longest_lookup(), Duration::from_secs(4));
        assert_eq!(settings.overall_timeout, Duration::from_secs(20));
        assert_eq!(
            settings.dns,
            email2sms_spf::DnsSettings {
                nameservers: settings.dns.nameservers.clone(),
                ..email2sms_spf::DnsSettings::default()
            }
        );
        let set = config(&[
            "--dns-timeout",
            "300ms",
            "--dns-attempts",
            "3",
            "--spf-deadline",
            "5s",
        ])
        .spf_settings();
        assert_eq!(set.dns.query_timeout, Duration::from_millis(300));
        assert_eq!(set.dns.attempts, 3);
        assert_eq!(set.overall_timeout, Duration::from_secs(5));
    }

    #[test]
    fn spf_timing_is_validated_naming_the_setting() {
        for (args, name) in [
            (["--dns-timeout", "0s"], "EMAIL2SMS_INGEST_DNS_TIMEOUT"),
            (["--dns-attempts", "0"], "EMAIL2SMS_INGEST_DNS_ATTEMPTS"),
            (["--dns-attempts", "11"], "EMAIL2SMS_INGEST_DNS_ATTEMPTS"),
            (["--spf-deadline", "0s"], "EMAIL2SMS_INGEST_SPF_DEADLINE"),
            (["--spf-deadline", "301s"], "EMAIL2SMS_INGEST_SPF_DEADLINE"),
            (["--dns-timeout", "21s"], "EMAIL2SMS_INGEST_DNS_TIMEOUT"),
        ] {
            match config(&args).validate() {
                Err(ConfigError::Invalid { name: got, .. }) => assert_eq!(got, name, "{args:?}"),
                other => panic!("{args:?}: {other:?}"),
            }
        }
        assert!(
            config(&["--dns-attempts", "10", "--spf-deadline", "5m"])
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn sizes_with_and_without_units() {
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("512K"), Ok(512 * 1024));
        assert_eq!(parse_size("25M"), Ok(25 * 1024 * 1024));
        assert_eq!(parse_size("1gib"), Ok(1 << 30));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5T").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }
}
