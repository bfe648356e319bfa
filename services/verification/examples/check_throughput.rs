//! Benchmark: the scheduler checking 10,000 pending domains against a local NSD.
//!
//! Reports checks per second and the most DNS queries that were ever in flight at once, counted
//! by a UDP relay in front of NSD (NSD itself cannot tell), which must never exceed the
//! configured scheduler concurrency.
//!
//! ```sh
//! cargo run -p email2sms-verification --example check_throughput [DOMAINS] [CONCURRENCY]
//! ```
//! Needs PostgreSQL (as for the tests) and NSD (`scripts/ensure-tools`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use chrono::Utc;
use clap::Parser;
use email2sms_runtime::db;
use email2sms_testkit::TestDb;
use email2sms_testkit::dns::DnsServer;
use email2sms_verification::scheduler::Scheduler;
use email2sms_verification::{Config, MIGRATOR, SCHEMA};
use tokio::net::UdpSocket;

/// Queries in flight through the relay now, and the most ever.
#[derive(Debug, Default)]
struct InFlight {
    now: AtomicUsize,
    max: AtomicUsize,
    total: AtomicUsize,
}

/// Relays every datagram to `upstream` from a socket of its own and the answer back, counting
/// the queries that are waiting for an answer.
async fn counting_relay(upstream: SocketAddr, counts: Arc<InFlight>) -> SocketAddr {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind relay"));
    let addr = front.local_addr().expect("relay address");
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((len, client)) = front.recv_from(&mut buf).await else {
                return;
            };
            let query = buf[..len].to_vec();
            let front = front.clone();
            let counts = counts.clone();
            tokio::spawn(async move {
                let now = counts.now.fetch_add(1, Ordering::SeqCst) + 1;
                counts.max.fetch_max(now, Ordering::SeqCst);
                counts.total.fetch_add(1, Ordering::SeqCst);
                let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind upstream");
                let mut answer = vec![0u8; 4096];
                let relayed = async {
                    socket.send_to(&query, upstream).await.ok()?;
                    socket.recv(&mut answer).await.ok()
                };
                let len = tokio::time::timeout(std::time::Duration::from_secs(5), relayed)
                    .await
                    .ok()
                    .flatten();
                counts.now.fetch_sub(1, Ordering::SeqCst);
                if let Some(len) = len {
                    let _ = front.send_to(&answer[..len], client).await;
                }
            });
        }
    });
    addr
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let domains: usize = args.next().map_or(10_000, |a| a.parse().expect("DOMAINS"));
    let concurrency: usize = args.next().map_or(32, |a| a.parse().expect("CONCURRENCY"));

    let mut dns = DnsServer::start().await;
    // Every name answers with a TXT record that is not a token: a full mismatch check each time.
    dns.set_zone("bench.example", "* TXT \"v=spf1 -all\"").await;
    let counts = Arc::new(InFlight::default());
    let relay = counting_relay(dns.addr(), counts.clone()).await;

    let test_db = TestDb::unique();
    db::migrate(&test_db.url, SCHEMA, &MIGRATOR)
        .await
        .expect("migrate");
    let pool = db::connect(&test_db.url, SCHEMA, 16)
        .await
        .expect("connect");
    let relay_text = relay.to_string();
    let concurrency_text = concurrency.to_string();
    let config = Config::try_parse_from([
        "email2sms-verification",
        "--insecure-no-auth",
        "--dns-servers",
        &relay_text,
        "--dns-timeout",
        "2s",
        "--concurrency",
        &concurrency_text,
        "--batch-size",
        "1000",
        "--lease",
        "1h",
    ])
    .expect("configuration");
    let t0 = Utc::now();
    sqlx::query(
        "INSERT INTO challenges (company_id, domain, token, created_at, pending_since, next_check_at) \
         SELECT gen_random_uuid(), 'd' || n || '.bench.example', md5(random()::text), $1, $1, $1 \
         FROM generate_series(1, $2) AS n",
    )
    .bind(t0)
    .bind(domains as i64)
    .execute(&pool)
    .await
    .expect("insert challenges");

    let verifier = email2sms_verification::verifier(&config, pool.clone()).expect("verifier");
    let scheduler = Scheduler::new(verifier, &config.verification, "bench");
    let started = Instant::now();
    let mut checked = 0;
    loop {
        let round = scheduler.run_round(t0).await.expect("round");
        if round.claimed == 0 {
            break;
        }
        checked += round.applied;
    }
    let elapsed = started.elapsed();
    let timeouts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM checks WHERE outcome <> 'wrong_value'")
            .fetch_one(&pool)
            .await
            .expect("count");
    println!(
        "{checked} checks of {domains} pending domains in {:.2}s: {:.0} checks/s; concurrency limit {concurrency}, most queries in flight at NSD {}, queries sent {}, checks not answered as expected {timeouts}",
        elapsed.as_secs_f64(),
        checked as f64 / elapsed.as_secs_f64(),
        counts.max.load(Ordering::SeqCst),
        counts.total.load(Ordering::SeqCst),
    );
    pool.close().await;
}
