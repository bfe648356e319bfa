//! `email2sms`: the operator's command.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use email2sms::client::ConnectionArgs;
use email2sms::commands::{
    company, diagnose, domain, email, import, ip, messages, policy, queue, sender_log, user,
};
use email2sms::error::CliError;
use email2sms::output::Output;
use email2sms_runtime::config::{EX_UNAVAILABLE, exit_config_error, parse_or_exit};
use email2sms_runtime::telemetry::{self, TelemetryArgs};

const EXIT_CODES: &str = "\
Exit codes:
  0   done
  1   the server refused (its message and each field violation are printed)
  64  usage: a bad flag, argument or environment value
  66  an input file (CSV, token file) cannot be read
  69  a service or RabbitMQ cannot be reached (or answered UNAVAILABLE)
  77  the token is missing, unknown or of the wrong scope";

#[derive(Debug, Parser)]
#[command(
    name = "email2sms",
    version,
    about = "Operate an Email2SMS Security cluster",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Print JSON (one document on stdout, errors included) instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    connection: ConnectionArgs,
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
    /// Companies (UpsertCompany, GetCompany).
    #[command(after_help = EXIT_CODES)]
    Company {
        #[command(subcommand)]
        command: company::CompanyCommand,
    },
    /// A company's Messenger users, the identities SMS are sent as.
    #[command(after_help = EXIT_CODES)]
    User {
        #[command(subcommand)]
        command: user::UserCommand,
    },
    /// Security policies, and rebuilding the compiled sender lookups.
    #[command(after_help = EXIT_CODES)]
    Policy {
        #[command(subcommand)]
        command: policy::PolicyCommand,
    },
    /// Email address entries.
    #[command(after_help = EXIT_CODES)]
    Email {
        #[command(subcommand)]
        command: email::EmailCommand,
    },
    /// IP address entries.
    #[command(after_help = EXIT_CODES)]
    Ip {
        #[command(subcommand)]
        command: ip::IpCommand,
    },
    /// Domain entries and their DNS proof.
    #[command(after_help = EXIT_CODES)]
    Domain {
        #[command(subcommand)]
        command: domain::DomainCommand,
    },
    /// CSV import of email address entries: preview, then commit.
    #[command(after_help = EXIT_CODES)]
    Import {
        #[command(subcommand)]
        command: import::ImportCommand,
    },
    /// The mail servers seen sending for a company.
    #[command(after_help = EXIT_CODES)]
    SenderLog(sender_log::SenderLogArgs),
    /// Explain what ingest would do with an email, step by step (sends nothing).
    #[command(after_help = EXIT_CODES)]
    Diagnose(diagnose::DiagnoseArgs),
    /// The mailq: depth of the job queue, its retry tiers and the dead-letter queue.
    #[command(after_help = EXIT_CODES)]
    Queue {
        #[command(subcommand)]
        command: Option<queue::QueueCommand>,
        #[command(flatten)]
        queue: email2sms_queue::QueueArgs,
    },
    /// What happened to each SMS.
    #[command(after_help = EXIT_CODES)]
    Messages {
        #[command(subcommand)]
        command: messages::MessagesCommand,
    },
    /// SMS held for review after a crash mid-send.
    #[command(after_help = EXIT_CODES)]
    Review {
        #[command(subcommand)]
        command: messages::ReviewCommand,
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
        let output = Output { json: cli.json };
        let connection = &cli.connection;
        let result = match cli.command {
            Command::Migrate { database_url } => return migrate(&database_url).await,
            Command::Dev {
                database_url,
                bin_dir,
            } => {
                let code = migrate(&database_url).await;
                if code != ExitCode::SUCCESS {
                    return code;
                }
                let bin_dir = bin_dir.unwrap_or_else(email2sms::dev::default_bin_dir);
                return match email2sms::dev::run(&bin_dir, email2sms_runtime::shutdown::signal())
                    .await
                {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(error) => {
                        eprintln!("email2sms dev: {error}");
                        ExitCode::FAILURE
                    }
                };
            }
            Command::Company { command } => company::run(command, connection, output).await,
            Command::User { command } => user::run(command, connection, output).await,
            Command::Policy { command } => policy::run(command, connection, output).await,
            Command::Email { command } => email::run(command, connection, output).await,
            Command::Ip { command } => ip::run(command, connection, output).await,
            Command::Messages { command } => {
                messages::run_messages(command, connection, output).await
            }
            Command::Review { command } => messages::run_review(command, connection, output).await,
            Command::Domain { command } => domain::run(command, connection, output).await,
            Command::Import { command } => import::run(command, connection, output).await,
            Command::SenderLog(args) => sender_log::run(args, connection, output).await,
            Command::Diagnose(args) => diagnose::run(args, connection, output).await,
            Command::Queue {
                command: None,
                queue: args,
            } => queue::status(&args, output).await,
            Command::Queue {
                command: Some(queue::QueueCommand::Dead { command }),
                ..
            } => queue::run(command, output).await,
        };
        finish(result, output)
    })
}

fn finish(result: Result<(), CliError>, output: Output) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            error.report(output.json);
            ExitCode::from(error.exit_code())
        }
    }
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
