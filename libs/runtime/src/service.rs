//! The shape of every service binary's `main`: configuration → telemetry → start, with the exit
//! code telling an orchestrator whether a restart can help.

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;

use crate::config::{ConfigError, EX_USAGE, exit_config_error, parse_or_exit_taking};
use crate::telemetry::{self, TelemetryArgs};

/// A binary's complete configuration.
pub trait ServiceConfig: clap::Parser {
    fn telemetry(&self) -> &TelemetryArgs;
    /// The address its gRPC server listens on (what `--health-check` asks).
    fn grpc_addr(&self) -> SocketAddr;
    /// Checks everything that can be checked without touching the network.
    fn validate(&self) -> Result<(), ConfigError>;
}

/// A failure that ends the process, with the sysexits code that describes it.
pub trait Failure: std::fmt::Display {
    fn exit_code(&self) -> u8;
}

impl Failure for ConfigError {
    fn exit_code(&self) -> u8 {
        EX_USAGE as u8
    }
}

/// Runs a service binary: parse and validate the configuration (exit 64 when wrong, before anything
/// is bound), start telemetry, then `start` until it returns.
pub fn main<C, F, Fut, E>(binary: &'static str, start: F) -> ExitCode
where
    C: ServiceConfig,
    F: FnOnce(C) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Failure,
{
    let (config, health_check) = parse_or_exit_taking::<C, _>(crate::health_check::take_flag);
    if let Err(error) = config.validate() {
        exit_config_error(binary, &error);
    }
    if let Some(name) = health_check {
        // No telemetry and one thread: this runs every few seconds inside the container.
        return match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(crate::health_check::check(
                binary,
                config.grpc_addr(),
                &name,
            )),
            Err(error) => {
                eprintln!("{binary}: cannot start the async runtime: {error}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{binary}: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let _telemetry = match telemetry::init(binary, config.telemetry()) {
            Ok(guard) => guard,
            Err(error) => exit_config_error(binary, &error),
        };
        match start(config).await {
            Ok(()) => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            Err(error) => {
                tracing::error!(%error, "stopped with an error");
                eprintln!("{binary}: {error}");
                ExitCode::from(error.exit_code())
            }
        }
    })
}

/// Tells whoever started the binary where it listens. One line on stdout, in a fixed form that
/// `email2sms dev` and the tests read: `<binary>: <protocol> listening on <addr>`.
pub fn announce(binary: &str, protocol: &str, addr: SocketAddr) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{binary}: {protocol} listening on {addr}");
    let _ = stdout.flush();
    tracing::info!(%addr, protocol, "listening");
}

/// Parses an `announce` line back into its protocol and address.
pub fn parse_announcement(line: &str) -> Option<(&str, SocketAddr)> {
    let (_, rest) = line.split_once(": ")?;
    let (protocol, addr) = rest.split_once(" listening on ")?;
    Some((protocol, addr.trim().parse().ok()?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn announcements_round_trip() {
        let (protocol, addr) =
            super::parse_announcement("email2sms-policy: grpc listening on 127.0.0.1:4242\n")
                .unwrap();
        assert_eq!(protocol, "grpc");
        assert_eq!(addr.port(), 4242);
        assert!(super::parse_announcement("something else").is_none());
    }
}

/// Why a service could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Database(#[from] crate::db::DbError),
    #[error("{0}")]
    Bind(std::io::Error),
    #[error(transparent)]
    Serve(#[from] crate::grpc::ServeError),
}

impl Failure for StartError {
    fn exit_code(&self) -> u8 {
        match self {
            StartError::Config(_) => EX_USAGE as u8,
            StartError::Database(_) | StartError::Bind(_) => crate::config::EX_UNAVAILABLE as u8,
            StartError::Serve(_) => 1,
        }
    }
}

/// Binds a listen address and announces it.
pub async fn bind_and_announce(
    binary: &str,
    setting: &'static str,
    protocol: &str,
    addr: SocketAddr,
) -> Result<tokio::net::TcpListener, StartError> {
    let listener = crate::grpc::bind(setting, addr)
        .await
        .map_err(StartError::Bind)?;
    announce(
        binary,
        protocol,
        listener.local_addr().map_err(StartError::Bind)?,
    );
    Ok(listener)
}
