//! Throughput benchmark: SMS jobs per second from RabbitMQ through dispatch (Postgres job table,
//! status outbox) to an SMPP server on loopback, against a bare SMPP client (rusmppc alone: no
//! queue, no database) sending to the same server in the same run. Peak RSS of each phase from
//! /proc/self/status VmHWM (reset between phases through /proc/self/clear_refs).
//!
//! Needs the local Postgres and RabbitMQ of the test setup. Run in release:
//!
//! ```text
//! cargo run --release -p email2sms-dispatch --example throughput -- --jobs 50000 --window 50
//! ```
//!
//! The SMPP server is the `smpp34` crate's (the tests' in-process SMSC), in this process; it keeps
//! every accepted submit_sm to count them, which is part of the RSS shown.

#[path = "../tests/support/mod.rs"]
mod support;

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use email2sms_dispatch::Config;
use email2sms_proto::prost::Message;
use email2sms_proto::queue::v1::SMS_JOB_TYPE;
use email2sms_proto::queue::v1::SMS_STATUS_CHANGED_ROUTING_KEY;
use email2sms_queue::topology::SMS_JOB_ROUTING_KEY;
use email2sms_queue::{Broker, Outgoing, Publisher};
use email2sms_runtime::auth::Auth;
use futures::StreamExt;
use rusmpp::pdus::{BindTransceiver, SubmitSm};
use rusmpp::types::{COctetString, OctetString};
use rusmpp::values::{InterfaceVersion, Npi, RegisteredDelivery, Ton};
use rusmppc::ConnectionBuilder;
use support::{Smsc, job};

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

#[derive(Debug, clap::Parser)]
struct Args {
    /// Jobs (and bare submits) to send.
    #[arg(long, default_value_t = 50_000)]
    jobs: usize,
    /// SMPP window (in-flight submit_sm) of both clients.
    #[arg(long, default_value_t = 50)]
    window: usize,
    /// Jobs taken from the queue at once by dispatch (raised as the service raises it: to twice
    /// the jobs it may claim).
    #[arg(long, default_value_t = 32)]
    prefetch: u16,
    /// SMPP windows of jobs dispatch claims ahead of the connector (EMAIL2SMS_DISPATCH_CLAIM_WINDOWS).
    #[arg(long, default_value_t = 2)]
    claim_windows: u16,
    /// Postgres connections of dispatch.
    #[arg(long, default_value_t = 16)]
    db_connections: u32,
    /// Have the SMSC send a delivery receipt for every submit, and wait until every job is
    /// recorded delivered (the Python simulator always sends them).
    #[arg(long)]
    receipts: bool,
    /// The SMSC: `rust` (the smpp34 server in this process) or `python` (the tests' simulator,
    /// services/dispatch/tests/sim/smsc.py, a separate process: run scripts/ensure-tools first).
    #[arg(long, default_value = "rust")]
    smsc: String,
}

/// The SMSC both clients send to.
enum Target {
    Rust(Smsc),
    Python {
        port: u16,
        submits: Arc<std::sync::atomic::AtomicUsize>,
        _child: tokio::process::Child,
    },
}

impl Target {
    async fn start(kind: &str) -> Target {
        match kind {
            "rust" => Target::Rust(Smsc::start().await),
            "python" => {
                use tokio::io::AsyncBufReadExt;
                let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
                let python = dir.join("../../target/tools/py/bin/python");
                let mut child = tokio::process::Command::new(&python)
                    .arg(dir.join("tests/sim/smsc.py"))
                    .stdout(std::process::Stdio::piped())
                    // The bare client hangs up with receipts still on their way: the simulator
                    // complains on stderr, which is noise here.
                    .stderr(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .spawn()
                    .unwrap_or_else(|e| {
                        panic!("start {} (scripts/ensure-tools): {e}", python.display())
                    });
                let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
                let first = lines
                    .next_line()
                    .await
                    .unwrap()
                    .expect("the simulator's port");
                let port = first
                    .strip_prefix("listening ")
                    .and_then(|p| p.parse().ok())
                    .expect("listening PORT");
                let submits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
                let counted = submits.clone();
                tokio::spawn(async move {
                    while let Ok(Some(line)) = lines.next_line().await {
                        if line.starts_with("submit ") {
                            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                });
                Target::Python {
                    port,
                    submits,
                    _child: child,
                }
            }
            other => panic!("--smsc {other}: rust or python"),
        }
    }

    fn port(&self) -> u16 {
        match self {
            Target::Rust(smsc) => smsc.port,
            Target::Python { port, .. } => *port,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Target::Rust(_) => "the in-process smpp34 SMSC",
            Target::Python { .. } => "the Python simulator (its own process)",
        }
    }

    /// Submits the SMSC accepted so far.
    fn accepted(&self) -> usize {
        match self {
            Target::Rust(smsc) => smsc.state.accepted.lock().unwrap().len(),
            Target::Python { submits, .. } => submits.load(std::sync::atomic::Ordering::SeqCst),
        }
    }

    fn reset(&self) {
        match self {
            Target::Rust(smsc) => smsc.state.accepted.lock().unwrap().clear(),
            Target::Python { submits, .. } => submits.store(0, std::sync::atomic::Ordering::SeqCst),
        }
    }

    /// Whether every submit gets a delivery receipt.
    fn receipts(&self, wanted: bool) -> bool {
        match self {
            Target::Rust(smsc) => {
                smsc.state
                    .behaviour
                    .receipts
                    .store(wanted, std::sync::atomic::Ordering::SeqCst);
                wanted
            }
            Target::Python { .. } => true,
        }
    }
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

/// Resets VmHWM to the current RSS, so each phase reports its own peak.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// CPU seconds used so far by this process, by PostgreSQL's processes and by RabbitMQ's (all on
/// this machine), read from /proc: what each part of the path costs per job.
fn cpu_seconds() -> [f64; 3] {
    let ticks = 100.0; // USER_HZ on Linux
    let me = std::process::id().to_string();
    let mut used = [0.0; 3];
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return used;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let command = &stat[open + 1..close];
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let seconds = fields
            .get(11..13)
            .map(|t| t.iter().filter_map(|v| v.parse::<f64>().ok()).sum::<f64>() / ticks)
            .unwrap_or(0.0);
        let slot = if name == me {
            0
        } else if command.starts_with("postgres") {
            1
        } else if command == "beam.smp" {
            2
        } else {
            continue;
        };
        used[slot] += seconds;
    }
    used
}

/// Transactions committed in this database so far (the statistics lag by up to half a second).
async fn commits(pool: &sqlx::PgPool) -> i64 {
    let _ = sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(pool)
        .await;
    sqlx::query_scalar(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn bare_client(smsc: &Target, count: usize, window: usize) -> Duration {
    let (client, mut events) = ConnectionBuilder::new()
        .disable_interface_version_check()
        .connect(format!("smpp://127.0.0.1:{}", smsc.port()))
        .await
        .expect("connect");
    // rusmppc needs its event stream polled.
    let drain = tokio::spawn(async move { while events.next().await.is_some() {} });
    client
        .bind_transceiver(
            BindTransceiver::builder()
                .system_id(COctetString::from_str("test").unwrap())
                .password(COctetString::from_str("secret").unwrap())
                .interface_version(InterfaceVersion::Smpp3_4)
                .build(),
        )
        .await
        .expect("bind");
    let started = Instant::now();
    futures::stream::iter(0..count)
        .for_each_concurrent(window, |n| {
            let client = client.clone();
            async move {
                let pdu = SubmitSm::builder()
                    .source_addr(COctetString::from_str("ACME").unwrap())
                    .source_addr_ton(Ton::Alphanumeric)
                    .dest_addr_ton(Ton::International)
                    .dest_addr_npi(Npi::Isdn)
                    .destination_addr(COctetString::from_str("64211234567").unwrap())
                    .registered_delivery(RegisteredDelivery::from(1u8))
                    .short_message(OctetString::from_vec(format!("bare {n}").into_bytes()).unwrap())
                    .build();
                client.submit_sm(pdu).await.expect("submit_sm accepted");
            }
        })
        .await;
    let elapsed = started.elapsed();
    let _ = client.unbind().await;
    let _ = client.close().await;
    drain.abort();
    elapsed
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let smsc = Target::start(&args.smsc).await;
    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(
                |info| info.lines().find(|l| l.starts_with("model name")).map(|l| l
                    .split(':')
                    .nth(1)
                    .unwrap_or("")
                    .trim()
                    .to_owned())
            )
            .unwrap_or_default()
    );
    println!(
        "jobs: {}, window: {}, claim windows: {}, no throughput limit, SMSC: {}",
        args.jobs,
        args.window,
        args.claim_windows,
        smsc.name()
    );

    // Phase 1: the bare client.
    reset_peak_rss();
    let bare = bare_client(&smsc, args.jobs, args.window).await;
    let bare_rate = args.jobs as f64 / bare.as_secs_f64();
    println!(
        "bare rusmppc client: {} submits in {:.2} s = {:.0}/s, peak RSS {} MiB",
        args.jobs,
        bare.as_secs_f64(),
        bare_rate,
        peak_rss_kib() / 1024
    );
    smsc.reset();

    // Phase 2: queue → dispatch → SMSC. The jobs are queued first (not timed).
    let (db, pool) = email2sms_testkit::TestDb::migrated(
        email2sms_dispatch::SCHEMA,
        &email2sms_dispatch::MIGRATOR,
        args.db_connections,
    )
    .await;
    let prefix = format!("bench.{}.", uuid::Uuid::new_v4().simple());
    let connector = format!(
        "smpp://test:secret@127.0.0.1:{}?window={}",
        smsc.port(),
        args.window
    );
    let prefetch = args.prefetch.to_string();
    let claim_windows = args.claim_windows.to_string();
    let config = Config::try_parse_from([
        "email2sms-dispatch",
        "--database-url",
        &db.url,
        "--sms-connector",
        &connector,
        "--amqp-prefix",
        &prefix,
        "--redis-prefix",
        &prefix,
        "--prefetch",
        &prefetch,
        "--claim-windows",
        &claim_windows,
        "--throttle-per-user",
        "0",
        "--throttle-per-company",
        "0",
        "--throttle-per-connector",
        "0",
        "--insecure-no-auth",
    ])
    .expect("configuration");
    let topology = config.queue.topology();
    let broker = Broker::new(AMQP_URL, format!("throughput bench {prefix}"));
    let setup = broker.channel().await.expect("RabbitMQ");
    topology.declare_jobs(&setup).await.expect("declare");
    // Where the portal would take the status events from, so they have somewhere to go.
    let status_queue = format!("{prefix}portal.status");
    topology
        .declare_event_queue(&setup, &status_queue, &[SMS_STATUS_CHANGED_ROUTING_KEY])
        .await
        .expect("declare the status queue");
    let receipts = smsc.receipts(args.receipts);
    let publisher = Arc::new(Publisher::new(broker, Duration::from_secs(30)));
    let queued = Instant::now();
    let exchange = topology.jobs_exchange();
    futures::stream::iter(0..args.jobs)
        .for_each_concurrent(256, |n| {
            let publisher = publisher.clone();
            let exchange = exchange.clone();
            async move {
                let sms = job("+64211234567", &format!("job {n}"));
                publisher
                    .publish(Outgoing {
                        exchange: &exchange,
                        routing_key: SMS_JOB_ROUTING_KEY,
                        payload: &sms.encode_to_vec(),
                        message_id: sms.job_id.clone(),
                        message_type: SMS_JOB_TYPE,
                        headers: Default::default(),
                    })
                    .await
                    .expect("publish");
            }
        })
        .await;
    println!(
        "queued {} jobs in {:.2} s (not part of the figure)",
        args.jobs,
        queued.elapsed().as_secs_f64()
    );

    let commits_before = commits(&pool).await;
    reset_peak_rss();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run_pool = pool.clone();
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let served = tokio::spawn(async move {
        let auth = Auth::from_args(&config.server).unwrap();
        email2sms_dispatch::run(&config, &auth, run_pool, listener, async {
            let _ = stopped.await;
        })
        .await
    });
    let mut at_smsc = None;
    let mut submitted_at = None;
    let delivered_at = loop {
        if at_smsc.is_none() && smsc.accepted() >= args.jobs {
            at_smsc = Some(started.elapsed());
        }
        if at_smsc.is_some() {
            let (sent, delivered): (i64, i64) = sqlx::query_as(
                "SELECT count(*) FILTER (WHERE state IN ('submitted', 'delivered')),
                        count(*) FILTER (WHERE state = 'delivered')
                 FROM sms_jobs",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            if submitted_at.is_none() && sent as usize >= args.jobs {
                submitted_at = Some(started.elapsed());
            }
            if submitted_at.is_some() && (!receipts || delivered as usize >= args.jobs) {
                break receipts.then(|| started.elapsed());
            }
        }
        // Counting scans the whole job table: often enough for the figure's precision, rarely
        // enough not to load the database it measures.
        tokio::time::sleep(Duration::from_millis(if at_smsc.is_some() {
            250
        } else {
            20
        }))
        .await;
    };
    let cpu_used: Vec<f64> = cpu_seconds()
        .iter()
        .zip(cpu_before)
        .map(|(after, before)| (after - before) * 1e6 / args.jobs as f64)
        .collect();
    let recorded = submitted_at.unwrap();
    let at_smsc = at_smsc.unwrap();
    let rate = args.jobs as f64 / recorded.as_secs_f64();
    println!(
        "queue → dispatch → SMPP: {} jobs at the SMSC after {:.2} s, all recorded submitted after \
         {:.2} s = {:.0} jobs/s ({:.0}% of the bare client), peak RSS {} MiB",
        args.jobs,
        at_smsc.as_secs_f64(),
        recorded.as_secs_f64(),
        rate,
        100.0 * rate / bare_rate,
        peak_rss_kib() / 1024
    );
    if let Some(delivered_at) = delivered_at {
        println!(
            "every delivery receipt recorded (all jobs delivered) after {:.2} s = {:.0} receipts/s",
            delivered_at.as_secs_f64(),
            args.jobs as f64 / delivered_at.as_secs_f64()
        );
    }
    // Postgres backends that ended during the phase are not counted (the pool's stay).
    println!(
        "CPU per job meanwhile: this process (dispatch, SMSC, benchmark) {:.0} µs, PostgreSQL {:.0} \
         µs, RabbitMQ {:.0} µs",
        cpu_used[0], cpu_used[1], cpu_used[2]
    );
    // Group commit at work: transactions per job in the dispatch database (the relay's included).
    // Other sessions flush their statistics at most once a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let commits = commits(&pool).await - commits_before;
    println!(
        "database transactions: {commits} ({:.2} per job)",
        commits as f64 / args.jobs as f64
    );
    let duplicates = smsc.accepted() - args.jobs;
    println!("submits beyond one per job: {duplicates}");
    // The status events trail the jobs: the outbox relay publishes them after each commit.
    loop {
        let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&pool)
            .await
            .unwrap();
        if waiting == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The relay deletes each outbox row once all its events are confirmed.
    let published = started.elapsed();
    let channel = publisher.broker().channel().await.unwrap();
    let events = channel
        .queue_declare(
            status_queue.as_str().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .expect("the status queue")
        .message_count();
    println!(
        "{events} status events ({:.2} per job) all published {:.2} s after the start",
        f64::from(events) / args.jobs as f64,
        published.as_secs_f64()
    );
    let _ = stop.send(());
    let _ = served.await;
    let mut queues = topology.job_path_queues();
    queues.push(status_queue);
    for queue in queues {
        let _ = channel
            .queue_delete(queue.as_str().into(), Default::default())
            .await;
    }
    pool.close().await;
    drop(db);
}
