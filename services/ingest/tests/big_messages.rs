//! Big messages do not stall other sessions nor take unbounded memory (issue 10), through the
//! real listener and pipeline into RabbitMQ: the bytes buffered across sessions stay within
//! `EMAIL2SMS_INGEST_BUFFER_BUDGET` (over it, 452 4.3.1 and the relay's retry is sent), and a big
//! message is parsed off the async workers, so a small one on another session is answered first.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::gateway::{self, RECIPIENT, SENDER};
use common::{Client, expect};
use tokio::net::TcpStream;

/// Connects and opens a transaction up to the reply to DATA (`size` as SIZE=, when given).
async fn open(addr: SocketAddr, size: Option<usize>) -> (Client<TcpStream>, String) {
    let mut client = Client::new(TcpStream::connect(addr).await.unwrap());
    expect(&client.reply().await, "220");
    let size = size.map(|size| format!(" SIZE={size}")).unwrap_or_default();
    client
        .send(
            format!("EHLO mail.client.test\r\nMAIL FROM:<{SENDER}>{size}\r\nRCPT TO:<{RECIPIENT}>\r\nDATA\r\n")
                .as_bytes(),
        )
        .await;
    expect(&client.reply().await, "250-");
    expect(&client.reply().await, "250 2.1.0");
    expect(&client.reply().await, "250 2.1.5");
    let data = client.reply().await;
    (client, data)
}

/// A message of about `size` bytes of text, its own Message-ID, ended by the end marker.
fn message(id: &str, size: usize) -> Vec<u8> {
    let mut message = format!(
        "From: Alice <{SENDER}>\r\nSubject: report {id}\r\nMessage-ID: <{id}@corp.test>\r\n\r\nPump {id} failed\r\n"
    )
    .into_bytes();
    let line = format!("{}\r\n", "filler ".repeat(10));
    while message.len() + line.len() < size {
        message.extend_from_slice(line.as_bytes());
    }
    message.extend_from_slice(b".\r\n");
    message
}

/// With a budget of 1 MiB: a session holding 600,000 bytes leaves too little for a second one
/// that declares as much (452 4.3.1 at DATA) and for one that declares nothing and then sends
/// 600,000 (452 4.3.1 after its end, read to the end so the session stays in step). Both are
/// temporary: once the first message is done, their retries are sent, so nothing is lost.
#[tokio::test]
async fn over_the_budget_gets_452_and_the_retry_is_sent() {
    let gw = gateway::start(&["--max-message-size", "1M", "--buffer-budget", "1M"]).await;
    let (mut first, data) = open(gw.addr, Some(600_000)).await;
    expect(&data, "354");
    let first_message = message("first", 600_000);
    first.send(&first_message[..300_000]).await;

    let (mut declared, data) = open(gw.addr, Some(600_000)).await;
    expect(&data, "452 4.3.1");
    assert!(data.contains("try again later"), "{data}");

    let (mut undeclared, data) = open(gw.addr, None).await;
    expect(&data, "354");
    undeclared.send(&message("undeclared", 600_000)).await;
    expect(&undeclared.reply().await, "452 4.3.1");
    expect(&undeclared.command("NOOP").await, "250 2.0.0 OK");

    first.send(&first_message[300_000..]).await;
    expect(&first.reply().await, "250 2.0.0");

    // The relays retry, in the same sessions, and now there is room.
    for (client, id) in [(&mut declared, "declared"), (&mut undeclared, "undeclared")] {
        expect(&client.command("RSET").await, "250");
        expect(
            &client
                .command(&format!("MAIL FROM:<{SENDER}> SIZE=600000"))
                .await,
            "250",
        );
        expect(
            &client.command(&format!("RCPT TO:<{RECIPIENT}>")).await,
            "250",
        );
        expect(&client.command("DATA").await, "354");
        client.send(&message(id, 600_000)).await;
        expect(&client.reply().await, "250 2.0.0");
    }
    let mut subjects: Vec<String> = gw
        .jobs()
        .await
        .into_iter()
        .map(|job| job.origin.unwrap().subject)
        .collect();
    subjects.sort();
    assert_eq!(
        subjects,
        ["report declared", "report first", "report undeclared"]
    );
    // Every reservation was given back.
    assert_eq!(gw.budget.available(), gw.budget.total());
    gw.cleanup().await;
}

/// The kernel's queues of the socket `local` -> `remote` (`tx_queue:rx_queue` in /proc/net/tcp):
/// bytes sent but not yet acknowledged by the peer, and bytes received that the application has
/// not read; `None` when there is no such socket.
fn queues(local: SocketAddr, remote: SocketAddr) -> Option<(u64, u64)> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let hex = |addr: SocketAddr| match addr {
        SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        ),
        SocketAddr::V6(_) => String::new(),
    };
    let (local, remote) = (hex(local), hex(remote));
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) == Some(&local.as_str()) && fields.get(2) == Some(&remote.as_str()) {
            let (tx, rx) = fields.get(4)?.split_once(':')?;
            Some((
                u64::from_str_radix(tx, 16).ok()?,
                u64::from_str_radix(rx, 16).ok()?,
            ))
        } else {
            None
        }
    })
}

/// A 20 MB message (a base64 attachment: seconds of parsing in a debug build) and, once ingest
/// has read all of it, a small message on another session: the small one's 250 comes first. The
/// server runs on this test's single thread, as a busy worker would: parsed there, the big
/// message held up every other session until it was done (and this test's own task too, so the
/// small message was not even sent before the big one's 250).
#[tokio::test]
async fn a_small_message_is_answered_while_a_big_one_is_parsed() {
    let gw = gateway::start(&[]).await;
    // A first message opens the connections to Redis and RabbitMQ (the first publish waits for
    // the broker's handshake, which would hold both messages below alike).
    let (mut warm, data) = open(gw.addr, None).await;
    expect(&data, "354");
    warm.send(&message("warm-up", 100)).await;
    expect(&warm.reply().await, "250 2.0.0");
    let (mut big, data) = open(gw.addr, Some(21_000_000)).await;
    expect(&data, "354");
    let (mut small, data) = open(gw.addr, None).await;
    expect(&data, "354");

    let mut body = format!(
        "From: Alice <{SENDER}>\r\nSubject: big\r\nMessage-ID: <big-{}@corp.test>\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nSee the attached report.\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n",
        uuid::Uuid::new_v4()
    )
    .into_bytes();
    let line = format!("{}\r\n", "QUJD".repeat(19));
    while body.len() < 20_000_000 {
        body.extend_from_slice(line.as_bytes());
    }
    body.extend_from_slice(b"--b--\r\n.\r\n");
    let big_local = big.stream.local_addr().unwrap();
    big.send(&body).await;
    // Bounded poll: until every byte of the big message has left the client's socket and ingest
    // has read it from its own (either queue alone can be empty while the other is not).
    let started = tokio::time::Instant::now();
    while queues(big_local, gw.addr).map(|(tx, _)| tx) != Some(0)
        || queues(gw.addr, big_local).map(|(_, rx)| rx) != Some(0)
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "ingest did not read the big message within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    small
        .send(
            format!(
                "From: Alice <{SENDER}>\r\nSubject: small\r\nMessage-ID: <small-{}@corp.test>\r\n\r\nPump 4 failed\r\n.\r\n",
                uuid::Uuid::new_v4()
            )
            .as_bytes(),
        )
        .await;
    let sent = std::time::Instant::now();
    let order = std::sync::Mutex::new(Vec::new());
    let answered = |name: &'static str, reply: String| {
        expect(&reply, "250 2.0.0");
        order.lock().unwrap().push((name, sent.elapsed()));
    };
    let limit = Duration::from_secs(120);
    tokio::join!(
        async { answered("big", big.reply_within(limit).await) },
        async { answered("small", small.reply_within(limit).await) },
    );
    let order = order.into_inner().unwrap();
    eprintln!("250s after the small message was sent: {order:?}");
    let names: Vec<&str> = order.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        names,
        ["small", "big"],
        "250s after the small message was sent: {order:?}"
    );
    assert_eq!(gw.jobs().await.len(), 3);
    gw.cleanup().await;
}
