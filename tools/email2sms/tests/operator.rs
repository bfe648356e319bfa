//! The gRPC and AMQP subcommands as an operator runs them: the built `email2sms` binary against a
//! real policy service (its own binary, database, Redis prefix and AMQP prefix) and the machine's
//! RabbitMQ, parsing `--json` back.
//!
//! The policy binary is taken from beside `email2sms` (`cargo build --bins` or a workspace test
//! run builds it).

use std::path::{Path, PathBuf};

use email2sms_proto::prost::Message as _;
use email2sms_proto::queue::v1::{SMS_JOB_TYPE, SmsJob};
use email2sms_queue::Topology;
use email2sms_queue::broker::{Broker, Outgoing, Publisher};
use email2sms_queue::topology::{DEAD_REASON_HEADER, SMS_DEAD_ROUTING_KEY};
use email2sms_testkit::{ServiceProcess, TestDb, tokens_file};
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_email2sms");
const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

fn sibling(name: &str) -> PathBuf {
    let path = Path::new(BINARY).with_file_name(name);
    assert!(
        path.is_file(),
        "{} is missing: build the workspace's binaries first (`cargo build --bins`)",
        path.display()
    );
    path
}

fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Runs `email2sms` with `env` and `args`; returns the exit code, stdout and stderr.
async fn run(env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let output = tokio::process::Command::new(BINARY)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run email2sms");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs with `--json`, asserts exit 0 and parses stdout.
async fn json(env: &[(&str, &str)], args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (code, stdout, stderr) = run(env, &all).await;
    assert_eq!(code, 0, "{args:?}: {stdout}{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"))
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} in {value}"))
}

#[tokio::test]
async fn the_first_sms_walkthrough_runs_over_grpc_with_tables_json_and_refusals() {
    let db = TestDb::unique();
    let dir = tempfile::tempdir().unwrap();
    let (tokens, admin, internal) = tokens_file(dir.path());
    let redis_prefix = format!("email2sms-cli-test-{}:", unique());
    let policy = ServiceProcess::spawn(
        &sibling("email2sms-policy"),
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("EMAIL2SMS_MIGRATE", "1"),
            ("EMAIL2SMS_API_TOKENS_FILE", tokens.to_str().unwrap()),
            ("EMAIL2SMS_POLICY_GRPC_ADDR", "127.0.0.1:0"),
            ("EMAIL2SMS_REDIS_PREFIX", redis_prefix.as_str()),
            ("EMAIL2SMS_VERIFICATION_URL", "http://127.0.0.1:1"),
        ],
    )
    .await;
    let url = format!("http://{}", policy.grpc_addr);
    let token_path = dir.path().join("admin-token");
    std::fs::write(&token_path, format!("{admin}\n")).unwrap();
    let env = [
        ("EMAIL2SMS_POLICY_URL", url.as_str()),
        ("EMAIL2SMS_API_TOKEN", admin.as_str()),
    ];

    // A company with a generated UUID id.
    let created = json(
        &env,
        &["company", "create", "--name", "Acme", "--region", "NZ"],
    )
    .await;
    let company = text(&created, "company_id").to_owned();
    assert!(uuid::Uuid::parse_str(&company).is_ok(), "{created}");
    // The token may come from a file instead (and the env var must then be absent).
    let read = json(
        &[("EMAIL2SMS_POLICY_URL", url.as_str())],
        &[
            "company",
            "get",
            &company,
            "--token-file",
            token_path.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(read["display_name"], "Acme");
    assert_eq!(read["default_region"], "NZ");
    assert_eq!(read["limits"]["over_limit_behavior"], "truncate");

    let user = json(
        &env,
        &["user", "add", "--company", &company, "--username", "jane"],
    )
    .await;
    let user_id = text(&user, "messenger_user_id").to_owned();
    let users = json(&env, &["user", "list", "--company", &company]).await;
    assert_eq!(users["messenger_users"][0]["username"], "jane");

    let policy_json = json(
        &env,
        &[
            "policy",
            "set",
            "--company",
            &company,
            "--sent-from",
            "email_address",
            "--security-type",
            "via_spf",
            "--default-user",
            &user_id,
            "--name",
            "Staff",
        ],
    )
    .await;
    let policy_id = text(&policy_json, "security_policy_id").to_owned();
    assert_eq!(policy_json["sent_from"], "email_address");
    let changed = json(
        &env,
        &[
            "policy",
            "set",
            "--company",
            &company,
            "--id",
            &policy_id,
            "--text-mode",
            "subject",
        ],
    )
    .await;
    assert_eq!(changed["text_mode"], "subject");
    assert_eq!(changed["display_name"], "Staff", "untouched by the mask");

    let entry = json(
        &env,
        &[
            "email",
            "add",
            "--company",
            &company,
            "--policy",
            &policy_id,
            "Jane@Example.COM",
        ],
    )
    .await;
    assert_eq!(entry["email_address"], "jane@example.com");
    assert_eq!(entry["readiness"]["ready"], true, "{entry}");
    assert_eq!(
        entry["readiness"]["effective_forwarding_user_id"],
        user_id.as_str()
    );

    // The table lists it under its headers.
    let (code, table, stderr) = run(&env, &["email", "list", "--company", &company]).await;
    assert_eq!(code, 0, "{stderr}");
    let mut lines = table.lines();
    assert!(lines.next().unwrap().starts_with("ID"), "{table}");
    assert!(
        lines.next().unwrap().contains("jane@example.com"),
        "{table}"
    );

    // A refusal: exit 1, the server's message and its field violations.
    let (code, stdout, stderr) = run(
        &env,
        &[
            "email",
            "add",
            "--company",
            &company,
            "--policy",
            &policy_id,
            "not-an-address",
        ],
    )
    .await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stderr.contains("INVALID_ARGUMENT"), "{stderr}");
    assert!(
        stderr.lines().any(|l| l.starts_with("  email_address")),
        "{stderr}"
    );
    let (code, stdout, _) = run(
        &env,
        &[
            "email",
            "add",
            "--company",
            &company,
            "--policy",
            &policy_id,
            "not-an-address",
            "--json",
        ],
    )
    .await;
    assert_eq!(code, 1);
    let error: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(error["error"]["grpc_code"], "INVALID_ARGUMENT");
    assert!(
        !error["error"]["field_violations"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{error}"
    );
    // Another company's id reads as NOT_FOUND: a refusal too.
    let (code, _, stderr) = run(&env, &["company", "get", &uuid::Uuid::new_v4().to_string()]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("NOT_FOUND"), "{stderr}");

    // IP entries, in canonical form, then removed.
    let ip_policy = json(
        &env,
        &[
            "policy",
            "set",
            "--company",
            &company,
            "--sent-from",
            "ip_address",
            "--security-type",
            "by_ip_addresses",
            "--allow-ip",
            "203.0.113.0/24",
            "--default-user",
            &user_id,
        ],
    )
    .await;
    let ip = json(
        &env,
        &[
            "ip",
            "add",
            "--company",
            &company,
            "--policy",
            text(&ip_policy, "security_policy_id"),
            "--description",
            "office",
            "203.0.113.7",
        ],
    )
    .await;
    assert_eq!(ip["ip_range"], "203.0.113.7/32");
    let listed = json(&env, &["ip", "list", "--company", &company]).await;
    assert_eq!(listed["ip_addresses"].as_array().unwrap().len(), 1);
    json(
        &env,
        &[
            "ip",
            "rm",
            "--company",
            &company,
            text(&ip, "ip_address_id"),
        ],
    )
    .await;
    let listed = json(&env, &["ip", "list", "--company", &company]).await;
    assert!(listed["ip_addresses"].as_array().unwrap().is_empty());

    // Credentials: none, or of the wrong scope, exit 77; a usage error 64; nobody there 69.
    let (code, _, stderr) = run(
        &[("EMAIL2SMS_POLICY_URL", url.as_str())],
        &["company", "get", &company],
    )
    .await;
    assert_eq!(code, 77, "{stderr}");
    let (code, _, stderr) = run(
        &[
            ("EMAIL2SMS_POLICY_URL", url.as_str()),
            ("EMAIL2SMS_API_TOKEN", internal.as_str()),
        ],
        &["company", "get", &company],
    )
    .await;
    assert_eq!(code, 77, "{stderr}");
    let (code, _, stderr) = run(&env, &["company", "create", "--id", "not-a-uuid"]).await;
    assert_eq!(code, 64, "{stderr}");
    let (code, _, stderr) = run(
        &[("EMAIL2SMS_DISPATCH_URL", "http://127.0.0.1:1")],
        &["messages", "list", "--company", &company],
    )
    .await;
    assert_eq!(code, 69, "{stderr}");
}

/// A queue topology of the test's own on the shared broker, removed when dropped.
struct Queues {
    topology: Topology,
    broker: std::sync::Arc<Broker>,
}

impl Queues {
    async fn declare() -> Queues {
        let topology = Topology {
            prefix: format!("test.cli.{}.", unique()),
            retry_delays: vec![std::time::Duration::from_secs(1)],
            ..Topology::default()
        };
        let broker = Broker::new(AMQP_URL, "email2sms-cli-test");
        topology
            .declare_jobs(&broker.channel().await.unwrap())
            .await
            .unwrap();
        Queues { topology, broker }
    }

    async fn park(&self, job_id: &str, reason: &str) {
        let job = SmsJob {
            job_id: job_id.to_owned(),
            company_id: uuid::Uuid::new_v4().to_string(),
            recipient: "+64211000003".into(),
            ..Default::default()
        };
        let mut headers = FieldTable::default();
        headers.insert(
            DEAD_REASON_HEADER.into(),
            AMQPValue::LongString(LongString::from(reason.as_bytes().to_vec())),
        );
        Publisher::new(self.broker.clone(), std::time::Duration::from_secs(10))
            .publish(Outgoing {
                exchange: &self.topology.dead_exchange(),
                routing_key: SMS_DEAD_ROUTING_KEY,
                payload: &job.encode_to_vec(),
                message_id: job_id.to_owned(),
                message_type: SMS_JOB_TYPE,
                headers,
            })
            .await
            .unwrap();
    }

    fn env(&self) -> [(&'static str, String); 3] {
        [
            ("AMQP_URL", AMQP_URL.to_owned()),
            ("EMAIL2SMS_AMQP_PREFIX", self.topology.prefix.clone()),
            ("EMAIL2SMS_RETRY_DELAYS", "1s".to_owned()),
        ]
    }

    /// Best effort: a `test.` queue left behind expires on the shared broker by its policy.
    async fn remove(self) {
        let Ok(channel) = self.broker.channel().await else {
            return;
        };
        for queue in self.topology.job_path_queues() {
            let _ = channel
                .queue_delete(queue.as_str().into(), Default::default())
                .await;
        }
    }
}

/// Messages in each queue of `queue --json`, by role.
fn depths(status: &Value) -> std::collections::BTreeMap<String, u64> {
    status["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            (
                text(q, "role").to_owned(),
                q["messages"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect()
}

#[tokio::test]
async fn queue_shows_depths_lists_dead_letters_and_replays_one_to_the_job_queue() {
    let queues = Queues::declare().await;
    let owned = queues.env();
    let env: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let job_id = uuid::Uuid::now_v7().to_string();
    queues.park(&job_id, "invalid destination address").await;
    queues.park("other-job", "text too long").await;

    let status = depths(&json(&env, &["queue"]).await);
    assert_eq!(status["jobs"], 0);
    assert_eq!(status["retry 1s"], 0);
    assert_eq!(status["dead letters"], 2);

    let listed = json(&env, &["queue", "dead", "list"]).await;
    let letters = listed["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 2, "{listed}");
    assert_eq!(letters[0]["job_id"], job_id.as_str());
    assert_eq!(letters[0]["reason"], "invalid destination address");
    assert_eq!(letters[0]["job"]["recipient"], "+64211000003");
    let (code, table, _) = run(&env, &["queue", "dead", "list"]).await;
    assert_eq!(code, 0);
    assert!(table.contains("text too long"), "{table}");
    // Listing takes nothing away.
    assert_eq!(depths(&json(&env, &["queue"]).await)["dead letters"], 2);

    let (code, _, stderr) = run(&env, &["queue", "dead", "purge"]).await;
    assert_eq!(code, 64, "purge without --yes is refused: {stderr}");
    let (code, _, stderr) = run(&env, &["queue", "dead", "replay", "no-such-job"]).await;
    assert_eq!(code, 1, "{stderr}");

    let replayed = json(&env, &["queue", "dead", "replay", &job_id]).await;
    assert_eq!(replayed["replayed"][0], job_id.as_str());
    let status = depths(&json(&env, &["queue"]).await);
    assert_eq!(status["jobs"], 1, "{status:?}");
    assert_eq!(status["dead letters"], 1, "{status:?}");
    // The replayed job is the same bytes, under its own id, on the job queue.
    let channel = queues.broker.channel().await.unwrap();
    let back = channel
        .basic_get(
            queues.topology.jobs_queue().as_str().into(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
        .expect("the replayed job");
    assert_eq!(
        SmsJob::decode(back.delivery.data.as_slice())
            .unwrap()
            .job_id,
        job_id
    );

    let purged = json(&env, &["queue", "dead", "purge", "--yes"]).await;
    assert_eq!(purged["purged"], 1);
    assert_eq!(depths(&json(&env, &["queue"]).await)["dead letters"], 0);
    queues.remove().await;
}

#[tokio::test]
async fn domains_print_their_txt_record_and_verify_and_imports_preview_every_row_then_commit() {
    let db = TestDb::unique();
    let mut dns = email2sms_testkit::dns::DnsServer::start().await;
    let dns_addr = dns.addr().to_string();
    let amqp_prefix = format!("test.cli.{}.", unique());
    let redis_prefix = format!("email2sms-cli-test-{}:", unique());
    let common = [
        ("DATABASE_URL", db.url.as_str()),
        ("EMAIL2SMS_MIGRATE", "1"),
        ("EMAIL2SMS_INSECURE_NO_AUTH", "1"),
        ("EMAIL2SMS_AMQP_PREFIX", amqp_prefix.as_str()),
    ];
    let mut env = common.to_vec();
    env.extend([
        ("EMAIL2SMS_VERIFICATION_GRPC_ADDR", "127.0.0.1:0"),
        ("EMAIL2SMS_DNS_SERVERS", dns_addr.as_str()),
        ("EMAIL2SMS_VERIFICATION_SCHEDULER", "false"),
    ]);
    let verification = ServiceProcess::spawn(&sibling("email2sms-verification"), &env).await;
    let verification_url = format!("http://{}", verification.grpc_addr);
    let mut env = common.to_vec();
    env.extend([
        ("EMAIL2SMS_POLICY_GRPC_ADDR", "127.0.0.1:0"),
        ("EMAIL2SMS_REDIS_PREFIX", redis_prefix.as_str()),
        ("EMAIL2SMS_VERIFICATION_URL", verification_url.as_str()),
    ]);
    let policy = ServiceProcess::spawn(&sibling("email2sms-policy"), &env).await;
    let url = format!("http://{}", policy.grpc_addr);
    let env = [("EMAIL2SMS_POLICY_URL", url.as_str())];

    let company = uuid::Uuid::new_v4().to_string();
    json(
        &env,
        &[
            "company", "create", "--id", &company, "--name", "Acme", "--region", "NZ",
        ],
    )
    .await;
    let user = json(
        &env,
        &["user", "add", "--company", &company, "--username", "jane"],
    )
    .await;
    let user_id = text(&user, "messenger_user_id").to_owned();

    // A domain: the TXT record to publish is printed, then verified once it is in DNS.
    let domains = json(
        &env,
        &[
            "policy",
            "set",
            "--company",
            &company,
            "--sent-from",
            "domain",
            "--security-type",
            "via_spf",
            "--default-user",
            &user_id,
        ],
    )
    .await;
    let domain_policy = text(&domains, "security_policy_id").to_owned();
    let (code, printed, stderr) = run(
        &env,
        &[
            "domain",
            "add",
            "--company",
            &company,
            "--policy",
            &domain_policy,
            "example.com",
        ],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let listed = json(&env, &["domain", "list", "--company", &company]).await;
    let domain = &listed["domains"][0];
    let value = text(&domain["verification"], "txt_record_value").to_owned();
    assert_eq!(domain["verification"]["state"], "pending", "{domain}");
    assert!(
        printed.contains(&format!("example.com  TXT  \"{value}\"")),
        "{printed}"
    );
    let domain_id = text(domain, "domain_id").to_owned();
    dns.set_zone("example.com", &format!("@ TXT \"{value}\""))
        .await;
    let verified = json(
        &env,
        &["domain", "verify", "--company", &company, &domain_id],
    )
    .await;
    assert_eq!(verified["check"]["result"], "token_found", "{verified}");
    assert_eq!(verified["domain"]["verification"]["state"], "verified");
    assert_eq!(verified["domain"]["readiness"]["ready"], true);
    json(&env, &["domain", "rm", "--company", &company, &domain_id]).await;
    let listed = json(&env, &["domain", "list", "--company", &company]).await;
    assert!(listed["domains"].as_array().unwrap().is_empty());

    // An import: every row with its line and problem, the totals, then the commit.
    let emails = json(
        &env,
        &[
            "policy",
            "set",
            "--company",
            &company,
            "--sent-from",
            "email_address",
            "--security-type",
            "via_spf",
        ],
    )
    .await;
    let email_policy = text(&emails, "security_policy_id").to_owned();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("staff.csv");
    std::fs::write(
        &csv,
        "Email,Username\njane@example.org,jane\nnot-an-address,jane\nbob@example.org,nobody\n",
    )
    .unwrap();
    let args = [
        "import",
        "preview",
        "--company",
        &company,
        "--policy",
        &email_policy,
        csv.to_str().unwrap(),
    ];
    let (code, table, stderr) = run(&env, &args).await;
    assert_eq!(code, 0, "{stderr}");
    for (line, status) in [("2", "ok"), ("3", "invalid_email"), ("4", "unknown_user")] {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(line) && l.contains(status)),
            "line {line} {status}: {table}"
        );
    }
    let preview = json(&env, &args).await;
    assert_eq!(preview["rows"].as_array().unwrap().len(), 3);
    assert_eq!(preview["import"]["totals"]["total_rows"], 3);
    assert_eq!(preview["import"]["totals"]["ok_rows"], 1);
    let import_id = text(&preview["import"], "import_id").to_owned();
    let committed = json(
        &env,
        &["import", "commit", "--company", &company, &import_id],
    )
    .await;
    assert_eq!(committed["import"]["state"], "committed", "{committed}");
    assert_eq!(committed["import"]["created_count"], 1);
    let listed = json(
        &env,
        &[
            "email",
            "list",
            "--company",
            &company,
            "--import",
            &import_id,
        ],
    )
    .await;
    assert_eq!(
        listed["email_addresses"][0]["email_address"],
        "jane@example.org"
    );
    // A file that is not there: 66.
    let (code, _, _) = run(
        &env,
        &[
            "import",
            "preview",
            "--company",
            &company,
            "--policy",
            &email_policy,
            "/nonexistent.csv",
        ],
    )
    .await;
    assert_eq!(code, 66);
    let log = json(&env, &["sender-log", "--company", &company]).await;
    assert!(log["entries"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn messages_list_and_get_show_an_sms_dispatch_sent_and_review_refuses_one_not_held() {
    let db = TestDb::unique();
    let amqp_prefix = format!("test.cli.{}.", unique());
    let dispatch = ServiceProcess::spawn(
        &sibling("email2sms-dispatch"),
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("EMAIL2SMS_MIGRATE", "1"),
            ("EMAIL2SMS_INSECURE_NO_AUTH", "1"),
            ("EMAIL2SMS_AMQP_PREFIX", amqp_prefix.as_str()),
            ("EMAIL2SMS_DISPATCH_GRPC_ADDR", "127.0.0.1:0"),
            ("EMAIL2SMS_SMS_CONNECTOR", "stdout"),
        ],
    )
    .await;
    let url = format!("http://{}", dispatch.grpc_addr);
    let env = [("EMAIL2SMS_DISPATCH_URL", url.as_str())];
    let topology = Topology {
        prefix: amqp_prefix.clone(),
        ..Topology::default()
    };
    let broker = Broker::new(AMQP_URL, "email2sms-cli-test");
    topology
        .declare_jobs(&broker.channel().await.unwrap())
        .await
        .unwrap();
    let company = uuid::Uuid::new_v4().to_string();
    let job = SmsJob {
        job_id: uuid::Uuid::now_v7().to_string(),
        company_id: company.clone(),
        forwarding_user_id: uuid::Uuid::new_v4().to_string(),
        sender_id: "ACME".into(),
        recipient: "+64211000003".into(),
        text: "Hello from the CLI test".into(),
        ..SmsJob::default()
    };
    Publisher::new(broker.clone(), std::time::Duration::from_secs(10))
        .publish(Outgoing {
            exchange: &topology.jobs_exchange(),
            routing_key: email2sms_queue::topology::SMS_JOB_ROUTING_KEY,
            payload: &job.encode_to_vec(),
            message_id: job.job_id.clone(),
            message_type: SMS_JOB_TYPE,
            headers: FieldTable::default(),
        })
        .await
        .unwrap();

    let listed = email2sms_testkit::eventually(
        "dispatch sent the SMS",
        || {
            let company = company.clone();
            async move { json(&env, &["messages", "list", "--company", &company]).await }
        },
        |listed| {
            listed["messages"][0]["state"] == "submitted"
                || listed["messages"][0]["state"] == "delivered"
        },
    )
    .await;
    let message = &listed["messages"][0];
    assert_eq!(message["job_id"], job.job_id.as_str());
    assert_eq!(message["recipient"], "+64211000003");
    let filtered = json(
        &env,
        &[
            "messages",
            "list",
            "--company",
            &company,
            "--state",
            "failed",
        ],
    )
    .await;
    assert!(
        filtered["messages"].as_array().unwrap().is_empty(),
        "{filtered}"
    );
    let got = json(
        &env,
        &["messages", "get", "--company", &company, &job.job_id],
    )
    .await;
    assert_eq!(got["message"]["text"], "Hello from the CLI test");
    assert!(!got["history"].as_array().unwrap().is_empty(), "{got}");
    let (code, table, stderr) = run(
        &env,
        &["messages", "get", "--company", &company, &job.job_id],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        table.contains("STATE") && table.contains("queued"),
        "{table}"
    );

    let review = json(&env, &["review", "list", "--company", &company]).await;
    assert!(review["messages"].as_array().unwrap().is_empty());
    let (code, _, stderr) = run(
        &env,
        &[
            "review",
            "resolve",
            "--company",
            &company,
            "--as",
            "sent",
            &job.job_id,
        ],
    )
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("FAILED_PRECONDITION"), "{stderr}");
    if let Ok(channel) = broker.channel().await {
        for queue in topology.job_path_queues() {
            let _ = channel
                .queue_delete(queue.as_str().into(), Default::default())
                .await;
        }
    }
}

#[tokio::test]
async fn diagnose_prints_every_step_of_ingest_s_decision() {
    let db = TestDb::unique();
    let amqp_prefix = format!("test.cli.{}.", unique());
    let redis_prefix = format!("email2sms-cli-test-{}:", unique());
    let dns = email2sms_testkit::dns::DnsServer::start().await;
    let dns_addr = dns.addr().to_string();
    let policy = ServiceProcess::spawn(
        &sibling("email2sms-policy"),
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("EMAIL2SMS_MIGRATE", "1"),
            ("EMAIL2SMS_INSECURE_NO_AUTH", "1"),
            ("EMAIL2SMS_AMQP_PREFIX", amqp_prefix.as_str()),
            ("EMAIL2SMS_REDIS_PREFIX", redis_prefix.as_str()),
            ("EMAIL2SMS_POLICY_GRPC_ADDR", "127.0.0.1:0"),
            ("EMAIL2SMS_VERIFICATION_URL", "http://127.0.0.1:1"),
        ],
    )
    .await;
    let policy_url = format!("http://{}", policy.grpc_addr);
    let ingest = ServiceProcess::spawn_announcing(
        &sibling("email2sms-ingest"),
        &[
            ("EMAIL2SMS_INSECURE_NO_AUTH", "1"),
            ("EMAIL2SMS_AMQP_PREFIX", amqp_prefix.as_str()),
            ("EMAIL2SMS_REDIS_PREFIX", redis_prefix.as_str()),
            ("EMAIL2SMS_POLICY_URL", policy_url.as_str()),
            ("EMAIL2SMS_DNS_SERVERS", dns_addr.as_str()),
            ("EMAIL2SMS_SMS_DOMAINS", "sms.localhost"),
            ("EMAIL2SMS_INGEST_HOSTNAME", "ingest.cli.test"),
            ("EMAIL2SMS_INGEST_GRPC_ADDR", "127.0.0.1:0"),
            ("EMAIL2SMS_INGEST_SMTP_ADDR", "127.0.0.1:0"),
        ],
        &["grpc", "smtp"],
    )
    .await;
    let ingest_url = format!("http://{}", ingest.grpc_addr);
    let env = [
        ("EMAIL2SMS_POLICY_URL", policy_url.as_str()),
        ("EMAIL2SMS_INGEST_URL", ingest_url.as_str()),
    ];
    let company = json(
        &env,
        &["company", "create", "--name", "Acme", "--region", "NZ"],
    )
    .await;
    let company = text(&company, "company_id").to_owned();
    let user = json(
        &env,
        &["user", "add", "--company", &company, "--username", "jane"],
    )
    .await;
    let policy_json = json(
        &env,
        &[
            "policy",
            "set",
            "--company",
            &company,
            "--sent-from",
            "email_address",
            "--security-type",
            "by_ip_addresses",
            "--allow-ip",
            "203.0.113.0/24",
            "--default-user",
            text(&user, "messenger_user_id"),
        ],
    )
    .await;
    json(
        &env,
        &[
            "email",
            "add",
            "--company",
            &company,
            "--policy",
            text(&policy_json, "security_policy_id"),
            "alice@example.com",
        ],
    )
    .await;
    let diagnose = |ip: &'static str| {
        let company = company.clone();
        async move {
            json(
                &env,
                &[
                    "diagnose",
                    "--company",
                    &company,
                    "--from",
                    "Alice <alice@example.com>",
                    "--ip",
                    ip,
                    "--helo",
                    "mail.example.com",
                    "--to",
                    "64211000003@sms.localhost",
                ],
            )
            .await
        }
    };
    let accepted = diagnose("203.0.113.9").await;
    assert_eq!(accepted["decision"], "accept", "{accepted}");
    assert_eq!(accepted["reply"]["code"], 250, "{accepted}");
    assert!(
        accepted["steps"].as_array().unwrap().len() > 3,
        "{accepted}"
    );
    let refused = diagnose("198.51.100.1").await;
    assert_eq!(refused["decision"], "reject", "{refused}");
    assert!(
        refused["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["outcome"] == "fail"),
        "{refused}"
    );
    // The table shows each step numbered, and the reply.
    let (code, table, stderr) = run(
        &env,
        &[
            "diagnose",
            "--company",
            &company,
            "--from",
            "alice@example.com",
            "--ip",
            "198.51.100.1",
            "--to",
            "64211000003@sms.localhost",
        ],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(table.contains(" 1. "), "{table}");
    assert!(table.contains("decision: reject"), "{table}");
}
