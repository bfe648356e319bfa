//! The policy service started in-process on 127.0.0.1:0 with a database and a Redis key prefix
//! of its own, so that tests run in parallel; plus builders for the portal's requests.
#![allow(dead_code)]

pub mod sink;

use std::net::IpAddr;

use clap::Parser;
use email2sms_policy::{Cache, Config, MIGRATOR, SCHEMA};
use email2sms_proto::policy::v1 as pb;
use email2sms_proto::policy::v1::policy_service_client::PolicyServiceClient;
use email2sms_proto::policy::v1::sender_resolution_service_client::SenderResolutionServiceClient;
use email2sms_proto::prost_types::FieldMask;
use email2sms_proto::queue::v1::DomainVerificationChanged;
use email2sms_proto::tonic::transport::Channel;
use email2sms_proto::tonic::{Code, Status};
use email2sms_proto::verification::v1::VerificationState;
use email2sms_runtime::auth::Auth;
use email2sms_runtime::db;
use email2sms_testkit::TestDb;
use sqlx::PgPool;
use uuid::Uuid;

pub struct Service {
    pub db: TestDb,
    pub pool: PgPool,
    pub cache: Cache,
    pub prefix: String,
    pub policy: PolicyServiceClient<Channel>,
    pub resolution: SenderResolutionServiceClient<Channel>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

pub const REDIS_URL: &str = "redis://127.0.0.1:6379";

impl Service {
    pub async fn start() -> Service {
        Service::start_with(&[]).await
    }

    /// Started with extra flags, e.g. `--verification-url`.
    pub async fn start_with(extra: &[&str]) -> Service {
        let db = TestDb::unique();
        db::migrate(&db.url, SCHEMA, &MIGRATOR)
            .await
            .expect("migrate");
        let pool = db::connect(&db.url, SCHEMA, 8).await.expect("connect");
        let prefix = format!("email2sms-test-{}:", Uuid::new_v4().simple());
        // The repair loop is slowed down so that tests see what the RPCs themselves do.
        let mut args = vec![
            "email2sms-policy",
            "--insecure-no-auth",
            "--redis-url",
            REDIS_URL,
            "--redis-prefix",
            &prefix,
            "--cache-repair-interval",
            "1h",
            "--database-url",
            &db.url,
        ];
        // Queue names of their own, so parallel tests never consume each other's events.
        let amqp_prefix = format!("test.{}.", Uuid::new_v4().simple());
        if !extra.contains(&"--amqp-prefix") {
            args.extend_from_slice(&["--amqp-prefix", &amqp_prefix]);
        }
        args.extend_from_slice(extra);
        let config = Config::try_parse_from(args).expect("config");
        let auth = Auth::from_args(&config.server).expect("auth");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served_pool = pool.clone();
        let task = tokio::spawn(async move {
            email2sms_policy::run(&config, &auth, served_pool, listener, async move {
                let _ = stopped.await;
            })
            .await
            .expect("serve");
        });
        let channel = email2sms_testkit::channel(addr).await;
        let cache = Cache::new(REDIS_URL, &prefix).expect("redis client");
        Service {
            db,
            pool,
            cache,
            prefix,
            policy: PolicyServiceClient::new(channel.clone()),
            resolution: SenderResolutionServiceClient::new(channel),
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.flush_redis().await;
    }

    /// Deletes every Redis key under this test's prefix (and nothing else).
    pub async fn flush_redis(&self) {
        let client = redis::Client::open(REDIS_URL).unwrap();
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(std::time::Duration::from_secs(60)));
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query_async(&mut conn)
            .await
            .unwrap();
        for chunk in keys.chunks(1000) {
            let () = redis::cmd("DEL")
                .arg(chunk)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    }

    pub async fn company(&mut self, name: &str) -> String {
        let id = Uuid::new_v4().to_string();
        self.policy
            .upsert_company(pb::UpsertCompanyRequest {
                company: Some(pb::Company {
                    company_id: id.clone(),
                    display_name: name.into(),
                    admin_email_addresses: vec![format!("Admin@{}.example", name.to_lowercase())],
                    default_region: "NZ".into(),
                    ..Default::default()
                }),
                update_mask: None,
            })
            .await
            .expect("upsert company");
        id
    }

    pub async fn user(&mut self, company: &str, username: &str, active: bool) -> String {
        self.policy
            .upsert_messenger_user(pb::UpsertMessengerUserRequest {
                company_id: company.into(),
                messenger_user: Some(pb::MessengerUser {
                    external_id: format!("ext-{username}"),
                    username: username.into(),
                    display_name: username.to_uppercase(),
                    sender_id: "Acme".into(),
                    active,
                    ..Default::default()
                }),
                update_mask: None,
            })
            .await
            .expect("upsert user")
            .into_inner()
            .messenger_user
            .unwrap()
            .messenger_user_id
    }

    pub async fn policy(
        &mut self,
        company: &str,
        sent_from: pb::SentFromKind,
        security_type: pb::SecurityType,
        allowed: &[&str],
    ) -> String {
        self.policy
            .create_security_policy(pb::CreateSecurityPolicyRequest {
                company_id: company.into(),
                security_policy: Some(pb::SecurityPolicy {
                    display_name: "Head office".into(),
                    sent_from: sent_from as i32,
                    security_type: security_type as i32,
                    allowed_ip_ranges: allowed.iter().map(|s| s.to_string()).collect(),
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await
            .expect("create policy")
            .into_inner()
            .security_policy
            .unwrap()
            .security_policy_id
    }

    /// A policy for mail "Sent From" email addresses, security type Via SPF: the set-up most
    /// tests start from.
    pub async fn email_policy(&mut self, company: &str) -> String {
        self.policy(
            company,
            pb::SentFromKind::EmailAddress,
            pb::SecurityType::ViaSpf,
            &[],
        )
        .await
    }

    pub async fn email(
        &mut self,
        company: &str,
        policy: &str,
        address: &str,
        user: &str,
    ) -> Result<pb::EmailAddress, Status> {
        Ok(self
            .policy
            .create_email_address(pb::CreateEmailAddressRequest {
                company_id: company.into(),
                email_address: Some(pb::EmailAddress {
                    security_policy_id: policy.into(),
                    email_address: address.into(),
                    forwarding_user_id: user.into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await?
            .into_inner()
            .email_address
            .unwrap())
    }

    pub async fn ip(
        &mut self,
        company: &str,
        policy: &str,
        range: &str,
        user: &str,
    ) -> Result<pb::IpAddress, Status> {
        Ok(self
            .policy
            .create_ip_address(pb::CreateIpAddressRequest {
                company_id: company.into(),
                ip_address: Some(pb::IpAddress {
                    security_policy_id: policy.into(),
                    ip_range: range.into(),
                    forwarding_user_id: user.into(),
                    description: "Office Exchange server".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await?
            .into_inner()
            .ip_address
            .unwrap())
    }

    /// A pending domain entry as CreateDomain leaves it once verification answered with a
    /// challenge. CreateDomain itself waits for the verification client (a later session), so
    /// the row is written directly, with the challenge token verification would have returned.
    pub async fn pending_domain(
        &self,
        company: &str,
        policy: &str,
        name: &str,
    ) -> (String, String) {
        let token = format!("{:032x}", rand::random::<u128>());
        let id: Uuid = sqlx::query_scalar(
            "INSERT INTO domains (company_id, policy_id, name, token, txt_record_value)
             VALUES ($1::uuid, $2::uuid, $3, $4, 'email2sms-verification=' || $4) RETURNING id",
        )
        .bind(company)
        .bind(policy)
        .bind(name)
        .bind(&token)
        .fetch_one(&self.pool)
        .await
        .expect("insert pending domain");
        (id.to_string(), token)
    }

    /// A domain entry verified (by the verification service's first event) and allocated to
    /// `user`, ready to route mail; its id.
    pub async fn allocated_domain(
        &mut self,
        company: &str,
        policy: &str,
        name: &str,
        user: &str,
    ) -> String {
        let (domain_id, token) = self.pending_domain(company, policy, name).await;
        self.verification_event(company, name, &token, VerificationState::Verified, 1)
            .await
            .expect("verify domain");
        self.policy
            .allocate_domain(pb::AllocateDomainRequest {
                company_id: company.into(),
                domain_id: domain_id.clone(),
                forwarding_user_id: user.into(),
            })
            .await
            .expect("allocate domain");
        domain_id
    }

    /// The verification service's event for `domain` of `company`, applied as the queue
    /// consumer will.
    pub async fn verification_event(
        &self,
        company: &str,
        domain: &str,
        token: &str,
        state: VerificationState,
        sequence: u64,
    ) -> Result<email2sms_policy::EventOutcome, email2sms_policy::Error> {
        let event = DomainVerificationChanged {
            event_id: Uuid::new_v4().to_string(),
            occur_time: None,
            company_id: company.into(),
            domain_name: domain.into(),
            challenge_id: Uuid::new_v4().to_string(),
            previous_state: VerificationState::Pending as i32,
            state: state as i32,
            state_reason: format!("state {state:?}"),
            state_sequence: sequence,
            token: token.into(),
            txt_record_value: format!("email2sms-verification={token}"),
            check: None,
        };
        email2sms_policy::apply_domain_verification_changed(&self.pool, &self.cache, &event).await
    }

    pub async fn resolve(&mut self, from: &str, ip: &str) -> Option<pb::CompiledSender> {
        self.resolution
            .resolve_sender(pb::ResolveSenderRequest {
                from_address: from.into(),
                client_ip: ip.into(),
            })
            .await
            .expect("resolve")
            .into_inner()
            .sender
    }

    /// What ingest would find in Redis for this sender.
    pub async fn resolve_in_redis(&self, from: &str, ip: &str) -> Option<pb::CompiledSender> {
        let from = email2sms_domain::EmailAddress::parse(from).unwrap();
        let ip: IpAddr = ip.parse().unwrap();
        self.cache
            .resolve_from_redis(&from, ip)
            .await
            .expect("read redis")
    }
}

pub fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    })
}

pub fn assert_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> Status {
    expect_code("", result, code)
}

/// [`assert_code`] for the answer of the RPC `rpc`, which a failure names.
pub fn assert_rpc_code<T: std::fmt::Debug>(
    rpc: &str,
    result: Result<T, Status>,
    code: Code,
) -> Status {
    expect_code(&format!("{rpc}: "), result, code)
}

fn expect_code<T: std::fmt::Debug>(prefix: &str, result: Result<T, Status>, code: Code) -> Status {
    match result {
        Ok(value) => panic!("{prefix}expected {code:?}, got {value:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "{prefix}{status:?}");
            status
        }
    }
}

/// Calls each `rpc(request)` on `client` in turn and asserts that every one answers NOT_FOUND,
/// naming the RPC that did not: `assert_each_not_found!(s.policy, get_domain(request), …)`.
#[allow(unused_macros)]
macro_rules! assert_each_not_found {
    ($client:expr, $($rpc:ident($request:expr)),+ $(,)?) => {
        $(
            $crate::support::assert_rpc_code(
                stringify!($rpc),
                $client.$rpc($request).await,
                email2sms_proto::tonic::Code::NotFound,
            );
        )+
    };
}
#[allow(unused_imports)]
pub(crate) use assert_each_not_found;
