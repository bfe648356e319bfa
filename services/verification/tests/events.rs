//! `domain.verification.changed` events reach RabbitMQ exactly once even when the broker is down
//! at the moment of the change: they wait in the outbox and go out when it is back.

use std::path::Path;
use std::time::Duration;

use email2sms_proto::prost::Message;
use email2sms_proto::queue::v1::{
    DOMAIN_VERIFICATION_CHANGED_ROUTING_KEY, DomainVerificationChanged,
};
use email2sms_proto::verification::v1::verification_service_client::VerificationServiceClient;
use email2sms_proto::verification::v1::{
    CheckNowRequest, CreateChallengeRequest, VerificationState,
};
use email2sms_queue::{Broker, Topology};
use email2sms_testkit::dns::DnsServer;
use email2sms_testkit::{ServiceProcess, TestDb};
use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeleteOptions};

const BINARY: &str = env!("CARGO_BIN_EXE_email2sms-verification");
const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

async fn start(db: &TestDb, dns: &DnsServer, amqp_url: &str, prefix: &str) -> ServiceProcess {
    let dns_addr = dns.addr().to_string();
    ServiceProcess::spawn(
        Path::new(BINARY),
        &[
            ("DATABASE_URL", &db.url),
            ("EMAIL2SMS_MIGRATE", "1"),
            ("EMAIL2SMS_INSECURE_NO_AUTH", "1"),
            ("EMAIL2SMS_VERIFICATION_GRPC_ADDR", "127.0.0.1:0"),
            ("EMAIL2SMS_VERIFICATION_SCHEDULER", "false"),
            ("EMAIL2SMS_DNS_SERVERS", &dns_addr),
            ("AMQP_URL", amqp_url),
            ("EMAIL2SMS_AMQP_PREFIX", prefix),
        ],
    )
    .await
}

#[tokio::test]
async fn events_written_while_the_broker_is_down_arrive_exactly_once_after_a_restart() {
    let db = TestDb::unique();
    let mut dns = DnsServer::start().await;
    dns.set_zone("example.com", "www A 192.0.2.1").await;
    let topology = Topology {
        prefix: format!("test.{}.", uuid::Uuid::new_v4().simple()),
        ..Topology::default()
    };
    let broker = Broker::new(AMQP_URL, "verification events test");
    let channel = broker.channel().await.unwrap();
    let queue = format!("{}policy.events", topology.prefix);
    topology
        .declare_event_queue(&channel, &queue, &[DOMAIN_VERIFICATION_CHANGED_ROUTING_KEY])
        .await
        .unwrap();

    // The broker is unreachable (nothing listens on port 1): the change still commits.
    let mut service = start(
        &db,
        &dns,
        "amqp://guest:guest@127.0.0.1:1/%2f",
        &topology.prefix,
    )
    .await;
    let mut client = VerificationServiceClient::new(service.channel().await);
    let company = "00000000-0000-0000-0000-0000000000b2".to_string();
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
    let checked = client
        .check_now(CheckNowRequest {
            company_id: company.clone(),
            domain_name: "example.com".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        checked.challenge.unwrap().state(),
        VerificationState::Verified
    );
    service.terminate();
    assert_eq!(service.wait(Duration::from_secs(30)).await.code(), Some(0));
    assert!(
        channel
            .basic_get(queue.as_str().into(), BasicGetOptions::default())
            .await
            .unwrap()
            .is_none(),
        "nothing can have been published while the broker was unreachable"
    );

    // Restarted with the broker reachable: the waiting events go out, each once.
    let mut service = start(&db, &dns, AMQP_URL, &topology.prefix).await;
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < deadline {
        match channel
            .basic_get(queue.as_str().into(), BasicGetOptions::default())
            .await
            .unwrap()
        {
            Some(message) => {
                message.ack(BasicAckOptions::default()).await.unwrap();
                let id = message.delivery.properties.message_id().clone().unwrap();
                let event =
                    DomainVerificationChanged::decode(message.delivery.data.as_slice()).unwrap();
                assert_eq!(id.as_str(), event.event_id, "message-id is the event id");
                events.push(event);
            }
            // Two events are expected; keep listening a little longer for a duplicate.
            None if events.len() >= 2 => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if channel
                    .basic_get(queue.as_str().into(), BasicGetOptions::default())
                    .await
                    .unwrap()
                    .is_none()
                {
                    break;
                }
                panic!("an event was published twice");
            }
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let states: Vec<_> = events.iter().map(|e| e.state()).collect();
    assert_eq!(
        states,
        vec![VerificationState::Pending, VerificationState::Verified],
        "created, then verified, in order"
    );
    assert!(
        events
            .iter()
            .all(|e| e.company_id == company && e.domain_name == "example.com")
    );

    service.terminate();
    assert_eq!(service.wait(Duration::from_secs(30)).await.code(), Some(0));
    let _ = channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
}
