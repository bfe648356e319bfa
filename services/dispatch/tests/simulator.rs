//! Against an SMSC outside this process and written independently of rusmpp: a small Python
//! server on the `smpp.pdu3` codec (tests/sim/smsc.py; `scripts/ensure-tools` installs the codec
//! into target/tools/py). Bind, submits through the window (a 3-part message with UDH), and the
//! simulator's delivery receipts moving the jobs to delivered.

mod support;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use email2sms_dispatch::connector::Connector;
use email2sms_dispatch::connector::smpp::{SmppConnector, SmppSettings};
use email2sms_dispatch::jobs::{DispatchSettings, Dispatcher, Outcome, run_receipt_recorder};
use support::{database, eventually, job, job_state};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The simulator's python: `EMAIL2SMS_TEST_PYTHON`, else the tools venv of the workspace.
fn python() -> std::path::PathBuf {
    std::env::var_os("EMAIL2SMS_TEST_PYTHON")
        .map(Into::into)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/tools/py/bin/python")
        })
}

struct Simulator {
    port: u16,
    /// Its stdout lines: `bound …`, `submit ID DEST HEX`, `receipt-acked ID`.
    lines: Arc<Mutex<Vec<String>>>,
    _child: tokio::process::Child,
}

impl Simulator {
    async fn start() -> Simulator {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sim/smsc.py");
        let mut child = tokio::process::Command::new(python())
            .arg(&script)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "start {} (run scripts/ensure-tools for the python venv with smpp.pdu3): {error}",
                    python().display()
                )
            });
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(20), stdout.next_line())
            .await
            .expect("the simulator starts")
            .unwrap()
            .expect("the simulator prints its port (is smpp.pdu3 installed? scripts/ensure-tools)");
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
        Simulator {
            port,
            lines,
            _child: child,
        }
    }

    fn submits(&self) -> Vec<(String, String, Vec<u8>)> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|line| {
                let mut words = line.strip_prefix("submit ")?.split(' ');
                Some((
                    words.next()?.to_owned(),
                    words.next()?.to_owned(),
                    hex::decode(words.next()?).ok()?,
                ))
            })
            .collect()
    }
}

#[tokio::test]
async fn an_independent_smsc_takes_binds_submits_and_sends_receipts_that_complete_jobs() {
    let sim = Simulator::start().await;
    let (_db, pool) = database().await;
    let mut settings = SmppSettings::from_url(&format!(
        "smpp://test:secret@127.0.0.1:{}?window=4",
        sim.port
    ))
    .unwrap();
    settings.response_timeout = Duration::from_secs(5);
    let (sender, receipts) = tokio::sync::mpsc::channel(64);
    let smpp = SmppConnector::start(settings, sender);
    tokio::spawn(run_receipt_recorder(pool.clone(), receipts));
    let dispatcher = Dispatcher::new(
        pool.clone(),
        Arc::new(smpp.clone()),
        DispatchSettings::default(),
    );

    let long = "Long message through the simulator. ".repeat(10);
    let mut jobs: Vec<_> = (0..5)
        .map(|n| job("+64211234567", &format!("short {n}")))
        .collect();
    jobs.push(job("+64211234568", long.trim_end()));
    let outcomes =
        futures::future::join_all(jobs.iter().map(|sms| dispatcher.process_job(sms.clone()))).await;
    assert!(outcomes.iter().all(|o| *o == Outcome::Done), "{outcomes:?}");

    for sms in &jobs {
        eventually(
            "the simulator's receipt marks the job delivered",
            || async { job_state(&pool, &sms.job_id).await == "delivered" },
        )
        .await;
    }
    let submits = sim.submits();
    assert_eq!(submits.len(), 5 + 3, "five short messages and three parts");
    let parts: Vec<&Vec<u8>> = submits
        .iter()
        .filter(|(_, dest, _)| dest == "64211234568")
        .map(|(_, _, message)| message)
        .collect();
    assert_eq!(parts.len(), 3);
    // UDH: IEI 0 (8-bit reference), same reference, 3 parts, numbered 1..3 in order.
    for (index, part) in parts.iter().enumerate() {
        assert_eq!(&part[..4], [5, 0, 3, part[3]]);
        assert_eq!(part[3], parts[0][3], "one reference for the message");
        assert_eq!(part[4], 3);
        assert_eq!(usize::from(part[5]), index + 1);
    }
    // The connector answers each deliver_sm once its receipt is recorded.
    eventually("every receipt answered", || async {
        sim.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.starts_with("receipt-acked"))
            .count()
            == 8
    })
    .await;
    assert!(sim.lines.lock().unwrap().iter().any(|l| l == "bound test"));
    smpp.close().await;
}
