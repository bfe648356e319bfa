//! The dispatch API's error type and how each error reaches a gRPC client.

use email2sms_queue::QueueError;
use email2sms_runtime::grpc_error::{self, describe};
use tonic::Status;

use crate::jobs::JobError;

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
    /// The message is not in a state the request applies to.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Recording a state change failed.
    #[error("{0}")]
    Jobs(#[from] JobError),
    /// RabbitMQ did not take the job.
    #[error("the job queue: {0}")]
    Queue(#[from] QueueError),
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        let message = error.to_string();
        match error {
            Error::InvalidArgument(violations) => grpc_error::bad_request(message, violations),
            Error::NotFound(_) => Status::not_found(message),
            Error::FailedPrecondition(_) => Status::failed_precondition(message),
            Error::Database(db) | Error::Jobs(JobError::Database(db)) => database_status(&db),
            Error::Jobs(JobError::Stopping) => grpc_error::unavailable(
                "dispatch stopping",
                &message,
                "dispatch is stopping; try again",
            ),
            Error::Jobs(JobError::BatchFailed(_)) => {
                grpc_error::internal("job store error", &message, "internal error")
            }
            Error::Queue(_) => grpc_error::unavailable(
                "job queue unavailable",
                &message,
                "the job queue is unavailable; nothing was changed, try again",
            ),
        }
    }
}

fn database_status(db: &sqlx::Error) -> Status {
    let message = format!("database: {db}");
    if grpc_error::sqlx_unavailable(db) {
        grpc_error::unavailable(
            "database unavailable",
            &message,
            "the message store is unavailable; try again",
        )
    } else {
        // Details stay in the log; the client gets no SQL.
        grpc_error::internal("database error", &message, "internal error")
    }
}
