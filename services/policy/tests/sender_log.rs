//! The sender log from real `sender.ip_seen` events on RabbitMQ, with the admin alert going to a
//! real SMTP sink: one row and one email per new IP, however many reports race.

mod support;

use std::sync::Arc;
use std::time::Duration;

use email2sms_proto::policy::v1 as pb;
use email2sms_proto::prost::Message;
use email2sms_proto::queue::v1::{SENDER_IP_SEEN_ROUTING_KEY, SENDER_IP_SEEN_TYPE, SenderIpSeen};
use email2sms_queue::{Broker, Outgoing, Publisher, QueueArgs};
use support::Service;
use support::sink::{Sink, free_port};
use uuid::Uuid;

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

struct Events {
    publisher: Arc<Publisher>,
    exchange: String,
}

impl Events {
    fn new(prefix: &str) -> Events {
        let args = QueueArgs {
            amqp_url: AMQP_URL.into(),
            amqp_prefix: prefix.into(),
            ..support_queue_args()
        };
        Events {
            publisher: Arc::new(Publisher::new(
                Broker::new(AMQP_URL, "policy sender-log test"),
                Duration::from_secs(10),
            )),
            exchange: args.topology().events_exchange(),
        }
    }

    async fn publish(&self, company: &str, ip: &str, from: &str) -> Result<(), String> {
        let event = SenderIpSeen {
            event_id: Uuid::new_v4().to_string(),
            company_id: company.into(),
            client_ip: ip.into(),
            envelope_sender: from.into(),
            from_address: from.into(),
            helo: "mail.example.com".into(),
            accepted: true,
            ..Default::default()
        };
        self.publish_event(event).await
    }

    async fn publish_event(&self, event: SenderIpSeen) -> Result<(), String> {
        let payload = event.encode_to_vec();
        self.publisher
            .publish(Outgoing {
                exchange: &self.exchange,
                routing_key: SENDER_IP_SEEN_ROUTING_KEY,
                payload: &payload,
                message_id: event.event_id.clone(),
                message_type: SENDER_IP_SEEN_TYPE,
                headers: Default::default(),
            })
            .await
            .map_err(|e| e.to_string())
    }
}

fn support_queue_args() -> QueueArgs {
    use clap::Parser;
    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        queue: QueueArgs,
    }
    Args::parse_from(["test"]).queue
}

async fn list(
    s: &mut Service,
    company: &str,
    page_size: i32,
    token: &str,
) -> pb::ListSenderLogResponse {
    s.policy
        .list_sender_log(pb::ListSenderLogRequest {
            company_id: company.into(),
            page_size,
            page_token: token.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

async fn wait_for_count(
    s: &mut Service,
    company: &str,
    ip: &str,
    count: u64,
) -> pb::SenderLogEntry {
    for _ in 0..300 {
        let page = list(s, company, 100, "").await;
        if let Some(entry) = page.entries.iter().find(|e| e.client_ip == ip)
            && entry.seen_count >= count
            && entry.admin_notified
        {
            return entry.clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{ip} never reached count {count}");
}

#[tokio::test]
async fn the_same_ip_reported_50_times_concurrently_is_one_row_and_one_email_per_admin() {
    let sink = Sink::start().await;
    let prefix = format!("test.{}.", Uuid::new_v4().simple());
    let mut s = Service::start_with(&["--smtp-relay", &sink.url(), "--amqp-prefix", &prefix]).await;
    let company = s.company("Acme").await;
    s.policy
        .upsert_company(pb::UpsertCompanyRequest {
            company: Some(pb::Company {
                company_id: company.clone(),
                display_name: "Acme".into(),
                admin_email_addresses: vec!["admin@acme.example".into(), "it@acme.example".into()],
                default_region: "NZ".into(),
                ..Default::default()
            }),
            update_mask: None,
        })
        .await
        .unwrap();
    let other = s.company("Rival").await;
    let events = Events::new(&prefix);

    // The consumer declares and binds its queue at start; until then a publish is unroutable.
    let mut published = false;
    for _ in 0..100 {
        if events
            .publish(&company, "198.51.100.7", "jo@acme.example")
            .await
            .is_ok()
        {
            published = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(published, "the policy events queue never appeared");
    let mut tasks = Vec::new();
    for _ in 0..49 {
        let events = Events {
            publisher: events.publisher.clone(),
            exchange: events.exchange.clone(),
        };
        let company = company.clone();
        tasks.push(tokio::spawn(async move {
            events
                .publish(&company, "198.51.100.7", "jo@acme.example")
                .await
                .unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let entry = wait_for_count(&mut s, &company, "198.51.100.7", 50).await;
    assert_eq!(entry.seen_count, 50);
    assert_eq!(entry.sample_from_address, "jo@acme.example");
    assert_eq!(entry.sample_helo, "mail.example.com");
    assert!(entry.admin_notify_time.is_some());
    let got = sink.wait_for(2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_after = sink.received();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got_after.len(), 2);
    let mut rcpts: Vec<_> = got.iter().map(|r| r.rcpt.clone()).collect();
    rcpts.sort();
    assert_eq!(rcpts, ["admin@acme.example", "it@acme.example"]);
    assert!(got[0].text().contains("198.51.100.7"));

    // A second IP: a second row and a second email per admin.
    events
        .publish(&company, "203.0.113.9", "al@acme.example")
        .await
        .unwrap();
    wait_for_count(&mut s, &company, "203.0.113.9", 1).await;
    assert_eq!(sink.wait_for(4).await.len(), 4);

    // Paging: newest server first, one per page.
    let first = list(&mut s, &company, 1, "").await;
    assert_eq!(first.entries.len(), 1);
    assert_eq!(first.entries[0].client_ip, "203.0.113.9");
    let second = list(&mut s, &company, 1, &first.next_page_token).await;
    assert_eq!(second.entries.len(), 1);
    assert_eq!(second.entries[0].client_ip, "198.51.100.7");
    assert!(second.next_page_token.is_empty());

    // Filter by range.
    let filtered = s
        .policy
        .list_sender_log(pb::ListSenderLogRequest {
            company_id: company.clone(),
            client_ip_range: "203.0.113.0/24".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(filtered.entries.len(), 1);

    // Another company sees nothing.
    assert!(list(&mut s, &other, 100, "").await.entries.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn a_failed_admin_alert_is_retried_and_sent_once() {
    let port = free_port();
    let mut sink = Sink::down(port);
    let prefix = format!("test.{}.", Uuid::new_v4().simple());
    let relay = format!("smtp://127.0.0.1:{port}");
    let mut s = Service::start_with(&[
        "--smtp-relay",
        &relay,
        "--amqp-prefix",
        &prefix,
        "--sender-alert-retry-interval",
        "300ms",
    ])
    .await;
    let company = s.company("Acme").await;
    let events = Events::new(&prefix);
    let mut published = false;
    for _ in 0..100 {
        if events.publish(&company, "192.0.2.44", "").await.is_ok() {
            published = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(published);
    // The alert fails while the smarthost is down, and the error is visible.
    let mut error = String::new();
    for _ in 0..100 {
        let page = list(&mut s, &company, 10, "").await;
        if let Some(e) = page.entries.first()
            && !e.admin_notify_error.is_empty()
        {
            assert!(!e.admin_notified);
            error = e.admin_notify_error.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!error.is_empty(), "the failed alert is recorded");
    sink.up().await;
    wait_for_count(&mut s, &company, "192.0.2.44", 1).await;
    assert_eq!(sink.wait_for(1).await.len(), 1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sink.received().len(), 1, "sent once, never again");
    s.stop().await;
}

/// Publishes `event` until the policy's consumer has bound its queue (before, it is unroutable).
async fn publish_once_bound(events: &Events, event: SenderIpSeen) {
    for _ in 0..100 {
        if events.publish_event(event.clone()).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the policy events queue never appeared");
}

fn sighting(company: &str, ip: &str, accepted: bool, accepted_messages: u32) -> SenderIpSeen {
    SenderIpSeen {
        event_id: Uuid::new_v4().to_string(),
        company_id: company.into(),
        client_ip: ip.into(),
        from_address: "jo@acme.example".into(),
        accepted,
        accepted_messages,
        ..Default::default()
    }
}

#[tokio::test]
async fn seen_count_adds_up_the_accepted_mail_of_each_report() {
    let prefix = format!("test.{}.", Uuid::new_v4().simple());
    let mut s = Service::start_with(&["--amqp-prefix", &prefix]).await;
    let company = s.company("Acme").await;
    let events = Events::new(&prefix);
    publish_once_bound(&events, sighting(&company, "198.51.100.1", true, 40)).await;
    publish_once_bound(&events, sighting(&company, "198.51.100.1", true, 60)).await;
    // Authenticated but refused (say, a bad recipient): the server is logged, nothing counted.
    publish_once_bound(&events, sighting(&company, "198.51.100.2", false, 0)).await;
    let mut counts = Vec::new();
    for _ in 0..100 {
        let page = list(&mut s, &company, 10, "").await;
        counts = page
            .entries
            .iter()
            .map(|e| (e.client_ip.clone(), e.seen_count))
            .collect();
        counts.sort();
        if counts.len() == 2 && counts[0].1 == 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        counts,
        [
            ("198.51.100.1".to_owned(), 100),
            ("198.51.100.2".to_owned(), 0)
        ]
    );
    s.stop().await;
}

/// Twelve new servers within the window: the first `limit` (3) are alerted one by one, the other
/// nine come in one digest once the window has passed; each server is named exactly once.
#[tokio::test]
async fn alerts_beyond_the_budget_come_in_one_digest() {
    let sink = Sink::start().await;
    let prefix = format!("test.{}.", Uuid::new_v4().simple());
    let mut s = Service::start_with(&[
        "--smtp-relay",
        &sink.url(),
        "--amqp-prefix",
        &prefix,
        "--sender-alert-limit",
        "3",
        "--sender-alert-window",
        "4s",
        "--sender-alert-retry-interval",
        "200ms",
    ])
    .await;
    let company = s.company("Acme").await;
    s.policy
        .upsert_company(pb::UpsertCompanyRequest {
            company: Some(pb::Company {
                company_id: company.clone(),
                display_name: "Acme".into(),
                admin_email_addresses: vec!["admin@acme.example".into()],
                default_region: "NZ".into(),
                ..Default::default()
            }),
            update_mask: None,
        })
        .await
        .unwrap();
    let events = Events::new(&prefix);
    let ips: Vec<String> = (1..=12).map(|n| format!("203.0.113.{n}")).collect();
    for ip in &ips {
        publish_once_bound(&events, sighting(&company, ip, true, 1)).await;
    }
    let singles = sink.wait_for(3).await;
    // The digest waits for the window; until then nothing more.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.received().len(), 3, "{:?}", sink.received());
    let all = sink.wait_for(4).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(sink.received().len(), 4, "three alerts and one digest");
    let texts: Vec<String> = all.iter().map(|m| m.text().replace("\r\n", "\n")).collect();
    let digests: Vec<&String> = texts
        .iter()
        .filter(|text| text.contains("mail servers not seen before"))
        .collect();
    assert_eq!(digests.len(), 1, "{texts:?}");
    assert!(
        digests[0].contains("9 mail servers not seen before"),
        "{}",
        digests[0]
    );
    for ip in &ips {
        let line = format!("Server IP address: {ip}\n");
        let named = texts.iter().filter(|text| text.contains(&line)).count();
        assert_eq!(named, 1, "{ip} is named in exactly one email: {texts:?}");
    }
    drop(singles);
    let page = list(&mut s, &company, 100, "").await;
    assert_eq!(page.entries.len(), 12);
    assert!(page.entries.iter().all(|e| e.admin_notified));
    assert_eq!(
        page.entries
            .iter()
            .filter(|e| e.admin_notify_in_digest)
            .count(),
        9
    );
    s.stop().await;
}
