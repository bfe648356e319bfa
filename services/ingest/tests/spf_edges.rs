//! SPF edge cases through ingest's real SMTP server, with a real DNS server (NSD) on loopback and
//! real Redis and RabbitMQ: a record whose range has prefix length 0 authorises every client of
//! its family; a DNS outage is answered with 451 4.4.3 within the configured DNS timeout ×
//! attempts, and a slow evaluation within the SPF deadline; bad DNS settings exit 64.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::gateway::{self, Harness, Setup};
use common::{Client, expect};
use email2sms_proto::policy::v1::SecurityType;
use email2sms_proto::queue::v1::SpfResult;
use email2sms_testkit::dns::DnsServer;
use email2sms_testkit::run_to_exit;
use tokio::net::TcpStream;

const BINARY: &str = env!("CARGO_BIN_EXE_email2sms-ingest");

/// Ingest's gateway and SMTP server in this process, configured as the binary is (flags), with
/// its own Redis and AMQP prefixes. 127.0.0.0/8 is a trusted relay, so a test can state other
/// client addresses with XCLIENT.
async fn harness(dns: SocketAddr, extra: &[&str]) -> Harness {
    let dns = dns.to_string();
    let mut flags = vec!["--dns-servers", &dns, "--trusted-relays", "127.0.0.0/8"];
    flags.extend_from_slice(extra);
    gateway::launch(Setup {
        flags: &flags,
        ..Setup::default()
    })
    .await
}

/// One SMTP transaction from `ops@<domain>`, stating `client` with XCLIENT when given; the reply
/// to the end of DATA (or to the command that refused) and how long that reply took after the
/// message was sent.
async fn send(h: &Harness, client: Option<&str>, domain: &str, id: &str) -> (String, Duration) {
    let mut smtp = Client::new(TcpStream::connect(h.addr).await.unwrap());
    expect(&smtp.reply().await, "220");
    expect(&smtp.command("EHLO relay.test").await, "250");
    if let Some(addr) = client {
        expect(
            &smtp
                .command(&format!("XCLIENT ADDR={addr} HELO=mail.client.test"))
                .await,
            "220",
        );
        expect(&smtp.command("EHLO relay.test").await, "250");
    }
    for (line, ok) in [
        (format!("MAIL FROM:<ops@{domain}>"), "250"),
        ("RCPT TO:<+64211234567@sms.example.net>".to_owned(), "250"),
        ("DATA".to_owned(), "354"),
    ] {
        let reply = smtp.command(&line).await;
        if !reply.starts_with(ok) {
            return (reply, Duration::ZERO);
        }
    }
    let started = Instant::now();
    smtp.send(
        format!(
            "From: Ops <ops@{domain}>\r\nTo: x@sms.example.net\r\nSubject: Alert\r\nMessage-ID: <{id}@{domain}>\r\n\r\nPump 3 failed\r\n.\r\n"
        )
        .as_bytes(),
    )
    .await;
    let reply = smtp.reply().await;
    (reply, started.elapsed())
}

/// `ip4:0.0.0.0/0` and `ip6:::/0` match every address of their family (RFC 7208 section 5.6).
/// viaspf 0.6.0 panicked building the /0 mask, which ingest answered with 451 4.4.3 for ever.
#[tokio::test]
async fn a_zero_prefix_length_authorises_every_client_of_its_family() {
    let mut dns = DnsServer::start().await;
    dns.set_zone("all4.test", r#"@ TXT "v=spf1 ip4:0.0.0.0/0 -all""#)
        .await;
    dns.set_zone("all6.test", r#"@ TXT "v=spf1 ip6:::/0 -all""#)
        .await;
    let mut h = harness(dns.addr(), &[]).await;
    h.allow_domain("all4.test", SecurityType::ViaSpf).await;
    h.allow_domain("all6.test", SecurityType::ViaSpf).await;

    // 127.0.0.1 itself, then addresses at both ends stated by the trusted relay.
    for (client, domain) in [
        (None, "all4.test"),
        (Some("0.0.0.1"), "all4.test"),
        (Some("255.255.255.255"), "all4.test"),
        (Some("IPV6:2001:db8::1"), "all6.test"),
        (
            Some("IPV6:ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            "all6.test",
        ),
    ] {
        let id = uuid::Uuid::new_v4().to_string();
        let (reply, _) = send(&h, client, domain, &id).await;
        assert!(
            reply.starts_with("250 2.0.0"),
            "{client:?} {domain}: {reply}"
        );
    }
    let jobs = h.jobs().await;
    assert_eq!(jobs.len(), 5, "{jobs:?}");
    for job in &jobs {
        let auth = job.authentication.as_ref().unwrap();
        assert_eq!(auth.security_type(), SecurityType::ViaSpf);
        assert_eq!(auth.spf_result(), SpfResult::Pass, "{}", auth.summary);
        assert!(auth.summary.contains("/0\""), "{}", auth.summary);
    }

    // /0 of one family never covers the other: -all decides.
    for (client, domain) in [
        (Some("IPV6:2001:db8::1"), "all4.test"),
        (Some("192.0.2.1"), "all6.test"),
    ] {
        let (reply, _) = send(&h, client, domain, "other-family").await;
        assert!(
            reply.starts_with("550 5.7.23"),
            "{client:?} {domain}: {reply}"
        );
    }
    assert!(h.jobs().await.is_empty());
    h.cleanup().await;
}

/// A UDP port that reads nothing: every query to it times out, as with a dead server behind a
/// firewall.
fn silent_dns() -> std::net::UdpSocket {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap()
}

/// A DNS outage answers 451 4.4.3 after the configured timeout × attempts (the sender's TXT
/// lookup fails and ends the check), not after the 15 s the fixed settings gave (5 s × 3).
#[tokio::test]
async fn a_dns_outage_gives_451_within_timeout_times_attempts() {
    let silent = silent_dns();
    let (timeout, attempts) = (Duration::from_millis(300), 2);
    let mut h = harness(
        silent.local_addr().unwrap(),
        &[
            "--dns-timeout",
            "300ms",
            "--dns-attempts",
            "2",
            "--spf-deadline",
            "10s",
        ],
    )
    .await;
    h.allow_domain("outage.test", SecurityType::ViaSpf).await;
    let (reply, elapsed) = send(&h, None, "outage.test", "outage").await;
    expect(&reply, "451 4.4.3");
    assert!(reply.contains("outage.test"), "{reply}");
    // Generous: the bound plus 2 s for the policy lookup and a loaded machine; the old fixed
    // settings took 15 s.
    let bound = timeout * attempts + Duration::from_secs(2);
    println!("DNS outage: 451 after {elapsed:?} (timeout {timeout:?} x {attempts} attempts)");
    assert!(elapsed < bound, "451 after {elapsed:?}, bound {bound:?}");
    assert!(h.jobs().await.is_empty());
    h.cleanup().await;
}

/// The SPF deadline cuts an evaluation whose DNS queries would take longer (here 5 tries of 1 s)
/// and answers 451 4.4.3 when it runs out.
#[tokio::test]
async fn the_spf_deadline_caps_the_wait() {
    let silent = silent_dns();
    let mut h = harness(
        silent.local_addr().unwrap(),
        &[
            "--dns-timeout",
            "1s",
            "--dns-attempts",
            "5",
            "--spf-deadline",
            "1500ms",
        ],
    )
    .await;
    h.allow_domain("slow.test", SecurityType::ViaSpf).await;
    let (reply, elapsed) = send(&h, None, "slow.test", "slow").await;
    expect(&reply, "451 4.4.3");
    println!("slow DNS: 451 after {elapsed:?} (deadline 1.5 s, queries alone 5 x 1 s)");
    // 1.5 s deadline plus 1.5 s slack, well under the 5 s the queries alone would take.
    assert!(
        elapsed < Duration::from_secs(3),
        "451 after {elapsed:?}, deadline 1.5 s"
    );
    assert!(
        elapsed >= Duration::from_millis(1500),
        "451 after {elapsed:?}, before the deadline"
    );
    h.cleanup().await;
}

/// Each bad value stops the binary with exit 64 and a message naming the setting (values that
/// do not parse are named by their flag, as clap reports them for every setting).
#[tokio::test]
async fn bad_dns_settings_exit_64_naming_the_setting() {
    for (name, value, named) in [
        (
            "EMAIL2SMS_INGEST_DNS_TIMEOUT",
            "0s",
            "EMAIL2SMS_INGEST_DNS_TIMEOUT",
        ),
        ("EMAIL2SMS_INGEST_DNS_TIMEOUT", "soon", "--dns-timeout"),
        (
            "EMAIL2SMS_INGEST_DNS_ATTEMPTS",
            "0",
            "EMAIL2SMS_INGEST_DNS_ATTEMPTS",
        ),
        (
            "EMAIL2SMS_INGEST_DNS_ATTEMPTS",
            "11",
            "EMAIL2SMS_INGEST_DNS_ATTEMPTS",
        ),
        ("EMAIL2SMS_INGEST_DNS_ATTEMPTS", "two", "--dns-attempts"),
        (
            "EMAIL2SMS_INGEST_SPF_DEADLINE",
            "0s",
            "EMAIL2SMS_INGEST_SPF_DEADLINE",
        ),
        (
            "EMAIL2SMS_INGEST_SPF_DEADLINE",
            "6m",
            "EMAIL2SMS_INGEST_SPF_DEADLINE",
        ),
        // Longer than the deadline: the per-query timeout could never take effect.
        (
            "EMAIL2SMS_INGEST_DNS_TIMEOUT",
            "30s",
            "EMAIL2SMS_INGEST_DNS_TIMEOUT",
        ),
    ] {
        let (status, output) = run_to_exit(
            Path::new(BINARY),
            &[
                ("EMAIL2SMS_INSECURE_NO_AUTH", "1"),
                // Should a value be wrongly accepted, the binary must not take the shared ports.
                ("EMAIL2SMS_INGEST_GRPC_ADDR", "127.0.0.1:0"),
                ("EMAIL2SMS_INGEST_SMTP_ADDR", "127.0.0.1:0"),
                (name, value),
            ],
            &[],
        )
        .await;
        assert_eq!(status.code(), Some(64), "{name}={value}: {output}");
        assert!(output.contains(named), "{name}={value}: {output}");
    }
}

#[test]
fn help_lists_the_dns_settings_with_their_defaults() {
    let output = std::process::Command::new(BINARY)
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for (variable, default) in [
        ("EMAIL2SMS_INGEST_DNS_TIMEOUT", "[default: 2s]"),
        ("EMAIL2SMS_INGEST_DNS_ATTEMPTS", "[default: 2]"),
        ("EMAIL2SMS_INGEST_SPF_DEADLINE", "[default: 20s]"),
    ] {
        let line = help
            .lines()
            .find(|line| line.contains(variable))
            .unwrap_or_else(|| panic!("--help lacks {variable}:\n{help}"));
        assert!(line.contains(default), "{line}");
    }
}
