//! The local connectors: one JSON line per SMS on standard output or appended to a file, so the
//! whole path runs with nothing external.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;

use super::{Connector, ConnectorError, ErrorKind, OutgoingSms, Submitted};

/// One line of output.
#[derive(Debug, Serialize)]
pub struct SmsLine<'a> {
    pub job_id: String,
    pub recipient: &'a str,
    pub sender_id: Option<&'a str>,
    pub text: &'a str,
    pub encoding: &'static str,
    pub parts: usize,
}

#[derive(Debug)]
enum Sink {
    Stdout(tokio::io::Stdout),
    /// Appended to; every line is flushed and fsynced before the submit returns (see `write_line`).
    File {
        file: tokio::fs::File,
        path: PathBuf,
    },
}

/// Writes each SMS as a JSON line.
#[derive(Debug)]
pub struct JsonLinesConnector {
    name: &'static str,
    sink: Mutex<Sink>,
}

impl JsonLinesConnector {
    pub fn stdout() -> Self {
        JsonLinesConnector {
            name: "stdout",
            sink: Mutex::new(Sink::Stdout(tokio::io::stdout())),
        }
    }

    /// Opens (creating if needed) `path` for appending.
    pub async fn file(path: &Path) -> std::io::Result<Self> {
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await?;
        Ok(JsonLinesConnector {
            name: "file",
            sink: Mutex::new(Sink::File {
                file,
                path: path.to_owned(),
            }),
        })
    }
}

async fn write_all_flush(out: &mut (impl AsyncWrite + Unpin), line: &[u8]) -> std::io::Result<()> {
    out.write_all(line).await?;
    out.flush().await
}

#[async_trait]
impl Connector for JsonLinesConnector {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn submit(&self, sms: &OutgoingSms) -> Result<Submitted, ConnectorError> {
        let sized = email2sms_sms::encode(&sms.text);
        let line = SmsLine {
            job_id: sms.job_id.to_string(),
            recipient: &sms.recipient,
            sender_id: sms.sender_id.as_deref(),
            text: &sms.text,
            encoding: sized.encoding.as_str(),
            parts: sized.segments,
        };
        let mut bytes = serde_json::to_vec(&line).map_err(|error| {
            ConnectorError::new(ErrorKind::Permanent, "", format!("cannot encode: {error}"))
        })?;
        bytes.push(b'\n');
        // One lock for the whole line: concurrent submits never interleave their bytes.
        let mut sink = self.sink.lock().await;
        let written = match &mut *sink {
            Sink::Stdout(out) => write_all_flush(out, &bytes).await,
            // fsync per line, not per batch: "submitted" is recorded in Postgres right after this
            // returns, so the line must already be on disk, or a power cut would leave a job
            // marked submitted whose SMS is nowhere. Jobs arrive one by one from the queue, so
            // there is no batch to amortise over without delaying every job.
            Sink::File { file, .. } => match write_all_flush(file, &bytes).await {
                Ok(()) => file.sync_data().await,
                Err(error) => Err(error),
            },
        };
        written.map_err(|error| {
            let target = match &*sink {
                Sink::Stdout(_) => "standard output".to_owned(),
                Sink::File { path, .. } => path.display().to_string(),
            };
            // A failed write may have left part of the line behind; an operator checks the file.
            ConnectorError::new(
                ErrorKind::Transient,
                "",
                format!("cannot write the SMS to {target}: {error}"),
            )
            .maybe_submitted()
        })?;
        Ok(Submitted {
            provider_message_ids: vec![sms.job_id.simple().to_string()],
        })
    }
}
