//! The challenge and check vocabulary, as stored (lower-case text) and as sent (proto enums).

use chrono::{DateTime, Utc};
use email2sms_proto::verification::v1 as pb;
use uuid::Uuid;

/// Where a challenge stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Pending,
    Verified,
    Failed,
    Revoked,
}

impl State {
    pub fn as_db(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Verified => "verified",
            State::Failed => "failed",
            State::Revoked => "revoked",
        }
    }

    pub fn from_db(text: &str) -> Option<State> {
        Some(match text {
            "pending" => State::Pending,
            "verified" => State::Verified,
            "failed" => State::Failed,
            "revoked" => State::Revoked,
            _ => return None,
        })
    }

    pub fn to_proto(self) -> pb::VerificationState {
        match self {
            State::Pending => pb::VerificationState::Pending,
            State::Verified => pb::VerificationState::Verified,
            State::Failed => pb::VerificationState::Failed,
            State::Revoked => pb::VerificationState::Revoked,
        }
    }
}

/// What one check found, after comparing the DNS answer with the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Found,
    WrongValue,
    NoData,
    NxDomain,
    ServFail,
    Timeout,
    Refused,
    Error,
    /// The token is in the answer, but a random name under a parent of the names it came
    /// through answers with it too: a wildcard serves it, which proves nothing about this name.
    Wildcard,
    /// The token came through aliases under more parents than one check probes.
    TooManyAliases,
}

impl Outcome {
    /// Temporary outcomes say nothing about the customer's DNS: the state is kept and the check
    /// retried.
    pub fn is_temporary(self) -> bool {
        match self {
            Outcome::Found
            | Outcome::WrongValue
            | Outcome::NoData
            | Outcome::NxDomain
            | Outcome::Wildcard
            | Outcome::TooManyAliases => false,
            Outcome::ServFail | Outcome::Timeout | Outcome::Refused | Outcome::Error => true,
        }
    }

    pub fn as_db(self) -> &'static str {
        match self {
            Outcome::Found => "found",
            Outcome::WrongValue => "wrong_value",
            Outcome::NoData => "nodata",
            Outcome::NxDomain => "nxdomain",
            Outcome::ServFail => "servfail",
            Outcome::Timeout => "timeout",
            Outcome::Refused => "refused",
            Outcome::Error => "error",
            Outcome::Wildcard => "wildcard",
            Outcome::TooManyAliases => "too_many_aliases",
        }
    }

    pub fn from_db(text: &str) -> Option<Outcome> {
        Some(match text {
            "found" => Outcome::Found,
            "wrong_value" => Outcome::WrongValue,
            // `not_found` is in the first schema but never written; read it as NODATA.
            "nodata" | "not_found" => Outcome::NoData,
            "nxdomain" => Outcome::NxDomain,
            "servfail" => Outcome::ServFail,
            "timeout" => Outcome::Timeout,
            "refused" => Outcome::Refused,
            "error" => Outcome::Error,
            "wildcard" => Outcome::Wildcard,
            "too_many_aliases" => Outcome::TooManyAliases,
            _ => return None,
        })
    }

    pub fn to_proto(self) -> pb::CheckResult {
        match self {
            Outcome::Found => pb::CheckResult::TokenFound,
            Outcome::WrongValue => pb::CheckResult::TokenMismatch,
            Outcome::NoData => pb::CheckResult::NoTxtRecord,
            Outcome::NxDomain => pb::CheckResult::Nxdomain,
            Outcome::ServFail => pb::CheckResult::Servfail,
            Outcome::Timeout => pb::CheckResult::Timeout,
            Outcome::Refused => pb::CheckResult::Refused,
            Outcome::Error => pb::CheckResult::Error,
            Outcome::Wildcard => pb::CheckResult::Wildcard,
            Outcome::TooManyAliases => pb::CheckResult::TooManyAliases,
        }
    }
}

/// Why a check ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Created,
    Scheduled,
    OnDemand,
}

impl Trigger {
    pub fn as_db(self) -> &'static str {
        match self {
            Trigger::Created => "created",
            Trigger::Scheduled => "scheduled",
            Trigger::OnDemand => "on_demand",
        }
    }

    pub fn from_db(text: &str) -> Option<Trigger> {
        Some(match text {
            "created" => Trigger::Created,
            "scheduled" => Trigger::Scheduled,
            "on_demand" => Trigger::OnDemand,
            _ => return None,
        })
    }

    pub fn to_proto(self) -> pb::CheckTrigger {
        match self {
            Trigger::Created => pb::CheckTrigger::Created,
            Trigger::Scheduled => pb::CheckTrigger::Scheduled,
            Trigger::OnDemand => pb::CheckTrigger::OnDemand,
        }
    }
}

/// A row of `challenges`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChallengeRow {
    pub id: Uuid,
    pub company_id: Uuid,
    pub domain: String,
    pub token: String,
    pub state: String,
    pub reason: String,
    pub revision: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub pending_since: DateTime<Utc>,
    pub verified_at: Option<DateTime<Utc>>,
    pub last_checked_at: Option<DateTime<Utc>>,
    pub next_check_at: Option<DateTime<Utc>>,
    pub consecutive_failures: i32,
    pub missing_since: Option<DateTime<Utc>>,
    pub lease_owner: Option<String>,
}

/// The columns of [`ChallengeRow`], for `SELECT` and `RETURNING`.
pub const CHALLENGE_COLUMNS: &str = "id, company_id, domain, token, state, reason, revision, \
     created_at, updated_at, pending_since, verified_at, last_checked_at, next_check_at, \
     consecutive_failures, missing_since, lease_owner";

impl ChallengeRow {
    pub fn state(&self) -> State {
        // The CHECK constraint admits nothing else.
        State::from_db(&self.state).unwrap_or(State::Pending)
    }
}

/// A row of `checks`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CheckRow {
    pub id: i64,
    pub checked_at: DateTime<Utc>,
    pub outcome: String,
    pub temporary: bool,
    pub detail: String,
    pub values_found: Vec<String>,
    pub nameserver: Option<String>,
    pub duration_ms: Option<i32>,
    pub trigger: String,
    pub queried_name: String,
    pub cname_chain: Vec<String>,
    pub state_before: Option<String>,
    pub state_after: Option<String>,
    /// The random names asked to detect a wildcard, in order.
    pub probed_names: Vec<String>,
    /// The wildcard record that served the token (`*.example.com`), for a `wildcard` outcome.
    pub wildcard_name: Option<String>,
}

pub const CHECK_COLUMNS: &str = "id, checked_at, outcome, temporary, detail, values_found, \
     nameserver, duration_ms, trigger, queried_name, cname_chain, state_before, state_after, \
     probed_names, wildcard_name";

pub fn timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos() as i32,
    }
}

use email2sms_proto::prost_types;

impl CheckRow {
    pub fn to_proto(&self) -> pb::Check {
        let state = |text: &Option<String>| {
            text.as_deref()
                .and_then(State::from_db)
                .map_or(pb::VerificationState::Unspecified, State::to_proto) as i32
        };
        pb::Check {
            check_id: self.id.to_string(),
            check_time: Some(timestamp(self.checked_at)),
            trigger: Trigger::from_db(&self.trigger)
                .map_or(pb::CheckTrigger::Unspecified, Trigger::to_proto)
                as i32,
            result: Outcome::from_db(&self.outcome)
                .map_or(pb::CheckResult::Unspecified, Outcome::to_proto) as i32,
            temporary: self.temporary,
            queried_name: self.queried_name.clone(),
            cname_chain: self.cname_chain.clone(),
            txt_values: self.values_found.clone(),
            nameserver: self.nameserver.clone().unwrap_or_default(),
            duration: self.duration_ms.map(|ms| prost_types::Duration {
                seconds: i64::from(ms / 1000),
                nanos: (ms % 1000) * 1_000_000,
            }),
            message: self.detail.clone(),
            state_before: state(&self.state_before),
            state_after: state(&self.state_after),
            wildcard_probe_names: self.probed_names.clone(),
            wildcard_name: self.wildcard_name.clone().unwrap_or_default(),
        }
    }
}
