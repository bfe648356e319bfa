//! No client holds a session for ever (issue 10): the write deadline, the whole-DATA deadline and
//! the maximum session duration, on the real session code over in-memory streams with tokio's
//! clock paused (it jumps to the next timer whenever every task waits, so minutes pass in
//! milliseconds and the times asserted are exact); and their settings, validated by the binary.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{Client, Recorder, expect, session_config};
use email2sms_ingest::smtp::conn::{Deadline, Phase};
use email2sms_ingest::smtp::{Session, SessionConfig, SessionEnd};
use email2sms_testkit::run_to_exit;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const BINARY: &str = env!("CARGO_BIN_EXE_email2sms-ingest");
const PEER: &str = "203.0.113.9:40000";
/// Longer than any deadline here: the session must have ended well before.
const NEVER: Duration = Duration::from_secs(24 * 3600);

struct Harness {
    client: Client<DuplexStream>,
    handler: Arc<Recorder>,
    session: JoinHandle<SessionEnd>,
    _phase: watch::Sender<Phase>,
}

/// A session over a duplex pipe that buffers `pipe` bytes each way.
fn start(config: SessionConfig, pipe: usize) -> Harness {
    let (client, server) = tokio::io::duplex(pipe);
    let handler = Recorder::new();
    let (phase, phase_rx) = watch::channel(Phase::Running);
    let peer: SocketAddr = PEER.parse().unwrap();
    let session =
        tokio::spawn(Session::new(server, peer, Arc::new(config), handler.clone(), phase_rx).run());
    Harness {
        client: Client::new(client),
        handler,
        session,
        _phase: phase,
    }
}

async fn session_end(h: Harness) -> SessionEnd {
    tokio::time::timeout(NEVER, h.session)
        .await
        .expect("the session ends")
        .unwrap()
}

/// A client that pipelines commands and never reads a reply: once the pipe is full our write
/// blocks, and at the write timeout the session is dropped (no 421 can reach a client that does
/// not read). Before, the write had no deadline and the session stayed for ever.
#[tokio::test(start_paused = true)]
async fn a_client_that_pipelines_and_never_reads_is_dropped_at_the_write_timeout() {
    let mut config = session_config(&[]);
    config.limits.write_timeout = Duration::from_secs(30);
    let h = start(config, 4096);
    let started = Instant::now();
    let Harness {
        client, session, ..
    } = h;
    let mut stream = client.stream;
    // HELP has a long reply: the 4 KiB pipe fills after a few dozen.
    let writer = tokio::spawn(async move {
        let mut sent = 0usize;
        while stream.write_all(b"HELP\r\n").await.is_ok() {
            sent += 1;
        }
        (sent, stream)
    });
    let end = tokio::time::timeout(NEVER, session)
        .await
        .expect("the session ends")
        .unwrap();
    assert_eq!(end, SessionEnd::WriteTimeout);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(30) && elapsed < Duration::from_secs(31),
        "dropped after {elapsed:?}"
    );
    // The client's writes fail once the session is gone, so it learns the connection is closed.
    let (sent, _stream) = tokio::time::timeout(NEVER, writer).await.unwrap().unwrap();
    assert!(sent > 100, "the pipe was filled by {sent} commands");
}

async fn open_transaction(h: &mut Harness) {
    expect(&h.client.reply().await, "220");
    h.client
        .send(b"EHLO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<64211234567@sms.example.net>\r\nDATA\r\n")
        .await;
    for prefix in ["250-", "250 2.1.0", "250 2.1.5", "354"] {
        expect(&h.client.reply().await, prefix);
    }
}

/// A message fed one byte every 4 s never trips the 5 s silence timeout; the whole-DATA
/// deadline (60 s from the 354) ends it with 421 4.4.2, and nothing reaches the handler. Before,
/// every byte renewed the timeout and this message would have taken as long as the client liked.
#[tokio::test(start_paused = true)]
async fn a_trickling_message_gets_421_at_the_whole_data_deadline() {
    let mut config = session_config(&[]);
    config.limits.data_timeout = Duration::from_secs(5);
    config.limits.data_deadline = Duration::from_secs(60);
    let mut h = start(config, 64 * 1024);
    open_transaction(&mut h).await;
    let started = Instant::now();
    let Harness {
        client,
        handler,
        session,
        _phase,
    } = h;
    let (read, mut write) = tokio::io::split(client.stream);
    let trickle = async move {
        let body = b"Subject: slow\r\n\r\none byte at a time, for as long as the client likes\r\n";
        for byte in body.iter().cycle() {
            if write.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(4)).await;
        }
    };
    let reply = async {
        let mut line = String::new();
        BufReader::new(read).read_line(&mut line).await.unwrap();
        line
    };
    let reply = tokio::select! {
        biased;
        reply = tokio::time::timeout(NEVER, reply) => reply.expect("a reply"),
        () = trickle => panic!("the session closed without a reply"),
    };
    let elapsed = started.elapsed();
    expect(&reply, "421 4.4.2");
    assert!(reply.contains("took longer than 1m"), "{reply}");
    assert!(
        elapsed >= Duration::from_secs(60) && elapsed < Duration::from_secs(61),
        "421 after {elapsed:?}"
    );
    assert!(handler.messages().is_empty());
    let end = tokio::time::timeout(NEVER, session).await.unwrap().unwrap();
    assert_eq!(end, SessionEnd::Timeout(Deadline::WholeData));
}

/// A client that keeps a session busy (a NOOP every 20 s, well within the 30 s command timeout)
/// gets 421 4.4.2 at the maximum session duration; before, it could stay for ever.
#[tokio::test(start_paused = true)]
async fn a_long_session_gets_421_at_the_max_duration() {
    let mut config = session_config(&[]);
    config.limits.command_timeout = Duration::from_secs(30);
    config.limits.max_session_duration = Duration::from_secs(120);
    let mut h = start(config, 64 * 1024);
    let started = Instant::now();
    expect(&h.client.reply().await, "220");
    // A NOOP every 20 s; the 421 comes unasked, between two of them.
    let reply = loop {
        expect(&h.client.command("NOOP").await, "250 2.0.0");
        let pause = tokio::time::timeout(Duration::from_secs(20), h.client.reply_within(NEVER));
        if let Ok(reply) = pause.await {
            break reply;
        }
        assert!(started.elapsed() < NEVER);
    };
    let elapsed = started.elapsed();
    expect(&reply, "421 4.4.2");
    assert!(reply.contains("has lasted 2m"), "{reply}");
    assert!(
        elapsed >= Duration::from_secs(120) && elapsed < Duration::from_secs(121),
        "421 after {elapsed:?}"
    );
    assert!(h.client.closed().await);
    assert_eq!(session_end(h).await, SessionEnd::Timeout(Deadline::Session));
}

#[tokio::test]
async fn the_deadline_settings_are_listed_and_validated() {
    let help = std::process::Command::new(BINARY)
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for variable in [
        "EMAIL2SMS_INGEST_DATA_DEADLINE",
        "EMAIL2SMS_INGEST_WRITE_TIMEOUT",
        "EMAIL2SMS_INGEST_MAX_SESSION_DURATION",
        "EMAIL2SMS_INGEST_BARE_LF",
        "EMAIL2SMS_INGEST_BUFFER_BUDGET",
    ] {
        assert!(help.contains(variable), "--help lacks {variable}:\n{help}");
    }
    for (env, named) in [
        (("EMAIL2SMS_INGEST_DATA_DEADLINE", "0s"), "DATA_DEADLINE"),
        (("EMAIL2SMS_INGEST_DATA_DEADLINE", "1m"), "DATA_DEADLINE"),
        (("EMAIL2SMS_INGEST_WRITE_TIMEOUT", "0s"), "WRITE_TIMEOUT"),
        (("EMAIL2SMS_INGEST_WRITE_TIMEOUT", "soon"), "WRITE_TIMEOUT"),
        (
            ("EMAIL2SMS_INGEST_MAX_SESSION_DURATION", "5m"),
            "MAX_SESSION_DURATION",
        ),
        (("EMAIL2SMS_INGEST_BARE_LF", "sometimes"), "BARE_LF"),
        (("EMAIL2SMS_INGEST_BUFFER_BUDGET", "1M"), "BUFFER_BUDGET"),
        (("EMAIL2SMS_INGEST_BUFFER_BUDGET", "lots"), "BUFFER_BUDGET"),
    ] {
        let (status, output) = run_to_exit(
            Path::new(BINARY),
            &[("EMAIL2SMS_INSECURE_NO_AUTH", "1"), env],
            &[],
        )
        .await;
        assert_eq!(status.code(), Some(64), "{env:?}: {output}");
        assert!(
            output.contains(named)
                || output.contains(&named.to_ascii_lowercase().replace('_', "-")),
            "{env:?}: the message does not name the setting: {output}"
        );
    }
}
