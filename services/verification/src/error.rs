//! The one error type of the verification service and its mapping onto gRPC statuses.
//!
//! The conversion into [`Status`] is exhaustive (no wildcard arm), so a new variant cannot
//! silently become INTERNAL. DNS failures are not errors here: they are check results, recorded
//! and shown to the customer.

use email2sms_proto::tonic::Status;
use email2sms_runtime::grpc_error::{self, Chain, INTERNAL_MESSAGE, describe};

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
    #[error("the verification store is unavailable")]
    StoreUnavailable(#[source] sqlx::Error),
    /// Postgres answered with an error nothing here expects; details go to the log, not the
    /// client.
    #[error("unexpected database error")]
    Database(#[source] sqlx::Error),
    /// A stored challenge's token no longer parses: the row was written by something other
    /// than this service (its tokens are parsed before they are stored), so a bug.
    #[error("the stored token of challenge {challenge} is invalid")]
    StoredToken {
        challenge: uuid::Uuid,
        #[source]
        source: email2sms_domain::TokenError,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        if grpc_error::sqlx_unavailable(&error) {
            Error::StoreUnavailable(error)
        } else {
            Error::Database(error)
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
            Error::StoreUnavailable(_) => grpc_error::unavailable(
                "verification store unavailable",
                &Chain(&error),
                "the verification store is unavailable; retry shortly",
            ),
            Error::Database(_) | Error::StoredToken { .. } => {
                grpc_error::internal("internal error", &Chain(&error), INTERNAL_MESSAGE)
            }
        }
    }
}
