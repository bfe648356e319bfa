//! The PROXY protocol header (HAProxy, versions 1 and 2) a trusted load balancer puts in front
//! of the SMTP conversation to say who the real client is.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// First bytes of a version 1 header.
pub const V1_PREFIX: &[u8] = b"PROXY ";
/// The 12-byte signature of a version 2 header.
pub const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Longest version 1 header, CRLF included (the specification's limit).
const V1_MAX_LEN: usize = 107;

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// The proxied client's address.
    Client(SocketAddr),
    /// The proxy speaks for itself (health checks, `UNKNOWN`, `LOCAL`, non-IP families): keep the
    /// TCP peer as the client.
    Local,
}

/// Outcome of looking at the first bytes of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// No PROXY header here: ordinary SMTP.
    NotProxy,
    /// The start of a header; more bytes are needed.
    Incomplete,
    /// A header of `len` bytes.
    Complete {
        header: ProxyHeader,
        len: usize,
    },
    Invalid(&'static str),
}

/// Whether `bytes` could be (the start of) a PROXY header of either version.
pub fn looks_like_proxy(bytes: &[u8]) -> bool {
    let n = bytes.len().min(V1_PREFIX.len());
    let m = bytes.len().min(V2_SIGNATURE.len());
    (n > 0 && bytes[..n] == V1_PREFIX[..n]) || (m > 0 && bytes[..m] == V2_SIGNATURE[..m])
}

/// Parses a header at the start of `bytes`.
pub fn parse(bytes: &[u8]) -> Parsed {
    if bytes.is_empty() {
        return Parsed::Incomplete;
    }
    if !looks_like_proxy(bytes) {
        return Parsed::NotProxy;
    }
    if bytes[0] == b'P' {
        parse_v1(bytes)
    } else {
        parse_v2(bytes)
    }
}

fn parse_v1(bytes: &[u8]) -> Parsed {
    let Some(end) = bytes.windows(2).position(|w| w == b"\r\n") else {
        return if bytes.len() >= V1_MAX_LEN {
            Parsed::Invalid("PROXY v1 header longer than 107 bytes")
        } else {
            Parsed::Incomplete
        };
    };
    if end + 2 > V1_MAX_LEN {
        return Parsed::Invalid("PROXY v1 header longer than 107 bytes");
    }
    let Ok(line) = std::str::from_utf8(&bytes[..end]) else {
        return Parsed::Invalid("PROXY v1 header is not ASCII");
    };
    let fields: Vec<&str> = line.split(' ').collect();
    let len = end + 2;
    match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Parsed::Complete {
            header: ProxyHeader::Local,
            len,
        },
        [
            "PROXY",
            family @ ("TCP4" | "TCP6"),
            source,
            _destination,
            source_port,
            _dport,
        ] => {
            let ip: Option<IpAddr> = match *family {
                "TCP4" => source.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
                _ => source.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
            };
            let port = source_port
                .parse::<u16>()
                .ok()
                .filter(|_| !source_port.starts_with('0') || *source_port == "0");
            match (ip, port) {
                (Some(ip), Some(port)) => Parsed::Complete {
                    header: ProxyHeader::Client(SocketAddr::new(ip, port)),
                    len,
                },
                _ => Parsed::Invalid("PROXY v1 header has a bad address or port"),
            }
        }
        _ => Parsed::Invalid("PROXY v1 header is malformed"),
    }
}

fn parse_v2(bytes: &[u8]) -> Parsed {
    if bytes.len() < 16 {
        return Parsed::Incomplete;
    }
    let version_command = bytes[12];
    if version_command >> 4 != 2 {
        return Parsed::Invalid("PROXY v2 header has an unknown version");
    }
    let family = bytes[13];
    let payload_len = u16::from_be_bytes([bytes[14], bytes[15]]) as usize;
    let len = 16 + payload_len;
    if bytes.len() < len {
        return Parsed::Incomplete;
    }
    let payload = &bytes[16..len];
    match version_command & 0x0f {
        // LOCAL: the proxy's own connection (a health check); addresses are to be ignored.
        0x0 => Parsed::Complete {
            header: ProxyHeader::Local,
            len,
        },
        0x1 => {
            let header = match family {
                // TCP over IPv4: source, destination, source port, destination port.
                0x11 if payload.len() >= 12 => {
                    let ip = Ipv4Addr::new(payload[0], payload[1], payload[2], payload[3]);
                    let port = u16::from_be_bytes([payload[8], payload[9]]);
                    ProxyHeader::Client(SocketAddr::new(IpAddr::V4(ip), port))
                }
                0x21 if payload.len() >= 36 => {
                    let mut octets = [0u8; 16];
                    octets.copy_from_slice(&payload[..16]);
                    let port = u16::from_be_bytes([payload[32], payload[33]]);
                    ProxyHeader::Client(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port))
                }
                0x11 | 0x21 => return Parsed::Invalid("PROXY v2 address block too short"),
                // UNSPEC, UDP and UNIX sockets say nothing about an IP client.
                _ => ProxyHeader::Local,
            };
            Parsed::Complete { header, len }
        }
        _ => Parsed::Invalid("PROXY v2 header has an unknown command"),
    }
}

/// Builds a version 2 header for a TCP client (tests and tools use it).
pub fn encode_v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x21);
    match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push(0x11);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.push(0x21);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v1() {
        let header = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 25\r\nEHLO x\r\n";
        assert_eq!(
            parse(header),
            Parsed::Complete {
                header: ProxyHeader::Client("192.0.2.7:56324".parse().unwrap()),
                len: 44
            }
        );
        assert_eq!(
            parse(b"PROXY TCP6 2001:db8::7 2001:db8::1 1000 25\r\n"),
            Parsed::Complete {
                header: ProxyHeader::Client("[2001:db8::7]:1000".parse().unwrap()),
                len: 44
            }
        );
        assert!(matches!(
            parse(b"PROXY UNKNOWN\r\n"),
            Parsed::Complete {
                header: ProxyHeader::Local,
                ..
            }
        ));
        assert_eq!(parse(b"PROXY TCP4 192.0.2.7"), Parsed::Incomplete);
        assert_eq!(parse(b"PRO"), Parsed::Incomplete);
        assert_eq!(parse(b"EHLO x\r\n"), Parsed::NotProxy);
        assert!(matches!(
            parse(b"PROXY TCP4 192.0.2.300 1.1.1.1 1 2\r\n"),
            Parsed::Invalid(_)
        ));
        assert!(matches!(
            parse(&[b"PROXY ".as_slice(), &[b'x'; 200]].concat()),
            Parsed::Invalid(_)
        ));
    }

    #[test]
    fn parses_v2() {
        let v4 = encode_v2(
            "192.0.2.7:4000".parse().unwrap(),
            "198.51.100.1:25".parse().unwrap(),
        );
        assert_eq!(
            parse(&v4),
            Parsed::Complete {
                header: ProxyHeader::Client("192.0.2.7:4000".parse().unwrap()),
                len: 28
            }
        );
        assert_eq!(parse(&v4[..20]), Parsed::Incomplete);
        let v6 = encode_v2(
            "[2001:db8::7]:4000".parse().unwrap(),
            "[2001:db8::1]:25".parse().unwrap(),
        );
        assert_eq!(
            parse(&v6),
            Parsed::Complete {
                header: ProxyHeader::Client("[2001:db8::7]:4000".parse().unwrap()),
                len: 52
            }
        );
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        assert_eq!(
            parse(&local),
            Parsed::Complete {
                header: ProxyHeader::Local,
                len: 16
            }
        );
        let mut bad_version = v4.clone();
        bad_version[12] = 0x11;
        assert!(matches!(parse(&bad_version), Parsed::Invalid(_)));
    }

    proptest::proptest! {
        #[test]
        fn random_headers_never_panic(tail in proptest::collection::vec(proptest::num::u8::ANY, 0..120), v2 in proptest::bool::ANY) {
            let mut bytes = if v2 { V2_SIGNATURE.to_vec() } else { V1_PREFIX.to_vec() };
            bytes.extend_from_slice(&tail);
            let _ = parse(&bytes);
        }
    }
}
