//! Policy service: the system of record for companies, Messenger users, security policies and
//! sender entries, compiled into Redis for ingest.
#![forbid(unsafe_code)]

use std::future::Future;
use std::net::SocketAddr;

use clap::Parser;
use email2sms_proto::policy::v1::policy_service_server::{
    self, PolicyService, PolicyServiceServer,
};
use email2sms_proto::policy::v1::sender_resolution_service_server::{
    self, SenderResolutionService, SenderResolutionServiceServer,
};
use email2sms_proto::tonic::service::Routes;
use email2sms_runtime::auth::{Auth, Scope};
use email2sms_runtime::config::{
    AmqpArgs, ClientTokenArgs, ConfigError, DatabaseArgs, RedisArgs, ServerArgs, check_url,
    parse_listen_addr,
};
use email2sms_runtime::grpc::{self, ApiServices};
use email2sms_runtime::service::{ServiceConfig, StartError, bind_and_announce};
use email2sms_runtime::telemetry::TelemetryArgs;
use email2sms_runtime::{db, shutdown};
use sqlx::PgPool;

pub const BINARY: &str = "email2sms-policy";
/// The Postgres schema this service owns; no other service reads it.
pub const SCHEMA: &str = "policy";
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// Configuration of `email2sms-policy`: every flag is also an environment variable.
#[derive(Debug, Clone, Parser)]
#[command(name = BINARY, version, about = "Email2SMS policy service: the admin API and sender resolution")]
pub struct Config {
    /// Address the gRPC API listens on.
    #[arg(long, env = "EMAIL2SMS_POLICY_GRPC_ADDR", default_value = "127.0.0.1:50051", value_parser = parse_listen_addr)]
    pub grpc_addr: SocketAddr,

    /// The verification service, asked for domain challenges.
    #[arg(
        long,
        env = "EMAIL2SMS_VERIFICATION_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub verification_url: String,

    /// Smarthost for notification mail, `smtp://host:port`.
    #[arg(
        long,
        env = "EMAIL2SMS_SMTP_RELAY",
        default_value = "smtp://127.0.0.1:25"
    )]
    pub smtp_relay: String,

    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub amqp: AmqpArgs,
    #[command(flatten)]
    pub client: ClientTokenArgs,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

impl ServiceConfig for Config {
    fn telemetry(&self) -> &TelemetryArgs {
        &self.telemetry
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.database.validate()?;
        self.redis.validate()?;
        self.amqp.validate()?;
        self.client.validate()?;
        self.telemetry.validate()?;
        check_url(
            "EMAIL2SMS_VERIFICATION_URL",
            &self.verification_url,
            &["http", "https"],
        )?;
        check_url("EMAIL2SMS_SMTP_RELAY", &self.smtp_relay, &["smtp", "smtps"])?;
        Ok(())
    }
}

/// The admin API. Its RPCs arrive with the policy issue; until then each answers UNIMPLEMENTED.
#[derive(Debug, Clone)]
pub struct PolicyApi;

impl PolicyService for PolicyApi {}

/// The internal resolution API ingest falls back to when Redis cannot answer.
#[derive(Debug, Clone)]
pub struct SenderResolutionApi;

impl SenderResolutionService for SenderResolutionApi {}

/// The gRPC services of this binary, each behind the token scope it requires.
pub fn api_services(auth: &Auth) -> ApiServices {
    ApiServices {
        routes: Routes::new(PolicyServiceServer::with_interceptor(
            PolicyApi,
            auth.require(&[Scope::Admin]),
        ))
        .add_service(SenderResolutionServiceServer::with_interceptor(
            SenderResolutionApi,
            auth.require(&[Scope::Internal]),
        )),
        names: vec![
            policy_service_server::SERVICE_NAME,
            sender_resolution_service_server::SERVICE_NAME,
        ],
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
        "EMAIL2SMS_POLICY_GRPC_ADDR",
        "grpc",
        config.grpc_addr,
    )
    .await?;
    run(&config, &auth, pool, listener, shutdown::signal()).await
}

/// Serves on `listener` until `shutdown` resolves.
pub async fn run(
    config: &Config,
    auth: &Auth,
    pool: PgPool,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    grpc::serve(
        api_services(auth),
        listener,
        shutdown,
        config.server.shutdown_grace,
    )
    .await?;
    pool.close().await;
    Ok(())
}
