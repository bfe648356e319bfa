//! What each shape of real DNS answer (served by NSD) does to a challenge.

mod common;

use common::*;
use email2sms_verification::model::{Outcome, State};

async fn check(world: &World, zone: &str) -> email2sms_verification::engine::Applied {
    world
        .verifier
        .check_now(&key(COMPANY_A, "example.com"), None, None)
        .await
        .unwrap_or_else(|e| panic!("check of zone {zone:?} failed: {e}"))
}

/// Creates the challenge, publishes `records(challenge)` as the example.com zone and checks.
async fn publish_and_check(
    world: &mut World,
    records: impl FnOnce(&str) -> String,
) -> email2sms_verification::engine::Applied {
    let (challenge, created) = world
        .verifier
        .create(&key(COMPANY_A, "example.com"), now())
        .await
        .unwrap();
    assert!(created);
    let zone = records(&challenge.token);
    world.dns.set_zone("example.com", &zone).await;
    check(world, &zone).await
}

fn outcome(applied: &email2sms_verification::engine::Applied) -> Outcome {
    Outcome::from_db(&applied.check.outcome).unwrap()
}

#[tokio::test]
async fn token_present_verifies() {
    let mut world = world(&[]).await;
    let applied = publish_and_check(&mut world, |t| {
        format!("@ TXT \"email2sms-verification={t}\"")
    })
    .await;
    assert_eq!(applied.challenge.state(), State::Verified);
    assert_eq!(outcome(&applied), Outcome::Found);
    assert_eq!(
        applied.challenge.reason,
        "found the verification token at example.com"
    );
    assert_eq!(
        applied.check.nameserver.as_deref(),
        Some(world.dns.addr().to_string().as_str())
    );
    assert!(applied.challenge.verified_at.is_some());
}

#[tokio::test]
async fn no_txt_record_stays_pending() {
    let mut world = world(&[]).await;
    let applied = publish_and_check(&mut world, |_| "@ A 192.0.2.1".into()).await;
    assert_eq!(applied.challenge.state(), State::Pending);
    assert_eq!(outcome(&applied), Outcome::NoData);
    assert_eq!(
        applied.challenge.reason,
        "no TXT record found at example.com"
    );
    assert!(!applied.check.temporary);
    assert_eq!(applied.challenge.consecutive_failures, 1);
}

#[tokio::test]
async fn wrong_token_names_what_was_found() {
    let mut world = world(&[]).await;
    let applied = publish_and_check(&mut world, |_| {
        "@ TXT \"email2sms-verification=ffffffffffffffffffffffffffffffff\"\n@ TXT \"v=spf1 -all\""
            .into()
    })
    .await;
    assert_eq!(applied.challenge.state(), State::Pending);
    assert_eq!(outcome(&applied), Outcome::WrongValue);
    let reason = &applied.challenge.reason;
    assert!(
        reason.starts_with("found other TXT records at example.com: "),
        "{reason}"
    );
    assert!(reason.contains("\"v=spf1 -all\""), "{reason}");
    assert!(
        reason.contains("\"email2sms-verification=ffffffffffffffffffffffffffffffff\""),
        "{reason}"
    );
    let mut values = applied.check.values_found.clone();
    values.sort();
    assert_eq!(
        values,
        [
            "email2sms-verification=ffffffffffffffffffffffffffffffff",
            "v=spf1 -all"
        ]
    );
}

#[tokio::test]
async fn token_split_across_strings_is_joined() {
    let mut world = world(&[]).await;
    let applied = publish_and_check(&mut world, |t| {
        format!(
            "@ TXT \"email2sms-\" \"verification=\" \"{}\" \"{}\"",
            &t[..10],
            &t[10..]
        )
    })
    .await;
    assert_eq!(
        applied.challenge.state(),
        State::Verified,
        "{}",
        applied.check.detail
    );
    assert_eq!(
        applied.check.values_found,
        [format!(
            "email2sms-verification={}",
            applied.challenge.token
        )]
    );
}

#[tokio::test]
async fn token_among_several_records_with_case_spaces_and_quotes() {
    let mut world = world(&[]).await;
    let applied = publish_and_check(&mut world, |t| {
        format!(
            "@ TXT \"v=spf1 include:_spf.google.com ~all\"\n\
             @ TXT \"google-site-verification=abc\"\n\
             @ TXT \" \\\"EMAIL2SMS-Verification={}\\\" \"",
            t.to_uppercase()
        )
    })
    .await;
    assert_eq!(
        applied.challenge.state(),
        State::Verified,
        "{}",
        applied.check.detail
    );
    assert_eq!(applied.check.values_found.len(), 3);
}

#[tokio::test]
async fn cname_at_the_name_is_followed() {
    let mut world = world(&[]).await;
    let (challenge, _) = world
        .verifier
        .create(&key(COMPANY_A, "www.example.com"), now())
        .await
        .unwrap();
    world
        .dns
        .set_zone(
            "example.com",
            &format!(
                "www CNAME verify.example.com.\nverify TXT \"email2sms-verification={}\"",
                challenge.token
            ),
        )
        .await;
    let applied = world
        .verifier
        .check_now(&key(COMPANY_A, "www.example.com"), None, None)
        .await
        .unwrap();
    assert_eq!(
        applied.challenge.state(),
        State::Verified,
        "{}",
        applied.check.detail
    );
    assert_eq!(applied.check.cname_chain, ["verify.example.com"]);
    assert_eq!(applied.check.queried_name, "www.example.com");
    assert_eq!(
        applied.challenge.reason,
        "found the verification token at www.example.com (an alias of verify.example.com)"
    );
}

#[tokio::test]
async fn nxdomain_is_no_txt_record() {
    let mut world = world(&[]).await;
    world.dns.set_zone("example.com", "www A 192.0.2.1").await;
    world
        .verifier
        .create(&key(COMPANY_A, "missing.example.com"), now())
        .await
        .unwrap();
    let applied = world
        .verifier
        .check_now(&key(COMPANY_A, "missing.example.com"), None, None)
        .await
        .unwrap();
    assert_eq!(applied.challenge.state(), State::Pending);
    assert_eq!(outcome(&applied), Outcome::NxDomain);
    assert!(!applied.check.temporary);
    assert!(
        applied
            .challenge
            .reason
            .starts_with("no TXT record found at missing.example.com"),
        "{}",
        applied.challenge.reason
    );
}

#[tokio::test]
async fn server_stopped_keeps_the_state_and_says_temporary() {
    let mut world = world(&[]).await;
    let verified = publish_and_check(&mut world, |t| {
        format!("@ TXT \"email2sms-verification={t}\"")
    })
    .await;
    assert_eq!(verified.challenge.state(), State::Verified);

    world.dns.stop().await;
    let started = std::time::Instant::now();
    let applied = check(&world, "(stopped)").await;
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    assert_eq!(applied.challenge.state(), State::Verified);
    assert_eq!(
        outcome(&applied),
        Outcome::Timeout,
        "{}",
        applied.check.detail
    );
    assert!(applied.check.temporary);
    assert!(
        applied.check.detail.contains("temporary"),
        "{}",
        applied.check.detail
    );
    assert_eq!(applied.challenge.consecutive_failures, 0);
    assert_eq!(applied.challenge.missing_since, None);
    assert_eq!(applied.challenge.reason, verified.challenge.reason);
    assert_eq!(applied.challenge.revision, verified.challenge.revision);

    // A pending challenge is kept pending, and the failure does not count towards giving up.
    world
        .verifier
        .create(&key(COMPANY_A, "other.example.com"), now())
        .await
        .unwrap();
    let pending = world
        .verifier
        .check_now(&key(COMPANY_A, "other.example.com"), None, None)
        .await
        .unwrap();
    assert_eq!(pending.challenge.state(), State::Pending);
    assert_eq!(pending.challenge.consecutive_failures, 0);

    world.dns.resume().await;
    let again = check(&world, "(resumed)").await;
    assert_eq!(outcome(&again), Outcome::Found);
}

#[tokio::test]
async fn check_now_is_bounded_by_the_callers_deadline() {
    let mut world = world(&["--dns-timeout", "5s", "--lease", "10m"]).await;
    world
        .verifier
        .create(&key(COMPANY_A, "example.com"), now())
        .await
        .unwrap();
    world.dns.stop().await;
    let started = std::time::Instant::now();
    let applied = world
        .verifier
        .check_now(
            &key(COMPANY_A, "example.com"),
            Some(std::time::Duration::from_millis(400)),
            None,
        )
        .await
        .unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    assert_eq!(outcome(&applied), Outcome::Timeout);
    assert_eq!(applied.challenge.state(), State::Pending);
}

#[tokio::test]
async fn servfail_and_refused_are_temporary() {
    let mut world = world(&[]).await;
    world.dns.set_failing_zone("broken.example").await;
    for (domain, expected) in [
        ("broken.example", Outcome::ServFail),
        // NSD is not authoritative for it and does not recurse.
        ("elsewhere.example", Outcome::Refused),
    ] {
        let k = key(COMPANY_A, domain);
        let (created, _) = world.verifier.create(&k, now()).await.unwrap();
        let applied = world.verifier.check_now(&k, None, None).await.unwrap();
        assert_eq!(outcome(&applied), expected, "{}", applied.check.detail);
        assert!(applied.check.temporary);
        assert_eq!(applied.challenge.state(), State::Pending);
        assert_eq!(applied.challenge.consecutive_failures, 0, "not counted");
        assert_eq!(applied.challenge.reason, applied.check.detail);
        assert_eq!(
            applied.challenge.revision, created.revision,
            "no state change"
        );
        assert!(
            applied
                .check
                .detail
                .contains("temporary and the check will be retried"),
            "{}",
            applied.check.detail
        );
    }
}
