//! Ingest service: the SMTP server mail relays deliver to; it authenticates each sender, resolves
//! its policy and turns authorised mail into SMS jobs.
#![forbid(unsafe_code)]

use std::future::Future;
use std::net::SocketAddr;

use clap::Parser;
use email2sms_proto::ingest::v1::ingest_service_server::{
    self, IngestService, IngestServiceServer,
};
use email2sms_proto::tonic::service::Routes;
use email2sms_runtime::auth::{Auth, Scope};
use email2sms_runtime::config::{
    AmqpArgs, ClientTokenArgs, ConfigError, DnsArgs, RedisArgs, ServerArgs, check_url,
    parse_listen_addr,
};
use email2sms_runtime::grpc::{self, ApiServices};
use email2sms_runtime::service::{ServiceConfig, StartError, bind_and_announce};
use email2sms_runtime::shutdown;
use email2sms_runtime::telemetry::TelemetryArgs;
use ipnet::IpNet;

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

    /// Comma-separated recipient domains accepted; mail to any other domain is refused (no open relay).
    #[arg(
        long,
        env = "EMAIL2SMS_SMS_DOMAINS",
        value_delimiter = ',',
        default_value = "sms.localhost"
    )]
    pub sms_domains: Vec<String>,

    /// Comma-separated CIDRs of relays allowed to state the real client through XCLIENT or PROXY.
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

    /// The policy service, asked when Redis cannot answer.
    #[arg(
        long,
        env = "EMAIL2SMS_POLICY_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub policy_url: String,

    #[command(flatten)]
    pub dns: DnsArgs,
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

    fn validate(&self) -> Result<(), ConfigError> {
        self.redis.validate()?;
        self.amqp.validate()?;
        self.client.validate()?;
        self.telemetry.validate()?;
        check_url("EMAIL2SMS_POLICY_URL", &self.policy_url, &["http", "https"])?;
        if self.sms_domains.iter().all(|d| d.trim().is_empty()) {
            return Err(ConfigError::Invalid {
                name: "EMAIL2SMS_SMS_DOMAINS",
                reason: "at least one SMS domain is needed, e.g. sms.example.net".into(),
            });
        }
        for domain in &self.sms_domains {
            email2sms_domain::DomainName::parse(domain.trim()).map_err(|error| {
                ConfigError::Invalid {
                    name: "EMAIL2SMS_SMS_DOMAINS",
                    reason: error.to_string(),
                }
            })?;
        }
        check_dns_name("EMAIL2SMS_GOOGLE_SPF_DOMAIN", &self.google_spf_domain)?;
        check_dns_name("EMAIL2SMS_OUTLOOK_SPF_DOMAIN", &self.outlook_spf_domain)?;
        Ok(())
    }
}

/// The diagnosis API. Its RPC arrives with the ingest issue; until then it answers UNIMPLEMENTED.
#[derive(Debug, Clone)]
pub struct IngestApi;

impl IngestService for IngestApi {}

/// The gRPC services of this binary: support staff (admin) ask it to explain a decision.
pub fn api_services(auth: &Auth) -> ApiServices {
    ApiServices {
        routes: Routes::new(IngestServiceServer::with_interceptor(
            IngestApi,
            auth.require(&[Scope::Admin]),
        )),
        names: vec![ingest_service_server::SERVICE_NAME],
        file_descriptor_set: email2sms_proto::FILE_DESCRIPTOR_SET,
    }
}

/// Everything `main` does after configuration: authenticate, bind, serve until SIGTERM.
///
/// The SMTP listener (`EMAIL2SMS_INGEST_SMTP_ADDR`) is not opened yet: it arrives with the SMTP
/// server itself, and a port that accepted mail it could not process would lose it.
pub async fn start(config: Config) -> Result<(), StartError> {
    let auth = Auth::from_args(&config.server)?;
    let listener = bind_and_announce(
        BINARY,
        "EMAIL2SMS_INGEST_GRPC_ADDR",
        "grpc",
        config.grpc_addr,
    )
    .await?;
    run(&config, &auth, listener, shutdown::signal()).await
}

/// Serves on `listener` until `shutdown` resolves.
pub async fn run(
    config: &Config,
    auth: &Auth,
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
    Ok(())
}
