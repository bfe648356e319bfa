//! The errors of the ingest service and their mapping onto gRPC statuses.
//!
//! Causes are kept as values (`#[source]`), not formatted into strings: the log line of a
//! failure prints the whole chain ([`Chain`]), and the client sees only what it may know. The
//! conversion into [`Status`] is exhaustive (no wildcard arm), so a new variant cannot silently
//! become INTERNAL, and it goes through the builders every service shares
//! (`email2sms_runtime::grpc_error`).

use std::path::PathBuf;

use email2sms_proto::tonic::Status;
use email2sms_runtime::grpc_error::{self, Chain, INTERNAL_MESSAGE, Violation};
use rustls_pki_types::pem;
use tokio_rustls::rustls;

/// A cause of any type, for setup steps whose libraries each have their own error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why ingest cannot do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("cannot use the TLS certificate {path}")]
    TlsCertificate {
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    #[error("cannot use the TLS certificate {path}: no PEM CERTIFICATE block found")]
    TlsNoCertificate { path: PathBuf },
    #[error("cannot use the TLS private key {path}")]
    TlsKey {
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    #[error(
        "cannot use the TLS private key {path}: it does not fit the certificate or is unusable"
    )]
    TlsKeyUnusable {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("EMAIL2SMS_INGEST_TLS_CERT and EMAIL2SMS_INGEST_TLS_KEY must be set together")]
    TlsHalfConfigured,
    /// The setting named `what` cannot be used; `source` says why.
    #[error("{what}")]
    Setup {
        what: &'static str,
        #[source]
        source: BoxError,
    },
    /// Diagnose asked of an instance built without the decision pipeline (protocol tests).
    #[error("this instance runs without the decision pipeline")]
    NoPipeline,
    /// The policy service's answer is the source; Redis' problem is already in words (it is a
    /// summary of what the reader tried, not one error).
    #[error("neither Redis ({redis}) nor the policy service ({}) can resolve the sender", .grpc.message())]
    PolicyUnavailable {
        redis: String,
        #[source]
        grpc: tonic::Status,
    },
    #[error("RabbitMQ did not take the message")]
    Queue(#[from] email2sms_queue::QueueError),
    #[error("Redis failed")]
    Redis(#[from] redis::RedisError),
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
}

impl IngestError {
    /// The setting `what` is unusable because of `source`.
    pub fn setup(what: &'static str, source: impl Into<BoxError>) -> IngestError {
        IngestError::Setup {
            what,
            source: source.into(),
        }
    }

    /// The operator's sentence for a configuration failure: the causes, without the setting's
    /// name when the caller names it already (`ConfigError::Invalid` prints `name: reason`).
    pub fn reason(&self) -> String {
        match self {
            IngestError::Setup { source, .. } => Chain(source.as_ref()).to_string(),
            other => Chain(other).to_string(),
        }
    }
}

impl From<IngestError> for Status {
    fn from(error: IngestError) -> Self {
        match error {
            IngestError::InvalidArgument { field, ref reason } => {
                let message = error.to_string();
                grpc_error::bad_request(message, vec![Violation::without_reason(field, reason)])
            }
            IngestError::NoPipeline => Status::unimplemented(error.to_string()),
            IngestError::PolicyUnavailable { .. }
            | IngestError::Queue(_)
            | IngestError::Redis(_) => grpc_error::unavailable(
                "ingest dependency unavailable",
                &Chain(&error),
                "the sender rules or the job queue are unavailable; retry shortly",
            ),
            IngestError::TlsCertificate { .. }
            | IngestError::TlsNoCertificate { .. }
            | IngestError::TlsKey { .. }
            | IngestError::TlsKeyUnusable { .. }
            | IngestError::TlsHalfConfigured
            | IngestError::Setup { .. } => {
                grpc_error::internal("ingest setup error", &Chain(&error), INTERNAL_MESSAGE)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use email2sms_proto::tonic::Code;
    use tonic_types::StatusExt;

    #[test]
    fn an_invalid_field_is_a_bad_request_naming_it() {
        let status = Status::from(IngestError::InvalidArgument {
            field: "client_ip",
            reason: "write an IPv4 or IPv6 address".into(),
        });
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "client_ip: write an IPv4 or IPv6 address");
        let details = status.get_error_details();
        let bad = details.bad_request().expect("a BadRequest detail");
        assert_eq!(bad.field_violations[0].field, "client_ip");
    }

    #[test]
    fn an_unreachable_policy_is_unavailable_without_its_words_reaching_the_client() {
        let status = Status::from(IngestError::PolicyUnavailable {
            redis: "connection refused to 10.0.0.5:6379".into(),
            grpc: tonic::Status::unavailable("tcp connect error 10.0.0.6"),
        });
        assert_eq!(status.code(), Code::Unavailable);
        assert!(!status.message().contains("10.0.0."), "{status:?}");
    }

    #[test]
    fn a_setup_failure_keeps_its_cause_for_the_operator() {
        let cause = std::io::Error::other("no such file");
        let error = IngestError::setup("EMAIL2SMS_DNS_SERVERS", cause);
        assert_eq!(error.to_string(), "EMAIL2SMS_DNS_SERVERS");
        assert_eq!(error.reason(), "no such file");
        let status = Status::from(error);
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), INTERNAL_MESSAGE);
    }
}
