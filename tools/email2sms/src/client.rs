//! Where the services are and how to authenticate to them: the same environment variables the
//! services themselves read (`EMAIL2SMS_POLICY_URL` as ingest does), each also a flag.

use std::path::PathBuf;
use std::time::Duration;

use email2sms_proto::dispatch::v1::dispatch_service_client::DispatchServiceClient;
use email2sms_proto::ingest::v1::ingest_service_client::IngestServiceClient;
use email2sms_proto::policy::v1::policy_service_client::PolicyServiceClient;
use email2sms_proto::policy::v1::sender_resolution_service_client::SenderResolutionServiceClient;
use email2sms_proto::tonic::service::interceptor::InterceptedService;
use email2sms_proto::tonic::transport::{Channel, Endpoint};
use email2sms_runtime::auth::BearerToken;

use crate::error::CliError;

/// A client of one service with the bearer token on every call.
pub type Authed = InterceptedService<Channel, BearerToken>;

/// The largest answer read: a preview of 1000 rows or a page of 1000 SMS stays far below it, and a
/// CSV upload goes the other way (the policy service accepts 32 MiB).
const MAX_MESSAGE_BYTES: usize = 32 * 1024 * 1024;

/// The connection flags every gRPC subcommand takes (global: before or after the subcommand).
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectionArgs {
    /// The policy service (companies, users, policies, entries, imports, sender log).
    #[arg(
        long,
        global = true,
        env = "EMAIL2SMS_POLICY_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub policy_url: String,
    /// The dispatch service (messages, reviews).
    #[arg(
        long,
        global = true,
        env = "EMAIL2SMS_DISPATCH_URL",
        default_value = "http://127.0.0.1:50054"
    )]
    pub dispatch_url: String,
    /// The ingest service's gRPC API (diagnose).
    #[arg(
        long,
        global = true,
        env = "EMAIL2SMS_INGEST_URL",
        default_value = "http://127.0.0.1:50053"
    )]
    pub ingest_url: String,
    /// Bearer token: `admin` scope for everything but `policy rebuild-cache`, which needs
    /// `internal`. Prefer --token-file (or EMAIL2SMS_API_TOKEN_FILE): a flag is visible in `ps`.
    #[arg(
        long,
        global = true,
        env = "EMAIL2SMS_API_TOKEN",
        hide_env_values = true
    )]
    pub api_token: Option<String>,
    /// A file holding the bearer token (trailing line end ignored).
    #[arg(long, global = true, conflicts_with = "api_token")]
    pub token_file: Option<PathBuf>,
    /// How long one call may take (e.g. 30s, 2m).
    #[arg(long, global = true, default_value = "30s", value_parser = email2sms_runtime::config::parse_duration)]
    pub timeout: Duration,
}

/// The services this command calls.
#[derive(Debug, Clone, Copy)]
pub enum Service {
    Policy,
    Dispatch,
    Ingest,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::Policy => "policy",
            Service::Dispatch => "dispatch",
            Service::Ingest => "ingest",
        }
    }
    fn variable(self) -> &'static str {
        match self {
            Service::Policy => "EMAIL2SMS_POLICY_URL",
            Service::Dispatch => "EMAIL2SMS_DISPATCH_URL",
            Service::Ingest => "EMAIL2SMS_INGEST_URL",
        }
    }
}

impl ConnectionArgs {
    fn url(&self, service: Service) -> &str {
        match service {
            Service::Policy => &self.policy_url,
            Service::Dispatch => &self.dispatch_url,
            Service::Ingest => &self.ingest_url,
        }
    }

    fn token(&self) -> Result<BearerToken, CliError> {
        let from_file = match &self.token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|source| CliError::Input {
                        path: path.clone(),
                        source,
                    })?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
            ),
            None => None,
        };
        let token = from_file.as_deref().or(self.api_token.as_deref());
        BearerToken::new(token).map_err(|error| CliError::Usage(error.to_string()))
    }

    /// Connects to `service`; a bad URL is a usage error (64), no answer is 69.
    pub async fn channel(&self, service: Service) -> Result<Authed, CliError> {
        let url = self.url(service);
        email2sms_runtime::config::check_url(service.variable(), url, &["http", "https"])
            .map_err(|error| CliError::Usage(error.to_string()))?;
        let token = self.token()?;
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|error| CliError::Usage(format!("{}: {error}", service.variable())))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(self.timeout);
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| CliError::Unreachable {
                service: service.name(),
                url: url.to_owned(),
                source,
            })?;
        Ok(InterceptedService::new(channel, token))
    }

    pub async fn policy(&self) -> Result<PolicyServiceClient<Authed>, CliError> {
        Ok(
            PolicyServiceClient::new(self.channel(Service::Policy).await?)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
    }

    pub async fn resolution(&self) -> Result<SenderResolutionServiceClient<Authed>, CliError> {
        Ok(SenderResolutionServiceClient::new(
            self.channel(Service::Policy).await?,
        ))
    }

    pub async fn dispatch(&self) -> Result<DispatchServiceClient<Authed>, CliError> {
        Ok(
            DispatchServiceClient::new(self.channel(Service::Dispatch).await?)
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
    }

    pub async fn ingest(&self) -> Result<IngestServiceClient<Authed>, CliError> {
        Ok(
            IngestServiceClient::new(self.channel(Service::Ingest).await?)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
    }
}

/// Paging flags of every list subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct PageArgs {
    /// Rows per page (0: the server's default of 50; at most 1000).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i32).range(0..=1000))]
    pub page_size: i32,
    /// The `next_page_token` of a previous page.
    #[arg(long, default_value = "")]
    pub page_token: String,
}

/// A fresh idempotency key for a create, so that a retried call returns the first one's result.
pub fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
