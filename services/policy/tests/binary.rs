//! The `email2sms-policy` binary as an operator runs it.

use std::path::Path;

use email2sms_proto::policy::v1::policy_service_client::PolicyServiceClient;
use email2sms_proto::policy::v1::sender_resolution_service_client::SenderResolutionServiceClient;
use email2sms_proto::policy::v1::{GetCompanyRequest, ResolveSenderRequest};
use email2sms_proto::tonic::{Code, Request};
use email2sms_testkit::{TestDb, check_service_lifecycle, run_to_exit, tokens_file};

const BINARY: &str = env!("CARGO_BIN_EXE_email2sms-policy");

fn bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

#[tokio::test]
async fn starts_serves_health_and_reflection_and_stops_on_sigterm() {
    let db = TestDb::unique();
    let dir = tempfile::tempdir().unwrap();
    let (tokens, admin, internal) = tokens_file(dir.path());
    check_service_lifecycle(
        Path::new(BINARY),
        "EMAIL2SMS_POLICY_GRPC_ADDR",
        &[
            ("DATABASE_URL", &db.url),
            ("EMAIL2SMS_MIGRATE", "1"),
            ("EMAIL2SMS_API_TOKENS_FILE", tokens.to_str().unwrap()),
        ],
        &[
            "email2sms.policy.v1.PolicyService",
            "email2sms.policy.v1.SenderResolutionService",
        ],
        |channel| async move {
            let mut policy = PolicyServiceClient::new(channel.clone());
            let anonymous = policy
                .get_company(GetCompanyRequest::default())
                .await
                .unwrap_err();
            assert_eq!(anonymous.code(), Code::Unauthenticated);
            let wrong_scope = policy
                .get_company(bearer(GetCompanyRequest::default(), &internal))
                .await
                .unwrap_err();
            assert_eq!(wrong_scope.code(), Code::PermissionDenied);
            // Authorised, so the request itself is judged: it names no company.
            let authorised = policy
                .get_company(bearer(GetCompanyRequest::default(), &admin))
                .await
                .unwrap_err();
            assert_eq!(authorised.code(), Code::InvalidArgument);

            let mut resolution = SenderResolutionServiceClient::new(channel);
            let admin_cannot_resolve = resolution
                .resolve_sender(bearer(ResolveSenderRequest::default(), &admin))
                .await
                .unwrap_err();
            assert_eq!(admin_cannot_resolve.code(), Code::PermissionDenied);
        },
    )
    .await;
}

#[tokio::test]
async fn refuses_to_start_without_tokens_with_exit_64() {
    let (status, output) = run_to_exit(
        Path::new(BINARY),
        &[("EMAIL2SMS_POLICY_GRPC_ADDR", "127.0.0.1:0")],
        &[],
    )
    .await;
    assert_eq!(status.code(), Some(64), "{output}");
    assert!(output.contains("EMAIL2SMS_API_TOKENS_FILE"), "{output}");
}

#[tokio::test]
async fn bad_configuration_exits_64_naming_the_setting() {
    for (env, named) in [
        (("DATABASE_URL", "mysql://localhost/x"), "DATABASE_URL"),
        (("REDIS_URL", "http://localhost"), "REDIS_URL"),
        (("EMAIL2SMS_POLICY_GRPC_ADDR", "localhost"), "--grpc-addr"),
        (
            ("EMAIL2SMS_SMTP_RELAY", "mail.example"),
            "EMAIL2SMS_SMTP_RELAY",
        ),
    ] {
        let (status, output) = run_to_exit(
            Path::new(BINARY),
            &[("EMAIL2SMS_INSECURE_NO_AUTH", "1"), env],
            &[],
        )
        .await;
        assert_eq!(status.code(), Some(64), "{env:?}: {output}");
        assert!(output.contains(named), "{env:?} should be named: {output}");
    }
}

#[tokio::test]
async fn help_lists_every_setting() {
    let (status, output) = run_to_exit(Path::new(BINARY), &[], &["--help"]).await;
    assert_eq!(status.code(), Some(0));
    for variable in [
        "DATABASE_URL",
        "REDIS_URL",
        "AMQP_URL",
        "EMAIL2SMS_POLICY_GRPC_ADDR",
        "EMAIL2SMS_VERIFICATION_URL",
        "EMAIL2SMS_SMTP_RELAY",
        "EMAIL2SMS_API_TOKENS_FILE",
        "EMAIL2SMS_API_TOKEN",
        "EMAIL2SMS_INSECURE_NO_AUTH",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "RUST_LOG",
    ] {
        assert!(output.contains(variable), "--help should list {variable}");
    }
}
