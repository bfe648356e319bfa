//! Every Redis name of the index, built in one place (the table in the crate documentation).

use std::sync::Arc;

use ipnet::IpNet;

/// Default key prefix; configurable so that tests (and several deployments) can share a Redis.
pub const DEFAULT_PREFIX: &str = "email2sms:";

/// The names of the index under one prefix. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLayout {
    prefix: Arc<str>,
}

impl KeyLayout {
    /// The layout under `prefix` (`email2sms:`, or a test's own `test.<id>:`).
    pub fn new(prefix: &str) -> KeyLayout {
        KeyLayout {
            prefix: prefix.into(),
        }
    }

    /// The configured prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `P policy:`, which every key of the index starts with.
    pub fn policy_prefix(&self) -> String {
        format!("{}policy:", self.prefix)
    }

    /// The SCAN pattern matching every key of the index.
    pub fn scan_pattern(&self) -> String {
        format!("{}policy:*", self.prefix)
    }

    /// The key of the email entry for the normalised `address`.
    pub fn email(&self, address: &str) -> String {
        format!("{}policy:{}", self.prefix, email_field(address))
    }

    /// The key of the domain entry for the normalised `domain`.
    pub fn domain(&self, domain: &str) -> String {
        format!("{}policy:{}", self.prefix, domain_field(domain))
    }

    /// The hash of IP entries (field = canonical CIDR).
    pub fn ip_table(&self) -> String {
        format!("{}policy:ip", self.prefix)
    }

    /// The compile version of the data in Redis; absent means "never built, or flushed".
    pub fn version(&self) -> String {
        format!("{}policy:version", self.prefix)
    }

    /// The hash of the version that last wrote each key (see [`crate::Writer`]).
    pub fn key_versions(&self) -> String {
        format!("{}policy:keyver", self.prefix)
    }

    /// The channel on which every change is announced.
    pub fn invalidations(&self) -> String {
        format!("{}policy:invalidations", self.prefix)
    }

    /// For an email or domain key of this layout, its field in [`KeyLayout::key_versions`]
    /// (`email:<a>`, `domain:<d>`); `None` for the IP table, version keys and anything else.
    pub fn entry_field<'k>(&self, key: &'k str) -> Option<&'k str> {
        let rest = key
            .strip_prefix(&*self.prefix)
            .and_then(|k| k.strip_prefix("policy:"))?;
        (rest.starts_with("email:") || rest.starts_with("domain:")).then_some(rest)
    }
}

/// The version field of an email key.
pub(crate) fn email_field(address: &str) -> String {
    format!("email:{address}")
}

/// The version field of a domain key.
pub(crate) fn domain_field(domain: &str) -> String {
    format!("domain:{domain}")
}

/// The version field of an IP table field.
pub(crate) fn ip_field(cidr: &str) -> String {
    format!("ip:{cidr}")
}

/// The canonical CIDR text of an IP table field: the network address and the prefix length,
/// always with the length (`198.51.100.7/32`).
pub fn cidr_text(net: &IpNet) -> String {
    format!("{}/{}", net.network(), net.prefix_len())
}

#[cfg(test)]
mod tests {
    use super::*;

    // These strings are the contract with every deployed ingest and policy: a change here must be
    // a deliberate, coordinated migration, so the shapes are pinned literally.
    #[test]
    fn key_shapes_are_pinned() {
        let k = KeyLayout::new(DEFAULT_PREFIX);
        assert_eq!(
            k.email("bob@example.com"),
            "email2sms:policy:email:bob@example.com"
        );
        assert_eq!(
            k.domain("example.com"),
            "email2sms:policy:domain:example.com"
        );
        assert_eq!(k.ip_table(), "email2sms:policy:ip");
        assert_eq!(k.version(), "email2sms:policy:version");
        assert_eq!(k.key_versions(), "email2sms:policy:keyver");
        assert_eq!(k.invalidations(), "email2sms:policy:invalidations");
        assert_eq!(k.policy_prefix(), "email2sms:policy:");
        assert_eq!(k.scan_pattern(), "email2sms:policy:*");
    }

    #[test]
    fn version_fields_are_pinned() {
        assert_eq!(email_field("bob@example.com"), "email:bob@example.com");
        assert_eq!(domain_field("example.com"), "domain:example.com");
        assert_eq!(ip_field("203.0.113.0/24"), "ip:203.0.113.0/24");
    }

    #[test]
    fn the_prefix_is_prepended_verbatim() {
        let k = KeyLayout::new("test.42:");
        assert_eq!(k.prefix(), "test.42:");
        assert_eq!(k.email("a@b.example"), "test.42:policy:email:a@b.example");
        assert_eq!(k.ip_table(), "test.42:policy:ip");
    }

    #[test]
    fn cidr_text_always_has_a_length_and_no_host_bits() {
        let net: IpNet = "198.51.100.7/32".parse().unwrap();
        assert_eq!(cidr_text(&net), "198.51.100.7/32");
        let net: IpNet = "203.0.113.9/24".parse().unwrap();
        assert_eq!(cidr_text(&net), "203.0.113.0/24");
        let net: IpNet = "2001:db8::1/32".parse().unwrap();
        assert_eq!(cidr_text(&net), "2001:db8::/32");
    }

    #[test]
    fn only_email_and_domain_keys_are_entry_keys() {
        let k = KeyLayout::new("p:");
        assert_eq!(
            k.entry_field("p:policy:email:a@b.example"),
            Some("email:a@b.example")
        );
        assert_eq!(
            k.entry_field("p:policy:domain:b.example"),
            Some("domain:b.example")
        );
        assert_eq!(k.entry_field("p:policy:ip"), None);
        assert_eq!(k.entry_field("p:policy:version"), None);
        assert_eq!(k.entry_field("p:policy:keyver"), None);
        assert_eq!(k.entry_field("q:policy:email:a@b.example"), None);
    }
}
