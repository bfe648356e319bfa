//! The `email2sms-ingest` binary as an operator runs it.

use std::path::Path;

use email2sms_proto::ingest::v1::DiagnoseRequest;
use email2sms_proto::ingest::v1::ingest_service_client::IngestServiceClient;
use email2sms_proto::tonic::Code;
use email2sms_testkit::{check_service_lifecycle, run_to_exit, tokens_file};

const BINARY: &str = env!("CARGO_BIN_EXE_email2sms-ingest");

#[tokio::test]
async fn starts_serves_health_and_reflection_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, _admin, _internal) = tokens_file(dir.path());
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
            let status = IngestServiceClient::new(channel)
                .diagnose(DiagnoseRequest::default())
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated);
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
