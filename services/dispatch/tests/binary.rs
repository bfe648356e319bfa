//! The `email2sms-dispatch` binary as an operator runs it.

use std::path::Path;

use email2sms_proto::dispatch::v1::ListMessagesRequest;
use email2sms_proto::dispatch::v1::dispatch_service_client::DispatchServiceClient;
use email2sms_proto::tonic::Code;
use email2sms_testkit::{TestDb, check_service_lifecycle, run_to_exit};

const BINARY: &str = env!("CARGO_BIN_EXE_email2sms-dispatch");

#[tokio::test]
async fn starts_serves_health_and_reflection_and_stops_on_sigterm() {
    let db = TestDb::unique();
    let dir = tempfile::tempdir().unwrap();
    let connector = format!("file:{}", dir.path().join("sms.jsonl").display());
    check_service_lifecycle(
        Path::new(BINARY),
        "EMAIL2SMS_DISPATCH_GRPC_ADDR",
        &[
            ("DATABASE_URL", &db.url),
            ("EMAIL2SMS_MIGRATE", "1"),
            ("EMAIL2SMS_INSECURE_NO_AUTH", "1"),
            ("EMAIL2SMS_SMS_CONNECTOR", &connector),
        ],
        &["email2sms.dispatch.v1.DispatchService"],
        |channel| async move {
            // With authentication explicitly disabled the call reaches the RPC, which wants a
            // company.
            let status = DispatchServiceClient::new(channel)
                .list_messages(ListMessagesRequest::default())
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument);
        },
    )
    .await;
}

#[tokio::test]
async fn unknown_connector_exits_64() {
    let (status, output) = run_to_exit(
        Path::new(BINARY),
        &[
            ("EMAIL2SMS_INSECURE_NO_AUTH", "1"),
            ("EMAIL2SMS_SMS_CONNECTOR", "carrier-pigeon"),
        ],
        &[],
    )
    .await;
    assert_eq!(status.code(), Some(64), "{output}");
    assert!(output.contains("EMAIL2SMS_SMS_CONNECTOR"), "{output}");
}

#[tokio::test]
async fn claim_windows_out_of_range_exits_64() {
    let (status, output) = run_to_exit(
        Path::new(BINARY),
        &[
            ("EMAIL2SMS_INSECURE_NO_AUTH", "1"),
            ("EMAIL2SMS_DISPATCH_CLAIM_WINDOWS", "0"),
        ],
        &[],
    )
    .await;
    assert_eq!(status.code(), Some(64), "{output}");
    assert!(
        output.contains("EMAIL2SMS_DISPATCH_CLAIM_WINDOWS") && output.contains("between 1 and 16"),
        "{output}"
    );
}

#[tokio::test]
async fn unreachable_database_exits_69() {
    let (status, output) = run_to_exit(
        Path::new(BINARY),
        &[
            ("EMAIL2SMS_INSECURE_NO_AUTH", "1"),
            // Port 1 on loopback: nothing listens there.
            ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/email2sms"),
            ("EMAIL2SMS_DISPATCH_GRPC_ADDR", "127.0.0.1:0"),
        ],
        &[],
    )
    .await;
    assert_eq!(status.code(), Some(69), "{output}");
    assert!(output.contains("127.0.0.1:1"), "{output}");
}
