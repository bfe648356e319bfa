//! The four services as their binaries, each its own process, wired as an operator wires them:
//! one database (each service migrates its own schema at start), one Redis key prefix and one AMQP
//! prefix of the test's own, every listener on 127.0.0.1:0 (the tests read the announcements),
//! DNS from the test's NSD, SMS to the out-of-process SMSC. The portal's calls go over gRPC.
//!
//! A drill stops, kills and restarts single services ([`Cluster::stop`], [`Cluster::kill`],
//! [`Cluster::restart`]); a restarted service gets the addresses it had, so its callers need no
//! new configuration.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use email2sms_proto::dispatch::v1 as dispatch_pb;
use email2sms_proto::dispatch::v1::dispatch_service_client::DispatchServiceClient;
use email2sms_proto::policy::v1 as pb;
use email2sms_proto::policy::v1::policy_service_client::PolicyServiceClient;
use email2sms_proto::tonic::transport::Channel;
use email2sms_proto::verification::v1::VerificationState;
use email2sms_queue::Topology;
use email2sms_testkit::dns::DnsServer;
use email2sms_testkit::{ServiceProcess, TestDb};

use crate::smsc::NpmSmsc;

/// The machine's RabbitMQ, which the tests share (each under its own prefix).
pub const SHARED_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// The machine's Redis, which the tests share (each under its own key prefix).
pub const SHARED_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// The domain ingest takes SMS mail for (`<number>@sms.localhost`).
pub const SMS_DOMAIN: &str = "sms.localhost";
/// The retry tiers of the job queue: short, so a job that failed once is tried again within a
/// drill's time (the default first tier is 10 s). Ingest and dispatch must be given the same.
const RETRY_DELAYS: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(5)];

/// One of the four services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Service {
    Verification,
    Policy,
    Dispatch,
    Ingest,
}

impl Service {
    fn binary(self) -> &'static str {
        match self {
            Service::Verification => "email2sms-verification",
            Service::Policy => "email2sms-policy",
            Service::Dispatch => "email2sms-dispatch",
            Service::Ingest => "email2sms-ingest",
        }
    }

    fn grpc_addr_env(self) -> &'static str {
        match self {
            Service::Verification => "EMAIL2SMS_VERIFICATION_GRPC_ADDR",
            Service::Policy => "EMAIL2SMS_POLICY_GRPC_ADDR",
            Service::Dispatch => "EMAIL2SMS_DISPATCH_GRPC_ADDR",
            Service::Ingest => "EMAIL2SMS_INGEST_GRPC_ADDR",
        }
    }
}

/// What a test changes about the cluster; [`Options::default`] is the cluster as deployed, on the
/// machine's shared broker and Redis.
#[derive(Debug, Clone)]
pub struct Options {
    /// The broker URL the services are given (a drill's proxy in front of the real one).
    pub amqp_url: String,
    /// The Redis URL the services are given (a drill's private server).
    pub redis_url: String,
    /// The policy service's smarthost for notification mail; none: a port nobody listens on.
    pub smtp_relay: Option<String>,
    /// The SMPP connector's settings (`window=10`, …).
    pub connector_query: String,
    /// Settings added to (or overriding) one service's environment.
    pub extra_env: Vec<(Service, String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            amqp_url: SHARED_AMQP_URL.into(),
            redis_url: SHARED_REDIS_URL.into(),
            smtp_relay: None,
            connector_query: "window=10".into(),
            extra_env: Vec::new(),
        }
    }
}

impl Options {
    /// Adds `name=value` to `service`'s environment.
    pub fn env(mut self, service: Service, name: &str, value: &str) -> Options {
        self.extra_env
            .push((service, name.to_owned(), value.to_owned()));
        self
    }
}

/// The running cluster and what it talks to.
#[derive(Debug)]
pub struct Cluster {
    pub db: TestDb,
    pub dns: DnsServer,
    pub smsc: NpmSmsc,
    /// The services' queue names (`{prefix}sms.status`, …).
    pub topology: Topology,
    pub redis_prefix: String,
    redis_url: String,
    processes: BTreeMap<Service, ServiceProcess>,
    envs: BTreeMap<Service, Vec<(String, String)>>,
    /// Every address each service announced (kept across a restart, which reuses them).
    addrs: BTreeMap<Service, Vec<(String, SocketAddr)>>,
}

/// The directory cargo builds the workspace's binaries into: the test binary runs from
/// `target/<profile>/deps/`.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test binary>")
        .to_owned()
}

fn binary(service: Service) -> PathBuf {
    let path = bin_dir().join(service.binary());
    assert!(
        path.is_file(),
        "{} is missing: build the workspace's binaries first (`cargo nextest run --workspace` \
         builds them; or `cargo build --bins`)",
        path.display()
    );
    path
}

impl Cluster {
    /// The cluster with default [`Options`].
    pub async fn start() -> Cluster {
        Cluster::start_with(Options::default()).await
    }

    /// Starts NSD, the SMSC and the four services, in the order their callers need them:
    /// verification, policy (which calls verification), dispatch, ingest (which calls policy).
    pub async fn start_with(options: Options) -> Cluster {
        let db = TestDb::create().await;
        let dns = DnsServer::start().await;
        let smsc = NpmSmsc::start().await;
        let id = uuid::Uuid::new_v4().simple().to_string();
        // `test.` queues expire on the shared broker when a test leaves them behind (see the
        // helpers' RabbitMQ policy).
        let topology = Topology {
            prefix: format!("test.e2e.{id}."),
            retry_delays: RETRY_DELAYS.to_vec(),
            ..Topology::default()
        };
        let redis_prefix = format!("email2sms-test-e2e-{id}:");
        let retry_delays = RETRY_DELAYS
            .iter()
            .map(|d| format!("{}s", d.as_secs()))
            .collect::<Vec<_>>()
            .join(",");
        let smtp_relay = options
            .smtp_relay
            .clone()
            .unwrap_or_else(|| format!("smtp://127.0.0.1:{}", crate::sink::free_port()));
        let common: Vec<(String, String)> = [
            ("DATABASE_URL", db.url.as_str()),
            ("EMAIL2SMS_MIGRATE", "true"),
            ("EMAIL2SMS_INSECURE_NO_AUTH", "1"),
            ("AMQP_URL", options.amqp_url.as_str()),
            ("EMAIL2SMS_AMQP_PREFIX", topology.prefix.as_str()),
            ("EMAIL2SMS_RETRY_DELAYS", retry_delays.as_str()),
            ("REDIS_URL", options.redis_url.as_str()),
            ("EMAIL2SMS_REDIS_PREFIX", redis_prefix.as_str()),
            ("EMAIL2SMS_SHUTDOWN_GRACE", "5s"),
            ("RUST_LOG", "info"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let mut cluster = Cluster {
            db,
            dns,
            smsc,
            topology,
            redis_prefix: redis_prefix.clone(),
            redis_url: options.redis_url.clone(),
            processes: BTreeMap::new(),
            envs: BTreeMap::new(),
            addrs: BTreeMap::new(),
        };
        let dns_addr = cluster.dns.addr().to_string();
        let connector = cluster.smsc.connector(&options.connector_query);
        for service in [
            Service::Verification,
            Service::Policy,
            Service::Dispatch,
            Service::Ingest,
        ] {
            let mut env = common.clone();
            let own: Vec<(&str, String)> = match service {
                Service::Verification => vec![
                    ("EMAIL2SMS_DNS_SERVERS", dns_addr.clone()),
                    // Checks run when the portal asks (VerifyDomain), not on a timer.
                    ("EMAIL2SMS_VERIFICATION_SCHEDULER", "false".into()),
                    ("EMAIL2SMS_METRICS_ADDR", "127.0.0.1:0".into()),
                ],
                Service::Policy => vec![
                    (
                        "EMAIL2SMS_VERIFICATION_URL",
                        format!("http://{}", cluster.grpc_addr(Service::Verification)),
                    ),
                    ("EMAIL2SMS_SMTP_RELAY", smtp_relay.clone()),
                ],
                Service::Dispatch => vec![
                    ("EMAIL2SMS_SMS_CONNECTOR", connector.clone()),
                    // A drill sends a burst from one user; the throttles are tested elsewhere.
                    ("EMAIL2SMS_THROTTLE_PER_USER", "0".into()),
                    ("EMAIL2SMS_THROTTLE_PER_COMPANY", "0".into()),
                    ("EMAIL2SMS_METRICS_ADDR", "127.0.0.1:0".into()),
                ],
                Service::Ingest => vec![
                    (
                        "EMAIL2SMS_POLICY_URL",
                        format!("http://{}", cluster.grpc_addr(Service::Policy)),
                    ),
                    ("EMAIL2SMS_DNS_SERVERS", dns_addr.clone()),
                    ("EMAIL2SMS_SMS_DOMAINS", SMS_DOMAIN.into()),
                    ("EMAIL2SMS_INGEST_HOSTNAME", "ingest.e2e.test".into()),
                    ("EMAIL2SMS_INGEST_SMTP_ADDR", "127.0.0.1:0".into()),
                    // Scraped by the tests that read the metrics.
                    ("EMAIL2SMS_METRICS_ADDR", "127.0.0.1:0".into()),
                    // Sightings reach the sender log quickly, so a test's mail is logged in time.
                    ("EMAIL2SMS_INGEST_SIGHTING_FLUSH", "1s".into()),
                ],
            };
            env.extend(own.into_iter().map(|(k, v)| (k.to_owned(), v)));
            env.push((service.grpc_addr_env().to_owned(), "127.0.0.1:0".to_owned()));
            for (target, name, value) in &options.extra_env {
                if *target == service {
                    env.retain(|(k, _)| k != name);
                    env.push((name.clone(), value.clone()));
                }
            }
            cluster.envs.insert(service, env);
            cluster.launch(service).await;
        }
        cluster
    }

    async fn launch(&mut self, service: Service) {
        let env = &self.envs[&service];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let protocols: &[&str] = match service {
            Service::Ingest => &["grpc", "smtp", "metrics"],
            // Scraped by the tests that read the metrics.
            Service::Dispatch | Service::Verification => &["grpc", "metrics"],
            Service::Policy => &["grpc"],
        };
        let process = ServiceProcess::spawn_announcing(&binary(service), &env, protocols).await;
        self.addrs.insert(service, process.announced.clone());
        self.processes.insert(service, process);
    }

    /// The gRPC address `service` announced.
    pub fn grpc_addr(&self, service: Service) -> SocketAddr {
        self.addr(service, "grpc")
    }

    fn addr(&self, service: Service, protocol: &str) -> SocketAddr {
        self.addrs[&service]
            .iter()
            .find(|(p, _)| p == protocol)
            .map(|(_, addr)| *addr)
            .unwrap_or_else(|| panic!("{service:?} announced no {protocol} listener"))
    }

    /// Where ingest takes mail.
    pub fn smtp_addr(&self) -> SocketAddr {
        self.addr(Service::Ingest, "smtp")
    }

    /// `service`'s metrics as Prometheus scrapes them (`GET /metrics`).
    pub async fn scrape(&self, service: Service) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.addr(service, "metrics"))
            .await
            .expect("the metrics listener accepts");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default()
    }

    /// What `service` wrote on stderr so far (for a failure message).
    pub fn stderr(&self, service: Service) -> String {
        self.processes
            .get(&service)
            .map(ServiceProcess::stderr)
            .unwrap_or_default()
    }

    /// Stops `service` with SIGTERM and waits for it to exit 0.
    pub async fn stop(&mut self, service: Service) {
        let mut process = self.processes.remove(&service).expect("the service runs");
        process.terminate();
        let status = process.wait(Duration::from_secs(30)).await;
        assert_eq!(
            status.code(),
            Some(0),
            "{service:?} exits 0 on SIGTERM; stderr:\n{}",
            process.stderr()
        );
    }

    /// Kills `service` with SIGKILL (no shutdown code runs) and reaps it.
    pub async fn kill(&mut self, service: Service) {
        let mut process = self.processes.remove(&service).expect("the service runs");
        process.kill();
        process.wait(Duration::from_secs(10)).await;
    }

    /// Starts `service` again with its configuration and the addresses it had.
    pub async fn restart(&mut self, service: Service) {
        assert!(
            !self.processes.contains_key(&service),
            "{service:?} still runs"
        );
        let grpc = self.grpc_addr(service).to_string();
        let smtp = (service == Service::Ingest).then(|| self.smtp_addr().to_string());
        let env = self.envs.get_mut(&service).expect("configured");
        for (name, value) in env.iter_mut() {
            if name == service.grpc_addr_env() {
                *value = grpc.clone();
            }
            if let Some(smtp) = &smtp
                && name == "EMAIL2SMS_INGEST_SMTP_ADDR"
            {
                *value = smtp.clone();
            }
        }
        self.launch(service).await;
    }

    /// The portal's client of the policy service.
    pub async fn policy(&self) -> PolicyServiceClient<Channel> {
        PolicyServiceClient::new(email2sms_testkit::channel(self.grpc_addr(Service::Policy)).await)
    }

    /// The portal's client of the dispatch service.
    pub async fn dispatch(&self) -> DispatchServiceClient<Channel> {
        DispatchServiceClient::new(
            email2sms_testkit::channel(self.grpc_addr(Service::Dispatch)).await,
        )
    }

    /// A company whose SMS go to New Zealand numbers; its id.
    pub async fn company(&self, name: &str, admin: &str) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        self.policy()
            .await
            .upsert_company(pb::UpsertCompanyRequest {
                company: Some(pb::Company {
                    company_id: id.clone(),
                    display_name: name.into(),
                    admin_email_addresses: vec![admin.into()],
                    default_region: "NZ".into(),
                    ..Default::default()
                }),
                update_mask: None,
            })
            .await
            .expect("UpsertCompany");
        id
    }

    /// An active Messenger user of `company` sending as `sender_id`; its id.
    pub async fn user(&self, company: &str, username: &str, sender_id: &str) -> String {
        self.policy()
            .await
            .upsert_messenger_user(pb::UpsertMessengerUserRequest {
                company_id: company.into(),
                messenger_user: Some(pb::MessengerUser {
                    external_id: format!("ext-{username}"),
                    username: username.into(),
                    display_name: username.to_uppercase(),
                    sender_id: sender_id.into(),
                    active: true,
                    ..Default::default()
                }),
                update_mask: None,
            })
            .await
            .expect("UpsertMessengerUser")
            .into_inner()
            .messenger_user
            .expect("the user")
            .messenger_user_id
    }

    /// A security policy of `company`, security type Via SPF; its id.
    pub async fn spf_policy(&self, company: &str, sent_from: pb::SentFromKind) -> String {
        self.policy()
            .await
            .create_security_policy(pb::CreateSecurityPolicyRequest {
                company_id: company.into(),
                security_policy: Some(pb::SecurityPolicy {
                    display_name: "Head office".into(),
                    sent_from: sent_from as i32,
                    security_type: pb::SecurityType::ViaSpf as i32,
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await
            .expect("CreateSecurityPolicy")
            .into_inner()
            .security_policy
            .expect("the policy")
            .security_policy_id
    }

    /// Publishes `domain`'s zone: an SPF record authorising 127.0.0.1 (where the tests' mail
    /// comes from), and the verification TXT record when given.
    pub async fn publish_zone(&mut self, domain: &str, verification_txt: Option<&str>) {
        let mut records = String::from("@ TXT \"v=spf1 ip4:127.0.0.1 -all\"\n");
        if let Some(txt) = verification_txt {
            records.push_str(&format!("@ TXT \"{txt}\"\n"));
        }
        self.dns.set_zone(domain, &records).await;
    }

    /// The portal's domain flow: CreateDomain, the TXT record published (with the SPF record),
    /// VerifyDomain answering VERIFIED, AllocateDomain to `user`. Returns the domain entry.
    pub async fn verified_domain(
        &mut self,
        company: &str,
        policy: &str,
        user: &str,
        domain: &str,
    ) -> pb::Domain {
        let mut client = self.policy().await;
        let created = client
            .create_domain(pb::CreateDomainRequest {
                company_id: company.into(),
                security_policy_id: policy.into(),
                domain_name: domain.into(),
                forwarding_user_id: String::new(),
                request_id: uuid::Uuid::new_v4().to_string(),
            })
            .await
            .expect("CreateDomain")
            .into_inner()
            .domain
            .expect("the domain");
        let verification = created.verification.clone().expect("the challenge");
        assert_ne!(verification.state, VerificationState::Verified as i32);
        self.publish_zone(domain, Some(&verification.txt_record_value))
            .await;
        let verified = client
            .verify_domain(pb::VerifyDomainRequest {
                company_id: company.into(),
                domain_id: created.domain_id.clone(),
            })
            .await
            .expect("VerifyDomain")
            .into_inner()
            .domain
            .expect("the domain");
        let state = verified.verification.expect("its verification");
        assert_eq!(
            state.state,
            VerificationState::Verified as i32,
            "the published TXT record verifies the domain: {state:?}"
        );
        client
            .allocate_domain(pb::AllocateDomainRequest {
                company_id: company.into(),
                domain_id: created.domain_id.clone(),
                forwarding_user_id: user.into(),
            })
            .await
            .expect("AllocateDomain")
            .into_inner()
            .domain
            .expect("the domain")
    }

    /// The SMS made from the email with `message_id`, if dispatch has it.
    pub async fn sms_of_email(
        &self,
        company: &str,
        message_id: &str,
    ) -> Option<dispatch_pb::SmsMessage> {
        let mut messages = self
            .dispatch()
            .await
            .list_messages(dispatch_pb::ListMessagesRequest {
                company_id: company.into(),
                email_message_id: message_id.into(),
                ..Default::default()
            })
            .await
            .expect("ListMessages")
            .into_inner()
            .messages;
        assert!(messages.len() <= 1, "one SMS per email: {messages:?}");
        messages.pop()
    }

    /// Every SMS of `company` (all pages).
    pub async fn all_sms(&self, company: &str) -> Vec<dispatch_pb::SmsMessage> {
        let mut client = self.dispatch().await;
        let mut all = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = client
                .list_messages(dispatch_pb::ListMessagesRequest {
                    company_id: company.into(),
                    page_size: 1000,
                    page_token: page_token.clone(),
                    ..Default::default()
                })
                .await
                .expect("ListMessages")
                .into_inner();
            all.extend(page.messages);
            if page.next_page_token.is_empty() {
                return all;
            }
            page_token = page.next_page_token;
        }
    }

    /// One SMS with its history.
    pub async fn get_message(
        &self,
        company: &str,
        job_id: &str,
    ) -> dispatch_pb::GetMessageResponse {
        self.dispatch()
            .await
            .get_message(dispatch_pb::GetMessageRequest {
                company_id: company.into(),
                job_id: job_id.into(),
            })
            .await
            .expect("GetMessage")
            .into_inner()
    }

    /// Stops every service with SIGTERM (each must exit 0), then removes what the test left on
    /// the shared broker and Redis.
    pub async fn shutdown(mut self) {
        for service in [
            Service::Ingest,
            Service::Dispatch,
            Service::Policy,
            Service::Verification,
        ] {
            if self.processes.contains_key(&service) {
                self.stop(service).await;
            }
        }
        self.remove_queues().await;
        self.remove_redis_keys().await;
    }

    async fn remove_queues(&self) {
        let Ok(connection) =
            lapin::Connection::connect(SHARED_AMQP_URL, lapin::ConnectionProperties::default())
                .await
        else {
            return;
        };
        let Ok(channel) = connection.create_channel().await else {
            return;
        };
        let mut queues = self.topology.job_path_queues();
        queues.push(self.topology.status_events_queue());
        queues.push(self.topology.policy_events_queue());
        for queue in queues {
            let _ = channel
                .queue_delete(queue.as_str().into(), Default::default())
                .await;
        }
        for exchange in [
            self.topology.jobs_exchange(),
            self.topology.retry_exchange(),
            self.topology.dead_exchange(),
            self.topology.events_exchange(),
        ] {
            let _ = channel
                .exchange_delete(exchange.as_str().into(), Default::default())
                .await;
        }
        let _ = connection.close(0, "done".into()).await;
    }

    async fn remove_redis_keys(&self) {
        let Ok(client) = redis::Client::open(self.redis_url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.redis_prefix))
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        for chunk in keys.chunks(1000) {
            let _: Result<(), _> = redis::cmd("DEL").arg(chunk).query_async(&mut conn).await;
        }
    }
}
