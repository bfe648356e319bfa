//! Test support: fresh databases, spawning service binaries, gRPC health and reflection probes.
//!
//! Every test gets its own database (zero2prod's `spawn_app`) so tests run in parallel without
//! seeing each other's rows.
#![forbid(unsafe_code)]

pub mod dns;
pub mod eventually;

pub use eventually::{eventually, eventually_some, eventually_within};

use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::Connection;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

/// The server the tests create their databases on.
pub fn admin_database_url() -> String {
    std::env::var("EMAIL2SMS_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database of its own for one test, dropped when the value is dropped.
#[derive(Debug)]
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// A name only; the database is created by whoever migrates it (as `email2sms migrate` does).
    pub fn unique() -> TestDb {
        let name = format!("email2sms_test_{}", uuid::Uuid::new_v4().simple());
        let mut url = admin_database_url();
        let cut = url.rfind('/').expect("the test database URL has a path");
        url.truncate(cut + 1);
        url.push_str(&name);
        TestDb { name, url }
    }

    /// A fresh, empty database.
    pub async fn create() -> TestDb {
        let db = TestDb::unique();
        let mut admin = sqlx::PgConnection::connect(&admin_database_url())
            .await
            .expect("PostgreSQL must be running for the tests (see README)");
        sqlx::query(&format!("CREATE DATABASE {}", db.name))
            .execute(&mut admin)
            .await
            .expect("create test database");
        db
    }
}

impl TestDb {
    /// A fresh database with one service's migrations applied, and a pool working in its schema.
    pub async fn migrated(
        schema: &str,
        migrator: &sqlx::migrate::Migrator,
        max_connections: u32,
    ) -> (TestDb, sqlx::PgPool) {
        let db = TestDb::unique();
        email2sms_runtime::db::migrate(&db.url, schema, migrator)
            .await
            .expect("migrate the test database");
        let pool = email2sms_runtime::db::connect(&db.url, schema, max_connections)
            .await
            .expect("connect to the test database");
        (db, pool)
    }
}

/// The name of the constraint that refused `result`; panics if the statement succeeded or failed
/// for another reason.
pub fn violated_constraint<T>(result: Result<T, sqlx::Error>) -> String {
    let Err(error) = result else {
        panic!("the statement was accepted but must be refused");
    };
    match error.as_database_error().and_then(|e| e.constraint()) {
        Some(name) => name.to_owned(),
        None => panic!("refused, but not by a named constraint: {error}"),
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let statement = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop runs outside async; a thread of its own can block on a small runtime safely.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&admin_database_url())
                    .await
                    .ok()?;
                sqlx::query(&statement).execute(&mut admin).await.ok()
            })
        })
        .join();
    }
}

/// A service binary started as its own process, the way an operator runs it.
#[derive(Debug)]
pub struct ServiceProcess {
    child: Child,
    /// The first gRPC address announced.
    pub grpc_addr: SocketAddr,
    /// Every gRPC address announced, in order.
    pub grpc_addrs: Vec<SocketAddr>,
    /// Every announcement read before the process was handed over: (protocol, address), such
    /// as ("grpc", …) and ("smtp", …) for ingest.
    pub announced: Vec<(String, SocketAddr)>,
    stderr: Arc<Mutex<String>>,
}

impl ServiceProcess {
    /// Starts `binary` with `env` (on top of a clean environment) and waits until it announces its
    /// gRPC address.
    pub async fn spawn(binary: &Path, env: &[(&str, &str)]) -> ServiceProcess {
        ServiceProcess::spawn_with(binary, env, &[], 1).await
    }

    /// Starts `binary` with `args` and `env` and waits for `announcements` gRPC announcements (a
    /// supervisor such as `email2sms dev` relays one per service).
    pub async fn spawn_with(
        binary: &Path,
        env: &[(&str, &str)],
        args: &[&str],
        announcements: usize,
    ) -> ServiceProcess {
        ServiceProcess::spawn_until(
            binary,
            env,
            args,
            &format!("{announcements} gRPC"),
            |seen| {
                seen.iter()
                    .filter(|(protocol, _)| protocol == "grpc")
                    .count()
                    >= announcements
            },
        )
        .await
    }

    /// Starts `binary` with `env` and waits until it has announced a listener for each of
    /// `protocols` (for ingest: `["grpc", "smtp"]`).
    pub async fn spawn_announcing(
        binary: &Path,
        env: &[(&str, &str)],
        protocols: &[&str],
    ) -> ServiceProcess {
        ServiceProcess::spawn_until(binary, env, &[], &protocols.join(" and "), |seen| {
            protocols
                .iter()
                .all(|wanted| seen.iter().any(|(protocol, _)| protocol == wanted))
        })
        .await
    }

    /// The first address announced for `protocol`.
    pub fn addr_of(&self, protocol: &str) -> Option<SocketAddr> {
        self.announced
            .iter()
            .find(|(announced, _)| announced == protocol)
            .map(|(_, addr)| *addr)
    }

    async fn spawn_until(
        binary: &Path,
        env: &[(&str, &str)],
        args: &[&str],
        awaited: &str,
        done: impl Fn(&[(String, SocketAddr)]) -> bool,
    ) -> ServiceProcess {
        let mut command = Command::new(binary);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            // No shutdown delay unless the test asks for one: nothing routes to a test's process,
            // and 5 s per stop adds up over hundreds of tests.
            .env("EMAIL2SMS_SHUTDOWN_DELAY", "0s")
            // Queue names of its own, so it never takes another test's (or a developer's) messages.
            .env(
                "EMAIL2SMS_AMQP_PREFIX",
                format!("test.{}.", uuid::Uuid::new_v4().simple()),
            )
            .envs(env.iter().copied())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("start the binary");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().expect("stderr is piped");
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .expect("stderr buffer")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut lines = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
        let mut announced: Vec<(String, SocketAddr)> = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(60), async {
            while !done(&announced) {
                let Ok(Some(line)) = lines.next_line().await else {
                    break;
                };
                if let Some((protocol, addr)) =
                    email2sms_runtime::service::parse_announcement(&line)
                {
                    announced.push((protocol.to_owned(), addr));
                }
            }
        })
        .await;
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let grpc_addrs: Vec<SocketAddr> = announced
            .iter()
            .filter(|(protocol, _)| protocol == "grpc")
            .map(|(_, addr)| *addr)
            .collect();
        if !done(&announced) || grpc_addrs.is_empty() {
            let status = child.try_wait().ok().flatten();
            tokio::time::sleep(Duration::from_millis(200)).await;
            panic!(
                "{} did not announce {awaited} listeners, only {announced:?} (exit: {status:?}); stderr:\n{}",
                binary.display(),
                stderr.lock().expect("stderr buffer")
            );
        }
        ServiceProcess {
            child,
            grpc_addr: grpc_addrs[0],
            grpc_addrs,
            announced,
            stderr,
        }
    }

    /// What the process wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr buffer").clone()
    }

    /// Sends SIGTERM, as Kubernetes does.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends SIGKILL: the process dies at once, without any of its shutdown code (an OOM kill, a
    /// node lost). [`ServiceProcess::wait`] then reaps it.
    pub fn kill(&self) {
        self.signal("KILL");
    }

    fn signal(&self, name: &str) {
        let pid = self.child.id().expect("the process is running");
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {pid} failed");
    }

    /// Whether the process has exited (without waiting).
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits for the process to exit, failing the test if it takes longer than `limit`.
    pub async fn wait(&mut self, limit: Duration) -> ExitStatus {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.expect("wait for the service"),
            Err(_) => panic!(
                "the service did not exit within {limit:?}; stderr:\n{}",
                self.stderr()
            ),
        }
    }

    pub async fn channel(&self) -> Channel {
        channel(self.grpc_addr).await
    }
}

/// A plaintext gRPC channel to `addr`.
pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("valid URI")
        .connect()
        .await
        .expect("connect to the service")
}

/// Runs `binary` to completion with `env` and returns its exit status and stderr.
pub async fn run_to_exit(
    binary: &Path,
    env: &[(&str, &str)],
    args: &[&str],
) -> (ExitStatus, String) {
    let output = Command::new(binary)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::null())
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .expect("the binary exits")
        .expect("run the binary");
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned()
            + &String::from_utf8_lossy(&output.stdout),
    )
}

/// The `grpc.health.v1` status of `service` ("" for the whole server).
pub async fn health(channel: Channel, service: &str) -> tonic_health::ServingStatus {
    use tonic_health::pb::health_check_response::ServingStatus as Wire;
    let response = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("health check")
        .into_inner();
    match Wire::try_from(response.status).unwrap_or(Wire::Unknown) {
        Wire::Serving => tonic_health::ServingStatus::Serving,
        Wire::NotServing => tonic_health::ServingStatus::NotServing,
        Wire::Unknown | Wire::ServiceUnknown => tonic_health::ServingStatus::Unknown,
    }
}

/// Lists the services a server offers through one version of the reflection protocol; v1 and
/// v1alpha are the same messages in different packages.
macro_rules! list_services {
    ($version:ident, $channel:expr) => {{
        use tonic_reflection::pb::$version::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = ServerReflectionClient::new($channel)
            .server_reflection_info(tokio_stream::once(request))
            .await
            .expect(concat!("reflection ", stringify!($version)))
            .into_inner();
        let response = stream
            .message()
            .await
            .expect(concat!("reflection ", stringify!($version), " answer"))
            .expect("one answer");
        match response.message_response {
            Some(MessageResponse::ListServicesResponse(list)) => {
                list.service.into_iter().map(|s| s.name).collect()
            }
            other => panic!("unexpected reflection answer {other:?}"),
        }
    }};
}

/// The services the server lists over reflection v1.
pub async fn reflection_services_v1(channel: Channel) -> Vec<String> {
    list_services!(v1, channel)
}

/// The services the server lists over reflection v1alpha, which many clients still speak.
pub async fn reflection_services_v1alpha(channel: Channel) -> Vec<String> {
    list_services!(v1alpha, channel)
}

/// Writes a tokens file with one admin and one internal token and returns their values.
pub fn tokens_file(dir: &Path) -> (std::path::PathBuf, String, String) {
    let admin = format!("admin-{}", uuid::Uuid::new_v4().simple());
    let internal = format!("internal-{}", uuid::Uuid::new_v4().simple());
    let path = dir.join("tokens");
    std::fs::write(&path, format!("admin {admin}\ninternal {internal}\n")).expect("write tokens");
    (path, admin, internal)
}

/// The life of a service binary as an operator sees it: it starts on port 0 with `env`, answers
/// health SERVING for the server and for each of `services`, lists exactly those (plus health and
/// reflection) over reflection v1 and v1alpha, and exits 0 on SIGTERM. Returns the running process
/// before SIGTERM through `before_stop` so the caller can make its own calls.
pub async fn check_service_lifecycle<F, Fut>(
    binary: &Path,
    grpc_addr_env: &str,
    env: &[(&str, &str)],
    services: &[&str],
    before_stop: F,
) where
    F: FnOnce(Channel) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut env = env.to_vec();
    env.push((grpc_addr_env, "127.0.0.1:0"));
    // Long enough to see readiness NOT_SERVING while the listener still accepts.
    let delay = Duration::from_secs(2);
    if !env.iter().any(|(name, _)| *name == SHUTDOWN_DELAY) {
        env.push((SHUTDOWN_DELAY, "2s"));
    }
    let mut process = ServiceProcess::spawn(binary, &env).await;
    assert_ne!(
        process.grpc_addr.port(),
        0,
        "the announced port is the bound one"
    );

    let channel = process.channel().await;
    assert_eq!(
        health(channel.clone(), "").await,
        tonic_health::ServingStatus::Serving
    );
    for service in services {
        assert_eq!(
            health(channel.clone(), service).await,
            tonic_health::ServingStatus::Serving,
            "{service}"
        );
    }
    assert_eq!(
        health(channel.clone(), LIVENESS).await,
        tonic_health::ServingStatus::Serving,
        "liveness"
    );
    wait_until_ready(&process).await;
    // The container health check: the binary asks its own configured address.
    let listening = process.grpc_addr.to_string();
    let mut check_env: Vec<(&str, &str)> = env
        .iter()
        .copied()
        .filter(|(name, _)| *name != grpc_addr_env)
        .collect();
    check_env.push((grpc_addr_env, &listening));
    for flag in ["--health-check", "--health-check=liveness"] {
        let (status, output) = run_to_exit(binary, &check_env, &[flag]).await;
        assert_eq!(
            status.code(),
            Some(0),
            "{flag} against a ready binary: {output}"
        );
    }
    let (status, output) =
        run_to_exit(binary, &check_env, &["--health-check=no.such.Service"]).await;
    assert_eq!(
        status.code(),
        Some(1),
        "an unknown name is not SERVING: {output}"
    );
    let mut expected: Vec<String> = services.iter().map(|s| s.to_string()).collect();
    expected.push("grpc.health.v1.Health".into());
    for listed in [
        reflection_services_v1(channel.clone()).await,
        reflection_services_v1alpha(channel.clone()).await,
    ] {
        let mut api: Vec<String> = listed
            .into_iter()
            .filter(|name| !name.starts_with("grpc.reflection."))
            .collect();
        api.sort();
        expected.sort();
        assert_eq!(
            api, expected,
            "reflection lists exactly this binary's services"
        );
    }

    before_stop(channel).await;

    check_graceful_stop(&mut process, delay, Duration::from_secs(30)).await;
    let (status, output) = run_to_exit(binary, &check_env, &["--health-check"]).await;
    assert_eq!(
        status.code(),
        Some(1),
        "--health-check against a stopped binary: {output}"
    );
}

/// The `grpc.health.v1` name of "the process works".
pub const LIVENESS: &str = "liveness";
/// The `grpc.health.v1` name of "it can do its job now".
pub const READINESS: &str = "readiness";
const SHUTDOWN_DELAY: &str = "EMAIL2SMS_SHUTDOWN_DELAY";

/// Waits (up to 30 s) until the process reports `readiness` SERVING.
pub async fn wait_until_ready(process: &ServiceProcess) {
    let addr = process.grpc_addr;
    eventually_within(
        "readiness SERVING",
        Duration::from_secs(30),
        || async move { health(channel(addr).await, READINESS).await },
        |status| *status == tonic_health::ServingStatus::Serving,
    )
    .await;
}

/// SIGTERM as Kubernetes sends it: `readiness` turns NOT_SERVING at once while the gRPC listener
/// still accepts new connections (and `liveness` stays SERVING) for the shutdown `delay`, then
/// the process exits 0 within `delay + grace` (plus a second for the process to end).
pub async fn check_graceful_stop(process: &mut ServiceProcess, delay: Duration, grace: Duration) {
    let addr = process.grpc_addr;
    let signalled = tokio::time::Instant::now();
    process.terminate();
    // A fresh connection each time: the listener must still accept one to answer at all.
    eventually_within(
        "readiness NOT_SERVING after SIGTERM",
        delay,
        || async move { health(channel(addr).await, READINESS).await },
        |status| *status == tonic_health::ServingStatus::NotServing,
    )
    .await;
    assert_eq!(
        health(channel(addr).await, LIVENESS).await,
        tonic_health::ServingStatus::Serving,
        "liveness stays SERVING while the process drains"
    );
    assert!(
        signalled.elapsed() < delay,
        "the listener accepted during the shutdown delay ({:?} after SIGTERM)",
        signalled.elapsed()
    );
    assert!(!process.has_exited(), "the process waits out the delay");
    let status = process.wait(delay + grace + Duration::from_secs(1)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "exit on SIGTERM; stderr:\n{}",
        process.stderr()
    );
    assert!(
        signalled.elapsed() >= delay,
        "the process kept serving for the delay ({:?})",
        signalled.elapsed()
    );
}
