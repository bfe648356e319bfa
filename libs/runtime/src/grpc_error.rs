//! Building blocks every service's `From<Error> for tonic::Status` shares: field violations
//! reported as a `google.rpc.BadRequest` detail, and the UNAVAILABLE/INTERNAL answers for store
//! failures whose cause goes to the log rather than to the client.
//!
//! Each service keeps its own error enum and its own exhaustive conversion into [`Status`]; these
//! are only the pieces those conversions have in common.

use std::fmt::Display;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// What INTERNAL answers tell the client by default: the details are only in the log.
pub const INTERNAL_MESSAGE: &str = "internal error; the details are in the server log";

/// A problem with one request field, reported in a `google.rpc.BadRequest` detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Dotted path of the field in the request, e.g. `email_address.email_address`.
    pub field: String,
    /// Stable SCREAMING_SNAKE_CASE reason, e.g. `EMAIL_MULTIPLE_AT`; empty where a service
    /// gives none.
    pub reason: String,
    /// A sentence for the admin.
    pub description: String,
}

impl Violation {
    pub fn new(
        field: impl Into<String>,
        reason: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
            description: description.into(),
        }
    }

    /// A violation without a machine-readable reason (the detail's `reason` stays empty).
    pub fn without_reason(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::new(field, String::new(), description)
    }
}

/// The violations in words: `field: description` for each, joined by `; `.
pub fn describe(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

/// INVALID_ARGUMENT with `message` and a `google.rpc.BadRequest` detail listing `violations` in
/// order.
pub fn bad_request(message: impl Into<String>, violations: Vec<Violation>) -> Status {
    let details = ErrorDetails::with_bad_request(
        violations
            .into_iter()
            .map(|v| {
                let mut violation = FieldViolation::new(v.field, v.description);
                violation.reason = v.reason;
                violation
            })
            .collect::<Vec<_>>(),
    );
    Status::with_error_details(Code::InvalidArgument, message.into(), details)
}

/// True when the database could not be reached (the pool timed out or is closed, the connection
/// or its TLS handshake failed, or its worker died): worth retrying, unlike a database that
/// answered with an error.
pub fn sqlx_unavailable(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed
    )
}

/// An error and its `source()` chain in one line, `outer: cause: root cause`: what the log of an
/// UNAVAILABLE or INTERNAL answer shows, so that errors keep their causes as values (`#[source]`)
/// instead of formatting them into strings, and the log still reads all of them.
#[derive(Debug)]
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'a));

impl Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            write!(f, ": {error}")?;
            cause = error.source();
        }
        Ok(())
    }
}

/// UNAVAILABLE telling the client `message`; `cause` is logged at WARN as `log`.
pub fn unavailable(log: &str, cause: &dyn Display, message: impl Into<String>) -> Status {
    tracing::warn!(error = %cause, "{log}");
    Status::unavailable(message)
}

/// INTERNAL telling the client `message` and nothing of `cause`, which is logged at ERROR as
/// `log`.
pub fn internal(log: &str, cause: &dyn Display, message: impl Into<String>) -> Status {
    tracing::error!(error = %cause, "{log}");
    Status::internal(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_lists_each_field_with_its_description() {
        let violations = [
            Violation::new("company_id", "REQUIRED", "company_id is required"),
            Violation::without_reason("page_size", "must not be negative"),
        ];
        assert_eq!(
            describe(&violations),
            "company_id: company_id is required; page_size: must not be negative"
        );
        assert_eq!(describe(&[]), "");
    }

    #[test]
    fn bad_request_carries_every_field_violation_in_order() {
        let status = bad_request(
            "the message",
            vec![
                Violation::new("company_id", "REQUIRED", "needed"),
                Violation::without_reason("end_time", "must be after start_time"),
            ],
        );
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "the message");
        let details = status.get_error_details();
        let bad = details.bad_request().expect("a BadRequest detail");
        let fields: Vec<_> = bad
            .field_violations
            .iter()
            .map(|v| (v.field.as_str(), v.reason.as_str(), v.description.as_str()))
            .collect();
        assert_eq!(
            fields,
            [
                ("company_id", "REQUIRED", "needed"),
                ("end_time", "", "must be after start_time"),
            ]
        );
    }

    #[test]
    fn a_violation_without_reason_encodes_like_a_plain_field_violation() {
        let ours = bad_request("m", vec![Violation::without_reason("f", "d")]);
        let plain = Status::with_error_details(
            Code::InvalidArgument,
            "m",
            ErrorDetails::with_bad_request(vec![FieldViolation::new("f", "d")]),
        );
        assert_eq!(ours.details(), plain.details());
    }

    #[test]
    fn unreachable_databases_are_unavailable_and_answers_are_not() {
        for error in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
            sqlx::Error::Tls("handshake failed".into()),
            sqlx::Error::WorkerCrashed,
        ] {
            assert!(sqlx_unavailable(&error), "{error:?}");
        }
        for error in [
            sqlx::Error::RowNotFound,
            sqlx::Error::Protocol("unexpected message".into()),
            sqlx::Error::ColumnNotFound("id".into()),
        ] {
            assert!(!sqlx_unavailable(&error), "{error:?}");
        }
    }

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("the store is unavailable")]
        Store(#[source] Middle),
    }

    #[derive(Debug, thiserror::Error)]
    #[error("the pool gave up")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn a_chain_shows_the_error_and_every_cause_in_order() {
        let error = Outer::Store(Middle(std::io::Error::other("connection refused")));
        assert_eq!(
            Chain(&error).to_string(),
            "the store is unavailable: the pool gave up: connection refused"
        );
        let alone = Middle(std::io::Error::other("x"));
        assert_eq!(Chain(&alone.0).to_string(), "x");
    }

    #[test]
    fn store_failures_keep_their_cause_from_the_client() {
        let cause = "connection refused to 10.0.0.5";
        let status = unavailable(
            "store unavailable",
            &cause,
            "the store is unavailable; retry",
        );
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), "the store is unavailable; retry");
        let status = internal("internal error", &cause, INTERNAL_MESSAGE);
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), INTERNAL_MESSAGE);
        assert!(!status.message().contains("10.0.0.5"));
    }
}
