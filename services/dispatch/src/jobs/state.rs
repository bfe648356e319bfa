//! The job states and failure kinds as the dispatch schema stores them. The schema's CHECK
//! constraints list the same values; `tests/schema_invariants.rs` compares them with [`JobState::ALL`]
//! and [`STORED_FAILURE_KINDS`], so a state added on one side only fails a test, not a write.

use email2sms_proto::queue::v1::{FailureKind, SmsState};

/// The job states as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    Queued,
    Submitting,
    Submitted,
    Delivered,
    Failed,
    Expired,
    NeedsReview,
}

impl JobState {
    /// Every state, in the order a job may pass them.
    pub const ALL: [JobState; 7] = [
        JobState::Queued,
        JobState::Submitting,
        JobState::Submitted,
        JobState::Delivered,
        JobState::Failed,
        JobState::Expired,
        JobState::NeedsReview,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Submitting => "submitting",
            JobState::Submitted => "submitted",
            JobState::Delivered => "delivered",
            JobState::Failed => "failed",
            JobState::Expired => "expired",
            JobState::NeedsReview => "needs_review",
        }
    }

    pub fn parse(text: &str) -> Option<JobState> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
    }

    /// The public state; a job under review is shown as SUBMITTING with `needs_review` set, since
    /// that is the last thing known about it.
    pub fn proto(self) -> SmsState {
        match self {
            JobState::Queued => SmsState::Queued,
            JobState::Submitting | JobState::NeedsReview => SmsState::Submitting,
            JobState::Submitted => SmsState::Submitted,
            JobState::Delivered => SmsState::Delivered,
            JobState::Failed => SmsState::Failed,
            JobState::Expired => SmsState::Expired,
        }
    }

    /// The stored states a public state covers (SUBMITTING includes jobs under review, as they are
    /// shown as SUBMITTING): those whose [`JobState::proto`] it is.
    pub fn showing_as(public: SmsState) -> Vec<JobState> {
        JobState::ALL
            .into_iter()
            .filter(|state| state.proto() == public)
            .collect()
    }

    /// No change follows (a late receipt changes nothing either).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Delivered | JobState::Failed | JobState::Expired
        )
    }
}

/// The failure kinds a job row stores (`failure_kind`); `Unspecified` is stored as NULL.
pub const STORED_FAILURE_KINDS: [FailureKind; 3] = [
    FailureKind::Transient,
    FailureKind::Permanent,
    FailureKind::Throttled,
];

/// `failure_kind` as stored; `None` (NULL) for no failure.
pub fn stored_failure_kind(kind: FailureKind) -> Option<&'static str> {
    match kind {
        FailureKind::Unspecified => None,
        FailureKind::Transient => Some("transient"),
        FailureKind::Permanent => Some("permanent"),
        FailureKind::Throttled => Some("throttled"),
    }
}

/// A stored `failure_kind` read back; NULL or an unknown value is `Unspecified`.
pub fn failure_kind_from_stored(stored: Option<&str>) -> FailureKind {
    STORED_FAILURE_KINDS
        .into_iter()
        .find(|kind| stored_failure_kind(*kind) == stored && stored.is_some())
        .unwrap_or(FailureKind::Unspecified)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_reads_back_as_itself_and_nothing_else_is_a_state() {
        for state in JobState::ALL {
            assert_eq!(JobState::parse(state.as_str()), Some(state));
        }
        assert_eq!(JobState::parse("sent"), None);
        assert_eq!(JobState::parse("Queued"), None);
    }

    #[test]
    fn a_public_state_filter_covers_the_states_shown_as_it() {
        assert_eq!(
            JobState::showing_as(SmsState::Submitting),
            [JobState::Submitting, JobState::NeedsReview]
        );
        assert_eq!(JobState::showing_as(SmsState::Queued), [JobState::Queued]);
        assert!(JobState::showing_as(SmsState::Unspecified).is_empty());
    }

    #[test]
    fn failure_kinds_read_back_as_stored() {
        for kind in STORED_FAILURE_KINDS {
            assert_eq!(failure_kind_from_stored(stored_failure_kind(kind)), kind);
        }
        assert_eq!(failure_kind_from_stored(None), FailureKind::Unspecified);
        assert_eq!(
            failure_kind_from_stored(Some("mystery")),
            FailureKind::Unspecified
        );
    }
}
