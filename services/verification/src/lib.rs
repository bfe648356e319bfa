//! Verification service: domain ownership challenges and the DNS TXT checks that prove and keep
//! proving them.
#![forbid(unsafe_code)]

use std::future::Future;
use std::net::SocketAddr;

use clap::Parser;
use email2sms_proto::tonic::service::Routes;
use email2sms_proto::verification::v1::verification_service_server::{
    self, VerificationService, VerificationServiceServer,
};
use email2sms_runtime::auth::{Auth, Scope};
use email2sms_runtime::config::{
    AmqpArgs, ConfigError, DatabaseArgs, DnsArgs, ServerArgs, parse_listen_addr,
};
use email2sms_runtime::grpc::{self, ApiServices};
use email2sms_runtime::service::{ServiceConfig, StartError, bind_and_announce};
use email2sms_runtime::telemetry::TelemetryArgs;
use email2sms_runtime::{db, shutdown};
use sqlx::PgPool;

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
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub amqp: AmqpArgs,
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
        self.amqp.validate()?;
        self.telemetry.validate()
    }
}

/// The challenge API. Its RPCs arrive with the verification issue; until then each answers
/// UNIMPLEMENTED.
#[derive(Debug, Clone)]
pub struct VerificationApi;

impl VerificationService for VerificationApi {}

/// The gRPC services of this binary. The portal's tools (admin) and the policy service (internal)
/// both call it.
pub fn api_services(auth: &Auth) -> ApiServices {
    ApiServices {
        routes: Routes::new(VerificationServiceServer::with_interceptor(
            VerificationApi,
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
