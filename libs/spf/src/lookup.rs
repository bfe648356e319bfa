//! viaspf's [`Lookup`] over hickory-resolver 0.26 (`TokioResolver`).
//!
//! The error mapping is the part that matters: viaspf turns `LookupError::NoRecords` (and an
//! empty answer) into "no record" — `none` at the top level, a void lookup inside a record — and
//! every other `LookupError` into `temperror`. So NXDOMAIN and NODATA (hickory's
//! `NoRecordsFound`, whatever its response code) become `NoRecords`, a timeout becomes `Timeout`,
//! and SERVFAIL, REFUSED, I/O errors and "no connections" become `Dns`, i.e. `temperror`: the
//! relay must retry rather than have mail refused because our resolver had a bad moment.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::lookup::Lookup as HickoryAnswer;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::rr::{IntoName, Name as HickoryName, RData};
use viaspf::lookup::{Lookup, LookupError, LookupResult, Name};

use crate::SpfError;

/// Default time allowed for one DNS request: a recursive resolver that has not answered in 2 s
/// has usually lost the query (answers from a cache take milliseconds, fresh ones well under a
/// second), and sending it again is the quickest way to an answer.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Default number of times one DNS request is sent: the first try and one retry. With
/// [`DEFAULT_QUERY_TIMEOUT`] a dead DNS server costs 4 s per check, not the 15 s of hickory's
/// own defaults (5 s × 3 tries), which came close to some relays' patience.
pub const DEFAULT_ATTEMPTS: usize = 2;

/// How the resolver reaches DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// Recursive resolvers to ask (UDP, falling back to TCP for truncated answers). Empty means
    /// the system resolver configuration (`/etc/resolv.conf`).
    pub nameservers: Vec<SocketAddr>,
    /// Time allowed for one DNS request before it is sent again or given up as a timeout.
    pub query_timeout: Duration,
    /// How many times one request is sent (the first try plus retries; 0 counts as 1).
    pub attempts: usize,
}

impl Default for DnsSettings {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            query_timeout: DEFAULT_QUERY_TIMEOUT,
            attempts: DEFAULT_ATTEMPTS,
        }
    }
}

impl DnsSettings {
    /// The longest one lookup waits for a server that never answers: timeout × attempts.
    pub fn longest_lookup(&self) -> Duration {
        self.query_timeout
            .saturating_mul(u32::try_from(self.attempts.max(1)).unwrap_or(u32::MAX))
    }
}

/// A [`Lookup`] backed by a hickory `TokioResolver` (with its answer cache).
#[derive(Clone)]
pub struct HickoryLookup {
    resolver: TokioResolver,
}

impl std::fmt::Debug for HickoryLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HickoryLookup").finish_non_exhaustive()
    }
}

impl HickoryLookup {
    /// Builds the resolver. Must be called inside a Tokio runtime.
    ///
    /// # Errors
    /// [`SpfError::Resolver`] when the system configuration cannot be read (only when
    /// `settings.nameservers` is empty).
    pub fn new(settings: &DnsSettings) -> Result<Self, SpfError> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if settings.nameservers.is_empty() {
            TokioResolver::builder(provider).map_err(|e| SpfError::Resolver(e.to_string()))?
        } else {
            let servers = settings
                .nameservers
                .iter()
                .map(|addr| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = addr.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = addr.port();
                    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
                })
                .collect();
            TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.timeout = settings.query_timeout;
        // hickory's `attempts` counts the retries after the first try.
        opts.attempts = settings.attempts.saturating_sub(1);
        // SPF names come from DNS and the sender, never from the local host table: a stray
        // /etc/hosts entry must not decide whether mail is authorised.
        opts.use_hosts_file = ResolveHosts::Never;
        let resolver = builder
            .build()
            .map_err(|e| SpfError::Resolver(e.to_string()))?;
        Ok(Self { resolver })
    }

    /// Wraps an already configured resolver.
    pub fn from_resolver(resolver: TokioResolver) -> Self {
        Self { resolver }
    }

    async fn answer(&self, name: impl IntoName, kind: Kind) -> LookupResult<HickoryAnswer> {
        let result = match kind {
            Kind::A => self.resolver.ipv4_lookup(name).await,
            Kind::Aaaa => self.resolver.ipv6_lookup(name).await,
            Kind::Mx => self.resolver.mx_lookup(name).await,
            Kind::Txt => self.resolver.txt_lookup(name).await,
            Kind::Ptr => self.resolver.reverse_lookup(name).await,
        };
        result.map_err(to_lookup_error)
    }
}

#[derive(Clone, Copy)]
enum Kind {
    A,
    Aaaa,
    Mx,
    Txt,
    Ptr,
}

/// The mapping described in the module documentation.
fn to_lookup_error(error: NetError) -> LookupError {
    match error {
        NetError::Dns(DnsError::NoRecordsFound(_)) => LookupError::NoRecords,
        NetError::Timeout => LookupError::Timeout,
        other => LookupError::Dns(Some(Box::new(other))),
    }
}

/// viaspf names are fully qualified (trailing dot), so no search domain is ever appended.
fn to_hickory_name(name: &Name) -> LookupResult<HickoryName> {
    // A name that cannot be put on the wire (a macro expanded to odd characters) cannot have
    // records: answering "no records" keeps such a record from turning into a temperror that
    // would make relays retry for days.
    HickoryName::from_ascii(name.as_str()).map_err(|_| LookupError::NoRecords)
}

/// viaspf's `Name` from a hickory name; the root (a null MX, RFC 7505) and unusable names yield
/// `None` so they are skipped instead of failing the whole lookup.
fn to_viaspf_name(name: &HickoryName) -> Option<Name> {
    if name.is_root() {
        return None;
    }
    Name::new(&name.to_ascii()).ok()
}

#[async_trait]
impl Lookup for HickoryLookup {
    async fn lookup_a<'lookup, 'a>(&'lookup self, name: &'a Name) -> LookupResult<Vec<Ipv4Addr>> {
        let answer = self.answer(to_hickory_name(name)?, Kind::A).await?;
        // Answers may carry the CNAME chain (preserve_intermediates); keep only the addresses.
        Ok(answer
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect())
    }

    async fn lookup_aaaa<'lookup, 'a>(
        &'lookup self,
        name: &'a Name,
    ) -> LookupResult<Vec<Ipv6Addr>> {
        let answer = self.answer(to_hickory_name(name)?, Kind::Aaaa).await?;
        Ok(answer
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::AAAA(a) => Some(a.0),
                _ => None,
            })
            .collect())
    }

    async fn lookup_mx<'lookup, 'a>(&'lookup self, name: &'a Name) -> LookupResult<Vec<Name>> {
        let answer = self.answer(to_hickory_name(name)?, Kind::Mx).await?;
        let mut mxs: Vec<(u16, Name)> = answer
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::MX(mx) => to_viaspf_name(&mx.exchange).map(|n| (mx.preference, n)),
                _ => None,
            })
            .collect();
        // viaspf asks for MX preference order (it only looks at the first ten).
        mxs.sort_by_key(|(preference, _)| *preference);
        Ok(mxs.into_iter().map(|(_, n)| n).collect())
    }

    async fn lookup_txt<'lookup, 'a>(&'lookup self, name: &'a Name) -> LookupResult<Vec<String>> {
        let answer = self.answer(to_hickory_name(name)?, Kind::Txt).await?;
        // As viaspf requires: the strings of one record joined without separator, invalid UTF-8
        // replaced rather than failing the lookup.
        Ok(answer
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(txt) => Some(
                    txt.txt_data
                        .iter()
                        .map(|piece| String::from_utf8_lossy(piece))
                        .collect::<String>(),
                ),
                _ => None,
            })
            .collect())
    }

    async fn lookup_ptr<'lookup>(&'lookup self, ip: IpAddr) -> LookupResult<Vec<Name>> {
        let answer = self.answer(HickoryName::from(ip), Kind::Ptr).await?;
        Ok(answer
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::PTR(ptr) => to_viaspf_name(&ptr.0),
                _ => None,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::net::NoRecords;
    use hickory_resolver::proto::op::{Query, ResponseCode};

    #[test]
    fn nxdomain_and_nodata_are_no_records_timeouts_and_servfail_are_temporary() {
        let query = Query::default();
        let nx = NetError::Dns(DnsError::NoRecordsFound(NoRecords::new(
            query.clone(),
            ResponseCode::NXDomain,
        )));
        let nodata = NetError::Dns(DnsError::NoRecordsFound(NoRecords::new(
            query,
            ResponseCode::NoError,
        )));
        assert!(matches!(to_lookup_error(nx), LookupError::NoRecords));
        assert!(matches!(to_lookup_error(nodata), LookupError::NoRecords));
        assert!(matches!(
            to_lookup_error(NetError::Timeout),
            LookupError::Timeout
        ));
        let servfail = NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail));
        assert!(matches!(to_lookup_error(servfail), LookupError::Dns(_)));
        assert!(matches!(
            to_lookup_error(NetError::NoConnections),
            LookupError::Dns(_)
        ));
    }

    #[test]
    fn root_exchange_is_skipped() {
        assert!(to_viaspf_name(&HickoryName::root()).is_none());
        let mx = HickoryName::from_ascii("mx.example.com.").unwrap();
        assert_eq!(
            to_viaspf_name(&mx).unwrap().as_str(),
            Name::new("mx.example.com").unwrap().as_str()
        );
    }
}
