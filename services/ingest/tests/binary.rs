//! The `email2sms-ingest` binary as an operator runs it.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use email2sms_proto::ingest::v1::DiagnoseRequest;
use email2sms_proto::ingest::v1::ingest_service_client::IngestServiceClient;
use email2sms_proto::tonic::Code;
use email2sms_testkit::{check_service_lifecycle, run_to_exit, tokens_file};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const BINARY: &str = env!("CARGO_BIN_EXE_email2sms-ingest");

#[tokio::test]
async fn starts_serves_health_and_reflection_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, admin, _internal) = tokens_file(dir.path());
    check_service_lifecycle(
        Path::new(BINARY),
        "EMAIL2SMS_INGEST_GRPC_ADDR",
        &[
            ("EMAIL2SMS_API_TOKENS_FILE", tokens.to_str().unwrap()),
            ("EMAIL2SMS_SMS_DOMAINS", "sms.example.net,sms.localhost"),
            ("EMAIL2SMS_TRUSTED_RELAYS", "10.0.0.0/8,2001:db8::/32"),
            ("EMAIL2SMS_INGEST_SMTP_ADDR", "127.0.0.1:0"),
        ],
        &["email2sms.ingest.v1.IngestService"],
        |channel| async move {
            let mut client = IngestServiceClient::new(channel);
            let status = client
                .diagnose(DiagnoseRequest::default())
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated);
            // With the admin token the RPC runs: a request without a client IP is refused with a
            // message naming the field.
            let mut request = email2sms_proto::tonic::Request::new(DiagnoseRequest::default());
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {admin}").parse().unwrap());
            let status = client.diagnose(request).await.unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
            assert!(status.message().contains("client_ip"), "{status:?}");
        },
    )
    .await;
}

#[tokio::test]
async fn bad_settings_exit_64() {
    for env in [
        ("EMAIL2SMS_TRUSTED_RELAYS", "10.0.0.1/8x"),
        ("EMAIL2SMS_SMS_DOMAINS", "sms example"),
        ("EMAIL2SMS_POLICY_URL", "policy:50051"),
        ("EMAIL2SMS_INGEST_TLS_CERT", "/nonexistent/cert.pem"),
        ("EMAIL2SMS_INGEST_MAX_LINE_LENGTH", "200"),
        ("EMAIL2SMS_INGEST_MAX_MESSAGE_SIZE", "lots"),
        ("EMAIL2SMS_INGEST_DATA_TIMEOUT", "0s"),
        ("EMAIL2SMS_MAX_SMS_PARTS", "0"),
        ("EMAIL2SMS_INGEST_DEDUPE_WINDOW", "0s"),
        ("EMAIL2SMS_REDIS_PREFIX", ""),
    ] {
        let (status, output) = run_to_exit(
            Path::new(BINARY),
            &[("EMAIL2SMS_INSECURE_NO_AUTH", "1"), env],
            &[],
        )
        .await;
        assert_eq!(status.code(), Some(64), "{env:?}: {output}");
    }
}

#[tokio::test]
async fn a_missing_certificate_file_exits_64_naming_it() {
    let (status, output) = run_to_exit(
        Path::new(BINARY),
        &[
            ("EMAIL2SMS_INSECURE_NO_AUTH", "1"),
            ("EMAIL2SMS_INGEST_TLS_CERT", "/nonexistent/cert.pem"),
            ("EMAIL2SMS_INGEST_TLS_KEY", "/nonexistent/key.pem"),
            ("EMAIL2SMS_INGEST_GRPC_ADDR", "127.0.0.1:0"),
            ("EMAIL2SMS_INGEST_SMTP_ADDR", "127.0.0.1:0"),
        ],
        &[],
    )
    .await;
    assert_eq!(status.code(), Some(64), "{output}");
    assert!(output.contains("/nonexistent/cert.pem"), "{output}");
}

#[tokio::test]
async fn help_lists_every_smtp_setting() {
    let output = std::process::Command::new(BINARY)
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for variable in [
        "EMAIL2SMS_INGEST_SMTP_ADDR",
        "EMAIL2SMS_INGEST_HOSTNAME",
        "EMAIL2SMS_INGEST_TLS_CERT",
        "EMAIL2SMS_INGEST_TLS_KEY",
        "EMAIL2SMS_INGEST_MAX_MESSAGE_SIZE",
        "EMAIL2SMS_INGEST_MAX_RECIPIENTS",
        "EMAIL2SMS_INGEST_MAX_LINE_LENGTH",
        "EMAIL2SMS_INGEST_COMMAND_TIMEOUT",
        "EMAIL2SMS_INGEST_DATA_TIMEOUT",
        "EMAIL2SMS_INGEST_MAX_CONNECTIONS",
        "EMAIL2SMS_INGEST_MAX_CONNECTIONS_PER_IP",
        "EMAIL2SMS_INGEST_MAX_BAD_COMMANDS",
        "EMAIL2SMS_INGEST_PROXY_WAIT",
    ] {
        assert!(help.contains(variable), "--help lacks {variable}:\n{help}");
    }
}

/// Reads one SMTP reply (all its lines) from `reader`.
async fn read_reply(reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> String {
    let mut reply = String::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line))
            .await
            .expect("a reply within 10 s")
            .unwrap();
        if n == 0 {
            return reply;
        }
        reply.push_str(&line);
        if line.as_bytes().get(3) != Some(&b'-') {
            return reply;
        }
    }
}

/// The binary opens its SMTP port, announces it, runs the real pipeline (a message without a From
/// header is refused before any dependency is asked), and stops on SIGTERM.
#[tokio::test]
async fn serves_smtp_with_the_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let openssl = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=ingest.test", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(openssl.status.success(), "{openssl:?}");
    let mut child = tokio::process::Command::new(BINARY)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs([
            ("EMAIL2SMS_INSECURE_NO_AUTH", "1"),
            ("EMAIL2SMS_INGEST_GRPC_ADDR", "127.0.0.1:0"),
            ("EMAIL2SMS_INGEST_SMTP_ADDR", "127.0.0.1:0"),
            ("EMAIL2SMS_INGEST_HOSTNAME", "ingest.test"),
            ("EMAIL2SMS_SMS_DOMAINS", "sms.example.net"),
            ("EMAIL2SMS_SHUTDOWN_GRACE", "2s"),
        ])
        .env("EMAIL2SMS_INGEST_TLS_CERT", &cert)
        .env("EMAIL2SMS_INGEST_TLS_KEY", &key)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut smtp_addr: Option<SocketAddr> = None;
    let mut grpc_addr: Option<SocketAddr> = None;
    tokio::time::timeout(Duration::from_secs(30), async {
        while smtp_addr.is_none() || grpc_addr.is_none() {
            let line = lines.next_line().await.unwrap().expect("announcements");
            match email2sms_runtime::service::parse_announcement(&line) {
                Some(("smtp", addr)) => smtp_addr = Some(addr),
                Some(("grpc", addr)) => grpc_addr = Some(addr),
                _ => {}
            }
            assert!(
                line.starts_with("email2sms-ingest: "),
                "unexpected stdout line {line:?}"
            );
        }
    })
    .await
    .expect("both listeners announced");
    let smtp_addr = smtp_addr.unwrap();
    assert_ne!(smtp_addr.port(), 0);

    let (read, mut write) = tokio::net::TcpStream::connect(smtp_addr)
        .await
        .unwrap()
        .into_split();
    let mut reader = BufReader::new(read);
    assert!(
        read_reply(&mut reader)
            .await
            .starts_with("220 ingest.test ESMTP")
    );
    write
        .write_all(b"EHLO test\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<64211234567@sms.example.net>\r\nDATA\r\n")
        .await
        .unwrap();
    let ehlo = read_reply(&mut reader).await;
    assert!(ehlo.contains("250-SIZE 26214400"), "{ehlo}");
    assert!(ehlo.contains("250 STARTTLS"), "{ehlo}");
    for expected in ["250 2.1.0", "250 2.1.5", "354"] {
        let reply = read_reply(&mut reader).await;
        assert!(reply.starts_with(expected), "{reply}");
    }
    write.write_all(b"hello\r\n.\r\n").await.unwrap();
    let reply = read_reply(&mut reader).await;
    assert!(
        reply.starts_with("550 5.7.1 the email has no From address"),
        "{reply}"
    );

    // SIGTERM: the idle session is told 421 and the process exits cleanly.
    let pid = child.id().unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let reply = read_reply(&mut reader).await;
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    let mut stderr = String::new();
    let _ = child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await;
    // The process's exit and log explain a missing 421 too.
    assert!(
        reply.starts_with("421 4.3.2"),
        "reply {reply:?}; {status:?}\n{stderr}"
    );
    assert!(status.success(), "{status:?}\n{stderr}");
}
