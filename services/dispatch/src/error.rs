//! The dispatch API's error type and how each error reaches a gRPC client.

use email2sms_runtime::grpc_error::{self, describe};
use tonic::Status;

/// One problem with one request field, reported as a `google.rpc.BadRequest` field violation
/// (this service gives no reason codes: build them with [`Violation::without_reason`]).
pub use email2sms_runtime::grpc_error::Violation;

/// Everything an RPC of this service can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is wrong; each field problem is listed.
    #[error("invalid request: {}", describe(.0))]
    InvalidArgument(Vec<Violation>),
    /// No such message for this company (another company's message is not found either).
    #[error("{0} not found")]
    NotFound(String),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        let message = error.to_string();
        match error {
            Error::InvalidArgument(violations) => grpc_error::bad_request(message, violations),
            Error::NotFound(_) => Status::not_found(message),
            Error::Database(ref db) if grpc_error::sqlx_unavailable(db) => grpc_error::unavailable(
                "database unavailable",
                &message,
                "the message store is unavailable; try again",
            ),
            // Details stay in the log; the client gets no SQL.
            Error::Database(_) => {
                grpc_error::internal("database error", &message, "internal error")
            }
        }
    }
}
