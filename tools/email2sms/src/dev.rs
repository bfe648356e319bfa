//! `email2sms dev`: the whole cluster on one machine, for development and demos.
//!
//! Each service runs as its own process (exactly the binaries that production runs), in its own
//! process group so that Ctrl-C reaches only this supervisor, which then stops them in order with
//! SIGTERM and waits for each to drain.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use email2sms_runtime::service::parse_announcement;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// The services in start order: those called by others first.
pub const SERVICES: [&str; 4] = [
    "email2sms-verification",
    "email2sms-policy",
    "email2sms-dispatch",
    "email2sms-ingest",
];

#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error(
        "cannot find {binary} in {dir}: build every binary first (`cargo build --release`) or pass --bin-dir"
    )]
    MissingBinary { binary: &'static str, dir: PathBuf },
    #[error("cannot start {binary}: {source}")]
    Spawn {
        binary: &'static str,
        source: std::io::Error,
    },
    #[error("{binary} stopped unexpectedly ({status}); see its log lines above")]
    Died {
        binary: &'static str,
        status: String,
    },
    #[error("{0} did not announce where it listens within a minute; see its log lines above")]
    NoAnnouncement(&'static str),
}

struct Running {
    binary: &'static str,
    child: Child,
}

/// Where the service binaries are: beside this executable unless told otherwise.
pub fn default_bin_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Starts every service, prints where each listens, and stops them all on `shutdown`.
pub async fn run(
    bin_dir: &Path,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DevError> {
    for binary in SERVICES {
        if !bin_dir.join(binary).is_file() {
            return Err(DevError::MissingBinary {
                binary,
                dir: bin_dir.to_owned(),
            });
        }
    }
    let insecure = std::env::var_os("EMAIL2SMS_API_TOKENS_FILE").is_none();
    if insecure {
        eprintln!(
            "\n  WARNING: no EMAIL2SMS_API_TOKENS_FILE: starting every service with EMAIL2SMS_INSECURE_NO_AUTH=1.\n  Anyone who can reach these ports can change policies. Never run `email2sms dev` on a shared network.\n"
        );
    }

    let (announced_tx, mut announced_rx) = mpsc::unbounded_channel::<&'static str>();
    let mut running: Vec<Running> = Vec::new();
    let result = async {
        for binary in SERVICES {
            let mut command = Command::new(bin_dir.join(binary));
            command
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .process_group(0)
                .kill_on_drop(true);
            if insecure {
                command.env("EMAIL2SMS_INSECURE_NO_AUTH", "1");
            }
            // No load balancer to wait for on one machine: Ctrl-C stops at once rather than
            // after 5 s per service.
            if std::env::var_os("EMAIL2SMS_SHUTDOWN_DELAY").is_none() {
                command.env("EMAIL2SMS_SHUTDOWN_DELAY", "0s");
            }
            let mut child = command
                .spawn()
                .map_err(|source| DevError::Spawn { binary, source })?;
            let stdout = child.stdout.take().expect("stdout is piped");
            let stderr = child.stderr.take().expect("stderr is piped");
            let tx = announced_tx.clone();
            tokio::spawn(forward_output(binary, stdout, tx));
            tokio::spawn(forward_log(binary, stderr));
            running.push(Running { binary, child });
            // Start the next one only once this one listens, so callers find their peers up.
            wait_for_announcement(binary, &mut announced_rx, &mut running).await?;
        }
        println!("Email2SMS is running. Ctrl-C stops every service.");
        watch(&mut running, shutdown).await
    }
    .await;
    stop_all(&mut running).await;
    result
}

/// Copies a child's stdout to ours, prefixed with its name, and reports its announcements.
async fn forward_output(
    binary: &'static str,
    stdout: tokio::process::ChildStdout,
    announced: mpsc::UnboundedSender<&'static str>,
) {
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if parse_announcement(&line).is_some() {
            // Verbatim, so scripts can read the addresses the same way they read a service's own.
            println!("{line}");
            let _ = announced.send(binary);
        } else {
            println!("[{binary}] {line}");
        }
    }
}

/// Copies a child's log lines to our stderr, prefixed with its name.
async fn forward_log(binary: &'static str, stderr: tokio::process::ChildStderr) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        eprintln!("[{binary}] {line}");
    }
}

async fn wait_for_announcement(
    binary: &'static str,
    announced: &mut mpsc::UnboundedReceiver<&'static str>,
    running: &mut [Running],
) -> Result<(), DevError> {
    let deadline = tokio::time::sleep(Duration::from_secs(60));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            Some(name) = announced.recv() => if name == binary { return Ok(()) },
            (name, status) = first_exit(running) => {
                return Err(DevError::Died { binary: name, status });
            }
            () = &mut deadline => return Err(DevError::NoAnnouncement(binary)),
        }
    }
}

/// Resolves when any service exits, with its name and exit status.
async fn first_exit(running: &mut [Running]) -> (&'static str, String) {
    if running.is_empty() {
        return std::future::pending().await;
    }
    let waits = running.iter_mut().map(|r| {
        Box::pin(async move {
            let status = r.child.wait().await;
            (
                r.binary,
                match status {
                    Ok(status) => status.to_string(),
                    Err(error) => error.to_string(),
                },
            )
        })
    });
    futures::future::select_all(waits).await.0
}

async fn watch(
    running: &mut [Running],
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DevError> {
    tokio::select! {
        () = shutdown => {
            println!("Stopping every service…");
            Ok(())
        }
        (binary, status) = first_exit(running) => Err(DevError::Died { binary, status }),
    }
}

/// SIGTERM to each service in reverse start order (ingest stops taking mail first), then waits.
async fn stop_all(running: &mut Vec<Running>) {
    while let Some(mut service) = running.pop() {
        if let Some(pid) = service.child.id().and_then(|id| i32::try_from(id).ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        match tokio::time::timeout(Duration::from_secs(45), service.child.wait()).await {
            Ok(Ok(status)) if status.success() => println!("{} stopped", service.binary),
            Ok(Ok(status)) => println!("{} stopped: {status}", service.binary),
            Ok(Err(error)) => println!("{} could not be waited for: {error}", service.binary),
            Err(_) => {
                println!("{} did not stop in time; killing it", service.binary);
                let _ = service.child.kill().await;
            }
        }
    }
}
