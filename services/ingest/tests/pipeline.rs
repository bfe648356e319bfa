//! The whole pipeline against real Redis, RabbitMQ and a real DNS server (NSD), with Python's
//! smtplib as the client: what is accepted becomes exactly the expected SMS jobs; everything else
//! gets the reply DESIGN.md prescribes. Each test uses its own Redis prefix and AMQP prefix.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use common::gateway::{self, AMQP_URL, Harness, Setup, entry, smtplib_from_each};
use email2sms_proto::ingest::v1::{Decision, DiagnoseRequest, DiagnoseResponse, StepOutcome};
use email2sms_proto::policy::v1::Readiness;
use email2sms_proto::policy::v1::sender_resolution_service_server::{
    SenderResolutionService, SenderResolutionServiceServer,
};
use email2sms_proto::policy::v1::{
    CompiledSender, MatchKind, RebuildCacheRequest, RebuildCacheResponse, ResolveSenderRequest,
    ResolveSenderResponse, SecurityType,
};
use email2sms_proto::queue::v1::{SmsEncoding, SmsJob};
use email2sms_proto::tonic::{Request, Response, Status};
use email2sms_testkit::dns::DnsServer;
use email2sms_testkit::{eventually, eventually_within};
use lapin::options::{BasicGetOptions, QueueDeleteOptions};
use prost::Message;
use redis::AsyncCommands;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

/// Ingest with `dns` as its DNS server and the test providers' SPF domains, then `extra` flags
/// (a flag given there replaces the default).
async fn harness(dns: &DnsServer, extra: &[&str]) -> Harness {
    let dns_addr = dns.addr().to_string();
    let mut flags = vec![
        "--dns-servers",
        &dns_addr,
        "--google-spf-domain",
        "_spf.google.test",
        "--outlook-spf-domain",
        "spf.outlook.test",
    ];
    flags.extend_from_slice(extra);
    gateway::launch(Setup {
        flags: &flags,
        ..Setup::default()
    })
    .await
}

async fn dns_with_zones() -> DnsServer {
    let mut dns = DnsServer::start().await;
    dns.set_zone("good.test", "@ TXT \"v=spf1 ip4:127.0.0.1 -all\"")
        .await;
    dns.set_zone("other.test", "@ TXT \"v=spf1 ip4:127.0.0.1 -all\"")
        .await;
    dns.set_zone("strict.test", "@ TXT \"v=spf1 ip4:192.0.2.1 -all\"")
        .await;
    dns.set_zone("google.test", "_spf TXT \"v=spf1 ip4:127.0.0.0/8 -all\"")
        .await;
    dns.set_zone("outlook.test", "spf TXT \"v=spf1 ip4:192.0.2.0/24 -all\"")
        .await;
    dns
}

fn mail(from: &str, message_id: &str, body: &str) -> String {
    format!(
        "From: Sender <{from}>\nTo: x@sms.example.net\nSubject: Alert\nMessage-ID: <{message_id}>\n\n{body}\n"
    )
}

#[tokio::test]
async fn authorised_mail_becomes_exactly_the_expected_jobs() {
    let dns = dns_with_zones().await;
    let mut h = harness(&dns, &[]).await;
    // An NZ company whose admin allowed Australia.
    let mut alice = entry(
        MatchKind::EmailAddress,
        "alice@corp.test",
        SecurityType::ByIpAddresses,
    );
    alice.limits.as_mut().unwrap().allowed_destination_regions = vec!["AU".into()];
    h.put_email("alice@corp.test", &alice).await;
    h.allow_domain("good.test", SecurityType::ViaSpf).await;

    // By IP addresses, two recipients (national and international form), GSM-7.
    let reply = h
        .send(
            "alice@corp.test",
            &["0211234567@sms.example.net", "+61412345678@sms.example.net"],
            &mail("alice@corp.test", "m1@corp.test", "Pump 3 failed"),
        )
        .await;
    let mut jobs = h.jobs().await;
    jobs.sort_by_key(|j| j.recipient_index);
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    // As Postfix says "queued as": the ids GetMessage finds, in recipient order.
    let queued = format!(
        "250 2.0.0 queued 2 SMS as {}, {}",
        jobs[0].job_id, jobs[1].job_id
    );
    assert_eq!(reply, queued);
    assert_eq!(jobs[0].recipient, "+64211234567");
    assert_eq!(jobs[0].recipient_address, "0211234567@sms.example.net");
    assert_eq!(jobs[1].recipient, "+61412345678");
    for (i, job) in jobs.iter().enumerate() {
        assert_eq!(job.text, "Pump 3 failed");
        assert_eq!(job.encoding(), SmsEncoding::Gsm7);
        assert_eq!(job.segment_count, 1);
        assert!(!job.truncated);
        assert_eq!(job.company_id, "company-1");
        assert_eq!(job.forwarding_user_id, "user-1");
        assert_eq!(job.forwarding_user_external_id, "ext-1");
        assert_eq!(job.sender_id, "ACME");
        assert_eq!(job.match_kind(), MatchKind::EmailAddress);
        assert_eq!(job.recipient_count, 2);
        assert_eq!(job.recipient_index as usize, i);
        assert_eq!(
            uuid::Uuid::parse_str(&job.job_id)
                .unwrap()
                .get_version_num(),
            7
        );
        let origin = job.origin.as_ref().unwrap();
        assert_eq!(origin.message_id, "m1@corp.test");
        assert_eq!(origin.from_address, "alice@corp.test");
        assert_eq!(origin.subject, "Alert");
        assert_eq!(origin.client_ip, "127.0.0.1");
        assert_eq!(origin.helo, "mail.client.test");
        let auth = job.authentication.as_ref().unwrap();
        assert_eq!(auth.security_type(), SecurityType::ByIpAddresses);
    }

    // The relay delivers the same message again (a lost 250): accepted, no second set.
    let reply = h
        .send(
            "alice@corp.test",
            &["0211234567@sms.example.net", "+61412345678@sms.example.net"],
            &mail("alice@corp.test", "m1@corp.test", "Pump 3 failed"),
        )
        .await;
    assert_eq!(
        reply,
        format!("{queued} earlier (same Message-ID); not sent again")
    );
    assert!(h.jobs().await.is_empty());

    // Via SPF for a verified domain: UCS-2 text, long enough for 2 parts.
    let body = "Ж".repeat(100);
    let reply = h
        .send(
            "ops@good.test",
            &["+64211234567@sms.example.net"],
            &mail("ops@good.test", "m2@good.test", &body),
        )
        .await;
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
    let jobs = h.jobs().await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].encoding(), SmsEncoding::Ucs2);
    assert_eq!(jobs[0].segment_count, 2);
    assert_eq!(jobs[0].match_kind(), MatchKind::Domain);
    let auth = jobs[0].authentication.as_ref().unwrap();
    assert_eq!(auth.security_type(), SecurityType::ViaSpf);
    assert!(auth.aligned);
    assert_eq!(auth.spf_domain, "good.test");
    h.cleanup().await;
}

#[tokio::test]
async fn spoofed_automatic_and_empty_mail_is_refused() {
    let dns = dns_with_zones().await;
    let mut h = harness(&dns, &[]).await;
    h.allow_domain("good.test", SecurityType::ViaSpf).await;
    h.allow_domain("strict.test", SecurityType::ViaSpf).await;
    h.allow_ip("10.0.0.0/8", SecurityType::ByIpAddresses).await;
    let rcpt = ["+64211234567@sms.example.net"];
    let cases: Vec<(&str, String, &str, &str)> = vec![
        // From a registered domain, sent from an IP outside its SPF.
        (
            "a@strict.test",
            mail("a@strict.test", "s1", "hi"),
            "550 5.7.23",
            "SPF fail",
        ),
        // Envelope domain passes SPF but differs from the From domain.
        (
            "a@other.test",
            mail("a@good.test", "s2", "hi"),
            "550 5.7.1",
            "alignment",
        ),
        // Unverified domain (nothing in Redis) and a subdomain of a verified one; the IP entry
        // 10.0.0.0/8 does not cover 127.0.0.1.
        (
            "a@unknown.test",
            mail("a@unknown.test", "s3", "hi"),
            "550 5.7.1",
            "not registered",
        ),
        (
            "a@sub.good.test",
            mail("a@sub.good.test", "s4", "hi"),
            "550 5.7.1",
            "subdomain",
        ),
        // Bounce and auto-reply.
        ("", mail("a@good.test", "s5", "hi"), "550 5.7.1", "bounce"),
        (
            "a@good.test",
            mail("a@good.test", "s6", "hi").replace(
                "Subject: Alert",
                "Subject: Alert\nAuto-Submitted: auto-replied",
            ),
            "550 5.7.1",
            "auto-reply",
        ),
        // Nothing left after removing the signature, and no subject.
        (
            "a@good.test",
            mail("a@good.test", "s7", "-- \nJane").replace("Subject: Alert\n", ""),
            "550 5.6.0",
            "empty",
        ),
        // Two From mailboxes.
        (
            "a@good.test",
            mail("a@good.test", "s8", "hi").replace(
                "From: Sender <a@good.test>",
                "From: a@good.test, b@good.test",
            ),
            "550 5.7.1",
            "two From",
        ),
    ];
    for (mail_from, message, expected, what) in cases {
        let reply = h.send(mail_from, &rcpt, &message).await;
        assert!(reply.starts_with(expected), "{what}: {reply}");
    }
    // A plausible-looking but invalid number is refused naming it.
    let reply = h
        .send(
            "a@good.test",
            &["+99912345678@sms.example.net"],
            &mail("a@good.test", "s9", "hi"),
        )
        .await;
    assert!(reply.starts_with("550 5.1.3"), "{reply}");
    assert!(reply.contains("+99912345678@sms.example.net"), "{reply}");
    assert!(h.jobs().await.is_empty());
    h.cleanup().await;
}

#[tokio::test]
async fn provider_security_types_use_the_configured_provider_domain() {
    let dns = dns_with_zones().await;
    let mut h = harness(&dns, &[]).await;
    h.allow_domain("gmail-corp.test", SecurityType::ByGoogleMail)
        .await;
    h.allow_domain("o365.test", SecurityType::ByOutlook).await;
    let rcpt = ["+64211234567@sms.example.net"];
    let reply = h
        .send(
            "x@gmail-corp.test",
            &rcpt,
            &mail("x@gmail-corp.test", "g1", "hello"),
        )
        .await;
    assert!(reply.starts_with("250"), "{reply}");
    // 127.0.0.1 is not in the test Outlook range.
    let reply = h
        .send("x@o365.test", &rcpt, &mail("x@o365.test", "o1", "hello"))
        .await;
    assert!(reply.starts_with("550 5.7.23"), "{reply}");
    // Google's servers pass, but the envelope domain must still be the From domain.
    let reply = h
        .send(
            "x@other.test",
            &rcpt,
            &mail("x@gmail-corp.test", "g2", "hello"),
        )
        .await;
    assert!(reply.starts_with("550 5.7.1"), "{reply}");
    let jobs = h.jobs().await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        jobs[0].authentication.as_ref().unwrap().security_type(),
        SecurityType::ByGoogleMail
    );
    h.cleanup().await;
}

#[tokio::test]
async fn unavailable_dependencies_give_451_and_nothing_is_queued() {
    let dns = dns_with_zones().await;
    // RabbitMQ unreachable.
    let mut h = harness(&dns, &["--amqp-url", "amqp://guest:guest@127.0.0.1:1/%2f"]).await;
    h.allow_domain("good.test", SecurityType::ViaSpf).await;
    let rcpt = ["+64211234567@sms.example.net"];
    let reply = h
        .send("a@good.test", &rcpt, &mail("a@good.test", "d1", "hi"))
        .await;
    assert!(reply.starts_with("451 4.3.0"), "{reply}");
    assert!(reply.contains("nothing was sent"), "{reply}");
    // The Message-ID was not marked: once the broker is back the retry is not a "duplicate".
    let key = format!("{}ingest:dedupe:a@good.test|d1", h.prefix);
    let exists: bool = h.redis.exists(key).await.unwrap();
    assert!(!exists);
    // The job id is remembered, so the retry republishes the same id (dispatch is idempotent on
    // it) even if part of a message had been confirmed before the failure.
    let ids: std::collections::HashMap<String, String> = h
        .redis
        .hgetall(format!("{}ingest:jobids:a@good.test|d1", h.prefix))
        .await
        .unwrap();
    assert_eq!(
        uuid::Uuid::parse_str(&ids["+64211234567"])
            .unwrap()
            .get_version_num(),
        7
    );

    // Redis and the policy service both unreachable.
    let h2 = harness(&dns, &["--redis-url", "redis://127.0.0.1:1"]).await;
    let reply = h2
        .send("a@good.test", &rcpt, &mail("a@good.test", "d2", "hi"))
        .await;
    assert!(reply.starts_with("451 4.3.0"), "{reply}");
    h2.cleanup().await;
}

#[tokio::test]
async fn diagnose_explains_accepted_and_refused_senders() {
    let dns = dns_with_zones().await;
    let mut h = harness(&dns, &[]).await;
    h.allow_domain("good.test", SecurityType::ViaSpf).await;
    let mut ip_entry = entry(
        MatchKind::IpAddress,
        "10.0.0.0/8",
        SecurityType::ByIpAddresses,
    );
    ip_entry.allowed_ip_ranges = vec!["10.0.0.0/8".into()];
    h.put_ip("10.0.0.0/8", &ip_entry).await;
    let api = h.diagnose_api();
    let accepted = api
        .diagnose(DiagnoseRequest {
            client_ip: "127.0.0.1".into(),
            helo: "mail.good.test".into(),
            envelope_sender: "a@good.test".into(),
            from_header: "A <a@good.test>".into(),
            recipient: "0211234567@sms.example.net".into(),
            ..DiagnoseRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(accepted.decision(), Decision::Accept, "{accepted:?}");
    // The words of the 250 the mail would get, without the ids its jobs get only when queued.
    let reply = accepted.reply.as_ref().unwrap();
    assert_eq!(
        (
            reply.code,
            reply.enhanced_code.as_str(),
            reply.text.as_str()
        ),
        (250, "2.0.0", "queued 1 SMS as <job id>")
    );
    // Every decision lists the same steps in the same order, the order an SMTP session meets
    // them: the recipient address at RCPT TO first.
    let names = |answer: &DiagnoseResponse| -> Vec<String> {
        answer.steps.iter().map(|s| s.name.clone()).collect()
    };
    const STEPS: [&str; 10] = [
        "recipient",
        "sender_identity",
        "auto_reply",
        "resolve_sender",
        "readiness",
        "authentication",
        "alignment",
        "forwarding_user",
        "destination",
        "text",
    ];
    assert_eq!(names(&accepted), STEPS);
    assert!(
        accepted
            .steps
            .iter()
            .all(|s| s.outcome() != StepOutcome::Skipped),
        "{accepted:?}"
    );
    assert!(
        accepted.steps[5].detail.starts_with("SPF: "),
        "{:?}",
        accepted.steps[5]
    );
    // The forwarding user by the names an admin knows, the id kept for support.
    assert_eq!(
        accepted.steps[7].detail,
        "sent as jo (sender ID \"ACME\"; user user-1)"
    );
    // Without a raw message, the text step says it judged a placeholder.
    assert!(
        accepted.steps[9]
            .detail
            .contains("placeholder text \"Diagnose test message\""),
        "{:?}",
        accepted.steps[9]
    );
    assert_eq!(accepted.sms.as_ref().unwrap().recipient, "+64211234567");
    // With the real message, the text step says which typography became GSM-7 and the preview
    // shows the text as it will be sent.
    let typographic = api
        .diagnose(DiagnoseRequest {
            client_ip: "127.0.0.1".into(),
            helo: "mail.good.test".into(),
            envelope_sender: "a@good.test".into(),
            recipient: "0211234567@sms.example.net".into(),
            raw_message: mail("a@good.test", "typo1", "Meeting – “today”…").into_bytes(),
            ..DiagnoseRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(typographic.decision(), Decision::Accept, "{typographic:?}");
    let text_step = &typographic.steps[9];
    assert!(
        text_step
            .detail
            .contains("typography replaced to stay GSM-7: 1 × U+2013 – → \"-\""),
        "{text_step:?}"
    );
    let preview = typographic.sms.as_ref().unwrap();
    assert_eq!(preview.text, "Meeting - \"today\"...");
    assert_eq!(preview.encoding(), SmsEncoding::Gsm7);
    assert!(accepted.sender.is_some());

    // The 10.0.0.0/8 IP entry matches 10.1.2.3 but the domain rule is tried first and wins for
    // good.test; a sender outside the rules is refused at resolve_sender.
    let refused = api
        .diagnose(DiagnoseRequest {
            client_ip: "192.0.2.9".into(),
            envelope_sender: "a@nowhere.test".into(),
            from_header: "a@nowhere.test".into(),
            recipient: "0211234567@sms.example.net".into(),
            ..DiagnoseRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(refused.decision(), Decision::Reject);
    let reply = refused.reply.as_ref().unwrap();
    assert_eq!((reply.code, reply.enhanced_code.as_str()), (550, "5.7.1"));
    assert!(reply.text.contains("ask your administrator"), "{reply:?}");
    let step = refused
        .steps
        .iter()
        .find(|s| s.name == "resolve_sender")
        .unwrap();
    assert_eq!(step.outcome(), StepOutcome::Fail);
    assert_eq!(names(&refused), STEPS);
    let outcomes: Vec<StepOutcome> = refused.steps.iter().map(|s| s.outcome()).collect();
    assert_eq!(&outcomes[..3], [StepOutcome::Pass; 3]);
    assert_eq!(outcomes[3], StepOutcome::Fail);
    assert_eq!(&outcomes[4..], [StepOutcome::Skipped; 6]);

    // A recipient RCPT TO would refuse is the first step, refused with RCPT's own reply, before
    // the sender is looked at.
    let bad_recipient = api
        .diagnose(DiagnoseRequest {
            client_ip: "127.0.0.1".into(),
            envelope_sender: "a@good.test".into(),
            from_header: "a@good.test".into(),
            recipient: "jane@sms.example.net".into(),
            ..DiagnoseRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(names(&bad_recipient), STEPS);
    assert_eq!(bad_recipient.steps[0].outcome(), StepOutcome::Fail);
    assert!(
        bad_recipient.steps[1..]
            .iter()
            .all(|s| s.outcome() == StepOutcome::Skipped)
    );
    let reply = bad_recipient.reply.as_ref().unwrap();
    assert_eq!((reply.code, reply.enhanced_code.as_str()), (550, "5.1.3"));
    assert!(
        reply.text.contains("64211234567@sms.example.net"),
        "{reply:?}"
    );
    let elsewhere = api
        .diagnose(DiagnoseRequest {
            client_ip: "127.0.0.1".into(),
            envelope_sender: "a@good.test".into(),
            from_header: "a@good.test".into(),
            recipient: "64211234567@example.com".into(),
            ..DiagnoseRequest::default()
        })
        .await
        .unwrap();
    let reply = elsewhere.reply.as_ref().unwrap();
    assert_eq!((reply.code, reply.enhanced_code.as_str()), (550, "5.7.1"));
    assert!(reply.text.starts_with("relaying denied"), "{reply:?}");

    let by_ip = api
        .diagnose(DiagnoseRequest {
            client_ip: "10.1.2.3".into(),
            envelope_sender: "a@nowhere.test".into(),
            from_header: "a@nowhere.test".into(),
            recipient: "0211234567@sms.example.net".into(),
            ..DiagnoseRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(by_ip.decision(), Decision::Accept, "{by_ip:?}");
    // The same slots for By IP Addresses: authentication is the allowlist, alignment does not
    // apply.
    assert_eq!(names(&by_ip), STEPS);
    assert!(
        by_ip.steps[5].detail.starts_with("IP allowlist: "),
        "{:?}",
        by_ip.steps[5]
    );
    assert_eq!(by_ip.steps[6].outcome(), StepOutcome::Skipped);
    assert!(
        by_ip.steps[6].detail.starts_with("not applicable"),
        "{:?}",
        by_ip.steps[6]
    );
    assert_eq!(
        by_ip.sender.as_ref().unwrap().match_kind(),
        MatchKind::IpAddress
    );
    // Another company's match is not shown to a company-scoped caller.
    let scoped = api
        .diagnose(DiagnoseRequest {
            client_ip: "10.1.2.3".into(),
            envelope_sender: "a@nowhere.test".into(),
            from_header: "a@nowhere.test".into(),
            recipient: "0211234567@sms.example.net".into(),
            company_id: "company-2".into(),
            ..DiagnoseRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(scoped.decision(), Decision::Reject);
    assert!(scoped.sender.is_none());
    h.cleanup().await;
}

/// A stand-in for the policy service's `ResolveSender`: knows one sender and insists on the
/// internal token.
struct FakeResolver(CompiledSender);

#[email2sms_proto::tonic::async_trait]
impl SenderResolutionService for FakeResolver {
    async fn resolve_sender(
        &self,
        request: Request<ResolveSenderRequest>,
    ) -> Result<Response<ResolveSenderResponse>, Status> {
        let authorised = request
            .metadata()
            .get("authorization")
            .is_some_and(|v| v == "Bearer internal-secret");
        if !authorised {
            return Err(Status::unauthenticated("no token"));
        }
        let request = request.into_inner();
        Ok(Response::new(ResolveSenderResponse {
            sender: (request.from_address == "a@good.test").then(|| self.0.clone()),
            version: 1,
        }))
    }

    async fn rebuild_cache(
        &self,
        _request: Request<RebuildCacheRequest>,
    ) -> Result<Response<RebuildCacheResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

#[tokio::test]
async fn redis_down_falls_back_to_the_policy_service() {
    let dns = dns_with_zones().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let policy_url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(email2sms_runtime::grpc::serve(
        email2sms_runtime::grpc::ApiServices {
            routes: email2sms_proto::tonic::service::Routes::new(
                SenderResolutionServiceServer::new(FakeResolver(entry(
                    MatchKind::Domain,
                    "good.test",
                    SecurityType::ViaSpf,
                ))),
            ),
            names: vec![],
            file_descriptor_set: email2sms_proto::FILE_DESCRIPTOR_SET,
        },
        listener,
        async {
            let _ = stopped.await;
        },
        Duration::from_secs(1),
    ));
    let h = harness(
        &dns,
        &[
            "--redis-url",
            "redis://127.0.0.1:1",
            "--policy-url",
            &policy_url,
            "--api-token",
            "internal-secret",
        ],
    )
    .await;
    let rcpt = ["+64211234567@sms.example.net"];
    let reply = h
        .send("a@good.test", &rcpt, &mail("a@good.test", "f1", "hi"))
        .await;
    assert!(reply.starts_with("250"), "{reply}");
    let reply = h
        .send("b@other.test", &rcpt, &mail("b@other.test", "f2", "hi"))
        .await;
    assert!(reply.starts_with("550 5.7.1"), "{reply}");
    assert_eq!(h.jobs().await.len(), 1);
    h.cleanup().await;

    // Redis up but never compiled into (no version): its miss proves nothing, so the policy
    // service decides.
    let mut h = harness(
        &dns,
        &[
            "--policy-url",
            &policy_url,
            "--api-token",
            "internal-secret",
        ],
    )
    .await;
    let _: () = h.redis.del(h.layout().version()).await.unwrap();
    let reply = h
        .send("a@good.test", &rcpt, &mail("a@good.test", "f3", "hi"))
        .await;
    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(h.jobs().await.len(), 1);
    let _ = stop.send(());
    h.cleanup().await;
}

/// The exact-domain rule holds even against a damaged index: a parent's entry found under a
/// subdomain's key (a bug, a hand edit) authorises nothing from Redis; the policy service, which
/// reads Postgres, decides instead (and here knows no such sender).
#[tokio::test]
async fn a_domain_key_holding_another_domains_entry_is_not_trusted() {
    let dns = dns_with_zones().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let policy_url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(email2sms_runtime::grpc::serve(
        email2sms_runtime::grpc::ApiServices {
            routes: email2sms_proto::tonic::service::Routes::new(
                SenderResolutionServiceServer::new(FakeResolver(entry(
                    MatchKind::Domain,
                    "good.test",
                    SecurityType::ViaSpf,
                ))),
            ),
            names: vec![],
            file_descriptor_set: email2sms_proto::FILE_DESCRIPTOR_SET,
        },
        listener,
        async {
            let _ = stopped.await;
        },
        Duration::from_secs(1),
    ));
    let mut h = harness(
        &dns,
        &[
            "--policy-url",
            &policy_url,
            "--api-token",
            "internal-secret",
        ],
    )
    .await;
    // "By IP Addresses" from 127.0.0.0/8: were the entry used, the mail would be accepted.
    let parent = entry(MatchKind::Domain, "good.test", SecurityType::ByIpAddresses);
    h.put_domain("sales.good.test", &parent).await;
    let rcpt = ["+64211234567@sms.example.net"];
    let reply = h
        .send(
            "a@sales.good.test",
            &rcpt,
            &mail("a@sales.good.test", "w1", "hi"),
        )
        .await;
    assert!(reply.starts_with("550 5.7.1"), "{reply}");
    assert!(h.jobs().await.is_empty());
    // The same entry under its own key is used.
    h.put_domain("good.test", &parent).await;
    let reply = h
        .send("a@good.test", &rcpt, &mail("a@good.test", "w2", "hi"))
        .await;
    assert!(reply.starts_with("250"), "{reply}");
    let _ = stop.send(());
    h.cleanup().await;
}

#[tokio::test]
async fn an_invalidation_message_clears_the_in_process_cache() {
    let dns = dns_with_zones().await;
    let mut h = harness(&dns, &["--policy-cache-ttl", "1h"]).await;
    let ready = entry(MatchKind::Domain, "good.test", SecurityType::ViaSpf);
    h.put_domain("good.test", &ready).await;
    let rcpt = ["+64211234567@sms.example.net"];
    let reply = h
        .send("a@good.test", &rcpt, &mail("a@good.test", "i1", "hi"))
        .await;
    assert!(reply.starts_with("250"), "{reply}");
    let mut unready = ready.clone();
    unready.readiness = Some(Readiness {
        ready: false,
        reason: "no forwarding user: allocate good.test to a Messenger user".into(),
        ..Readiness::default()
    });
    h.put_domain("good.test", &unready).await;
    let channel = h.layout().invalidations();
    // The subscription starts in the background: announce until the change is seen.
    let attempt = std::sync::atomic::AtomicU32::new(0);
    let reply = eventually(
        "the invalidation to clear the cache",
        || {
            let (h, attempt, channel) = (&h, &attempt, &channel);
            async move {
                let mut redis = h.redis.clone();
                let _: i64 = redis.publish(channel, b"x".to_vec()).await.unwrap();
                let n = attempt.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                h.send(
                    "a@good.test",
                    &rcpt,
                    &mail("a@good.test", &format!("i2-{n}"), "hi"),
                )
                .await
            }
        },
        |reply| reply.starts_with("550"),
    )
    .await;
    assert!(reply.starts_with("550 5.7.1"), "{reply}");
    assert!(reply.contains("no forwarding user"), "{reply}");
    h.cleanup().await;
}

/// What a stranger can make the sender log do: nothing. Forged mail from 30 servers (SPF fails
/// for each) publishes no `sender.ip_seen`, so no row and no admin alert, and leaves no Redis key;
/// 100 accepted mails from the company's own server are reported in a few events whose counts add
/// up to 100.
#[tokio::test]
async fn only_authenticated_mail_reaches_the_sender_log_and_is_counted() {
    let dns = dns_with_zones().await;
    let mut h = harness(&dns, &["--sighting-flush", "200ms"]).await;
    h.allow_domain("good.test", SecurityType::ViaSpf).await;
    h.allow_domain("strict.test", SecurityType::ViaSpf).await;
    let connection = lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let queue = format!("{}ip-seen-test", h.gateway.topology.jobs_queue());
    h.gateway
        .topology
        .declare_event_queue(
            &channel,
            &queue,
            &[email2sms_proto::queue::v1::SENDER_IP_SEEN_ROUTING_KEY],
        )
        .await
        .unwrap();
    let take_events = async || {
        let mut events = Vec::new();
        while let Some(message) = channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            events.push(
                email2sms_proto::queue::v1::SenderIpSeen::decode(message.delivery.data.as_slice())
                    .unwrap(),
            );
        }
        events
    };
    let rcpt = "+64211234567@sms.example.net";

    // strict.test's SPF allows only 192.0.2.1: from 127.0.0.10-39 every mail is forged.
    let forgers: Vec<String> = (10..40).map(|n| format!("127.0.0.{n}")).collect();
    let replies = smtplib_from_each(
        h.addr,
        &forgers,
        1,
        "boss@strict.test",
        rcpt,
        &mail("boss@strict.test", "forged-{source}", "pay now"),
    )
    .await;
    assert_eq!(replies.len(), 30);
    assert!(
        replies.iter().all(|r| r.starts_with("550 5.7.23")),
        "{replies:?}"
    );

    let replies = smtplib_from_each(
        h.addr,
        &["127.0.0.1".to_owned()],
        100,
        "a@good.test",
        rcpt,
        &mail("a@good.test", "ok-{n}", "hi"),
    )
    .await;
    assert_eq!(replies.len(), 100);
    assert!(replies.iter().all(|r| r.starts_with("250")), "{replies:?}");

    let seen = std::sync::Mutex::new(Vec::new());
    let counted = |events: &[email2sms_proto::queue::v1::SenderIpSeen]| {
        events.iter().map(|e| e.accepted_messages).sum::<u32>()
    };
    eventually_within(
        "reports counting the 100 accepted mails",
        Duration::from_secs(15),
        || {
            let (seen, take_events) = (&seen, &take_events);
            async move {
                let new = take_events().await;
                let mut seen = seen.lock().unwrap();
                seen.extend(new);
                counted(&seen)
            }
        },
        |count| *count >= 100,
    )
    .await;
    let mut events = seen.into_inner().unwrap();
    // Two more flush intervals: nothing else is coming (a forged report would be among them).
    tokio::time::sleep(Duration::from_millis(500)).await;
    events.extend(take_events().await);
    assert_eq!(
        events.iter().map(|e| e.accepted_messages).sum::<u32>(),
        100,
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .all(|e| e.client_ip == "127.0.0.1" && e.company_id == "company-1" && e.accepted),
        "only the authenticated server is reported: {events:?}"
    );
    assert!(
        events.len() < 20,
        "100 mails are reported in a few batches, not one event each: {}",
        events.len()
    );
    assert_eq!(events[0].from_address, "a@good.test");
    assert!(events[0].smtp_reply.starts_with("250"), "{:?}", events[0]);
    let markers: Vec<String> = h
        .redis
        .keys(format!("{}ingest:ip_seen:*", h.prefix))
        .await
        .unwrap();
    assert!(markers.is_empty(), "no Redis key per server: {markers:?}");
    let _ = channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    assert_eq!(h.jobs().await.len(), 100);
    h.cleanup().await;
}

#[tokio::test]
async fn real_world_message_formats_become_clean_text() {
    let dns = dns_with_zones().await;
    let mut h = harness(&dns, &[]).await;
    h.allow_domain("good.test", SecurityType::ViaSpf).await;
    let rcpt = ["+64211234567@sms.example.net"];
    let head = |id: &str, extra: &str| format!("From: a@good.test\nMessage-ID: <{id}>\n{extra}");
    let mut attachment = String::new();
    for _ in 0..(10 * 1024 * 1024 / 76 + 1) {
        attachment.push_str(&"QUFB".repeat(19));
        attachment.push('\n');
    }
    let cases = vec![
        (
            head(
                "f-html",
                "Subject: x\nContent-Type: text/html; charset=utf-8\n\n<p>Boiler <b>offline</b></p>\n",
            ),
            "Boiler offline",
        ),
        (
            head(
                "f-b64",
                "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n0J/RgNC40LLQtdGCINC80LjRgA==\n",
            ),
            "Привет мир",
        ),
        (
            head("f-subj", "Subject: =?utf-8?Q?Caf=C3=A9_closed?=\n\n\n"),
            "Café closed",
        ),
        (
            head(
                "f-qp",
                "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\nGate =C3=A9 open\n\nSent from my iPhone\n",
            ),
            "Gate é open",
        ),
        (
            head(
                "f-big",
                &format!(
                    "Subject: s\nContent-Type: multipart/mixed; boundary=XX\n\n--XX\nContent-Type: text/plain\n\nPump 3 failed\n--XX\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n{attachment}--XX--\n"
                ),
            ),
            "Pump 3 failed",
        ),
    ];
    for (message, expected) in cases {
        let reply = h.send("a@good.test", &rcpt, &message).await;
        assert!(reply.starts_with("250"), "{expected}: {reply}");
        let jobs = h.jobs().await;
        assert_eq!(jobs.len(), 1, "{expected}");
        assert_eq!(jobs[0].text, expected);
    }
    h.cleanup().await;
}

/// A relay that retries on 4xx, paced by the test: it reports every attempt on stdout as
/// `<message-id> <code>` (code 0: the connection failed) and waits for a line on stdin before the
/// next, so the test decides exactly where in the stream RabbitMQ goes away and comes back.
const PACED_RELAY: &str = r#"
import smtplib, sys
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(count):
    mid = "nl-%d@corp.test" % i
    body = ("From: Alice <alice@corp.test>\r\nTo: 0211234567@sms.example.net\r\n"
            "Subject: Alert %d\r\nMessage-ID: <%s>\r\n\r\nPump %d failed\r\n" % (i, mid, i))
    for attempt in range(200):
        code = 0
        try:
            s = smtplib.SMTP(host, port, local_hostname="mail.client.test", timeout=30)
            s.ehlo()
            code, _ = s.mail("alice@corp.test")
            if code == 250:
                code, _ = s.rcpt("0211234567@sms.example.net")
            if code == 250:
                code, _ = s.data(body.encode())
            try:
                s.quit()
            except Exception:
                pass
        except (OSError, smtplib.SMTPException):
            code = 0
        print(mid, code, flush=True)
        if sys.stdin.readline() == "":
            sys.exit("the test went away")
        if code == 250:
            break
        if 500 <= code:
            sys.exit("%s refused permanently: %d" % (mid, code))
    else:
        sys.exit("%s never accepted" % mid)
"#;

/// Nothing lost: with RabbitMQ unreachable the relay gets 451 and retries; once the broker is back
/// every message that got 250 is in the jobs queue, once. RabbitMQ is "stopped" by cutting a proxy
/// between ingest and the shared broker: once between two messages, and once right after a
/// publish reached the broker but before its confirm came back (the relay is told 451 for a job
/// the broker may hold; the retry must republish the same job id, never a second one).
#[tokio::test]
async fn nothing_lost_when_rabbitmq_goes_away_and_comes_back() {
    const MESSAGES: usize = 50;
    const CUT_AFTER: usize = 15;
    const FAILED_TRIES_WHILE_DOWN: usize = 3;
    const CUT_PUBLISH_AFTER: usize = 30;
    let proxy = common::proxy::TcpProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let amqp_url = format!("amqp://guest:guest@{}/%2f", proxy.addr());
    let dns = DnsServer::start().await;
    let mut h = harness(&dns, &["--amqp-url", &amqp_url]).await;
    h.allow_email("alice@corp.test", SecurityType::ByIpAddresses)
        .await;

    let mut relay = tokio::process::Command::new("python3")
        .args([
            "-c",
            PACED_RELAY,
            &h.addr.ip().to_string(),
            &h.addr.port().to_string(),
            &MESSAGES.to_string(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut go = relay.stdin.take().unwrap();
    let mut reports = tokio::io::BufReader::new(relay.stdout.take().unwrap()).lines();

    #[derive(PartialEq, Debug)]
    enum Phase {
        Up,
        Down,
        UpAgain,
        ArmedPublishCut,
        Restored,
    }
    let mut phase = Phase::Up;
    let mut accepted: Vec<String> = Vec::new();
    let mut failed_while_down = 0;
    let mut failed_after_publish_cut: Option<String> = None;
    let mut replies: BTreeMap<i64, usize> = BTreeMap::new();
    // Each report gets an answer, so the relay is always waiting on us or done: no sleeps.
    while let Some(line) = tokio::time::timeout(Duration::from_secs(60), reports.next_line())
        .await
        .expect("the relay reports each attempt within 60 s")
        .unwrap()
    {
        let (message_id, code) = line.split_once(' ').expect(&line);
        let code: i64 = code.parse().expect(&line);
        *replies.entry(code).or_default() += 1;
        match code {
            250 => accepted.push(message_id.to_owned()),
            // 451 from ingest, or (0) a broken connection: the relay keeps the mail and retries.
            0 | 400..=499 => {
                assert!(
                    phase == Phase::Down || phase == Phase::ArmedPublishCut,
                    "{message_id} got {code} while RabbitMQ was reachable ({phase:?})"
                );
                if phase == Phase::Down {
                    failed_while_down += 1;
                }
                if phase == Phase::ArmedPublishCut {
                    failed_after_publish_cut = Some(message_id.to_owned());
                }
            }
            other => panic!("{message_id}: unexpected reply {other}"),
        }
        // Where the test is in its script decides what RabbitMQ does before the next attempt.
        if phase == Phase::Up && accepted.len() == CUT_AFTER {
            proxy.cut();
            phase = Phase::Down;
        } else if phase == Phase::Down && failed_while_down == FAILED_TRIES_WHILE_DOWN {
            proxy.restore();
            phase = Phase::UpAgain;
        } else if phase == Phase::UpAgain && accepted.len() == CUT_PUBLISH_AFTER {
            proxy.cut_after_next_publish();
            phase = Phase::ArmedPublishCut;
        } else if phase == Phase::ArmedPublishCut && failed_after_publish_cut.is_some() {
            assert_eq!(proxy.publish_cuts(), 1, "the 4xx came from the cut publish");
            proxy.restore();
            phase = Phase::Restored;
        }
        go.write_all(b"go\n").await.unwrap();
    }
    let status = relay.wait().await.unwrap();
    assert!(
        status.success(),
        "the relay failed: {status}; replies {replies:?}"
    );
    assert_eq!(phase, Phase::Restored, "replies {replies:?}");
    assert!(proxy.is_up());

    // Every message was accepted exactly once by the relay's count, in order.
    let expected: Vec<String> = (0..MESSAGES).map(|i| format!("nl-{i}@corp.test")).collect();
    assert_eq!(accepted, expected, "replies {replies:?}");

    // The queue: every accepted Message-ID, each as one job id. Only the message whose publish was
    // cut before its confirm may be there twice, and then only as the same job id again (the
    // broker had stored the first publish; dispatch drops the repeat by job id).
    let jobs = h.jobs().await;
    let mut by_message: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for job in &jobs {
        let origin = job.origin.as_ref().unwrap();
        by_message
            .entry(origin.message_id.clone())
            .or_default()
            .push(job.job_id.clone());
    }
    let cut_message = failed_after_publish_cut.unwrap();
    let queued: BTreeSet<&String> = by_message.keys().collect();
    let wanted: BTreeSet<&String> = expected.iter().collect();
    assert_eq!(
        queued, wanted,
        "missing or unexpected messages in the queue"
    );
    for (message_id, job_ids) in &by_message {
        let distinct: BTreeSet<&String> = job_ids.iter().collect();
        assert_eq!(
            distinct.len(),
            1,
            "{message_id} queued as several jobs: {job_ids:?}"
        );
        if *message_id == cut_message {
            assert!(job_ids.len() <= 2, "{message_id}: {job_ids:?}");
        } else {
            assert_eq!(job_ids.len(), 1, "{message_id} queued twice: {job_ids:?}");
        }
    }
    eprintln!(
        "nothing lost: {} messages, replies {replies:?}, {} queued copies ({} of the message whose confirm was cut), {} connections refused while cut",
        MESSAGES,
        jobs.len(),
        by_message[&cut_message].len(),
        proxy.refused()
    );
    h.cleanup().await;
}

/// Each publish learns its own fate. Lapin hands a returned (unroutable) message to whichever
/// confirm completes next on the channel, so with several publishes in flight on one channel a
/// stored job could be reported unroutable (451, and the relay's retry queues it twice) or an
/// unroutable one reported stored (250, SMS lost). Here, as under load in production, every job is
/// followed by an event that nothing is bound to (so it is returned; every event type's key has a
/// queue in the shared topology, so it uses a key no event type has), from several sessions at
/// once.
#[tokio::test]
async fn concurrent_publishes_each_get_their_own_confirm() {
    use email2sms_queue::{Outgoing, QueueError};
    const WORKERS: usize = 10;
    const JOBS_EACH: usize = 150;
    let dns = DnsServer::start().await;
    let h = harness(&dns, &[]).await;
    let publisher = h.gateway.publisher.clone();
    let jobs_exchange = h.gateway.topology.jobs_exchange();
    let events_exchange = h.gateway.topology.events_exchange();
    let work = (0..WORKERS).map(|worker| {
        let jobs_exchange = jobs_exchange.clone();
        let events_exchange = events_exchange.clone();
        let publisher = publisher.clone();
        tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut events = Vec::new();
            for n in 0..JOBS_EACH {
                let job_id = format!("job-{worker}-{n}");
                let payload = SmsJob {
                    job_id: job_id.clone(),
                    ..SmsJob::default()
                }
                .encode_to_vec();
                let result = publisher
                    .publish(Outgoing {
                        exchange: &jobs_exchange,
                        routing_key: email2sms_queue::topology::SMS_JOB_ROUTING_KEY,
                        payload: &payload,
                        message_id: job_id.clone(),
                        message_type: email2sms_proto::queue::v1::SMS_JOB_TYPE,
                        headers: lapin::types::FieldTable::default(),
                    })
                    .await;
                if let Err(error) = result {
                    failures.push(format!("{job_id}: {error}"));
                }
                let publisher = publisher.clone();
                let events_exchange = events_exchange.clone();
                events.push(tokio::spawn(async move {
                    publisher
                        .publish(Outgoing {
                            exchange: &events_exchange,
                            routing_key: "nobody.listens",
                            payload: b"event",
                            message_id: format!("event-{worker}-{n}"),
                            message_type: email2sms_proto::queue::v1::SENDER_IP_SEEN_TYPE,
                            headers: lapin::types::FieldTable::default(),
                        })
                        .await
                }));
            }
            let mut wrong_events = Vec::new();
            for event in events {
                let result = event.await.unwrap();
                if !matches!(result, Err(QueueError::Unroutable { .. })) {
                    wrong_events.push(format!("{result:?}"));
                }
            }
            (failures, wrong_events)
        })
    });
    let mut failures = Vec::new();
    let mut wrong_events = Vec::new();
    for worker in futures::future::join_all(work).await {
        let (f, w) = worker.unwrap();
        failures.extend(f);
        wrong_events.extend(w);
    }
    assert!(
        failures.is_empty(),
        "stored jobs reported as failed: {failures:?}"
    );
    assert!(
        wrong_events.is_empty(),
        "unroutable events reported as: {wrong_events:?}"
    );
    assert_eq!(h.jobs().await.len(), WORKERS * JOBS_EACH);
    h.cleanup().await;
}

/// Runs `program` (Postfix's `smtp-source`) against ingest with `args` (the address is
/// appended); at most 60 s, then it is killed.
async fn run_smtp_source<const N: usize>(
    program: &std::path::Path,
    addr: SocketAddr,
    args: [String; N],
) -> std::process::Output {
    let child = tokio::process::Command::new(program)
        .args(&args)
        .arg(addr.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run {}: {error}; run `eval \"$(scripts/ensure-tools)\"`",
                program.display()
            )
        });
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("smtp-source {args:?} did not finish within 60 s"))
        .unwrap()
}

/// Postfix's `smtp-source`, a real MTA's client code: two parallel sessions, each sending
/// message after message on its connection (`-d`), from an authorised sender. Every message is
/// answered 250 (smtp-source exits 0 only then) and is exactly one job; an unauthorised sender's
/// mail is refused with the 550 smtp-source reports, and nothing is queued.
#[tokio::test]
async fn smtp_source_sessions_queue_one_job_per_message_and_an_unknown_sender_is_refused() {
    const SESSIONS: usize = 2;
    const MESSAGES: usize = 20;
    const RECIPIENT: &str = "+64211234567@sms.example.net";
    // First, so that without it the test fails (pointing at scripts/ensure-tools) before it
    // leaves anything in Redis or RabbitMQ.
    let smtp_source = common::smtp_source();
    let dns = dns_with_zones().await;
    let mut h = harness(&dns, &[]).await;
    h.allow_email("load@corp.test", SecurityType::ByIpAddresses)
        .await;
    let (sessions, messages) = (SESSIONS.to_string(), MESSAGES.to_string());
    // As smtp_bench.rs runs it: `-d` keeps each session's connection for its next message.
    let load = |from: &'static str| {
        let args = [
            "-d",
            "-s",
            &sessions,
            "-m",
            &messages,
            "-l",
            "1024",
            "-M",
            "smtp-source.client.test",
            "-f",
            from,
            "-t",
            RECIPIENT,
        ]
        .map(str::to_owned);
        run_smtp_source(&smtp_source, h.addr, args)
    };

    let output = load("load@corp.test").await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "smtp-source from an authorised sender: {}; stderr {stderr:?}",
        output.status
    );
    // Every 250 was given after the broker confirmed the job, so they are all there; poll anyway
    // (bounded) rather than trust one read of the queue.
    let taken = std::sync::Mutex::new(Vec::new());
    eventually(
        "every job in the queue",
        || {
            let (h, taken) = (&h, &taken);
            async move {
                let new = h.jobs().await;
                let mut taken = taken.lock().unwrap();
                taken.extend(new);
                taken.len()
            }
        },
        |count| *count >= MESSAGES,
    )
    .await;
    let mut jobs = taken.into_inner().unwrap();
    jobs.extend(h.jobs().await);
    assert_eq!(jobs.len(), MESSAGES, "jobs in the queue: {jobs:?}");
    let job_ids: BTreeSet<&str> = jobs.iter().map(|j| j.job_id.as_str()).collect();
    assert_eq!(job_ids.len(), MESSAGES, "job ids not distinct: {job_ids:?}");
    let message_ids: BTreeSet<&str> = jobs
        .iter()
        .map(|j| j.origin.as_ref().unwrap().message_id.as_str())
        .collect();
    assert_eq!(
        message_ids.len(),
        MESSAGES,
        "Message-IDs not distinct: {message_ids:?}"
    );
    for job in &jobs {
        assert_eq!(
            uuid::Uuid::parse_str(&job.job_id)
                .unwrap()
                .get_version_num(),
            7,
            "{job:?}"
        );
        assert_eq!(job.recipient, "+64211234567", "{job:?}");
        assert_eq!(job.recipient_address, RECIPIENT, "{job:?}");
        assert_eq!(job.match_kind(), MatchKind::EmailAddress, "{job:?}");
        assert!(!job.text.is_empty(), "{job:?}");
        let origin = job.origin.as_ref().unwrap();
        assert_eq!(origin.from_address, "load@corp.test", "{job:?}");
        assert_eq!(origin.client_ip, "127.0.0.1", "{job:?}");
        assert_eq!(origin.helo, "smtp-source.client.test", "{job:?}");
    }

    // No policy knows unknown.test (nor 127.0.0.1): refused, and smtp-source (without -A) stops
    // at the first refusal, exits non-zero and prints the server's reply.
    let output = load("intruder@unknown.test").await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!(
        "smtp-source from an unauthorised sender: {} {stderr}",
        output.status
    );
    assert!(
        !output.status.success(),
        "smtp-source from an unauthorised sender succeeded; stderr {stderr:?}"
    );
    assert!(
        stderr.contains("rejected: 550 5.7.1 intruder@unknown.test is not authorised"),
        "smtp-source did not report ingest's refusal: {stderr:?}"
    );
    let jobs = h.jobs().await;
    assert!(jobs.is_empty(), "refused mail was queued: {jobs:?}");
    h.cleanup().await;
}

/// What a stolen mailbox at an authorised domain can make the gateway send: SMS to the company's
/// own region, to the regions its admin added (at most its daily international cap, shared
/// through Redis), and never to premium-rate numbers.
#[tokio::test]
async fn recipients_are_held_to_the_company_destination_rules() {
    let dns = dns_with_zones().await;
    // The rules change mid-test: no in-process copy of the old ones.
    let mut h = harness(&dns, &["--policy-cache-ttl", "1ms"]).await;
    let mut sender = entry(MatchKind::Domain, "good.test", SecurityType::ViaSpf);
    h.put_domain("good.test", &sender).await;
    async fn send(h: &Harness, to: &str, id: &str) -> String {
        h.send(
            "a@good.test",
            &[to],
            &mail("a@good.test", id, "meet at noon"),
        )
        .await
    }
    // Only its own region (NZ) by default.
    let reply = send(&h, "0211234567@sms.example.net", "d1").await;
    assert!(reply.starts_with("250"), "{reply}");
    let reply = send(&h, "+61412345678@sms.example.net", "d2").await;
    assert!(reply.starts_with("550 5.7.1"), "{reply}");
    assert!(
        reply.contains("in AU") && reply.contains("allowed destination countries"),
        "{reply}"
    );

    // The admin adds AU and GB, with two SMS a day to other countries.
    let limits = sender.limits.as_mut().unwrap();
    limits.allowed_destination_regions = vec!["AU".into(), "GB".into()];
    limits.international_sms_per_day = Some(2);
    h.put_domain("good.test", &sender).await;
    for (n, id) in ["d3", "d4"].into_iter().enumerate() {
        let reply = send(&h, "+61412345678@sms.example.net", id).await;
        assert!(reply.starts_with("250"), "international SMS {n}: {reply}");
    }
    let reply = send(&h, "+447400123456@sms.example.net", "d5").await;
    assert!(reply.starts_with("452 4.5.3"), "{reply}");
    assert!(reply.contains("resets at 00:00 UTC"), "{reply}");
    // Domestic SMS do not count against it.
    let reply = send(&h, "+64211234567@sms.example.net", "d6").await;
    assert!(reply.starts_with("250"), "{reply}");
    // Premium rate is refused in an allowed region, whatever the cap.
    let reply = send(&h, "+449012345678@sms.example.net", "d7").await;
    assert!(reply.starts_with("550 5.7.1"), "{reply}");
    assert!(reply.contains("premium-rate"), "{reply}");

    let mut sent: Vec<String> = h.jobs().await.into_iter().map(|j| j.recipient).collect();
    sent.sort();
    assert_eq!(
        sent,
        [
            "+61412345678",
            "+61412345678",
            "+64211234567",
            "+64211234567"
        ]
    );
    let count: i64 = h
        .redis
        .get(email2sms_ingest::destinations::daily_key(
            &h.prefix,
            "company-1",
            chrono::Utc::now(),
        ))
        .await
        .unwrap();
    assert_eq!(count, 2, "the refused international mail took nothing");
    h.cleanup().await;
}
