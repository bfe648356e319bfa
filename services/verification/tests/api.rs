//! The gRPC API as the policy service calls it, served in-process by `run` with its scheduler.

mod common;

use std::time::Duration;

use common::*;
use email2sms_proto::tonic::Code;
use email2sms_proto::tonic::transport::Channel;
use email2sms_proto::verification::v1::verification_service_client::VerificationServiceClient;
use email2sms_proto::verification::v1::{
    CheckNowRequest, CheckResult, CheckTrigger, CreateChallengeRequest, DeleteChallengeRequest,
    GetStatusRequest, RotateChallengeRequest, VerificationState,
};
use email2sms_runtime::auth::Auth;
use tonic_types::StatusExt;

struct Served {
    client: VerificationServiceClient<Channel>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

async fn serve(world: &World) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = world.config.clone();
    let pool = world.pool.clone();
    let task = tokio::spawn(async move {
        let auth = Auth::from_args(&config.server).unwrap();
        email2sms_verification::run(&config, &auth, pool, listener, async {
            let _ = stopped.await;
        })
        .await
        .expect("serve");
    });
    let channel = email2sms_testkit::channel(addr).await;
    Served {
        client: VerificationServiceClient::new(channel),
        stop: Some(stop),
        task,
    }
}

impl Served {
    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("stops promptly")
            .unwrap();
    }
}

fn create(company: &str, domain: &str) -> CreateChallengeRequest {
    CreateChallengeRequest {
        company_id: company.into(),
        domain_name: domain.into(),
    }
}

#[tokio::test]
async fn challenge_api_end_to_end() {
    let mut world = world(&["--poll-interval", "200ms"]).await;
    let mut served = serve(&world).await;
    let a = COMPANY_A.to_string();
    let client = &mut served.client;

    let first = client
        .create_challenge(create(&a, "Example.COM."))
        .await
        .unwrap()
        .into_inner();
    assert!(first.created);
    let challenge = first.challenge.unwrap();
    assert_eq!(challenge.domain_name, "example.com");
    assert_eq!(challenge.txt_record_name, "example.com");
    assert_eq!(challenge.token.len(), 32);
    assert_eq!(
        challenge.txt_record_value,
        format!("email2sms-verification={}", challenge.token)
    );
    assert_eq!(challenge.state(), VerificationState::Pending);
    assert!(
        challenge.expire_time.is_some(),
        "pending gives up at some point"
    );

    let again = client
        .create_challenge(create(&a, "example.com"))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.created);
    assert_eq!(again.challenge.unwrap().token, challenge.token);

    // The scheduler runs the first check on its own, right after creation.
    world.dns.set_zone("example.com", "www A 192.0.2.1").await;
    let status = wait_for_status(
        client,
        &a,
        "example.com",
        Duration::from_secs(10),
        |status| !status.recent_checks.is_empty(),
    )
    .await
    .expect("the scheduler checks a new challenge at once");
    assert_eq!(status.recent_checks[0].trigger(), CheckTrigger::Created);

    // The customer publishes the record and presses Verify.
    world
        .dns
        .set_zone(
            "example.com",
            &format!("@ TXT \"{}\"", challenge.txt_record_value),
        )
        .await;
    let checked = client
        .check_now(CheckNowRequest {
            company_id: a.clone(),
            domain_name: "example.com".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let check = checked.check.unwrap();
    assert_eq!(check.result(), CheckResult::TokenFound);
    assert_eq!(check.trigger(), CheckTrigger::OnDemand);
    assert_eq!(check.state_before(), VerificationState::Pending);
    assert_eq!(check.state_after(), VerificationState::Verified);
    assert_eq!(
        check.txt_values,
        std::slice::from_ref(&challenge.txt_record_value)
    );
    assert_eq!(check.nameserver, world.dns.addr().to_string());
    let verified = checked.challenge.unwrap();
    assert_eq!(verified.state(), VerificationState::Verified);
    assert!(verified.verify_time.is_some());
    assert_eq!(verified.expire_time, None);

    let history = client
        .get_status(GetStatusRequest {
            company_id: a.clone(),
            domain_name: "example.com".into(),
            check_history_limit: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(history.recent_checks.len(), 1);
    assert_eq!(
        history.recent_checks[0].check_id, check.check_id,
        "newest first"
    );

    // Another company sees nothing of it.
    let b = COMPANY_B.to_string();
    for status in [
        client
            .get_status(GetStatusRequest {
                company_id: b.clone(),
                domain_name: "example.com".into(),
                check_history_limit: 0,
            })
            .await
            .unwrap_err(),
        client
            .check_now(CheckNowRequest {
                company_id: b.clone(),
                domain_name: "example.com".into(),
            })
            .await
            .unwrap_err(),
        client
            .rotate_challenge(RotateChallengeRequest {
                company_id: b.clone(),
                domain_name: "example.com".into(),
            })
            .await
            .unwrap_err(),
    ] {
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    }

    let rotated = client
        .rotate_challenge(RotateChallengeRequest {
            company_id: a.clone(),
            domain_name: "example.com".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .challenge
        .unwrap();
    assert_ne!(rotated.token, challenge.token);
    assert_eq!(rotated.state_sequence, verified.state_sequence + 1);

    for _ in 0..2 {
        client
            .delete_challenge(DeleteChallengeRequest {
                company_id: a.clone(),
                domain_name: "example.com".into(),
            })
            .await
            .expect("deleting is idempotent");
    }
    let gone = client
        .get_status(GetStatusRequest {
            company_id: a.clone(),
            domain_name: "example.com".into(),
            check_history_limit: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);

    served.shutdown().await;
}

#[tokio::test]
async fn invalid_fields_are_named_in_bad_request_details() {
    let world = world(&["--scheduler", "false"]).await;
    let mut served = serve(&world).await;
    let status = served
        .client
        .create_challenge(create("acme", "*.example.com"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let details = status
        .get_details_bad_request()
        .expect("BadRequest details");
    let fields: Vec<_> = details
        .field_violations
        .iter()
        .map(|v| (v.field.as_str(), v.reason.as_str()))
        .collect();
    assert_eq!(
        fields,
        [
            ("company_id", "COMPANY_ID_NOT_UUID"),
            ("domain_name", "DOMAIN_WILDCARD")
        ]
    );
    let empty = served
        .client
        .check_now(CheckNowRequest::default())
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert!(
        empty.message().contains("company_id is required"),
        "{}",
        empty.message()
    );
    served.shutdown().await;
}
