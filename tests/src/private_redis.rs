//! A Redis server of the test's own on a free port, which the test may stop and start again:
//! the machine's shared Redis serves every other test and is never stopped.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

#[derive(Debug)]
pub struct PrivateRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateRedis {
    /// `redis-server` on a free loopback port, without persistence, answering PING.
    pub async fn start() -> PrivateRedis {
        let port = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut redis = PrivateRedis {
            port,
            dir: tempfile::tempdir().expect("a directory for redis"),
            child: None,
        };
        redis.resume().await;
        redis
    }

    /// `REDIS_URL` for the services.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: it is gone at once, as after a crash) and waits until the port
    /// refuses connections.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Starts the server (again) on the same port, empty, and waits until it answers PING.
    pub async fn resume(&mut self) {
        assert!(self.child.is_none(), "redis is already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start redis-server (scripts/ensure-services installs it)");
        self.child = Some(child);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        email2sms_testkit::eventually_within(
            "the private redis-server answers PING",
            Duration::from_secs(10),
            || async move { ping(addr).await },
            |answered| *answered,
        )
        .await;
    }
}

async fn ping(addr: SocketAddr) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    if stream.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut answer = [0u8; 7];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), stream.read_exact(&mut answer)).await,
        Ok(Ok(_))
    ) && &answer == b"+PONG\r\n"
}
