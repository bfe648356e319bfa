//! The verification rules' timings and limits, each an environment variable and a flag.

use std::time::Duration;

use email2sms_runtime::config::{ConfigError, parse_duration};

/// How often and how patiently domains are checked, and how long a missing token is forgiven.
#[derive(Debug, Clone, clap::Args)]
pub struct VerificationArgs {
    /// Time allowed for one DNS query before it counts as a timeout (temporary, retried later).
    #[arg(long, env = "EMAIL2SMS_VERIFICATION_DNS_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub dns_timeout: Duration,

    /// DNS queries per check (the first plus retries) before a check is a timeout.
    #[arg(long, env = "EMAIL2SMS_VERIFICATION_DNS_ATTEMPTS", default_value_t = 2)]
    pub dns_attempts: usize,

    /// Upper bound on a CheckNow call; a client deadline (grpc-timeout) that is shorter wins.
    #[arg(long, env = "EMAIL2SMS_VERIFICATION_CHECK_DEADLINE", default_value = "15s", value_parser = parse_duration)]
    pub check_deadline: Duration,

    /// Run the scheduler that polls pending and re-checks verified domains in this process.
    #[arg(long, env = "EMAIL2SMS_VERIFICATION_SCHEDULER", value_parser = clap::builder::BoolishValueParser::new(), default_value = "true", num_args = 0..=1, default_missing_value = "true")]
    pub scheduler: bool,

    /// How often the scheduler looks for due checks (new challenges wake it at once).
    #[arg(long, env = "EMAIL2SMS_VERIFICATION_POLL_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub poll_interval: Duration,

    /// Challenges one scheduler round claims at most.
    #[arg(long, env = "EMAIL2SMS_VERIFICATION_BATCH_SIZE", default_value_t = 200)]
    pub batch_size: u32,

    /// DNS checks one replica runs at the same time at most.
    #[arg(long, env = "EMAIL2SMS_VERIFICATION_CONCURRENCY", default_value_t = 32)]
    pub concurrency: usize,

    /// How long a replica owns the challenges it claimed; after that another replica may take
    /// them over (a crashed replica's work is not lost). Must exceed the longest a round can take
    /// (batch size ÷ concurrency × DNS timeout × attempts).
    #[arg(long, env = "EMAIL2SMS_VERIFICATION_LEASE", default_value = "2m", value_parser = parse_duration)]
    pub lease: Duration,

    /// Wait before the second check of a pending domain; it doubles after every miss.
    #[arg(long, env = "EMAIL2SMS_VERIFICATION_PENDING_FIRST_INTERVAL", default_value = "1m", value_parser = parse_duration)]
    pub pending_first_interval: Duration,

    /// Longest wait between two checks of a pending domain.
    #[arg(long, env = "EMAIL2SMS_VERIFICATION_PENDING_MAX_INTERVAL", default_value = "1h", value_parser = parse_duration)]
    pub pending_max_interval: Duration,

    /// A pending domain whose token is not found for this long becomes FAILED.
    #[arg(long, env = "EMAIL2SMS_VERIFICATION_GIVE_UP_AFTER", default_value = "7d", value_parser = parse_duration)]
    pub give_up_after: Duration,

    /// How often a verified domain is re-checked while its token is present.
    #[arg(long, env = "EMAIL2SMS_VERIFICATION_RECHECK_INTERVAL", default_value = "1d", value_parser = parse_duration)]
    pub recheck_interval: Duration,

    /// How often a verified domain is re-checked while its token is missing (during the grace).
    #[arg(long, env = "EMAIL2SMS_VERIFICATION_MISSING_RECHECK_INTERVAL", default_value = "1h", value_parser = parse_duration)]
    pub missing_recheck_interval: Duration,

    /// How long a verified domain's token may be missing before the domain is REVOKED.
    #[arg(long, env = "EMAIL2SMS_VERIFICATION_REVOKE_GRACE", default_value = "72h", value_parser = parse_duration)]
    pub revoke_grace: Duration,

    /// Checks in a row that must miss the token (besides the grace period) before revocation, so
    /// that one odd answer never revokes a domain.
    #[arg(
        long,
        env = "EMAIL2SMS_VERIFICATION_REVOKE_AFTER_FAILURES",
        default_value_t = 3
    )]
    pub revoke_after_failures: u32,

    /// Wait before retrying a check that failed for a temporary reason (SERVFAIL, timeout).
    #[arg(long, env = "EMAIL2SMS_VERIFICATION_TEMPORARY_RETRY", default_value = "5m", value_parser = parse_duration)]
    pub temporary_retry: Duration,

    /// Check history older than this is deleted by the scheduler.
    #[arg(long, env = "EMAIL2SMS_VERIFICATION_CHECK_RETENTION", default_value = "30d", value_parser = parse_duration)]
    pub check_retention: Duration,
}

impl VerificationArgs {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("EMAIL2SMS_VERIFICATION_DNS_TIMEOUT", self.dns_timeout),
            ("EMAIL2SMS_VERIFICATION_CHECK_DEADLINE", self.check_deadline),
            ("EMAIL2SMS_VERIFICATION_POLL_INTERVAL", self.poll_interval),
            ("EMAIL2SMS_VERIFICATION_LEASE", self.lease),
            (
                "EMAIL2SMS_VERIFICATION_PENDING_FIRST_INTERVAL",
                self.pending_first_interval,
            ),
            (
                "EMAIL2SMS_VERIFICATION_PENDING_MAX_INTERVAL",
                self.pending_max_interval,
            ),
            ("EMAIL2SMS_VERIFICATION_GIVE_UP_AFTER", self.give_up_after),
            (
                "EMAIL2SMS_VERIFICATION_RECHECK_INTERVAL",
                self.recheck_interval,
            ),
            (
                "EMAIL2SMS_VERIFICATION_MISSING_RECHECK_INTERVAL",
                self.missing_recheck_interval,
            ),
            (
                "EMAIL2SMS_VERIFICATION_TEMPORARY_RETRY",
                self.temporary_retry,
            ),
            (
                "EMAIL2SMS_VERIFICATION_CHECK_RETENTION",
                self.check_retention,
            ),
        ];
        for (name, value) in positive {
            if value.is_zero() {
                return Err(invalid(name, "must be longer than zero".into()));
            }
        }
        let counts = [
            ("EMAIL2SMS_VERIFICATION_DNS_ATTEMPTS", self.dns_attempts),
            (
                "EMAIL2SMS_VERIFICATION_BATCH_SIZE",
                self.batch_size as usize,
            ),
            ("EMAIL2SMS_VERIFICATION_CONCURRENCY", self.concurrency),
            (
                "EMAIL2SMS_VERIFICATION_REVOKE_AFTER_FAILURES",
                self.revoke_after_failures as usize,
            ),
        ];
        for (name, value) in counts {
            if value == 0 {
                return Err(invalid(name, "must be at least 1".into()));
            }
        }
        if self.pending_max_interval < self.pending_first_interval {
            return Err(invalid(
                "EMAIL2SMS_VERIFICATION_PENDING_MAX_INTERVAL",
                "must not be shorter than EMAIL2SMS_VERIFICATION_PENDING_FIRST_INTERVAL".into(),
            ));
        }
        let longest_round = self.longest_round();
        if self.lease <= longest_round {
            return Err(invalid(
                "EMAIL2SMS_VERIFICATION_LEASE",
                format!(
                    "{:?} is too short: a round of {} checks, {} at a time, each taking up to {:?} (DNS timeout × attempts), can take {longest_round:?}; the lease must be longer, or another replica could check the same domain again",
                    self.lease,
                    self.batch_size,
                    self.concurrency,
                    self.longest_check()
                ),
            ));
        }
        Ok(())
    }

    /// The longest a scheduler round can take: every check of a full batch timing out, in waves
    /// of `concurrency`.
    pub fn longest_round(&self) -> Duration {
        let waves = (self.batch_size as usize).div_ceil(self.concurrency.max(1));
        self.longest_check() * u32::try_from(waves).unwrap_or(u32::MAX)
    }

    /// The longest a single check may take: every DNS attempt timing out.
    pub fn longest_check(&self) -> Duration {
        self.dns_timeout * self.dns_attempts as u32
    }
}

fn invalid(name: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { name, reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: VerificationArgs,
    }

    fn parse(args: &[&str]) -> VerificationArgs {
        let mut argv = vec!["email2sms-verification"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap().args
    }

    #[test]
    fn defaults_are_the_products_rules_and_valid() {
        let args = parse(&[]);
        args.validate().unwrap();
        assert_eq!(args.give_up_after, Duration::from_secs(7 * 86_400));
        assert_eq!(args.revoke_grace, Duration::from_secs(72 * 3600));
        assert_eq!(args.recheck_interval, Duration::from_secs(86_400));
    }

    #[test]
    fn a_lease_shorter_than_a_round_is_refused_by_name() {
        let error = parse(&["--lease", "30s", "--dns-timeout", "5s"])
            .validate()
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("EMAIL2SMS_VERIFICATION_LEASE"), "{error}");
        let error = parse(&["--concurrency", "0"])
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("EMAIL2SMS_VERIFICATION_CONCURRENCY"),
            "{error}"
        );
    }
}
