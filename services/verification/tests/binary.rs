//! The `email2sms-verification` binary as an operator runs it.

mod common;

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
            // The policy service calls with an internal token: past authentication, the empty
            // request is refused for its missing fields.
            let status = client.get_status(request).await.unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
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

#[tokio::test]
async fn the_scheduler_verifies_a_published_token_with_settings_from_the_environment() {
    use email2sms_proto::verification::v1::{CreateChallengeRequest, VerificationState};
    use email2sms_testkit::ServiceProcess;
    use email2sms_testkit::dns::DnsServer;

    let db = TestDb::unique();
    let mut dns = DnsServer::start().await;
    dns.set_zone("example.com", "www A 192.0.2.1").await;
    let dns_addr = dns.addr().to_string();
    let mut process = ServiceProcess::spawn(
        Path::new(BINARY),
        &[
            ("DATABASE_URL", &db.url),
            ("EMAIL2SMS_MIGRATE", "1"),
            ("EMAIL2SMS_INSECURE_NO_AUTH", "1"),
            ("EMAIL2SMS_VERIFICATION_GRPC_ADDR", "127.0.0.1:0"),
            ("EMAIL2SMS_DNS_SERVERS", &dns_addr),
            ("EMAIL2SMS_VERIFICATION_DNS_TIMEOUT", "300ms"),
            ("EMAIL2SMS_VERIFICATION_POLL_INTERVAL", "100ms"),
            ("EMAIL2SMS_VERIFICATION_PENDING_FIRST_INTERVAL", "200ms"),
            ("EMAIL2SMS_VERIFICATION_PENDING_MAX_INTERVAL", "200ms"),
        ],
    )
    .await;
    let mut client = VerificationServiceClient::new(process.channel().await);
    let company = "00000000-0000-0000-0000-0000000000a1".to_string();
    let challenge = client
        .create_challenge(CreateChallengeRequest {
            company_id: company.clone(),
            domain_name: "example.com".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .challenge
        .unwrap();
    dns.set_zone(
        "example.com",
        &format!("@ TXT \"{}\"", challenge.txt_record_value),
    )
    .await;
    let verified = common::wait_for_status(
        &mut client,
        &company,
        "example.com",
        std::time::Duration::from_secs(10),
        |status| status.challenge.as_ref().unwrap().state() == VerificationState::Verified,
    )
    .await
    .unwrap_or_else(|_| panic!("not verified in time; stderr:\n{}", process.stderr()))
    .challenge
    .unwrap();
    assert_eq!(
        verified.state_reason,
        "found the verification token at example.com"
    );
    process.terminate();
    assert_eq!(
        process
            .wait(std::time::Duration::from_secs(10))
            .await
            .code(),
        Some(0)
    );
}
