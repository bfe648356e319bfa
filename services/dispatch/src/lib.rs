//! Dispatch service: consumes SMS jobs and sends each exactly once through an SMS connector,
//! recording every state change.
#![forbid(unsafe_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use std::sync::Arc;

use email2sms_proto::dispatch::v1::dispatch_service_server::{self, DispatchServiceServer};
use email2sms_proto::tonic::service::Routes;
use email2sms_runtime::auth::{Auth, Scope};
use email2sms_runtime::config::{
    ConfigError, DatabaseArgs, RedisArgs, ServerArgs, check_url, parse_listen_addr,
};
use email2sms_runtime::grpc::ApiServices;
use email2sms_runtime::lifecycle::Lifecycle;
use email2sms_runtime::prober::Probe;
use email2sms_runtime::readiness;
use email2sms_runtime::service::{ServiceConfig, StartError, bind_and_announce};
use email2sms_runtime::telemetry::TelemetryArgs;
use email2sms_runtime::{db, shutdown};
use sqlx::PgPool;

pub use api::{DispatchApi, JobRequeue};
pub use jobs::{Dispatcher, Outcome, Retry};

pub mod api;
mod batch;
pub mod connector;
pub mod consumer;
pub mod error;
pub mod jobs;
pub mod metrics;
pub mod throttle;

pub const BINARY: &str = "email2sms-dispatch";
/// The Postgres schema this service owns; no other service reads it.
pub const SCHEMA: &str = "dispatch";
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// Where SMS go: chosen by `EMAIL2SMS_SMS_CONNECTOR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectorSetting {
    /// One JSON line per SMS on standard output (the local default).
    Stdout,
    /// One JSON line per SMS appended to a file.
    File(PathBuf),
    /// An SMSC over SMPP: `smpp://user:pass@host:port`.
    Smpp(String),
    /// An HTTP SMS gateway that takes a JSON POST.
    Http(String),
}

impl ConnectorSetting {
    pub fn parse(text: &str) -> Result<ConnectorSetting, ConfigError> {
        const NAME: &str = "EMAIL2SMS_SMS_CONNECTOR";
        let text = text.trim();
        if text == "stdout" {
            return Ok(ConnectorSetting::Stdout);
        }
        if let Some(path) = text.strip_prefix("file:") {
            if path.is_empty() {
                return Err(ConfigError::Invalid {
                    name: NAME,
                    reason: "file: needs a path, e.g. file:/var/log/email2sms/sms.jsonl".into(),
                });
            }
            return Ok(ConnectorSetting::File(PathBuf::from(path)));
        }
        let url = check_url(NAME, text, &["smpp", "http", "https"]).map_err(|_| {
            ConfigError::Invalid {
                name: NAME,
                reason: "use stdout, file:PATH, smpp://user:pass@host:port or an http(s):// URL"
                    .into(),
            }
        })?;
        if url.scheme() == "smpp" {
            if url.username().is_empty() || url.port().is_none() {
                return Err(ConfigError::Invalid {
                    name: NAME,
                    reason:
                        "an SMPP connector needs a system id and port: smpp://user:pass@host:port"
                            .into(),
                });
            }
            Ok(ConnectorSetting::Smpp(text.to_owned()))
        } else {
            Ok(ConnectorSetting::Http(text.to_owned()))
        }
    }
}

/// Configuration of `email2sms-dispatch`: every flag is also an environment variable.
#[derive(Debug, Clone, Parser)]
#[command(name = BINARY, version, about = "Email2SMS dispatch service: sends SMS jobs through a connector")]
pub struct Config {
    /// Address the gRPC status API listens on.
    #[arg(long, env = "EMAIL2SMS_DISPATCH_GRPC_ADDR", default_value = "127.0.0.1:50054", value_parser = parse_listen_addr)]
    pub grpc_addr: SocketAddr,

    /// Where SMS go: `stdout`, `file:PATH`, `smpp://user:pass@host:port` or `http(s)://…`.
    #[arg(
        long,
        env = "EMAIL2SMS_SMS_CONNECTOR",
        default_value = "stdout",
        hide_env_values = true
    )]
    pub sms_connector: String,

    /// Bearer token of the HTTP connector (else the user part of its URL).
    #[arg(long, env = "EMAIL2SMS_SMS_HTTP_TOKEN", hide_env_values = true)]
    pub sms_http_token: Option<String>,

    /// Failed submit attempts (transient errors) after which a job fails for good.
    #[arg(long, env = "EMAIL2SMS_DISPATCH_MAX_ATTEMPTS", default_value_t = 8)]
    pub max_attempts: u32,

    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Prefix of every Redis key this service writes (the throttle buckets).
    #[arg(long, env = "EMAIL2SMS_REDIS_PREFIX", default_value = "email2sms:")]
    pub redis_prefix: String,
    /// Send rate per forwarding user, shared by all replicas: `N/s`, `N/min` or `N/h`; 0 = unlimited.
    /// Over it, jobs wait in a retry tier (never dropped, not counted as failed attempts).
    #[arg(long, env = "EMAIL2SMS_THROTTLE_PER_USER", default_value = "10/s", value_parser = throttle::Rate::parse)]
    pub throttle_per_user: throttle::Rate,
    /// Send rate per company (all its users together); 0 = unlimited.
    #[arg(long, env = "EMAIL2SMS_THROTTLE_PER_COMPANY", default_value = "50/s", value_parser = throttle::Rate::parse)]
    pub throttle_per_company: throttle::Rate,
    /// Send rate per connector across all replicas; 0 = unlimited (the SMPP `tps` setting limits
    /// each bind on its own).
    #[arg(long, env = "EMAIL2SMS_THROTTLE_PER_CONNECTOR", default_value = "0", value_parser = throttle::Rate::parse)]
    pub throttle_per_connector: throttle::Rate,
    /// Jobs taken from the queue at once; raised to twice the claimed jobs' bound (claim windows ×
    /// SMPP window) when lower, so the window stays full and claims go in large batches.
    #[arg(long, env = "EMAIL2SMS_DISPATCH_PREFETCH", default_value_t = 32)]
    pub prefetch: u16,
    /// SMPP windows of jobs claimed for sending ahead of the connector at most (1-16). More make
    /// larger database batches and a faster dispatcher (16 was twice as fast as 2 in the
    /// throughput benchmark); a dispatcher killed without a graceful stop leaves up to (this − 1)
    /// windows of unsent jobs held for review.
    #[arg(long, env = "EMAIL2SMS_DISPATCH_CLAIM_WINDOWS", default_value_t = 2)]
    pub claim_windows: u16,

    #[command(flatten)]
    pub queue: email2sms_queue::QueueArgs,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    #[command(flatten)]
    pub metrics: email2sms_metrics::MetricsArgs,
}

impl ServiceConfig for Config {
    fn telemetry(&self) -> &TelemetryArgs {
        &self.telemetry
    }

    fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.database.validate()?;
        self.redis.validate()?;
        self.queue.validate()?;
        if self.prefetch == 0 {
            return Err(ConfigError::Invalid {
                name: "EMAIL2SMS_DISPATCH_PREFETCH",
                reason: "must be at least 1".into(),
            });
        }
        if !(1..=16).contains(&self.claim_windows) {
            return Err(ConfigError::Invalid {
                name: "EMAIL2SMS_DISPATCH_CLAIM_WINDOWS",
                reason: format!("{} is not between 1 and 16", self.claim_windows),
            });
        }
        self.telemetry.validate()?;
        ConnectorSetting::parse(&self.sms_connector).map(drop)
    }
}

/// The gRPC services of this binary: the portal (admin) reads message status.
pub fn api_services(auth: &Auth, pool: PgPool, requeue: JobRequeue) -> ApiServices {
    ApiServices {
        routes: Routes::new(DispatchServiceServer::with_interceptor(
            DispatchApi::new(pool, requeue),
            auth.require(&[Scope::Admin]),
        )),
        names: vec![dispatch_service_server::SERVICE_NAME],
        file_descriptor_set: email2sms_proto::FILE_DESCRIPTOR_SET,
    }
}

/// Everything `main` does after configuration: authenticate, migrate, connect, bind, serve until
/// SIGTERM.
pub async fn start(config: Config) -> Result<(), StartError> {
    let auth = Auth::from_args(&config.server)?;
    let pool = db::prepare(&config.database, SCHEMA, &MIGRATOR).await?;
    let listener = bind_and_announce(
        BINARY,
        "EMAIL2SMS_DISPATCH_GRPC_ADDR",
        "grpc",
        config.grpc_addr,
    )
    .await?;
    let life = Lifecycle::new(&config.server);
    let scraped = email2sms_metrics::start(
        BINARY,
        &config.metrics,
        metrics::metrics().registry.clone(),
        &life,
    )
    .await?;
    if scraped {
        // Only with a listener: nobody would read the depths otherwise.
        life.spawn(
            "queue depth sampler",
            metrics::sample_queues(
                config.queue.amqp_url.clone(),
                config.queue.topology(),
                life.stopped(),
            ),
        );
    }
    serve(&config, &auth, pool, listener, life, shutdown::signal()).await
}

/// Jobs taken from the queue at once: the configured prefetch, raised when it could not keep the
/// connector's window full (each window slot needs one job being sent and one being claimed).
pub fn prefetch_for(configured: u16, window: Option<usize>, claim_windows: usize) -> u16 {
    // Twice the jobs that may be claimed: while those are sent, as many wait to be claimed, so
    // claims (and their writes) go in large batches as slots free up.
    let needed = window.map_or(0, |window| {
        u16::try_from(window.saturating_mul(claim_windows).saturating_mul(2)).unwrap_or(u16::MAX)
    });
    if needed > configured {
        tracing::info!(
            configured,
            prefetch = needed,
            "EMAIL2SMS_DISPATCH_PREFETCH is below the claimed jobs' bound; raised so the window stays full"
        );
        needed
    } else {
        configured
    }
}

/// Serves on `listener` until `shutdown` resolves. No shutdown delay: the caller decides when to
/// stop (tests, tools); [`start`] adds the configured one.
pub async fn run(
    config: &Config,
    auth: &Auth,
    pool: PgPool,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let life = Lifecycle::with_timing(std::time::Duration::ZERO, config.server.shutdown_grace);
    serve(config, auth, pool, listener, life, shutdown).await
}

async fn serve(
    config: &Config,
    auth: &Auth,
    pool: PgPool,
    listener: tokio::net::TcpListener,
    life: Lifecycle,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let (dispatcher, receipts) = build_dispatcher(config, pool.clone()).await?;
    let prefetch = prefetch_for(
        config.prefetch,
        dispatcher.connector().window(),
        usize::from(config.claim_windows),
    );
    let dispatcher = Arc::new(dispatcher);
    // At the stop it takes no more jobs and lets the in-flight ones reach the SMSC and be acked,
    // within the one grace.
    life.spawn(
        "job consumer",
        consumer::consume_jobs(
            dispatcher.clone(),
            config.queue.amqp_url.clone(),
            config.queue.topology(),
            prefetch,
            life.stop_token(),
        ),
    );
    let relay = email2sms_queue::outbox::spawn_relay(pool.clone(), &config.queue, BINARY);
    let resend_broker = email2sms_queue::Broker::new(
        config.queue.amqp_url.clone(),
        format!("{BINARY} review resends"),
    );
    let requeue = JobRequeue::new(
        Arc::new(email2sms_queue::Publisher::new(
            resend_broker.clone(),
            std::time::Duration::from_secs(10),
        )),
        config.queue.topology(),
    );
    let connector = dispatcher.connector().clone();
    life.watch_readiness(
        readiness::DISPATCH,
        vec![
            // The resend publisher's connection: the broker answers this process.
            Probe::new(readiness::Dependency::Broker, move || {
                let broker = resend_broker.clone();
                async move {
                    broker
                        .connection()
                        .await
                        .map(|_| ())
                        .map_err(|error| error.to_string())
                }
            }),
            Probe::flag(
                readiness::Dependency::Connector,
                move || connector.is_up(),
                "the SMS connector is not connected (SMPP not bound)",
            ),
            Probe::postgres(pool.clone()),
        ],
    );
    life.serve_grpc(api_services(auth, pool.clone(), requeue), listener)
        .await?;
    life.run(shutdown, async {
        // After the last job: unbind from the SMSC, publish the last status events, stop
        // recording receipts.
        dispatcher.connector().close().await;
        relay.stop().await;
        drop(dispatcher);
        receipts.abort();
        pool.close().await;
    })
    .await?;
    Ok(())
}

/// Builds the configured connector and the job processor, and starts recording the delivery
/// receipts the connector receives.
pub async fn build_dispatcher(
    config: &Config,
    pool: PgPool,
) -> Result<(Dispatcher, tokio::task::JoinHandle<()>), StartError> {
    let setting = ConnectorSetting::parse(&config.sms_connector)?;
    // Bounded: a stalled database slows the SMSC's receipts down instead of piling them up.
    let (receipt_sink, receipts) = tokio::sync::mpsc::channel(1024);
    let connector: Arc<dyn connector::Connector> =
        connector::build(&setting, config.sms_http_token.as_deref(), receipt_sink)
            .await
            .map_err(|error| ConfigError::Invalid {
                name: "EMAIL2SMS_SMS_CONNECTOR",
                reason: error.0,
            })?;
    let recorder_pool = pool.clone();
    let recorder = tokio::spawn(async move {
        // Receipts that beat their submit response wait in unmatched_delivery_receipts for
        // seconds; a day-old one will never match.
        let purge_pool = recorder_pool.clone();
        // Aborted with the recorder, even when the recorder itself is aborted at the stop.
        let _purge = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
            let mut hourly = tokio::time::interval(std::time::Duration::from_secs(3600));
            loop {
                hourly.tick().await;
                if let Err(error) = jobs::purge_unmatched_receipts(
                    &purge_pool,
                    std::time::Duration::from_secs(24 * 3600),
                )
                .await
                {
                    tracing::warn!(%error, "cannot purge old unmatched receipts");
                }
            }
        }));
        jobs::run_receipt_recorder(recorder_pool, receipts).await;
    });
    let throttle = throttle::Throttle::new(
        &config.redis.redis_url,
        &config.redis_prefix,
        throttle::Limits {
            per_user: config.throttle_per_user,
            per_company: config.throttle_per_company,
            per_connector: config.throttle_per_connector,
        },
    )
    .map_err(|reason| ConfigError::Invalid {
        name: "REDIS_URL",
        reason,
    })?;
    let dispatcher = Dispatcher::new(
        pool,
        connector,
        jobs::DispatchSettings {
            max_attempts: config.max_attempts.max(1),
            claim_windows: usize::from(config.claim_windows),
        },
    )
    .with_throttle(Arc::new(throttle));
    Ok((dispatcher, recorder))
}

#[cfg(test)]
mod tests {
    use super::{ConnectorSetting, prefetch_for};

    #[test]
    fn prefetch_keeps_the_smpp_window_full() {
        assert_eq!(prefetch_for(32, None, 2), 32, "no window: as configured");
        assert_eq!(prefetch_for(32, Some(8), 2), 32, "already enough");
        assert_eq!(
            prefetch_for(32, Some(50), 2),
            200,
            "two windows claimed, as many waiting"
        );
        assert_eq!(
            prefetch_for(32, Some(50), 16),
            1600,
            "sixteen windows claimed"
        );
        assert_eq!(prefetch_for(1, Some(100_000), 2), u16::MAX);
    }

    #[test]
    fn connector_settings() {
        assert_eq!(
            ConnectorSetting::parse("stdout").unwrap(),
            ConnectorSetting::Stdout
        );
        assert_eq!(
            ConnectorSetting::parse("file:/tmp/sms.jsonl").unwrap(),
            ConnectorSetting::File("/tmp/sms.jsonl".into())
        );
        assert!(matches!(
            ConnectorSetting::parse("smpp://user:secret@smsc.example:2775").unwrap(),
            ConnectorSetting::Smpp(_)
        ));
        assert!(ConnectorSetting::parse("smpp://smsc.example").is_err());
        assert!(ConnectorSetting::parse("file:").is_err());
        assert!(ConnectorSetting::parse("carrier-pigeon").is_err());
        assert!(matches!(
            ConnectorSetting::parse("https://sms.example/api").unwrap(),
            ConnectorSetting::Http(_)
        ));
    }
}
