//! The dispatch API's error type and how each error reaches a gRPC client.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// One problem with one request field, reported as a `google.rpc.BadRequest` field violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    pub field: String,
    pub description: String,
}

impl FieldProblem {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        FieldProblem {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Everything an RPC of this service can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is wrong; each field problem is listed.
    #[error("invalid request: {}", describe(.0))]
    InvalidArgument(Vec<FieldProblem>),
    /// No such message for this company (another company's message is not found either).
    #[error("{0} not found")]
    NotFound(String),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

fn describe(problems: &[FieldProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}: {}", p.field, p.description))
        .collect::<Vec<_>>()
        .join("; ")
}

/// True when the database could not be reached (worth retrying) rather than misbehaving.
fn database_unavailable(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_)
    )
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        let message = error.to_string();
        match error {
            Error::InvalidArgument(problems) => Status::with_error_details(
                Code::InvalidArgument,
                message,
                ErrorDetails::with_bad_request(
                    problems
                        .into_iter()
                        .map(|p| FieldViolation::new(p.field, p.description))
                        .collect::<Vec<_>>(),
                ),
            ),
            Error::NotFound(_) => Status::not_found(message),
            Error::Database(ref db) if database_unavailable(db) => {
                tracing::warn!(%message, "database unavailable");
                Status::unavailable("the message store is unavailable; try again")
            }
            Error::Database(_) => {
                // Details stay in the log; the client gets no SQL.
                tracing::error!(%message, "database error");
                Status::internal("internal error")
            }
        }
    }
}
