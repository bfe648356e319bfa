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
        #[arg(long, env = "DATABASE_URL", default_value = email2sms_runtime::db::DEFAULT_DATABASE_URL)]
        database_url: String,
    },
    /// Run the whole cluster on this machine against local PostgreSQL, Redis and RabbitMQ.
    Dev {
        /// PostgreSQL connection URL (migrated before the services start).
        #[arg(long, env = "DATABASE_URL", default_value = email2sms_runtime::db::DEFAULT_DATABASE_URL)]
        database_url: String,
        /// Directory holding the service binaries; defaults to this executable's directory.
        #[arg(long, env = "EMAIL2SMS_BIN_DIR")]
        bin_dir: Option<PathBuf>,
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
