//! How a command ends: one error enum, each variant with the exit code scripts can rely on.
//!
//! | code | meaning                                                                      |
//! |------|------------------------------------------------------------------------------|
//! | 0    | done                                                                         |
//! | 1    | the server refused (its message and every field violation are printed)       |
//! | 64   | usage: a bad flag, argument or environment value (sysexits `EX_USAGE`)       |
//! | 66   | an input file (CSV, token file) cannot be read (`EX_NOINPUT`)                |
//! | 69   | a service or RabbitMQ cannot be reached, or answered UNAVAILABLE             |
//! | 77   | the token is missing, unknown or of the wrong scope (`EX_NOPERM`)            |

use std::path::PathBuf;

use email2sms_proto::tonic::{Code, Status};
use serde_json::{Value, json};
use tonic_types::StatusExt;

pub const EX_OK: u8 = 0;
pub const EX_REFUSED: u8 = 1;
pub const EX_USAGE: u8 = 64;
pub const EX_NOINPUT: u8 = 66;
pub const EX_UNAVAILABLE: u8 = 69;
pub const EX_NOPERM: u8 = 77;

/// Everything that can end a command other than success.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line or environment is wrong in a way clap cannot see (e.g. a bad URL).
    #[error("{0}")]
    Usage(String),
    #[error("cannot read {path}: {source}")]
    Input {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot reach the {service} service at {url}: {}", chain(.source))]
    Unreachable {
        service: &'static str,
        url: String,
        #[source]
        source: email2sms_proto::tonic::transport::Error,
    },
    /// A gRPC call answered with an error status.
    #[error("{} ({}): {}", .rpc, code_name(.status.code()), .status.message())]
    Refused { rpc: &'static str, status: Status },
    #[error("cannot reach RabbitMQ: {}", chain(.0))]
    BrokerUnreachable(#[source] email2sms_queue::QueueError),
    #[error("{what}: {}", chain(.source))]
    Broker {
        what: String,
        #[source]
        source: email2sms_queue::QueueError,
    },
    /// A refusal of this command itself (nothing the server said), e.g. a dead letter not found.
    #[error("{0}")]
    Refusal(String),
}

impl CliError {
    /// The exit code, per the table in this module's documentation.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => EX_USAGE,
            CliError::Input { .. } => EX_NOINPUT,
            CliError::Unreachable { .. } | CliError::BrokerUnreachable(_) => EX_UNAVAILABLE,
            CliError::Refused { status, .. } => match status.code() {
                // tonic reports a connection that broke mid-call as UNAVAILABLE too.
                Code::Unavailable => EX_UNAVAILABLE,
                Code::Unauthenticated | Code::PermissionDenied => EX_NOPERM,
                _ => EX_REFUSED,
            },
            CliError::Broker { .. } | CliError::Refusal(_) => EX_REFUSED,
        }
    }

    /// `field: description` for each field violation of a BadRequest detail, in order.
    pub fn field_violations(&self) -> Vec<(String, String, String)> {
        let CliError::Refused { status, .. } = self else {
            return Vec::new();
        };
        status
            .get_details_bad_request()
            .map(|bad| {
                bad.field_violations
                    .into_iter()
                    .map(|v| (v.field, v.reason, v.description))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The error as scripts read it with `--json`.
    pub fn to_json(&self) -> Value {
        let code = match self {
            CliError::Refused { status, .. } => code_name(status.code()),
            _ => "",
        };
        json!({
            "error": {
                "exit_code": self.exit_code(),
                "grpc_code": code,
                "message": crate::output::sanitize(&self.to_string()),
                "field_violations": self.field_violations().into_iter().map(|(field, reason, description)| {
                    json!({"field": field, "reason": reason, "description": description})
                }).collect::<Vec<_>>(),
            }
        })
    }

    /// Prints the error: a sentence and the field violations on stderr, or JSON on stdout.
    pub fn report(&self, json: bool) {
        if json {
            println!("{}", self.to_json());
            return;
        }
        eprintln!("email2sms: {}", crate::output::sanitize(&self.to_string()));
        for (field, reason, description) in self.field_violations() {
            let reason = if reason.is_empty() {
                String::new()
            } else {
                format!(" [{reason}]")
            };
            eprintln!(
                "  {}: {}{}",
                crate::output::sanitize(&field),
                crate::output::sanitize(&description),
                crate::output::sanitize(&reason)
            );
        }
    }
}

/// An error and its causes, `outer: inner: innermost` (tonic's "transport error" alone says
/// nothing; its cause says "Connection refused").
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let next = inner.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = inner.source();
    }
    text
}

/// The gRPC code as its canonical upper-case name (what grpcurl and the proto comments say).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Turns a call's result into ours, naming the RPC in the message.
pub trait CallExt<T> {
    fn rpc(self, rpc: &'static str) -> Result<T, CliError>;
}

impl<T> CallExt<T> for Result<email2sms_proto::tonic::Response<T>, Status> {
    fn rpc(self, rpc: &'static str) -> Result<T, CliError> {
        self.map(email2sms_proto::tonic::Response::into_inner)
            .map_err(|status| CliError::Refused { rpc, status })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_documented_table() {
        let refused = |code| CliError::Refused {
            rpc: "GetCompany",
            status: Status::new(code, "x"),
        };
        assert_eq!(refused(Code::NotFound).exit_code(), 1);
        assert_eq!(refused(Code::InvalidArgument).exit_code(), 1);
        assert_eq!(refused(Code::Unavailable).exit_code(), 69);
        assert_eq!(refused(Code::Unauthenticated).exit_code(), 77);
        assert_eq!(refused(Code::PermissionDenied).exit_code(), 77);
        assert_eq!(CliError::Usage("x".into()).exit_code(), 64);
        assert_eq!(CliError::Refusal("x".into()).exit_code(), 1);
    }

    #[test]
    fn field_violations_are_read_from_the_bad_request_detail() {
        let status = email2sms_runtime::grpc_error::bad_request(
            "invalid company",
            vec![email2sms_runtime::grpc_error::Violation::new(
                "company.default_region",
                "REGION_UNKNOWN",
                "not a region",
            )],
        );
        let error = CliError::Refused {
            rpc: "UpsertCompany",
            status,
        };
        assert_eq!(
            error.field_violations(),
            vec![(
                "company.default_region".to_owned(),
                "REGION_UNKNOWN".to_owned(),
                "not a region".to_owned()
            )]
        );
        let json = error.to_json();
        assert_eq!(json["error"]["grpc_code"], "INVALID_ARGUMENT");
        assert_eq!(
            json["error"]["field_violations"][0]["field"],
            "company.default_region"
        );
    }
}
