//! Benchmark of sender resolution straight from Postgres (`ResolveSender`) and of the full Redis
//! cache rebuild (`RebuildCache`), on a data set of the size the issue names.
//!
//! ```text
//! cargo run --release -p email2sms-policy --example resolve_bench             # 1M / 100k / 10k
//! cargo run --release -p email2sms-policy --example resolve_bench -- --small  # smoke run
//! ```
//!
//! What it does:
//!
//! 1. creates a fresh database of its own (the test kit's `TestDb`, dropped at the end) and
//!    applies the service's real migrations;
//! 2. bulk-loads companies, Messenger users, security policies, email addresses, domains and IP
//!    networks with set-based `INSERT … SELECT … FROM generate_series` through the real schema
//!    (every CHECK, unique index, foreign key and the cross-company exclusion constraint apply),
//!    with normalised values, a skewed company size distribution, some disabled and deleted
//!    addresses, some pending domains, some inactive forwarding users and some suspended
//!    companies, then `VACUUM ANALYZE`s as autovacuum would have;
//! 3. prints `EXPLAIN ANALYZE` of the two statements `ResolveSender` runs (locate the matching
//!    entry, for an email hit, a domain hit, an IP hit and no match; then read the entry of each
//!    kind), each as a custom and as a generic plan;
//! 4. calls the real `ResolveSender` handler in-process (the `SenderResolutionService` trait
//!    method the gRPC server dispatches to, without the network hop) for a mix of email hits,
//!    disabled/deleted emails, domain hits, pending/unknown domains falling back to IP hits and
//!    complete misses, checks every answer against what the data says it must be, and prints the
//!    latency percentiles;
//! 5. runs the real `RebuildCache` handler into an empty Redis (under a key prefix of its own),
//!    again with every key present, and for the largest company alone; compares a sample of
//!    Redis answers with Postgres; then deletes its keys and the database.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use clap::Parser;
use email2sms_domain::EmailAddress;
use email2sms_policy::entries::EntryKind;
use email2sms_policy::resolve::{entry_sql, locate_sql};
use email2sms_policy::{Cache, MIGRATOR, SCHEMA, SenderResolutionApi};
use email2sms_proto::policy::v1 as pb;
use email2sms_proto::policy::v1::sender_resolution_service_server::SenderResolutionService;
use email2sms_proto::tonic::Request;
use email2sms_runtime::db;
use email2sms_testkit::TestDb;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::PgPool;

#[derive(Debug, Parser)]
#[command(about = "ResolveSender (from Postgres) latency and RebuildCache duration")]
struct Args {
    /// Email address entries.
    #[arg(long, default_value_t = 1_000_000)]
    emails: u32,
    /// Domain entries (90% verified, 10% pending).
    #[arg(long, default_value_t = 100_000)]
    domains: u32,
    /// IP/CIDR entries (IPv4 /24, /26, /28, /32 and IPv6 /48, none overlapping).
    #[arg(long, default_value_t = 10_000)]
    cidrs: u32,
    /// Companies; entries are spread over them with a skew (a few large ones, many small).
    #[arg(long, default_value_t = 5_000)]
    companies: u32,
    /// Messenger users per company (the last one inactive).
    #[arg(long, default_value_t = 10)]
    users_per_company: u32,
    /// Timed lookups (after a warm-up of a tenth of them, at least 200).
    #[arg(long, default_value_t = 20_000)]
    lookups: u32,
    /// Lookups in flight at once (1 = pure latency).
    #[arg(long, default_value_t = 1)]
    concurrency: u32,
    /// Postgres connections in the pool the handlers use.
    #[arg(long, default_value_t = 8)]
    pool_size: u32,
    /// A quick smoke run: 20,000 emails, 2,000 domains, 200 CIDRs, 200 companies, 2,000 lookups.
    #[arg(long)]
    small: bool,
    /// Skip the Redis rebuild part.
    #[arg(long)]
    skip_rebuild: bool,
    /// Skip the EXPLAIN ANALYZE output.
    #[arg(long)]
    no_explain: bool,
    /// Leave the database in place (its name is printed) for further EXPLAINs; stops after the
    /// load.
    #[arg(long)]
    keep_database: bool,
    /// Seed of the lookup mix.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Redis to rebuild into (a key prefix of the run's own is used and removed afterwards).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
}

impl Args {
    fn apply_small(&mut self) {
        if self.small {
            self.emails = 20_000;
            self.domains = 2_000;
            self.cidrs = 200;
            self.companies = 200;
            self.lookups = 2_000;
        }
    }
}

#[tokio::main]
async fn main() {
    let mut args = Args::parse();
    args.apply_small();
    assert!(args.companies >= 1 && args.domains >= 1 && args.users_per_company >= 2);
    assert!(
        args.cidrs <= 60_000,
        "the IPv4 layout has room for 60,000 networks"
    );

    println!(
        "data set: {} emails, {} domains, {} CIDRs, {} companies x {} users",
        args.emails, args.domains, args.cidrs, args.companies, args.users_per_company
    );
    println!(
        "machine: {} cores, load average {}",
        std::thread::available_parallelism().map_or(0, usize::from),
        load_average()
    );
    let db = TestDb::unique();
    println!("database: {}", db.name);
    let started = Instant::now();
    db::migrate(&db.url, SCHEMA, &MIGRATOR)
        .await
        .expect("migrate");
    let pool = db::connect(&db.url, SCHEMA, args.pool_size)
        .await
        .expect("connect");
    load(&pool, &args).await;
    println!("loaded in {:.1?}", started.elapsed());

    if args.keep_database {
        println!(
            "kept database {} (drop it with: DROP DATABASE {})",
            db.name, db.name
        );
        std::mem::forget(db);
        return;
    }
    if !args.no_explain {
        explain(&pool, &args).await;
    }

    let prefix = format!("email2sms-bench-{}:", uuid::Uuid::new_v4().simple());
    let cache = Cache::new(&args.redis_url, &prefix).expect("redis client");
    let api = SenderResolutionApi::new(pool.clone(), cache.clone());
    resolve_benchmark(&api, &args).await;

    if !args.skip_rebuild {
        let outcome = rebuild_benchmark(&api, &cache, &pool, &args).await;
        delete_prefix(&args.redis_url, &prefix).await;
        if let Err(message) = outcome {
            panic!("{message}");
        }
    }
    pool.close().await;
    drop(db);
    println!(
        "database dropped; total {:.1?}; load average {}",
        started.elapsed(),
        load_average()
    );
}

/// The 1, 5 and 15 minute load averages (Linux), to judge how busy the machine was.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "unknown".to_owned(),
        |s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    )
}

// ---------------------------------------------------------------------------------------------
// Data set
// ---------------------------------------------------------------------------------------------

/// `hash01(expr)`: a deterministic pseudo-random number in [0, 1) from an integer expression.
fn hash01(expr: &str) -> String {
    format!("((hashint8(({expr})::bigint) & 2147483647)::float8 / 2147483648.0)")
}

/// The company (0-based) that owns entry `i` of a kind: skewed, company 0 the largest.
fn company_of(i: &str, salt: u32, companies: u32) -> String {
    format!(
        "least({companies} - 1, floor({companies} * power({}, 2)))::int",
        hash01(&format!("{i} * 7 + {salt}"))
    )
}

fn company_id(c: &str) -> String {
    format!("md5('company:' || ({c}))::uuid")
}

fn user_id(c: &str, u: &str) -> String {
    format!("md5('user:' || ({c}) || ':' || ({u}))::uuid")
}

fn policy_id(c: &str, kind: &str) -> String {
    format!("md5('policy:' || ({c}) || ':' || {kind})::uuid")
}

/// Domain `d`'s name (what the lookups use too).
fn domain_name(d: u32) -> String {
    format!("corp{d}.example.com")
}

/// Email `i`'s address: at one of the domains, as imports usually are.
fn email_address(i: u32, domains: u32) -> String {
    format!("user{i}@{}", domain_name(i % domains))
}

/// Email entries `i % 100 == 97` are disabled, `== 98` deleted: neither matches.
fn email_matchable(i: u32) -> bool {
    !matches!(i % 100, 97 | 98)
}

/// Domains `d % 10 == 9` are pending (not verified): they match nothing.
fn domain_verified(d: u32) -> bool {
    d % 10 != 9
}

/// Network `n`: mostly IPv4 (one disjoint /24 block each, the entry a /24, /26, /28 or /32 of it),
/// every 20th an IPv6 /48. Returns (SQL expression, an address inside it).
fn network_sql(n: &str) -> String {
    format!(
        "CASE WHEN ({n}) % 20 = 0 \
              THEN network(('2001:db8:' || to_hex({n}) || '::/48')::inet) \
              ELSE network(('10.' || (({n}) / 256) || '.' || (({n}) % 256) || '.' \
                   || (ARRAY[0, 64, 16, 1])[({n}) % 4 + 1] || '/' \
                   || (ARRAY[24, 26, 28, 32])[({n}) % 4 + 1])::inet) END"
    )
}

fn address_in_network(n: u32, rng: &mut StdRng) -> IpAddr {
    if n.is_multiple_of(20) {
        let n = u16::try_from(n).expect("at most 60,000 networks");
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0x0db8,
            n,
            rng.random(),
            rng.random(),
            rng.random(),
            rng.random(),
            rng.random(),
        ))
    } else {
        let (a, b) = (
            u8::try_from(n / 256).expect("< 65,536"),
            u8::try_from(n % 256).expect("< 256"),
        );
        let host = match n % 4 {
            0 => rng.random::<u8>(),
            1 => 64 + rng.random_range(0..64),
            2 => 16 + rng.random_range(0..16),
            _ => 1,
        };
        IpAddr::V4(Ipv4Addr::new(10, a, b, host))
    }
}

/// An address no network covers.
fn address_outside(rng: &mut StdRng) -> IpAddr {
    if rng.random_bool(0.8) {
        IpAddr::V4(Ipv4Addr::new(
            172,
            16 + rng.random_range(0..16),
            rng.random(),
            rng.random(),
        ))
    } else {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0x0db9,
            rng.random(),
            rng.random(),
            0,
            0,
            0,
            rng.random(),
        ))
    }
}

async fn step(pool: &PgPool, what: &str, sql: &str) {
    let started = Instant::now();
    let done = sqlx::raw_sql(sql)
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}\n{sql}"));
    println!(
        "  {what}: {} rows in {:.1?}",
        done.rows_affected(),
        started.elapsed()
    );
}

async fn load(pool: &PgPool, args: &Args) {
    let c = args.companies;
    let u = args.users_per_company;
    step(
        pool,
        "companies",
        &format!(
            "INSERT INTO companies (id, external_id, name, admin_emails, default_region, \
                                    max_sms_parts, over_limit, suspended)
             SELECT {id}, CASE WHEN c % 3 = 0 THEN 'msgr-' || c END, 'Company ' || c,
                    ARRAY['admin@company' || c || '.example'],
                    (ARRAY['NZ', 'AU', 'GB', 'US'])[c % 4 + 1], 10,
                    CASE WHEN c % 5 = 0 THEN 'reject' ELSE 'truncate' END,
                    c % 200 = 199
             FROM generate_series(0, {c} - 1) c",
            id = company_id("c"),
        ),
    )
    .await;
    step(
        pool,
        "messenger users",
        &format!(
            "INSERT INTO messenger_users (id, company_id, external_id, username, display_name,
                                          sender_id, active)
             SELECT {id}, {company}, 'ext-' || c || '-' || u, 'user' || u, 'User ' || u,
                    CASE WHEN u % 2 = 0 THEN 'Acme' || u END, u <> {last}
             FROM generate_series(0, {c} - 1) c, generate_series(0, {u} - 1) u",
            id = user_id("c", "u"),
            company = company_id("c"),
            last = u - 1,
        ),
    )
    .await;
    step(
        pool,
        "security policies",
        &format!(
            "INSERT INTO security_policies (id, company_id, name, sent_from, security_type,
                                            allowed_networks, default_forwarding_user_id, text_mode)
             SELECT {id}, {company}, 'Policy ' || k, k,
                    CASE k WHEN 'domain' THEN 'via_spf'
                           WHEN 'email_address' THEN (ARRAY['via_spf', 'by_google_mail', 'by_outlook'])[c % 3 + 1]
                           ELSE 'by_ip_addresses' END,
                    CASE WHEN k = 'ip_address'
                         THEN ARRAY['192.0.2.0/24'::cidr, ('198.51.100.' || (c % 256) || '/32')::cidr]
                         ELSE '{{}}'::cidr[] END,
                    {user0}, 'body_or_subject'
             FROM generate_series(0, {c} - 1) c,
                  unnest(ARRAY['domain', 'email_address', 'ip_address']) k",
            id = policy_id("c", "k"),
            company = company_id("c"),
            user0 = user_id("c", "0"),
        ),
    )
    .await;
    // Domains: 90% verified (with the token that proved them), 10% pending.
    let owner = company_of("d", 2, c);
    step(
        pool,
        "domains",
        &format!(
            "INSERT INTO domains (company_id, policy_id, name, forwarding_user_id, state, token,
                                  verified_at, txt_record_value)
             SELECT {company}, {policy}, 'corp' || d || '.example.com',
                    CASE WHEN d % 3 = 0 THEN NULL ELSE {user} END,
                    CASE WHEN d % 10 = 9 THEN 'pending' ELSE 'verified' END,
                    md5('token:' || d),
                    CASE WHEN d % 10 = 9 THEN NULL ELSE now() END,
                    'email2sms-verification=' || md5('token:' || d)
             FROM (SELECT d, {owner} AS c FROM generate_series(0, {n} - 1) d) s",
            n = args.domains,
            company = company_id("c"),
            policy = policy_id("c", "'domain'"),
            user = user_id("c", &format!("d % {u}")),
        ),
    )
    .await;
    // Emails, in chunks so that one statement's memory stays small.
    let owner = company_of("i", 1, c);
    let chunk = 250_000u32;
    let mut from = 0;
    while from < args.emails {
        let to = (from + chunk).min(args.emails);
        step(
            pool,
            &format!("email addresses {from}..{to}"),
            &format!(
                "INSERT INTO email_addresses (company_id, policy_id, address, forwarding_user_id,
                                              disabled, deleted_at)
                 SELECT {company}, {policy}, 'user' || i || '@corp' || (i % {d}) || '.example.com',
                        CASE WHEN i % 3 = 0 THEN NULL ELSE {user} END,
                        i % 100 = 97, CASE WHEN i % 100 = 98 THEN now() END
                 FROM (SELECT i, {owner} AS c FROM generate_series({from}, {to} - 1) i) s",
                d = args.domains,
                company = company_id("c"),
                policy = policy_id("c", "'email_address'"),
                user = user_id("c", &format!("i % {u}")),
            ),
        )
        .await;
        from = to;
    }
    let owner = company_of("n", 3, c);
    step(
        pool,
        "ip addresses",
        &format!(
            "INSERT INTO ip_addresses (company_id, policy_id, network, forwarding_user_id, description)
             SELECT {company}, {policy}, {network},
                    CASE WHEN n % 2 = 0 THEN NULL ELSE {user} END, 'mail server ' || n
             FROM (SELECT n, {owner} AS c FROM generate_series(0, {count} - 1) n) s",
            count = args.cidrs,
            company = company_id("c"),
            policy = policy_id("c", "'ip_address'"),
            network = network_sql("n"),
            user = user_id("c", &format!("n % {u}")),
        ),
    )
    .await;
    step(
        pool,
        "vacuum analyze",
        "VACUUM ANALYZE companies, messenger_users, security_policies, domains, email_addresses, \
         ip_addresses",
    )
    .await;
    let sizes: Vec<(String, String)> = sqlx::query_as(
        "SELECT relname::text, pg_size_pretty(pg_total_relation_size(oid))
         FROM pg_class WHERE relnamespace = 'policy'::regnamespace AND relkind = 'r'
           AND relname IN ('email_addresses', 'domains', 'ip_addresses')
         ORDER BY relname",
    )
    .fetch_all(pool)
    .await
    .expect("sizes");
    println!("  sizes (with indexes): {sizes:?}");
}

async fn explain(pool: &PgPool, args: &Args) {
    let hit = email_address(args.emails / 2 + 1, args.domains);
    let hit_domain = hit.split('@').nth(1).unwrap_or_default().to_owned();
    let verified = domain_name(args.domains / 2 + 1);
    let locate = [
        (
            "email hit",
            format!("'{hit}', '{hit_domain}', '172.16.1.1'"),
        ),
        (
            "domain hit",
            format!("'nobody@{verified}', '{verified}', '172.16.1.1'"),
        ),
        (
            "IP hit",
            "'staff@unknown.example.net', 'unknown.example.net', '10.0.4.77'".to_owned(),
        ),
        (
            "no match",
            "'nobody@nowhere.example.org', 'nowhere.example.org', '172.16.1.1'".to_owned(),
        ),
    ];
    for (name, arg) in locate {
        explain_one(pool, &format!("locate, {name}"), locate_sql(), &arg).await;
    }
    for (kind, table, condition) in [
        (
            EntryKind::Email,
            "email_addresses",
            format!("address = '{hit}'"),
        ),
        (EntryKind::Domain, "domains", format!("name = '{verified}'")),
        (
            EntryKind::Ip,
            "ip_addresses",
            "network >>= '10.0.4.77'".to_owned(),
        ),
    ] {
        let id: uuid::Uuid =
            sqlx::query_scalar(&format!("SELECT id FROM {table} WHERE {condition} LIMIT 1"))
                .fetch_one(pool)
                .await
                .expect("an entry to explain");
        explain_one(
            pool,
            &format!("entry, {table}"),
            entry_sql(kind),
            &format!("'{id}'"),
        )
        .await;
    }
}

/// EXPLAIN ANALYZE of a prepared `sql` executed with `arg`, as a custom and as a generic plan.
async fn explain_one(pool: &PgPool, name: &str, sql: &str, arg: &str) {
    // The session is changed (plan_cache_mode): the connection leaves the pool afterwards.
    let mut conn = pool.acquire().await.expect("connection").detach();
    for mode in ["force_custom_plan", "force_generic_plan"] {
        let script = format!(
            "SET plan_cache_mode = {mode}; PREPARE q AS {sql};
             EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE q({arg}); DEALLOCATE q;"
        );
        // raw_sql returns the rows of every statement; only EXPLAIN returns rows.
        let rows = sqlx::raw_sql(&script)
            .fetch_all(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("explain {name}: {e}"));
        println!("EXPLAIN ANALYZE of ResolveSender's {name} ({mode}):");
        for row in rows {
            let line: String = sqlx::Row::get(&row, 0);
            println!("    {line}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ResolveSender
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Case {
    /// An active, enabled email entry.
    EmailHit,
    /// A disabled or deleted email entry: falls through to its domain (or nothing).
    EmailUnmatchable,
    /// An unknown address at a verified domain.
    DomainHit,
    /// An address at a pending domain from a registered mail server: the IP entry.
    PendingDomainIpHit,
    /// An unknown domain from a registered mail server: the IP entry.
    UnknownDomainIpHit,
    /// An unknown domain from an unknown mail server: not authorised.
    Miss,
}

struct Lookup {
    case: Case,
    request: pb::ResolveSenderRequest,
    expect: pb::MatchKind,
}

fn lookups(args: &Args, count: u32, rng: &mut StdRng) -> Vec<Lookup> {
    let mut out = Vec::with_capacity(count as usize);
    let pick_email = |rng: &mut StdRng, matchable: bool| loop {
        let i = rng.random_range(0..args.emails);
        if email_matchable(i) == matchable {
            return i;
        }
    };
    let pick_domain = |rng: &mut StdRng, verified: bool| loop {
        let d = rng.random_range(0..args.domains);
        if domain_verified(d) == verified {
            return d;
        }
    };
    for _ in 0..count {
        let roll = rng.random_range(0..100);
        let case = match roll {
            0..45 if args.emails > 0 => Case::EmailHit,
            45..50 if args.emails > 0 => Case::EmailUnmatchable,
            0..70 => Case::DomainHit,
            70..80 if args.cidrs > 0 => Case::PendingDomainIpHit,
            80..90 if args.cidrs > 0 => Case::UnknownDomainIpHit,
            _ => Case::Miss,
        };
        let (from, ip, expect) = match case {
            Case::EmailHit => {
                let i = pick_email(rng, true);
                let mut from = email_address(i, args.domains);
                // Senders' mail programs do not keep the case: the handler normalises.
                if rng.random_bool(0.2) {
                    from = from.to_uppercase();
                }
                (from, address_outside(rng), pb::MatchKind::EmailAddress)
            }
            Case::EmailUnmatchable => {
                let i = pick_email(rng, false);
                let expect = if domain_verified(i % args.domains) {
                    pb::MatchKind::Domain
                } else {
                    pb::MatchKind::Unspecified
                };
                (email_address(i, args.domains), address_outside(rng), expect)
            }
            Case::DomainHit => {
                let d = pick_domain(rng, true);
                (
                    format!("someone.{}@{}", rng.random::<u32>(), domain_name(d)),
                    address_outside(rng),
                    pb::MatchKind::Domain,
                )
            }
            Case::PendingDomainIpHit => {
                let d = pick_domain(rng, false);
                let n = rng.random_range(0..args.cidrs);
                (
                    format!("staff{}@{}", rng.random::<u32>(), domain_name(d)),
                    address_in_network(n, rng),
                    pb::MatchKind::IpAddress,
                )
            }
            Case::UnknownDomainIpHit => {
                let n = rng.random_range(0..args.cidrs);
                (
                    format!("staff@unknown{}.example.net", rng.random::<u32>()),
                    address_in_network(n, rng),
                    pb::MatchKind::IpAddress,
                )
            }
            Case::Miss => (
                format!("nobody@nowhere{}.example.org", rng.random::<u32>()),
                address_outside(rng),
                pb::MatchKind::Unspecified,
            ),
        };
        // The stored form is what the domain library produces, or nothing would ever match.
        let parsed = EmailAddress::parse(&from).expect("a valid address");
        assert_eq!(parsed.as_str(), from.to_lowercase(), "normalised form");
        out.push(Lookup {
            case,
            request: pb::ResolveSenderRequest {
                from_address: from,
                client_ip: ip.to_string(),
            },
            expect,
        });
    }
    out
}

async fn resolve_one(api: &SenderResolutionApi, lookup: &Lookup) -> (Duration, bool) {
    let started = Instant::now();
    let response =
        SenderResolutionService::resolve_sender(api, Request::new(lookup.request.clone()))
            .await
            .expect("ResolveSender")
            .into_inner();
    let took = started.elapsed();
    let kind = response
        .sender
        .map_or(pb::MatchKind::Unspecified, |s| s.match_kind());
    (took, kind == lookup.expect)
}

async fn resolve_benchmark(api: &SenderResolutionApi, args: &Args) {
    let mut rng = StdRng::seed_from_u64(args.seed);
    let warmup = lookups(args, (args.lookups / 10).max(200), &mut rng);
    for lookup in &warmup {
        resolve_one(api, lookup).await;
    }
    let timed = lookups(args, args.lookups, &mut rng);
    let concurrency = args.concurrency.max(1) as usize;
    let started = Instant::now();
    let mut results: Vec<(Case, Duration, bool)> = Vec::with_capacity(timed.len());
    if concurrency == 1 {
        for lookup in &timed {
            let (took, ok) = resolve_one(api, lookup).await;
            results.push((lookup.case, took, ok));
        }
    } else {
        let timed = std::sync::Arc::new(timed);
        let mut tasks = Vec::new();
        for worker in 0..concurrency {
            let (api, timed) = (api.clone(), timed.clone());
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                for lookup in timed.iter().skip(worker).step_by(concurrency) {
                    let (took, ok) = resolve_one(&api, lookup).await;
                    out.push((lookup.case, took, ok));
                }
                out
            }));
        }
        for task in tasks {
            results.extend(task.await.expect("worker"));
        }
    }
    let wall = started.elapsed();
    let wrong = results.iter().filter(|r| !r.2).count();
    println!("\n(load average after the lookups: {})", load_average());
    println!(
        "\nResolveSender from Postgres (in-process handler call, no gRPC transport), {} lookups, \
         concurrency {concurrency}, pool {}: {:.0} lookups/s, {wrong} unexpected answers",
        results.len(),
        args.pool_size,
        results.len() as f64 / wall.as_secs_f64(),
    );
    let all: Vec<Duration> = results.iter().map(|r| r.1).collect();
    print_percentiles("all", all);
    let mut by_case: BTreeMap<Case, Vec<Duration>> = BTreeMap::new();
    for (case, took, _) in &results {
        by_case.entry(*case).or_default().push(*took);
    }
    for (case, durations) in by_case {
        print_percentiles(&format!("{case:?}"), durations);
    }
    assert_eq!(
        wrong, 0,
        "ResolveSender answered differently from the data set"
    );
}

fn print_percentiles(label: &str, mut durations: Vec<Duration>) {
    durations.sort_unstable();
    let at = |q: f64| {
        let index = ((durations.len() as f64 * q).ceil() as usize).clamp(1, durations.len()) - 1;
        durations[index].as_secs_f64() * 1000.0
    };
    println!(
        "  {label:<20} n={:<6} p50={:.3} ms  p90={:.3} ms  p99={:.3} ms  max={:.3} ms",
        durations.len(),
        at(0.50),
        at(0.90),
        at(0.99),
        at(1.0),
    );
}

// ---------------------------------------------------------------------------------------------
// RebuildCache
// ---------------------------------------------------------------------------------------------

async fn rebuild_once(api: &SenderResolutionApi, label: &str, company_id: String) {
    let started = Instant::now();
    let response = SenderResolutionService::rebuild_cache(
        api,
        Request::new(pb::RebuildCacheRequest { company_id }),
    )
    .await
    .expect("RebuildCache")
    .into_inner();
    println!(
        "  {label:<40} {:>8.2} s  keys written {}, removed {}, version {}",
        started.elapsed().as_secs_f64(),
        response.keys_written,
        response.keys_removed,
        response.version,
    );
}

async fn rebuild_benchmark(
    api: &SenderResolutionApi,
    cache: &Cache,
    pool: &PgPool,
    args: &Args,
) -> Result<(), String> {
    println!(
        "\nRebuildCache (in-process handler call) into Redis under prefix {}",
        cache.prefix()
    );
    rebuild_once(api, "full rebuild, empty Redis", String::new()).await;
    rebuild_once(api, "full rebuild, every key present", String::new()).await;
    let largest: String = sqlx::query_scalar(
        "SELECT coalesce(c.external_id, c.id::text) FROM companies c
         JOIN email_addresses e ON e.company_id = c.id
         GROUP BY c.id ORDER BY count(*) DESC LIMIT 1",
    )
    .fetch_one(pool)
    .await
    .map_err(|e| e.to_string())?;
    let entries: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM email_addresses e JOIN companies c ON c.id = e.company_id
                 WHERE coalesce(c.external_id, c.id::text) = $1)",
    )
    .bind(&largest)
    .fetch_one(pool)
    .await
    .map_err(|e| e.to_string())?;
    rebuild_once(
        api,
        &format!("largest company only ({entries} emails)"),
        largest,
    )
    .await;

    // Redis must answer exactly what Postgres answers.
    let mut rng = StdRng::seed_from_u64(args.seed + 1);
    let sample = lookups(args, 300, &mut rng);
    let mut differences = 0;
    for lookup in &sample {
        let from = EmailAddress::parse(&lookup.request.from_address).map_err(|e| e.to_string())?;
        let ip: IpAddr = lookup.request.client_ip.parse().map_err(|_| "ip")?;
        let redis = cache
            .resolve_from_redis(&from, ip)
            .await
            .map_err(|e| e.to_string())?;
        let postgres = email2sms_policy::resolve::resolve_sender(pool, &from, ip)
            .await
            .map_err(|e| e.to_string())?;
        if redis != postgres {
            differences += 1;
        }
    }
    println!(
        "  Redis vs Postgres on {} sample lookups: {differences} differences",
        sample.len()
    );
    if differences > 0 {
        return Err(format!(
            "{differences} lookups differ between Redis and Postgres"
        ));
    }
    Ok(())
}

/// Deletes every key under `prefix` (and nothing else).
async fn delete_prefix(redis_url: &str, prefix: &str) {
    let client = redis::Client::open(redis_url).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let mut cursor: u64 = 0;
    let mut deleted = 0usize;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(10_000)
            .query_async(&mut conn)
            .await
            .expect("scan");
        if !keys.is_empty() {
            deleted += keys.len();
            let () = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .expect("unlink");
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    println!("  removed {deleted} Redis keys under {prefix}");
}
