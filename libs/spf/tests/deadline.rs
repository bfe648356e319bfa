//! How long an SPF check waits for DNS that never answers, on tokio's paused clock (it jumps to
//! the next timer whenever everything waits, so these tests take milliseconds and measure the
//! timers exactly): a dead server is given up after query timeout × attempts, and the overall
//! deadline cuts any evaluation short. The resolver is the real one (hickory over UDP), asking a
//! loopback socket that reads nothing.

use std::net::IpAddr;
use std::time::Duration;

use email2sms_spf::{
    DnsSettings, SpfCause, SpfResult, SpfSettings, SpfVerifier, spf_refusal_reply,
};
use tokio::time::Instant;

/// Runs one sender check against a DNS server that never answers; its outcome and how long it
/// took on the (paused) clock.
async fn check_against_silent_dns(
    query_timeout: Duration,
    attempts: usize,
    overall_timeout: Duration,
) -> (email2sms_spf::SpfOutcome, Duration) {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let settings = SpfSettings {
        dns: DnsSettings {
            nameservers: vec![silent.local_addr().unwrap()],
            query_timeout,
            attempts,
        },
        overall_timeout,
        ..SpfSettings::default()
    };
    let verifier = SpfVerifier::new(&settings).unwrap();
    let started = Instant::now();
    let outcome = verifier
        .check_sender(
            IpAddr::from([192, 0, 2, 10]),
            "alice@example.test",
            "mail.example.test",
        )
        .await;
    (outcome, started.elapsed())
}

/// Asserts `elapsed` is `expected`, give or take the few milliseconds the clock moves while
/// sockets are set up.
#[track_caller]
fn assert_about(elapsed: Duration, expected: Duration) {
    assert!(
        elapsed >= expected && elapsed < expected + Duration::from_millis(100),
        "took {elapsed:?}, expected {expected:?}"
    );
}

/// `attempts` counts every try: 3 attempts of 2 s give up after 6 s (hickory's own `attempts`
/// counts retries, which would make it 8 s).
#[tokio::test(start_paused = true)]
async fn a_dead_server_is_given_up_after_timeout_times_attempts() {
    let (outcome, elapsed) =
        check_against_silent_dns(Duration::from_secs(2), 3, Duration::from_secs(20)).await;
    assert_eq!(outcome.result, SpfResult::Temperror, "{}", outcome.report());
    assert!(
        matches!(&outcome.cause, SpfCause::Error(e) if e.contains("timed out")),
        "{}",
        outcome.report()
    );
    assert_about(elapsed, Duration::from_secs(6));
    let reply = spf_refusal_reply(&outcome).unwrap();
    assert_eq!((reply.code, reply.enhanced), (451, "4.4.3"), "{reply}");
}

/// The defaults answer a DNS outage with 451 after 4 s (2 s × 2), not 15 s.
#[tokio::test(start_paused = true)]
async fn the_defaults_answer_a_dead_server_after_four_seconds() {
    let defaults = SpfSettings::default();
    assert_eq!(defaults.dns.longest_lookup(), Duration::from_secs(4));
    let (outcome, elapsed) = check_against_silent_dns(
        defaults.dns.query_timeout,
        defaults.dns.attempts,
        defaults.overall_timeout,
    )
    .await;
    assert_eq!(outcome.result, SpfResult::Temperror, "{}", outcome.report());
    assert_about(elapsed, Duration::from_secs(4));
}

/// The overall deadline wins over slower queries: 3 tries of 5 s would take 15 s, the deadline
/// of 4 s ends the evaluation with temperror (451 4.4.3) at 4 s.
#[tokio::test(start_paused = true)]
async fn the_overall_deadline_cuts_the_evaluation() {
    let (outcome, elapsed) =
        check_against_silent_dns(Duration::from_secs(5), 3, Duration::from_secs(4)).await;
    assert_eq!(outcome.result, SpfResult::Temperror, "{}", outcome.report());
    assert_about(elapsed, Duration::from_secs(4));
    let reply = spf_refusal_reply(&outcome).unwrap();
    assert_eq!((reply.code, reply.enhanced), (451, "4.4.3"), "{reply}");
}
