//! The HTTP connector: POSTs one JSON body per SMS to a provider's URL with a bearer token.
//!
//! Configured as `https://token@host/path` (the URL's user part is the bearer token, so it can stay
//! in the one secret setting) or with the token in `EMAIL2SMS_SMS_HTTP_TOKEN`. 2xx means accepted;
//! 429 and 5xx are transient (429 counts as throttling); other 4xx are permanent. Every request
//! carries the job id as `Idempotency-Key`, so a provider that honours it drops a resent job.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Connector, ConnectorError, ErrorKind, OutgoingSms, Submitted};

/// The request body.
#[derive(Debug, Serialize)]
struct HttpSms<'a> {
    job_id: String,
    to: &'a str,
    from: Option<&'a str>,
    text: &'a str,
    encoding: &'static str,
    parts: usize,
}

/// What the provider may answer; every field optional.
#[derive(Debug, Default, Deserialize)]
struct HttpSmsResponse {
    #[serde(default)]
    message_id: Option<String>,
    #[serde(default)]
    message_ids: Option<Vec<String>>,
}

#[derive(Debug)]
pub struct HttpConnector {
    client: reqwest::Client,
    url: reqwest::Url,
    token: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum HttpSetupError {
    #[error("not a valid URL: {0}")]
    Url(#[from] url::ParseError),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

impl HttpConnector {
    /// `token` (from `EMAIL2SMS_SMS_HTTP_TOKEN`) wins over a token in the URL's user part.
    pub fn new(text: &str, token: Option<&str>) -> Result<Self, HttpSetupError> {
        let mut url = reqwest::Url::parse(text)?;
        let token = token
            .map(str::to_owned)
            .or_else(|| (!url.username().is_empty()).then(|| url.username().to_owned()))
            .filter(|t| !t.is_empty());
        // The token must not travel as URL userinfo (basic auth) too.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        // reqwest is built without a default crypto provider so that only ring is linked; install
        // it once (an error means some other part of the process already installed one).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(HttpConnector { client, url, token })
    }
}

#[async_trait]
impl Connector for HttpConnector {
    fn name(&self) -> &'static str {
        "http"
    }

    async fn submit(&self, sms: &OutgoingSms) -> Result<Submitted, ConnectorError> {
        let sized = email2sms_sms::encode(&sms.text);
        let body = HttpSms {
            job_id: sms.job_id.to_string(),
            to: &sms.recipient,
            from: sms.sender_id.as_deref(),
            text: &sms.text,
            encoding: sized.encoding.as_str(),
            parts: sized.segments,
        };
        let mut request = self
            .client
            .post(self.url.clone())
            .header("Idempotency-Key", sms.job_id.to_string())
            .json(&body);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|error| {
            // Once the request was (possibly) written, the provider may have taken it: a timeout
            // or a dropped connection after connecting is ambiguous. A connect error is not.
            let failed = ConnectorError::new(
                ErrorKind::Transient,
                "",
                format!("the SMS provider did not answer: {error}"),
            );
            if error.is_connect() {
                failed
            } else {
                failed.maybe_submitted()
            }
        })?;
        let status = response.status();
        let code = status.as_u16().to_string();
        if status.is_success() {
            let parsed: HttpSmsResponse = response.json().await.unwrap_or_default();
            let ids = parsed
                .message_ids
                .filter(|ids| !ids.is_empty())
                .or_else(|| parsed.message_id.map(|id| vec![id]))
                // A provider that returns no id: the job id is what it was given.
                .unwrap_or_else(|| vec![sms.job_id.simple().to_string()]);
            return Ok(Submitted {
                provider_message_ids: ids,
            });
        }
        let detail = response.text().await.unwrap_or_default();
        let detail: String = detail.chars().take(200).collect();
        let kind = if status.as_u16() == 429 {
            ErrorKind::Throttled
        } else if status.is_server_error() {
            ErrorKind::Transient
        } else {
            ErrorKind::Permanent
        };
        Err(ConnectorError::new(
            kind,
            format!("http {code}"),
            format!("the SMS provider answered {status}: {detail}"),
        ))
    }
}
