//! The `email2sms-verification` binary as an operator runs it.

use std::path::Path;

use email2sms_proto::tonic::{Code, Request};
use email2sms_proto::verification::v1::GetStatusRequest;
use email2sms_proto::verification::v1::verification_service_client::VerificationServiceClient;
use email2sms_testkit::{TestDb, check_service_lifecycle, run_to_exit, tokens_file};

const BINARY: &str = env!("CARGO_BIN_EXE_email2sms-verification");

#[tokio::test]
async fn starts_serves_health_and_reflection_and_stops_on_sigterm() {
    let db = TestDb::unique();
    let dir = tempfile::tempdir().unwrap();
    let (tokens, _admin, internal) = tokens_file(dir.path());
    check_service_lifecycle(
        Path::new(BINARY),
        "EMAIL2SMS_VERIFICATION_GRPC_ADDR",
        &[
            ("DATABASE_URL", &db.url),
            ("EMAIL2SMS_MIGRATE", "1"),
            ("EMAIL2SMS_API_TOKENS_FILE", tokens.to_str().unwrap()),
            ("EMAIL2SMS_DNS_SERVERS", "127.0.0.1:5353"),
        ],
        &["email2sms.verification.v1.VerificationService"],
        |channel| async move {
            let mut client = VerificationServiceClient::new(channel);
            let mut request = Request::new(GetStatusRequest::default());
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {internal}").parse().unwrap(),
            );
            // The policy service calls with an internal token; the RPC itself is not built yet.
            let status = client.get_status(request).await.unwrap_err();
            assert_eq!(status.code(), Code::Unimplemented);
        },
    )
    .await;
}

#[tokio::test]
async fn bad_dns_server_list_exits_64() {
    let (status, output) = run_to_exit(
        Path::new(BINARY),
        &[
            ("EMAIL2SMS_INSECURE_NO_AUTH", "1"),
            ("EMAIL2SMS_DNS_SERVERS", "127.0.0.1:5353,ns.example"),
        ],
        &[],
    )
    .await;
    assert_eq!(status.code(), Some(64), "{output}");
    assert!(output.contains("ns.example"), "{output}");
}
