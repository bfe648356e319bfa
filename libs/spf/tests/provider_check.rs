//! `check_provider` with an in-memory DNS: the synthetic record is answered by the verifier
//! itself (the reserved name never reaches DNS), underscore provider names work, and the RFC 7208
//! lookup limits apply to the provider's records.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;

use async_trait::async_trait;
use email2sms_spf::{
    Lookup, LookupError, LookupResult, Name, PROVIDER_CHECK_SENDER_DOMAIN, ProviderDomain,
    SpfResult, SpfSettings, SpfVerifier,
};

/// TXT records only, and a log of every name asked for.
#[derive(Debug, Default)]
struct TxtZone {
    txt: HashMap<String, String>,
    asked: Mutex<Vec<String>>,
}

impl TxtZone {
    fn with(records: &[(&str, &str)]) -> Self {
        Self {
            txt: records
                .iter()
                .map(|(n, r)| (format!("{n}."), (*r).to_owned()))
                .collect(),
            asked: Mutex::default(),
        }
    }

    fn log(&self, name: &Name) {
        self.asked.lock().unwrap().push(name.as_str().to_owned());
    }
}

#[async_trait]
impl Lookup for TxtZone {
    async fn lookup_a<'l, 'a>(&'l self, name: &'a Name) -> LookupResult<Vec<Ipv4Addr>> {
        self.log(name);
        Err(LookupError::NoRecords)
    }
    async fn lookup_aaaa<'l, 'a>(&'l self, name: &'a Name) -> LookupResult<Vec<Ipv6Addr>> {
        self.log(name);
        Err(LookupError::NoRecords)
    }
    async fn lookup_mx<'l, 'a>(&'l self, name: &'a Name) -> LookupResult<Vec<Name>> {
        self.log(name);
        Err(LookupError::NoRecords)
    }
    async fn lookup_txt<'l, 'a>(&'l self, name: &'a Name) -> LookupResult<Vec<String>> {
        self.log(name);
        self.txt
            .get(&name.as_str().to_ascii_lowercase())
            .map(|r| vec![r.clone()])
            .ok_or(LookupError::NoRecords)
    }
    async fn lookup_ptr<'l>(&'l self, _ip: IpAddr) -> LookupResult<Vec<Name>> {
        Err(LookupError::NoRecords)
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn provider_check_follows_the_providers_includes_and_never_asks_dns_for_the_reserved_name() {
    let zone = TxtZone::with(&[
        (
            "_spf.google.com",
            "v=spf1 include:_netblocks.google.com include:_netblocks2.google.com ~all",
        ),
        ("_netblocks.google.com", "v=spf1 ip4:198.51.100.0/24 ~all"),
        ("_netblocks2.google.com", "v=spf1 ip6:2001:db8::/32 ~all"),
    ]);
    let verifier = SpfVerifier::with_lookup(zone, &SpfSettings::default());
    let google = ProviderDomain::new("_spf.google.com").unwrap();

    let v4 = verifier.check_provider(ip("198.51.100.9"), &google).await;
    assert_eq!(v4.result, SpfResult::Pass, "{}", v4.report());
    let v6 = verifier.check_provider(ip("2001:db8::25"), &google).await;
    assert_eq!(v6.result, SpfResult::Pass, "{}", v6.report());
    // The provider's own ~all does not match inside an include, so our -all decides: fail.
    let other = verifier.check_provider(ip("203.0.113.1"), &google).await;
    assert_eq!(other.result, SpfResult::Fail, "{}", other.report());
    assert!(other.trace[0].contains("v=spf1 include:_spf.google.com -all"));

    let asked = verifier.lookup().asked.lock().unwrap().clone();
    assert!(asked.iter().any(|n| n == "_spf.google.com."));
    assert!(
        !asked
            .iter()
            .any(|n| n.contains(PROVIDER_CHECK_SENDER_DOMAIN)),
        "the reserved name went to DNS: {asked:?}"
    );
}

#[tokio::test]
async fn provider_records_are_held_to_the_ten_lookup_limit() {
    // The synthetic include is lookup 1; a provider chain of ten more includes exceeds 10.
    let mut records = vec![(
        "spf.provider.test".to_owned(),
        "v=spf1 include:l1.provider.test -all".to_owned(),
    )];
    for i in 1..10 {
        records.push((
            format!("l{i}.provider.test"),
            format!("v=spf1 include:l{}.provider.test -all", i + 1),
        ));
    }
    records.push((
        "l10.provider.test".into(),
        "v=spf1 ip4:198.51.100.0/24 -all".into(),
    ));
    let borrowed: Vec<(&str, &str)> = records
        .iter()
        .map(|(n, r)| (n.as_str(), r.as_str()))
        .collect();
    let verifier = SpfVerifier::with_lookup(TxtZone::with(&borrowed), &SpfSettings::default());
    let provider = ProviderDomain::new("spf.provider.test").unwrap();
    let outcome = verifier.check_provider(ip("198.51.100.9"), &provider).await;
    assert_eq!(outcome.result, SpfResult::Permerror, "{}", outcome.report());
    assert!(
        outcome.cause.to_string().contains("lookup limit"),
        "{}",
        outcome.report()
    );
}

#[tokio::test]
async fn sender_with_void_lookups_over_the_limit_is_permerror() {
    let zone = TxtZone::with(&[(
        "example.test",
        "v=spf1 a:n1.example.test a:n2.example.test a:n3.example.test -all",
    )]);
    let verifier = SpfVerifier::with_lookup(zone, &SpfSettings::default());
    let outcome = verifier
        .check_sender(ip("192.0.2.1"), "a@example.test", "mail.example.test")
        .await;
    assert_eq!(outcome.result, SpfResult::Permerror, "{}", outcome.report());
    assert!(
        outcome.cause.to_string().contains("void lookup limit"),
        "{}",
        outcome.report()
    );
}
