//! What a message's bytes can make of an SMS job, through the real listener and pipeline into
//! RabbitMQ: characters that Postgres or an SMSC cannot take never reach a job (issue 11: a NUL
//! got 250 and was then never sent), and no bare line feed smuggles text behind a fake end of
//! DATA (issue 11), under either `EMAIL2SMS_INGEST_BARE_LF` setting.

mod common;

use common::gateway::{self, RECIPIENT, SENDER};
use common::{Client, expect};
use tokio::net::TcpStream;

#[tokio::test]
async fn a_nul_and_other_control_characters_never_reach_a_job() {
    let gw = gateway::start(&[]).await;
    let message = gateway::mail(
        "nul-1@corp.test",
        "Alert\u{0}\u{1} pump",
        "Pump\u{0} 3\u{1} failed\u{7f}\tnow\u{0}\u{0}\nsecond\u{8} line\u{9b}",
    );
    assert!(message.contains(&0), "the test sends a NUL");
    let reply = gateway::smtplib(gw.addr, SENDER, &[RECIPIENT], &message).await;
    expect(&reply, "250 2.0.0");
    let jobs = gw.jobs().await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let job = &jobs[0];
    // Removed, not replaced: a UTF-16 text misread as 8-bit ("P\0u\0m\0p") reads again.
    assert_eq!(job.text, "Pump 3 failed now\nsecond line");
    let origin = job.origin.as_ref().unwrap();
    assert_eq!(origin.subject, "Alert pump");
    for text in [
        &job.text,
        &origin.subject,
        &origin.message_id,
        &origin.from_address,
    ] {
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "a control character reached the job: {text:?}"
        );
    }
    gw.cleanup().await;
}

/// Sends one message whose body holds `marker` (a fake end of DATA) followed by a second,
/// smuggled transaction, over a raw socket; returns the reply to the message and the reply to a
/// NOOP after it.
async fn smuggle(addr: std::net::SocketAddr, marker: &[u8]) -> (String, String) {
    let mut client = Client::new(TcpStream::connect(addr).await.unwrap());
    expect(&client.reply().await, "220");
    client
        .send(
            format!(
                "EHLO mail.client.test\r\nMAIL FROM:<{SENDER}>\r\nRCPT TO:<{RECIPIENT}>\r\nDATA\r\n"
            )
            .as_bytes(),
        )
        .await;
    expect(&client.reply().await, "250-");
    expect(&client.reply().await, "250 2.1.0");
    expect(&client.reply().await, "250 2.1.5");
    expect(&client.reply().await, "354");
    let mut body = format!(
        "From: Alice <{SENDER}>\r\nSubject: one\r\nMessage-ID: <{}@corp.test>\r\n\r\nfirst",
        uuid::Uuid::new_v4()
    )
    .into_bytes();
    body.extend_from_slice(marker);
    body.extend_from_slice(
        format!(
            "MAIL FROM:<{SENDER}>\r\nRCPT TO:<+64219999999@sms.example.net>\r\nDATA\r\nFrom: <{SENDER}>\r\n\r\nsmuggled text\r\n.\r\n"
        )
        .as_bytes(),
    );
    client.send(&body).await;
    let reply = client.reply().await;
    let noop = client.command("NOOP").await;
    (reply, noop)
}

const MARKERS: [&[u8]; 3] = [b"\n.\n", b"\r\n.\n", b"\n.\r\n"];

/// The default (refuse, as Postfix's `smtpd_forbid_bare_newline`): 554 5.5.2 naming the bare
/// <LF>, the session still in step (the NOOP gets the next reply, so nothing after the fake marker
/// ran as a command), and no job at all.
#[tokio::test]
async fn a_bare_lf_is_refused_and_smuggles_nothing() {
    let gw = gateway::start(&[]).await;
    for marker in MARKERS {
        let (reply, noop) = smuggle(gw.addr, marker).await;
        expect(&reply, "554 5.5.2");
        assert!(reply.contains("bare <LF> received"), "{marker:?}: {reply}");
        expect(&noop, "250 2.0.0 OK");
    }
    let jobs = gw.jobs().await;
    assert!(jobs.is_empty(), "smuggled text reached a job: {jobs:?}");
    gw.cleanup().await;
}

/// `EMAIL2SMS_INGEST_BARE_LF=normalize` takes a bare LF as a line end for old clients, but a
/// single-dot line that is not the standard end still refuses the whole message.
#[tokio::test]
async fn normalize_accepts_bare_lf_lines_but_never_a_fake_end_of_data() {
    let gw = gateway::start(&["--bare-lf", "normalize"]).await;
    for marker in MARKERS {
        let (reply, noop) = smuggle(gw.addr, marker).await;
        expect(&reply, "554 5.5.2");
        assert!(reply.contains("<CR><LF>.<CR><LF>"), "{marker:?}: {reply}");
        expect(&noop, "250 2.0.0 OK");
    }
    assert!(gw.jobs().await.is_empty());
    // An old client's bare LF line ends (over a raw socket: smtplib would fix them): accepted,
    // the lines as lines.
    let mut client = Client::new(TcpStream::connect(gw.addr).await.unwrap());
    expect(&client.reply().await, "220");
    expect(&client.command("EHLO old.client.test").await, "250");
    expect(
        &client.command(&format!("MAIL FROM:<{SENDER}>")).await,
        "250",
    );
    expect(
        &client.command(&format!("RCPT TO:<{RECIPIENT}>")).await,
        "250",
    );
    expect(&client.command("DATA").await, "354");
    client
        .send(format!("From: <{SENDER}>\nSubject: Alert\n\nPump 3\nfailed\n\r\n.\r\n").as_bytes())
        .await;
    expect(&client.reply().await, "250 2.0.0");
    let jobs = gw.jobs().await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].text, "Pump 3\nfailed");
    gw.cleanup().await;
}
