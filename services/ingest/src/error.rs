//! The errors of the ingest service.

use std::path::PathBuf;

/// Why ingest cannot do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("cannot use the TLS certificate {path}: {reason}")]
    TlsCertificate { path: PathBuf, reason: String },
    #[error("cannot use the TLS private key {path}: {reason}")]
    TlsKey { path: PathBuf, reason: String },
    #[error("EMAIL2SMS_INGEST_TLS_CERT and EMAIL2SMS_INGEST_TLS_KEY must be set together")]
    TlsHalfConfigured,
}
