//! The one error type of the verification service and its mapping onto gRPC statuses.
//!
//! The conversion into [`Status`] is exhaustive (no wildcard arm), so a new variant cannot
//! silently become INTERNAL. DNS failures are not errors here: they are check results, recorded
//! and shown to the customer.

use email2sms_proto::tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// A problem with one request field, reported in a `google.rpc.BadRequest` detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The request field, e.g. `domain_name`.
    pub field: &'static str,
    /// Stable SCREAMING_SNAKE_CASE reason, e.g. `DOMAIN_WILDCARD`.
    pub reason: &'static str,
    /// A sentence for the admin.
    pub description: String,
}

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

fn describe(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => Error::StoreUnavailable(error),
            other => Error::Internal(other.to_string()),
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        match error {
            Error::InvalidArgument(violations) => {
                let message = describe(&violations);
                let details = ErrorDetails::with_bad_request(
                    violations
                        .into_iter()
                        .map(|v| {
                            let mut violation = FieldViolation::new(v.field, v.description);
                            violation.reason = v.reason.to_owned();
                            violation
                        })
                        .collect::<Vec<_>>(),
                );
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            error @ Error::ChallengeNotFound { .. } => Status::not_found(error.to_string()),
            Error::StoreUnavailable(source) => {
                tracing::warn!(error = %source, "verification store unavailable");
                Status::unavailable("the verification store is unavailable; retry shortly")
            }
            Error::Internal(why) => {
                tracing::error!(error = %why, "internal error");
                Status::internal("internal error; the details are in the server log")
            }
        }
    }
}
