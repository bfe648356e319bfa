//! The one reader of the index, and the resolution order every reader of it follows.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

use email2sms_domain::{DomainName, EmailAddress, IpNetwork, longest_prefix_match};
use email2sms_proto::policy::v1::CompiledSender;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use crate::error::{Error, Result};
use crate::keys::KeyLayout;
use crate::value::decode;

/// The IP entries, parsed: what `P policy:ip` holds.
#[derive(Debug, Clone, Default)]
pub struct IpTable {
    entries: Vec<(IpNetwork, Arc<CompiledSender>)>,
}

impl IpTable {
    /// The table from the fields and values of the hash `key`; a field that is not a network or
    /// a value that is not a sender refuses the whole table (it is damaged: ask Postgres).
    pub fn from_fields(
        key: &str,
        fields: impl IntoIterator<Item = (String, Vec<u8>)>,
    ) -> Result<IpTable> {
        let entries = fields
            .into_iter()
            .map(|(field, bytes)| {
                let net = IpNetwork::parse(&field)
                    .map_err(|source| Error::BadNetwork { field, source })?;
                let sender = decode(key, &bytes)?;
                Ok((net, Arc::new(sender)))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(IpTable { entries })
    }

    /// The entry with the longest prefix containing `ip` (IPv4-mapped IPv6 counts as IPv4).
    pub fn longest_match(&self, ip: IpAddr) -> Option<&Arc<CompiledSender>> {
        longest_prefix_match(&self.entries, ip, |(net, _)| net).map(|(_, sender)| sender)
    }

    /// How many networks the table holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table holds no network.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The three lookups of [`resolve`]. [`Reader`] answers them from Redis; a caller with a cache of
/// its own (ingest) implements this over the reader.
pub trait Lookups: Sync {
    /// Why a lookup failed.
    type Error: Send;

    /// The email entry of `address`.
    fn email(
        &self,
        address: &EmailAddress,
    ) -> impl Future<Output = Result<Option<Arc<CompiledSender>>, Self::Error>> + Send;

    /// The entry of exactly `domain` (see [`Reader::domain`]).
    fn domain(
        &self,
        domain: &DomainName,
    ) -> impl Future<Output = Result<Option<Arc<CompiledSender>>, Self::Error>> + Send;

    /// The IP entries.
    fn ip_table(&self) -> impl Future<Output = Result<Arc<IpTable>, Self::Error>> + Send;
}

/// What [`resolve`] found.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The matched entry (ready or not), or none.
    pub sender: Option<Arc<CompiledSender>>,
    /// The keys tried, in order, for Diagnose.
    pub tried: Vec<String>,
}

/// Resolves `from` sent from `ip` in the product's order: the email entry, else the entry of
/// the exact From domain (never a parent's), else the IP entry with the longest prefix
/// containing `ip`. A not-ready entry is returned, not skipped, so the refusal can say why.
pub async fn resolve<L: Lookups>(
    lookups: &L,
    layout: &KeyLayout,
    from: &EmailAddress,
    ip: IpAddr,
) -> Result<Resolved, L::Error> {
    let mut tried = vec![layout.email(from.as_str())];
    if let Some(sender) = lookups.email(from).await? {
        return Ok(Resolved {
            sender: Some(sender),
            tried,
        });
    }
    tried.push(layout.domain(from.domain().as_str()));
    if let Some(sender) = lookups.domain(from.domain()).await? {
        return Ok(Resolved {
            sender: Some(sender),
            tried,
        });
    }
    tried.push(format!(
        "{} (longest prefix containing {ip})",
        layout.ip_table()
    ));
    let table = lookups.ip_table().await?;
    Ok(Resolved {
        sender: table.longest_match(ip).cloned(),
        tried,
    })
}

/// Reads the index from Redis. Cheap to clone.
#[derive(Clone)]
pub struct Reader {
    conn: ConnectionManager,
    layout: KeyLayout,
}

impl fmt::Debug for Reader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader")
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

impl Reader {
    /// A reader of the index under `layout` through `conn`.
    pub fn new(conn: ConnectionManager, layout: KeyLayout) -> Reader {
        Reader { conn, layout }
    }

    /// The names this reader reads.
    pub fn layout(&self) -> &KeyLayout {
        &self.layout
    }

    /// The connection, for a caller's own keys.
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    async fn get(&self, key: &str) -> Result<Option<CompiledSender>> {
        let mut conn = self.conn.clone();
        let bytes: Option<Vec<u8>> = conn.get(key).await?;
        bytes.map(|b| decode(key, &b)).transpose()
    }

    /// The email entry of `address`.
    pub async fn email(&self, address: &EmailAddress) -> Result<Option<CompiledSender>> {
        self.get(&self.layout.email(address.as_str())).await
    }

    /// The domain entry stored for `domain`, checked with the exact-domain rule
    /// ([`DomainName::covers_exactly`]): an entry stored under a domain it does not cover exactly
    /// (a damaged index, a hand edit) is refused rather than allowed to authorise that domain.
    pub async fn domain(&self, domain: &DomainName) -> Result<Option<CompiledSender>> {
        let key = self.layout.domain(domain.as_str());
        let Some(sender) = self.get(&key).await? else {
            return Ok(None);
        };
        match DomainName::parse(&sender.matched_value) {
            Ok(entry) if entry.covers_exactly(domain) => Ok(Some(sender)),
            _ => Err(Error::WrongDomain {
                key,
                matched: sender.matched_value,
                domain: domain.as_str().to_owned(),
            }),
        }
    }

    /// The IP entries.
    pub async fn ip_table(&self) -> Result<IpTable> {
        let key = self.layout.ip_table();
        let mut conn = self.conn.clone();
        let fields: HashMap<String, Vec<u8>> = conn.hgetall(&key).await?;
        IpTable::from_fields(&key, fields)
    }

    /// The compile version of the data in Redis; `None` when never built or flushed.
    pub async fn version(&self) -> Result<Option<u64>> {
        let mut conn = self.conn.clone();
        Ok(conn.get(self.layout.version()).await?)
    }

    /// Whether the policy service has compiled into this Redis (the version key exists). A miss
    /// proves "not authorised" only then.
    pub async fn has_compiled_data(&self) -> Result<bool> {
        let mut conn = self.conn.clone();
        Ok(conn.exists(self.layout.version()).await?)
    }

    /// [`resolve`] straight from Redis.
    pub async fn resolve(&self, from: &EmailAddress, ip: IpAddr) -> Result<Resolved> {
        resolve(self, &self.layout, from, ip).await
    }
}

impl Lookups for Reader {
    type Error = Error;

    async fn email(&self, address: &EmailAddress) -> Result<Option<Arc<CompiledSender>>> {
        Ok(Reader::email(self, address).await?.map(Arc::new))
    }

    async fn domain(&self, domain: &DomainName) -> Result<Option<Arc<CompiledSender>>> {
        Ok(Reader::domain(self, domain).await?.map(Arc::new))
    }

    async fn ip_table(&self) -> Result<Arc<IpTable>> {
        Ok(Arc::new(Reader::ip_table(self).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::encode;
    use std::sync::Mutex;

    fn sender(value: &str) -> CompiledSender {
        CompiledSender {
            matched_value: value.into(),
            company_id: "company-1".into(),
            ..CompiledSender::default()
        }
    }

    /// Lookups from maps, recording what was asked.
    #[derive(Default)]
    struct Fake {
        emails: HashMap<String, Arc<CompiledSender>>,
        domains: HashMap<String, Arc<CompiledSender>>,
        ips: Arc<IpTable>,
        asked: Mutex<Vec<String>>,
    }

    impl Lookups for Fake {
        type Error = std::convert::Infallible;

        async fn email(
            &self,
            address: &EmailAddress,
        ) -> Result<Option<Arc<CompiledSender>>, Self::Error> {
            self.asked.lock().unwrap().push(format!("email {address}"));
            Ok(self.emails.get(address.as_str()).cloned())
        }

        async fn domain(
            &self,
            domain: &DomainName,
        ) -> Result<Option<Arc<CompiledSender>>, Self::Error> {
            self.asked.lock().unwrap().push(format!("domain {domain}"));
            Ok(self.domains.get(domain.as_str()).cloned())
        }

        async fn ip_table(&self) -> Result<Arc<IpTable>, Self::Error> {
            self.asked.lock().unwrap().push("ip".into());
            Ok(self.ips.clone())
        }
    }

    fn table(fields: &[(&str, &str)]) -> IpTable {
        IpTable::from_fields(
            "p:policy:ip",
            fields
                .iter()
                .map(|(cidr, value)| ((*cidr).to_owned(), encode(&sender(value)))),
        )
        .unwrap()
    }

    async fn matched(fake: &Fake, from: &str, ip: &str) -> Option<String> {
        let from = EmailAddress::parse(from).unwrap();
        resolve(fake, &KeyLayout::new("p:"), &from, ip.parse().unwrap())
            .await
            .unwrap()
            .sender
            .map(|s| s.matched_value.clone())
    }

    #[tokio::test]
    async fn email_then_exact_domain_then_longest_prefix() {
        let mut fake = Fake::default();
        fake.emails.insert(
            "jo@acme.example".into(),
            Arc::new(sender("jo@acme.example")),
        );
        fake.domains
            .insert("acme.example".into(), Arc::new(sender("acme.example")));
        fake.ips = Arc::new(table(&[("10.0.0.0/8", "wide"), ("10.1.0.0/16", "narrow")]));
        assert_eq!(
            matched(&fake, "jo@acme.example", "10.1.2.3")
                .await
                .as_deref(),
            Some("jo@acme.example")
        );
        assert_eq!(
            matched(&fake, "bob@acme.example", "10.1.2.3")
                .await
                .as_deref(),
            Some("acme.example")
        );
        // A subdomain is not covered by its parent's entry: the IP table decides.
        assert_eq!(
            matched(&fake, "bob@sales.acme.example", "10.1.2.3")
                .await
                .as_deref(),
            Some("narrow")
        );
        assert_eq!(
            matched(&fake, "bob@sales.acme.example", "10.2.0.1")
                .await
                .as_deref(),
            Some("wide")
        );
        assert_eq!(matched(&fake, "bob@rival.example", "192.0.2.1").await, None);
    }

    #[tokio::test]
    async fn the_first_match_stops_the_search_and_every_key_tried_is_named() {
        let mut fake = Fake::default();
        fake.domains
            .insert("acme.example".into(), Arc::new(sender("acme.example")));
        let from = EmailAddress::parse("Bob@ACME.example").unwrap();
        let layout = KeyLayout::new("p:");
        let found = resolve(&fake, &layout, &from, "10.0.0.1".parse().unwrap())
            .await
            .unwrap();
        assert_eq!(
            found.tried,
            [
                "p:policy:email:bob@acme.example",
                "p:policy:domain:acme.example"
            ]
        );
        assert_eq!(
            *fake.asked.lock().unwrap(),
            ["email bob@acme.example", "domain acme.example"]
        );
        let from = EmailAddress::parse("x@nobody.example").unwrap();
        let found = resolve(&fake, &layout, &from, "10.0.0.1".parse().unwrap())
            .await
            .unwrap();
        assert_eq!(
            found.tried.last().unwrap(),
            "p:policy:ip (longest prefix containing 10.0.0.1)"
        );
    }

    #[test]
    fn ipv4_mapped_clients_match_ipv4_networks() {
        let t = table(&[("192.0.2.0/24", "v4")]);
        let mapped: IpAddr = "::ffff:192.0.2.9".parse().unwrap();
        assert_eq!(t.longest_match(mapped).unwrap().matched_value, "v4");
        assert!(t.longest_match("2001:db8::1".parse().unwrap()).is_none());
    }

    #[test]
    fn a_damaged_ip_table_is_refused_whole() {
        let bad_field = IpTable::from_fields(
            "p:policy:ip",
            [("not a network".to_owned(), encode(&sender("x")))],
        );
        assert!(matches!(bad_field, Err(Error::BadNetwork { .. })));
        let bad_value =
            IpTable::from_fields("p:policy:ip", [("10.0.0.0/8".to_owned(), vec![0xff])]);
        assert!(matches!(bad_value, Err(Error::Undecodable { .. })));
    }
}
