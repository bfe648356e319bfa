//! Envelope/From alignment for the security types Via SPF, By Google Mail and By Outlook.com.
//!
//! The rule (DESIGN.md, security types): the envelope (MAIL FROM) domain must be **exactly** the
//! From header domain. Unlike DMARC's relaxed alignment, a subdomain or a parent domain is not
//! aligned: `news.example.com` does not align with `example.com`, because the licence covers an
//! exact domain only and SPF of a subdomain says nothing about the domain above it.

use email2sms_domain::DomainName;

/// Whether the envelope (MAIL FROM) domain exactly equals the From header domain — the
/// exact-domain alignment rule, [`DomainName::covers_exactly`], the same rule the sender lookup
/// applies to domain entries. Both names are normalised as sender domains are (ASCII case and one
/// trailing dot ignored, internationalised names in their A-label form); an empty or invalid
/// domain never aligns.
pub fn envelope_domain_aligned_exactly(envelope_domain: &str, from_domain: &str) -> bool {
    match (
        DomainName::parse(envelope_domain.trim()),
        DomainName::parse(from_domain.trim()),
    ) {
        (Ok(envelope), Ok(from)) => from.covers_exactly(&envelope),
        _ => false,
    }
}

/// The domain part of an address (`user@example.com` → `example.com`), if it has one.
pub fn address_domain(address: &str) -> Option<&str> {
    let address = address.trim().trim_start_matches('<').trim_end_matches('>');
    match address.rsplit_once('@') {
        Some((_, domain)) if !domain.is_empty() => Some(domain),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_domain_aligns_case_insensitively() {
        assert!(envelope_domain_aligned_exactly(
            "example.com",
            "example.com"
        ));
        assert!(envelope_domain_aligned_exactly(
            "Example.COM",
            "example.com."
        ));
        assert!(envelope_domain_aligned_exactly(
            "bücher.example",
            "xn--bcher-kva.example"
        ));
    }

    #[test]
    fn subdomains_and_parents_are_not_aligned() {
        assert!(!envelope_domain_aligned_exactly(
            "news.example.com",
            "example.com"
        ));
        assert!(!envelope_domain_aligned_exactly(
            "example.com",
            "sales.example.com"
        ));
        assert!(!envelope_domain_aligned_exactly(
            "example.com.evil.test",
            "example.com"
        ));
        assert!(!envelope_domain_aligned_exactly(
            "example.org",
            "example.com"
        ));
    }

    #[test]
    fn empty_or_broken_domains_never_align() {
        assert!(!envelope_domain_aligned_exactly("", ""));
        assert!(!envelope_domain_aligned_exactly(".", "."));
        assert!(!envelope_domain_aligned_exactly("a..b", "a..b"));
    }

    #[test]
    fn address_domain_takes_the_last_at() {
        assert_eq!(address_domain("user@example.com"), Some("example.com"));
        assert_eq!(address_domain("<\"a@b\"@example.com>"), Some("example.com"));
        assert_eq!(address_domain(""), None);
        assert_eq!(address_domain("user@"), None);
        assert_eq!(address_domain("example.com"), None);
    }
}
