//! The DNS side of a check: the TXT lookup of the challenge name and, when it holds a
//! verification record, the wildcard probes; reported with everything a support person needs
//! (what answered, which CNAMEs were followed, every value seen, which names were probed).
//!
//! A wildcard (`*.example.com TXT …`) answers for every name under its parent that nobody
//! created, so a token served by one proves nothing about the name being verified. DNS does not
//! say whether an answer was synthesised from a wildcard (only DNSSEC denial records would, and
//! most zones are unsigned), so the check asks for a random name under the same parent as well:
//! a random name exists nowhere, and if it answers with the token, so does the wildcard.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use email2sms_domain::DomainName;
use hickory_resolver::config::{
    NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts, ServerOrderingStrategy,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::{Resolver, TokioResolver};

use crate::rules;

/// What the DNS said about the TXT records at a name, before any token is compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxtAnswer {
    /// The TXT records at the name (after CNAMEs), each record's strings joined. Empty when the
    /// name exists without TXT records (NODATA, possibly at the end of a CNAME chain).
    Records(Vec<String>),
    /// The name does not exist.
    NxDomain,
    /// SERVFAIL from the server.
    ServFail,
    /// REFUSED from the server.
    Refused,
    /// Nothing answered in time.
    Timeout,
    /// Anything else (I/O error, malformed answer, an unexpected response code).
    Error(String),
}

impl TxtAnswer {
    /// Failures that say nothing about the customer's DNS.
    pub fn is_temporary(&self) -> bool {
        match self {
            TxtAnswer::Records(_) | TxtAnswer::NxDomain => false,
            TxtAnswer::ServFail | TxtAnswer::Refused | TxtAnswer::Timeout | TxtAnswer::Error(_) => {
                true
            }
        }
    }
}

/// One TXT lookup, as recorded in a check.
#[derive(Debug, Clone)]
pub struct TxtLookup {
    pub queried_name: String,
    pub cname_chain: Vec<String>,
    pub answer: TxtAnswer,
    /// The wildcard probes asked after the answer, one per parent of a name the answer came
    /// through ([`rules::wildcard_parents`]), in that order. Empty when the answer holds no
    /// verification record (nothing to prove) or the alias chain is too long to probe.
    pub probes: Vec<Probe>,
    /// The server(s) asked: one `ip:port`, or the list when several are configured (the resolver
    /// does not say which of them answered).
    pub nameserver: String,
    /// The whole check: the lookup and its probes.
    pub duration: Duration,
}

/// The TXT lookup of a random name under `parent`: what a wildcard `*.parent` would answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub parent: String,
    pub name: String,
    pub cname_chain: Vec<String>,
    pub answer: TxtAnswer,
}

/// Looks up TXT records at the configured servers, with no cache: a customer who just published
/// the record and presses "Verify" must see it, and the scheduler's re-checks must see removals.
#[derive(Debug, Clone)]
pub struct TxtResolver {
    resolver: TokioResolver,
    nameserver: String,
    /// Outer bound in case the resolver's own timeouts are exceeded (retries, TCP fallback).
    longest_lookup: Duration,
}

/// Why the resolver could not be built.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot use the system resolver configuration (/etc/resolv.conf): {0}; set EMAIL2SMS_DNS_SERVERS"
)]
pub struct ResolverSetupError(String);

impl TxtResolver {
    /// A resolver asking `servers`, or the system's nameservers when the list is empty.
    /// `concurrency` is how many lookups may be in flight at once.
    pub fn new(
        servers: &[SocketAddr],
        timeout: Duration,
        attempts: usize,
        concurrency: usize,
    ) -> Result<TxtResolver, ResolverSetupError> {
        let (config, mut options, described) = if servers.is_empty() {
            let (config, options) = hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| ResolverSetupError(e.to_string()))?;
            let listed: Vec<String> = config
                .name_servers()
                .iter()
                .map(|ns| ns.ip.to_string())
                .collect();
            let described = format!("system resolver ({})", listed.join(", "));
            (config, options, described)
        } else {
            let name_servers = servers
                .iter()
                .map(|server| {
                    let mut config = NameServerConfig::udp_and_tcp(server.ip());
                    for connection in &mut config.connections {
                        connection.port = server.port();
                    }
                    config
                })
                .collect();
            let described = servers
                .iter()
                .map(SocketAddr::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            (
                ResolverConfig::from_name_servers(name_servers),
                ResolverOpts::default(),
                described,
            )
        };
        options.timeout = timeout;
        options.attempts = attempts.saturating_sub(1);
        options.cache_size = 0;
        options.preserve_intermediates = true;
        options.use_hosts_file = ResolveHosts::Never;
        options.ndots = 0;
        options.server_ordering_strategy = ServerOrderingStrategy::UserProvidedOrder;
        // The resolver refuses queries beyond this many in flight per connection; the scheduler
        // limits concurrency itself, so this must never be the one to say no.
        options.max_active_requests = options.max_active_requests.max(concurrency * 2);
        let resolver: TokioResolver =
            Resolver::builder_with_config(config, TokioRuntimeProvider::default())
                .with_options(options)
                .build()
                .map_err(|e| ResolverSetupError(e.to_string()))?;
        Ok(TxtResolver {
            resolver,
            nameserver: described,
            longest_lookup: timeout * attempts.max(1) as u32 + Duration::from_secs(1),
        })
    }

    /// The server(s) asked, as checks report them.
    pub fn nameserver(&self) -> &str {
        &self.nameserver
    }

    /// The TXT records at `domain` itself (customers publish the token there), with the
    /// wildcard probes.
    pub async fn lookup(&self, domain: &DomainName) -> TxtLookup {
        self.lookup_within(domain, self.longest_lookup).await
    }

    /// As [`TxtResolver::lookup`], answering [`TxtAnswer::Timeout`] after `limit` at the latest
    /// (a probe that has no time left is a timeout too).
    ///
    /// At most `1 + `[`rules::MAX_WILDCARD_PROBES`]` (5) lookups, one after the other: the name, then one
    /// random name per parent only when the answer holds something that looks like a
    /// verification record (so a domain with only SPF records, or none, costs one lookup). Each
    /// lookup follows CNAMEs within the resolver's own chain limit.
    pub async fn lookup_within(&self, domain: &DomainName, limit: Duration) -> TxtLookup {
        let started = Instant::now();
        let limit = limit.min(self.longest_lookup);
        let queried_name = domain.as_str().to_owned();
        let (cname_chain, answer) = self.query(&queried_name, limit).await;
        let mut probes = Vec::new();
        let proves_something =
            matches!(&answer, TxtAnswer::Records(values) if rules::has_verification_record(values));
        if proves_something
            && let Ok(parents) = rules::wildcard_parents(&queried_name, &cname_chain)
        {
            for parent in parents {
                let name = probe_name(&parent);
                let left = limit.saturating_sub(started.elapsed());
                let (chain, answer) = if left.is_zero() {
                    (Vec::new(), TxtAnswer::Timeout)
                } else {
                    self.query(&name, left).await
                };
                probes.push(Probe {
                    parent,
                    name,
                    cname_chain: chain,
                    answer,
                });
            }
        }
        TxtLookup {
            queried_name,
            cname_chain,
            answer,
            probes,
            nameserver: self.nameserver.clone(),
            duration: started.elapsed(),
        }
    }

    /// One TXT lookup of `name`: the CNAMEs followed and the answer at their end.
    async fn query(&self, name: &str, limit: Duration) -> (Vec<String>, TxtAnswer) {
        let mut cname_chain = Vec::new();
        let answer = match Name::from_ascii(format!("{name}.")) {
            Err(error) => TxtAnswer::Error(format!("{name} is not a DNS name: {error}")),
            Ok(fqdn) => {
                match tokio::time::timeout(limit, self.resolver.lookup(fqdn, RecordType::TXT)).await
                {
                    Err(_) => TxtAnswer::Timeout,
                    Ok(Ok(lookup)) => {
                        let mut values = Vec::new();
                        for record in lookup.answers() {
                            match &record.data {
                                RData::TXT(txt) => values.push(join_strings(&txt.txt_data)),
                                RData::CNAME(target) => {
                                    cname_chain.push(display_name(&target.0));
                                }
                                _ => {}
                            }
                        }
                        if values.is_empty()
                            && lookup.message().metadata.response_code == ResponseCode::NXDomain
                        {
                            // A CNAME pointing at a name that does not exist.
                            TxtAnswer::NxDomain
                        } else {
                            TxtAnswer::Records(values)
                        }
                    }
                    Ok(Err(error)) => classify(error),
                }
            }
        };
        (cname_chain, answer)
    }
}

/// A name under `parent` that nobody created: a fresh random label each time, so that a zone
/// cannot hide its wildcard behind an explicit record at a probe name it knows in advance, and
/// no cache between us and the zone can answer it.
fn probe_name(parent: &str) -> String {
    // 16 hex characters (64 random bits), shortened only when the whole name would pass the
    // 253-character limit of a DNS name.
    let room = 253usize.saturating_sub(parent.len() + 1).clamp(1, 16);
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{}.{parent}", &random[..room])
}

/// One TXT record may hold several character-strings (each at most 255 octets); DNS control
/// panels split long values that way, and the value meant is their concatenation (RFC 7208 §3.3
/// reads SPF records the same way).
fn join_strings(strings: &[Box<[u8]>]) -> String {
    let bytes: Vec<u8> = strings.iter().flat_map(|s| s.iter().copied()).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn display_name(name: &Name) -> String {
    name.to_ascii().trim_end_matches('.').to_owned()
}

fn classify(error: NetError) -> TxtAnswer {
    match error {
        NetError::Dns(DnsError::NoRecordsFound(no_records)) => {
            if no_records.response_code == ResponseCode::NXDomain {
                TxtAnswer::NxDomain
            } else {
                TxtAnswer::Records(Vec::new())
            }
        }
        NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail)) => TxtAnswer::ServFail,
        NetError::Dns(DnsError::ResponseCode(ResponseCode::Refused)) => TxtAnswer::Refused,
        NetError::Timeout => TxtAnswer::Timeout,
        other => TxtAnswer::Error(other.to_string()),
    }
}
