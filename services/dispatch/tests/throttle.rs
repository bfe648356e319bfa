//! The Redis token buckets (a real Redis at REDIS_URL or 127.0.0.1:6379) and what a throttled job
//! does in the dispatcher. The bucket clock is passed in, so refills are exact and instant.

mod support;

use std::sync::Arc;
use std::time::Duration;

use email2sms_dispatch::connector::jsonl::JsonLinesConnector;
use email2sms_dispatch::jobs::{DispatchSettings, Dispatcher, Outcome, Retry};
use email2sms_dispatch::throttle::{Decision, Limits, Rate, Scope, Throttle};
use support::{database, job, job_state};

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Keys of their own, so parallel tests never share a bucket.
fn prefix() -> String {
    format!("test.{}:", uuid::Uuid::new_v4().simple())
}

fn rate(text: &str) -> Rate {
    Rate::parse(text).unwrap()
}

fn limits(user: &str, company: &str, connector: &str) -> Limits {
    Limits {
        per_user: rate(user),
        per_company: rate(company),
        per_connector: rate(connector),
    }
}

#[tokio::test]
async fn a_bucket_allows_its_burst_then_refills_with_time() {
    let throttle = Throttle::new(&redis_url(), &prefix(), limits("2/s", "0", "0")).unwrap();
    let t0 = 1_000_000;
    assert_eq!(
        throttle.acquire_at("u1", "c", "smpp", Some(t0)).await,
        Decision::Send
    );
    assert_eq!(
        throttle.acquire_at("u1", "c", "smpp", Some(t0)).await,
        Decision::Send
    );
    assert_eq!(
        throttle.acquire_at("u1", "c", "smpp", Some(t0)).await,
        Decision::Wait {
            scope: Scope::User,
            wait: Duration::from_millis(500)
        }
    );
    // Another user has a bucket of its own.
    assert_eq!(
        throttle.acquire_at("u2", "c", "smpp", Some(t0)).await,
        Decision::Send
    );
    // Half a second later one token is back, and only one.
    assert_eq!(
        throttle.acquire_at("u1", "c", "smpp", Some(t0 + 500)).await,
        Decision::Send
    );
    assert!(matches!(
        throttle.acquire_at("u1", "c", "smpp", Some(t0 + 500)).await,
        Decision::Wait {
            scope: Scope::User,
            ..
        }
    ));
    // A long pause refills up to the burst, not beyond.
    let later = t0 + 60_000;
    for _ in 0..2 {
        assert_eq!(
            throttle.acquire_at("u1", "c", "smpp", Some(later)).await,
            Decision::Send
        );
    }
    assert!(matches!(
        throttle.acquire_at("u1", "c", "smpp", Some(later)).await,
        Decision::Wait { .. }
    ));
}

#[tokio::test]
async fn a_refusal_by_one_bucket_takes_no_token_from_the_others() {
    let throttle =
        Throttle::new(&redis_url(), &prefix(), limits("1/min", "2/min", "3/min")).unwrap();
    let t0 = 5_000_000;
    assert_eq!(
        throttle.acquire_at("a", "acme", "smpp", Some(t0)).await,
        Decision::Send
    );
    assert_eq!(
        throttle.acquire_at("b", "acme", "smpp", Some(t0)).await,
        Decision::Send
    );
    // The company's two tokens are gone; user c is refused by the company...
    assert_eq!(
        throttle.acquire_at("c", "acme", "smpp", Some(t0)).await,
        Decision::Wait {
            scope: Scope::Company,
            wait: Duration::from_secs(30)
        }
    );
    // ...without spending its own token or the connector's: in another company it still sends,
    // taking the connector's last token.
    assert_eq!(
        throttle.acquire_at("c", "other", "smpp", Some(t0)).await,
        Decision::Send
    );
    assert!(matches!(
        throttle.acquire_at("d", "third", "smpp", Some(t0)).await,
        Decision::Wait {
            scope: Scope::Connector,
            ..
        }
    ));
}

#[tokio::test]
async fn replicas_share_the_buckets() {
    let shared = prefix();
    let one = Throttle::new(&redis_url(), &shared, limits("3/min", "0", "0")).unwrap();
    let two = Throttle::new(&redis_url(), &shared, limits("3/min", "0", "0")).unwrap();
    let t0 = 9_000_000;
    assert_eq!(
        one.acquire_at("u", "c", "smpp", Some(t0)).await,
        Decision::Send
    );
    assert_eq!(
        two.acquire_at("u", "c", "smpp", Some(t0)).await,
        Decision::Send
    );
    assert_eq!(
        one.acquire_at("u", "c", "smpp", Some(t0)).await,
        Decision::Send
    );
    assert!(matches!(
        two.acquire_at("u", "c", "smpp", Some(t0)).await,
        Decision::Wait { .. }
    ));
    // Redis' own clock when none is given.
    let three = Throttle::new(&redis_url(), &prefix(), limits("1/h", "0", "0")).unwrap();
    assert_eq!(three.acquire("u", "c", "smpp").await, Decision::Send);
    assert!(matches!(
        three.acquire("u", "c", "smpp").await,
        Decision::Wait { .. }
    ));
}

#[tokio::test]
async fn with_redis_down_jobs_are_sent_without_throttling_and_without_delay() {
    // Nothing listens on port 1: connecting fails at once. (A Redis that accepts but never
    // answers is cut off by the 250 ms timeout instead.)
    let throttle = Throttle::new(
        "redis://127.0.0.1:1",
        &prefix(),
        limits("1/h", "1/h", "1/h"),
    )
    .unwrap();
    let started = std::time::Instant::now();
    for _ in 0..20 {
        assert_eq!(throttle.acquire("u", "c", "smpp").await, Decision::Send);
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "reconnects are rate-limited, so a dead Redis adds no latency per job: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_silent_redis_is_cut_off_by_the_timeout() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let throttle = Throttle::new(
        &format!("redis://127.0.0.1:{port}"),
        &prefix(),
        limits("1/h", "0", "0"),
    )
    .unwrap();
    let started = std::time::Instant::now();
    for _ in 0..5 {
        assert_eq!(throttle.acquire("u", "c", "smpp").await, Decision::Send);
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_throttled_job_stays_queued_unsent_and_uncounted() {
    let (_db, pool) = database().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sms.jsonl");
    let connector = JsonLinesConnector::file(&path).await.unwrap();
    let throttle = Throttle::new(&redis_url(), &prefix(), limits("1/h", "0", "0")).unwrap();
    let dispatcher = Dispatcher::new(
        pool.clone(),
        Arc::new(connector),
        DispatchSettings::default(),
    )
    .with_throttle(Arc::new(throttle));

    let first = job("+64211234567", "first");
    let second = job("+64211234568", "second");
    assert_eq!(dispatcher.process_job(first.clone()).await, Outcome::Done);
    let Outcome::RetryLater(Retry {
        throttled,
        attempts,
        reason,
    }) = dispatcher.process_job(second.clone()).await
    else {
        panic!("the second job of the hour waits");
    };
    assert!(throttled);
    assert_eq!(attempts, 0, "a wait is not a failed attempt");
    assert!(reason.contains("forwarding user"), "{reason}");
    assert_eq!(job_state(&pool, &second.job_id).await, "queued");
    let (kind, attempts): (Option<String>, i32) =
        sqlx::query_as("SELECT failure_kind, attempts FROM sms_jobs WHERE job_id = $1::uuid")
            .bind(&second.job_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(kind.as_deref(), Some("throttled"));
    assert_eq!(attempts, 0);
    let sent = std::fs::read_to_string(&path).unwrap();
    assert_eq!(sent.lines().count(), 1, "only the first was sent");
    // A redelivery of the job already sent takes no token and is not sent again.
    assert_eq!(dispatcher.process_job(first).await, Outcome::Done);
}
