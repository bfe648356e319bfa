//! Verification service: domain ownership challenges and the DNS TXT checks that prove and keep
//! proving them.
#![forbid(unsafe_code)]

pub mod api;
pub mod dns;
pub mod engine;
pub mod error;
pub mod metrics;
pub mod model;
pub mod outbox;
pub mod rules;
pub mod scheduler;
pub mod settings;

use std::future::Future;
use std::net::SocketAddr;

use clap::Parser;
use email2sms_proto::tonic::service::Routes;
use email2sms_proto::verification::v1::verification_service_server::{
    self, VerificationServiceServer,
};
use email2sms_queue::QueueArgs;
use email2sms_runtime::auth::{Auth, Scope};
use email2sms_runtime::config::{
    ConfigError, DatabaseArgs, DnsArgs, ServerArgs, parse_listen_addr,
};
use email2sms_runtime::grpc::ApiServices;
use email2sms_runtime::lifecycle::Lifecycle;
use email2sms_runtime::prober::Probe;
use email2sms_runtime::readiness;
use email2sms_runtime::service::{ServiceConfig, StartError, bind_and_announce};
use email2sms_runtime::telemetry::TelemetryArgs;
use email2sms_runtime::{db, shutdown};
use sqlx::PgPool;

pub use crate::api::VerificationApi;
use crate::dns::TxtResolver;
pub use crate::engine::Verifier;
use crate::scheduler::Scheduler;
use crate::settings::VerificationArgs;

pub const BINARY: &str = "email2sms-verification";
/// The Postgres schema this service owns; no other service reads it.
pub const SCHEMA: &str = "verification";
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// Configuration of `email2sms-verification`: every flag is also an environment variable.
#[derive(Debug, Clone, Parser)]
#[command(name = BINARY, version, about = "Email2SMS verification service: DNS TXT proof of domain ownership")]
pub struct Config {
    /// Address the gRPC API listens on.
    #[arg(long, env = "EMAIL2SMS_VERIFICATION_GRPC_ADDR", default_value = "127.0.0.1:50052", value_parser = parse_listen_addr)]
    pub grpc_addr: SocketAddr,

    #[command(flatten)]
    pub dns: DnsArgs,
    #[command(flatten)]
    pub verification: VerificationArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub queue: QueueArgs,
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
        self.verification.validate()?;
        self.queue.validate()?;
        self.telemetry.validate()
    }
}

/// The gRPC services of this binary. The portal's tools (admin) and the policy service (internal)
/// both call it.
pub fn api_services(auth: &Auth, verifier: Verifier) -> ApiServices {
    ApiServices {
        routes: Routes::new(VerificationServiceServer::with_interceptor(
            VerificationApi::new(verifier),
            auth.require(&[Scope::Admin, Scope::Internal]),
        )),
        names: vec![verification_service_server::SERVICE_NAME],
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
        "EMAIL2SMS_VERIFICATION_GRPC_ADDR",
        "grpc",
        config.grpc_addr,
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
    serve(&config, &auth, pool, listener, life, shutdown::signal()).await
}

/// The verifier this configuration describes: its resolver and rules over `pool`.
pub fn verifier(config: &Config, pool: PgPool) -> Result<Verifier, ConfigError> {
    let args = &config.verification;
    let resolver = TxtResolver::new(
        &config.dns.dns_servers,
        args.dns_timeout,
        args.dns_attempts,
        args.concurrency,
    )
    .map_err(|error| ConfigError::Invalid {
        name: "EMAIL2SMS_DNS_SERVERS",
        reason: error.to_string(),
    })?;
    Ok(Verifier::new(pool, resolver, args))
}

/// Serves on `listener`, with the scheduler running unless it is switched off, until `shutdown`
/// resolves; then stops the scheduler after its current round. No shutdown delay: the caller
/// decides when to stop (tests, tools); [`start`] adds the configured one.
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
    let verifier = verifier(config, pool.clone())?;
    if config.verification.scheduler {
        let scheduler = Scheduler::new(
            verifier.clone(),
            &config.verification,
            scheduler::default_replica_name(),
        );
        // The scheduler finishes its current round after the stop (within the one grace).
        let (stop_scheduler, scheduler_stopped) = tokio::sync::watch::channel(false);
        let stop = life.stopped();
        life.spawn("verification scheduler stop", async move {
            stop.await;
            let _ = stop_scheduler.send(true);
        });
        life.spawn("verification scheduler", scheduler.run(scheduler_stopped));
    }
    let relay = email2sms_queue::outbox::spawn_relay(pool.clone(), &config.queue, BINARY);
    life.watch_readiness(readiness::VERIFICATION, vec![Probe::postgres(pool.clone())]);
    life.serve_grpc(api_services(auth, verifier), listener)
        .await?;
    life.run(shutdown, async {
        // Last, so the events of the final checks still go out.
        relay.stop().await;
        pool.close().await;
    })
    .await?;
    Ok(())
}
