//! The whole cluster as `email2sms dev` runs it on one machine.

use std::path::{Path, PathBuf};
use std::time::Duration;

use email2sms_testkit::{ServiceProcess, TestDb, channel, health};

/// The directory cargo builds the workspace's binaries into (`cargo test --workspace` and
/// `cargo nextest run --workspace` build them all before running any test).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test binary>
    exe.parent().and_then(Path::parent).unwrap().to_owned()
}

#[tokio::test]
async fn dev_starts_every_service_and_stops_them_all() {
    let db = TestDb::unique();
    let dir = tempfile::tempdir().unwrap();
    let bin_dir = bin_dir();
    let email2sms = bin_dir.join("email2sms");
    assert!(
        email2sms.is_file(),
        "{} is missing: run the tests for the whole workspace",
        email2sms.display()
    );
    let bin_dir = bin_dir.to_str().unwrap().to_owned();
    let connector = format!("file:{}", dir.path().join("sms.jsonl").display());
    let mut dev = ServiceProcess::spawn_with(
        &email2sms,
        &[
            ("DATABASE_URL", &db.url),
            ("EMAIL2SMS_BIN_DIR", &bin_dir),
            ("EMAIL2SMS_SMS_CONNECTOR", &connector),
            ("EMAIL2SMS_POLICY_GRPC_ADDR", "127.0.0.1:0"),
            ("EMAIL2SMS_VERIFICATION_GRPC_ADDR", "127.0.0.1:0"),
            ("EMAIL2SMS_INGEST_GRPC_ADDR", "127.0.0.1:0"),
            ("EMAIL2SMS_DISPATCH_GRPC_ADDR", "127.0.0.1:0"),
            ("EMAIL2SMS_INGEST_SMTP_ADDR", "127.0.0.1:0"),
        ],
        &["dev"],
        4,
    )
    .await;
    assert!(
        dev.stderr().contains("EMAIL2SMS_INSECURE_NO_AUTH"),
        "dev warns that it runs without authentication"
    );
    for addr in &dev.grpc_addrs {
        assert_eq!(
            health(channel(*addr).await, "").await,
            tonic_health::ServingStatus::Serving,
            "{addr}"
        );
    }

    dev.terminate();
    let status = dev.wait(Duration::from_secs(60)).await;
    assert_eq!(status.code(), Some(0), "{}", dev.stderr());
    for addr in &dev.grpc_addrs {
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "{addr} still accepts connections after dev stopped"
        );
    }
}
