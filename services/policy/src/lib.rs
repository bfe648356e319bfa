//! Policy service: the system of record for companies, Messenger users, security policies and
//! sender entries, compiled into Redis for ingest.
//!
//! Layout: [`error`] (the one error type and its gRPC mapping), [`model`] and [`paging`] (shared
//! conversions), [`store`] (tenant lookup, compile version, idempotency), [`entries`] (the one row
//! shape of every sender entry and its readiness), [`cache`] (the Redis layout ingest reads),
//! [`resolve`] (ResolveSender from Postgres), [`events`] (handlers the queue consumers call),
//! [`mail`] (the smarthost client and the texts of notification and alert mail), and one module
//! per group of RPCs ([`notifications`] and [`sender_log`] among them).
//!
//! # Benchmarks
//!
//! `examples/resolve_bench.rs` measures `ResolveSender` straight from Postgres (latency
//! percentiles over a mix of email, domain and IP hits and misses) and a full `RebuildCache`, on a
//! fresh database of 1,000,000 email, 100,000 domain and 10,000 IP entries (sizes are flags; it
//! also prints `EXPLAIN ANALYZE` of the resolution statement):
//!
//! ```text
//! cargo run --release -p email2sms-policy --example resolve_bench            # full size
//! cargo run --release -p email2sms-policy --example resolve_bench -- --small # smoke run
//! ```
#![forbid(unsafe_code)]

pub mod cache;
mod companies;
pub mod consumer;
pub mod domains;
mod email_addresses;
pub mod entries;
mod entry_crud;
mod entry_lists;
pub mod error;
pub mod events;
pub mod imports;
mod ip_addresses;
pub mod mail;
pub mod model;
pub mod notifications;
pub mod paging;
mod policies;
pub mod resolve;
pub mod sender_alerts;
pub mod sender_log;
pub mod store;
pub mod tenancy;
mod write;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use email2sms_proto::policy::v1 as pb;
use email2sms_proto::policy::v1::policy_service_server::{
    self, PolicyService, PolicyServiceServer,
};
use email2sms_proto::policy::v1::sender_resolution_service_server::{
    self, SenderResolutionService, SenderResolutionServiceServer,
};
use email2sms_proto::tonic::service::Routes;
use email2sms_proto::tonic::service::interceptor::InterceptedService;
use email2sms_proto::tonic::{self, Request, Response, Status};
use email2sms_runtime::auth::{Auth, Scope};
use email2sms_runtime::config::{
    ClientTokenArgs, ConfigError, DatabaseArgs, RedisArgs, ServerArgs, SmsDomainsArgs, check_url,
    parse_duration, parse_listen_addr,
};
use email2sms_runtime::grpc::ApiServices;
use email2sms_runtime::lifecycle::Lifecycle;
use email2sms_runtime::prober::Probe;
use email2sms_runtime::readiness;
use email2sms_runtime::service::{ServiceConfig, StartError, bind_and_announce};
use email2sms_runtime::telemetry::TelemetryArgs;
use email2sms_runtime::{db, shutdown};
use sqlx::PgPool;

pub use cache::Cache;
pub use error::Error;
pub use events::{EventOutcome, apply_domain_verification_changed};

pub const BINARY: &str = "email2sms-policy";
/// The Postgres schema this service owns; no other service reads it.
pub const SCHEMA: &str = "policy";
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// Largest request the admin API decodes. The CSV import sends the whole file in one message
/// (100,000 rows is about 5 MB); tonic's default of 4 MiB would refuse it.
pub const MAX_REQUEST_BYTES: usize = 32 * 1024 * 1024;

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

    /// Sender address of notification and alert mail.
    #[arg(
        long,
        env = "EMAIL2SMS_NOTIFY_FROM",
        default_value = "email2sms@localhost"
    )]
    pub notify_from: String,

    #[command(flatten)]
    pub sms: SmsDomainsArgs,

    /// How often new-mail-server alerts that failed are tried again, and due digests sent.
    #[arg(long, env = "EMAIL2SMS_SENDER_ALERT_RETRY_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub sender_alert_retry_interval: Duration,

    /// Most single new-mail-server alerts a company's admins get per
    /// EMAIL2SMS_SENDER_ALERT_WINDOW; the new servers beyond that are listed together in one
    /// digest once the oldest of them has waited a whole window (0: every alert in the digest).
    #[arg(long, env = "EMAIL2SMS_SENDER_ALERT_LIMIT", default_value_t = sender_alerts::AlertBudget::default().limit)]
    pub sender_alert_limit: u32,

    /// The window of EMAIL2SMS_SENDER_ALERT_LIMIT, and how long a digest collects servers.
    #[arg(long, env = "EMAIL2SMS_SENDER_ALERT_WINDOW", default_value = "1h", value_parser = parse_duration)]
    pub sender_alert_window: Duration,

    /// Prefix of every Redis key and channel this service writes (the compiled sender lookups);
    /// ingest must use the same. Lets several deployments or test runs share one Redis.
    #[arg(
        long,
        env = "EMAIL2SMS_REDIS_PREFIX",
        default_value = cache::DEFAULT_PREFIX
    )]
    pub redis_prefix: String,

    /// How often to check whether Redis lacks changes (after an outage or a flush) and rebuild
    /// the compiled lookups from Postgres.
    #[arg(long, env = "EMAIL2SMS_CACHE_REPAIR_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub cache_repair_interval: Duration,

    /// The most general IPv4 prefix an IP address entry, or a range a security policy allows,
    /// may have (see `tenancy::DEFAULT_WIDEST_IPV4_PREFIX` for why /24).
    #[arg(long, env = "EMAIL2SMS_POLICY_WIDEST_IPV4_PREFIX", default_value_t = tenancy::DEFAULT_WIDEST_IPV4_PREFIX)]
    pub widest_ipv4_prefix: u8,

    /// The most general IPv6 prefix an IP address entry or an allowed range may have (/48: one
    /// end site).
    #[arg(long, env = "EMAIL2SMS_POLICY_WIDEST_IPV6_PREFIX", default_value_t = tenancy::DEFAULT_WIDEST_IPV6_PREFIX)]
    pub widest_ipv6_prefix: u8,

    /// How many requests refused because another company holds the value a company may make per
    /// `EMAIL2SMS_POLICY_CONFLICT_WINDOW`; after that its creates are paused (see `tenancy`).
    #[arg(long, env = "EMAIL2SMS_POLICY_CONFLICT_BUDGET", default_value_t = tenancy::DEFAULT_CONFLICT_BUDGET)]
    pub conflict_budget: u32,

    /// The rolling window of the conflict budget.
    #[arg(long, env = "EMAIL2SMS_POLICY_CONFLICT_WINDOW", default_value = "24h", value_parser = parse_duration)]
    pub conflict_window: Duration,

    #[command(flatten)]
    pub database: DatabaseArgs,
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
}

impl Config {
    /// The company-boundary settings of the admin API.
    pub fn tenancy(&self) -> tenancy::TenancyLimits {
        tenancy::TenancyLimits {
            widest_ipv4_prefix: self.widest_ipv4_prefix,
            widest_ipv6_prefix: self.widest_ipv6_prefix,
            conflict_budget: self.conflict_budget,
            conflict_window: self.conflict_window,
        }
    }

    /// The smarthost client this configuration describes.
    pub fn mailer(&self) -> Result<mail::Mailer, ConfigError> {
        let domains = self.sms.names();
        let sms_domain = domains.first().map_or("sms.localhost", |d| d.as_str());
        mail::Mailer::new(&self.smtp_relay, &self.notify_from, sms_domain).map_err(|reason| {
            ConfigError::Invalid {
                name: "EMAIL2SMS_SMTP_RELAY",
                reason,
            }
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
        self.database.validate()?;
        self.redis.validate()?;
        self.queue.validate()?;
        self.client.validate()?;
        self.telemetry.validate()?;
        self.sms.validate()?;
        check_url(
            "EMAIL2SMS_VERIFICATION_URL",
            &self.verification_url,
            &["http", "https"],
        )?;
        check_url("EMAIL2SMS_SMTP_RELAY", &self.smtp_relay, &["smtp", "smtps"])?;
        self.mailer()?;
        if self.widest_ipv4_prefix > 32 {
            return Err(ConfigError::Invalid {
                name: "EMAIL2SMS_POLICY_WIDEST_IPV4_PREFIX",
                reason: "an IPv4 prefix is between 0 and 32".into(),
            });
        }
        if self.widest_ipv6_prefix > 128 {
            return Err(ConfigError::Invalid {
                name: "EMAIL2SMS_POLICY_WIDEST_IPV6_PREFIX",
                reason: "an IPv6 prefix is between 0 and 128".into(),
            });
        }
        if self.conflict_budget == 0 {
            return Err(ConfigError::Invalid {
                name: "EMAIL2SMS_POLICY_CONFLICT_BUDGET",
                reason: "must be at least 1, or no company could ever meet one conflict".into(),
            });
        }
        if self.conflict_window.is_zero() {
            return Err(ConfigError::Invalid {
                name: "EMAIL2SMS_POLICY_CONFLICT_WINDOW",
                reason: "must be longer than zero".into(),
            });
        }
        if self
            .redis_prefix
            .chars()
            .any(|c| c.is_whitespace() || c == '*')
        {
            return Err(ConfigError::Invalid {
                name: "EMAIL2SMS_REDIS_PREFIX",
                reason: "the prefix must not contain whitespace or `*`".into(),
            });
        }
        for (name, value) in [
            (
                "EMAIL2SMS_SENDER_ALERT_RETRY_INTERVAL",
                self.sender_alert_retry_interval,
            ),
            ("EMAIL2SMS_SENDER_ALERT_WINDOW", self.sender_alert_window),
        ] {
            if value.is_zero() {
                return Err(ConfigError::Invalid {
                    name,
                    reason: "must be longer than zero".into(),
                });
            }
        }
        Ok(())
    }
}

/// The admin API (scope `admin`).
#[derive(Debug, Clone)]
pub struct PolicyApi {
    pool: PgPool,
    cache: Cache,
    /// `None` only in tests that run without a verification service; the domain RPCs that need
    /// it then answer UNIMPLEMENTED.
    verification: Option<domains::VerificationClient>,
    /// `None` only in tests without a smarthost; notifications then answer UNIMPLEMENTED.
    mailer: Option<mail::Mailer>,
    tenancy: tenancy::TenancyLimits,
    /// The page token key, read from the database on the first List (see `paging`).
    page_token_key: email2sms_runtime::page_token::PageTokenKeyCell,
    /// Where notification batches a request starts run: the binary's task tracker, so a stop
    /// waits for them within its grace instead of cutting a batch off unseen.
    background: tokio_util::task::TaskTracker,
}

impl PolicyApi {
    pub fn new(pool: PgPool, cache: Cache) -> Self {
        Self {
            pool,
            cache,
            verification: None,
            mailer: None,
            tenancy: tenancy::TenancyLimits::default(),
            page_token_key: Default::default(),
            background: tokio_util::task::TaskTracker::new(),
        }
    }

    /// Runs the notification batches requests start on `tracker` (the binary's).
    pub fn with_background(mut self, tracker: tokio_util::task::TaskTracker) -> Self {
        self.background = tracker;
        self
    }

    pub fn with_tenancy(mut self, limits: tenancy::TenancyLimits) -> Self {
        self.tenancy = limits;
        self
    }

    pub fn with_mailer(mut self, mailer: mail::Mailer) -> Self {
        self.mailer = Some(mailer);
        self
    }

    pub fn with_verification(mut self, client: domains::VerificationClient) -> Self {
        self.verification = Some(client);
        self
    }
}

#[tonic::async_trait]
impl PolicyService for PolicyApi {
    async fn upsert_company(
        &self,
        request: Request<pb::UpsertCompanyRequest>,
    ) -> Result<Response<pb::UpsertCompanyResponse>, Status> {
        Ok(Response::new(
            PolicyApi::upsert_company(self, request.into_inner()).await?,
        ))
    }

    async fn get_company(
        &self,
        request: Request<pb::GetCompanyRequest>,
    ) -> Result<Response<pb::GetCompanyResponse>, Status> {
        Ok(Response::new(
            PolicyApi::get_company(self, request.into_inner()).await?,
        ))
    }

    async fn upsert_messenger_user(
        &self,
        request: Request<pb::UpsertMessengerUserRequest>,
    ) -> Result<Response<pb::UpsertMessengerUserResponse>, Status> {
        Ok(Response::new(
            PolicyApi::upsert_messenger_user(self, request.into_inner()).await?,
        ))
    }

    async fn get_messenger_user(
        &self,
        request: Request<pb::GetMessengerUserRequest>,
    ) -> Result<Response<pb::GetMessengerUserResponse>, Status> {
        Ok(Response::new(
            PolicyApi::get_messenger_user(self, request.into_inner()).await?,
        ))
    }

    async fn list_messenger_users(
        &self,
        request: Request<pb::ListMessengerUsersRequest>,
    ) -> Result<Response<pb::ListMessengerUsersResponse>, Status> {
        Ok(Response::new(
            PolicyApi::list_messenger_users(self, request.into_inner()).await?,
        ))
    }

    async fn create_security_policy(
        &self,
        request: Request<pb::CreateSecurityPolicyRequest>,
    ) -> Result<Response<pb::CreateSecurityPolicyResponse>, Status> {
        Ok(Response::new(
            PolicyApi::create_security_policy(self, request.into_inner()).await?,
        ))
    }

    async fn get_security_policy(
        &self,
        request: Request<pb::GetSecurityPolicyRequest>,
    ) -> Result<Response<pb::GetSecurityPolicyResponse>, Status> {
        Ok(Response::new(
            PolicyApi::get_security_policy(self, request.into_inner()).await?,
        ))
    }

    async fn list_security_policies(
        &self,
        request: Request<pb::ListSecurityPoliciesRequest>,
    ) -> Result<Response<pb::ListSecurityPoliciesResponse>, Status> {
        Ok(Response::new(
            PolicyApi::list_security_policies(self, request.into_inner()).await?,
        ))
    }

    async fn update_security_policy(
        &self,
        request: Request<pb::UpdateSecurityPolicyRequest>,
    ) -> Result<Response<pb::UpdateSecurityPolicyResponse>, Status> {
        Ok(Response::new(
            PolicyApi::update_security_policy(self, request.into_inner()).await?,
        ))
    }

    async fn delete_security_policy(
        &self,
        request: Request<pb::DeleteSecurityPolicyRequest>,
    ) -> Result<Response<pb::DeleteSecurityPolicyResponse>, Status> {
        Ok(Response::new(
            PolicyApi::delete_security_policy(self, request.into_inner()).await?,
        ))
    }

    async fn get_domain(
        &self,
        request: Request<pb::GetDomainRequest>,
    ) -> Result<Response<pb::GetDomainResponse>, Status> {
        Ok(Response::new(
            PolicyApi::get_domain(self, request.into_inner()).await?,
        ))
    }

    async fn list_domains(
        &self,
        request: Request<pb::ListDomainsRequest>,
    ) -> Result<Response<pb::ListDomainsResponse>, Status> {
        Ok(Response::new(
            PolicyApi::list_domains(self, request.into_inner()).await?,
        ))
    }

    async fn allocate_domain(
        &self,
        request: Request<pb::AllocateDomainRequest>,
    ) -> Result<Response<pb::AllocateDomainResponse>, Status> {
        Ok(Response::new(
            PolicyApi::allocate_domain(self, request.into_inner()).await?,
        ))
    }

    async fn delete_domain(
        &self,
        request: Request<pb::DeleteDomainRequest>,
    ) -> Result<Response<pb::DeleteDomainResponse>, Status> {
        Ok(Response::new(
            PolicyApi::delete_domain(self, request.into_inner()).await?,
        ))
    }

    async fn create_email_address(
        &self,
        request: Request<pb::CreateEmailAddressRequest>,
    ) -> Result<Response<pb::CreateEmailAddressResponse>, Status> {
        Ok(Response::new(
            PolicyApi::create_email_address(self, request.into_inner()).await?,
        ))
    }

    async fn get_email_address(
        &self,
        request: Request<pb::GetEmailAddressRequest>,
    ) -> Result<Response<pb::GetEmailAddressResponse>, Status> {
        Ok(Response::new(
            PolicyApi::get_email_address(self, request.into_inner()).await?,
        ))
    }

    async fn list_email_addresses(
        &self,
        request: Request<pb::ListEmailAddressesRequest>,
    ) -> Result<Response<pb::ListEmailAddressesResponse>, Status> {
        Ok(Response::new(
            PolicyApi::list_email_addresses(self, request.into_inner()).await?,
        ))
    }

    async fn update_email_address(
        &self,
        request: Request<pb::UpdateEmailAddressRequest>,
    ) -> Result<Response<pb::UpdateEmailAddressResponse>, Status> {
        Ok(Response::new(
            PolicyApi::update_email_address(self, request.into_inner()).await?,
        ))
    }

    async fn delete_email_address(
        &self,
        request: Request<pb::DeleteEmailAddressRequest>,
    ) -> Result<Response<pb::DeleteEmailAddressResponse>, Status> {
        Ok(Response::new(
            PolicyApi::delete_email_address(self, request.into_inner()).await?,
        ))
    }

    async fn create_ip_address(
        &self,
        request: Request<pb::CreateIpAddressRequest>,
    ) -> Result<Response<pb::CreateIpAddressResponse>, Status> {
        Ok(Response::new(
            PolicyApi::create_ip_address(self, request.into_inner()).await?,
        ))
    }

    async fn get_ip_address(
        &self,
        request: Request<pb::GetIpAddressRequest>,
    ) -> Result<Response<pb::GetIpAddressResponse>, Status> {
        Ok(Response::new(
            PolicyApi::get_ip_address(self, request.into_inner()).await?,
        ))
    }

    async fn list_ip_addresses(
        &self,
        request: Request<pb::ListIpAddressesRequest>,
    ) -> Result<Response<pb::ListIpAddressesResponse>, Status> {
        Ok(Response::new(
            PolicyApi::list_ip_addresses(self, request.into_inner()).await?,
        ))
    }

    async fn update_ip_address(
        &self,
        request: Request<pb::UpdateIpAddressRequest>,
    ) -> Result<Response<pb::UpdateIpAddressResponse>, Status> {
        Ok(Response::new(
            PolicyApi::update_ip_address(self, request.into_inner()).await?,
        ))
    }

    async fn delete_ip_address(
        &self,
        request: Request<pb::DeleteIpAddressRequest>,
    ) -> Result<Response<pb::DeleteIpAddressResponse>, Status> {
        Ok(Response::new(
            PolicyApi::delete_ip_address(self, request.into_inner()).await?,
        ))
    }

    async fn create_domain(
        &self,
        request: Request<pb::CreateDomainRequest>,
    ) -> Result<Response<pb::CreateDomainResponse>, Status> {
        Ok(Response::new(
            PolicyApi::create_domain(self, request.into_inner()).await?,
        ))
    }

    async fn verify_domain(
        &self,
        request: Request<pb::VerifyDomainRequest>,
    ) -> Result<Response<pb::VerifyDomainResponse>, Status> {
        Ok(Response::new(
            PolicyApi::verify_domain(self, request.into_inner()).await?,
        ))
    }

    async fn rotate_domain_token(
        &self,
        request: Request<pb::RotateDomainTokenRequest>,
    ) -> Result<Response<pb::RotateDomainTokenResponse>, Status> {
        Ok(Response::new(
            PolicyApi::rotate_domain_token(self, request.into_inner()).await?,
        ))
    }

    async fn preview_import(
        &self,
        request: Request<pb::PreviewImportRequest>,
    ) -> Result<Response<pb::PreviewImportResponse>, Status> {
        Ok(Response::new(
            PolicyApi::preview_import(self, request.into_inner()).await?,
        ))
    }

    async fn get_import(
        &self,
        request: Request<pb::GetImportRequest>,
    ) -> Result<Response<pb::GetImportResponse>, Status> {
        Ok(Response::new(
            PolicyApi::get_import(self, request.into_inner()).await?,
        ))
    }

    async fn list_import_rows(
        &self,
        request: Request<pb::ListImportRowsRequest>,
    ) -> Result<Response<pb::ListImportRowsResponse>, Status> {
        Ok(Response::new(
            PolicyApi::list_import_rows(self, request.into_inner()).await?,
        ))
    }

    async fn commit_import(
        &self,
        request: Request<pb::CommitImportRequest>,
    ) -> Result<Response<pb::CommitImportResponse>, Status> {
        Ok(Response::new(
            PolicyApi::commit_import(self, request.into_inner()).await?,
        ))
    }

    async fn send_notification(
        &self,
        request: Request<pb::SendNotificationRequest>,
    ) -> Result<Response<pb::SendNotificationResponse>, Status> {
        Ok(Response::new(
            PolicyApi::send_notification(self, request.into_inner()).await?,
        ))
    }

    async fn get_notification(
        &self,
        request: Request<pb::GetNotificationRequest>,
    ) -> Result<Response<pb::GetNotificationResponse>, Status> {
        Ok(Response::new(
            PolicyApi::get_notification(self, request.into_inner()).await?,
        ))
    }

    async fn list_notification_results(
        &self,
        request: Request<pb::ListNotificationResultsRequest>,
    ) -> Result<Response<pb::ListNotificationResultsResponse>, Status> {
        Ok(Response::new(
            PolicyApi::list_notification_results(self, request.into_inner()).await?,
        ))
    }

    async fn retry_notification(
        &self,
        request: Request<pb::RetryNotificationRequest>,
    ) -> Result<Response<pb::RetryNotificationResponse>, Status> {
        Ok(Response::new(
            PolicyApi::retry_notification(self, request.into_inner()).await?,
        ))
    }

    async fn list_sender_log(
        &self,
        request: Request<pb::ListSenderLogRequest>,
    ) -> Result<Response<pb::ListSenderLogResponse>, Status> {
        Ok(Response::new(
            PolicyApi::list_sender_log(self, request.into_inner()).await?,
        ))
    }
}

/// The internal resolution API ingest falls back to when Redis cannot answer (scope `internal`).
#[derive(Debug, Clone)]
pub struct SenderResolutionApi {
    pool: PgPool,
    cache: Cache,
}

impl SenderResolutionApi {
    pub fn new(pool: PgPool, cache: Cache) -> Self {
        Self { pool, cache }
    }
}

#[tonic::async_trait]
impl SenderResolutionService for SenderResolutionApi {
    async fn resolve_sender(
        &self,
        request: Request<pb::ResolveSenderRequest>,
    ) -> Result<Response<pb::ResolveSenderResponse>, Status> {
        Ok(Response::new(self.resolve(request.into_inner()).await?))
    }

    async fn rebuild_cache(
        &self,
        request: Request<pb::RebuildCacheRequest>,
    ) -> Result<Response<pb::RebuildCacheResponse>, Status> {
        Ok(Response::new(
            SenderResolutionApi::rebuild_cache(self, request.into_inner()).await?,
        ))
    }
}

/// The gRPC services of this binary, each behind the token scope it requires.
pub fn api_services(
    auth: &Auth,
    pool: PgPool,
    cache: Cache,
    verification: domains::VerificationClient,
    mailer: mail::Mailer,
    tenancy: tenancy::TenancyLimits,
    background: tokio_util::task::TaskTracker,
) -> ApiServices {
    // The size limit goes on the generated server itself, inside the interceptor, because the
    // shared server in libs/runtime does not know this service's message sizes.
    let policy = PolicyServiceServer::new(
        PolicyApi::new(pool.clone(), cache.clone())
            .with_verification(verification)
            .with_mailer(mailer)
            .with_tenancy(tenancy)
            .with_background(background),
    )
    .max_decoding_message_size(MAX_REQUEST_BYTES);
    ApiServices {
        routes: Routes::new(InterceptedService::new(
            policy,
            auth.require(&[Scope::Admin]),
        ))
        .add_service(SenderResolutionServiceServer::with_interceptor(
            SenderResolutionApi::new(pool, cache),
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
    let life = Lifecycle::new(&config.server);
    serve(&config, &auth, pool, listener, life, shutdown::signal()).await
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
    let verification = domains::VerificationClient::new(
        &config.verification_url,
        config.client.api_token.as_deref(),
    )
    .map_err(|reason| {
        StartError::Config(ConfigError::Invalid {
            name: "EMAIL2SMS_VERIFICATION_URL",
            reason,
        })
    })?;
    let mailer = config.mailer().map_err(StartError::Config)?;
    let cache = Cache::new(&config.redis.redis_url, &config.redis_prefix).map_err(|e| {
        StartError::Config(ConfigError::Invalid {
            name: "REDIS_URL",
            reason: e.to_string(),
        })
    })?;
    // Redis may be down or flushed: the repair loop brings it back in line with Postgres.
    life.spawn(
        "cache repair",
        cache
            .clone()
            .repair_loop(pool.clone(), config.cache_repair_interval, life.stopped()),
    );
    let stop_consuming = life.stop_token();
    let alerts = sender_alerts::SenderAlerts {
        mailer: mailer.clone(),
        budget: sender_alerts::AlertBudget {
            limit: config.sender_alert_limit,
            window: config.sender_alert_window,
        },
    };
    life.spawn(
        "event consumer",
        consumer::consume_events(
            pool.clone(),
            cache.clone(),
            Some(alerts.clone()),
            config.queue.clone(),
            stop_consuming.clone(),
        ),
    );
    life.spawn(
        "sender alert retries",
        alerts.retry_loop(
            pool.clone(),
            config.sender_alert_retry_interval,
            stop_consuming,
        ),
    );
    // Batches a previous process left pending; the task ends by itself, and the stop waits for
    // it within the grace rather than cutting a batch in half.
    life.spawn(
        "unfinished notifications",
        notifications::resume_unfinished(pool.clone(), mailer.clone()),
    );
    life.watch_readiness(readiness::POLICY, vec![Probe::postgres(pool.clone())]);
    life.serve_grpc(
        api_services(
            auth,
            pool.clone(),
            cache,
            verification,
            mailer,
            config.tenancy(),
            life.tracker(),
        ),
        listener,
    )
    .await?;
    life.run(shutdown, async {
        pool.close().await;
    })
    .await?;
    Ok(())
}
