//! The one error type of the policy service and its mapping onto gRPC statuses.
//!
//! Every handler returns [`Error`]; the conversion into [`tonic::Status`] is exhaustive (no
//! wildcard arm), so a new variant cannot silently become INTERNAL. Database errors are
//! classified by SQLSTATE and constraint name in [`From<sqlx::Error>`]: the schema enforces the
//! product's uniqueness and tenancy rules itself, and a constraint name is what tells us which
//! rule collided without ever reading (or leaking) the other company's row.

use email2sms_runtime::grpc_error::{self, INTERNAL_MESSAGE, describe};
use tonic::{Code, Status};

/// A problem with one request field, reported in a `google.rpc.BadRequest` detail.
pub use email2sms_runtime::grpc_error::Violation;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// One or more request fields are invalid.
    #[error("invalid request: {}", describe(.0))]
    InvalidArgument(Vec<Violation>),
    /// The resource does not exist for this company (or belongs to another one; the answer is the
    /// same so that ids of other companies reveal nothing).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A uniqueness rule collides; the message names the rule, never the other party.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is valid but the resource's state forbids it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The company spent a budget (of refusals over other companies' values, see `tenancy`).
    #[error("{0}")]
    ResourceExhausted(String),
    /// The request needs a part of the service that does not exist yet.
    #[error("{0}")]
    Unimplemented(&'static str),
    /// The verification service refused or failed a call made on the request's behalf.
    #[error("verification service: {}", .0.message())]
    Verification(tonic::Status),
    /// Postgres cannot be reached (ingest turns this into a 4xx).
    #[error("the policy store is unavailable: {0}")]
    Unavailable(String),
    /// A bug or an unexpected database failure; details go to the log, not the client.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A single invalid field.
    pub fn invalid(
        field: impl Into<String>,
        reason: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        Error::InvalidArgument(vec![Violation::new(field, reason, description)])
    }

    /// A required field left empty.
    pub fn required(field: &str) -> Self {
        Error::invalid(field, "REQUIRED", format!("{field} is required"))
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        match error {
            Error::InvalidArgument(violations) => {
                grpc_error::bad_request(describe(&violations), violations)
            }
            Error::NotFound(what) => Status::not_found(format!("{what} not found")),
            Error::AlreadyExists(rule) => Status::already_exists(rule),
            Error::FailedPrecondition(why) => Status::failed_precondition(why),
            Error::ResourceExhausted(why) => Status::resource_exhausted(why),
            Error::Unimplemented(what) => Status::unimplemented(what),
            Error::Verification(status) => match status.code() {
                Code::DeadlineExceeded => Status::deadline_exceeded(
                    "DNS did not answer in time; the domain's state is unchanged, try again",
                ),
                Code::InvalidArgument => Status::invalid_argument(status.message()),
                Code::NotFound => Status::failed_precondition(
                    "the domain has no verification challenge any more: rotate the token to start again",
                ),
                Code::AlreadyExists | Code::FailedPrecondition => {
                    Status::failed_precondition(status.message())
                }
                _ => {
                    tracing::warn!(status = ?status, "verification service call failed");
                    Status::unavailable("the verification service is unavailable; retry shortly")
                }
            },
            Error::Unavailable(why) => grpc_error::unavailable(
                "policy store unavailable",
                &why,
                "the policy store is unavailable; retry shortly",
            ),
            Error::Internal(why) => grpc_error::internal("internal error", &why, INTERNAL_MESSAGE),
        }
    }
}

/// A cross-company rule that a concurrent write of another company made this request hit after
/// the service's own check (`tenancy`) passed: the same neutral words as that check, without a
/// reference since nothing was recorded.
const NOT_AVAILABLE: &str = "the value is not available to this company: an email address, a verified domain and an IP range each route mail for one company only. If it is yours, ask the platform operator";

/// What a unique or exclusion constraint means, in words for the admin who hit it. Messages name
/// the rule only: the colliding row may belong to another company.
fn conflict_rule(constraint: &str) -> Option<&'static str> {
    Some(match constraint {
        "companies_pkey" | "companies_external_id_key" => "a company with this id already exists",
        "messenger_users_company_external_key" => {
            "a Messenger user with this external id already exists in this company"
        }
        "messenger_users_company_username_key" => {
            "another Messenger user of this company already has this username (usernames are compared case-insensitively)"
        }
        "domains_company_name_key" => "this domain is already registered in this company",
        "domains_verified_name_key" => NOT_AVAILABLE,
        "email_addresses_company_address_key" => {
            "this email address is already registered in this company"
        }
        "email_addresses_active_address_key"
        | "ip_addresses_network_key"
        | "ip_addresses_no_cross_company_overlap" => NOT_AVAILABLE,
        _ => return None,
    })
}

/// What a failed foreign key means: the referenced thing does not exist in this company.
fn foreign_key_violation(constraint: &str) -> Option<Violation> {
    let (field, description) = match constraint {
        "security_policies_default_forwarding_user_fk" => (
            "security_policy.default_forwarding_user_id",
            "no Messenger user with this id exists in this company",
        ),
        "domains_forwarding_user_fk"
        | "email_addresses_forwarding_user_fk"
        | "ip_addresses_forwarding_user_fk" => (
            "forwarding_user_id",
            "no Messenger user with this id exists in this company",
        ),
        "domains_policy_fk" | "email_addresses_policy_fk" | "ip_addresses_policy_fk" => (
            "security_policy_id",
            "no security policy of the right kind (Emails Sent From) with this id exists in this company",
        ),
        _ => return None,
    };
    Some(Violation::new(field, "NOT_FOUND_IN_COMPANY", description))
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Error {
        match &error {
            sqlx::Error::Database(db) => {
                let constraint = db.constraint().unwrap_or_default();
                match db.code().as_deref() {
                    // unique_violation, exclusion_violation
                    Some("23505") | Some("23P01") => match conflict_rule(constraint) {
                        Some(rule) => Error::AlreadyExists(rule.to_owned()),
                        None => Error::Internal(format!("unmapped conflict: {error}")),
                    },
                    // foreign_key_violation
                    Some("23503") => match foreign_key_violation(constraint) {
                        Some(violation) => Error::InvalidArgument(vec![violation]),
                        // A row still referenced (a user that forwards, a policy with entries):
                        // the caller must change those first.
                        None => Error::FailedPrecondition(
                            "the resource is still in use by other entries of this company".into(),
                        ),
                    },
                    // check_violation: input slipped past validation; say which rule.
                    Some("23514") => Error::invalid(
                        constraint.to_owned(),
                        "CONSTRAINT",
                        format!("the value breaks the rule {constraint}"),
                    ),
                    // serialization_failure, deadlock: the client may retry.
                    Some("40001") | Some("40P01") => {
                        Error::Unavailable(format!("concurrent update, retry: {error}"))
                    }
                    _ => Error::Internal(error.to_string()),
                }
            }
            _ if grpc_error::sqlx_unavailable(&error) => Error::Unavailable(error.to_string()),
            _ => Error::Internal(error.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::StatusExt;

    #[test]
    fn invalid_argument_carries_bad_request_field_violations() {
        let status = Status::from(Error::invalid("company_id", "REQUIRED", "needed"));
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let bad = details.bad_request().expect("a BadRequest detail");
        assert_eq!(bad.field_violations[0].field, "company_id");
        assert_eq!(bad.field_violations[0].reason, "REQUIRED");
    }

    #[test]
    fn conflict_messages_name_the_rule_not_the_company() {
        for name in [
            "email_addresses_active_address_key",
            "domains_verified_name_key",
            "ip_addresses_no_cross_company_overlap",
        ] {
            let rule = conflict_rule(name).expect("mapped");
            assert_eq!(
                rule, NOT_AVAILABLE,
                "one neutral answer for every cross-company rule"
            );
        }
    }
}
