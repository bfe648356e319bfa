//! SMS connectors: where a job's text goes. One trait, chosen by `EMAIL2SMS_SMS_CONNECTOR`.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::ConnectorSetting;

pub mod http;
pub mod jsonl;
pub mod receipt;
pub mod smpp;

pub use receipt::{DeliveryReceipt, IdForms, ReceiptStatus};

/// One SMS as handed to a connector. The connector splits the text into parts itself, because how
/// parts are carried (UDH in SMPP, one body in HTTP) is the connector's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingSms {
    pub job_id: Uuid,
    /// E.164 with the leading `+`.
    pub recipient: String,
    /// Alphanumeric sender ID or a number; `None` means the connector's default.
    pub sender_id: Option<String>,
    pub text: String,
    /// After this the SMS is worthless: connectors that can tell the provider (SMPP
    /// validity_period) pass the time left, so the SMSC stops retrying it too.
    pub valid_until: Option<chrono::DateTime<chrono::Utc>>,
}

/// The connector accepted the SMS: one provider message id per part, in part order (a connector
/// that takes the whole text in one request reports one id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    pub provider_message_ids: Vec<String>,
}

/// What a failure means for the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Worth retrying later (connection lost before sending, SMSC system error, HTTP 5xx).
    Transient,
    /// The provider asked to slow down: retried later without counting as a failed attempt.
    Throttled,
    /// Retrying cannot help (invalid number, text refused).
    Permanent,
}

/// A failed submit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorError {
    pub kind: ErrorKind,
    /// The provider's code, e.g. SMPP `0x0000000b` or HTTP `429`; empty when there is none.
    pub code: String,
    /// A sentence for support.
    pub message: String,
    /// True when the provider may have accepted (part of) the SMS although we got no answer: a
    /// request written before the connection died, or a long message whose first parts were
    /// accepted. Resending could deliver it twice, so the job is not resent blindly.
    pub maybe_submitted: bool,
}

impl ConnectorError {
    pub fn new(kind: ErrorKind, code: impl Into<String>, message: impl Into<String>) -> Self {
        ConnectorError {
            kind,
            code: code.into(),
            message: message.into(),
            maybe_submitted: false,
        }
    }

    pub fn maybe_submitted(mut self) -> Self {
        self.maybe_submitted = true;
        self
    }
}

impl fmt::Display for ConnectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.code.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{} ({})", self.message, self.code)
        }
    }
}

impl std::error::Error for ConnectorError {}

/// A delivery receipt handed to dispatch, with the channel on which dispatch says whether it was
/// recorded. The SMPP connector answers the SMSC's deliver_sm only after that, so a receipt is
/// never acknowledged and then lost.
#[derive(Debug)]
pub struct ReceiptDelivery {
    pub receipt: DeliveryReceipt,
    pub recorded: oneshot::Sender<bool>,
}

/// Where connectors send the receipts they receive.
pub type ReceiptSink = mpsc::Sender<ReceiptDelivery>;

/// An SMS connector.
#[async_trait]
pub trait Connector: Send + Sync + fmt::Debug {
    /// The connector's name as recorded with every job and receipt (`stdout`, `file`, `smpp`,
    /// `http`); receipts are matched by (name, provider message id).
    fn name(&self) -> &'static str;

    /// Submits the connector keeps in flight at most (the SMPP window), when it has such a limit.
    fn window(&self) -> Option<usize> {
        None
    }

    /// Whether it can send now (the SMPP transceiver is bound): what dispatch's `readiness`
    /// reports. A connector without a session to lose always can.
    fn is_up(&self) -> bool {
        true
    }

    /// Under which forms its receipts name the provider message ids its submits returned.
    fn receipt_id_forms(&self) -> IdForms {
        IdForms::AsGiven
    }

    /// Hands one SMS to the provider. Returns once the provider accepted or refused every part.
    async fn submit(&self, sms: &OutgoingSms) -> Result<Submitted, ConnectorError>;

    /// Stops taking new submits and closes the provider connection (after in-flight submits).
    async fn close(&self) {}
}

/// Builds the configured connector. Receipts (SMPP deliver_sm) go to `receipts`; `http_token` is
/// the HTTP connector's bearer token.
pub async fn build(
    setting: &ConnectorSetting,
    http_token: Option<&str>,
    receipts: ReceiptSink,
) -> Result<Arc<dyn Connector>, ConnectorBuildError> {
    Ok(match setting {
        ConnectorSetting::Stdout => Arc::new(jsonl::JsonLinesConnector::stdout()),
        ConnectorSetting::File(path) => Arc::new(
            jsonl::JsonLinesConnector::file(path)
                .await
                .map_err(|error| ConnectorBuildError(format!("{}: {error}", path.display())))?,
        ),
        ConnectorSetting::Http(url) => Arc::new(
            http::HttpConnector::new(url, http_token)
                .map_err(|e| ConnectorBuildError(e.to_string()))?,
        ),
        ConnectorSetting::Smpp(url) => {
            let settings = smpp::SmppSettings::from_url(url).map_err(ConnectorBuildError)?;
            Arc::new(smpp::SmppConnector::start(settings, receipts))
        }
    })
}

/// The connector could not be set up (bad settings, file not writable).
#[derive(Debug, thiserror::Error)]
#[error("EMAIL2SMS_SMS_CONNECTOR: {0}")]
pub struct ConnectorBuildError(pub String);
