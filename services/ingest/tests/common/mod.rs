//! Test helpers shared by the SMTP tests: a handler that records what it received and a tiny
//! SMTP client that reads replies exactly as they arrive; [`gateway`] runs the real pipeline.
#![allow(dead_code)]

pub mod gateway;
pub mod postfix;
pub mod proxy;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use email2sms_domain::DomainName;
use email2sms_ingest::smtp::command::ReversePath;
use email2sms_ingest::smtp::{
    BareLf, BufferBudget, ClientInfo, Envelope, Limits, MessageHandler, ReceivedMessage, Reply,
    SessionConfig,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Records every message and answers with a fixed reply; a recipient starting with `999`
/// makes it panic, and a sender at `refused.example` is refused at MAIL FROM.
#[derive(Debug)]
pub struct Recorder {
    pub messages: Mutex<Vec<(Envelope, Vec<u8>)>>,
    pub reply: Reply,
}

impl Recorder {
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder {
            messages: Mutex::new(Vec::new()),
            reply: Reply::new(250, "2.0.0", "queued as SMS"),
        })
    }

    pub fn messages(&self) -> Vec<(Envelope, Vec<u8>)> {
        self.messages.lock().unwrap().clone()
    }
}

impl MessageHandler for Recorder {
    async fn check_sender(&self, _client: &ClientInfo, from: &ReversePath) -> Option<Reply> {
        match from {
            ReversePath::Mailbox(mailbox) if mailbox.domain == "refused.example" => {
                Some(Reply::new(550, "5.7.1", "this sender may not send SMS"))
            }
            _ => None,
        }
    }

    async fn accept(&self, envelope: &Envelope, message: ReceivedMessage) -> Reply {
        if envelope
            .recipients
            .iter()
            .any(|r| r.local_part.starts_with("999"))
        {
            panic!("the test handler panics on 999… recipients");
        }
        self.messages
            .lock()
            .unwrap()
            .push((envelope.clone(), message.to_vec()));
        self.reply.clone()
    }
}

pub fn session_config(trusted: &[&str]) -> SessionConfig {
    SessionConfig {
        hostname: "ingest.test".into(),
        sms_domains: vec![
            DomainName::parse("sms.example.net").unwrap(),
            DomainName::parse("sms.localhost").unwrap(),
        ],
        trusted_relays: trusted.iter().map(|net| net.parse().unwrap()).collect(),
        tls: None,
        limits: Limits {
            max_message_size: 10_000,
            max_recipients: 3,
            max_line_length: 1000,
            command_timeout: Duration::from_secs(5),
            data_timeout: Duration::from_secs(5),
            data_deadline: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            max_session_duration: Duration::from_secs(300),
            bare_lf: BareLf::Refuse,
            max_bad_commands: 5,
            proxy_wait: Duration::from_millis(200),
        },
        budget: BufferBudget::new(1 << 20),
    }
}

/// The client end of a conversation.
pub struct Client<S> {
    pub stream: S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    pub fn new(stream: S) -> Self {
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// Reads one complete reply (all its lines), e.g. `"250-a\r\n250 b"` without the last CRLF.
    pub async fn reply(&mut self) -> String {
        self.reply_within(Duration::from_secs(10)).await
    }

    /// [`Client::reply`], waiting at most `limit` (of tokio time: virtual in a paused test).
    pub async fn reply_within(&mut self, limit: Duration) -> String {
        tokio::time::timeout(limit, async {
            let mut lines = Vec::new();
            loop {
                while let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    let line = String::from_utf8(self.buf[..pos].to_vec()).unwrap();
                    self.buf.drain(..pos + 2);
                    let last = line.as_bytes().get(3) != Some(&b'-');
                    lines.push(line);
                    if last {
                        return lines.join("\r\n");
                    }
                }
                let mut chunk = [0u8; 4096];
                let n = self.stream.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    return format!(
                        "EOF after {lines:?} {:?}",
                        String::from_utf8_lossy(&self.buf)
                    );
                }
                self.buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no reply within {limit:?}"))
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Sends one command line and returns its reply.
    pub async fn command(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// Whether the server has closed the connection (after any pending replies).
    pub async fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 64];
        matches!(
            tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

/// Asserts a reply starts with `prefix`.
#[track_caller]
pub fn expect(reply: &str, prefix: &str) {
    assert!(
        reply.starts_with(prefix),
        "expected a reply starting with {prefix:?}, got {reply:?}"
    );
}

/// Postfix's `smtp-source`: the first on PATH, else /usr/sbin/smtp-source (where the postfix
/// package installs it; /usr/sbin is not on every user's PATH). Panics, pointing at
/// scripts/ensure-tools, when it is in neither place: the tests that drive it must not pass
/// without having run it.
pub fn smtp_source() -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("smtp-source"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "smtp-source (Postfix) is not on PATH nor in /usr/sbin: run `eval \"$(scripts/ensure-tools)\"`, which installs it"
            )
        })
}
