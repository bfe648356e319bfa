//! SMPP client connector (rusmppc): one transceiver bind, a window of in-flight submits, a
//! throughput limit, enquire_link keep-alive, reconnect with back-off, and delivery receipts.
//!
//! Configured as `smpp://system_id:password@host:port?window=50&tps=100&system_type=&source=INFO`
//! (all query parameters optional: `window` in-flight submit_sm (default 10), `tps` submits per
//! second on this bind (0 = no limit, the default), `enquire_link` seconds (30), `response_timeout`
//! seconds (10), `source` the default source address when a job has no sender ID, `receipt_ids`
//! how the SMSC's receipts write the message ids its submit_sm_resp gave: `same`, `decimal` (the
//! decimal value of a hex id), `hex` (the reverse) or `auto` (the default: as given, or converted
//! where the two forms cannot be confused)).
//!
//! Exactly-once rules: a submit_sm the SMSC explicitly refused with a throttling, queue-full or
//! bind-state error was not taken and is retried (on this bind, after a pause, or on the next bind).
//! A submit_sm written to the socket whose answer never came (connection lost, response timeout)
//! may have been taken: it is reported as `maybe_submitted` and never resent by the connector.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::{Stream, StreamExt};
use rusmpp::pdus::{BindTransceiver, DeliverSm, DeliverSmResp, SubmitSm};
use rusmpp::types::{COctetString, EmptyOrFullCOctetString, OctetString};
use rusmpp::values::{
    DataCoding, EsmClass, InterfaceVersion, Npi, RegisteredDelivery, ServiceType, Ton,
};
use rusmpp::{Command, CommandStatus, Pdu};
use rusmppc::error::Error as SmppError;
use rusmppc::{Client, ConnectionBuilder, Event};
use tokio::sync::{Mutex, Semaphore, oneshot, watch};
use tokio::time::Instant;

use super::receipt::{ReceiptIds, normalise_message_id, parse_receipt_text};
use super::{
    Connector, ConnectorError, DeliveryReceipt, ErrorKind, IdForms, OutgoingSms, ReceiptDelivery,
    ReceiptSink, Submitted,
};

/// The connector name recorded with jobs and receipts.
pub const NAME: &str = "smpp";

/// SMPP command statuses that mean "slow down": the SMSC did not take the message.
const THROTTLED: u32 = 0x58;
const MESSAGE_QUEUE_FULL: u32 = 0x14;
/// "Incorrect bind status": the bind is going away; the message was not taken.
const INVALID_BIND_STATUS: u32 = 0x04;
/// Statuses worth retrying later that are not throttling: system error, submit failed.
const TRANSIENT_STATUSES: [u32; 2] = [0x08, 0x45];

/// submit_sm esm_class (SMPP 3.4 §5.2.12): default messaging mode, default message type, no
/// GSM features. Not `EsmClass::default()`: rusmpp's default sets bits 3-5 to 0b001, "ESME
/// delivery acknowledgement" (0x08), which a strict SMSC refuses in a submit_sm or treats as an
/// acknowledgement rather than a message to deliver.
const ESM_CLASS_DEFAULT: u8 = 0x00;
/// UDHI (bit 6): the short message starts with a user data header, as every part of a
/// concatenated SMS does.
const ESM_CLASS_UDHI: u8 = 0x40;

/// Settings of one SMPP bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmppSettings {
    /// `host:port`.
    pub address: String,
    pub system_id: String,
    pub password: String,
    pub system_type: String,
    /// Maximum submit_sm awaiting their response.
    pub window: usize,
    /// Maximum submit_sm per second on this bind; `None` = no limit.
    pub throughput: Option<u32>,
    pub enquire_link_interval: Duration,
    pub response_timeout: Duration,
    /// How long a submit waits for a bound session before giving up (transient, not submitted).
    pub session_wait: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// How often one part is retried on throttling before the job is handed back as throttled.
    pub throttle_retries: u32,
    pub throttle_pause: Duration,
    /// Source address for jobs without a sender ID.
    pub default_source: Option<String>,
    /// How the SMSC's receipts write the message ids of its submit_sm_resp.
    pub receipt_ids: ReceiptIds,
}

impl SmppSettings {
    /// Parses `smpp://user:pass@host:port?...`.
    pub fn from_url(text: &str) -> Result<SmppSettings, String> {
        let url = url::Url::parse(text).map_err(|error| format!("not a valid URL: {error}"))?;
        let host = url.host_str().ok_or("the SMPP URL needs a host")?;
        let port = url.port().ok_or("the SMPP URL needs a port")?;
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let mut settings = SmppSettings {
            address: format!("{host}:{port}"),
            system_id: decode(url.username()),
            password: decode(url.password().unwrap_or("")),
            system_type: String::new(),
            window: 10,
            throughput: None,
            enquire_link_interval: Duration::from_secs(30),
            response_timeout: Duration::from_secs(10),
            session_wait: Duration::from_secs(30),
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(30),
            throttle_retries: 5,
            throttle_pause: Duration::from_millis(200),
            default_source: None,
            receipt_ids: ReceiptIds::Auto,
        };
        for (key, value) in url.query_pairs() {
            let number = || {
                value
                    .parse::<u64>()
                    .map_err(|_| format!("SMPP setting {key} must be a number, not {value:?}"))
            };
            match &*key {
                "window" => {
                    settings.window = usize::try_from(number()?.clamp(1, 10_000)).unwrap_or(10)
                }
                "tps" => {
                    let tps = number()?;
                    settings.throughput = (tps > 0).then(|| u32::try_from(tps).unwrap_or(u32::MAX));
                }
                "enquire_link" => settings.enquire_link_interval = Duration::from_secs(number()?),
                "response_timeout" => settings.response_timeout = Duration::from_secs(number()?),
                "system_type" => settings.system_type = value.into_owned(),
                "source" => settings.default_source = Some(value.into_owned()),
                "receipt_ids" => {
                    settings.receipt_ids = ReceiptIds::parse(&value).ok_or_else(|| {
                        format!(
                            "SMPP setting receipt_ids must be auto, same, decimal or hex, not {value:?}"
                        )
                    })?
                }
                other => return Err(format!("unknown SMPP setting {other:?}")),
            }
        }
        if settings.system_id.is_empty() {
            return Err("the SMPP URL needs a system id: smpp://user:pass@host:port".into());
        }
        Ok(settings)
    }
}

/// The bound session submits go through; the generation tells sessions apart.
type Session = Option<(u64, Client)>;

#[derive(Debug)]
struct Inner {
    settings: SmppSettings,
    window: Semaphore,
    in_flight: AtomicUsize,
    session: watch::Sender<Session>,
    generation: AtomicU64,
    /// The earliest time the next submit_sm may go out (throughput limit).
    next_slot: Mutex<Instant>,
    /// Concatenation reference numbers: varied per message so a handset never joins parts of two.
    reference: AtomicUsize,
    closing: watch::Sender<bool>,
}

/// An SMPP connector. Cloning shares the bind.
#[derive(Debug, Clone)]
pub struct SmppConnector {
    inner: Arc<Inner>,
}

impl SmppConnector {
    /// Starts the bind supervisor (connect, bind, reconnect with back-off) and returns at once;
    /// submits wait for the bind.
    pub fn start(settings: SmppSettings, receipts: ReceiptSink) -> SmppConnector {
        let inner = Arc::new(Inner {
            window: Semaphore::new(settings.window),
            in_flight: AtomicUsize::new(0),
            session: watch::Sender::new(None),
            generation: AtomicU64::new(0),
            next_slot: Mutex::new(Instant::now()),
            reference: AtomicUsize::new(rand::random::<u8>().into()),
            closing: watch::Sender::new(false),
            settings,
        });
        tokio::spawn(supervise(inner.clone(), receipts));
        SmppConnector { inner }
    }

    /// True while a bind is up.
    pub fn is_bound(&self) -> bool {
        self.inner.session.borrow().is_some()
    }

    /// Submits handed to the bind and not answered yet (at most the window).
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::SeqCst)
    }

    async fn submit_part(&self, pdu: &SubmitSm) -> Result<String, ConnectorError> {
        let inner = &self.inner;
        let deadline = Instant::now() + inner.settings.session_wait;
        let mut throttled = 0;
        let mut last_generation = None;
        loop {
            let (generation, client) = wait_for_session(inner, deadline, last_generation).await?;
            let _permit = inner
                .window
                .acquire()
                .await
                .map_err(|_| not_sent("the SMPP connector is closed"))?;
            pace(inner).await;
            // The bind may have gone while we waited for a window slot or for our throughput slot:
            // nothing was written, so the part goes out on the next bind.
            if client.is_closed() {
                // Wait for a new bind rather than spin on this dead one until the supervisor
                // notices.
                last_generation = Some(generation);
                continue;
            }
            let current = inner.session.borrow().as_ref().map(|(g, _)| *g);
            if current != Some(generation) {
                last_generation = None;
                continue;
            }
            inner.in_flight.fetch_add(1, Ordering::SeqCst);
            let window = &crate::metrics::metrics().smpp_window_in_use;
            window.inc();
            let result = client.submit_sm(pdu.clone()).await;
            window.dec();
            inner.in_flight.fetch_sub(1, Ordering::SeqCst);
            match result {
                Ok(response) => {
                    let id = normalise_message_id(&response.message_id().to_string());
                    if id.is_empty() {
                        return Err(ConnectorError::new(
                            ErrorKind::Transient,
                            "",
                            "the SMSC accepted the SMS without a message id",
                        )
                        .maybe_submitted());
                    }
                    return Ok(id);
                }
                Err(SmppError::UnexpectedResponse { response }) => {
                    let status = u32::from(response.status());
                    let code = format!("0x{status:08x}");
                    match status {
                        THROTTLED | MESSAGE_QUEUE_FULL => {
                            crate::metrics::metrics().smpp_throttled.inc();
                            throttled += 1;
                            if throttled > inner.settings.throttle_retries {
                                return Err(ConnectorError::new(
                                    ErrorKind::Throttled,
                                    code,
                                    "the SMSC keeps asking to slow down",
                                ));
                            }
                            // Back off before trying the same part again: the SMSC did not take it.
                            tokio::time::sleep(inner.settings.throttle_pause * throttled).await;
                        }
                        INVALID_BIND_STATUS => {
                            // The bind is being torn down; the next bind takes the part.
                            last_generation = Some(generation);
                        }
                        _ if TRANSIENT_STATUSES.contains(&status) => {
                            return Err(ConnectorError::new(
                                ErrorKind::Transient,
                                code,
                                format!(
                                    "the SMSC refused the SMS for now: {:?}",
                                    response.status()
                                ),
                            ));
                        }
                        _ => {
                            return Err(ConnectorError::new(
                                ErrorKind::Permanent,
                                code,
                                format!("the SMSC refused the SMS: {:?}", response.status()),
                            ));
                        }
                    }
                }
                Err(SmppError::NotSent) => {
                    // The bind stopped taking requests before this one (a write failed and it is
                    // reading what the SMSC sent before the break): never written, so the next
                    // bind takes it.
                    last_generation = Some(generation);
                }
                Err(error) => {
                    // Written (or possibly written) to the SMSC with no answer: it may have been
                    // taken. Never resend it blindly.
                    return Err(ConnectorError::new(
                        ErrorKind::Transient,
                        "",
                        format!("no answer from the SMSC: {error}"),
                    )
                    .maybe_submitted());
                }
            }
        }
    }
}

fn not_sent(message: &str) -> ConnectorError {
    ConnectorError::new(ErrorKind::Transient, "", message)
}

/// Waits until a bind other than `not_generation` is up, or the deadline passes.
async fn wait_for_session(
    inner: &Inner,
    deadline: Instant,
    not_generation: Option<u64>,
) -> Result<(u64, Client), ConnectorError> {
    let mut receiver = inner.session.subscribe();
    let waited = tokio::time::timeout_at(
        deadline,
        receiver.wait_for(|session| {
            session
                .as_ref()
                .is_some_and(|(generation, _)| Some(*generation) != not_generation)
        }),
    )
    .await;
    match waited {
        Ok(Ok(session)) => Ok(session.clone().expect("wait_for checked it is bound")),
        Ok(Err(_)) => Err(not_sent("the SMPP connector is closed")),
        Err(_) => Err(not_sent("no SMPP bind to the SMSC is up")),
    }
}

/// Waits for this submit's slot under the throughput limit.
async fn pace(inner: &Inner) {
    let Some(tps) = inner.settings.throughput else {
        return;
    };
    let interval = Duration::from_secs(1) / tps.max(1);
    let slot = {
        let mut next = inner.next_slot.lock().await;
        let slot = (*next).max(Instant::now());
        *next = slot + interval;
        slot
    };
    tokio::time::sleep_until(slot).await;
}

/// The source address and its TON/NPI: an alphanumeric sender ID is TON 5 (alphanumeric) NPI 0; a
/// number is international (TON 1, NPI 1 ISDN) without the `+`.
pub fn source_address(sender: &str) -> Result<(String, Ton, Npi), ConnectorError> {
    let sender = sender.trim();
    let digits = sender.strip_prefix('+').unwrap_or(sender);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && digits.len() <= 20 {
        return Ok((digits.to_owned(), Ton::International, Npi::Isdn));
    }
    if sender.is_empty() || sender.chars().count() > 11 || !sender.is_ascii() {
        return Err(ConnectorError::new(
            ErrorKind::Permanent,
            "",
            format!(
                "sender ID {sender:?} cannot be sent: use up to 11 letters and digits or a number"
            ),
        ));
    }
    Ok((sender.to_owned(), Ton::Alphanumeric, Npi::Unknown))
}

/// SMPP relative time (`YYMMDDhhmmss000R`, §7.1.1) for the validity left, so the SMSC gives up
/// when we would have. Rounded up to whole seconds (at least one); `None` (the SMSC's default)
/// beyond 30 days, which relative days cannot express without guessing month lengths.
pub fn relative_validity(left: std::time::Duration) -> Option<String> {
    let mut seconds = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    seconds = seconds.max(1);
    if seconds > 30 * 86_400 {
        return None;
    }
    let days = seconds / 86_400;
    seconds %= 86_400;
    let (hours, minutes, seconds) = (seconds / 3600, seconds % 3600 / 60, seconds % 60);
    Some(format!(
        "0000{days:02}{hours:02}{minutes:02}{seconds:02}000R"
    ))
}

/// Builds the submit_sm of every part.
fn submit_pdus(
    sms: &OutgoingSms,
    default_source: Option<&str>,
    reference: u8,
) -> Result<Vec<SubmitSm>, ConnectorError> {
    let split = email2sms_sms::split(&sms.text, reference)
        .map_err(|error| ConnectorError::new(ErrorKind::Permanent, "", error.to_string()))?;
    let (source, source_ton, source_npi) = match sms
        .sender_id
        .as_deref()
        .filter(|s| !s.is_empty())
        .or(default_source)
    {
        Some(sender) => source_address(sender)?,
        // The SMSC fills in its default for this bind.
        None => (String::new(), Ton::Unknown, Npi::Unknown),
    };
    let destination = sms.recipient.trim_start_matches('+');
    let invalid = |what: &str| {
        ConnectorError::new(ErrorKind::Permanent, "", format!("invalid {what} for SMPP"))
    };
    let validity = match sms.valid_until {
        Some(until) => {
            let left = (until - chrono::Utc::now()).to_std().map_err(|_| {
                ConnectorError::new(
                    ErrorKind::Permanent,
                    "",
                    "its validity period ended before it could be sent",
                )
            })?;
            relative_validity(left)
        }
        None => None,
    };
    let validity = match validity {
        Some(text) => {
            EmptyOrFullCOctetString::from_str(&text).map_err(|_| invalid("validity period"))?
        }
        None => EmptyOrFullCOctetString::empty(),
    };
    let data_coding = match split.encoding {
        email2sms_sms::Encoding::Gsm7 => DataCoding::McSpecific,
        email2sms_sms::Encoding::Ucs2 => DataCoding::Ucs2,
    };
    split
        .parts
        .iter()
        .map(|part| {
            let esm_class = EsmClass::from(if part.has_udh() {
                ESM_CLASS_DEFAULT | ESM_CLASS_UDHI
            } else {
                ESM_CLASS_DEFAULT
            });
            Ok(SubmitSm::builder()
                .service_type(ServiceType::default())
                .source_addr_ton(source_ton)
                .source_addr_npi(source_npi)
                .source_addr(
                    COctetString::from_str(&source).map_err(|_| invalid("source address"))?,
                )
                .dest_addr_ton(Ton::International)
                .dest_addr_npi(Npi::Isdn)
                .destination_addr(
                    COctetString::from_str(destination).map_err(|_| invalid("recipient"))?,
                )
                .esm_class(esm_class)
                .validity_period(validity.clone())
                // Final delivery receipt requested (success or failure).
                .registered_delivery(RegisteredDelivery::from(1u8))
                .data_coding(data_coding)
                .short_message(
                    OctetString::from_vec(part.smpp_short_message())
                        .map_err(|_| invalid("message part"))?,
                )
                .build())
        })
        .collect()
}

#[async_trait]
impl Connector for SmppConnector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn window(&self) -> Option<usize> {
        Some(self.inner.settings.window)
    }

    fn is_up(&self) -> bool {
        self.is_bound()
    }

    fn receipt_id_forms(&self) -> IdForms {
        self.inner.settings.receipt_ids.id_forms()
    }

    async fn submit(&self, sms: &OutgoingSms) -> Result<Submitted, ConnectorError> {
        let reference = (self.inner.reference.fetch_add(1, Ordering::Relaxed) % 256) as u8;
        let pdus = submit_pdus(
            sms,
            self.inner.settings.default_source.as_deref(),
            reference,
        )?;
        let mut ids = Vec::with_capacity(pdus.len());
        for pdu in &pdus {
            match self.submit_part(pdu).await {
                Ok(id) => ids.push(id),
                Err(mut error) => {
                    // Earlier parts were taken: resending the job would send them twice.
                    if !ids.is_empty() {
                        error.maybe_submitted = true;
                        error.message = format!(
                            "{} after {} of {} parts were accepted ({})",
                            error.message,
                            ids.len(),
                            pdus.len(),
                            ids.join(", ")
                        );
                    }
                    return Err(error);
                }
            }
        }
        Ok(Submitted {
            provider_message_ids: ids,
        })
    }

    async fn close(&self) {
        self.inner.closing.send_replace(true);
        // Wait for the supervisor to unbind; bounded so shutdown never hangs on a dead SMSC.
        let mut session = self.inner.session.subscribe();
        let _ = tokio::time::timeout(
            self.inner.settings.response_timeout,
            session.wait_for(Option::is_none),
        )
        .await;
    }
}

/// Keeps one bind up until the connector closes: connect, bind, serve events, and on loss reconnect
/// with exponential back-off (with jitter, so many dispatchers do not reconnect in step).
async fn supervise(inner: Arc<Inner>, receipts: ReceiptSink) {
    // Present (at 0) from the start, so "never bound" alerts like "bind lost".
    crate::metrics::metrics().smpp_bound.set(0);
    let mut backoff = inner.settings.reconnect_min;
    let mut closing = inner.closing.subscribe();
    loop {
        if *closing.borrow() {
            break;
        }
        match bind(&inner.settings).await {
            Ok((client, events)) => {
                backoff = inner.settings.reconnect_min;
                let generation = inner.generation.fetch_add(1, Ordering::SeqCst) + 1;
                tracing::info!(address = %inner.settings.address, generation, "SMPP transceiver bound");
                inner
                    .session
                    .send_replace(Some((generation, client.clone())));
                crate::metrics::metrics().smpp_bound.set(1);
                serve_session(&inner, &client, events, &receipts, &mut closing).await;
                crate::metrics::metrics().smpp_bound.set(0);
                inner.session.send_replace(None);
                let _ = client.close().await;
                tracing::warn!(address = %inner.settings.address, generation, "SMPP bind closed");
            }
            Err(error) => {
                tracing::warn!(address = %inner.settings.address, %error, "SMPP bind failed");
            }
        }
        if *closing.borrow() {
            break;
        }
        let jitter = backoff.mul_f64(rand::random::<f64>() * 0.25);
        tokio::select! {
            _ = tokio::time::sleep(backoff + jitter) => {}
            _ = closing.changed() => {}
        }
        backoff = (backoff * 2).min(inner.settings.reconnect_max);
    }
    inner.session.send_replace(None);
}

async fn bind(
    settings: &SmppSettings,
) -> Result<(Client, impl Stream<Item = Event> + Unpin + use<>), SmppError> {
    let (client, events) = ConnectionBuilder::new()
        .enquire_link_interval(settings.enquire_link_interval)
        .enquire_link_response_timeout(settings.response_timeout)
        .response_timeout(settings.response_timeout)
        // SMSCs speak 3.4 far more often than 5.0; the PDUs used here are the same in both.
        .disable_interface_version_check()
        .connect(format!("smpp://{}", settings.address))
        .await?;
    let invalid = |_| SmppError::Connect(std::io::Error::other("invalid bind credentials"));
    let bound = client
        .bind_transceiver(
            BindTransceiver::builder()
                .system_id(COctetString::from_str(&settings.system_id).map_err(invalid)?)
                .password(COctetString::from_str(&settings.password).map_err(invalid)?)
                .system_type(COctetString::from_str(&settings.system_type).map_err(invalid)?)
                .interface_version(InterfaceVersion::Smpp3_4)
                .addr_ton(Ton::Unknown)
                .addr_npi(Npi::Unknown)
                .address_range(COctetString::empty())
                .build(),
        )
        .await;
    if let Err(error) = bound {
        let _ = client.close().await;
        return Err(error);
    }
    Ok((client, events))
}

/// Serves one bind's incoming PDUs until it ends.
async fn serve_session(
    inner: &Arc<Inner>,
    client: &Client,
    mut events: impl Stream<Item = Event> + Unpin,
    receipts: &ReceiptSink,
    closing: &mut watch::Receiver<bool>,
) {
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = closing.changed() => {
                inner.session.send_replace(None);
                drain_window(inner).await;
                let _ = client.unbind().await;
                return;
            }
        };
        match event {
            None => return,
            Some(Event::Incoming(command)) => {
                if handle_incoming(inner, client, command, receipts).await {
                    return;
                }
            }
            Some(Event::Error(error)) => {
                tracing::warn!(%error, "SMPP connection error");
                if matches!(
                    error,
                    SmppError::ConnectionClosedByPeer
                        | SmppError::Io(_)
                        | SmppError::EnquireLinkTimeout { .. }
                ) || client.is_closed()
                {
                    return;
                }
            }
        }
    }
}

/// Waits (bounded by the response timeout) until no submit is awaiting its response.
async fn drain_window(inner: &Inner) {
    let deadline = Instant::now() + inner.settings.response_timeout;
    while inner.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Handles one PDU from the SMSC; true when the bind is ending.
async fn handle_incoming(
    inner: &Arc<Inner>,
    client: &Client,
    command: Command,
    receipts: &ReceiptSink,
) -> bool {
    let sequence_number = command.sequence_number();
    match command.pdu() {
        Some(Pdu::DeliverSm(deliver)) => {
            let deliver = deliver.clone();
            let (client, receipts) = (client.clone(), receipts.clone());
            let receipt_ids = inner.settings.receipt_ids;
            // Answered from a task so a slow database never stalls this bind's other PDUs.
            tokio::spawn(async move {
                let status = handle_deliver_sm(&deliver, receipt_ids, &receipts).await;
                let answered = client
                    .status(status)
                    .deliver_sm_resp(sequence_number, DeliverSmResp::default())
                    .await;
                if let Err(error) = answered {
                    // The receipt is recorded (or was refused): an SMSC that has no answer sends it
                    // again, on this bind or the next, and a repeat changes nothing.
                    tracing::warn!(%error, ?status, "cannot answer deliver_sm; the SMSC will send it again");
                }
            });
            false
        }
        Some(Pdu::Unbind) => {
            // The SMSC is closing the bind: take no new submits, let the in-flight ones finish,
            // then confirm. The supervisor binds again.
            inner.session.send_replace(None);
            drain_window(inner).await;
            let _ = client.unbind_resp(sequence_number).await;
            true
        }
        _ => false,
    }
}

/// Hands a receipt to dispatch and says how to answer the SMSC: OK once it is committed;
/// ESME_RX_T_APPDN (0x64, "temporary application error", which asks the SMSC to send it again
/// later) when it could not be recorded. Never OK for a receipt only held in memory.
async fn handle_deliver_sm(
    deliver: &DeliverSm,
    receipt_ids: ReceiptIds,
    receipts: &ReceiptSink,
) -> CommandStatus {
    // esm_class bits 2-5 = 0001: MC delivery receipt. Anything else is a mobile-originated SMS,
    // which this product does not take; it is acknowledged and dropped.
    let message_type = u8::from(deliver.esm_class) & 0b0011_1100;
    let text = String::from_utf8_lossy(deliver.short_message().as_ref()).into_owned();
    if message_type != 0b0000_0100 {
        tracing::debug!("mobile-originated SMS ignored");
        return CommandStatus::EsmeRok;
    }
    let Some((provider_message_id, status, error_code)) = parse_receipt_text(&text) else {
        // Not the text: a receipt's `text:` field quotes the start of the message.
        tracing::warn!(
            length = text.len(),
            "unreadable delivery receipt dropped (no id: or no known stat: field)"
        );
        return CommandStatus::EsmeRok;
    };
    let (recorded, was_recorded) = oneshot::channel();
    let delivery = ReceiptDelivery {
        receipt: DeliveryReceipt {
            connector: NAME.to_owned(),
            provider_message_id: receipt_ids.submit_form(&provider_message_id),
            status,
            error_code,
            raw: text,
            id_forms: receipt_ids.id_forms(),
        },
        recorded,
    };
    if receipts.send(delivery).await.is_err() {
        return CommandStatus::EsmeRxTAppn;
    }
    match was_recorded.await {
        Ok(true) => CommandStatus::EsmeRok,
        _ => CommandStatus::EsmeRxTAppn,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_left_as_smpp_relative_time() {
        let d = Duration::from_secs;
        assert_eq!(relative_validity(d(90)).unwrap(), "000000000130000R");
        assert_eq!(
            relative_validity(d(2 * 86_400 + 3 * 3600 + 4 * 60 + 5)).unwrap(),
            "000002030405000R"
        );
        // Rounded up, never zero: zero would mean "no time left" to some SMSCs.
        assert_eq!(
            relative_validity(Duration::from_millis(1)).unwrap(),
            "000000000001000R"
        );
        assert_eq!(
            relative_validity(Duration::from_millis(1500)).unwrap(),
            "000000000002000R"
        );
        assert!(relative_validity(d(31 * 86_400)).is_none());
    }

    #[test]
    fn settings_from_url() {
        let settings =
            SmppSettings::from_url("smpp://user:p%40ss@smsc.example:2775?window=50&tps=100")
                .unwrap();
        assert_eq!(settings.address, "smsc.example:2775");
        assert_eq!(settings.system_id, "user");
        assert_eq!(settings.password, "p@ss");
        assert_eq!(settings.window, 50);
        assert_eq!(settings.throughput, Some(100));
        assert!(SmppSettings::from_url("smpp://user@h:1?bogus=1").is_err());
        assert_eq!(settings.receipt_ids, ReceiptIds::Auto);
        let decimal = SmppSettings::from_url("smpp://user@h:1?receipt_ids=decimal").unwrap();
        assert_eq!(decimal.receipt_ids, ReceiptIds::Decimal);
        let error = SmppSettings::from_url("smpp://user@h:1?receipt_ids=octal").unwrap_err();
        assert!(error.contains("receipt_ids"), "{error}");
    }

    #[test]
    fn esm_class_is_default_or_udhi_alone() {
        let sms = OutgoingSms {
            job_id: uuid::Uuid::nil(),
            recipient: "+64211234567".into(),
            sender_id: None,
            text: "short".into(),
            valid_until: None,
        };
        let single = submit_pdus(&sms, None, 1).unwrap();
        assert_eq!(u8::from(single[0].esm_class), 0x00);
        let long = OutgoingSms {
            text: "long ".repeat(60),
            ..sms
        };
        let parts = submit_pdus(&long, None, 1).unwrap();
        assert!(parts.len() > 1);
        assert!(parts.iter().all(|part| u8::from(part.esm_class) == 0x40));
    }

    #[test]
    fn source_ton_npi() {
        assert_eq!(
            source_address("ACME").unwrap(),
            ("ACME".to_owned(), Ton::Alphanumeric, Npi::Unknown)
        );
        assert_eq!(
            source_address("+64211234567").unwrap(),
            ("64211234567".to_owned(), Ton::International, Npi::Isdn)
        );
        assert!(source_address("Twelve chars").is_err());
    }
}
