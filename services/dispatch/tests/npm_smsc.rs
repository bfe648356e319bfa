//! Dispatch as its binary builds it (the SMPP connector from `EMAIL2SMS_SMS_CONNECTOR`, the job
//! state machine, receipts recorded in Postgres), jobs handed to it all at once, against an SMSC outside this process that is not this project's code: a small server on the
//! npm `smpp` package (tests/npm-smsc/smsc.js; `scripts/ensure-tools` installs the package into
//! target/tools/npm-smsc). It writes each delivery receipt right after its submit_sm_resp, so a
//! receipt often arrives before dispatch has recorded the submit, and it numbers messages 1, 2, 3…
//! in decimal, as many SMSCs do. It records the esm_class, data_coding and short_message bytes of
//! every submit_sm as they came over the wire.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use email2sms_dispatch::{Config, Outcome};
use email2sms_proto::queue::v1::SmsJob;
use support::{database, job};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The npm package's directory: `EMAIL2SMS_TEST_NPM_SMSC`, else where `scripts/ensure-tools`
/// installs it.
fn node_modules() -> std::path::PathBuf {
    std::env::var_os("EMAIL2SMS_TEST_NPM_SMSC")
        .map(Into::into)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/tools/npm-smsc/node_modules")
        })
}

/// One submit_sm as the SMSC read it.
#[derive(Debug, Clone)]
struct Submit {
    message_id: String,
    esm_class: u8,
    data_coding: u8,
    destination: String,
    short_message: Vec<u8>,
}

struct NpmSmsc {
    port: u16,
    /// Its stdout lines (see smsc.js).
    lines: Arc<Mutex<Vec<String>>>,
    _child: tokio::process::Child,
}

impl NpmSmsc {
    async fn start(args: &[&str]) -> NpmSmsc {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/npm-smsc/smsc.js");
        let modules = node_modules();
        assert!(
            modules.join("smpp/package.json").exists(),
            "the npm smpp package is not in {} (run scripts/ensure-tools)",
            modules.display()
        );
        let mut child = tokio::process::Command::new("node")
            .arg(&script)
            .args(args)
            .env("NODE_PATH", &modules)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("start node (scripts/ensure-tools): {error}"));
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(20), stdout.next_line())
            .await
            .expect("the SMSC starts")
            .unwrap()
            .expect("the SMSC prints its port");
        let port = first
            .strip_prefix("listening ")
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stdout.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        NpmSmsc {
            port,
            lines,
            _child: child,
        }
    }

    fn url(&self, query: &str) -> String {
        format!("smpp://test:secret@127.0.0.1:{}?{query}", self.port)
    }

    fn lines_starting(&self, prefix: &str) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|line| line.strip_prefix(prefix).map(str::to_owned))
            .collect()
    }

    fn submits(&self) -> Vec<Submit> {
        self.lines_starting("submit ")
            .iter()
            .map(|line| {
                let words: Vec<&str> = line.split(' ').collect();
                Submit {
                    message_id: words[0].to_owned(),
                    esm_class: words[1].parse().unwrap(),
                    data_coding: words[2].parse().unwrap(),
                    destination: words[3].to_owned(),
                    short_message: hex::decode(words.get(4).copied().unwrap_or("")).unwrap(),
                }
            })
            .collect()
    }

    /// Message ids whose receipt the ESME answered with ESME_ROK (the SMSC's store forgets them).
    fn receipts_acknowledged(&self) -> HashSet<String> {
        self.lines_starting("receipt-acked ")
            .iter()
            .filter_map(|line| line.strip_suffix(" 0").map(str::to_owned))
            .collect()
    }

    /// Waits (10 s at most) until the receipt of every submit is acknowledged with ESME_ROK: a
    /// job is delivered once its receipt is committed, and the answer to the SMSC follows.
    /// Returns how many were.
    async fn wait_for_acknowledgements(&self) -> (usize, usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let submits = self.submits();
            let acknowledged = self.receipts_acknowledged();
            let done = submits
                .iter()
                .filter(|s| acknowledged.contains(&s.message_id))
                .count();
            if done == submits.len() || tokio::time::Instant::now() >= deadline {
                return (done, submits.len());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Dispatch as its binary builds it from `EMAIL2SMS_SMS_CONNECTOR` (the connector, the job state
/// machine, the receipt recorder), without the RabbitMQ consumer in front: jobs are handed to it
/// all at once, as the consumer does with its prefetch.
struct Running {
    dispatcher: Arc<email2sms_dispatch::Dispatcher>,
    recorder: tokio::task::JoinHandle<()>,
}

async fn start(pool: &sqlx::PgPool, db_url: &str, connector: &str) -> Running {
    let prefix = format!("test.{}.", uuid::Uuid::new_v4().simple());
    let config = Config::try_parse_from([
        "email2sms-dispatch",
        "--database-url",
        db_url,
        "--sms-connector",
        connector,
        "--redis-prefix",
        &prefix,
        "--throttle-per-user",
        "0",
        "--throttle-per-company",
        "0",
        "--insecure-no-auth",
    ])
    .unwrap();
    let (dispatcher, recorder) = email2sms_dispatch::build_dispatcher(&config, pool.clone())
        .await
        .unwrap();
    Running {
        dispatcher: Arc::new(dispatcher),
        recorder,
    }
}

impl Running {
    /// Hands every job over at once; each is acknowledged (done) once submitted and recorded.
    async fn process_all(&self, jobs: &[SmsJob]) {
        let outcomes = futures::future::join_all(jobs.iter().map(|sms| {
            let dispatcher = self.dispatcher.clone();
            let sms = sms.clone();
            tokio::spawn(async move { dispatcher.process_job(sms).await })
        }))
        .await;
        for outcome in outcomes {
            assert_eq!(outcome.unwrap(), Outcome::Done);
        }
    }

    async fn stop(self) {
        self.dispatcher.connector().close().await;
        self.recorder.abort();
    }
}

/// How many of `jobs` are in each state (`unrecorded` for a job dispatch has not seen).
async fn state_counts(pool: &sqlx::PgPool, jobs: &[SmsJob]) -> BTreeMap<String, usize> {
    let ids: Vec<uuid::Uuid> = jobs.iter().map(|j| j.job_id.parse().unwrap()).collect();
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT state, count(*) FROM sms_jobs WHERE job_id = ANY($1) GROUP BY state",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await
    .unwrap();
    let mut counts: BTreeMap<String, usize> = rows
        .into_iter()
        .map(|(state, n)| (state, usize::try_from(n).unwrap()))
        .collect();
    let recorded: usize = counts.values().sum();
    if recorded < jobs.len() {
        counts.insert("unrecorded".into(), jobs.len() - recorded);
    }
    counts
}

/// Polls until `done` holds for the state counts, or `seconds` pass; returns the last counts.
async fn wait_for_states(
    pool: &sqlx::PgPool,
    jobs: &[SmsJob],
    seconds: u64,
    done: impl Fn(&BTreeMap<String, usize>) -> bool,
) -> BTreeMap<String, usize> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        let counts = state_counts(pool, jobs).await;
        if done(&counts) || tokio::time::Instant::now() >= deadline {
            return counts;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn all_in(counts: &BTreeMap<String, usize>, state: &str, total: usize) -> bool {
    counts.get(state).copied().unwrap_or(0) == total
}

/// 200 jobs at once through a window of 10: the SMSC writes every receipt right after its
/// submit_sm_resp, so receipts race the recording of their submits all the time. Every SMS must
/// reach delivered, and the SMSC must have had every receipt acknowledged.
#[tokio::test]
async fn receipts_written_right_after_each_submit_response_deliver_every_job_under_concurrency() {
    let smsc = NpmSmsc::start(&["--ids", "decimal"]).await;
    let (db, pool) = database().await;
    let running = start(&pool, &db.url, &smsc.url("window=10")).await;
    // EMAIL2SMS_TEST_RECEIPT_JOBS=2000 repeats the reported 2,000-mail run.
    let count: usize = std::env::var("EMAIL2SMS_TEST_RECEIPT_JOBS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let jobs: Vec<SmsJob> = (0..count)
        .map(|n| job(&format!("+6421{:07}", 1000 + n), &format!("concurrent {n}")))
        .collect();
    running.process_all(&jobs).await;

    let counts = wait_for_states(&pool, &jobs, 60, |c| all_in(c, "delivered", jobs.len())).await;
    let (acknowledged, receipts) = smsc.wait_for_acknowledgements().await;
    let submits = smsc.submits();
    println!("{} jobs: states {counts:?}", jobs.len());
    assert_eq!(submits.len(), jobs.len(), "each job submitted once");
    assert!(
        all_in(&counts, "delivered", jobs.len()),
        "every SMS delivered; states {counts:?}, {acknowledged} of {receipts} receipts acknowledged"
    );
    assert_eq!(acknowledged, receipts, "every receipt acknowledged");
    // Every part carries its own message id, and each was matched to its own receipt.
    let parts: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT provider_message_id, receipt_status FROM sms_job_parts")
            .fetch_all(&pool)
            .await
            .unwrap();
    let ids: HashSet<&str> = parts.iter().map(|(id, _)| id.as_str()).collect();
    // Recorded normalised (lower case).
    let sent: HashSet<String> = submits
        .iter()
        .map(|s| s.message_id.to_ascii_lowercase())
        .collect();
    let ids: HashSet<String> = ids.into_iter().map(str::to_owned).collect();
    assert_eq!(ids, sent);
    assert!(
        parts
            .iter()
            .all(|(_, status)| status.as_deref() == Some("delivered"))
    );
    let unmatched: i64 = sqlx::query_scalar("SELECT count(*) FROM unmatched_delivery_receipts")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(unmatched, 0, "no receipt left waiting for its submit");
    running.stop().await;
}

/// The SMSC restarts at the 40th submit: it holds back the answers and receipts of the last 8
/// submits, writes them all at once, reads nothing more and closes the connection with unread
/// submits in it (a reset). Dispatch must still read what arrived before the reset (rusmppc used
/// to stop reading at the first failed write, so submits the SMSC had answered were held for
/// review and their receipts never matched), bind again, and take the receipts the SMSC sends
/// again on the new bind. Every job the SMSC took reaches delivered; those it never read are held
/// for review, not sent again blindly. Message ids with hex letters, so no id here can be taken
/// for another (that is the test above).
#[tokio::test]
async fn receipts_outstanding_when_the_smsc_drops_the_bind_are_applied_after_it_binds_again() {
    let smsc = NpmSmsc::start(&[
        "--ids",
        "hex",
        "--first-id",
        "10485760",
        "--drop-after",
        "40",
    ])
    .await;
    let (db, pool) = database().await;
    let running = start(&pool, &db.url, &smsc.url("window=10&response_timeout=2")).await;
    let jobs: Vec<SmsJob> = (0..120)
        .map(|n| job("+64211000003", &format!("through a drop {n}")))
        .collect();
    running.process_all(&jobs).await;

    let settled = |c: &BTreeMap<String, usize>| {
        c.get("delivered").copied().unwrap_or(0) + c.get("needs_review").copied().unwrap_or(0)
            == jobs.len()
    };
    let counts = wait_for_states(&pool, &jobs, 60, settled).await;
    let submits = smsc.submits();
    let sent = smsc.lines_starting("receipt-sent ");
    let resent = sent.len() - sent.iter().collect::<HashSet<_>>().len();
    println!(
        "{} submits taken, {resent} receipts sent again after the drop; states {counts:?}",
        submits.len()
    );
    let by_text: HashMap<Vec<u8>, usize> = submits.iter().fold(HashMap::new(), |mut m, s| {
        *m.entry(s.short_message.clone()).or_default() += 1;
        m
    });
    assert!(
        smsc.lines_starting("dropped").len() == 1 && smsc.lines_starting("bound ").len() >= 2,
        "the SMSC dropped the bind once and dispatch bound again"
    );
    assert!(by_text.values().all(|n| *n == 1), "nothing sent twice");
    let delivered = counts.get("delivered").copied().unwrap_or(0);
    assert!(
        settled(&counts) && delivered == submits.len(),
        "every SMS the SMSC took ({}) is delivered, the rest held for review; states {counts:?}",
        submits.len()
    );
    let (acknowledged, receipts) = smsc.wait_for_acknowledgements().await;
    assert_eq!(
        acknowledged, receipts,
        "every receipt acknowledged in the end"
    );
    running.stop().await;
}

/// submit_sm's esm_class as the SMSC read it: 0x00 (default mode, default message type) for a
/// single-part SMS, 0x40 (UDHI alone) for each part of a concatenated one. Never 0x08 (the "ESME
/// delivery acknowledgement" message type of SMPP 3.4 §5.2.12) that a strict SMSC refuses.
#[tokio::test]
async fn submits_carry_default_esm_class_and_only_the_udhi_bit_for_concatenated_parts() {
    let smsc = NpmSmsc::start(&[]).await;
    let (db, pool) = database().await;
    let running = start(&pool, &db.url, &smsc.url("window=4")).await;
    let long = "A long message in three parts for the esm_class check. ".repeat(7);
    let jobs = vec![
        job("+64211000001", "short and plain"),
        job("+64211000002", long.trim_end()),
        job("+64211000004", "ünïcode short ✓"),
    ];
    running.process_all(&jobs).await;
    let counts = wait_for_states(&pool, &jobs, 30, |c| all_in(c, "delivered", jobs.len())).await;
    assert!(all_in(&counts, "delivered", jobs.len()), "{counts:?}");

    let submits = smsc.submits();
    let to = |number: &str| -> Vec<&Submit> {
        submits.iter().filter(|s| s.destination == number).collect()
    };
    let single = to("64211000001");
    assert_eq!(single.len(), 1);
    assert_eq!(single[0].esm_class, 0x00, "single part: esm_class 0x00");
    let parts = to("64211000002");
    assert_eq!(parts.len(), 3, "three parts");
    for (index, part) in parts.iter().enumerate() {
        assert_eq!(part.esm_class, 0x40, "part {}: only UDHI (0x40)", index + 1);
        // The UDH the UDHI bit announces: IEI 0 (8-bit reference), 3 parts, this one's number.
        assert_eq!(&part.short_message[..3], [5, 0, 3]);
        assert_eq!(part.short_message[4], 3);
        assert_eq!(usize::from(part.short_message[5]), index + 1);
    }
    let unicode = to("64211000004");
    assert_eq!(unicode.len(), 1);
    assert_eq!(
        unicode[0].esm_class, 0x00,
        "UCS-2 single part: esm_class 0x00"
    );
    assert_eq!(unicode[0].data_coding, 0x08, "UCS-2");
    running.stop().await;
}

/// While receipts cannot be recorded (here a trigger makes every write of one fail), dispatch
/// answers each deliver_sm with ESME_RX_T_APPDN (0x64, "temporary application error"), never
/// with ESME_ROK, so the SMSC keeps it and sends it again; once the database takes them, every
/// job reaches delivered.
#[tokio::test]
async fn receipts_that_cannot_be_recorded_are_refused_with_a_temporary_error_and_applied_when_sent_again()
 {
    let smsc = NpmSmsc::start(&["--ids", "hex", "--first-id", "10485760"]).await;
    let (db, pool) = database().await;
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_receipts() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'receipts refused by the test'; END $$;
         CREATE TRIGGER refuse_part_receipts BEFORE UPDATE OF receipt_status ON sms_job_parts
             FOR EACH ROW EXECUTE FUNCTION refuse_receipts();
         CREATE TRIGGER refuse_unmatched_receipts BEFORE INSERT ON unmatched_delivery_receipts
             FOR EACH ROW EXECUTE FUNCTION refuse_receipts();",
    )
    .execute(&pool)
    .await
    .unwrap();
    let running = start(&pool, &db.url, &smsc.url("window=10")).await;
    let jobs: Vec<SmsJob> = (0..20)
        .map(|n| job("+64211000005", &format!("refused receipt {n}")))
        .collect();
    running.process_all(&jobs).await;
    let refused = |smsc: &NpmSmsc| {
        smsc.lines_starting("receipt-acked ")
            .iter()
            .filter(|line| !line.ends_with(" 0"))
            .cloned()
            .collect::<Vec<_>>()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while refused(&smsc).len() < 2 * jobs.len() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let counts = state_counts(&pool, &jobs).await;
    assert!(all_in(&counts, "submitted", jobs.len()), "{counts:?}");
    assert!(
        smsc.receipts_acknowledged().is_empty(),
        "no receipt acknowledged while none can be recorded"
    );

    sqlx::raw_sql(
        "DROP TRIGGER refuse_part_receipts ON sms_job_parts;
         DROP TRIGGER refuse_unmatched_receipts ON unmatched_delivery_receipts;",
    )
    .execute(&pool)
    .await
    .unwrap();
    let counts = wait_for_states(&pool, &jobs, 30, |c| all_in(c, "delivered", jobs.len())).await;
    assert!(all_in(&counts, "delivered", jobs.len()), "{counts:?}");
    let (acknowledged, receipts) = smsc.wait_for_acknowledgements().await;
    assert_eq!(acknowledged, receipts);
    let refused = refused(&smsc);
    assert!(
        refused.len() >= 2 * jobs.len(),
        "each refused and sent again"
    );
    assert!(
        refused.iter().all(|line| line.ends_with(" 100")),
        "refused with ESME_RX_T_APPDN (0x64 = 100): {:?}",
        &refused[..3]
    );
    running.stop().await;
}

/// An SMSC that answers submit_sm with a hex id and writes its decimal value in the receipt, with
/// ids from 0x100000 on: most are digits only ("100000" … "100099"), so `auto` cannot tell them
/// from decimal ids and matches such a receipt only as given. `receipt_ids=decimal` says how this
/// SMSC writes them, and every receipt then finds its SMS.
#[tokio::test]
async fn receipt_ids_decimal_matches_digits_only_hex_ids_by_their_decimal_value() {
    let smsc = NpmSmsc::start(&[
        "--ids",
        "hex",
        "--first-id",
        "1048576",
        "--receipt-ids",
        "decimal",
    ])
    .await;
    let (db, pool) = database().await;
    let running = start(&pool, &db.url, &smsc.url("window=10&receipt_ids=decimal")).await;
    let jobs: Vec<SmsJob> = (0..100)
        .map(|n| job("+64211000006", &format!("decimal receipt {n}")))
        .collect();
    running.process_all(&jobs).await;
    let counts = wait_for_states(&pool, &jobs, 30, |c| all_in(c, "delivered", jobs.len())).await;
    let digits_only = smsc
        .submits()
        .iter()
        .filter(|s| s.message_id.bytes().all(|b| b.is_ascii_digit()))
        .count();
    assert!(
        digits_only > 50,
        "mostly digits-only hex ids ({digits_only})"
    );
    assert!(all_in(&counts, "delivered", jobs.len()), "{counts:?}");
    let unmatched: i64 = sqlx::query_scalar("SELECT count(*) FROM unmatched_delivery_receipts")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(unmatched, 0);
    running.stop().await;
}
