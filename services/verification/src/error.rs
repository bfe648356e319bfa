//! The one error type of the verification service and its mapping onto gRPC statuses.
//!
//! The conversion into [`Status`] is exhaustive (no wildcard arm), so a new variant cannot
//! silently become INTERNAL. DNS failures are not errors here: they are check results, recorded
//! and shown to the customer.

use email2sms_proto::tonic::Status;
use email2sms_runtime::grpc_error::{self, INTERNAL_MESSAGE, describe};

/// A problem with one request field, reported in a `google.rpc.BadRequest` detail.
pub use email2sms_runtime::grpc_error::Violation;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// One or more request fields are invalid.
    #[error("invalid request: {}", describe(.0))]
    InvalidArgument(Vec<Violation>),
    /// No challenge for this (company, domain). A challenge of another company answers the same,
    /// so that no tenant learns whether another one is verifying a domain.
    #[error("no verification challenge for {domain} in this company; create one first")]
    ChallengeNotFound { domain: String },
    /// Postgres cannot be reached or timed out; the caller may retry.
    #[error("the verification store is unavailable: {0}")]
    StoreUnavailable(sqlx::Error),
    /// A bug or an unexpected database answer; details go to the log, not the client.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        if grpc_error::sqlx_unavailable(&error) {
            Error::StoreUnavailable(error)
        } else {
            Error::Internal(error.to_string())
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        match error {
            Error::InvalidArgument(violations) => {
                grpc_error::bad_request(describe(&violations), violations)
            }
            error @ Error::ChallengeNotFound { .. } => Status::not_found(error.to_string()),
            Error::StoreUnavailable(source) => grpc_error::unavailable(
                "verification store unavailable",
                &source,
                "the verification store is unavailable; retry shortly",
            ),
            Error::Internal(why) => grpc_error::internal("internal error", &why, INTERNAL_MESSAGE),
        }
    }
}
