//! Real SMTP clients (Python's smtplib, swaks) and raw TCP against the real listener on
//! 127.0.0.1: STARTTLS with a certificate made here, pipelining, an 8-bit UTF-8 body, XCLIENT from
//! trusted and untrusted peers, PROXY v1 and v2, connection limits, panics and shutdown.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{Client, Recorder, expect, session_config};
use email2sms_ingest::smtp::{self, ConnectionLimits, SessionConfig};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

struct Server {
    addr: SocketAddr,
    handler: Arc<Recorder>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

async fn start_server(config: SessionConfig, limits: ConnectionLimits) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = Recorder::new();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(smtp::serve(
        listener,
        Arc::new(config),
        limits,
        handler.clone(),
        async {
            let _ = stopped.await;
        },
        Duration::from_secs(2),
    ));
    Server {
        addr,
        handler,
        stop: Some(stop),
        task,
    }
}

/// Runs a program to completion off the async threads; returns (success, stdout + stderr).
async fn run(program: &str, args: Vec<String>) -> (bool, String) {
    let program = program.to_owned();
    tokio::task::spawn_blocking(move || {
        let output = Command::new(&program)
            .args(&args)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run {program} (scripts/ensure-tools installs it): {e}")
            });
        (
            output.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        )
    })
    .await
    .unwrap()
}

async fn python(script: &str, args: &[String]) -> String {
    let mut all = vec!["-c".to_owned(), script.to_owned()];
    all.extend_from_slice(args);
    let (ok, output) = run("python3", all).await;
    assert!(ok, "python failed:\n{output}");
    output
}

/// A self-signed certificate for 127.0.0.1, made with the openssl command.
fn make_certificate(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    (cert, key)
}

const SMTPLIB_UTF8: &str = r#"
import smtplib, sys
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=10)
code, ehlo = s.ehlo('python.example')
print('ehlo', code, ehlo.decode().replace('\n', '|'))
msg = ("From: Ana <ana@example.com>\r\nTo: 64211234567@sms.example.net\r\n"
       "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nContent-Type: text/plain; charset=utf-8\r\n"
       "Content-Transfer-Encoding: 8bit\r\n\r\nKia ora, café at 3 ☕\r\n.dot line\r\n").encode()
refused = s.sendmail('ana@example.com', ['64211234567@sms.example.net', 'bob@example.org'], msg,
                     mail_options=['BODY=8BITMIME', 'SMTPUTF8'])
for rcpt, (code, text) in refused.items():
    print('refused', rcpt, code, text.decode())
try:
    s.sendmail('ana@example.com', ['not-a-number@sms.example.net'], b'x')
except smtplib.SMTPRecipientsRefused as e:
    for rcpt, (code, text) in e.recipients.items():
        print('bad', rcpt, code, text.decode())
s.quit()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtplib_sends_an_8bit_utf8_message_and_sees_refusals() {
    let server = start_server(session_config(&[]), ConnectionLimits::default()).await;
    let output = python(SMTPLIB_UTF8, &[server.addr.port().to_string()]).await;
    assert!(output.contains("ehlo 250"), "{output}");
    assert!(
        output.contains("8BITMIME") && output.contains("SMTPUTF8"),
        "{output}"
    );
    assert!(
        output.contains("refused bob@example.org 550 5.7.1 relaying denied"),
        "{output}"
    );
    assert!(
        output.contains("bad not-a-number@sms.example.net 550 5.1.3"),
        "{output}"
    );
    let messages = server.handler.messages();
    assert_eq!(messages.len(), 1, "{output}");
    let (envelope, content) = &messages[0];
    assert_eq!(envelope.recipients.len(), 1);
    assert!(envelope.smtputf8);
    let text = String::from_utf8(content.clone()).expect("the 8-bit body arrives intact");
    assert!(
        text.contains("Kia ora, café at 3 ☕\r\n.dot line\r\n"),
        "{text:?}"
    );
}

const SMTPLIB_STARTTLS: &str = r#"
import smtplib, ssl, sys
context = ssl.create_default_context(cafile=sys.argv[2])
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=10)
s.ehlo('python.example')
print('offered', s.has_extn('starttls'))
code, text = s.starttls(context=context)
print('starttls', code, text.decode(), s.sock.version())
s.ehlo('python.example')
print('offered after', s.has_extn('starttls'))
s.sendmail('ana@example.com', ['64211234567@sms.example.net'], b'Subject: tls\r\n\r\nsecret\r\n')
s.quit()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtplib_and_swaks_use_starttls_with_a_test_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = make_certificate(dir.path());
    let mut config = session_config(&[]);
    config.tls = Some(smtp::tls::load_acceptor(&cert, &key).expect("load the test certificate"));
    let server = start_server(config, ConnectionLimits::default()).await;
    let output = python(
        SMTPLIB_STARTTLS,
        &[
            server.addr.port().to_string(),
            cert.to_str().unwrap().to_owned(),
        ],
    )
    .await;
    assert!(output.contains("offered True"), "{output}");
    assert!(
        output.contains("starttls 220 2.0.0 ready to start TLS TLSv1.3"),
        "{output}"
    );
    assert!(output.contains("offered after False"), "{output}");

    let (ok, swaks) = run(
        "swaks",
        [
            "--server",
            &server.addr.to_string(),
            "--tls",
            "--from",
            "ana@example.com",
            "--to",
            "64211234568@sms.example.net",
            "--helo",
            "swaks.example",
            "--body",
            "over TLS from swaks",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    )
    .await;
    assert!(ok, "{swaks}");
    let messages = server.handler.messages();
    assert_eq!(messages.len(), 2);
    assert!(messages.iter().all(|(envelope, _)| envelope.client.tls));
    assert!(String::from_utf8_lossy(&messages[1].1).contains("over TLS from swaks"));
}

const STARTTLS_INJECTION: &str = r#"
import socket, ssl, sys
context = ssl.create_default_context(cafile=sys.argv[2])
sock = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=10)
reader = sock.makefile('rb')
def reply(f):
    lines = []
    while True:
        line = f.readline().decode().rstrip('\r\n')
        lines.append(line)
        if len(line) < 4 or line[3] != '-':
            return ' | '.join(lines)
print('greeting', reply(reader))
sock.sendall(b'EHLO attacker.example\r\n')
reply(reader)
# A command sent in the clear right behind STARTTLS must not run as if it came inside TLS.
sock.sendall(b'STARTTLS\r\nQUIT\r\n')
print('starttls', reply(reader))
tls = context.wrap_socket(sock, server_hostname='127.0.0.1')
tls_reader = tls.makefile('rb')
tls.sendall(b'EHLO attacker.example\r\n')
print('after', reply(tls_reader))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_sent_behind_starttls_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = make_certificate(dir.path());
    let mut config = session_config(&[]);
    config.tls = Some(smtp::tls::load_acceptor(&cert, &key).unwrap());
    let server = start_server(config, ConnectionLimits::default()).await;
    let output = python(
        STARTTLS_INJECTION,
        &[
            server.addr.port().to_string(),
            cert.to_str().unwrap().to_owned(),
        ],
    )
    .await;
    assert!(output.contains("starttls 220 2.0.0"), "{output}");
    // Had the injected QUIT run, this would be 221 (or nothing at all).
    assert!(
        output.contains("after 250-ingest.test greets attacker.example"),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_that_cannot_be_read_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let Err(error) = smtp::tls::load_acceptor(&missing, &missing) else {
        panic!("a missing certificate was accepted");
    };
    assert!(error.to_string().contains("missing.pem"), "{error}");
    let (cert, _key) = make_certificate(dir.path());
    let Err(error) = smtp::tls::load_acceptor(&cert, &cert) else {
        panic!("a certificate was accepted as its own key");
    };
    assert!(error.to_string().contains("private key"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_pipelines_a_message_and_reports_refusals() {
    let server = start_server(session_config(&[]), ConnectionLimits::default()).await;
    let (ok, output) = run(
        "swaks",
        [
            "--server",
            &server.addr.to_string(),
            "--pipeline",
            "--from",
            "ana@example.com",
            "--to",
            "64211234567@sms.example.net,+64-21-765-4321@sms.localhost",
            "--helo",
            "swaks.example",
            "--header",
            "Subject: pipelined",
            "--body",
            "two recipients, one round trip",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    )
    .await;
    assert!(ok, "{output}");
    assert!(output.contains("PIPELINING"), "{output}");
    let messages = server.handler.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].0.recipients.len(), 2);

    let (ok, output) = run(
        "swaks",
        [
            "--server",
            &server.addr.to_string(),
            "--pipeline",
            "--from",
            "ana@example.com",
            "--to",
            "someone@example.org",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    )
    .await;
    assert!(!ok, "{output}");
    assert!(output.contains("550 5.7.1 relaying denied"), "{output}");
}

const SMTPLIB_XCLIENT: &str = r#"
import smtplib, sys
s = smtplib.SMTP('127.0.0.1', int(sys.argv[1]), timeout=10)
s.ehlo('relay.internal')
print('announced', s.has_extn('xclient'))
code, text = s.docmd('XCLIENT', 'ADDR=192.0.2.44 NAME=mx.sender.example HELO=mx.sender.example')
print('xclient', code, text.decode())
if code == 220:
    s.ehlo('relay.internal')
    s.sendmail('ana@example.com', ['64211234567@sms.example.net'], b'Subject: x\r\n\r\nvia relay\r\n')
s.quit()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xclient_is_honoured_only_from_trusted_relays() {
    let trusted = start_server(
        session_config(&["127.0.0.0/8"]),
        ConnectionLimits::default(),
    )
    .await;
    let output = python(SMTPLIB_XCLIENT, &[trusted.addr.port().to_string()]).await;
    assert!(output.contains("announced True"), "{output}");
    assert!(output.contains("xclient 220"), "{output}");
    let messages = trusted.handler.messages();
    assert_eq!(messages.len(), 1);
    let client = &messages[0].0.client;
    assert_eq!(client.ip.to_string(), "192.0.2.44");
    assert_eq!(client.helo.as_deref(), Some("mx.sender.example"));
    assert_eq!(client.peer.ip().to_string(), "127.0.0.1");

    let untrusted =
        start_server(session_config(&["10.0.0.0/8"]), ConnectionLimits::default()).await;
    let output = python(SMTPLIB_XCLIENT, &[untrusted.addr.port().to_string()]).await;
    assert!(output.contains("announced False"), "{output}");
    assert!(
        output.contains("xclient 550 5.7.0 XCLIENT is accepted only from trusted relays"),
        "{output}"
    );
    assert!(untrusted.handler.messages().is_empty());
}

async fn send_through_proxy(addr: SocketAddr, header: &[u8]) -> Client<TcpStream> {
    let mut client = Client::new(TcpStream::connect(addr).await.unwrap());
    client.send(header).await;
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_v1_and_v2_over_tcp() {
    let server = start_server(
        session_config(&["127.0.0.0/8"]),
        ConnectionLimits::default(),
    )
    .await;
    let v2 = smtp::proxy::encode_v2(
        "198.51.100.20:3333".parse().unwrap(),
        "127.0.0.1:25".parse().unwrap(),
    );
    for (header, expected) in [
        (
            b"PROXY TCP4 198.51.100.10 127.0.0.1 2222 25\r\n".to_vec(),
            "198.51.100.10",
        ),
        (v2, "198.51.100.20"),
    ] {
        let mut client = send_through_proxy(server.addr, &header).await;
        expect(&client.reply().await, "220");
        client
            .send(b"EHLO lb\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<64211234567@sms.example.net>\r\nDATA\r\n")
            .await;
        for _ in 0..4 {
            client.reply().await;
        }
        client.send(b"hi\r\n.\r\nQUIT\r\n").await;
        expect(&client.reply().await, "250");
        let messages = server.handler.messages();
        assert_eq!(messages.last().unwrap().0.client.ip.to_string(), expected);
    }

    let strict = start_server(session_config(&[]), ConnectionLimits::default()).await;
    let mut client = send_through_proxy(
        strict.addr,
        b"PROXY TCP4 198.51.100.10 127.0.0.1 2222 25\r\n",
    )
    .await;
    expect(&client.reply().await, "220");
    expect(&client.reply().await, "550 5.7.0");
    assert!(client.closed().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limits_get_421() {
    let server = start_server(
        session_config(&[]),
        ConnectionLimits {
            max_connections: 10,
            max_connections_per_ip: 2,
        },
    )
    .await;
    let mut first = Client::new(TcpStream::connect(server.addr).await.unwrap());
    let mut second = Client::new(TcpStream::connect(server.addr).await.unwrap());
    expect(&first.reply().await, "220");
    expect(&second.reply().await, "220");
    let mut third = Client::new(TcpStream::connect(server.addr).await.unwrap());
    expect(
        &third.reply().await,
        "421 4.3.2 too many connections from your address",
    );
    assert!(third.closed().await);
    // A slot comes back when a session ends.
    expect(&first.command("QUIT").await, "221");
    assert!(first.closed().await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut fourth = Client::new(TcpStream::connect(server.addr).await.unwrap());
    expect(&fourth.reply().await, "220");

    let small = start_server(
        session_config(&[]),
        ConnectionLimits {
            max_connections: 1,
            max_connections_per_ip: 5,
        },
    )
    .await;
    let mut only = Client::new(TcpStream::connect(small.addr).await.unwrap());
    expect(&only.reply().await, "220");
    let mut over = Client::new(TcpStream::connect(small.addr).await.unwrap());
    expect(
        &over.reply().await,
        "421 4.3.2 the gateway is at its connection limit",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_one_session_leaves_the_others_running() {
    let server = start_server(session_config(&[]), ConnectionLimits::default()).await;
    let mut calm = Client::new(TcpStream::connect(server.addr).await.unwrap());
    calm.reply().await;
    calm.send(
        b"EHLO calm\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<64211234567@sms.example.net>\r\n",
    )
    .await;
    for _ in 0..3 {
        calm.reply().await;
    }
    let mut crashing = Client::new(TcpStream::connect(server.addr).await.unwrap());
    crashing.reply().await;
    crashing
        .send(b"EHLO boom\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<99911234567@sms.example.net>\r\nDATA\r\n")
        .await;
    for _ in 0..4 {
        crashing.reply().await;
    }
    crashing.send(b"boom\r\n.\r\n").await;
    expect(&crashing.reply().await, "451 4.3.0");
    expect(&calm.command("DATA").await, "354");
    calm.send(b"still here\r\n.\r\n").await;
    expect(&calm.reply().await, "250");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_and_closes_idle_sessions_with_421() {
    let mut server = start_server(session_config(&[]), ConnectionLimits::default()).await;
    let mut idle = Client::new(TcpStream::connect(server.addr).await.unwrap());
    expect(&idle.reply().await, "220");
    let mut busy = Client::new(TcpStream::connect(server.addr).await.unwrap());
    busy.reply().await;
    busy.send(b"EHLO busy\r\nMAIL FROM:<a@example.com>\r\n")
        .await;
    busy.reply().await;
    busy.reply().await;
    server.stop.take().unwrap().send(()).unwrap();
    expect(&idle.reply().await, "421 4.3.2");
    // The message in progress is finished and accepted.
    expect(
        &busy.command("RCPT TO:<64211234567@sms.example.net>").await,
        "250",
    );
    expect(&busy.command("DATA").await, "354");
    busy.send(b"last one\r\n.\r\n").await;
    expect(&busy.reply().await, "250 2.0.0 queued");
    expect(&busy.reply().await, "421 4.3.2");
    tokio::time::timeout(Duration::from_secs(5), &mut server.task)
        .await
        .expect("the server stops once its sessions are done")
        .unwrap();
    assert!(TcpStream::connect(server.addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10_mb_attachment_with_a_one_line_body_is_read_whole() {
    let mut config = session_config(&[]);
    config.limits.max_message_size = 25 * 1024 * 1024;
    config.budget = smtp::BufferBudget::new(config.limits.max_message_size);
    let server = start_server(config, ConnectionLimits::default()).await;
    let mut client = Client::new(TcpStream::connect(server.addr).await.unwrap());
    client.reply().await;
    client
        .send(b"EHLO big\r\nMAIL FROM:<a@example.com> SIZE=14000000\r\nRCPT TO:<64211234567@sms.example.net>\r\nDATA\r\n")
        .await;
    for _ in 0..4 {
        client.reply().await;
    }
    let mut message = b"Subject: report\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nSee attached.\r\n--b\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
    let line = format!("{}\r\n", "QUJD".repeat(19));
    let lines = 10 * 1024 * 1024 / 76;
    for _ in 0..lines {
        message.extend_from_slice(line.as_bytes());
    }
    message.extend_from_slice(b"--b--\r\n");
    let started = std::time::Instant::now();
    client.send(&message).await;
    client.send(b".\r\n").await;
    expect(&client.reply().await, "250 2.0.0 queued");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let messages = server.handler.messages();
    assert_eq!(messages[0].1, message);
}
