//! ingest's `readiness` tells the truth about what it needs to decide: Redis, or the policy
//! service when Redis cannot answer. Both gone: NOT_SERVING (while `liveness` stays SERVING, so
//! Kubernetes takes the pod out of the Service instead of restarting it); either back: SERVING.
//! The real binaries, a private Redis the test can kill, and a real policy service.

use std::time::Duration;

use email2sms_e2e::cluster::bin_dir;
use email2sms_e2e::private_redis::PrivateRedis;
use email2sms_testkit::{LIVENESS, READINESS, ServiceProcess, TestDb, channel, health};
use tonic_health::ServingStatus;

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Probes run every 2 s, each bounded by 1.5 s: a change shows within two rounds.
const NOTICED: Duration = Duration::from_secs(10);

async fn becomes(process: &ServiceProcess, wanted: ServingStatus, what: &str) {
    let addr = process.grpc_addr;
    let seen = tokio::time::timeout(NOTICED, async {
        loop {
            if health(channel(addr).await, READINESS).await == wanted {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        seen.is_ok(),
        "waited {NOTICED:?} for {what}; ingest's log:\n{}",
        process.stderr()
    );
    assert_eq!(
        health(channel(addr).await, LIVENESS).await,
        ServingStatus::Serving,
        "liveness stays SERVING ({what})"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

#[tokio::test]
async fn ingest_is_ready_while_redis_or_the_policy_service_answers() {
    let mut redis = PrivateRedis::start().await;
    let redis_url = redis.url();
    let policy_addr = format!("127.0.0.1:{}", free_port());
    let policy_url = format!("http://{policy_addr}");
    let ingest = ServiceProcess::spawn_announcing(
        &bin_dir().join("email2sms-ingest"),
        &[
            ("EMAIL2SMS_INSECURE_NO_AUTH", "1"),
            ("EMAIL2SMS_INGEST_GRPC_ADDR", "127.0.0.1:0"),
            ("EMAIL2SMS_INGEST_SMTP_ADDR", "127.0.0.1:0"),
            ("EMAIL2SMS_SMS_DOMAINS", "sms.example.net"),
            ("REDIS_URL", &redis_url),
            ("EMAIL2SMS_POLICY_URL", &policy_url),
            ("AMQP_URL", AMQP_URL),
        ],
        &["grpc", "smtp"],
    )
    .await;
    becomes(&ingest, ServingStatus::Serving, "ready with Redis").await;

    redis.stop().await;
    becomes(
        &ingest,
        ServingStatus::NotServing,
        "not ready with neither Redis nor the policy service",
    )
    .await;

    // The policy service comes up where ingest expects it: decisions can be made again.
    let db = TestDb::create().await;
    let prefix = format!(
        "email2sms-test-readiness-{}:",
        uuid::Uuid::new_v4().simple()
    );
    let mut policy = ServiceProcess::spawn(
        &bin_dir().join("email2sms-policy"),
        &[
            ("EMAIL2SMS_INSECURE_NO_AUTH", "1"),
            ("EMAIL2SMS_POLICY_GRPC_ADDR", &policy_addr),
            ("DATABASE_URL", &db.url),
            ("EMAIL2SMS_MIGRATE", "true"),
            ("REDIS_URL", "redis://127.0.0.1:6379"),
            ("EMAIL2SMS_REDIS_PREFIX", &prefix),
            ("AMQP_URL", AMQP_URL),
        ],
    )
    .await;
    becomes(
        &ingest,
        ServingStatus::Serving,
        "ready through the policy service",
    )
    .await;

    policy.terminate();
    let status = policy.wait(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "{}", policy.stderr());
    becomes(
        &ingest,
        ServingStatus::NotServing,
        "not ready once the policy service is gone too",
    )
    .await;

    redis.resume().await;
    becomes(
        &ingest,
        ServingStatus::Serving,
        "ready again with Redis back",
    )
    .await;
}
