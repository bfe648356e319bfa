//! Contract tests: the descriptor set holds every service and method the
//! portal and the operators' tools code against (DESIGN.md's gRPC surface),
//! queue payloads round-trip, and default stubs answer UNIMPLEMENTED.

use std::collections::{BTreeMap, BTreeSet};

use email2sms_proto::prost::Message;
use email2sms_proto::prost_types::{FileDescriptorSet, Timestamp};
use email2sms_proto::{FILE_DESCRIPTOR_SET, dispatch, ingest, policy, queue, verification};

/// DESIGN.md's gRPC surface table: these names are fixed.
const SURFACE: &[(&str, &[&str])] = &[
    (
        "email2sms.policy.v1.PolicyService",
        &[
            "UpsertCompany",
            "GetCompany",
            "UpsertMessengerUser",
            "ListMessengerUsers",
            "CreateSecurityPolicy",
            "GetSecurityPolicy",
            "ListSecurityPolicies",
            "UpdateSecurityPolicy",
            "DeleteSecurityPolicy",
            "CreateDomain",
            "GetDomain",
            "ListDomains",
            "VerifyDomain",
            "AllocateDomain",
            "DeleteDomain",
            "CreateEmailAddress",
            "GetEmailAddress",
            "ListEmailAddresses",
            "UpdateEmailAddress",
            "DeleteEmailAddress",
            "CreateIpAddress",
            "ListIpAddresses",
            "DeleteIpAddress",
            "PreviewImport",
            "CommitImport",
            "SendNotification",
            "ListSenderLog",
        ],
    ),
    (
        "email2sms.policy.v1.SenderResolutionService",
        &["ResolveSender"],
    ),
    (
        "email2sms.verification.v1.VerificationService",
        &[
            "CreateChallenge",
            "RotateChallenge",
            "CheckNow",
            "GetStatus",
        ],
    ),
    (
        "email2sms.dispatch.v1.DispatchService",
        &["GetMessage", "ListMessages"],
    ),
    ("email2sms.ingest.v1.IngestService", &["Diagnose"]),
];

/// Full service name -> (method name -> (input type, output type)).
fn services() -> BTreeMap<String, BTreeMap<String, (String, String)>> {
    let fds = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("descriptor set decodes");
    let mut out = BTreeMap::new();
    for file in &fds.file {
        for service in &file.service {
            let full = format!("{}.{}", file.package(), service.name());
            let methods = service
                .method
                .iter()
                .map(|m| {
                    (
                        m.name().to_owned(),
                        (m.input_type().to_owned(), m.output_type().to_owned()),
                    )
                })
                .collect();
            out.insert(full, methods);
        }
    }
    out
}

#[test]
fn every_service_and_method_of_the_design_exists() {
    let services = services();
    for (service, methods) in SURFACE {
        let found = services
            .get(*service)
            .unwrap_or_else(|| panic!("service {service} missing; have {:?}", services.keys()));
        for method in *methods {
            assert!(
                found.contains_key(*method),
                "{service}/{method} missing from the descriptor set"
            );
        }
    }
}

#[test]
fn every_rpc_takes_its_own_request_and_response() {
    // buf's STANDARD rules, checked here too so a build without buf catches it.
    let mut seen = BTreeSet::new();
    for (service, methods) in services() {
        let package = service.rsplit_once('.').map(|(p, _)| p).unwrap_or_default();
        for (method, (input, output)) in methods {
            assert_eq!(
                input,
                format!(".{package}.{method}Request"),
                "{service}/{method}"
            );
            assert_eq!(
                output,
                format!(".{package}.{method}Response"),
                "{service}/{method}"
            );
            assert!(
                seen.insert(input),
                "request type reused by {service}/{method}"
            );
            assert!(
                seen.insert(output),
                "response type reused by {service}/{method}"
            );
        }
    }
}

#[test]
fn descriptor_set_covers_every_package_and_keeps_comments() {
    let fds = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("descriptor set decodes");
    let packages: BTreeSet<&str> = fds.file.iter().map(|f| f.package()).collect();
    for package in [
        "email2sms.policy.v1",
        "email2sms.verification.v1",
        "email2sms.dispatch.v1",
        "email2sms.ingest.v1",
        "email2sms.queue.v1",
        "google.protobuf",
    ] {
        assert!(packages.contains(package), "package {package} missing");
    }
    let job_file = fds
        .file
        .iter()
        .find(|f| f.name() == "email2sms/queue/v1/sms_job.proto")
        .expect("sms_job.proto present");
    assert!(
        job_file.source_code_info.is_some(),
        "source info kept for reflection clients"
    );
}

fn sample_job() -> queue::v1::SmsJob {
    queue::v1::SmsJob {
        job_id: "0190f3a4-5b6c-7d8e-9f00-112233445566".into(),
        create_time: Some(Timestamp {
            seconds: 1_735_689_600,
            nanos: 123_000_000,
        }),
        expire_time: Some(Timestamp {
            seconds: 1_735_776_000,
            nanos: 0,
        }),
        company_id: "3f9a1f3e-8c3b-4d4e-9a51-7c2f0b6d9e10".into(),
        security_policy_id: "a1b2c3d4-0000-4000-8000-000000000001".into(),
        match_kind: policy::v1::MatchKind::Domain.into(),
        entry_id: "a1b2c3d4-0000-4000-8000-000000000002".into(),
        forwarding_user_id: "a1b2c3d4-0000-4000-8000-000000000003".into(),
        forwarding_user_external_id: "msgr-4711".into(),
        sender_id: "ACME".into(),
        recipient: "+64211234567".into(),
        recipient_address: "021 123 4567@sms.example.net".into(),
        text: "Server room temperature 31 °C — please check €".into(),
        encoding: queue::v1::SmsEncoding::Ucs2.into(),
        segment_count: 1,
        truncated: false,
        origin: Some(queue::v1::EmailOrigin {
            message_id: "CAF=abc@mail.example.com".into(),
            envelope_sender: "alerts@example.com".into(),
            from_address: "alerts@example.com".into(),
            subject: "=?utf-8?q?Alarm?= decoded: Alarm".into(),
            client_ip: "203.0.113.7".into(),
            helo: "mail.example.com".into(),
            receive_time: Some(Timestamp {
                seconds: 1_735_689_599,
                nanos: 0,
            }),
            email_id: "0190f3a4-5b6c-7d8e-9f00-000000000000".into(),
        }),
        authentication: Some(queue::v1::AuthenticationResults {
            security_type: policy::v1::SecurityType::ViaSpf.into(),
            spf_result: queue::v1::SpfResult::Pass.into(),
            spf_domain: "example.com".into(),
            aligned: true,
            summary: "spf=pass smtp.mailfrom=example.com".into(),
        }),
        recipient_index: 0,
        recipient_count: 2,
        company_region: "NZ".into(),
    }
}

#[test]
fn sms_job_round_trips() {
    let job = sample_job();
    let bytes = job.encode_to_vec();
    assert!(!bytes.is_empty());
    let decoded = queue::v1::SmsJob::decode(bytes.as_slice()).expect("job decodes");
    assert_eq!(decoded, job);
    assert_eq!(decoded.encoding(), queue::v1::SmsEncoding::Ucs2);
    assert_eq!(decoded.match_kind(), policy::v1::MatchKind::Domain);
    assert_eq!(
        decoded.authentication.as_ref().map(|a| a.spf_result()),
        Some(queue::v1::SpfResult::Pass)
    );
    // An empty payload is a valid (all-default) message: consumers must
    // validate required fields themselves.
    let empty = queue::v1::SmsJob::decode(&[][..]).expect("empty decodes");
    assert_eq!(empty, queue::v1::SmsJob::default());
}

#[test]
fn events_round_trip() {
    let event = queue::v1::DomainVerificationChanged {
        event_id: "e1".into(),
        company_id: "c1".into(),
        domain_name: "example.com".into(),
        previous_state: verification::v1::VerificationState::Pending.into(),
        state: verification::v1::VerificationState::Verified.into(),
        state_sequence: 2,
        check: Some(verification::v1::Check {
            result: verification::v1::CheckResult::TokenFound.into(),
            txt_values: vec!["9e9e65dc2aeceb9bf16694b201961269".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    let decoded =
        queue::v1::DomainVerificationChanged::decode(event.encode_to_vec().as_slice()).unwrap();
    assert_eq!(decoded, event);
    assert_eq!(queue::v1::SMS_JOB_TYPE, "email2sms.queue.v1.SmsJob");
}

struct Stub;

impl policy::v1::policy_service_server::PolicyService for Stub {}
impl policy::v1::sender_resolution_service_server::SenderResolutionService for Stub {}
impl verification::v1::verification_service_server::VerificationService for Stub {}
impl dispatch::v1::dispatch_service_server::DispatchService for Stub {}
impl ingest::v1::ingest_service_server::IngestService for Stub {}

#[tokio::test]
async fn default_stubs_answer_unimplemented() {
    use dispatch::v1::dispatch_service_server::DispatchService;
    use email2sms_proto::tonic::{Code, Request};
    use ingest::v1::ingest_service_server::IngestService;
    use policy::v1::policy_service_server::PolicyService;
    use policy::v1::sender_resolution_service_server::SenderResolutionService;
    use verification::v1::verification_service_server::VerificationService;

    let err = PolicyService::get_company(
        &Stub,
        Request::new(policy::v1::GetCompanyRequest {
            company_id: "c1".into(),
        }),
    )
    .await
    .expect_err("stub must not succeed");
    assert_eq!(err.code(), Code::Unimplemented);

    let err = Stub
        .resolve_sender(Request::new(policy::v1::ResolveSenderRequest::default()))
        .await
        .expect_err("stub must not succeed");
    assert_eq!(err.code(), Code::Unimplemented);

    let err = Stub
        .create_challenge(Request::new(
            verification::v1::CreateChallengeRequest::default(),
        ))
        .await
        .expect_err("stub must not succeed");
    assert_eq!(err.code(), Code::Unimplemented);

    let err = Stub
        .list_messages(Request::new(dispatch::v1::ListMessagesRequest::default()))
        .await
        .expect_err("stub must not succeed");
    assert_eq!(err.code(), Code::Unimplemented);

    let err = Stub
        .diagnose(Request::new(ingest::v1::DiagnoseRequest::default()))
        .await
        .expect_err("stub must not succeed");
    assert_eq!(err.code(), Code::Unimplemented);

    // The server wrappers build from a stub, as each service binary will.
    let _ = policy::v1::policy_service_server::PolicyServiceServer::new(Stub);
}

#[test]
fn descriptor_set_registers_with_reflection_v1_and_v1alpha() {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("reflection v1 accepts the descriptor set");
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("reflection v1alpha accepts the descriptor set");
}
