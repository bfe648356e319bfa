//! Test support: an in-process SMSC (the `smpp34` crate's SMPP 3.4 server) that counts what it
//! accepts and misbehaves on request, a database per test, and SMS jobs.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use email2sms_dispatch::{MIGRATOR, SCHEMA};
use email2sms_proto::queue::v1::SmsJob;
use email2sms_testkit::TestDb;
use smpp34::server::ESME;
use smpp34::{
    SmppConnectionInformation, SmppError, SmppServer, SmppServerListener, bind_transceiver,
    bind_transceiver_resp, submit_sm, submit_sm_resp,
};
use sqlx::PgPool;

/// One submit_sm the SMSC accepted.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The id returned in submit_sm_resp (upper-case hex).
    pub message_id: String,
    pub numeric_id: u64,
    pub submit: submit_sm,
}

/// What the SMSC should do; changeable while it runs.
#[derive(Debug, Default)]
pub struct Behaviour {
    /// Refuse this many submits with ESME_RTHROTTLED (0x58) before accepting.
    pub throttle_next: AtomicUsize,
    /// Refuse this many submits with ESME_RSYSERR (0x08, "try again later") before accepting.
    pub fail_next: AtomicUsize,
    /// Hold every submit this long before answering.
    pub response_delay_ms: AtomicU64,
    /// After this many accepted submits (0 = never), send unbind once on that session.
    pub unbind_after: AtomicUsize,
    /// Send a DELIVRD receipt (decimal id) for every accepted submit after answering it.
    pub receipts: AtomicBool,
    /// Send the receipt *before* the submit_sm_resp, so it arrives before the submit is recorded.
    pub receipt_before_response: AtomicBool,
}

#[derive(Default)]
pub struct SmscState {
    pub behaviour: Behaviour,
    pub accepted: Mutex<Vec<Accepted>>,
    pub seen: AtomicUsize,
    pub binds: AtomicUsize,
    in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    next_id: AtomicU64,
    unbind_sent: AtomicBool,
    esmes: Mutex<HashMap<String, Arc<ESME>>>,
}

impl std::fmt::Debug for SmscState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmscState")
            .field("seen", &self.seen)
            .field("binds", &self.binds)
            .finish_non_exhaustive()
    }
}

impl SmscState {
    pub fn accepted(&self) -> Vec<Accepted> {
        self.accepted.lock().unwrap().clone()
    }

    fn esme(&self, session_id: &str) -> Option<Arc<ESME>> {
        self.esmes.lock().unwrap().get(session_id).cloned()
    }
}

pub fn receipt_text(numeric_id: u64, stat: &str) -> String {
    format!(
        "id:{numeric_id:010} sub:001 dlvrd:001 submit date:2611270000 done date:2611270001 stat:{stat} err:000 text:"
    )
}

async fn send_receipt(esme: &ESME, numeric_id: u64, stat: &str) {
    let _ = esme
        .deliver_sm()
        .esm_class(0x04)
        .short_message(receipt_text(numeric_id, stat).into_bytes())
        .send()
        .await;
}

#[derive(Debug)]
struct Listener(Arc<SmscState>);

#[async_trait]
impl SmppServerListener for Listener {
    async fn on_bind_transceiver(
        &self,
        bind: bind_transceiver,
        _info: &SmppConnectionInformation,
        _session_id: &String,
    ) -> bind_transceiver_resp {
        if bind.system_id == "test" && bind.password == "secret" {
            self.0.binds.fetch_add(1, Ordering::SeqCst);
            bind.accept("smsc".into(), Some(0x34))
        } else {
            bind.reject(SmppError::ESME_RINVPASWD)
        }
    }

    async fn on_submit_sm(
        &self,
        submit: submit_sm,
        _info: &SmppConnectionInformation,
        session_id: &String,
    ) -> submit_sm_resp {
        let state = &self.0;
        state.seen.fetch_add(1, Ordering::SeqCst);
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let delay = state.behaviour.response_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        state.in_flight.fetch_sub(1, Ordering::SeqCst);
        let throttle = state
            .behaviour
            .throttle_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if throttle {
            return submit.reject(SmppError::ESME_RTHROTTLED);
        }
        let fail = state
            .behaviour
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            return submit.reject(SmppError::ESME_RSYSERR);
        }
        let numeric_id = state.next_id.fetch_add(1, Ordering::SeqCst) + 1_000_000;
        let message_id = format!("{numeric_id:X}");
        let count = {
            let mut accepted = state.accepted.lock().unwrap();
            accepted.push(Accepted {
                message_id: message_id.clone(),
                numeric_id,
                submit: submit.clone(),
            });
            accepted.len()
        };
        let esme = state.esme(session_id);
        if let Some(esme) = &esme {
            if state
                .behaviour
                .receipt_before_response
                .load(Ordering::SeqCst)
            {
                send_receipt(esme, numeric_id, "DELIVRD").await;
            } else if state.behaviour.receipts.load(Ordering::SeqCst) {
                let esme = esme.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    send_receipt(&esme, numeric_id, "DELIVRD").await;
                });
            }
            let unbind_after = state.behaviour.unbind_after.load(Ordering::SeqCst);
            if unbind_after > 0
                && count >= unbind_after
                && !state.unbind_sent.swap(true, Ordering::SeqCst)
            {
                let esme = esme.clone();
                tokio::spawn(async move {
                    let _ = esme.send_unbind().await;
                });
            }
        }
        submit.accept(message_id)
    }

    async fn on_esme_bound(&self, esme: ESME, session_id: &String) {
        self.0
            .esmes
            .lock()
            .unwrap()
            .insert(session_id.clone(), Arc::new(esme));
    }

    async fn on_esme_unbound(&self, session_id: &String) {
        self.0.esmes.lock().unwrap().remove(session_id);
    }
}

/// An SMSC on a free loopback port.
pub struct Smsc {
    pub port: u16,
    pub state: Arc<SmscState>,
    server: SmppServer,
}

impl Smsc {
    pub async fn start() -> Smsc {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let state = Arc::new(SmscState::default());
        let mut server = SmppServer::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            port,
            Arc::new(Listener(state.clone())),
        );
        server.start().await;
        assert!(server.is_alive(), "the SMSC must listen on {port}");
        Smsc {
            port,
            state,
            server,
        }
    }

    pub fn url(&self, query: &str) -> String {
        format!("smpp://test:secret@127.0.0.1:{}?{query}", self.port)
    }
}

impl std::fmt::Debug for Smsc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Smsc").field("port", &self.port).finish()
    }
}

/// A migrated database of its own.
pub async fn database() -> (TestDb, PgPool) {
    TestDb::migrated(SCHEMA, &MIGRATOR, 8).await
}

/// A valid job with a fresh id.
pub fn job(recipient: &str, text: &str) -> SmsJob {
    SmsJob {
        job_id: uuid::Uuid::now_v7().to_string(),
        company_id: "0190f1c2-0000-7000-8000-000000000001".into(),
        forwarding_user_id: "0190f1c2-0000-7000-8000-000000000002".into(),
        sender_id: "ACME".into(),
        recipient: recipient.into(),
        text: text.into(),
        ..SmsJob::default()
    }
}

/// A dispatcher writing to `sms.jsonl` in `dir` (the file connector), and that file's path.
pub async fn file_dispatcher(
    pool: &PgPool,
    dir: &tempfile::TempDir,
) -> (email2sms_dispatch::jobs::Dispatcher, std::path::PathBuf) {
    let path = dir.path().join("sms.jsonl");
    let connector = email2sms_dispatch::connector::jsonl::JsonLinesConnector::file(&path)
        .await
        .unwrap();
    (
        email2sms_dispatch::jobs::Dispatcher::new(
            pool.clone(),
            Arc::new(connector),
            email2sms_dispatch::jobs::DispatchSettings::default(),
        ),
        path,
    )
}

/// How often the SMSC accepted each text.
pub fn accepted_texts(smsc: &Smsc) -> std::collections::HashMap<String, usize> {
    let mut counts = std::collections::HashMap::new();
    for accepted in smsc.state.accepted() {
        let text = String::from_utf8_lossy(&accepted.submit.short_message).into_owned();
        *counts.entry(text).or_insert(0) += 1;
    }
    counts
}

/// Polls `check` until it holds or 10 s pass.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

pub async fn job_state(pool: &PgPool, job_id: &str) -> String {
    recorded_state(pool, job_id)
        .await
        .unwrap_or_else(|| panic!("job {job_id} is not recorded"))
}

/// The job's state, `None` while dispatch has not recorded it yet.
pub async fn recorded_state(pool: &PgPool, job_id: &str) -> Option<String> {
    sqlx::query_scalar("SELECT state FROM sms_jobs WHERE job_id = $1::uuid")
        .bind(job_id)
        .fetch_optional(pool)
        .await
        .unwrap()
}

/// A TCP proxy (in front of the SMSC or RabbitMQ) whose connections can be cut at will, as a
/// network failure or a server crash would, and that can refuse connections for a while, as a
/// server restarting does.
#[derive(Debug)]
pub struct CuttableProxy {
    pub port: u16,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    refusing: Arc<std::sync::atomic::AtomicBool>,
}

impl CuttableProxy {
    pub async fn start(target_port: u16) -> CuttableProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let refusing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tracked = connections.clone();
        let refused = refusing.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if refused.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let task = tokio::spawn(async move {
                    let mut server = tokio::net::TcpStream::connect(("127.0.0.1", target_port))
                        .await
                        .unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
                tracked.lock().unwrap().push(task.abort_handle());
            }
        });
        CuttableProxy {
            port,
            connections,
            refusing,
        }
    }

    /// Cuts every connection and refuses new ones for `length`, as a server restart does.
    pub fn outage(&self, length: Duration) {
        self.refusing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.cut();
        let refusing = self.refusing.clone();
        tokio::spawn(async move {
            tokio::time::sleep(length).await;
            refusing.store(false, std::sync::atomic::Ordering::SeqCst);
        });
    }

    /// Drops every open connection (both sides see the TCP connection close).
    pub fn cut(&self) {
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }
}

/// Every log line of this test process from the moment [`captured_logs`] is first called,
/// filtered as the services filter theirs but at debug (more than a service logs by default).
/// Process-wide: lapin and the connectors log from threads of their own.
pub fn captured_logs() -> &'static CapturedLogs {
    static CAPTURED: std::sync::OnceLock<CapturedLogs> = std::sync::OnceLock::new();
    CAPTURED.get_or_init(|| {
        let captured = CapturedLogs::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(email2sms_runtime::telemetry::log_filter("debug").unwrap())
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        captured
    })
}

/// Log output captured by [`captured_logs`].
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLogs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLogs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Panics when the log shows any of `secrets` (a full phone number, a text), naming it.
    pub fn assert_never_shows(&self, secrets: &[&str]) {
        let text = self.text();
        for secret in secrets {
            assert!(!text.contains(secret), "the log shows {secret:?}:\n{text}");
        }
    }
}
