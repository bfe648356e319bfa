//! Command-line and environment configuration shared by every binary.
//!
//! Bad configuration is reported in one sentence and ends the process with `EX_USAGE` (64) before
//! anything is bound or connected, so an orchestrator shows a clear crash reason instead of a
//! half-started pod.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// sysexits.h `EX_USAGE`: the command was used incorrectly (a bad flag or environment value);
/// restarting will not help. sysexits' `EX_CONFIG` is 78 and means a bad configuration *file*;
/// 64 is what every binary, its tests and the operator docs have promised since the start.
pub const EX_USAGE: i32 = 64;
/// sysexits.h: a service this binary needs (Postgres, Redis, RabbitMQ) could not be reached.
pub const EX_UNAVAILABLE: i32 = 69;

/// A configuration problem, phrased for the operator who has to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is not a valid URL ({value:?}): {reason}")]
    BadUrl {
        name: &'static str,
        value: String,
        reason: String,
    },
    #[error("cannot read the API tokens file {path}: {source}")]
    TokensFileUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("API tokens file {path}, line {line}: {reason}")]
    TokensFileInvalid {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error(
        "no API tokens configured: set EMAIL2SMS_API_TOKENS_FILE to a file of `SCOPE TOKEN` lines \
         (scopes: admin, internal), or EMAIL2SMS_INSECURE_NO_AUTH=1 for a local development cluster"
    )]
    NoAuthConfigured,
    #[error("{name}: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("telemetry: {0}")]
    Telemetry(String),
    #[error("{name} and {file_variable} are both set: give the secret one way only")]
    SecretGivenTwice { name: String, file_variable: String },
    #[error("cannot read {file_variable} ({path}): {source}", path = path.display())]
    SecretFileUnreadable {
        file_variable: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{file_variable} ({path}): {reason}", path = path.display())]
    SecretFileInvalid {
        file_variable: String,
        path: PathBuf,
        reason: String,
    },
}

/// Parses the command line and environment, exiting 64 on anything wrong (0 for `--help`).
///
/// Every secret setting may come from a file instead (`NAME_FILE`, see [`crate::secret_files`]).
pub fn parse_or_exit<T: Parser>() -> T {
    parse_or_exit_taking(|_| ()).0
}

/// As [`parse_or_exit`], after `take` removed (and returned) arguments that are not
/// configuration, such as `--health-check`.
pub fn parse_or_exit_taking<T: Parser, R>(
    take: impl FnOnce(&mut Vec<std::ffi::OsString>) -> R,
) -> (T, R) {
    let mut command = crate::secret_files::document(T::command());
    let mut argv = match crate::secret_files::resolve(&command) {
        Ok(argv) => argv,
        Err(error) => exit_config_error(command.get_name(), &error),
    };
    let taken = take(&mut argv);
    let parsed = command
        .try_get_matches_from_mut(argv)
        .and_then(|mut matches| T::from_arg_matches_mut(&mut matches))
        .map_err(|error| error.format(&mut command));
    match parsed {
        Ok(config) => (config, taken),
        Err(error) => match error.kind() {
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                error.exit()
            }
            _ => {
                // The message already names the flag and the environment variable.
                let _ = error.print();
                std::process::exit(EX_USAGE)
            }
        },
    }
}

/// Ends the process the way bad configuration must: one clear line and exit code 64.
pub fn exit_config_error(binary: &str, error: &ConfigError) -> ! {
    eprintln!("{binary}: configuration error: {error}");
    std::process::exit(EX_USAGE)
}

/// Settings every gRPC server takes.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// File of `SCOPE TOKEN` lines (scopes `admin`, `internal`); `#` starts a comment.
    #[arg(long, env = "EMAIL2SMS_API_TOKENS_FILE")]
    pub api_tokens_file: Option<PathBuf>,

    /// Serve without authentication. Only for a development cluster on one machine.
    #[arg(long, env = "EMAIL2SMS_INSECURE_NO_AUTH", value_parser = clap::builder::BoolishValueParser::new(), default_value = "false", num_args = 0..=1, default_missing_value = "true")]
    pub insecure_no_auth: bool,

    /// How long the process keeps serving after SIGTERM with `readiness` NOT_SERVING, so load
    /// balancers and Kubernetes endpoints stop sending to it before its listeners close (endpoint
    /// propagation takes a few seconds).
    #[arg(long, env = "EMAIL2SMS_SHUTDOWN_DELAY", default_value = "5s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,

    /// Once the listeners are closed, how long in-flight requests and background work (consumers,
    /// relays, SMTP sessions) together may take before the process exits anyway. One deadline for
    /// all of it: terminationGracePeriodSeconds (30) = delay (5) + grace (20) + 5 s to exit.
    #[arg(long, env = "EMAIL2SMS_SHUTDOWN_GRACE", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

/// Settings for the services that own a Postgres schema.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// PostgreSQL connection URL (a secret when it holds a password).
    #[arg(long, env = "DATABASE_URL", default_value = crate::db::DEFAULT_DATABASE_URL, hide_env_values = true)]
    pub database_url: String,

    /// Apply this service's migrations (creating the database if missing) before serving.
    #[arg(long, env = "EMAIL2SMS_MIGRATE", value_parser = clap::builder::BoolishValueParser::new(), default_value = "false", num_args = 0..=1, default_missing_value = "true")]
    pub migrate: bool,

    /// Largest number of Postgres connections this process opens.
    #[arg(long, env = "EMAIL2SMS_DB_MAX_CONNECTIONS", default_value_t = 10)]
    pub db_max_connections: u32,
}

impl DatabaseArgs {
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_url(
            "DATABASE_URL",
            &self.database_url,
            &["postgres", "postgresql"],
        )?;
        if self.db_max_connections == 0 {
            return Err(ConfigError::Invalid {
                name: "EMAIL2SMS_DB_MAX_CONNECTIONS",
                reason: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

/// Checks that `value` is a URL with one of `schemes`, naming the setting when it is not.
pub fn check_url(
    name: &'static str,
    value: &str,
    schemes: &[&str],
) -> Result<url::Url, ConfigError> {
    let parsed = url::Url::parse(value).map_err(|e| ConfigError::BadUrl {
        name,
        value: value.to_owned(),
        reason: e.to_string(),
    })?;
    if !schemes.contains(&parsed.scheme()) {
        return Err(ConfigError::BadUrl {
            name,
            value: value.to_owned(),
            reason: format!("the scheme must be one of {}", schemes.join(", ")),
        });
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::BadUrl {
            name,
            value: value.to_owned(),
            reason: "it has no host".into(),
        });
    }
    Ok(parsed)
}

/// Parses `250ms`, `30s`, `5m`, `2h`, `7d` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration; write e.g. 30s, 5m, 2h or 7d"))?;
    let seconds = |factor: u64| Duration::from_secs(number.saturating_mul(factor));
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "" | "s" => Ok(seconds(1)),
        "m" => Ok(seconds(60)),
        "h" => Ok(seconds(3600)),
        "d" => Ok(seconds(86_400)),
        _ => Err(format!(
            "{text:?} has an unknown unit {unit:?}; use ms, s, m, h or d"
        )),
    }
}

/// A listen address, parsed with a message that names the setting.
pub fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| {
        format!("{text:?} is not an address to listen on; write IP:PORT, e.g. 127.0.0.1:50051")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 weeks").is_err());
    }

    #[test]
    fn urls_are_checked_for_scheme_and_host() {
        assert!(check_url("REDIS_URL", "redis://127.0.0.1:6379", &["redis", "rediss"]).is_ok());
        let err = check_url("REDIS_URL", "http://127.0.0.1", &["redis", "rediss"]).unwrap_err();
        assert!(err.to_string().contains("REDIS_URL"), "{err}");
        assert!(check_url("AMQP_URL", "not a url", &["amqp"]).is_err());
    }
}

/// The SMS domains: a recipient is `<number>@<domain>`. Ingest accepts mail only for these (no
/// open relay); policy's notifications name the first as the address to write to.
#[derive(Debug, Clone, clap::Args)]
pub struct SmsDomainsArgs {
    /// Comma-separated SMS domains: mail to any other domain is refused (no open relay), and
    /// notifications name the first one as the address to send to (`<number>@<domain>`).
    #[arg(
        long,
        env = "EMAIL2SMS_SMS_DOMAINS",
        value_delimiter = ',',
        default_value = "sms.localhost"
    )]
    pub sms_domains: Vec<String>,
}

impl SmsDomainsArgs {
    pub fn validate(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    /// The domains, normalised (after `validate`, none is left out).
    pub fn names(&self) -> Vec<email2sms_domain::DomainName> {
        self.sms_domains
            .iter()
            .filter_map(|domain| email2sms_domain::DomainName::parse(domain.trim()).ok())
            .collect()
    }
}

/// The Redis connection, for the services that cache or throttle through it.
#[derive(Debug, Clone, clap::Args)]
pub struct RedisArgs {
    /// Redis URL (a secret when it holds a password).
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    pub redis_url: String,
}

impl RedisArgs {
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_url("REDIS_URL", &self.redis_url, &["redis", "rediss"]).map(drop)
    }
}

/// The DNS servers to ask, for tests and for operators who must not use the system resolver.
#[derive(Debug, Clone, clap::Args)]
pub struct DnsArgs {
    /// Comma-separated `ip:port` list of DNS servers; empty means the system resolver.
    #[arg(long, env = "EMAIL2SMS_DNS_SERVERS", value_delimiter = ',', value_parser = parse_dns_server)]
    pub dns_servers: Vec<SocketAddr>,
}

fn parse_dns_server(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    text.parse::<SocketAddr>()
        .or_else(|_| {
            text.parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .map_err(|_| {
            format!("{text:?} is not a DNS server; write IP or IP:PORT, e.g. 127.0.0.1:5353")
        })
}

/// How one service inside the cluster reaches another over gRPC.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientTokenArgs {
    /// Bearer token this service presents to the other services of the cluster (scope `internal`).
    #[arg(long, env = "EMAIL2SMS_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
}

impl ClientTokenArgs {
    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::auth::BearerToken::new(self.api_token.as_deref()).map(drop)
    }
}
