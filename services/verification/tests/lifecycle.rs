//! The challenge lifecycle over time: scheduler rounds are driven with an explicit `now`, so grace
//! periods and give-up deadlines pass in an instant while DNS answers come from a real NSD.

mod common;

use common::*;
use email2sms_proto::verification::v1::VerificationState as Wire;
use email2sms_verification::model::State;
use email2sms_verification::scheduler::Scheduler;

fn scheduler(world: &World, replica: &str) -> Scheduler {
    Scheduler::new(world.verifier.clone(), &world.config.verification, replica)
}

async fn check_rows(world: &World) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT c.domain, count(k.id) FROM challenges c LEFT JOIN checks k ON k.challenge_id = c.id \
         GROUP BY c.domain ORDER BY c.domain",
    )
    .fetch_all(&world.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn verified_domain_is_revoked_after_the_grace_period() {
    let mut world = world(&[
        "--recheck-interval",
        "1h",
        "--revoke-grace",
        "60s",
        "--missing-recheck-interval",
        "10s",
        "--revoke-after-failures",
        "3",
    ])
    .await;
    let scheduler = scheduler(&world, "replica-1");
    let t0 = now();
    let (challenge, _) = world
        .verifier
        .create(&key(COMPANY_A, "example.com"), t0)
        .await
        .unwrap();
    world
        .dns
        .set_zone("example.com", &token_record(&challenge))
        .await;
    assert_eq!(scheduler.run_round(t0).await.unwrap().changed, 1);
    let verified = world
        .verifier
        .find(&key(COMPANY_A, "example.com"))
        .await
        .unwrap();
    assert_eq!(verified.state(), State::Verified);

    world
        .dns
        .set_zone("example.com", "@ TXT \"v=spf1 -all\"")
        .await;
    let missing_from = t0 + seconds(3600);
    let (still_verified, (revoked_at, revoked)) = rounds_while(
        &world,
        &scheduler,
        &key(COMPANY_A, "example.com"),
        State::Verified,
        missing_from,
    )
    .await;
    for (_, row) in &still_verified {
        assert_eq!(row.missing_since, Some(missing_from));
        assert!(row.reason.starts_with("still verified"), "{}", row.reason);
    }
    assert_eq!(revoked.state(), State::Revoked, "{}", revoked.reason);
    assert_eq!(
        revoked_at,
        missing_from + seconds(60),
        "revoked when the grace ended"
    );
    assert!(
        revoked
            .reason
            .starts_with("the verification token has been missing from example.com since"),
        "{}",
        revoked.reason
    );
    assert_eq!(revoked.next_check_at, None);

    let events = events(&world.pool).await;
    let states: Vec<_> = events
        .iter()
        .map(|e| (e.previous_state(), e.state()))
        .collect();
    assert_eq!(
        states,
        [
            (Wire::Unspecified, Wire::Pending),
            (Wire::Pending, Wire::Verified),
            (Wire::Verified, Wire::Revoked),
        ]
    );
    let sequences: Vec<_> = events.iter().map(|e| e.state_sequence).collect();
    assert_eq!(sequences, [1, 2, 3]);
    assert_eq!(events[2].state_reason, revoked.reason);
    assert!(events[2].check.is_some(), "the revoking check is attached");
}

#[tokio::test]
async fn pending_domain_fails_after_the_give_up_period() {
    let mut world = world(&[
        "--pending-first-interval",
        "5s",
        "--pending-max-interval",
        "20s",
        "--give-up-after",
        "60s",
    ])
    .await;
    world.dns.set_zone("example.com", "www A 192.0.2.1").await;
    let scheduler = scheduler(&world, "replica-1");
    let t0 = now();
    world
        .verifier
        .create(&key(COMPANY_A, "example.com"), t0)
        .await
        .unwrap();
    let (pending, (failed_at, failed)) = rounds_while(
        &world,
        &scheduler,
        &key(COMPANY_A, "example.com"),
        State::Pending,
        t0,
    )
    .await;
    let waits: Vec<_> = pending
        .iter()
        .map(|(at, row)| (row.next_check_at.unwrap() - *at).num_seconds())
        .collect();
    assert_eq!(
        waits,
        [5, 10, 20, 20, 5],
        "back-off, capped, ending at the deadline"
    );
    assert_eq!(failed.state(), State::Failed);
    assert!(
        failed.reason.starts_with("gave up after 1m: the verification token was not found at example.com (last check: no TXT record found at example.com"),
        "{}",
        failed.reason
    );

    // Asking again starts over.
    let again = world
        .verifier
        .check_now(
            &key(COMPANY_A, "example.com"),
            None,
            Some(failed_at + seconds(1)),
        )
        .await
        .unwrap();
    assert_eq!(again.challenge.state(), State::Pending);
    assert_eq!(again.challenge.pending_since, failed_at + seconds(1));
}

#[tokio::test]
async fn ownership_moves_when_the_first_companys_token_is_gone_past_the_grace() {
    let mut world = world(&["--revoke-grace", "60s", "--revoke-after-failures", "2"]).await;
    let t0 = now();
    let a_key = key(COMPANY_A, "example.com");
    let b_key = key(COMPANY_B, "example.com");
    let (a, _) = world.verifier.create(&a_key, t0).await.unwrap();
    let (b, _) = world.verifier.create(&b_key, t0).await.unwrap();
    assert_ne!(a.token, b.token, "each company has its own token");

    world.dns.set_zone("example.com", &token_record(&a)).await;
    let a_checked = world
        .verifier
        .check_now(&a_key, None, Some(t0))
        .await
        .unwrap();
    assert_eq!(a_checked.challenge.state(), State::Verified);

    // Both tokens published: the first to verify keeps the domain.
    world
        .dns
        .set_zone(
            "example.com",
            &format!("{}\n{}", token_record(&a), token_record(&b)),
        )
        .await;
    let refused = world
        .verifier
        .check_now(&b_key, None, Some(t0))
        .await
        .unwrap();
    assert_eq!(refused.challenge.state(), State::Pending);
    assert!(
        refused
            .challenge
            .reason
            .contains("example.com is already verified by another company"),
        "{}",
        refused.challenge.reason
    );

    // A's token disappears; within the grace period B still waits.
    world.dns.set_zone("example.com", &token_record(&b)).await;
    let a_missing = world
        .verifier
        .check_now(&a_key, None, Some(t0 + seconds(1)))
        .await
        .unwrap();
    assert_eq!(a_missing.challenge.state(), State::Verified);
    let waiting = world
        .verifier
        .check_now(&b_key, None, Some(t0 + seconds(30)))
        .await
        .unwrap();
    assert_eq!(waiting.challenge.state(), State::Pending);

    // Past the grace: ownership moves in one transaction.
    let moved = world
        .verifier
        .check_now(&b_key, None, Some(t0 + seconds(62)))
        .await
        .unwrap();
    assert_eq!(moved.challenge.state(), State::Verified);
    let a_after = world.verifier.find(&a_key).await.unwrap();
    assert_eq!(a_after.state(), State::Revoked);
    assert!(
        a_after
            .reason
            .starts_with("another company proved ownership of example.com"),
        "{}",
        a_after.reason
    );

    let events = events(&world.pool).await;
    let last_two: Vec<_> = events[events.len() - 2..]
        .iter()
        .map(|e| (e.company_id.clone(), e.state()))
        .collect();
    assert_eq!(
        last_two,
        [
            (COMPANY_A.to_string(), Wire::Revoked),
            (COMPANY_B.to_string(), Wire::Verified),
        ]
    );
}

#[tokio::test]
async fn two_schedulers_never_check_the_same_domain_twice_in_one_round() {
    let mut world = world(&["--batch-size", "7", "--concurrency", "3"]).await;
    world
        .dns
        .set_zone("example.com", "@ TXT \"v=spf1 -all\"")
        .await;
    let t0 = now();
    for n in 0..40 {
        world
            .verifier
            .create(&key(COMPANY_A, &format!("d{n}.example.com")), t0)
            .await
            .unwrap();
    }
    let one = scheduler(&world, "replica-1");
    let two = scheduler(&world, "replica-2");
    let (mut by_one, mut by_two) = (0, 0);
    loop {
        let (a, b) = tokio::join!(one.run_round(t0), two.run_round(t0));
        let (a, b) = (a.unwrap(), b.unwrap());
        if a.claimed + b.claimed == 0 {
            break;
        }
        by_one += a.applied;
        by_two += b.applied;
    }
    assert_eq!(by_one + by_two, 40);
    assert!(
        by_one > 0 && by_two > 0,
        "both replicas worked: {by_one} + {by_two}"
    );
    let counts = check_rows(&world).await;
    assert_eq!(counts.len(), 40);
    assert!(counts.iter().all(|(_, n)| *n == 1), "{counts:?}");
    let leased: i64 =
        sqlx::query_scalar("SELECT count(*) FROM challenges WHERE lease_owner IS NOT NULL")
            .fetch_one(&world.pool)
            .await
            .unwrap();
    assert_eq!(leased, 0, "applying a check releases its lease");
}

#[tokio::test]
async fn a_crashed_replicas_lease_expires_and_another_takes_over() {
    let world = world(&["--lease", "10s"]).await;
    let t0 = now();
    world
        .verifier
        .create(&key(COMPANY_A, "example.com"), t0)
        .await
        .unwrap();
    sqlx::query("UPDATE challenges SET lease_owner = 'crashed', lease_until = $1")
        .bind(t0 + seconds(10))
        .execute(&world.pool)
        .await
        .unwrap();
    let survivor = scheduler(&world, "replica-2");
    assert_eq!(
        survivor.run_round(t0 + seconds(5)).await.unwrap().claimed,
        0
    );
    let round = survivor.run_round(t0 + seconds(11)).await.unwrap();
    assert_eq!((round.claimed, round.applied), (1, 1));
}

#[tokio::test]
async fn create_is_idempotent_and_rotate_changes_only_the_token() {
    let mut world = world(&[]).await;
    let k = key(COMPANY_A, "example.com");
    let (first, created) = world.verifier.create(&k, now()).await.unwrap();
    let (again, created_again) = world.verifier.create(&k, now()).await.unwrap();
    assert!(created && !created_again);
    assert_eq!(first.token, again.token);
    assert_eq!(first.id, again.id);
    assert_eq!(
        events(&world.pool).await.len(),
        1,
        "re-creating is no change"
    );

    world
        .dns
        .set_zone("example.com", &token_record(&first))
        .await;
    let verified = world.verifier.check_now(&k, None, None).await.unwrap();
    assert_eq!(verified.challenge.state(), State::Verified);

    let rotated = world.verifier.rotate(&k, now()).await.unwrap();
    assert_ne!(rotated.token, first.token);
    assert_eq!(
        rotated.state(),
        State::Verified,
        "verified until the grace runs out"
    );
    assert_eq!(rotated.revision, verified.challenge.revision + 1);
    let events = events(&world.pool).await;
    let last = events.last().unwrap();
    assert_eq!(
        (last.previous_state(), last.state()),
        (Wire::Verified, Wire::Verified)
    );
    assert_eq!(last.token, rotated.token);
    assert_eq!(
        last.txt_record_value,
        format!("email2sms-verification={}", rotated.token)
    );

    // Only the new token keeps it verified.
    let old_only = world.verifier.check_now(&k, None, None).await.unwrap();
    assert_eq!(old_only.challenge.state(), State::Verified);
    assert!(old_only.challenge.missing_since.is_some());
    world
        .dns
        .set_zone("example.com", &token_record(&rotated))
        .await;
    let new_token = world.verifier.check_now(&k, None, None).await.unwrap();
    assert_eq!(new_token.challenge.missing_since, None);

    // Deleting is idempotent and stops everything.
    world.verifier.delete(&k).await.unwrap();
    world.verifier.delete(&k).await.unwrap();
    assert!(world.verifier.find(&k).await.is_err());
}

#[tokio::test]
async fn state_change_and_its_event_commit_together() {
    let mut world = world(&[]).await;
    let k = key(COMPANY_A, "example.com");
    let (challenge, _) = world.verifier.create(&k, now()).await.unwrap();
    world
        .dns
        .set_zone("example.com", &token_record(&challenge))
        .await;

    // While the outbox refuses rows, the state change cannot commit either.
    sqlx::query("ALTER TABLE outbox ADD CONSTRAINT refuse_events CHECK (false) NOT VALID")
        .execute(&world.pool)
        .await
        .unwrap();
    assert!(world.verifier.check_now(&k, None, None).await.is_err());
    let unchanged = world.verifier.find(&k).await.unwrap();
    assert_eq!(unchanged.state(), State::Pending);
    assert_eq!(
        unchanged.last_checked_at, None,
        "nothing of the check was kept"
    );
    assert_eq!(events(&world.pool).await.len(), 1);

    sqlx::query("ALTER TABLE outbox DROP CONSTRAINT refuse_events")
        .execute(&world.pool)
        .await
        .unwrap();
    let verified = world.verifier.check_now(&k, None, None).await.unwrap();
    assert_eq!(verified.challenge.state(), State::Verified);
    let events = events(&world.pool).await;
    assert_eq!(events.len(), 2);
    let event = &events[1];
    assert_eq!(event.state(), Wire::Verified);
    assert_eq!(event.state_sequence, verified.challenge.revision as u64);
    assert_eq!(event.challenge_id, verified.challenge.id.to_string());
    let check = event.check.as_ref().unwrap();
    assert_eq!(check.check_id, verified.check.id.to_string());

    // A check that changes nothing publishes nothing.
    world.verifier.check_now(&k, None, None).await.unwrap();
    assert_eq!(event_count(&world).await, 2);
}

async fn event_count(world: &World) -> usize {
    events(&world.pool).await.len()
}
