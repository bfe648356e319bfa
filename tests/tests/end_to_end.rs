//! An email in, an SMS out, through the four real binaries: the portal sets a company up over
//! gRPC, the customer publishes DNS records (the test's NSD), Python's smtplib sends from an
//! SPF-authorised address (127.0.0.1), the SMS reaches the npm SMPP simulator, its receipt makes
//! it DELIVERED in GetMessage, and a subscriber of the status queue sees every state it was in.

use std::time::Duration;

use email2sms_e2e::cluster::{Cluster, Options, SHARED_AMQP_URL, SMS_DOMAIN, Service};
use email2sms_e2e::mail::{self, Mail};
use email2sms_e2e::sink::Sink;
use email2sms_e2e::status::StatusSubscriber;
use email2sms_proto::dispatch::v1::SmsMessage;
use email2sms_proto::policy::v1 as pb;
use email2sms_proto::queue::v1::SmsState;
use email2sms_testkit::{eventually_some, eventually_within};

/// Long enough for a loaded 2-core CI machine: one SMS takes well under a second alone.
const SMS_LIMIT: Duration = Duration::from_secs(30);

fn unique_domain(label: &str) -> String {
    format!("{label}-{}.test", uuid::Uuid::new_v4().simple())
}

/// Sends `mail`, expects 250, and follows its SMS to DELIVERED: exactly one submit at the SMSC
/// carrying `marker`, GetMessage DELIVERED with its receipt, and the status subscriber holding
/// one event for every state in the SMS's history, numbered 1, 2, 3… Returns the SMS.
async fn expect_delivered(
    cluster: &Cluster,
    status: &StatusSubscriber,
    company: &str,
    mail: &Mail,
    marker: &str,
) -> SmsMessage {
    let reply = mail::send(cluster.smtp_addr(), mail).await;
    assert!(
        reply.accepted(),
        "the email is accepted: {reply:?}; ingest's stderr:\n{}",
        cluster.stderr(email2sms_e2e::cluster::Service::Ingest)
    );
    eventually_within(
        "the SMS at the SMSC",
        SMS_LIMIT,
        || async { cluster.smsc.count_markers([marker]) },
        |counts| !counts.is_empty(),
    )
    .await;
    let sms = eventually_some("the SMS delivered in GetMessage", SMS_LIMIT, || async {
        cluster
            .sms_of_email(company, &mail.message_id)
            .await
            .filter(|sms| sms.state() == SmsState::Delivered)
    })
    .await;
    assert_eq!(sms.recipient, "+64211234567");
    assert!(sms.text.contains(marker), "{sms:?}");
    assert_eq!(
        cluster.smsc.count_markers([marker]).get(marker),
        Some(&1),
        "the SMSC got the SMS exactly once"
    );
    let submit = cluster
        .smsc
        .submits()
        .into_iter()
        .find(|s| s.text.contains(marker))
        .expect("the submit");
    assert_eq!(submit.destination, "64211234567");
    assert_eq!(sms.provider_message_id, submit.message_id);
    assert!(
        cluster
            .smsc
            .receipts_acknowledged()
            .contains(&submit.message_id),
        "dispatch acknowledged the receipt"
    );

    let history: Vec<SmsState> = cluster
        .get_message(company, &sms.job_id)
        .await
        .history
        .iter()
        .map(|change| change.state())
        .collect();
    assert_eq!(history.first(), Some(&SmsState::Queued), "{history:?}");
    assert_eq!(history.last(), Some(&SmsState::Delivered), "{history:?}");
    // A job sent at once is first committed in SUBMITTING: its reception is in the history but
    // was never a committed state, so it has no event (dispatch's admission, jobs.rs); every
    // state after it has one, numbered from 1 without a gap.
    let expected: Vec<(u64, SmsState)> = (1..).zip(history[1..].iter().copied()).collect();
    eventually_within(
        "an event for every committed state of the SMS",
        SMS_LIMIT,
        || async { status.states_of(&sms.job_id) },
        |states| *states == expected,
    )
    .await;
    let events = status.events_of(&sms.job_id);
    assert_eq!(
        events[0].previous_state(),
        SmsState::Unspecified,
        "the first event has no previous state"
    );
    for event in &events {
        assert_eq!(event.company_id, company);
        assert_eq!(event.recipient, "+64211234567");
        assert_eq!(
            event.provider_message_id.is_empty(),
            event.state() == SmsState::Submitting
        );
    }
    sms
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_from_a_verified_domain_becomes_an_sms_delivered_to_the_smsc() {
    let mut cluster = Cluster::start().await;
    let status =
        StatusSubscriber::start(SHARED_AMQP_URL, &cluster.topology.status_events_queue()).await;
    let domain = unique_domain("acme");
    let company = cluster.company("Acme", &format!("admin@{domain}")).await;
    let user = cluster.user(&company, "sales", "Acme").await;
    let policy = cluster.spf_policy(&company, pb::SentFromKind::Domain).await;
    let entry = cluster
        .verified_domain(&company, &policy, &user, &domain)
        .await;
    assert!(entry.readiness.expect("readiness").ready);

    let marker = "domainmail1";
    let mail = Mail::new(
        &format!("bob@{domain}"),
        &format!("64211234567@{SMS_DOMAIN}"),
        &format!("Meeting moved to 3pm {marker}"),
    );
    let sms = expect_delivered(&cluster, &status, &company, &mail, marker).await;
    assert_eq!(sms.forwarding_user_id, user);
    assert_eq!(sms.sender_id, "Acme");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_from_an_email_address_entry_becomes_an_sms_delivered_to_the_smsc() {
    let mut cluster = Cluster::start().await;
    let status =
        StatusSubscriber::start(SHARED_AMQP_URL, &cluster.topology.status_events_queue()).await;
    let domain = unique_domain("partner");
    let company = cluster.company("Partner", &format!("admin@{domain}")).await;
    let user = cluster.user(&company, "ana", "Partner").await;
    let policy = cluster
        .spf_policy(&company, pb::SentFromKind::EmailAddress)
        .await;
    let entry = cluster
        .policy()
        .await
        .create_email_address(pb::CreateEmailAddressRequest {
            company_id: company.clone(),
            email_address: Some(pb::EmailAddress {
                security_policy_id: policy,
                email_address: format!("Ana@{domain}"),
                forwarding_user_id: user.clone(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await
        .expect("CreateEmailAddress")
        .into_inner()
        .email_address
        .expect("the entry");
    assert!(entry.readiness.expect("readiness").ready);
    // The address's domain needs no verification, only SPF authorising where the mail comes from.
    cluster.publish_zone(&domain, None).await;

    // Another address of the domain is not covered by the entry.
    let stranger = Mail::new(
        &format!("eve@{domain}"),
        &format!("64211234567@{SMS_DOMAIN}"),
        "not an entry",
    );
    let refused = mail::send(cluster.smtp_addr(), &stranger).await;
    assert_eq!(refused.code / 100, 5, "{refused:?}");

    let marker = "addressmail1";
    let mail = Mail::new(
        &format!("ana@{domain}"),
        &format!("64211234567@{SMS_DOMAIN}"),
        &format!("Parcel at reception {marker}"),
    );
    let sms = expect_delivered(&cluster, &status, &company, &mail, marker).await;
    assert_eq!(sms.forwarding_user_id, user);
    assert_eq!(
        cluster.smsc.submits().len(),
        1,
        "the refused mail made no SMS"
    );

    // Ingest's metrics counted both mails by outcome and enhanced code, and what the accepted
    // one went through; no label carries an address or a number.
    let metrics = cluster.scrape(Service::Ingest).await;
    let value = |series: &str| -> Option<f64> {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    };
    assert_eq!(
        value(r#"email2sms_smtp_messages_total{outcome="accepted",enhanced_code="2.0.0"}"#),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        value(r#"email2sms_smtp_messages_total{outcome="refused",enhanced_code="5.7.1"}"#),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        value("email2sms_smtp_data_reply_seconds_count"),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        value("email2sms_publish_confirm_seconds_count"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        value(r#"email2sms_spf_checks_total{result="pass"}"#),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        value(r#"email2sms_decision_step_seconds_count{step="authentication"}"#) == Some(1.0),
        "{metrics}"
    );
    let lookups: f64 = ["memory", "redis", "policy_service"]
        .iter()
        .filter_map(|layer| {
            value(&format!(
                r#"email2sms_policy_lookups_total{{layer="{layer}"}}"#
            ))
        })
        .sum();
    assert_eq!(lookups, 2.0, "one lookup per mail: {metrics}");
    assert!(
        value("email2sms_smtp_sessions_total").is_some_and(|n| n >= 2.0),
        "{metrics}"
    );
    assert!(
        !metrics.contains(&domain) && !metrics.contains("64211234567"),
        "{metrics}"
    );

    // Dispatch counted the SMS's state changes once each transaction committed, under the SMPP
    // connector's name, and the receipt that delivered it as matched (before or after its submit
    // response was recorded); it is bound to the SMSC. Counted after the commit, which the status
    // event (already seen) follows, so the counters are there by now.
    let dispatch = cluster.scrape(Service::Dispatch).await;
    let value = |series: &str| -> Option<f64> {
        dispatch
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    };
    for state in ["submitted", "delivered"] {
        assert_eq!(
            value(&format!(
                r#"email2sms_sms_state_changes_total{{state="{state}",connector="smpp"}}"#
            )),
            Some(1.0),
            "{dispatch}"
        );
    }
    let matched: f64 = ["matched", "matched_late"]
        .iter()
        .filter_map(|result| {
            value(&format!(
                r#"email2sms_delivery_receipts_total{{result="{result}",connector="smpp"}}"#
            ))
        })
        .sum();
    assert_eq!(matched, 1.0, "{dispatch}");
    assert_eq!(value("email2sms_smpp_bound"), Some(1.0), "{dispatch}");
    assert_eq!(
        value("email2sms_smpp_window_in_use"),
        Some(0.0),
        "{dispatch}"
    );
    // The outbox relay read its backlog when it started (0 rows then: nothing committed yet).
    assert!(value("email2sms_outbox_rows").is_some(), "{dispatch}");
    assert!(
        value("email2sms_outbox_oldest_age_seconds").is_some(),
        "{dispatch}"
    );
    assert!(
        !dispatch.contains(&domain)
            && !dispatch.contains("64211234567")
            && !dispatch.contains(&company),
        "{dispatch}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_imported_from_csv_are_notified_and_their_mail_becomes_an_sms() {
    let sink = Sink::start().await;
    let mut cluster = Cluster::start_with(Options {
        smtp_relay: Some(sink.url()),
        ..Options::default()
    })
    .await;
    let status =
        StatusSubscriber::start(SHARED_AMQP_URL, &cluster.topology.status_events_queue()).await;
    let domain = unique_domain("imported");
    let company = cluster
        .company("Imported", &format!("admin@{domain}"))
        .await;
    let user = cluster.user(&company, "kim.lee", "Imported").await;
    let policy = cluster
        .spf_policy(&company, pb::SentFromKind::EmailAddress)
        .await;
    let mut client = cluster.policy().await;
    let csv = format!("Email,Username\nKim.Lee@{domain},kim.lee\nnot-an-address,kim.lee\n");
    let preview = client
        .preview_import(pb::PreviewImportRequest {
            company_id: company.clone(),
            security_policy_id: policy,
            csv_content: csv.into_bytes(),
            file_name: "staff.csv".into(),
            page_size: 10,
            request_id: String::new(),
        })
        .await
        .expect("PreviewImport")
        .into_inner();
    let import = preview.import.expect("the import");
    let totals = import.totals.expect("totals");
    assert_eq!((totals.total_rows, totals.ok_rows), (2, 1), "{totals:?}");
    let committed = client
        .commit_import(pb::CommitImportRequest {
            company_id: company.clone(),
            import_id: import.import_id,
            notify: true,
        })
        .await
        .expect("CommitImport")
        .into_inner();
    assert_eq!(committed.import.expect("the import").created_count, 1);
    assert!(committed.notification.is_some(), "notify asks for one");

    let address = format!("kim.lee@{domain}");
    let notified = eventually_within(
        "the notification at the SMTP sink",
        SMS_LIMIT,
        || async { sink.received() },
        |received| received.iter().any(|r| r.rcpt == address),
    )
    .await;
    let notices: Vec<_> = notified.iter().filter(|r| r.rcpt == address).collect();
    assert_eq!(notices.len(), 1, "one notification per address");
    assert!(
        notices[0].text().contains(SMS_DOMAIN),
        "the notification says where to send: {}",
        notices[0].text()
    );

    cluster.publish_zone(&domain, None).await;
    let marker = "importedmail1";
    let mail = Mail::new(
        &address,
        &format!("64211234567@{SMS_DOMAIN}"),
        &format!("Imported and sending {marker}"),
    );
    let sms = expect_delivered(&cluster, &status, &company, &mail, marker).await;
    assert_eq!(sms.forwarding_user_id, user);
    cluster.shutdown().await;
}
