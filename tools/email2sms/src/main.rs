//! `email2sms`: the operator's command.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use email2sms_runtime::config::{EX_UNAVAILABLE, exit_config_error, parse_or_exit};
use email2sms_runtime::telemetry::{self, TelemetryArgs};

#[derive(Debug, Parser)]
#[command(
    name = "email2sms",
    version,
    about = "Operate an Email2SMS Security cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the database if missing and apply every service's migrations (safe to repeat).
    Migrate {
        /// PostgreSQL connection URL.
        #[arg(long, env = "DATABASE_URL", default_value = email2sms_runtime::db::DEFAULT_DATABASE_URL, hide_env_values = true)]
        database_url: String,
    },
    /// Run the whole cluster on this machine against local PostgreSQL, Redis and RabbitMQ.
    Dev {
        /// PostgreSQL connection URL (migrated before the services start).
        #[arg(long, env = "DATABASE_URL", default_value = email2sms_runtime::db::DEFAULT_DATABASE_URL, hide_env_values = true)]
        database_url: String,
        /// Directory holding the service binaries; defaults to this executable's directory.
        #[arg(long, env = "EMAIL2SMS_BIN_DIR")]
        bin_dir: Option<PathBuf>,
    },
    /// Administer the policy service.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Rebuild the compiled sender lookups in Redis from Postgres (the RebuildCache RPC).
    RebuildCache {
        /// The policy service.
        #[arg(
            long,
            env = "EMAIL2SMS_POLICY_URL",
            default_value = "http://127.0.0.1:50051"
        )]
        policy_url: String,
        /// Bearer token with the `internal` scope.
        #[arg(long, env = "EMAIL2SMS_API_TOKEN", hide_env_values = true)]
        api_token: Option<String>,
        /// Rebuild only this company's keys; all of them when empty.
        #[arg(long, default_value = "")]
        company_id: String,
    },
}

fn main() -> ExitCode {
    let cli: Cli = parse_or_exit();
    if let Err(error) = cli.telemetry.validate() {
        exit_config_error("email2sms", &error);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("email2sms: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let _telemetry = match telemetry::init("email2sms", &cli.telemetry) {
            Ok(guard) => guard,
            Err(error) => exit_config_error("email2sms", &error),
        };
        match cli.command {
            Command::Migrate { database_url } => migrate(&database_url).await,
            Command::Policy {
                command:
                    PolicyCommand::RebuildCache {
                        policy_url,
                        api_token,
                        company_id,
                    },
            } => rebuild_cache(&policy_url, api_token.as_deref(), company_id).await,
            Command::Dev {
                database_url,
                bin_dir,
            } => {
                let code = migrate(&database_url).await;
                if code != ExitCode::SUCCESS {
                    return code;
                }
                let bin_dir = bin_dir.unwrap_or_else(email2sms::dev::default_bin_dir);
                match email2sms::dev::run(&bin_dir, email2sms_runtime::shutdown::signal()).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(error) => {
                        eprintln!("email2sms dev: {error}");
                        ExitCode::FAILURE
                    }
                }
            }
        }
    })
}

async fn migrate(database_url: &str) -> ExitCode {
    if let Err(error) = email2sms_runtime::config::check_url(
        "DATABASE_URL",
        database_url,
        &["postgres", "postgresql"],
    ) {
        exit_config_error("email2sms", &error);
    }
    match email2sms::migrate_all(database_url).await {
        Ok(()) => {
            println!(
                "migrations applied to {}",
                email2sms_runtime::db::describe(database_url)
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("email2sms migrate: {error}");
            ExitCode::from(EX_UNAVAILABLE as u8)
        }
    }
}

async fn rebuild_cache(url: &str, token: Option<&str>, company_id: String) -> ExitCode {
    use email2sms_proto::policy::v1 as pb;
    use email2sms_proto::policy::v1::sender_resolution_service_client::SenderResolutionServiceClient;
    use email2sms_proto::tonic::transport::Endpoint;

    if let Err(error) =
        email2sms_runtime::config::check_url("EMAIL2SMS_POLICY_URL", url, &["http", "https"])
    {
        exit_config_error("email2sms", &error);
    }
    let token = match email2sms_runtime::auth::BearerToken::new(token) {
        Ok(token) => token,
        Err(error) => exit_config_error("email2sms", &error),
    };
    let channel = match Endpoint::from_shared(url.to_owned()) {
        Ok(endpoint) => endpoint.connect_timeout(std::time::Duration::from_secs(5)),
        Err(error) => {
            eprintln!("email2sms policy rebuild-cache: invalid EMAIL2SMS_POLICY_URL: {error}");
            return ExitCode::FAILURE;
        }
    };
    let channel = match channel.connect().await {
        Ok(channel) => channel,
        Err(error) => {
            eprintln!("email2sms policy rebuild-cache: cannot reach {url}: {error}");
            return ExitCode::from(EX_UNAVAILABLE as u8);
        }
    };
    let mut client = SenderResolutionServiceClient::with_interceptor(channel, token);
    match client
        .rebuild_cache(pb::RebuildCacheRequest { company_id })
        .await
    {
        Ok(response) => {
            let response = response.into_inner();
            println!(
                "cache rebuilt: {} keys written, {} stale keys removed, version {}",
                response.keys_written, response.keys_removed, response.version
            );
            ExitCode::SUCCESS
        }
        Err(status) => {
            eprintln!(
                "email2sms policy rebuild-cache: {:?}: {}",
                status.code(),
                status.message()
            );
            ExitCode::FAILURE
        }
    }
}
