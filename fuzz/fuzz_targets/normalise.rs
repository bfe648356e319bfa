//! The normalisers of libs/domain on arbitrary text. Property (the crate's promise): a value that
//! parses is canonical, so its canonical form parses again to an equal value, whatever the input
//! looked like; plus the shape of each canonical form.
#![no_main]

use email2sms_domain::{
    DomainName, EmailAddress, IpNetwork, PhoneNumber, Region, VerificationToken, canonical_ip,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Ok(input) = std::str::from_utf8(input) else {
        return;
    };
    if let Ok(domain) = DomainName::parse(input) {
        assert_eq!(
            DomainName::parse(domain.as_str()).as_ref(),
            Ok(&domain),
            "{input:?}"
        );
        assert!(
            domain.as_str().is_ascii() && domain.as_str() == domain.as_str().to_ascii_lowercase()
        );
        assert!(
            domain.labels().all(|l| !l.is_empty() && l.len() <= 63),
            "{domain}"
        );
    }
    if let Ok(email) = EmailAddress::parse(input) {
        assert_eq!(
            EmailAddress::parse(email.as_str()).as_ref(),
            Ok(&email),
            "{input:?}"
        );
        assert_eq!(
            email.as_str(),
            format!("{}@{}", email.local_part(), email.domain())
        );
        assert_eq!(
            DomainName::parse(email.domain().as_str()).as_ref(),
            Ok(email.domain())
        );
    }
    if let Ok(network) = IpNetwork::parse(input) {
        assert_eq!(
            IpNetwork::parse(&network.to_string()).as_ref(),
            Ok(&network),
            "{input:?}"
        );
        let ip = network.network();
        assert_eq!(
            canonical_ip(ip),
            ip,
            "the network address of {network} is not canonical"
        );
        assert!(network.contains(ip));
    }
    // The phone number parser is regex-heavy: long inputs only slow the run down.
    if input.len() <= 64 {
        for region in [None, Some(Region::parse("NZ").expect("NZ"))] {
            if let Ok(phone) = PhoneNumber::parse(input, region) {
                let e164 = phone.as_str();
                assert_eq!(
                    PhoneNumber::parse(e164, None).as_ref(),
                    Ok(&phone),
                    "{input:?} in {region:?}"
                );
                assert!(
                    e164.starts_with('+') && e164[1..].bytes().all(|b| b.is_ascii_digit()),
                    "{e164}"
                );
                assert!(e164.len() <= 16, "{e164} is longer than E.164 allows");
            }
        }
    }
    if let Ok(token) = VerificationToken::parse(input) {
        assert_eq!(
            VerificationToken::parse(token.as_str()).as_ref(),
            Ok(&token)
        );
        assert!(token.matches_txt(&token.txt_value()));
    }
});
