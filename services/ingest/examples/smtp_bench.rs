//! SMTP benchmark of ingest against the local Redis and RabbitMQ: Postfix's `smtp-source` for
//! throughput (messages per second answered 250), a small client of this file for the DATA-to-250
//! latency of each message (smtp-source cannot time single messages), peak RSS under load, and RSS
//! with many idle sessions open.
//!
//! Ingest runs in its own process: this example re-executes itself in the `ingest` role, which
//! runs exactly what `email2sms-ingest` runs (`email2sms_runtime::service::main` with
//! `email2sms_ingest::start`, logging to a file), so `/proc/<pid>/status` measures ingest alone and
//! not the load generators. The sender policy is put in Redis (under a fresh prefix) as the policy
//! service compiles it: an IP entry for 127.0.0.0/8, security type "By IP Addresses", so no DNS is
//! involved; after the first message it is answered from ingest's in-process cache. Every message
//! is a real SMS job published with confirms to a fresh quorum queue; the queue is counted after
//! each phase (every 250 must be one job) and deleted at the end.
//!
//! ```text
//! eval "$(scripts/ensure-tools)"   # installs postfix for smtp-source, with no MTA started
//! cargo run --release -p email2sms-ingest --example smtp_bench -- \
//!     --sessions 10 --messages 20000 --size 2048 --idle 1000
//! ```
//!
//! DATA-to-250 latency is timed by the client from writing the final `.` line of the message to
//! reading the reply: the time the relay waits for ingest to parse, decide, publish and get the
//! broker's confirm.
//!
//! Results of 2026-11-27 (2 vCPU AMD EPYC VM, 24 GB, Debian 12.11, RabbitMQ 3.10.8 and Redis 7.0.15
//! on the same VM, other builds running: load average 3-4), three runs of the command above (the
//! third with `--unbound-events`):
//!
//! | figure | tool | runs |
//! |---|---|---|
//! | messages/s answered 250, 10 sessions, 20,000 × 2 KB | smtp-source (`-d`) | 2136, 1585, 1818 |
//! | DATA-to-250 p50 | this client | 3.75, 3.99, 4.44 ms |
//! | DATA-to-250 p99 (goal < 50 ms) | this client | 10.6, 14.0, 15.5 ms |
//! | ingest peak RSS under load | /proc VmRSS sampled | 29.2, 29.6, 29.9 MiB |
//! | ingest RSS, 1,000 idle sessions (goal < 100 MB) | /proc VmRSS | 40.9, 41.2, 41.5 MiB (≈ 12 KiB each) |

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use email2sms_proto::policy::v1::{
    CompanyLimits, CompiledSender, MatchKind, OverLimitBehavior, Readiness, SecurityType, TextMode,
};
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions};
use lapin::types::FieldTable;
use redis::AsyncCommands;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

const ROLE_VAR: &str = "SMTP_BENCH_ROLE";
const REDIS_URL: &str = "redis://127.0.0.1:6379";
const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const SENDER: &str = "bench@load.test";
const RECIPIENT: &str = "64211234567@sms.localhost";

#[derive(Debug, Parser)]
#[command(about = "SMTP benchmark of email2sms-ingest")]
struct Args {
    /// Parallel SMTP sessions of both load phases.
    #[arg(long, default_value_t = 10)]
    sessions: usize,
    /// Messages of each load phase (smtp-source, then the latency client).
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Size of each message in bytes (smtp-source `-l`; the latency client sends the same size).
    #[arg(long, default_value_t = 2048)]
    size: usize,
    /// Idle sessions held open for the RSS measurement.
    #[arg(long, default_value_t = 1000)]
    idle: usize,
    /// The smtp-source binary (default: on PATH, else /usr/sbin/smtp-source).
    #[arg(long)]
    smtp_source: Option<PathBuf>,
    /// Skip the smtp-source phase.
    #[arg(long)]
    no_smtp_source: bool,
    /// Bind no queue to `sender.ip_seen` (as before the policy service first ran): the sender-log
    /// report of every flush interval is then returned by RabbitMQ as unroutable and kept.
    #[arg(long)]
    unbound_events: bool,
}

fn main() -> std::process::ExitCode {
    if std::env::var_os(ROLE_VAR).is_some_and(|role| role == "ingest") {
        return email2sms_runtime::service::main(email2sms_ingest::BINARY, email2sms_ingest::start);
    }
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(bench(args));
    std::process::ExitCode::SUCCESS
}

/// `VmRSS` / `VmHWM` of a process, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with(field))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Samples the RSS of `pid` every 10 ms and keeps the highest value since the last `take`.
#[derive(Debug, Clone)]
struct RssSampler(Arc<AtomicU64>);

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let peak = Arc::new(AtomicU64::new(0));
        let sampling = peak.clone();
        tokio::spawn(async move {
            loop {
                sampling.fetch_max(status_kib(pid, "VmRSS:"), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        RssSampler(peak)
    }

    fn take(&self) -> u64 {
        self.0.swap(0, Ordering::Relaxed)
    }
}

fn policy_entry() -> CompiledSender {
    CompiledSender {
        match_kind: MatchKind::IpAddress as i32,
        entry_id: "bench-ip".into(),
        matched_value: "127.0.0.0/8".into(),
        company_id: "bench-company".into(),
        security_policy_id: "bench-policy".into(),
        security_type: SecurityType::ByIpAddresses as i32,
        allowed_ip_ranges: vec!["127.0.0.0/8".into()],
        forwarding_user_id: "bench-user".into(),
        forwarding_user_external_id: "bench-ext".into(),
        forwarding_username: "bench".into(),
        sender_id: "BENCH".into(),
        default_region: "NZ".into(),
        limits: Some(CompanyLimits {
            max_sms_parts: 3,
            over_limit_behavior: OverLimitBehavior::Truncate as i32,
            ..CompanyLimits::default()
        }),
        text_mode: TextMode::BodyOrSubject as i32,
        readiness: Some(Readiness {
            ready: true,
            ..Readiness::default()
        }),
        version: 1,
    }
}

/// A message of `size` bytes with the given Message-ID, shaped like smtp-source's.
fn message(message_id: &str, size: usize) -> Vec<u8> {
    let mut text = format!(
        "From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: load test\r\nMessage-ID: <{message_id}>\r\n\r\n"
    );
    let mut line = 1;
    while text.len() + 2 < size {
        let room = size - text.len() - 2;
        let mut body = format!("{line} Pump station {line} reports a fault; ");
        while body.len() < 76 {
            body.push('X');
        }
        body.truncate(room.min(76));
        text.push_str(&body);
        text.push_str("\r\n");
        line += 1;
    }
    text.into_bytes()
}

/// One SMTP session of the latency client.
struct Session {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
    line: String,
}

impl Session {
    async fn open(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<Session> {
        let stream = match source {
            Some(ip) => {
                let socket = TcpSocket::new_v4()?;
                socket.bind(SocketAddr::new(ip, 0))?;
                socket.connect(addr).await?
            }
            None => TcpStream::connect(addr).await?,
        };
        stream.set_nodelay(true)?;
        let (read, writer) = stream.into_split();
        let mut session = Session {
            reader: BufReader::new(read),
            writer,
            line: String::new(),
        };
        session.expect(220).await?;
        session.command("EHLO bench.load.test", 250).await?;
        Ok(session)
    }

    /// Reads one (possibly multi-line) reply; an error unless its code is `code`.
    async fn expect(&mut self, code: u16) -> std::io::Result<()> {
        loop {
            self.line.clear();
            if self.reader.read_line(&mut self.line).await? == 0 {
                return Err(std::io::Error::other("connection closed"));
            }
            if self.line.as_bytes().get(3) == Some(&b'-') {
                continue;
            }
            return if self.line.starts_with(&code.to_string()) {
                Ok(())
            } else {
                Err(std::io::Error::other(format!(
                    "expected {code}, got {:?}",
                    self.line.trim_end()
                )))
            };
        }
    }

    async fn command(&mut self, line: &str, code: u16) -> std::io::Result<()> {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .await?;
        self.expect(code).await
    }

    /// Sends one message; returns the time from the final `.` to the 250.
    async fn send(&mut self, message: &[u8]) -> std::io::Result<Duration> {
        self.command(&format!("MAIL FROM:<{SENDER}>"), 250).await?;
        self.command(&format!("RCPT TO:<{RECIPIENT}>"), 250).await?;
        self.command("DATA", 354).await?;
        self.writer.write_all(message).await?;
        let started = Instant::now();
        self.writer.write_all(b".\r\n").await?;
        self.expect(250).await?;
        Ok(started.elapsed())
    }
}

async fn amqp() -> lapin::Channel {
    let connection = lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default())
        .await
        .expect("RabbitMQ on 127.0.0.1:5672");
    connection.create_channel().await.unwrap()
}

/// Messages waiting in `queue` (which must exist).
async fn queue_depth(channel: &lapin::Channel, queue: &str) -> u32 {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("the jobs queue exists")
        .message_count()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 * p / 100.0).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn smtp_source_path(args: &Args) -> PathBuf {
    if let Some(path) = &args.smtp_source {
        return path.clone();
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("smtp-source"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/smtp-source"))
}

async fn bench(args: Args) {
    let run = uuid::Uuid::new_v4().simple().to_string();
    // "test." so that scripts/test sweeps the queues should this run be interrupted.
    let redis_prefix = format!("test.bench.{run}:");
    let amqp_prefix = format!("test.bench.{run}.");
    let ingest_args = [
        "--smtp-addr",
        "127.0.0.1:0",
        "--grpc-addr",
        "127.0.0.1:0",
        "--smtp-hostname",
        "ingest.bench",
        "--sms-domains",
        "sms.localhost",
        "--redis-url",
        REDIS_URL,
        "--redis-prefix",
        &redis_prefix,
        "--amqp-url",
        AMQP_URL,
        "--amqp-prefix",
        &amqp_prefix,
        // Not running: the policy is in Redis.
        "--policy-url",
        "http://127.0.0.1:1",
    ];
    let config = email2sms_ingest::Config::try_parse_from(
        std::iter::once(email2sms_ingest::BINARY).chain(ingest_args),
    )
    .expect("a valid ingest configuration");
    let topology = config.queue.topology();
    let jobs_queue = topology.jobs_queue();

    let mut redis = redis::Client::open(REDIS_URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("Redis on 127.0.0.1:6379");
    // Seeded through the library the policy service compiles with, so the layout cannot drift.
    let index = email2sms_sender_index::Writer::new(
        redis::Client::open(REDIS_URL)
            .unwrap()
            .get_connection_manager()
            .await
            .expect("Redis on 127.0.0.1:6379"),
        email2sms_sender_index::KeyLayout::new(&redis_prefix),
    );
    let entry = policy_entry();
    let net: ipnet::IpNet = "127.0.0.0/8".parse().unwrap();
    index
        .apply(
            &[email2sms_sender_index::Write::ip(
                index.layout(),
                &net,
                Some(&entry),
            )],
            1,
        )
        .await
        .unwrap();

    let log_path = std::env::temp_dir().join(format!("smtp-bench-ingest-{run}.log"));
    let log_file = std::fs::File::create(&log_path).unwrap();
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(ingest_args)
        .env(ROLE_VAR, "ingest")
        .env("EMAIL2SMS_INSECURE_NO_AUTH", "1")
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or("info".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut announcements = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = announcements.next_line().await.unwrap() {
            if let Some(("smtp", addr)) = email2sms_runtime::service::parse_announcement(&line) {
                return addr;
            }
        }
        panic!("ingest exited; see {}", log_path.display());
    })
    .await
    .expect("ingest listens within 30 s");

    println!("== machine");
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    println!(
        "cpus {} ({cpu}); {}; ingest pid {pid} on smtp {addr}; logs {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        mem.split_whitespace().collect::<Vec<_>>().join(" "),
        log_path.display()
    );

    // Ready once a message is accepted: the topology is declared in the background at start. Also
    // warms the policy cache, so every measured message finds its sender rule in memory.
    let started = Instant::now();
    loop {
        let mut session = Session::open(addr, None).await.expect("ingest answers");
        let id = format!("warmup-{}@load.test", started.elapsed().as_nanos());
        if session.send(&message(&id, args.size)).await.is_ok() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "ingest did not accept mail within 30 s; see {}",
            log_path.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let channel = amqp().await;
    channel
        .queue_purge(jobs_queue.as_str().into(), QueuePurgeOptions::default())
        .await
        .unwrap();
    // The policy service's sender-log queue, as in a running cluster: without it every message
    // would publish one more (returned) event.
    let events_queue = format!("{amqp_prefix}bench.sender-log");
    if !args.unbound_events {
        topology
            .declare_event_queue(
                &channel,
                &events_queue,
                &[email2sms_proto::queue::v1::SENDER_IP_SEEN_ROUTING_KEY],
            )
            .await
            .expect("the sender-log queue");
    }
    let sampler = RssSampler::start(pid);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let start_rss = sampler.take().max(status_kib(pid, "VmRSS:"));
    println!("ingest RSS after start and one message: {}", mib(start_rss));

    // Phase 1: smtp-source, throughput.
    if !args.no_smtp_source {
        let source = smtp_source_path(&args);
        let command = format!(
            "{} -d -s {} -m {} -l {} -f {SENDER} -t {RECIPIENT} {addr}",
            source.display(),
            args.sessions,
            args.messages,
            args.size
        );
        println!("\n== throughput: {command}");
        sampler.take();
        let started = Instant::now();
        let output = tokio::process::Command::new(&source)
            .args(["-d", "-s", &args.sessions.to_string()])
            .args(["-m", &args.messages.to_string()])
            .args(["-l", &args.size.to_string()])
            .args(["-f", SENDER, "-t", RECIPIENT])
            .arg(addr.to_string())
            .output()
            .await
            .unwrap_or_else(|error| {
                panic!(
                    "cannot run {}: {error}; run scripts/ensure-tools",
                    source.display()
                )
            });
        let elapsed = started.elapsed();
        let peak = sampler.take();
        let queued = queue_depth(&channel, &jobs_queue).await;
        println!(
            "smtp-source exit {}, {} s; stderr {:?}",
            output.status,
            elapsed.as_secs_f64(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        println!(
            "accepted with 250 (= jobs in the queue): {queued} of {}; {:.0} messages/s; ingest peak RSS {}",
            args.messages,
            f64::from(queued) / elapsed.as_secs_f64(),
            mib(peak)
        );
        channel
            .queue_purge(jobs_queue.as_str().into(), QueuePurgeOptions::default())
            .await
            .unwrap();
    }

    // Phase 2: the latency client, same shape of load.
    println!(
        "\n== latency: own client, {} sessions, {} messages of {} bytes, DATA (final '.') to 250",
        args.sessions, args.messages, args.size
    );
    sampler.take();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..args.sessions {
        let next = next.clone();
        let total = args.messages;
        let size = args.size;
        let run = run.clone();
        workers.push(tokio::spawn(async move {
            let mut session = Session::open(addr, None).await.expect("a session");
            let mut latencies = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let id = format!("lat-{n}-{worker}-{run}@load.test");
                match session.send(&message(&id, size)).await {
                    Ok(latency) => latencies.push(latency),
                    Err(error) => {
                        eprintln!("message {n}: {error}");
                        session = Session::open(addr, None).await.expect("a session");
                    }
                }
            }
            let _ = session.command("QUIT", 221).await;
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.unwrap());
    }
    let elapsed = started.elapsed();
    let peak = sampler.take();
    latencies.sort();
    let queued = queue_depth(&channel, &jobs_queue).await;
    println!(
        "accepted with 250: {} (jobs in the queue: {queued}) in {:.2} s, {:.0} messages/s",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64()
    );
    if !latencies.is_empty() {
        let mean = latencies.iter().sum::<Duration>() / latencies.len() as u32;
        println!(
            "DATA-to-250: p50 {}, p90 {}, p99 {}, p99.9 {}, max {}, mean {}; ingest peak RSS {}",
            ms(percentile(&latencies, 50.0)),
            ms(percentile(&latencies, 90.0)),
            ms(percentile(&latencies, 99.0)),
            ms(percentile(&latencies, 99.9)),
            ms(*latencies.last().unwrap()),
            ms(mean),
            mib(peak)
        );
    }
    channel
        .queue_purge(jobs_queue.as_str().into(), QueuePurgeOptions::default())
        .await
        .unwrap();

    // Phase 3: idle sessions, spread over loopback source addresses because ingest allows 50
    // sessions per client IP.
    println!(
        "\n== idle: {} sessions open (greeted, EHLO answered), nothing sent",
        args.idle
    );
    let before = status_kib(pid, "VmRSS:");
    let per_ip = 25;
    let mut idle = Vec::with_capacity(args.idle);
    for i in 0..args.idle {
        let host = u8::try_from(2 + i / per_ip).expect("at most 6,000 idle sessions");
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 1, host));
        idle.push(
            Session::open(addr, Some(source))
                .await
                .expect("idle session"),
        );
    }
    // Let ingest settle (the sampler keeps the peak).
    sampler.take();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let with_idle = status_kib(pid, "VmRSS:");
    println!(
        "ingest RSS before {}, with {} idle sessions {} ({:.1} KiB per session); peak while opening {}",
        mib(before),
        idle.len(),
        mib(with_idle),
        (with_idle.saturating_sub(before)) as f64 / idle.len().max(1) as f64,
        mib(sampler.take())
    );
    drop(idle);
    println!(
        "\n== ingest peak RSS over the whole run (VmHWM): {}",
        mib(status_kib(pid, "VmHWM:"))
    );

    // Clean up: this run's queues and Redis keys.
    let _ = child.kill().await;
    let mut queues = topology.job_path_queues();
    queues.push(events_queue);
    for queue in queues {
        let _ = channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    let keys: Vec<String> = redis.keys(format!("{redis_prefix}*")).await.unwrap();
    for chunk in keys.chunks(1000) {
        let _: i64 = redis.del(chunk).await.unwrap();
    }
}
