//! Tenant boundaries across services (issue 10): the real policy service (gRPC, Postgres, the Redis
//! it compiles) in front of the real ingest pipeline, driven by Python's smtplib. Mail from an
//! address at a domain one company verified goes to that company, never to another company that
//! registered the address; and a company-scoped Diagnose answers the same whether or not another
//! company holds the sender.

mod common;

use std::time::Duration;

use clap::Parser;
use common::gateway::{self, Harness, Prefixes, REDIS_URL, Setup, Topology, smtplib};
use email2sms_ingest::IngestApi;
use email2sms_proto::ingest::v1::{Decision, DiagnoseRequest};
use email2sms_proto::policy::v1 as pb;
use email2sms_proto::policy::v1::policy_service_client::PolicyServiceClient;
use email2sms_proto::policy::v1::sender_resolution_service_client::SenderResolutionServiceClient;
use email2sms_proto::queue::v1::{DomainVerificationChanged, SmsJob};
use email2sms_proto::tonic::Code;
use email2sms_proto::tonic::transport::Channel;
use email2sms_proto::verification::v1::VerificationState;
use email2sms_testkit::TestDb;
use prost::Message;
use tokio::sync::oneshot;
use uuid::Uuid;

struct Stack {
    _db: TestDb,
    pool: sqlx::PgPool,
    policy_cache: email2sms_policy::Cache,
    policy: PolicyServiceClient<Channel>,
    resolution: SenderResolutionServiceClient<Channel>,
    ingest: Harness,
    _stop_policy: oneshot::Sender<()>,
}

impl Stack {
    /// The policy service and ingest sharing one Redis prefix, as deployed; ingest's in-process
    /// cache lives 1 ms so that each mail reads what policy compiled.
    async fn start() -> Stack {
        let prefixes = Prefixes::fresh();
        let db = TestDb::unique();
        email2sms_runtime::db::migrate(
            &db.url,
            email2sms_policy::SCHEMA,
            &email2sms_policy::MIGRATOR,
        )
        .await
        .unwrap();
        let pool = email2sms_runtime::db::connect(&db.url, email2sms_policy::SCHEMA, 4)
            .await
            .unwrap();
        let config = email2sms_policy::Config::try_parse_from([
            "email2sms-policy",
            "--insecure-no-auth",
            "--redis-url",
            REDIS_URL,
            "--redis-prefix",
            &prefixes.redis,
            "--cache-repair-interval",
            "1h",
            "--database-url",
            &db.url,
            "--amqp-prefix",
            &prefixes.amqp,
        ])
        .unwrap();
        let auth = email2sms_runtime::auth::Auth::from_args(&config.server).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let policy_addr = listener.local_addr().unwrap();
        let (stop_policy, policy_stopped) = oneshot::channel::<()>();
        let served = pool.clone();
        tokio::spawn(async move {
            email2sms_policy::run(&config, &auth, served, listener, async move {
                let _ = policy_stopped.await;
            })
            .await
            .unwrap();
        });
        let channel = email2sms_testkit::channel(policy_addr).await;

        let policy_url = format!("http://{policy_addr}");
        // The jobs queue must exist before the first mail; on a busy machine declaring it can
        // take longer than the pipeline tests' 5 s. The policy service writes the version.
        let ingest = gateway::launch(Setup {
            flags: &["--policy-url", &policy_url, "--policy-cache-ttl", "1ms"],
            prefixes: Some(prefixes.clone()),
            topology: Topology::Require(Duration::from_secs(60)),
            policy_version: false,
        })
        .await;
        Stack {
            _db: db,
            pool,
            policy_cache: email2sms_policy::Cache::new(REDIS_URL, &prefixes.redis).unwrap(),
            policy: PolicyServiceClient::new(channel.clone()),
            resolution: SenderResolutionServiceClient::new(channel),
            ingest,
            _stop_policy: stop_policy,
        }
    }

    async fn company(&mut self, name: &str) -> String {
        let id = Uuid::new_v4().to_string();
        self.policy
            .upsert_company(pb::UpsertCompanyRequest {
                company: Some(pb::Company {
                    company_id: id.clone(),
                    display_name: name.into(),
                    default_region: "NZ".into(),
                    ..Default::default()
                }),
                update_mask: None,
            })
            .await
            .unwrap();
        id
    }

    async fn user(&mut self, company: &str, username: &str) -> String {
        self.policy
            .upsert_messenger_user(pb::UpsertMessengerUserRequest {
                company_id: company.into(),
                messenger_user: Some(pb::MessengerUser {
                    external_id: format!("ext-{username}"),
                    username: username.into(),
                    active: true,
                    ..Default::default()
                }),
                update_mask: None,
            })
            .await
            .unwrap()
            .into_inner()
            .messenger_user
            .unwrap()
            .messenger_user_id
    }

    /// A "By IP Addresses" policy that lets this machine's mail through, with `user` as its
    /// default forwarding user.
    async fn policy(&mut self, company: &str, sent_from: pb::SentFromKind, user: &str) -> String {
        self.policy
            .create_security_policy(pb::CreateSecurityPolicyRequest {
                company_id: company.into(),
                security_policy: Some(pb::SecurityPolicy {
                    sent_from: sent_from as i32,
                    security_type: pb::SecurityType::ByIpAddresses as i32,
                    allowed_ip_ranges: vec!["127.0.0.1".into()],
                    default_forwarding_user_id: user.into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .security_policy
            .unwrap()
            .security_policy_id
    }

    async fn email(
        &mut self,
        company: &str,
        policy: &str,
        address: &str,
    ) -> Result<pb::EmailAddress, email2sms_proto::tonic::Status> {
        Ok(self
            .policy
            .create_email_address(pb::CreateEmailAddressRequest {
                company_id: company.into(),
                email_address: Some(pb::EmailAddress {
                    security_policy_id: policy.into(),
                    email_address: address.into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await?
            .into_inner()
            .email_address
            .unwrap())
    }

    /// A domain entry as CreateDomain leaves it, then verified by the verification service's
    /// event, applied as the policy's queue consumer applies it.
    async fn verified_domain(&mut self, company: &str, policy: &str, name: &str) {
        let token = format!("{:032x}", rand_token());
        sqlx::query(
            "INSERT INTO domains (company_id, policy_id, name, token, txt_record_value)
             VALUES ($1::uuid, $2::uuid, $3, $4, 'email2sms-verification=' || $4)",
        )
        .bind(company)
        .bind(policy)
        .bind(name)
        .bind(&token)
        .execute(&self.pool)
        .await
        .unwrap();
        let event = DomainVerificationChanged {
            event_id: Uuid::new_v4().to_string(),
            company_id: company.into(),
            domain_name: name.into(),
            challenge_id: Uuid::new_v4().to_string(),
            previous_state: VerificationState::Pending as i32,
            state: VerificationState::Verified as i32,
            state_reason: "TXT record found".into(),
            state_sequence: 1,
            token: token.clone(),
            txt_record_value: format!("email2sms-verification={token}"),
            ..Default::default()
        };
        email2sms_policy::apply_domain_verification_changed(&self.pool, &self.policy_cache, &event)
            .await
            .unwrap();
    }

    async fn send(&self, from: &str, message_id: &str) -> String {
        let message = format!(
            "From: Sender <{from}>\r\nTo: x@sms.example.net\r\nSubject: Alert\r\nMessage-ID: <{message_id}>\r\n\r\nPump 3 failed\r\n"
        );
        smtplib(
            self.ingest.addr,
            from,
            &["+64211234567@sms.example.net"],
            message.as_bytes(),
        )
        .await
    }

    /// Takes every job now on the jobs queue.
    async fn jobs(&self) -> Vec<SmsJob> {
        self.ingest.jobs().await
    }

    fn diagnose_api(&self) -> IngestApi {
        self.ingest.diagnose_api()
    }

    async fn cleanup(self) {
        self.ingest.cleanup().await;
    }
}

fn rand_token() -> u128 {
    let a = Uuid::new_v4().as_u128();
    a ^ (a >> 64)
}

#[tokio::test]
async fn mail_from_an_address_at_a_verified_domain_goes_to_the_domain_owner() {
    let mut s = Stack::start().await;
    let a = s.company("Acme").await;
    let b = s.company("Rival").await;
    let a_user = s.user(&a, "jane").await;
    let b_user = s.user(&b, "mallory").await;
    let a_domains = s.policy(&a, pb::SentFromKind::Domain, &a_user).await;
    let b_emails = s.policy(&b, pb::SentFromKind::EmailAddress, &b_user).await;
    s.verified_domain(&a, &a_domains, "a.example").await;

    // Before: B registered ceo@a.example and A's chief executive's mail was sent as B's user and
    // listed in B's messages. Now the registration is refused; a row that got in anyway (written
    // before this rule, or by hand) still cannot win.
    match s.email(&b, &b_emails, "ceo@a.example").await {
        Ok(entry) => panic!("B registered an address at A's verified domain: {entry:?}"),
        Err(status) => assert_eq!(status.code(), Code::AlreadyExists, "{status:?}"),
    }
    sqlx::query(
        "INSERT INTO email_addresses (company_id, policy_id, address) VALUES ($1::uuid, $2::uuid, 'ceo@a.example')",
    )
    .bind(&b)
    .bind(&b_emails)
    .execute(&s.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE cache_version SET version = version + 1")
        .execute(&s.pool)
        .await
        .unwrap();
    s.resolution
        .rebuild_cache(pb::RebuildCacheRequest::default())
        .await
        .unwrap();
    let reply = s.send("ceo@a.example", "m1@a.example").await;
    assert!(reply.starts_with("250"), "{reply}");
    let jobs = s.jobs().await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].company_id, a);
    assert_eq!(jobs[0].forwarding_user_id, a_user);
    assert_eq!(
        jobs[0].match_kind(),
        email2sms_proto::policy::v1::MatchKind::Domain
    );

    // B's entry made while nobody had verified the domain: once A verifies it, mail from it is
    // A's.
    s.email(&b, &b_emails, "cfo@later.example").await.unwrap();
    let reply = s.send("cfo@later.example", "m2@later.example").await;
    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(s.jobs().await[0].company_id, b, "before A verified");
    s.verified_domain(&a, &a_domains, "later.example").await;
    let reply = s.send("cfo@later.example", "m3@later.example").await;
    assert!(reply.starts_with("250"), "{reply}");
    let jobs = s.jobs().await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].company_id, a, "after A verified later.example");
    assert_eq!(jobs[0].forwarding_user_id, a_user);
    s.cleanup().await;
}

/// Before: with `company_id` of B, the `resolve_sender` evidence was one Redis key when another
/// company held the address and three when nobody did.
#[tokio::test]
async fn company_scoped_diagnose_is_the_same_whether_or_not_another_company_holds_the_sender() {
    let mut s = Stack::start().await;
    let a = s.company("Acme").await;
    let b = s.company("Rival").await;
    let a_user = s.user(&a, "jane").await;
    let a_emails = s.policy(&a, pb::SentFromKind::EmailAddress, &a_user).await;
    let a_domains = s.policy(&a, pb::SentFromKind::Domain, &a_user).await;
    let api = s.diagnose_api();
    let ask = |from: &str, company: &str| DiagnoseRequest {
        client_ip: "127.0.0.1".into(),
        helo: "mail.client.test".into(),
        envelope_sender: from.into(),
        from_header: format!("Sender <{from}>"),
        recipient: "+64211234567@sms.example.net".into(),
        company_id: company.into(),
        ..DiagnoseRequest::default()
    };

    let mut before = Vec::new();
    for from in ["jo@acme.example", "ops@verified.example"] {
        let answer = api.diagnose(ask(from, &b)).await.unwrap();
        assert_eq!(answer.decision(), Decision::Reject);
        before.push(answer.encode_to_vec());
    }
    s.email(&a, &a_emails, "jo@acme.example").await.unwrap();
    s.verified_domain(&a, &a_domains, "verified.example").await;
    for (i, from) in ["jo@acme.example", "ops@verified.example"]
        .iter()
        .enumerate()
    {
        // The operator (no company) sees A's match and accepts …
        let operator = api.diagnose(ask(from, "")).await.unwrap();
        assert_eq!(
            operator.decision(),
            Decision::Accept,
            "{from}: {operator:?}"
        );
        assert_eq!(operator.sender.as_ref().unwrap().company_id, a);
        // … B sees exactly what it saw before A registered anything.
        let scoped = api.diagnose(ask(from, &b)).await.unwrap();
        let earlier =
            email2sms_proto::ingest::v1::DiagnoseResponse::decode(before[i].as_slice()).unwrap();
        assert_eq!(scoped, earlier, "{from}");
        assert_eq!(scoped.encode_to_vec(), before[i], "{from}: byte for byte");
    }
    s.cleanup().await;
}
