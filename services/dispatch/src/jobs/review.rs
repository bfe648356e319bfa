//! An operator settles a job held for review (`ResolveMessageReview`): only they can say whether
//! the SMSC took a job whose dispatcher died between claiming and recording it (SMPP 3.4 cannot be
//! asked about a message we have no id for). The caller's transaction has locked the row and seen
//! it in `needs_review`, so two resolutions of one job cannot both apply; the change goes into the
//! history and out as a status event in that same transaction. A resend is published by the
//! caller before the commit, while the row is still locked.

use sqlx::PgConnection;
use uuid::Uuid;

use super::JobError;
use super::store::apply_changes;
use super::transitions::review_change;

/// How a job held for review is settled (`ResolveMessageReview`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewResolution {
    /// The provider has it: submitted (with no message id, so no receipt completes it).
    Sent,
    /// The provider never got it and it is not to go: failed.
    NotSent,
    /// The provider never got it: queued again; the caller publishes it.
    Resend,
}

/// Settles a job held for review, inside the caller's transaction, which has locked its row and
/// seen it in `needs_review`: the change goes into its history and out as a status event. The
/// caller counts it once that transaction commits.
pub async fn resolve_review(
    conn: &mut PgConnection,
    job_id: Uuid,
    resolution: ReviewResolution,
    note: &str,
) -> Result<crate::metrics::Announced, JobError> {
    apply_changes(conn, &[review_change(job_id, resolution, note)]).await
}
