//! SPF through the real resolver path: hickory-resolver → a real DNS server (NSD from
//! email2sms-testkit) on loopback, serving SPF records over UDP/TCP exactly as the Internet would.

use std::net::IpAddr;
use std::time::Duration;

use email2sms_spf::{
    DnsSettings, ProviderDomain, SpfCause, SpfResult, SpfSettings, SpfVerifier, spf_refusal_reply,
};
use email2sms_testkit::dns::DnsServer;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn settings(dns: &DnsServer) -> SpfSettings {
    SpfSettings {
        dns: DnsSettings {
            nameservers: vec![dns.addr()],
            query_timeout: Duration::from_millis(500),
            attempts: 1,
        },
        overall_timeout: Duration::from_secs(5),
        ..SpfSettings::default()
    }
}

async fn serve_test_zones() -> DnsServer {
    let mut dns = DnsServer::start().await;
    dns.set_zone(
        "example.test",
        r#"@ TXT "v=spf1 ip4:192.0.2.0/24 -all"
host A 192.0.2.7
split TXT "v=spf1 ip4:192.0.2.0/24" " -all"
broken TXT "v=spf1 ip4:192.0.2.0/24 bogus -all"
"#,
    )
    .await;
    dns.set_zone(
        "provider.test",
        r#"_spf TXT "v=spf1 ip4:198.51.100.0/24 -all""#,
    )
    .await;
    dns
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_and_provider_checks_against_a_real_dns_server() {
    let dns = serve_test_zones().await;
    let verifier = SpfVerifier::new(&settings(&dns)).expect("resolver");

    let pass = verifier
        .check_sender(ip("192.0.2.10"), "alice@example.test", "mail.example.test")
        .await;
    assert_eq!(pass.result, SpfResult::Pass, "{}", pass.report());
    assert_eq!(
        pass.cause,
        SpfCause::Mechanism("ip4:192.0.2.0/24".into()),
        "{}",
        pass.report()
    );
    assert!(spf_refusal_reply(&pass).is_none());

    let fail = verifier
        .check_sender(ip("203.0.113.5"), "alice@example.test", "mail.example.test")
        .await;
    assert_eq!(fail.result, SpfResult::Fail, "{}", fail.report());
    let reply = spf_refusal_reply(&fail).unwrap();
    assert_eq!((reply.code, reply.enhanced), (550, "5.7.23"));
    assert!(
        reply
            .text
            .contains("the SPF record of example.test does not list 203.0.113.5"),
        "{reply}"
    );

    // A TXT record in two strings is joined without a separator.
    let split = verifier
        .check_sender(ip("192.0.2.10"), "split.example.test", "")
        .await;
    assert_eq!(split.result, SpfResult::Pass, "{}", split.report());

    // NXDOMAIN and NODATA are "no record" (none), not DNS trouble (temperror).
    let nxdomain = verifier
        .check_sender(ip("192.0.2.10"), "bob@missing.example.test", "")
        .await;
    assert_eq!(nxdomain.result, SpfResult::None, "{}", nxdomain.report());
    let nodata = verifier
        .check_sender(ip("192.0.2.10"), "bob@host.example.test", "")
        .await;
    assert_eq!(nodata.result, SpfResult::None, "{}", nodata.report());

    let permerror = verifier
        .check_sender(ip("192.0.2.10"), "bob@broken.example.test", "")
        .await;
    assert_eq!(
        permerror.result,
        SpfResult::Permerror,
        "{}",
        permerror.report()
    );
    assert_eq!(spf_refusal_reply(&permerror).unwrap().enhanced, "5.7.24");

    let provider = ProviderDomain::new("_spf.provider.test").unwrap();
    let listed = verifier
        .check_provider(ip("198.51.100.20"), &provider)
        .await;
    assert_eq!(listed.result, SpfResult::Pass, "{}", listed.report());
    let not_listed = verifier.check_provider(ip("192.0.2.10"), &provider).await;
    assert_eq!(
        not_listed.result,
        SpfResult::Fail,
        "{}",
        not_listed.report()
    );
    assert_eq!(spf_refusal_reply(&not_listed).unwrap().enhanced, "5.7.23");
    // A provider domain with no SPF record is the gateway's misconfiguration: permerror.
    let unpublished = ProviderDomain::new("_nothing.provider.test").unwrap();
    let outcome = verifier
        .check_provider(ip("198.51.100.20"), &unpublished)
        .await;
    assert_eq!(outcome.result, SpfResult::Permerror, "{}", outcome.report());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_dns_server_gives_temperror_and_451() {
    let mut dns = serve_test_zones().await;
    dns.stop().await;
    // A fresh verifier, so nothing is answered from the resolver's cache.
    let verifier = SpfVerifier::new(&settings(&dns)).expect("resolver");

    let sender = verifier
        .check_sender(ip("192.0.2.10"), "alice@example.test", "mail.example.test")
        .await;
    assert_eq!(sender.result, SpfResult::Temperror, "{}", sender.report());
    // The silent server makes the query time out, which viaspf must see as a timeout.
    assert!(
        matches!(&sender.cause, SpfCause::Error(e) if e.contains("lookup timed out")),
        "{}",
        sender.report()
    );
    let reply = spf_refusal_reply(&sender).unwrap();
    assert_eq!((reply.code, reply.enhanced), (451, "4.4.3"), "{reply}");

    let provider = ProviderDomain::new("_spf.provider.test").unwrap();
    let outcome = verifier
        .check_provider(ip("198.51.100.20"), &provider)
        .await;
    assert_eq!(outcome.result, SpfResult::Temperror, "{}", outcome.report());

    // Started again, the same verifier passes: a temperror is not cached as an answer.
    dns.resume().await;
    let again = verifier
        .check_sender(ip("192.0.2.10"), "alice@example.test", "mail.example.test")
        .await;
    assert_eq!(again.result, SpfResult::Pass, "{}", again.report());
}
