//! The SPF verifier: MAIL FROM checks (security type "Via SPF") and provider checks
//! ("By Google Mail", "By Outlook.com"), both through one viaspf configuration and one
//! [`Lookup`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use viaspf::lookup::{Lookup, LookupError, LookupResult, Name};
use viaspf::trace::Trace;
use viaspf::{
    Config, DomainName, ErrorCause, ExplanationString, QueryResult, Sender,
    SpfResult as ViaspfResult, SpfResultCause,
};

use crate::SpfError;
use crate::lookup::{DnsSettings, HickoryLookup};

/// RFC 7208 §4.6.4: at most 10 mechanisms/modifiers that cause DNS lookups per evaluation.
pub const MAX_DNS_LOOKUPS: usize = 10;
/// RFC 7208 §4.6.4: at most 2 "void" lookups (NXDOMAIN or empty answer) per evaluation.
pub const MAX_VOID_LOOKUPS: usize = 2;
/// RFC 7208 §4.6.4 asks for an overall limit that allows at least 20 seconds. It bounds the
/// whole evaluation, however many lookups it makes (up to 10 mechanisms, each MX host, …):
/// with it a check answers within 20 s even when every lookup is slow but not dead.
pub const DEFAULT_OVERALL_TIMEOUT: Duration = Duration::from_secs(20);

/// The sender name under which provider checks evaluate their synthetic record.
///
/// viaspf only accepts a sender domain that is a valid host name, so `_spf.google.com` cannot be
/// checked directly. Instead [`SpfVerifier::check_provider`] evaluates the record
/// `v=spf1 include:<provider domain> -all` as if it were published at this name: the
/// [`Lookup`] wrapper used for provider checks answers the TXT query for exactly this name
/// itself and never sends it to DNS. `.invalid` is reserved (RFC 2606), so nobody can publish
/// anything there that could be confused with it.
pub const PROVIDER_CHECK_SENDER_DOMAIN: &str = "provider-check.email2sms.invalid";

/// Settings for [`SpfVerifier`]. The DNS lookup and void lookup limits are RFC 7208's and fixed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpfSettings {
    /// How DNS is reached.
    pub dns: DnsSettings,
    /// Time allowed for a whole evaluation, all its lookups together; when it runs out the
    /// result is `temperror`. A dead DNS server ends the evaluation sooner, after
    /// [`DnsSettings::longest_lookup`]: the first lookup that fails gives `temperror`.
    pub overall_timeout: Duration,
    /// This gateway's host name, substituted for the `%{r}` macro in explanations.
    pub hostname: Option<String>,
    /// Record a step-by-step trace (shown by Diagnose and in support logs). Cheap enough to
    /// leave on: a trace is a few dozen short strings.
    pub capture_trace: bool,
}

impl Default for SpfSettings {
    fn default() -> Self {
        Self {
            dns: DnsSettings::default(),
            overall_timeout: DEFAULT_OVERALL_TIMEOUT,
            hostname: None,
            capture_trace: true,
        }
    }
}

impl SpfSettings {
    /// The viaspf configuration these settings stand for.
    pub fn viaspf_config(&self) -> Config {
        let mut builder = Config::builder()
            .max_lookups(MAX_DNS_LOOKUPS)
            .max_void_lookups(MAX_VOID_LOOKUPS)
            .timeout(self.overall_timeout)
            .capture_trace(self.capture_trace);
        if let Some(hostname) = &self.hostname {
            builder = builder.hostname(hostname.clone());
        }
        builder.build()
    }
}

/// An SPF result (RFC 7208 §2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpfResult {
    /// The client is authorised.
    Pass,
    /// The client is explicitly not authorised.
    Fail,
    /// The client is probably not authorised.
    Softfail,
    /// The domain makes no assertion about the client.
    Neutral,
    /// No SPF record, or no valid domain to check.
    None,
    /// A transient (DNS) error; the check may succeed later.
    Temperror,
    /// The published record(s) cannot be interpreted.
    Permerror,
}

impl SpfResult {
    /// The lower-case name used in `Received-SPF` and `Authentication-Results`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::Softfail => "softfail",
            Self::Neutral => "neutral",
            Self::None => "none",
            Self::Temperror => "temperror",
            Self::Permerror => "permerror",
        }
    }
}

impl fmt::Display for SpfResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpfCheck {
    /// The SPF record of the envelope sender's domain (or of the HELO name for a null
    /// reverse-path, RFC 7208 §2.4).
    Sender {
        /// The domain whose record was evaluated (A-label form when it was valid).
        domain: String,
    },
    /// Whether the client is one of a mail provider's outbound servers.
    Provider {
        /// The provider's SPF domain, e.g. `_spf.google.com`.
        domain: String,
    },
}

impl SpfCheck {
    /// The domain whose SPF was evaluated.
    pub fn domain(&self) -> &str {
        match self {
            Self::Sender { domain } | Self::Provider { domain } => domain,
        }
    }
}

/// Why the result came out as it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpfCause {
    /// This mechanism matched and decided the result, e.g. `-all` or `ip4:192.0.2.0/24`.
    Mechanism(String),
    /// The record exists but no mechanism matched (the default `neutral`).
    NothingMatched,
    /// The domain publishes no SPF record.
    NoSpfRecord,
    /// The evaluation stopped with an error (DNS failure, limit exceeded, syntax error, …).
    Error(String),
    /// The identity is not a usable domain name, so there was nothing to check (RFC 7208 §4.3).
    InvalidIdentity(String),
    /// The evaluation could not be completed because of a fault in the SPF check itself, not in
    /// DNS: a panic inside viaspf, or a `temperror` that no DNS failure caused. Reported as
    /// `permerror` (550 5.7.24): the same record fails the same way on every retry, so a 451
    /// would only make the relay retry for days (as `ip4:0.0.0.0/0` did with viaspf 0.6.0).
    Internal(String),
}

impl fmt::Display for SpfCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Mechanism(m) => write!(f, "matched \"{m}\""),
            Self::NothingMatched => f.write_str("no mechanism matched"),
            Self::NoSpfRecord => f.write_str("no SPF record published"),
            Self::Error(e) => f.write_str(e),
            Self::InvalidIdentity(why) => write!(f, "not a valid domain name: {why}"),
            Self::Internal(p) => write!(f, "internal error in the SPF check: {p}"),
        }
    }
}

/// The outcome of one SPF check, with everything a support person needs to understand it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpfOutcome {
    /// The SPF result.
    pub result: SpfResult,
    /// What was checked.
    pub check: SpfCheck,
    /// The client IP address checked.
    pub client_ip: IpAddr,
    /// Why the result is what it is.
    pub cause: SpfCause,
    /// The domain's own explanation (`exp=` modifier) on `fail`, if it published one. Comes
    /// from the sender's DNS: show it as theirs, never as ours.
    pub explanation: Option<String>,
    /// The evaluation step by step (empty when tracing is off).
    pub trace: Vec<String>,
}

impl SpfOutcome {
    /// Whether the check passed.
    pub fn is_pass(&self) -> bool {
        self.result == SpfResult::Pass
    }

    /// One line a support person can read, e.g.
    /// `SPF fail for 192.0.2.1 as sender for example.com: matched "-all"`.
    pub fn summary(&self) -> String {
        let what = match &self.check {
            SpfCheck::Sender { domain } => format!("as sender for {domain}"),
            SpfCheck::Provider { domain } => {
                format!("as an outbound server listed by {domain}")
            }
        };
        let mut line = format!(
            "SPF {} for {} {what}: {}",
            self.result, self.client_ip, self.cause
        );
        if let Some(exp) = &self.explanation {
            line.push_str(&format!(" (the domain explains: \"{exp}\")"));
        }
        line
    }

    /// [`Self::summary`] followed by the trace, one step per line.
    pub fn report(&self) -> String {
        let mut text = self.summary();
        for step in &self.trace {
            text.push_str("\n  ");
            text.push_str(step);
        }
        text
    }
}

/// A provider's SPF domain (`_spf.google.com`, `spf.protection.outlook.com`), validated once at
/// configuration time because it is pasted into a synthetic SPF record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProviderDomain(String);

impl ProviderDomain {
    /// Validates a provider SPF domain: dot-separated labels of letters, digits, `-` and `_`
    /// (underscore names are the norm here), at least two labels. Anything else — a space, a
    /// `%` macro, a `:` — could change the meaning of the synthetic record and is refused.
    ///
    /// # Errors
    /// [`SpfError::InvalidProviderDomain`] with the reason.
    pub fn new(domain: &str) -> Result<Self, SpfError> {
        let invalid = |reason| SpfError::InvalidProviderDomain {
            domain: domain.to_owned(),
            reason,
        };
        let d = domain.trim();
        let d = d.strip_suffix('.').unwrap_or(d).to_ascii_lowercase();
        if d.is_empty() {
            return Err(invalid("empty"));
        }
        if d.len() > 253 {
            return Err(invalid("longer than 253 characters"));
        }
        let labels: Vec<&str> = d.split('.').collect();
        if labels.len() < 2 {
            return Err(invalid("needs at least two labels"));
        }
        for label in &labels {
            if label.is_empty() || label.len() > 63 {
                return Err(invalid("each label must have 1 to 63 characters"));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(invalid(
                    "only letters, digits, '-' and '_' are allowed in labels",
                ));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(invalid("a label may not start or end with '-'"));
            }
        }
        Ok(Self(d))
    }

    /// The domain, lower-case, without trailing dot.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The record evaluated by [`SpfVerifier::check_provider`].
    pub fn synthetic_record(&self) -> String {
        format!("v=spf1 include:{} -all", self.0)
    }
}

impl fmt::Display for ProviderDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks SPF through viaspf with RFC 7208's limits.
#[derive(Debug)]
pub struct SpfVerifier<L = HickoryLookup> {
    lookup: L,
    config: Config,
}

impl SpfVerifier<HickoryLookup> {
    /// A verifier over hickory-resolver. Must be called inside a Tokio runtime.
    ///
    /// # Errors
    /// [`SpfError::Resolver`] when the resolver cannot be set up.
    pub fn new(settings: &SpfSettings) -> Result<Self, SpfError> {
        Ok(Self::with_lookup(
            HickoryLookup::new(&settings.dns)?,
            settings,
        ))
    }
}

impl<L: Lookup> SpfVerifier<L> {
    /// A verifier over any [`Lookup`] (tests use an in-memory one). `settings.dns` is ignored.
    pub fn with_lookup(lookup: L, settings: &SpfSettings) -> Self {
        Self {
            lookup,
            config: settings.viaspf_config(),
        }
    }

    /// The lookup in use.
    pub fn lookup(&self) -> &L {
        &self.lookup
    }

    /// RFC 7208 `check_host()` for the MAIL FROM identity.
    ///
    /// `mail_from` is the envelope sender address (`user@example.com`) or just its domain
    /// (checked as `postmaster@domain`). An empty `mail_from` (null reverse-path) checks the
    /// HELO identity instead, as RFC 7208 §2.4 says. `helo` is also used for the `%{h}` macro.
    /// A `mail_from` whose domain is not a valid domain name gives `none` (§4.3).
    pub async fn check_sender(&self, client_ip: IpAddr, mail_from: &str, helo: &str) -> SpfOutcome {
        let mail_from = mail_from.trim();
        let helo = helo.trim();
        let identity = if mail_from.is_empty() {
            helo
        } else {
            mail_from
        };
        let raw_domain = identity
            .rsplit_once('@')
            .map_or(identity, |(_, d)| d)
            .to_owned();
        let mut notes = Vec::new();
        let parsed = Sender::new(identity).or_else(|e| match identity.rsplit_once('@') {
            // An empty local part is checked as postmaster (RFC 7208 §4.3); one viaspf cannot
            // parse (an unquoted space, say) the same way: the domain decides the result and
            // the local part only feeds the %{l} macro. Refusing as `none` instead would turn
            // away mail whose domain does authorise the client.
            Some((local, domain)) => {
                if !local.is_empty() {
                    notes.push(format!(
                        "the local part \"{local}\" cannot be used in SPF macros; checking as postmaster@{domain}"
                    ));
                }
                Sender::from_domain(domain)
            }
            None => Err(e),
        });
        let sender = match parsed {
            Ok(sender) => sender,
            Err(_) => {
                let check = SpfCheck::Sender { domain: raw_domain };
                return SpfOutcome {
                    result: SpfResult::None,
                    client_ip,
                    cause: SpfCause::InvalidIdentity(
                        "the envelope sender domain cannot be checked".to_owned(),
                    ),
                    trace: vec![format!(
                        "\"{}\" is not a valid domain name, so there is no SPF record to check (RFC 7208 section 4.3)",
                        check.domain()
                    )],
                    check,
                    explanation: None,
                };
            }
        };
        let check = SpfCheck::Sender {
            domain: sender.domain().to_string(),
        };
        let helo_domain = helo.parse::<DomainName>().ok();
        let evaluation = viaspf::evaluate_sender(
            &self.lookup,
            &self.config,
            client_ip,
            &sender,
            helo_domain.as_ref(),
        );
        finish(check, client_ip, notes, evaluation).await
    }

    /// Whether `client_ip` is one of `provider`'s outbound mail servers: `pass` when it is,
    /// `fail` when it is not, `temperror`/`permerror` when the provider's SPF cannot be
    /// evaluated. Implemented as the evaluation of `v=spf1 include:<provider> -all` published
    /// (by our own lookup, see [`PROVIDER_CHECK_SENDER_DOMAIN`]) at a reserved name. The
    /// `include` costs one of the ten DNS lookups, exactly as when a customer includes the
    /// provider in their own record.
    pub async fn check_provider(&self, client_ip: IpAddr, provider: &ProviderDomain) -> SpfOutcome {
        let check = SpfCheck::Provider {
            domain: provider.as_str().to_owned(),
        };
        let record = provider.synthetic_record();
        let (sender, reserved) = match (
            Sender::from_domain(PROVIDER_CHECK_SENDER_DOMAIN),
            Name::new(PROVIDER_CHECK_SENDER_DOMAIN),
        ) {
            (Ok(sender), Ok(name)) => (sender, name),
            // Both are constants checked by a unit test; never reached.
            _ => {
                return SpfOutcome {
                    result: SpfResult::Permerror,
                    check,
                    client_ip,
                    cause: SpfCause::Internal("reserved provider-check name rejected".to_owned()),
                    explanation: None,
                    trace: Vec::new(),
                };
            }
        };
        let lookup = ProviderLookup {
            inner: &self.lookup,
            reserved,
            record: record.clone(),
        };
        let preamble = vec![format!(
            "evaluating \"{record}\", published by the gateway itself for the reserved name {PROVIDER_CHECK_SENDER_DOMAIN}"
        )];
        let evaluation = viaspf::evaluate_sender(&lookup, &self.config, client_ip, &sender, None);
        finish(check, client_ip, preamble, evaluation).await
    }
}

/// Runs an evaluation with panics contained, and turns its result into an [`SpfOutcome`].
async fn finish(
    check: SpfCheck,
    client_ip: IpAddr,
    mut trace: Vec<String>,
    evaluation: impl Future<Output = QueryResult>,
) -> SpfOutcome {
    // A panic inside viaspf must cost one check, not the SMTP session or the process.
    let query = match AssertUnwindSafe(evaluation).catch_unwind().await {
        Ok(query) => query,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".to_owned());
            trace.push(format!("the SPF evaluation panicked: {message}"));
            return SpfOutcome {
                result: SpfResult::Permerror,
                check,
                client_ip,
                cause: SpfCause::Internal(message),
                explanation: None,
                trace,
            };
        }
    };
    let (result, explanation) = match query.spf_result {
        ViaspfResult::Pass => (SpfResult::Pass, None),
        ViaspfResult::Fail(exp) => (
            SpfResult::Fail,
            match exp {
                ExplanationString::External(s) if !s.trim().is_empty() => Some(s),
                _ => None,
            },
        ),
        ViaspfResult::Softfail => (SpfResult::Softfail, None),
        ViaspfResult::Neutral => (SpfResult::Neutral, None),
        ViaspfResult::None => (SpfResult::None, None),
        ViaspfResult::Temperror => (SpfResult::Temperror, None),
        ViaspfResult::Permerror => (SpfResult::Permerror, None),
    };
    // viaspf gives temperror only for a DNS timeout or failure, here or in an include/redirect
    // (no cause of its own then). Any other temperror is a fault of the evaluator, which a retry
    // cannot mend: permanent, like a panic.
    let dns_cause = matches!(
        query.cause,
        None | Some(SpfResultCause::Error(ErrorCause::Timeout | ErrorCause::Dns))
    );
    let steps: Vec<String> = query
        .trace
        .map(|t: Trace| t.events.iter().map(|e| e.tracepoint.to_string()).collect())
        .unwrap_or_default();
    let cause = match query.cause {
        Some(SpfResultCause::Match(mechanism)) => SpfCause::Mechanism(mechanism.to_string()),
        // viaspf's causes are terse ("DNS lookup failed"); the first error step of the trace
        // says which lookup and how ("lookup timed out"), which is what support needs.
        Some(SpfResultCause::Error(error)) => match steps.iter().find(|s| s.contains("error")) {
            Some(step) => SpfCause::Error(format!("{error} ({step})")),
            None => SpfCause::Error(error.to_string()),
        },
        None => match result {
            SpfResult::None => SpfCause::NoSpfRecord,
            SpfResult::Neutral => SpfCause::NothingMatched,
            // Errors propagated from an include/redirect carry no cause of their own; the
            // first error step of the trace says what went wrong.
            _ => SpfCause::Error(
                steps
                    .iter()
                    .find(|s| s.contains("error") || s.contains("exceeded"))
                    .cloned()
                    .unwrap_or_else(|| "an included or redirected SPF record failed".to_owned()),
            ),
        },
    };
    trace.extend(steps);
    let (result, cause) = if result == SpfResult::Temperror && !dns_cause {
        trace.push(format!(
            "the SPF evaluation gave temperror without a DNS failure ({cause}); reported as permerror"
        ));
        (
            SpfResult::Permerror,
            SpfCause::Internal(format!("temperror without a DNS failure: {cause}")),
        )
    } else {
        (result, cause)
    };
    SpfOutcome {
        result,
        check,
        client_ip,
        cause,
        explanation,
        trace,
    }
}

/// The lookup used by provider checks: answers the TXT query for the reserved name with the
/// synthetic record, anything else for that name with "no records", and delegates all other
/// names to the real lookup.
struct ProviderLookup<'a, L> {
    inner: &'a L,
    reserved: Name,
    record: String,
}

#[async_trait]
impl<L: Lookup> Lookup for ProviderLookup<'_, L> {
    async fn lookup_a<'lookup, 'a>(&'lookup self, name: &'a Name) -> LookupResult<Vec<Ipv4Addr>> {
        if *name == self.reserved {
            return Err(LookupError::NoRecords);
        }
        self.inner.lookup_a(name).await
    }

    async fn lookup_aaaa<'lookup, 'a>(
        &'lookup self,
        name: &'a Name,
    ) -> LookupResult<Vec<Ipv6Addr>> {
        if *name == self.reserved {
            return Err(LookupError::NoRecords);
        }
        self.inner.lookup_aaaa(name).await
    }

    async fn lookup_mx<'lookup, 'a>(&'lookup self, name: &'a Name) -> LookupResult<Vec<Name>> {
        if *name == self.reserved {
            return Err(LookupError::NoRecords);
        }
        self.inner.lookup_mx(name).await
    }

    async fn lookup_txt<'lookup, 'a>(&'lookup self, name: &'a Name) -> LookupResult<Vec<String>> {
        if *name == self.reserved {
            return Ok(vec![self.record.clone()]);
        }
        self.inner.lookup_txt(name).await
    }

    async fn lookup_ptr<'lookup>(&'lookup self, ip: IpAddr) -> LookupResult<Vec<Name>> {
        self.inner.lookup_ptr(ip).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ingest runs checks inside spawned session tasks: the futures must be `Send`. Compiling
    /// this is the test.
    #[allow(dead_code)]
    fn check_futures_are_send(verifier: &SpfVerifier, provider: &ProviderDomain) {
        fn send<T: Send>(_: T) {}
        let ip = IpAddr::from([192, 0, 2, 1]);
        send(verifier.check_sender(ip, "a@example.com", "mail.example.com"));
        send(verifier.check_provider(ip, provider));
        fn shared<T: Send + Sync>() {}
        shared::<SpfVerifier>();
    }

    fn sender_check() -> SpfCheck {
        SpfCheck::Sender {
            domain: "example.com".into(),
        }
    }

    fn block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    /// What viaspf 0.6.0 did for `ip4:0.0.0.0/0` in debug builds: the evaluation panics. That
    /// is permanent (550 5.7.24, "could not be evaluated"), not a 451 retried for days.
    #[test]
    fn a_panicking_evaluation_is_a_permerror_not_a_temporary_failure() {
        let ip = IpAddr::from([192, 0, 2, 1]);
        let outcome = block_on(finish(sender_check(), ip, Vec::new(), async {
            panic!("attempt to shift left with overflow")
        }));
        assert_eq!(outcome.result, SpfResult::Permerror);
        assert_eq!(
            outcome.cause,
            SpfCause::Internal("attempt to shift left with overflow".into())
        );
        assert!(outcome.trace[0].contains("panicked"), "{:?}", outcome.trace);
        let reply = crate::spf_refusal_reply(&outcome).unwrap();
        assert_eq!((reply.code, reply.enhanced), (550, "5.7.24"), "{reply}");
        assert!(
            reply
                .text
                .starts_with("The SPF record of example.com could not be evaluated"),
            "{reply}"
        );
    }

    /// A temperror viaspf gives without a DNS failure behind it is a fault of the evaluator:
    /// permanent as well. A DNS timeout stays temporary.
    #[test]
    fn temperror_without_a_dns_failure_is_internal() {
        let ip = IpAddr::from([192, 0, 2, 1]);
        let odd = block_on(finish(sender_check(), ip, Vec::new(), async {
            QueryResult {
                spf_result: ViaspfResult::Temperror,
                cause: Some(SpfResultCause::Error(ErrorCause::InvalidSpfRecordSyntax)),
                trace: None,
            }
        }));
        assert_eq!(odd.result, SpfResult::Permerror);
        assert!(
            matches!(odd.cause, SpfCause::Internal(_)),
            "{:?}",
            odd.cause
        );
        assert_eq!(crate::spf_refusal_reply(&odd).unwrap().code, 550);
        for cause in [
            Some(SpfResultCause::Error(ErrorCause::Timeout)),
            Some(SpfResultCause::Error(ErrorCause::Dns)),
            // Propagated from an include or redirect.
            None,
        ] {
            let dns = block_on(finish(sender_check(), ip, Vec::new(), async {
                QueryResult {
                    spf_result: ViaspfResult::Temperror,
                    cause,
                    trace: None,
                }
            }));
            assert_eq!(dns.result, SpfResult::Temperror);
            let reply = crate::spf_refusal_reply(&dns).unwrap();
            assert_eq!((reply.code, reply.enhanced), (451, "4.4.3"));
        }
    }

    #[test]
    fn reserved_provider_check_name_is_a_valid_sender() {
        assert!(Sender::from_domain(PROVIDER_CHECK_SENDER_DOMAIN).is_ok());
        assert!(Name::new(PROVIDER_CHECK_SENDER_DOMAIN).is_ok());
    }

    #[test]
    fn provider_domains_accept_underscores_and_refuse_record_injection() {
        let google = ProviderDomain::new("_spf.google.com.").unwrap();
        assert_eq!(
            google.synthetic_record(),
            "v=spf1 include:_spf.google.com -all"
        );
        assert_eq!(
            ProviderDomain::new("SPF.Protection.Outlook.com")
                .unwrap()
                .as_str(),
            "spf.protection.outlook.com"
        );
        for bad in [
            "",
            "com",
            "a..b",
            "x.test +all",
            "%{d}.test",
            "ip4:0.0.0.0/0",
            "-x.test",
        ] {
            assert!(ProviderDomain::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn limits_are_rfc_7208s() {
        let config = SpfSettings::default().viaspf_config();
        assert_eq!(config.max_lookups(), 10);
        assert_eq!(config.max_void_lookups(), 2);
        assert_eq!(config.timeout(), Duration::from_secs(20));
    }
}
