//! A token that only a wildcard record (`*.example.com`) serves proves nothing about the one name
//! being verified, so it must not verify; an explicit record (also next to a wildcard) and CNAMEs
//! to a name that holds the record still do. Every case is served by a real NSD.

mod common;

use common::*;
use email2sms_proto::verification::v1::CheckResult;
use email2sms_verification::engine::Applied;
use email2sms_verification::model::{Outcome, State};
use email2sms_verification::rules::MAX_WILDCARD_PROBES;

/// Creates the challenge of `domain` for company A, publishes `zones` (origin, zone text in which
/// `{t}` stands for the challenge's token) and checks it once.
async fn publish_and_check(world: &mut World, domain: &str, zones: &[(&str, &str)]) -> Applied {
    let (challenge, _) = world
        .verifier
        .create(&key(COMPANY_A, domain), now())
        .await
        .unwrap();
    for (origin, records) in zones {
        let records = records.replace("{t}", &challenge.token);
        world.dns.set_zone(origin, &records).await;
    }
    world
        .verifier
        .check_now(&key(COMPANY_A, domain), None, None)
        .await
        .unwrap_or_else(|e| panic!("check of {domain} failed: {e}"))
}

const TOKEN_TXT: &str = "TXT \"email2sms-verification={t}\"";

fn outcome(applied: &Applied) -> Outcome {
    Outcome::from_db(&applied.check.outcome).unwrap()
}

/// The check says which wildcard served the token and which random name showed it, permanently
/// (the customer must change DNS; retrying changes nothing), and GetStatus reads it all back.
async fn assert_wildcard(world: &World, applied: &Applied, wildcard: &str) {
    let (challenge, checks) = world
        .verifier
        .status(&key(COMPANY_A, &applied.challenge.domain), 1)
        .await
        .unwrap();
    let shown = world.verifier.to_proto(&challenge);
    assert_eq!(shown.state_reason, applied.check.detail);
    let last = checks[0].to_proto();
    assert_eq!(last.result(), CheckResult::Wildcard);
    assert_eq!(last.wildcard_name, wildcard);
    assert_eq!(last.wildcard_probe_names, applied.check.probed_names);
    assert_eq!(last.message, applied.check.detail);
    assert_eq!(
        outcome(applied),
        Outcome::Wildcard,
        "{}",
        applied.check.detail
    );
    assert!(!applied.check.temporary);
    assert_eq!(applied.check.wildcard_name.as_deref(), Some(wildcard));
    let parent = wildcard.trim_start_matches('*');
    assert!(
        applied
            .check
            .probed_names
            .iter()
            .any(|n| n.ends_with(parent) && applied.check.detail.contains(n.as_str())),
        "the probe that found it is named: {:?} / {}",
        applied.check.probed_names,
        applied.check.detail
    );
    assert_eq!(applied.challenge.reason, applied.check.detail);
    assert_eq!(
        applied.challenge.consecutive_failures, 1,
        "counts as a miss"
    );
}

#[tokio::test]
async fn a_token_only_a_wildcard_serves_does_not_verify() {
    let mut world = world(&[]).await;
    let applied = publish_and_check(
        &mut world,
        "sales.example.com",
        &[("example.com", &format!("* {TOKEN_TXT}"))],
    )
    .await;
    assert_eq!(
        applied.challenge.state(),
        State::Pending,
        "{}",
        applied.challenge.reason
    );
    let reason = &applied.challenge.reason;
    assert!(reason.contains("wildcard record *.example.com"), "{reason}");
    assert!(reason.contains("sales.example.com itself"), "{reason}");
    assert_wildcard(&world, &applied, "*.example.com").await;
    assert_eq!(applied.check.probed_names.len(), 1, "one parent, one probe");
    assert_ne!(applied.check.probed_names[0], "sales.example.com");
}

#[tokio::test]
async fn a_verified_domain_whose_record_is_replaced_by_a_wildcard_is_no_longer_proven() {
    let mut world = world(&[]).await;
    let verified = publish_and_check(
        &mut world,
        "sales.example.com",
        &[("example.com", &format!("sales {TOKEN_TXT}"))],
    )
    .await;
    assert_eq!(verified.challenge.state(), State::Verified);
    assert_eq!(verified.check.probed_names.len(), 1);
    let token = &verified.challenge.token;
    world
        .dns
        .set_zone(
            "example.com",
            &format!("* TXT \"email2sms-verification={token}\""),
        )
        .await;
    let applied = world
        .verifier
        .check_now(&key(COMPANY_A, "sales.example.com"), None, None)
        .await
        .unwrap();
    assert_eq!(
        applied.challenge.state(),
        State::Verified,
        "within the grace"
    );
    assert_eq!(outcome(&applied), Outcome::Wildcard);
    assert!(applied.challenge.missing_since.is_some());
    assert!(
        applied.challenge.reason.starts_with("still verified, but"),
        "{}",
        applied.challenge.reason
    );
}

#[tokio::test]
async fn a_token_in_both_an_explicit_record_and_the_wildcard_does_not_verify() {
    // The two cannot be told apart from outside: every name under example.com answers with the
    // token, so the record proves nothing about sales.example.com in particular.
    let mut world = world(&[]).await;
    let applied = publish_and_check(
        &mut world,
        "sales.example.com",
        &[("example.com", &format!("* {TOKEN_TXT}\nsales {TOKEN_TXT}"))],
    )
    .await;
    assert_eq!(applied.challenge.state(), State::Pending);
    assert_wildcard(&world, &applied, "*.example.com").await;
    assert!(
        applied
            .challenge
            .reason
            .contains("remove the token from *.example.com"),
        "{}",
        applied.challenge.reason
    );
}

#[tokio::test]
async fn a_wildcard_cname_does_not_verify() {
    let mut world = world(&[]).await;
    let applied = publish_and_check(
        &mut world,
        "sales.example.com",
        &[
            ("example.org", &format!("holder {TOKEN_TXT}")),
            ("example.com", "* CNAME holder.example.org."),
        ],
    )
    .await;
    assert_eq!(
        applied.challenge.state(),
        State::Pending,
        "{}",
        applied.challenge.reason
    );
    let reason = &applied.challenge.reason;
    assert!(
        reason.contains("wildcard record *.example.com (an alias of holder.example.org)"),
        "{reason}"
    );
    assert_wildcard(&world, &applied, "*.example.com").await;
}

#[tokio::test]
async fn a_cname_into_a_wildcarded_zone_does_not_verify() {
    let mut world = world(&[]).await;
    let applied = publish_and_check(
        &mut world,
        "www.example.com",
        &[
            ("example.org", &format!("* {TOKEN_TXT}")),
            ("example.com", "www CNAME verify.example.org."),
        ],
    )
    .await;
    assert_eq!(
        applied.challenge.state(),
        State::Pending,
        "{}",
        applied.challenge.reason
    );
    let reason = &applied.challenge.reason;
    assert!(
        reason.contains("at www.example.com (an alias of verify.example.org)"),
        "{reason}"
    );
    assert!(reason.contains("wildcard record *.example.org"), "{reason}");
    assert_wildcard(&world, &applied, "*.example.org").await;
    assert_eq!(
        applied.check.probed_names.len(),
        2,
        "under example.com and example.org"
    );
}

#[tokio::test]
async fn an_explicit_record_next_to_a_wildcard_verifies() {
    let mut world = world(&[]).await;
    // The wildcard carries a verification record too (another token), so the check does ask.
    let applied = publish_and_check(
        &mut world,
        "sales.example.com",
        &[(
            "example.com",
            &format!(
                "* TXT \"email2sms-verification=ffffffffffffffffffffffffffffffff\"\n\
                 sales {TOKEN_TXT}"
            ),
        )],
    )
    .await;
    assert_eq!(
        applied.challenge.state(),
        State::Verified,
        "{}",
        applied.challenge.reason
    );
    assert_eq!(
        applied.challenge.reason,
        "found the verification token at sales.example.com"
    );
    assert_eq!(outcome(&applied), Outcome::Found);
    assert_eq!(applied.check.probed_names.len(), 1);
    assert_eq!(applied.check.wildcard_name, None);
}

#[tokio::test]
async fn a_cname_to_a_name_holding_the_record_verifies_and_names_the_alias() {
    let mut world = world(&[]).await;
    let applied = publish_and_check(
        &mut world,
        "www.example.com",
        &[
            (
                "example.org",
                &format!(
                    "verify {TOKEN_TXT}\n\
                     * TXT \"email2sms-verification=ffffffffffffffffffffffffffffffff\""
                ),
            ),
            ("example.com", "www CNAME verify.example.org."),
        ],
    )
    .await;
    assert_eq!(
        applied.challenge.state(),
        State::Verified,
        "{}",
        applied.challenge.reason
    );
    assert_eq!(
        applied.challenge.reason,
        "found the verification token at www.example.com (an alias of verify.example.org)"
    );
    assert_eq!(applied.check.cname_chain, ["verify.example.org"]);
    assert_eq!(applied.check.probed_names.len(), 2);
    assert!(applied.check.probed_names[0].ends_with(".example.com"));
    assert!(applied.check.probed_names[1].ends_with(".example.org"));
}

#[tokio::test]
async fn aliases_under_more_parents_than_are_probed_do_not_verify() {
    // a.example.com -> b.one.test -> c.two.test -> d.three.test -> e.four.test: five parents.
    let mut world = world(&[]).await;
    let applied = publish_and_check(
        &mut world,
        "a.example.com",
        &[
            ("four.test", &format!("e {TOKEN_TXT}")),
            ("three.test", "d CNAME e.four.test."),
            ("two.test", "c CNAME d.three.test."),
            ("one.test", "b CNAME c.two.test."),
            ("example.com", "a CNAME b.one.test."),
        ],
    )
    .await;
    assert_eq!(applied.check.cname_chain.len(), 4, "{:?}", applied.check);
    assert_eq!(applied.challenge.state(), State::Pending);
    assert_eq!(outcome(&applied), Outcome::TooManyAliases);
    assert!(applied.check.probed_names.is_empty(), "nothing probed");
    assert!(
        applied
            .challenge
            .reason
            .contains(&format!("at most {MAX_WILDCARD_PROBES} are checked")),
        "{}",
        applied.challenge.reason
    );
}

#[tokio::test]
async fn a_holder_whose_token_only_a_wildcard_serves_loses_the_domain_after_the_grace() {
    // A verified sales.example.com; then its token stays only where a wildcard serves it too,
    // while B publishes its own token at the name. A's token proves nothing any more, so after
    // the grace (72 h) and enough misses the domain moves to B, as if A's token were gone.
    let mut world = world(&[]).await;
    let start = now();
    let a = key(COMPANY_A, "sales.example.com");
    let b = key(COMPANY_B, "sales.example.com");
    let (a_challenge, _) = world.verifier.create(&a, start).await.unwrap();
    let (b_challenge, _) = world.verifier.create(&b, start).await.unwrap();
    let record = |token: &str| format!("TXT \"email2sms-verification={token}\"");
    world
        .dns
        .set_zone(
            "example.com",
            &format!("sales {}", record(&a_challenge.token)),
        )
        .await;
    let verified = world
        .verifier
        .check_now(&a, None, Some(start))
        .await
        .unwrap();
    assert_eq!(verified.challenge.state(), State::Verified);

    world
        .dns
        .set_zone(
            "example.com",
            &format!(
                "sales {}\nsales {}\n* {}",
                record(&a_challenge.token),
                record(&b_challenge.token),
                record(&a_challenge.token)
            ),
        )
        .await;
    for hours in [1, 2] {
        let missed = world
            .verifier
            .check_now(&a, None, Some(start + seconds(hours * 3600)))
            .await
            .unwrap();
        assert_eq!(outcome(&missed), Outcome::Wildcard);
        assert_eq!(
            missed.challenge.state(),
            State::Verified,
            "within the grace"
        );
    }
    let waiting = world
        .verifier
        .check_now(&b, None, Some(start + seconds(3 * 3600)))
        .await
        .unwrap();
    assert_eq!(
        waiting.challenge.state(),
        State::Pending,
        "A's grace is not over"
    );
    assert_eq!(outcome(&waiting), Outcome::Found);

    let after_grace = start + seconds(3600 + 72 * 3600 + 1);
    let moved = world
        .verifier
        .check_now(&b, None, Some(after_grace))
        .await
        .unwrap();
    assert_eq!(
        moved.challenge.state(),
        State::Verified,
        "{}",
        moved.challenge.reason
    );
    let a_now = world.verifier.find(&a).await.unwrap();
    assert_eq!(a_now.state(), State::Revoked, "{}", a_now.reason);
}
