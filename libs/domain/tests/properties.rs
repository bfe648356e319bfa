//! Property tests: normalisation is idempotent, parsed values respect their limits, network
//! containment agrees with a bitmask reference, tokens have their documented shape, and no input
//! makes a parser panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use email2sms_domain::{
    DomainName, EmailAddress, IpNetwork, MAX_DOMAIN_LEN, MAX_EMAIL_LEN, MAX_LABEL_LEN,
    MAX_LOCAL_PART_LEN, PhoneNumber, Region, VerificationToken, check_phone_local_part,
};
use phonenumber::metadata::DATABASE;
use phonenumber::{Mode, Type};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

/// A label that is usually valid but sometimes too long, with some Unicode letters so IDNA runs.
fn label() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z0-9]([a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?",
        1 => "[a-z]{60,70}",
        1 => "[a-zäöüßçñåéαβγдж]{1,12}",
    ]
}

/// Domain-like text: 1–5 labels, a top-level label, sometimes a trailing dot.
fn domain_text() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(label(), 0..5),
        "[a-zA-Z]{2,8}",
        any::<bool>(),
    )
        .prop_map(|(labels, tld, dot)| {
            let mut s = labels.join(".");
            if !s.is_empty() {
                s.push('.');
            }
            s.push_str(&tld);
            if dot {
                s.push('.');
            }
            s
        })
}

fn email_text() -> impl Strategy<Value = String> {
    (
        "[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]{1,30}(\\.[a-zA-Z0-9_+-]{1,12}){0,3}",
        domain_text(),
    )
        .prop_map(|(local, domain)| format!("{local}@{domain}"))
}

/// Text from the characters the parsers care about, so that odd combinations come up often.
fn nasty_text() -> impl Strategy<Value = String> {
    "[0-9a-fA-Zx.:@+/()\\- <>\"*%\\[\\]\u{a0}\u{0430}ä。\n\t]{0,40}"
}

/// Every example number in the metadata that the crate itself considers valid, with its region.
static EXAMPLES: LazyLock<Vec<(Region, phonenumber::PhoneNumber)>> = LazyLock::new(|| {
    let mut out = Vec::new();
    for meta in DATABASE.iter() {
        let Ok(region) = Region::parse(meta.id()) else {
            continue;
        };
        for kind in [Type::Mobile, Type::FixedLine] {
            let Some(example) = meta.descriptors().get(kind).and_then(|d| d.example()) else {
                continue;
            };
            let text = format!("+{}{}", meta.country_code(), example);
            if let Ok(n) = phonenumber::parse(None, &text)
                && phonenumber::is_valid(&n)
            {
                out.push((region, n));
            }
        }
    }
    // The database is a hash map: sort so that a seed always picks the same numbers.
    out.sort_by_key(|(region, _)| *region);
    out
});

fn example_number() -> impl Strategy<Value = (Region, phonenumber::PhoneNumber)> {
    assert!(EXAMPLES.len() > 300, "only {} examples", EXAMPLES.len());
    prop::sample::select(EXAMPLES.clone())
}

/// Sprinkles separators between the characters of `s`, chosen by `seps`.
fn with_separators(s: &str, seps: &[u8]) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        out.push(c);
        match seps.get(i).copied().unwrap_or(0) % 8 {
            0 => out.push(' '),
            1 => out.push('-'),
            2 => out.push('.'),
            _ => {}
        }
    }
    out.trim_end_matches([' ', '-', '.']).to_owned()
}

fn mask4(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

fn mask6(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix))
    }
}

proptest! {
    // No regression files in the source tree: failures found here become unit tests instead.
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn domain_normalisation_is_idempotent(text in domain_text()) {
        if let Ok(d) = DomainName::parse(&text) {
            let displayed = d.to_string();
            let again = DomainName::parse(&displayed).unwrap();
            prop_assert_eq!(&again, &d);
            prop_assert_eq!(again.as_str(), d.as_str());
            prop_assert!(d.covers_exactly(&again));
        }
    }

    #[test]
    fn parsed_domains_respect_dns_limits(text in domain_text()) {
        if let Ok(d) = DomainName::parse(&text) {
            prop_assert!(d.as_str().len() <= MAX_DOMAIN_LEN);
            prop_assert!(d.labels().count() >= 2);
            for l in d.labels() {
                prop_assert!(!l.is_empty() && l.len() <= MAX_LABEL_LEN, "label {:?}", l);
                prop_assert!(l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
                prop_assert!(!l.starts_with('-') && !l.ends_with('-'));
            }
        }
    }

    #[test]
    fn plain_ascii_domains_are_accepted_and_lower_cased(
        labels in prop::collection::vec("[a-zA-Z0-9]([a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?", 1..4),
        tld in "[a-zA-Z]{2,8}",
    ) {
        let text = format!("{}.{tld}", labels.join("."));
        let d = DomainName::parse(&text).unwrap();
        prop_assert_eq!(d.as_str(), text.to_ascii_lowercase());
    }

    #[test]
    fn subdomains_are_never_covered(text in domain_text(), sub in "[a-z]{1,10}") {
        if let (Ok(parent), Ok(child)) = (
            DomainName::parse(&text),
            DomainName::parse(&format!("{sub}.{text}")),
        ) {
            prop_assert!(!parent.covers_exactly(&child));
            prop_assert_ne!(parent, child);
        }
    }

    #[test]
    fn email_normalisation_is_idempotent(text in email_text()) {
        if let Ok(e) = EmailAddress::parse(&text) {
            let again = EmailAddress::parse(e.as_str()).unwrap();
            prop_assert_eq!(&again, &e);
            prop_assert!(e.as_str().len() <= MAX_EMAIL_LEN);
            prop_assert!(e.local_part().len() <= MAX_LOCAL_PART_LEN);
            prop_assert_eq!(e.as_str(), format!("{}@{}", e.local_part(), e.domain()));
            prop_assert_eq!(e.as_str(), e.as_str().to_lowercase());
            prop_assert_eq!(
                // ASCII only: `ß` upper-cases to `SS`, which is a different domain.
                &EmailAddress::parse(&text.to_ascii_uppercase()).ok(),
                &Some(e.clone()),
                "case must not matter"
            );
        }
    }

    #[test]
    fn ipv4_networks(addr in any::<u32>(), prefix in 0u8..=32, probe in any::<u32>()) {
        let network = addr & mask4(prefix);
        let text = format!("{}/{prefix}", Ipv4Addr::from(network));
        let net = IpNetwork::parse(&text).unwrap();
        prop_assert_eq!(net.prefix_len(), prefix);
        prop_assert_eq!(IpNetwork::parse(&net.to_string()).unwrap(), net);
        prop_assert!(net.contains(IpAddr::V4(Ipv4Addr::from(network))));
        prop_assert!(net.contains(IpAddr::V4(Ipv4Addr::from(addr))));
        let reference = probe & mask4(prefix) == network;
        prop_assert_eq!(net.contains(IpAddr::V4(Ipv4Addr::from(probe))), reference);
        // The same client seen over a dual-stack socket.
        let mapped = Ipv4Addr::from(probe).to_ipv6_mapped();
        prop_assert_eq!(net.contains(IpAddr::V6(mapped)), reference);
        // The same network written as IPv4-mapped IPv6.
        let mapped_net = format!("::ffff:{}/{}", Ipv4Addr::from(network), prefix + 96);
        prop_assert_eq!(IpNetwork::parse(&mapped_net).unwrap(), net);
        // With host bits set, the text is refused unless it happens to be the network.
        let raw = format!("{}/{prefix}", Ipv4Addr::from(addr));
        prop_assert_eq!(IpNetwork::parse(&raw).is_ok(), addr == network);
    }

    #[test]
    fn ipv6_networks(addr in any::<u128>(), prefix in 0u8..=128, probe in any::<u128>()) {
        let network = addr & mask6(prefix);
        let text = format!("{}/{prefix}", Ipv6Addr::from(network));
        let Ok(net) = IpNetwork::parse(&text) else {
            // Only IPv4-mapped space may come back changed, never refused.
            return Err(TestCaseError::fail(format!("{text} refused")));
        };
        prop_assert_eq!(IpNetwork::parse(&net.to_string()).unwrap(), net);
        let probe_ip = IpAddr::V6(Ipv6Addr::from(probe));
        if net.is_ipv4() {
            prop_assert!(Ipv6Addr::from(network).to_ipv4_mapped().is_some());
            prop_assert_eq!(net.prefix_len(), prefix - 96);
        } else {
            prop_assert_eq!(net.prefix_len(), prefix);
            prop_assert!(net.contains(IpAddr::V6(Ipv6Addr::from(network))));
            let reference = probe & mask6(prefix) == network;
            // Mapped probes are compared as IPv4, so only a non-mapped probe has a v6 answer.
            if Ipv6Addr::from(probe).to_ipv4_mapped().is_none() {
                prop_assert_eq!(net.contains(probe_ip), reference);
            }
        }
        let raw = format!("{}/{prefix}", Ipv6Addr::from(addr));
        prop_assert_eq!(IpNetwork::parse(&raw).is_ok(), addr == network);
    }

    #[test]
    fn longest_match_agrees_with_brute_force(
        nets in prop::collection::vec((any::<u32>(), 0u8..=32), 0..12),
        probe in any::<u32>(),
    ) {
        let nets: Vec<IpNetwork> = nets
            .into_iter()
            .map(|(a, p)| {
                IpNetwork::parse(&format!("{}/{p}", Ipv4Addr::from(a & mask4(p)))).unwrap()
            })
            .collect();
        let ip = IpAddr::V4(Ipv4Addr::from(probe));
        let best = IpNetwork::longest_match(&nets, ip);
        let expected = nets.iter().filter(|n| n.contains(ip)).map(IpNetwork::prefix_len).max();
        prop_assert_eq!(best.map(IpNetwork::prefix_len), expected);
        if let Some(b) = best {
            prop_assert!(b.contains(ip));
        }
    }

    #[test]
    fn generated_tokens_have_the_documented_shape(seed in any::<u64>()) {
        let t = VerificationToken::generate_with(&mut StdRng::seed_from_u64(seed));
        let s = t.as_str();
        prop_assert_eq!(s.len(), 32);
        prop_assert!(s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        prop_assert_eq!(&VerificationToken::parse(s).unwrap(), &t);
        prop_assert_eq!(&VerificationToken::parse(&s.to_ascii_uppercase()).unwrap(), &t);
        prop_assert_eq!(t.txt_value(), format!("email2sms-verification={s}"));
        prop_assert!(t.matches_txt(&t.txt_value()));
    }

    #[test]
    fn arbitrary_strings_never_panic(text in any::<String>()) {
        exercise_every_parser(&text)?;
    }

    #[test]
    fn nasty_strings_never_panic(text in nasty_text()) {
        exercise_every_parser(&text)?;
    }
}

// Phone parsing runs the metadata's regexes and is slow in debug builds; every example number is
// also checked exhaustively by `every_metadata_example_normalises`, so fewer cases suffice here.
proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn phone_numbers_normalise_to_e164(
        (region, number) in example_number(),
        seps in prop::collection::vec(any::<u8>(), 32),
        use_00 in any::<bool>(),
    ) {
        let e164 = number.format().mode(Mode::E164).to_string();
        let parsed = PhoneNumber::parse(&e164, None).unwrap();
        prop_assert_eq!(parsed.as_str(), e164.as_str());
        prop_assert_eq!(parsed.as_str().len(), parsed.digits().len() + 1);
        prop_assert!(parsed.digits().len() <= 15);
        // Idempotent through Display and FromStr.
        prop_assert_eq!(&parsed.to_string().parse::<PhoneNumber>().unwrap(), &parsed);
        // Separators and the 00 prefix do not change the result.
        let digits = with_separators(parsed.digits(), &seps);
        let written = if use_00 { format!("00{digits}") } else { format!("+{digits}") };
        prop_assert_eq!(&PhoneNumber::parse(&written, None).unwrap(), &parsed, "{}", written);
        // The national form with its region gives the same number.
        let national = number.format().mode(Mode::National).to_string();
        prop_assert_eq!(
            &PhoneNumber::parse(&national, Some(region)).unwrap(),
            &parsed,
            "{} in {}",
            national,
            region
        );
        // Whatever the region, the international form wins.
        let other = Region::parse(if region.as_str() == "NZ" { "US" } else { "NZ" }).unwrap();
        prop_assert_eq!(&PhoneNumber::parse(&e164, Some(other)).unwrap(), &parsed);
        prop_assert!(check_phone_local_part(parsed.as_str()).is_ok());
        prop_assert!(check_phone_local_part(parsed.digits()).is_ok());
    }

    #[test]
    fn random_international_numbers_are_idempotent(text in "\\+[1-9][0-9]{5,15}") {
        if let Ok(n) = PhoneNumber::parse(&text, None) {
            prop_assert_eq!(&PhoneNumber::parse(n.as_str(), None).unwrap(), &n);
        }
    }
}

/// Runs `text` through every parser; whatever is accepted must be a fixed point of
/// normalisation, and whatever is refused must explain itself.
fn exercise_every_parser(text: &str) -> Result<(), TestCaseError> {
    fn check<T, E>(
        result: Result<T, E>,
        reparse: impl Fn(&str) -> Result<T, E>,
    ) -> Result<(), TestCaseError>
    where
        T: std::fmt::Display + PartialEq + std::fmt::Debug,
        E: std::fmt::Display + std::fmt::Debug,
    {
        match result {
            Ok(v) => {
                let again = reparse(&v.to_string());
                prop_assert_eq!(again.as_ref().ok(), Some(&v), "{:?}", again);
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        Ok(())
    }
    let nz = Region::parse("NZ").unwrap();
    let us = Region::parse("US").unwrap();
    check(EmailAddress::parse(text), EmailAddress::parse)?;
    check(DomainName::parse(text), DomainName::parse)?;
    check(IpNetwork::parse(text), IpNetwork::parse)?;
    check(PhoneNumber::parse(text, None), |s| {
        PhoneNumber::parse(s, None)
    })?;
    check(PhoneNumber::parse(text, Some(nz)), |s| {
        PhoneNumber::parse(s, None)
    })?;
    check(PhoneNumber::parse(text, Some(us)), |s| {
        PhoneNumber::parse(s, None)
    })?;
    check(Region::parse(text), Region::parse)?;
    check(VerificationToken::parse(text), VerificationToken::parse)?;
    let _ = check_phone_local_part(text);
    Ok(())
}

/// Every example number in the metadata, in every way people write it, normalises to the same
/// E.164 number: not a sample, all of them.
#[test]
fn every_metadata_example_normalises() {
    let mut failures = Vec::new();
    for (region, number) in EXAMPLES.iter() {
        let e164 = number.format().mode(Mode::E164).to_string();
        let international = number.format().mode(Mode::International).to_string();
        let national = number.format().mode(Mode::National).to_string();
        let idd = format!("00{}", &e164[1..]);
        for (text, r) in [
            (&e164, None),
            (&international, None),
            (&idd, None),
            (&national, Some(*region)),
        ] {
            match PhoneNumber::parse(text, r) {
                Ok(n) if n.as_str() == e164 => {}
                other => failures.push(format!("{region} {text:?}: {other:?}")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
