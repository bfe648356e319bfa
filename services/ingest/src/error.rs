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
    #[error("{what}: {reason}")]
    Setup { what: &'static str, reason: String },
    #[error("neither Redis ({redis}) nor the policy service ({grpc}) can resolve the sender")]
    PolicyUnavailable { redis: String, grpc: String },
    #[error("RabbitMQ: {0}")]
    Queue(#[from] email2sms_queue::QueueError),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
}

impl From<IngestError> for email2sms_proto::tonic::Status {
    fn from(error: IngestError) -> Self {
        use email2sms_proto::tonic::Status;
        match error {
            IngestError::InvalidArgument { .. } => Status::invalid_argument(error.to_string()),
            IngestError::PolicyUnavailable { .. }
            | IngestError::Queue(_)
            | IngestError::Redis(_) => Status::unavailable(error.to_string()),
            IngestError::TlsCertificate { .. }
            | IngestError::TlsKey { .. }
            | IngestError::TlsHalfConfigured
            | IngestError::Setup { .. } => Status::internal(error.to_string()),
        }
    }
}
