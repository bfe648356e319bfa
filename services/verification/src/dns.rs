//! The DNS side of a check: one TXT lookup of the challenge name, reported with everything a
//! support person needs (what answered, which CNAMEs were followed, every value seen).

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

/// One TXT lookup, as recorded in a check.
#[derive(Debug, Clone)]
pub struct TxtLookup {
    pub queried_name: String,
    pub cname_chain: Vec<String>,
    pub answer: TxtAnswer,
    /// The server(s) asked: one `ip:port`, or the list when several are configured (the resolver
    /// does not say which of them answered).
    pub nameserver: String,
    pub duration: Duration,
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

    /// The TXT records at `domain` itself (customers publish the token there).
    pub async fn lookup(&self, domain: &DomainName) -> TxtLookup {
        self.lookup_within(domain, self.longest_lookup).await
    }

    /// As [`TxtResolver::lookup`], answering [`TxtAnswer::Timeout`] after `limit` at the latest.
    pub async fn lookup_within(&self, domain: &DomainName, limit: Duration) -> TxtLookup {
        let started = Instant::now();
        let queried_name = domain.as_str().to_owned();
        let mut cname_chain = Vec::new();
        let answer = match Name::from_ascii(format!("{queried_name}.")) {
            Err(error) => TxtAnswer::Error(format!("{queried_name} is not a DNS name: {error}")),
            Ok(name) => {
                let limit = limit.min(self.longest_lookup);
                match tokio::time::timeout(limit, self.resolver.lookup(name, RecordType::TXT)).await
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
        TxtLookup {
            queried_name,
            cname_chain,
            answer,
            nameserver: self.nameserver.clone(),
            duration: started.elapsed(),
        }
    }
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
