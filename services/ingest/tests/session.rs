//! The SMTP session over in-memory streams: every reply code, pipelining, dot-stuffing, SMTP
//! smuggling attempts, limits, XCLIENT, XFORWARD, PROXY and shutdown, without a socket.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{Client, Recorder, expect, session_config};
use email2sms_ingest::smtp::command::ReversePath;
use email2sms_ingest::smtp::conn::{Deadline, Phase};
use email2sms_ingest::smtp::proxy;
use email2sms_ingest::smtp::{NotReadyHandler, Session, SessionConfig, SessionEnd};
use tokio::io::DuplexStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

const PEER: &str = "203.0.113.9:40000";
const RELAY: &str = "10.1.2.3:50000";

struct Harness {
    client: Client<DuplexStream>,
    handler: Arc<Recorder>,
    phase: watch::Sender<Phase>,
    session: JoinHandle<SessionEnd>,
}

fn start_with(config: SessionConfig, peer: &str) -> Harness {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let handler = Recorder::new();
    let (phase, phase_rx) = watch::channel(Phase::Running);
    let peer: SocketAddr = peer.parse().unwrap();
    let session =
        tokio::spawn(Session::new(server, peer, Arc::new(config), handler.clone(), phase_rx).run());
    Harness {
        client: Client::new(client),
        handler,
        phase,
        session,
    }
}

/// A session from an untrusted peer, greeting already read.
async fn start() -> Harness {
    let mut h = start_with(session_config(&["10.0.0.0/8"]), PEER);
    expect(&h.client.reply().await, "220 ingest.test ESMTP");
    h
}

async fn ehlo(h: &mut Harness) -> String {
    let reply = h.client.command("EHLO client.example.com").await;
    expect(&reply, "250-ingest.test greets client.example.com");
    reply
}

#[tokio::test]
async fn ehlo_announces_extensions_without_starttls_or_xclient_for_strangers() {
    let mut h = start().await;
    let reply = ehlo(&mut h).await;
    for extension in [
        "PIPELINING",
        "SIZE 10000",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
    ] {
        assert!(reply.contains(extension), "{extension} missing: {reply}");
    }
    assert!(!reply.contains("STARTTLS"), "{reply}");
    assert!(!reply.contains("XCLIENT"), "{reply}");
    expect(
        &h.client.command("STARTTLS").await,
        "502 5.5.1 STARTTLS is not available",
    );
    expect(
        &h.client.command("HELO old.example").await,
        "250 ingest.test greets old.example",
    );
    expect(&h.client.command("NOOP").await, "250 2.0.0");
    expect(&h.client.command("VRFY 64211234567").await, "252 2.5.0");
    expect(&h.client.command("HELP").await, "214 2.0.0");
    expect(&h.client.command("QUIT").await, "221 2.0.0");
    assert!(h.client.closed().await);
    assert_eq!(h.session.await.unwrap(), SessionEnd::Quit);
}

#[tokio::test]
async fn a_message_reaches_the_handler_with_its_envelope_and_exact_content() {
    let mut h = start().await;
    ehlo(&mut h).await;
    expect(
        &h.client
            .command("MAIL FROM:<Alice@Example.com> BODY=8BITMIME SIZE=200")
            .await,
        "250 2.1.0",
    );
    expect(
        &h.client
            .command("RCPT TO:<64211234567@SMS.example.net>")
            .await,
        "250 2.1.5",
    );
    expect(
        &h.client
            .command("RCPT TO:<+6421-765-4321@sms.localhost>")
            .await,
        "250 2.1.5",
    );
    // The same recipient twice is accepted once.
    expect(
        &h.client
            .command("RCPT TO:<64211234567@sms.example.net>")
            .await,
        "250 2.1.5",
    );
    expect(&h.client.command("DATA").await, "354 ");
    h.client
        .send("Subject: hi\r\n\r\nKia ora — café\r\n..leading dot\r\n.\r\n".as_bytes())
        .await;
    expect(&h.client.reply().await, "250 2.0.0 queued as SMS");
    let messages = h.handler.messages();
    assert_eq!(messages.len(), 1);
    let (envelope, content) = &messages[0];
    assert_eq!(
        content,
        "Subject: hi\r\n\r\nKia ora — café\r\n.leading dot\r\n".as_bytes()
    );
    assert_eq!(envelope.reverse_path.to_string(), "<Alice@example.com>");
    let recipients: Vec<String> = envelope.recipients.iter().map(|r| r.to_string()).collect();
    assert_eq!(
        recipients,
        [
            "64211234567@sms.example.net",
            "+6421-765-4321@sms.localhost"
        ]
    );
    assert_eq!(envelope.declared_size, Some(200));
    assert_eq!(envelope.client.ip.to_string(), "203.0.113.9");
    assert_eq!(envelope.client.helo.as_deref(), Some("client.example.com"));
    assert!(!envelope.client.stated_by_relay);
    // The session is ready for the next message.
    expect(&h.client.command("MAIL FROM:<>").await, "250 2.1.0");
    expect(&h.client.command("RSET").await, "250 2.0.0");
    expect(
        &h.client
            .command("RCPT TO:<64211234567@sms.example.net>")
            .await,
        "503 5.5.1",
    );
}

#[tokio::test]
async fn dot_stuffing_is_undone_exactly() {
    let mut h = start().await;
    ehlo(&mut h).await;
    h.client
        .send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<64211234567@sms.example.net>\r\nDATA\r\n")
        .await;
    expect(&h.client.reply().await, "250");
    expect(&h.client.reply().await, "250");
    expect(&h.client.reply().await, "354");
    // A first line of "..", a line "...", a dot mid-line, an empty line and a line " ".
    h.client.send(b"..\r\n...\r\na.b\r\n\r\n .\r\n.\r\n").await;
    expect(&h.client.reply().await, "250");
    let messages = h.handler.messages();
    assert_eq!(messages[0].1, b".\r\n..\r\na.b\r\n\r\n .\r\n".to_vec());
}

#[tokio::test]
async fn an_empty_message_ends_at_the_first_dot_line() {
    let mut h = start().await;
    ehlo(&mut h).await;
    h.client
        .send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<64211234567@sms.example.net>\r\nDATA\r\n")
        .await;
    for _ in 0..3 {
        h.client.reply().await;
    }
    h.client.send(b".\r\nNOOP\r\n").await;
    expect(&h.client.reply().await, "250 2.0.0 queued");
    expect(&h.client.reply().await, "250 2.0.0 OK");
    assert_eq!(h.handler.messages()[0].1, b"".to_vec());
}

/// SMTP smuggling: end-of-data markers other than CRLF.CRLF must not end the message, so a
/// second message hidden behind them is never executed as commands; and the message holding
/// them is refused (554 5.5.2, bare <CR> or <LF>), so nothing behind them reaches an SMS either.
#[tokio::test]
async fn bare_lf_and_other_fake_end_markers_never_end_data() {
    for fake_end in [
        &b"\n.\n"[..],
        b"\r\n.\n",
        b"\n.\r\n",
        b"\r.\r\n",
        b"\r\n.\r",
        b"\r\n.\r\r\n",
    ] {
        let mut h = start().await;
        ehlo(&mut h).await;
        h.client
            .send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<64211234567@sms.example.net>\r\nDATA\r\n")
            .await;
        for _ in 0..3 {
            h.client.reply().await;
        }
        let mut body = b"Subject: one\r\n\r\nfirst".to_vec();
        body.extend_from_slice(fake_end);
        body.extend_from_slice(
            b"MAIL FROM:<evil@example.com>\r\nRCPT TO:<64299999999@sms.example.net>\r\nDATA\r\nsmuggled\r\n.\r\n",
        );
        h.client.send(&body).await;
        let reply = h.client.reply().await;
        expect(&reply, "554 5.5.2 Error: bare <");
        // Exactly one reply: nothing after the fake marker ran as a command.
        expect(&h.client.command("NOOP").await, "250 2.0.0 OK");
        assert!(h.handler.messages().is_empty(), "{fake_end:?}");
    }
}

#[tokio::test]
async fn pipelined_commands_get_their_replies_in_order() {
    let mut h = start().await;
    h.client
        .send(
            b"EHLO pipe.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<64211234567@sms.example.net>\r\nRCPT TO:<bob@elsewhere.example>\r\nRCPT TO:<64211234568@sms.example.net>\r\nDATA\r\n",
        )
        .await;
    expect(&h.client.reply().await, "250-ingest.test");
    expect(&h.client.reply().await, "250 2.1.0");
    expect(&h.client.reply().await, "250 2.1.5");
    expect(&h.client.reply().await, "550 5.7.1 relaying denied");
    expect(&h.client.reply().await, "250 2.1.5");
    expect(&h.client.reply().await, "354");
    // Body, end and the next transaction in one write.
    h.client
        .send(b"hello\r\n.\r\nMAIL FROM:<b@example.com>\r\nRCPT TO:<64211234569@sms.example.net>\r\nDATA\r\n")
        .await;
    expect(&h.client.reply().await, "250 2.0.0 queued");
    expect(&h.client.reply().await, "250 2.1.0");
    expect(&h.client.reply().await, "250 2.1.5");
    expect(&h.client.reply().await, "354");
    h.client.send(b"second\r\n.\r\nQUIT\r\n").await;
    expect(&h.client.reply().await, "250 2.0.0 queued");
    expect(&h.client.reply().await, "221");
    let messages = h.handler.messages();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0].0.recipients.len(), 2);
}

#[tokio::test]
async fn recipients_are_checked_at_once() {
    let mut h = start().await;
    ehlo(&mut h).await;
    expect(&h.client.command("MAIL FROM:<a@example.com>").await, "250");
    let relay = h.client.command("RCPT TO:<bob@gmail.com>").await;
    expect(&relay, "550 5.7.1 relaying denied");
    assert!(relay.contains("sms.example.net"), "{relay}");
    expect(
        &h.client.command("RCPT TO:<64211234567@[192.0.2.1]>").await,
        "550 5.7.1",
    );
    let bad = h.client.command("RCPT TO:<bob@sms.example.net>").await;
    expect(&bad, "550 5.1.3");
    assert!(bad.contains("64211234567@sms.example.net"), "{bad}");
    expect(
        &h.client.command("RCPT TO:<123@sms.example.net>").await,
        "550 5.1.3",
    );
    expect(&h.client.command("RCPT TO:bob").await, "501 5.1.3");
    expect(
        &h.client.command("DATA").await,
        "554 5.5.1 no valid recipients",
    );
    for n in 1..=3 {
        expect(
            &h.client
                .command(&format!("RCPT TO:<6421123456{n}@sms.example.net>"))
                .await,
            "250 2.1.5",
        );
    }
    expect(
        &h.client
            .command("RCPT TO:<64211234569@sms.example.net>")
            .await,
        "452 4.5.3 too many recipients",
    );
}

#[tokio::test]
async fn utf8_addresses_need_smtputf8() {
    let mut h = start().await;
    ehlo(&mut h).await;
    expect(
        &h.client.command("MAIL FROM:<jöhn@example.com>").await,
        "553 5.6.7",
    );
    expect(
        &h.client
            .command("MAIL FROM:<jöhn@bücher.example> SMTPUTF8")
            .await,
        "250",
    );
    expect(
        &h.client
            .command("RCPT TO:<64211234567@sms.example.net>")
            .await,
        "250",
    );
}

#[tokio::test]
async fn the_size_limit_is_enforced_at_mail_and_while_reading() {
    let mut h = start().await;
    ehlo(&mut h).await;
    expect(
        &h.client
            .command("MAIL FROM:<a@example.com> SIZE=10001")
            .await,
        "552 5.3.4",
    );
    expect(
        &h.client
            .command("MAIL FROM:<a@example.com> SIZE=10000")
            .await,
        "250",
    );
    expect(
        &h.client
            .command("RCPT TO:<64211234567@sms.example.net>")
            .await,
        "250",
    );
    expect(&h.client.command("DATA").await, "354");
    let line = format!("{}\r\n", "x".repeat(98));
    for _ in 0..150 {
        h.client.send(line.as_bytes()).await;
    }
    h.client.send(b".\r\n").await;
    expect(&h.client.reply().await, "552 5.3.4 the message is too big");
    assert!(h.handler.messages().is_empty());
    // Still in step: the next message goes through.
    h.client
        .send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<64211234567@sms.example.net>\r\nDATA\r\n")
        .await;
    for _ in 0..3 {
        h.client.reply().await;
    }
    h.client.send(b"small\r\n.\r\n").await;
    expect(&h.client.reply().await, "250 2.0.0 queued");
}

#[tokio::test]
async fn over_long_lines_are_refused_without_losing_step() {
    let mut h = start().await;
    ehlo(&mut h).await;
    let long = format!("NOOP {}", "x".repeat(2000));
    expect(&h.client.command(&long).await, "500 5.5.2 line too long");
    expect(&h.client.command("MAIL FROM:<a@example.com>").await, "250");
    expect(
        &h.client
            .command("RCPT TO:<64211234567@sms.example.net>")
            .await,
        "250",
    );
    expect(&h.client.command("DATA").await, "354");
    h.client
        .send(format!("ok\r\n{}\r\n.\r\n", "y".repeat(1200)).as_bytes())
        .await;
    expect(
        &h.client.reply().await,
        "552 5.3.4 the message has a line longer than 1000",
    );
    expect(&h.client.command("NOOP").await, "250");
}

#[tokio::test]
async fn commands_out_of_sequence_and_bad_syntax_are_refused_then_the_session_closes() {
    let mut h = start().await;
    expect(
        &h.client.command("MAIL FROM:<a@example.com>").await,
        "503 5.5.1 say EHLO",
    );
    expect(&h.client.command("FOO").await, "500 5.5.1");
    ehlo(&mut h).await;
    expect(&h.client.command("DATA").await, "503 5.5.1");
    expect(
        &h.client
            .command("MAIL FROM:<a@example.com> BODY=BINARYMIME")
            .await,
        "555 5.5.4",
    );
    // The fifth error closes the session.
    expect(
        &h.client.command("MAIL FROM:<a@@example.com>").await,
        "421 4.7.0 too many errors",
    );
    assert!(h.client.closed().await);
    assert_eq!(h.session.await.unwrap(), SessionEnd::TooManyErrors);
}

#[tokio::test]
async fn an_early_refusal_at_mail_from_comes_from_the_handler() {
    let mut h = start().await;
    ehlo(&mut h).await;
    expect(
        &h.client.command("MAIL FROM:<x@refused.example>").await,
        "550 5.7.1 this sender may not send SMS",
    );
    expect(
        &h.client
            .command("RCPT TO:<64211234567@sms.example.net>")
            .await,
        "503",
    );
}

#[tokio::test]
async fn silence_ends_the_session_with_421() {
    let mut config = session_config(&[]);
    config.limits.command_timeout = Duration::from_millis(200);
    let mut h = start_with(config, PEER);
    expect(&h.client.reply().await, "220");
    expect(&h.client.reply().await, "421 4.4.2");
    assert!(h.client.closed().await);
    assert_eq!(
        h.session.await.unwrap(),
        SessionEnd::Timeout(Deadline::Idle)
    );

    let mut config = session_config(&[]);
    config.limits.data_timeout = Duration::from_millis(200);
    let mut h = start_with(config, PEER);
    h.client.reply().await;
    h.client
        .send(b"EHLO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<64211234567@sms.example.net>\r\nDATA\r\npartial")
        .await;
    for _ in 0..4 {
        h.client.reply().await;
    }
    expect(&h.client.reply().await, "421 4.4.2");
    assert!(h.handler.messages().is_empty());
}

#[tokio::test]
async fn xclient_is_refused_from_strangers_and_honoured_from_trusted_relays() {
    let mut h = start().await;
    ehlo(&mut h).await;
    expect(
        &h.client.command("XCLIENT ADDR=192.0.2.50").await,
        "550 5.7.0 XCLIENT is accepted only from trusted relays",
    );

    let mut h = start_with(session_config(&["10.0.0.0/8"]), RELAY);
    expect(&h.client.reply().await, "220");
    let reply = h.client.command("EHLO relay.internal").await;
    assert!(reply.contains("XCLIENT ADDR NAME HELO"), "{reply}");
    expect(
        &h.client
            .command("XCLIENT ADDR=192.0.2.50 NAME=mx.sender.example HELO=mx.sender.example")
            .await,
        "220 ingest.test",
    );
    h.client
        .send(b"EHLO relay.internal\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<64211234567@sms.example.net>\r\nDATA\r\n")
        .await;
    for _ in 0..4 {
        h.client.reply().await;
    }
    h.client.send(b"hi\r\n.\r\n").await;
    expect(&h.client.reply().await, "250");
    let client = &h.handler.messages()[0].0.client;
    assert_eq!(client.ip.to_string(), "192.0.2.50");
    assert_eq!(client.peer.to_string(), RELAY);
    assert_eq!(client.helo.as_deref(), Some("mx.sender.example"));
    assert_eq!(client.reverse_name.as_deref(), Some("mx.sender.example"));
    assert!(client.stated_by_relay);
    // Not inside a transaction.
    expect(&h.client.command("MAIL FROM:<a@example.com>").await, "250");
    expect(
        &h.client.command("XCLIENT ADDR=192.0.2.51").await,
        "503 5.5.1",
    );
}

/// Sends one message in the open session (EHLO done) and returns the client its envelope named.
async fn one_message(h: &mut Harness) -> email2sms_ingest::smtp::ClientInfo {
    let before = h.handler.messages().len();
    h.client
        .send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<64211234567@sms.example.net>\r\nDATA\r\n")
        .await;
    for expected in ["250 2.1.0", "250 2.1.5", "354"] {
        expect(&h.client.reply().await, expected);
    }
    h.client.send(b"hi\r\n.\r\n").await;
    expect(&h.client.reply().await, "250");
    let messages = h.handler.messages();
    assert_eq!(messages.len(), before + 1);
    messages[before].0.client.clone()
}

#[tokio::test]
async fn xforward_is_offered_and_honoured_only_for_trusted_relays() {
    let mut h = start().await;
    let reply = ehlo(&mut h).await;
    assert!(!reply.contains("XFORWARD"), "{reply}");
    expect(
        &h.client.command("XFORWARD ADDR=192.0.2.77").await,
        "550 5.7.0 XFORWARD is accepted only from trusted relays",
    );
    // The stranger is still itself.
    assert_eq!(one_message(&mut h).await.ip.to_string(), "203.0.113.9");

    let mut h = start_with(session_config(&["10.0.0.0/8"]), RELAY);
    expect(&h.client.reply().await, "220");
    let reply = h.client.command("EHLO relay.internal").await;
    assert!(
        reply.contains("250 XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE"),
        "{reply}"
    );
    // As Postfix sends it: two commands, pipelined with MAIL FROM.
    h.client
        .send(b"XFORWARD NAME=mx.sender.example ADDR=192.0.2.77 PORT=40123 PROTO=ESMTP HELO=mx.sender.example\r\nXFORWARD IDENT=4dLqZk2Fz1z9s SOURCE=REMOTE\r\n")
        .await;
    expect(&h.client.reply().await, "250 2.0.0");
    expect(&h.client.reply().await, "250 2.0.0");
    let client = one_message(&mut h).await;
    assert_eq!(client.ip.to_string(), "192.0.2.77");
    assert_eq!(client.peer.to_string(), RELAY);
    assert_eq!(client.port, Some(40123));
    assert_eq!(client.helo.as_deref(), Some("mx.sender.example"));
    assert_eq!(client.reverse_name.as_deref(), Some("mx.sender.example"));
    assert_eq!(client.relay_queue_id.as_deref(), Some("4dLqZk2Fz1z9s"));
    assert!(client.stated_by_relay);
}

#[tokio::test]
async fn xforward_describes_only_the_next_transaction() {
    let mut h = start_with(session_config(&["10.0.0.0/8"]), RELAY);
    expect(&h.client.reply().await, "220");
    h.client.command("EHLO relay.internal").await;
    expect(
        &h.client
            .command("XFORWARD ADDR=192.0.2.77 HELO=mx.one.example IDENT=ONE")
            .await,
        "250 2.0.0",
    );
    assert_eq!(one_message(&mut h).await.ip.to_string(), "192.0.2.77");
    // The next message over the same (cached) connection, without XFORWARD: the relay's own.
    let client = one_message(&mut h).await;
    assert_eq!(client.ip.to_string(), "10.1.2.3");
    assert_eq!(client.helo.as_deref(), Some("relay.internal"));
    assert_eq!(client.relay_queue_id, None);
    assert!(!client.stated_by_relay);
    // RSET ends what XFORWARD said too.
    expect(
        &h.client.command("XFORWARD ADDR=192.0.2.78").await,
        "250 2.0.0",
    );
    expect(&h.client.command("RSET").await, "250 2.0.0");
    assert_eq!(one_message(&mut h).await.ip.to_string(), "10.1.2.3");
    // Not inside a transaction: that client is already decided.
    expect(&h.client.command("MAIL FROM:<a@example.com>").await, "250");
    expect(
        &h.client.command("XFORWARD ADDR=192.0.2.79").await,
        "503 5.5.1 XFORWARD is not allowed inside a mail transaction",
    );
    expect(&h.client.command("RSET").await, "250");
    // Malformed attributes say what is wrong, and change nothing.
    expect(
        &h.client.command("XFORWARD ADDR=mx.sender.example").await,
        "501 5.5.4 XFORWARD: `mx.sender.example` is not an IP address",
    );
    expect(
        &h.client.command("XFORWARD LOGIN=alice").await,
        "501 5.5.4 XFORWARD: unknown attribute `LOGIN`",
    );
    assert_eq!(one_message(&mut h).await.ip.to_string(), "10.1.2.3");
}

async fn proxied_client_ip(header: &[u8]) -> String {
    let mut h = start_with(session_config(&["10.0.0.0/8"]), RELAY);
    h.client.send(header).await;
    expect(&h.client.reply().await, "220");
    h.client
        .send(b"EHLO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<64211234567@sms.example.net>\r\nDATA\r\n")
        .await;
    for _ in 0..4 {
        h.client.reply().await;
    }
    h.client.send(b"hi\r\n.\r\n").await;
    expect(&h.client.reply().await, "250");
    let client = h.handler.messages()[0].0.client.clone();
    assert!(client.stated_by_relay);
    client.ip.to_string()
}

#[tokio::test]
async fn proxy_headers_from_a_trusted_relay_name_the_client() {
    assert_eq!(
        proxied_client_ip(b"PROXY TCP4 192.0.2.77 10.0.0.1 40000 25\r\n").await,
        "192.0.2.77"
    );
    let v2 = proxy::encode_v2(
        "[2001:db8::77]:40000".parse().unwrap(),
        "[2001:db8::1]:25".parse().unwrap(),
    );
    assert_eq!(proxied_client_ip(&v2).await, "2001:db8::77");
    // A trusted relay that sends no header is greeted after the short wait.
    let mut h = start_with(session_config(&["10.0.0.0/8"]), RELAY);
    expect(&h.client.reply().await, "220");
    // A malformed header is refused.
    let mut h = start_with(session_config(&["10.0.0.0/8"]), RELAY);
    h.client.send(b"PROXY TCP4 nonsense\r\n").await;
    expect(&h.client.reply().await, "421 4.7.0 malformed PROXY");
}

#[tokio::test]
async fn proxy_headers_from_strangers_are_refused() {
    let v2 = proxy::encode_v2(
        "192.0.2.77:40000".parse().unwrap(),
        "10.0.0.1:25".parse().unwrap(),
    );
    for header in [&b"PROXY TCP4 192.0.2.77 10.0.0.1 40000 25\r\n"[..], &v2] {
        let mut h = start_with(session_config(&[]), PEER);
        h.client.send(header).await;
        expect(&h.client.reply().await, "220");
        expect(
            &h.client.reply().await,
            "550 5.7.0 PROXY protocol headers are accepted only from trusted relays",
        );
        assert!(h.client.closed().await);
        assert_eq!(h.session.await.unwrap(), SessionEnd::ProxyRefused);
    }
}

#[tokio::test]
async fn a_panicking_handler_answers_451_and_the_session_goes_on() {
    let mut h = start().await;
    ehlo(&mut h).await;
    h.client
        .send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<99911234567@sms.example.net>\r\nDATA\r\n")
        .await;
    for _ in 0..3 {
        h.client.reply().await;
    }
    h.client.send(b"boom\r\n.\r\n").await;
    expect(&h.client.reply().await, "451 4.3.0");
    expect(&h.client.command("NOOP").await, "250");
}

#[tokio::test]
async fn the_not_ready_handler_refuses_every_message_with_a_temporary_451() {
    let (client, server) = tokio::io::duplex(4096);
    let (_phase, phase_rx) = watch::channel(Phase::Running);
    tokio::spawn(
        Session::new(
            server,
            PEER.parse().unwrap(),
            Arc::new(session_config(&[])),
            Arc::new(NotReadyHandler),
            phase_rx,
        )
        .run(),
    );
    let mut client = Client::new(client);
    client.reply().await;
    client
        .send(b"EHLO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<64211234567@sms.example.net>\r\nDATA\r\n")
        .await;
    for _ in 0..4 {
        client.reply().await;
    }
    client.send(b"hi\r\n.\r\n").await;
    expect(
        &client.reply().await,
        "451 4.3.0 this gateway cannot accept mail yet; your server will retry",
    );
}

#[tokio::test]
async fn shutdown_closes_idle_sessions_and_lets_messages_in_progress_finish() {
    let mut idle = start().await;
    ehlo(&mut idle).await;
    let mut busy = start().await;
    ehlo(&mut busy).await;
    expect(
        &busy.client.command("MAIL FROM:<a@example.com>").await,
        "250",
    );
    idle.phase.send(Phase::Draining).unwrap();
    busy.phase.send(Phase::Draining).unwrap();
    expect(&idle.client.reply().await, "421 4.3.2");
    assert_eq!(idle.session.await.unwrap(), SessionEnd::Shutdown);
    // The transaction in progress completes; the next command after it is refused.
    expect(
        &busy
            .client
            .command("RCPT TO:<64211234567@sms.example.net>")
            .await,
        "250",
    );
    expect(&busy.client.command("DATA").await, "354");
    busy.client.send(b"hi\r\n.\r\n").await;
    expect(&busy.client.reply().await, "250 2.0.0 queued");
    expect(&busy.client.reply().await, "421 4.3.2");

    // When the grace period is over, even a message in progress is cut off with 421.
    let mut late = start().await;
    ehlo(&mut late).await;
    late.client
        .send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<64211234567@sms.example.net>\r\nDATA\r\n")
        .await;
    for _ in 0..3 {
        late.client.reply().await;
    }
    late.client.send(b"half a message\r\n").await;
    late.phase.send(Phase::Closing).unwrap();
    expect(&late.client.reply().await, "421 4.3.2");
    assert!(late.handler.messages().is_empty());
}

#[tokio::test]
async fn the_reverse_path_of_a_bounce_is_null() {
    let mut h = start().await;
    ehlo(&mut h).await;
    h.client
        .send(b"MAIL FROM:<>\r\nRCPT TO:<64211234567@sms.example.net>\r\nDATA\r\nx\r\n.\r\n")
        .await;
    for _ in 0..3 {
        h.client.reply().await;
    }
    expect(&h.client.reply().await, "250");
    assert_eq!(h.handler.messages()[0].0.reverse_path, ReversePath::Null);
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config { cases: 64, ..Default::default() })]

    /// Whatever a client sends, the session answers or closes; it never panics or hangs.
    #[test]
    fn random_input_never_panics(
        chunks in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::collection::vec(proptest::num::u8::ANY, 0..200),
                proptest::sample::select(vec![
                    b"EHLO x\r\n".to_vec(),
                    b"MAIL FROM:<a@example.com>\r\n".to_vec(),
                    b"RCPT TO:<64211234567@sms.example.net>\r\n".to_vec(),
                    b"DATA\r\n".to_vec(),
                    b"\r\n.\r\n".to_vec(),
                    b".\r\n".to_vec(),
                    b"XCLIENT ADDR=1.2.3.4\r\n".to_vec(),
                    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(),
                    b"\n.\n".to_vec(),
                ]),
            ],
            0..20,
        ),
        trusted in proptest::bool::ANY,
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let mut config = session_config(&["10.0.0.0/8"]);
            config.limits.command_timeout = Duration::from_millis(300);
            config.limits.data_timeout = Duration::from_millis(300);
            config.limits.proxy_wait = Duration::from_millis(20);
            let peer = if trusted { RELAY } else { PEER };
            let h = start_with(config, peer);
            let Harness { client, session, .. } = h;
            let mut stream = client.stream;
            let writer = async {
                use tokio::io::AsyncWriteExt;
                for chunk in &chunks {
                    if stream.write_all(chunk).await.is_err() {
                        break;
                    }
                }
                // End of input: the session must notice and end.
                let _ = stream.shutdown().await;
                let mut sink = Vec::new();
                let _ = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut sink).await;
            };
            let (_, end) = tokio::join!(writer, session);
            assert!(end.is_ok(), "the session panicked");
        });
    }
}
