//! Shared set-up: a migrated database of its own, an NSD server of its own, and a verifier with
//! short DNS timeouts pointed at it.
#![allow(dead_code)]

use chrono::{DateTime, SubsecRound, Utc};
use clap::Parser;
use email2sms_domain::DomainName;
use email2sms_proto::prost::Message;
use email2sms_proto::queue::v1::DomainVerificationChanged;
use email2sms_proto::tonic::transport::Channel;
use email2sms_proto::verification::v1::verification_service_client::VerificationServiceClient;
use email2sms_proto::verification::v1::{GetStatusRequest, GetStatusResponse};
use email2sms_runtime::db;
use email2sms_testkit::TestDb;
use email2sms_testkit::dns::DnsServer;
use email2sms_verification::engine::{ChallengeKey, Verifier};
use email2sms_verification::model::{ChallengeRow, State};
use email2sms_verification::scheduler::Scheduler;
use email2sms_verification::{Config, MIGRATOR, SCHEMA};
use sqlx::PgPool;
use uuid::Uuid;

pub const COMPANY_A: Uuid = Uuid::from_u128(0xa1);
pub const COMPANY_B: Uuid = Uuid::from_u128(0xb2);

pub struct World {
    pub db: TestDb,
    pub pool: PgPool,
    pub dns: DnsServer,
    pub config: Config,
    pub verifier: Verifier,
}

/// Settings for tests: DNS answers from the local NSD come in microseconds, so a short timeout
/// keeps the "server stopped" cases fast. `extra` are more flags.
pub fn config(dns: &DnsServer, extra: &[&str]) -> Config {
    let addr = dns.addr().to_string();
    let defaults = [
        ("--dns-servers", addr.as_str()),
        ("--dns-timeout", "300ms"),
        ("--dns-attempts", "1"),
        ("--lease", "10s"),
    ];
    let mut args = vec!["email2sms-verification", "--insecure-no-auth"];
    for (flag, value) in defaults {
        if !extra.contains(&flag) {
            args.extend([flag, value]);
        }
    }
    args.extend_from_slice(extra);
    let config = Config::try_parse_from(args).expect("test configuration");
    email2sms_runtime::service::ServiceConfig::validate(&config).expect("valid test configuration");
    config
}

pub async fn world(extra: &[&str]) -> World {
    let db = TestDb::unique();
    db::migrate(&db.url, SCHEMA, &MIGRATOR)
        .await
        .expect("migrate");
    let pool = db::connect(&db.url, SCHEMA, 8).await.expect("connect");
    let dns = DnsServer::start().await;
    let config = config(&dns, extra);
    let verifier = email2sms_verification::verifier(&config, pool.clone()).expect("verifier");
    World {
        db,
        pool,
        dns,
        config,
        verifier,
    }
}

pub fn key(company: Uuid, domain: &str) -> ChallengeKey {
    ChallengeKey {
        company_id: company,
        domain: DomainName::parse(domain).unwrap(),
    }
}

/// The TXT record line publishing `challenge`'s token at the zone apex.
pub fn token_record(challenge: &ChallengeRow) -> String {
    format!("@ TXT \"email2sms-verification={}\"", challenge.token)
}

/// Every `domain.verification.changed` event written so far, oldest first.
pub async fn events(pool: &PgPool) -> Vec<DomainVerificationChanged> {
    let rows: Vec<(String, Vec<u8>, Uuid)> = sqlx::query_as(
        "SELECT routing_key, payload, message_id FROM outbox_events ORDER BY outbox_id, position",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(routing_key, payload, message_id)| {
            assert_eq!(routing_key, "domain.verification.changed");
            let event = DomainVerificationChanged::decode(payload.as_slice()).unwrap();
            assert_eq!(event.event_id, message_id.to_string());
            event
        })
        .collect()
}

pub fn seconds(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

/// The current time at the database's precision (microseconds), so that times read back compare
/// equal to the ones given.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Asks GetStatus for `domain_name` of `company_id` every 50 ms until `done` accepts the answer,
/// and returns that answer; `Err` when `within` passes first.
pub async fn wait_for_status(
    client: &mut VerificationServiceClient<Channel>,
    company_id: &str,
    domain_name: &str,
    within: std::time::Duration,
    mut done: impl FnMut(&GetStatusResponse) -> bool,
) -> Result<GetStatusResponse, tokio::time::error::Elapsed> {
    tokio::time::timeout(within, async {
        loop {
            let status = client
                .get_status(GetStatusRequest {
                    company_id: company_id.into(),
                    domain_name: domain_name.into(),
                    check_history_limit: 0,
                })
                .await
                .unwrap()
                .into_inner();
            if done(&status) {
                return status;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
}

/// Runs `scheduler`'s rounds for the challenge of `key`, the first at `start` and each next one
/// when the challenge is due again, while the challenge stays in `state`. Returns the rounds that
/// kept it there and then the round that moved it on, each as the time it ran at and the
/// challenge as it left it.
pub async fn rounds_while(
    world: &World,
    scheduler: &Scheduler,
    key: &ChallengeKey,
    state: State,
    start: DateTime<Utc>,
) -> (
    Vec<(DateTime<Utc>, ChallengeRow)>,
    (DateTime<Utc>, ChallengeRow),
) {
    let mut rounds = Vec::new();
    let mut at = start;
    loop {
        scheduler.run_round(at).await.unwrap();
        let row = world.verifier.find(key).await.unwrap();
        if row.state() != state {
            return (rounds, (at, row));
        }
        assert!(rounds.len() < 100, "still {state:?} after 100 rounds");
        let next = row.next_check_at.expect("still scheduled");
        rounds.push((at, row));
        at = next;
    }
}
