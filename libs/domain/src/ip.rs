//! IP addresses and CIDR networks of sending mail servers.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::error::shown;

/// An IPv4 or IPv6 network in canonical form; a single address is a host-length network
/// (/32 or /128).
///
/// Normalisation:
/// - IPv6 is written the RFC 5952 way, lower case and shortest (`2001:DB8:0::1` → `2001:db8::1`).
/// - A host-length network is shown without its prefix (`192.0.2.7`, not `192.0.2.7/32`).
/// - IPv4-mapped IPv6 (`::ffff:192.0.2.7`, also with a prefix of 96 or more) becomes plain IPv4.
///   A mail server that connects over IPv4 to a dual-stack (IPv6) socket appears to us as a mapped
///   address, while administrators always write the IPv4 form; mapping both to IPv4 makes them
///   match. [`IpNetwork::contains`] maps the address it is given in the same way.
///
/// Refused: host bits set (`10.0.0.1/8`: the message suggests `10.0.0.0/8`), prefix lengths
/// outside 0–32 / 0–128, IPv4 octets with leading zeros (`010.0.0.1` could be read as octal),
/// IPv6 zone identifiers (`fe80::1%eth0`), and anything that is not an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpNetwork(IpNet);

/// Why an IP address or network was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IpNetworkError {
    /// Nothing was entered.
    #[error(
        "the IP address is empty; enter an address like 192.0.2.10 or a network like 192.0.2.0/24"
    )]
    Empty,
    /// The input contains a space, tab or line break.
    #[error(
        "`{}` contains a space or line break; write the address without spaces, like 192.0.2.10 or 192.0.2.0/24",
        shown(.input)
    )]
    Whitespace {
        /// The input as given.
        input: String,
    },
    /// Not an IP address at all.
    #[error(
        "`{}` is not an IP address; write one like 192.0.2.10, a network like 192.0.2.0/24, or IPv6 like 2001:db8::/32",
        shown(.input)
    )]
    Invalid {
        /// The input as given.
        input: String,
    },
    /// An IPv4 octet written with leading zeros.
    #[error(
        "`{}` has a number with a leading zero, which some systems read as octal; write each number without leading zeros, like 10.0.0.1",
        shown(.input)
    )]
    LeadingZeros {
        /// The input as given.
        input: String,
    },
    /// An IPv6 zone identifier such as `%eth0`.
    #[error(
        "`{}` names a network interface after %; enter the address without it",
        shown(.input)
    )]
    ZoneId {
        /// The input as given.
        input: String,
    },
    /// The text after `/` is not a number.
    #[error(
        "`{}`: the part after / must be the number of network bits, like 192.0.2.0/24",
        shown(.input)
    )]
    InvalidPrefix {
        /// The input as given.
        input: String,
    },
    /// The prefix length is larger than the address has bits.
    #[error(
        "`{}`: /{prefix} is too long; an {family} network is at most /{max}",
        shown(.input),
        family = if *.max == 32 { "IPv4" } else { "IPv6" }
    )]
    PrefixOutOfRange {
        /// The input as given.
        input: String,
        /// The prefix length given.
        prefix: u32,
        /// 32 for IPv4, 128 for IPv6.
        max: u8,
    },
    /// Bits after the prefix are set, so the text does not name a network.
    #[error(
        "`{}` is not the start of a network: a /{prefix_len} network containing {address} starts at {network}, so enter {network} (or {address} on its own for just that address)",
        shown(.input)
    )]
    HostBitsSet {
        /// The input as given.
        input: String,
        /// The address as written, canonicalised.
        address: String,
        /// The prefix length given.
        prefix_len: u8,
        /// The network the person probably meant, in canonical form.
        network: String,
    },
}

impl IpNetworkError {
    /// Stable upper-case identifier of the failure, suitable as the `reason` of an API error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Empty => "IP_EMPTY",
            Self::Whitespace { .. } => "IP_WHITESPACE",
            Self::Invalid { .. } => "IP_INVALID",
            Self::LeadingZeros { .. } => "IP_LEADING_ZEROS",
            Self::ZoneId { .. } => "IP_ZONE_ID",
            Self::InvalidPrefix { .. } => "IP_INVALID_PREFIX",
            Self::PrefixOutOfRange { .. } => "IP_PREFIX_OUT_OF_RANGE",
            Self::HostBitsSet { .. } => "IP_HOST_BITS_SET",
        }
    }
}

/// The address as the rest of the product sees it: IPv4-mapped IPv6 (`::ffff:a.b.c.d`) becomes
/// IPv4, anything else is unchanged. Apply it to a connecting client's address before logging or
/// comparing it.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// True for dotted-quad text in which some octet has a leading zero, which `IpAddr`'s parser
/// refuses; recognised only to give a clearer message.
fn has_ipv4_leading_zero(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 4
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && parts.iter().any(|p| p.len() > 1 && p.starts_with('0'))
}

fn max_prefix(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// Builds a network, mapping IPv4-mapped IPv6 to IPv4 when the prefix stays inside the mapped
/// range. The prefix must already be in range for the address family.
fn build(addr: IpAddr, prefix: u8) -> IpNet {
    if let IpAddr::V6(v6) = addr
        && let Some(v4) = v6.to_ipv4_mapped()
        && prefix >= 96
    {
        return IpNet::V4(Ipv4Net::new_assert(v4, prefix - 96));
    }
    match addr {
        IpAddr::V4(v4) => IpNet::V4(Ipv4Net::new_assert(v4, prefix)),
        IpAddr::V6(v6) => IpNet::V6(Ipv6Net::new_assert(v6, prefix)),
    }
}

fn show_net(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

impl IpNetwork {
    /// Validates and normalises an address (`192.0.2.7`, `2001:db8::1`) or a CIDR network
    /// (`192.0.2.0/24`, `2001:db8::/32`); see the type's documentation for the rules.
    pub fn parse(input: &str) -> Result<Self, IpNetworkError> {
        let owned = || input.to_owned();
        if input.is_empty() {
            return Err(IpNetworkError::Empty);
        }
        if input.chars().any(char::is_whitespace) {
            return Err(IpNetworkError::Whitespace { input: owned() });
        }
        let (addr_text, prefix_text) = match input.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (input, None),
        };
        if addr_text.contains('%') {
            return Err(IpNetworkError::ZoneId { input: owned() });
        }
        let addr: IpAddr = addr_text.parse().map_err(|_| {
            if has_ipv4_leading_zero(addr_text) {
                IpNetworkError::LeadingZeros { input: owned() }
            } else {
                IpNetworkError::Invalid { input: owned() }
            }
        })?;
        let max = max_prefix(addr);
        let prefix = match prefix_text {
            None => max,
            Some(p) => {
                // Digits only: `u32::from_str` would also take `+24`.
                if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(IpNetworkError::InvalidPrefix { input: owned() });
                }
                let prefix: u32 = p
                    .parse()
                    .map_err(|_| IpNetworkError::InvalidPrefix { input: owned() })?;
                match u8::try_from(prefix) {
                    Ok(p) if p <= max => p,
                    _ => {
                        return Err(IpNetworkError::PrefixOutOfRange {
                            input: owned(),
                            prefix,
                            max,
                        });
                    }
                }
            }
        };
        let net = build(addr, prefix);
        if net.addr() != net.network() {
            return Err(IpNetworkError::HostBitsSet {
                input: owned(),
                address: net.addr().to_string(),
                prefix_len: net.prefix_len(),
                network: show_net(&net.trunc()),
            });
        }
        Ok(Self(net))
    }

    /// The network holding exactly one address.
    pub fn from_ip(ip: IpAddr) -> Self {
        let ip = canonical_ip(ip);
        Self(build(ip, max_prefix(ip)))
    }

    /// The first address of the network (the address itself for a single address).
    pub fn network(&self) -> IpAddr {
        self.0.network()
    }

    /// The prefix length: 0–32 for IPv4, 0–128 for IPv6.
    pub fn prefix_len(&self) -> u8 {
        self.0.prefix_len()
    }

    /// True when the network is one address (/32 or /128).
    pub fn is_single_address(&self) -> bool {
        self.0.prefix_len() == self.0.max_prefix_len()
    }

    /// True for an IPv4 network.
    pub fn is_ipv4(&self) -> bool {
        matches!(self.0, IpNet::V4(_))
    }

    /// Whether `ip` is inside this network. IPv4-mapped IPv6 addresses are compared as IPv4, so a
    /// client seen as `::ffff:192.0.2.7` is inside `192.0.2.0/24`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&canonical_ip(ip))
    }

    /// The network as an [`ipnet::IpNet`] (for example to store it in a Postgres `cidr` column).
    pub fn to_ipnet(&self) -> IpNet {
        self.0
    }

    /// The most specific of `candidates` that contains `ip`; among equally specific ones, the
    /// first. Sender resolution uses it so that a `/32` entry wins over a `/24` one.
    pub fn longest_match<'a, I>(candidates: I, ip: IpAddr) -> Option<&'a IpNetwork>
    where
        I: IntoIterator<Item = &'a IpNetwork>,
    {
        longest_prefix_match(candidates, ip, |n| n)
    }

    /// The canonical text; see [`fmt::Display`].
    fn text(&self) -> String {
        show_net(&self.0)
    }
}

/// The item of `candidates` whose network (given by `network`) contains `ip` with the longest
/// prefix; among equally long ones, the first. Lets callers pick among their own entry types.
pub fn longest_prefix_match<'a, T, F>(
    candidates: impl IntoIterator<Item = &'a T>,
    ip: IpAddr,
    network: F,
) -> Option<&'a T>
where
    T: ?Sized + 'a,
    F: Fn(&T) -> &IpNetwork,
{
    let ip = canonical_ip(ip);
    let mut best: Option<(&'a T, u8)> = None;
    for candidate in candidates {
        let net = network(candidate);
        if net.contains(ip) && best.is_none_or(|(_, len)| net.prefix_len() > len) {
            best = Some((candidate, net.prefix_len()));
        }
    }
    best.map(|(c, _)| c)
}

impl From<IpAddr> for IpNetwork {
    fn from(ip: IpAddr) -> Self {
        Self::from_ip(ip)
    }
}

impl From<Ipv4Addr> for IpNetwork {
    fn from(ip: Ipv4Addr) -> Self {
        Self::from_ip(IpAddr::V4(ip))
    }
}

impl From<Ipv6Addr> for IpNetwork {
    fn from(ip: Ipv6Addr) -> Self {
        Self::from_ip(IpAddr::V6(ip))
    }
}

impl TryFrom<IpNet> for IpNetwork {
    type Error = IpNetworkError;

    /// Applies the same rules as parsing, so host bits and mapped addresses are handled alike.
    fn try_from(net: IpNet) -> Result<Self, Self::Error> {
        Self::parse(&net.to_string())
    }
}

impl From<IpNetwork> for IpNet {
    fn from(n: IpNetwork) -> Self {
        n.0
    }
}

impl FromStr for IpNetwork {
    type Err = IpNetworkError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for IpNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> String {
        IpNetwork::parse(s)
            .unwrap_or_else(|e| panic!("{s:?} refused: {e}"))
            .to_string()
    }

    fn err(s: &str) -> IpNetworkError {
        match IpNetwork::parse(s) {
            Ok(n) => panic!("{s:?} accepted as {n}"),
            Err(e) => e,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(ok("2001:DB8::1"), "2001:db8::1");
        assert_eq!(ok("2001:0db8:0000:0000:0000:0000:0000:0001"), "2001:db8::1");
        assert_eq!(ok("192.0.2.7"), "192.0.2.7");
        assert_eq!(ok("192.0.2.7/32"), "192.0.2.7");
        assert_eq!(ok("2001:db8::1/128"), "2001:db8::1");
        assert_eq!(ok("192.0.2.0/24"), "192.0.2.0/24");
        assert_eq!(ok("0.0.0.0/0"), "0.0.0.0/0");
        assert_eq!(ok("::/0"), "::/0");
        assert_eq!(ok("2001:DB8::/32"), "2001:db8::/32");
        assert_eq!(ok("2001:db8:0:1::/64"), "2001:db8:0:1::/64");
        assert_eq!(
            IpNetwork::parse("192.0.2.7").unwrap(),
            IpNetwork::parse("192.0.2.7/32").unwrap()
        );
    }

    #[test]
    fn single_address_is_host_length() {
        let n = IpNetwork::parse("192.0.2.7").unwrap();
        assert_eq!(n.prefix_len(), 32);
        assert!(n.is_single_address());
        let n = IpNetwork::parse("2001:db8::1").unwrap();
        assert_eq!(n.prefix_len(), 128);
        assert!(n.is_single_address());
        assert!(!IpNetwork::parse("10.0.0.0/8").unwrap().is_single_address());
    }

    #[test]
    fn ipv4_mapped_ipv6_becomes_ipv4() {
        assert_eq!(ok("::ffff:1.2.3.4"), "1.2.3.4");
        assert_eq!(
            IpNetwork::parse("::ffff:1.2.3.4").unwrap(),
            IpNetwork::parse("1.2.3.4").unwrap()
        );
        assert_eq!(ok("::FFFF:0102:0304"), "1.2.3.4");
        assert_eq!(ok("::ffff:10.0.0.0/104"), "10.0.0.0/8");
        assert_eq!(ok("::ffff:0.0.0.0/96"), "0.0.0.0/0");
        // IPv4-compatible (deprecated, not mapped) addresses stay IPv6.
        assert_eq!(ok("::1.2.3.4"), "::102:304");
        assert_eq!(ok("::1"), "::1");
        // A mapped address with a prefix shorter than 96 has host bits set.
        assert_eq!(err("::ffff:1.2.3.4/64").code(), "IP_HOST_BITS_SET");
    }

    #[test]
    fn contains_maps_the_client_address() {
        let net = IpNetwork::parse("192.0.2.0/24").unwrap();
        assert!(net.contains(ip("192.0.2.7")));
        assert!(net.contains(ip("::ffff:192.0.2.7")));
        assert!(!net.contains(ip("192.0.3.7")));
        assert!(!net.contains(ip("2001:db8::1")));
        let v6 = IpNetwork::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("192.0.2.7")));
        assert_eq!(canonical_ip(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(
            IpNetwork::from(ip("::ffff:192.0.2.7")),
            IpNetwork::parse("192.0.2.7").unwrap()
        );
    }

    #[test]
    fn host_bits_set_suggests_the_network() {
        let e = err("10.0.0.1/8");
        assert_eq!(e.code(), "IP_HOST_BITS_SET");
        assert_eq!(
            e.to_string(),
            "`10.0.0.1/8` is not the start of a network: a /8 network containing 10.0.0.1 starts at 10.0.0.0/8, so enter 10.0.0.0/8 (or 10.0.0.1 on its own for just that address)"
        );
        let e = err("2001:db8::1/32");
        assert!(e.to_string().contains("2001:db8::/32"), "{e}");
        assert_eq!(err("192.0.2.1/0").code(), "IP_HOST_BITS_SET");
    }

    #[test]
    fn prefix_lengths() {
        assert_eq!(err("10.0.0.0/33").code(), "IP_PREFIX_OUT_OF_RANGE");
        assert_eq!(err("2001:db8::/129").code(), "IP_PREFIX_OUT_OF_RANGE");
        assert_eq!(err("10.0.0.0/999").code(), "IP_PREFIX_OUT_OF_RANGE");
        assert!(
            err("10.0.0.0/33")
                .to_string()
                .contains("IPv4 network is at most /32")
        );
        assert_eq!(err("10.0.0.0/").code(), "IP_INVALID_PREFIX");
        assert_eq!(err("10.0.0.0/+8").code(), "IP_INVALID_PREFIX");
        assert_eq!(err("10.0.0.0/-8").code(), "IP_INVALID_PREFIX");
        assert_eq!(err("10.0.0.0/8/8").code(), "IP_INVALID_PREFIX");
        assert_eq!(err("10.0.0.0/1000").code(), "IP_INVALID_PREFIX");
        assert_eq!(err("10.0.0.0/255.0.0.0").code(), "IP_INVALID_PREFIX");
        assert_eq!(ok("10.0.0.0/08"), "10.0.0.0/8");
    }

    #[test]
    fn malformed_addresses() {
        assert_eq!(err("").code(), "IP_EMPTY");
        assert_eq!(err("010.0.0.1").code(), "IP_LEADING_ZEROS");
        assert_eq!(err("10.0.0.01/32").code(), "IP_LEADING_ZEROS");
        assert_eq!(err("fe80::1%eth0").code(), "IP_ZONE_ID");
        assert_eq!(err("10.0.0").code(), "IP_INVALID");
        assert_eq!(err("256.0.0.1").code(), "IP_INVALID");
        assert_eq!(err("example.com").code(), "IP_INVALID");
        assert_eq!(err("[2001:db8::1]").code(), "IP_INVALID");
        assert_eq!(err("2001:db8:::1").code(), "IP_INVALID");
        assert_eq!(err(" 10.0.0.1").code(), "IP_WHITESPACE");
        assert_eq!(err("10.0.0.1\n").code(), "IP_WHITESPACE");
    }

    #[test]
    fn longest_prefix_wins() {
        let nets: Vec<IpNetwork> = ["10.0.0.0/8", "10.1.0.0/16", "10.1.2.3", "2001:db8::/32"]
            .iter()
            .map(|s| IpNetwork::parse(s).unwrap())
            .collect();
        let pick = |s: &str| IpNetwork::longest_match(&nets, ip(s)).map(ToString::to_string);
        assert_eq!(pick("10.1.2.3").as_deref(), Some("10.1.2.3"));
        assert_eq!(pick("::ffff:10.1.2.3").as_deref(), Some("10.1.2.3"));
        assert_eq!(pick("10.1.9.9").as_deref(), Some("10.1.0.0/16"));
        assert_eq!(pick("10.9.9.9").as_deref(), Some("10.0.0.0/8"));
        assert_eq!(pick("2001:db8::5").as_deref(), Some("2001:db8::/32"));
        assert_eq!(pick("11.0.0.1"), None);

        struct Entry {
            id: u32,
            net: IpNetwork,
        }
        let entries = [
            Entry {
                id: 1,
                net: IpNetwork::parse("192.0.2.0/24").unwrap(),
            },
            Entry {
                id: 2,
                net: IpNetwork::parse("192.0.2.0/24").unwrap(),
            },
        ];
        let best = longest_prefix_match(&entries, ip("192.0.2.9"), |e| &e.net).unwrap();
        assert_eq!(best.id, 1, "ties go to the first candidate");
    }

    #[test]
    fn ipnet_round_trip() {
        let n = IpNetwork::parse("192.0.2.0/24").unwrap();
        assert_eq!(IpNetwork::try_from(n.to_ipnet()).unwrap(), n);
        let with_host_bits: IpNet = "192.0.2.1/24".parse().unwrap();
        assert_eq!(
            IpNetwork::try_from(with_host_bits).unwrap_err().code(),
            "IP_HOST_BITS_SET"
        );
    }
}
