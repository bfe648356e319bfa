//! The SMTP server the policy service's notification mail goes to (its smarthost,
//! `EMAIL2SMS_SMTP_RELAY`): Python's aiosmtpd (installed into target/tools/py by
//! scripts/ensure-tools) run as a subprocess, writing one file per (message, recipient).

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const SCRIPT: &str = r#"
import os, sys, uuid, threading
from aiosmtpd.controller import Controller
out = sys.argv[2]
class Sink:
    async def handle_DATA(self, server, session, envelope):
        for rcpt in envelope.rcpt_tos:
            name = os.path.join(out, uuid.uuid4().hex)
            with open(name + '.tmp', 'wb') as f:
                f.write(('X-Sink-Rcpt: %s\r\n' % rcpt.lower()).encode())
                f.write(envelope.original_content)
            os.rename(name + '.tmp', name + '.eml')
        return '250 OK stored'
c = Controller(Sink(), hostname='127.0.0.1', port=int(sys.argv[1]))
c.start()
print('ready', flush=True)
threading.Event().wait()
"#;

/// One received message as seen by one recipient.
#[derive(Debug, Clone)]
pub struct Received {
    pub rcpt: String,
    pub content: String,
}

impl Received {
    /// The message with quoted-printable soft line breaks and escapes undone (lettre encodes long
    /// lines that way), good enough for `contains` checks on ASCII text.
    pub fn text(&self) -> String {
        let joined = self.content.replace("=\r\n", "").replace("=\n", "");
        let bytes = joined.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'='
                && i + 2 < bytes.len()
                && let Ok(hex) = std::str::from_utf8(&bytes[i + 1..i + 3])
                && let Ok(byte) = u8::from_str_radix(hex, 16)
            {
                out.push(byte);
                i += 3;
                continue;
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[derive(Debug)]
pub struct Sink {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Sink {
    /// A sink on a free port.
    pub async fn start() -> Sink {
        Sink::start_on(free_port()).await
    }

    /// Not started yet: for "smarthost down" tests; call [`Sink::up`] later.
    pub fn down(port: u16) -> Sink {
        Sink {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        }
    }

    pub async fn start_on(port: u16) -> Sink {
        let mut sink = Sink::down(port);
        sink.up().await;
        sink
    }

    pub async fn up(&mut self) {
        let mut child = Command::new(crate::python())
            .arg("-c")
            .arg(SCRIPT)
            .arg(self.port.to_string())
            .arg(self.dir.path())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start aiosmtpd (run scripts/ensure-tools)");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("aiosmtpd starts")
            .unwrap();
        assert_eq!(line.as_deref(), Some("ready"), "aiosmtpd did not start");
        self.child = Some(child);
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message stored so far.
    pub fn received(&self) -> Vec<Received> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(self.dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("eml") {
                continue;
            }
            let content = std::fs::read_to_string(&path).unwrap();
            let rcpt = content
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("X-Sink-Rcpt: "))
                .unwrap_or_default()
                .trim()
                .to_owned();
            out.push(Received { rcpt, content });
        }
        out
    }

    /// Waits until at least `n` messages arrived (20 s at most), then returns them all.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        email2sms_testkit::eventually_within(
            &format!("{n} messages at the SMTP sink"),
            Duration::from_secs(20),
            || async { self.received() },
            |received| received.len() >= n,
        )
        .await
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}
