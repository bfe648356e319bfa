//! Challenges and checks: the store, the DNS lookups and the rules put together. The gRPC API and
//! the scheduler are thin layers over [`Verifier`].
//!
//! Every state change and its `domain.verification.changed` outbox row commit in one
//! transaction. DNS lookups happen outside any transaction (no row is locked while waiting on the
//! network); the answer is then applied under a lock on every challenge of the domain, so that
//! two companies verifying one domain at the same moment are decided one after the other.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use email2sms_domain::{DomainName, VerificationToken};
use email2sms_proto::verification::v1 as pb;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{Notify, Semaphore};
use uuid::Uuid;

use crate::dns::{TxtAnswer, TxtLookup, TxtResolver};
use crate::error::{Error, Result, Violation};
use crate::model::{
    CHALLENGE_COLUMNS, CHECK_COLUMNS, ChallengeRow, CheckRow, State, Trigger, timestamp,
};
use crate::outbox;
use crate::rules::{self, Decision, Facts, Holder, Presence, Rules};
use crate::settings::VerificationArgs;

/// Checks returned by GetStatus when the request does not say.
pub const DEFAULT_CHECK_HISTORY: u32 = 10;
/// Most checks GetStatus returns.
pub const MAX_CHECK_HISTORY: u32 = 100;

/// The natural key of a challenge, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeKey {
    pub company_id: Uuid,
    pub domain: DomainName,
}

impl ChallengeKey {
    /// Validates both request fields, reporting every problem at once.
    pub fn parse(company_id: &str, domain_name: &str) -> Result<ChallengeKey> {
        let mut violations = Vec::new();
        let company = match company_id.trim() {
            "" => {
                violations.push(Violation::new(
                    "company_id",
                    "REQUIRED",
                    "company_id is required",
                ));
                None
            }
            text => match Uuid::parse_str(text) {
                Ok(id) => Some(id),
                Err(_) => {
                    violations.push(Violation::new(
                        "company_id",
                        "COMPANY_ID_NOT_UUID",
                        format!(
                            "{text:?} is not a company id; company ids are UUIDs such as 3f2504e0-4f89-41d3-9a0c-0305e82c3301"
                        ),
                    ));
                    None
                }
            },
        };
        let domain = if domain_name.is_empty() {
            violations.push(Violation::new(
                "domain_name",
                "REQUIRED",
                "domain_name is required, e.g. example.com",
            ));
            None
        } else {
            match DomainName::parse(domain_name) {
                Ok(domain) => Some(domain),
                Err(error) => {
                    violations.push(Violation::new(
                        "domain_name",
                        error.code(),
                        error.to_string(),
                    ));
                    None
                }
            }
        };
        match (company, domain) {
            (Some(company_id), Some(domain)) if violations.is_empty() => {
                Ok(ChallengeKey { company_id, domain })
            }
            _ => Err(Error::InvalidArgument(violations)),
        }
    }
}

/// The result of a check that was applied.
#[derive(Debug, Clone)]
pub struct Applied {
    pub challenge: ChallengeRow,
    pub check: CheckRow,
}

/// The verification service's core.
#[derive(Debug, Clone)]
pub struct Verifier {
    pool: PgPool,
    resolver: TxtResolver,
    rules: Rules,
    check_deadline: Duration,
    /// One permit per DNS lookup in flight: scheduler and CheckNow together never exceed the
    /// configured concurrency against the DNS servers.
    dns_slots: Arc<Semaphore>,
    /// Wakes the scheduler when a challenge becomes due at once (created, rotated).
    pub(crate) wake: Arc<Notify>,
}

impl Verifier {
    pub fn new(pool: PgPool, resolver: TxtResolver, args: &VerificationArgs) -> Verifier {
        Verifier {
            pool,
            resolver,
            rules: Rules::from_args(args),
            check_deadline: args.check_deadline,
            dns_slots: Arc::new(Semaphore::new(args.concurrency)),
            wake: Arc::new(Notify::new()),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The challenge for `key`, created (with a fresh token, due for its first check at once)
    /// when it does not exist. `true` when this call created it.
    pub async fn create(
        &self,
        key: &ChallengeKey,
        now: DateTime<Utc>,
    ) -> Result<(ChallengeRow, bool)> {
        let mut tx = self.pool.begin().await?;
        let token = VerificationToken::generate();
        let reason = format!(
            "waiting for the TXT record {} to be published at {}",
            token.txt_value(),
            key.domain
        );
        let inserted: Option<ChallengeRow> = sqlx::query_as(&format!(
            "INSERT INTO challenges (company_id, domain, token, reason, created_at, updated_at, \
                 pending_since, state_changed_at, next_check_at) \
             VALUES ($1, $2, $3, $4, $5, $5, $5, $5, $5) \
             ON CONFLICT (company_id, domain) DO NOTHING RETURNING {CHALLENGE_COLUMNS}"
        ))
        .bind(key.company_id)
        .bind(key.domain.as_str())
        .bind(token.as_str())
        .bind(&reason)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(created) = inserted else {
            tx.rollback().await?;
            let existing = self.find(key).await?;
            return Ok((existing, false));
        };
        outbox::record_change(&mut tx, &created, None, None, now).await?;
        tx.commit().await?;
        self.wake.notify_one();
        Ok((created, true))
    }

    /// Replaces the token. A verified challenge stays verified until the grace period runs out
    /// without the new token; any other becomes PENDING and polling starts over.
    pub async fn rotate(&self, key: &ChallengeKey, now: DateTime<Utc>) -> Result<ChallengeRow> {
        let mut tx = self.pool.begin().await?;
        let current = lock(&mut tx, key).await?;
        let previous = current.state();
        let token = VerificationToken::generate();
        let rotated: ChallengeRow = if previous == State::Verified {
            sqlx::query_as(&format!(
                "UPDATE challenges SET token = $2, token_rotated_at = $3, updated_at = $3, \
                     revision = revision + 1, next_check_at = $3, \
                     reason = $4 \
                 WHERE id = $1 RETURNING {CHALLENGE_COLUMNS}"
            ))
            .bind(current.id)
            .bind(token.as_str())
            .bind(now)
            .bind(format!(
                "still verified, but the token was rotated: only the new TXT record {} at {} keeps the domain verified; without it the domain is revoked {} after the next check",
                token.txt_value(),
                key.domain,
                rules::human(self.rules.revoke_grace)
            ))
            .fetch_one(&mut *tx)
            .await?
        } else {
            sqlx::query_as(&format!(
                "UPDATE challenges SET token = $2, token_rotated_at = $3, updated_at = $3, \
                     revision = revision + 1, state = 'pending', state_changed_at = $3, \
                     pending_since = $3, consecutive_failures = 0, missing_since = NULL, \
                     next_check_at = $3, reason = $4 \
                 WHERE id = $1 RETURNING {CHALLENGE_COLUMNS}"
            ))
            .bind(current.id)
            .bind(token.as_str())
            .bind(now)
            .bind(format!(
                "the token was rotated: waiting for the TXT record {} to be published at {}",
                token.txt_value(),
                key.domain
            ))
            .fetch_one(&mut *tx)
            .await?
        };
        outbox::record_change(&mut tx, &rotated, Some(previous), None, now).await?;
        tx.commit().await?;
        self.wake.notify_one();
        Ok(rotated)
    }

    /// Removes the challenge and its history. Nothing to delete is not an error.
    pub async fn delete(&self, key: &ChallengeKey) -> Result<()> {
        sqlx::query("DELETE FROM challenges WHERE company_id = $1 AND domain = $2")
            .bind(key.company_id)
            .bind(key.domain.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The challenge and its most recent checks, newest first.
    pub async fn status(
        &self,
        key: &ChallengeKey,
        history: u32,
    ) -> Result<(ChallengeRow, Vec<CheckRow>)> {
        let challenge = self.find(key).await?;
        let limit = match history {
            0 => DEFAULT_CHECK_HISTORY,
            n => n.min(MAX_CHECK_HISTORY),
        };
        let checks = sqlx::query_as(&format!(
            "SELECT {CHECK_COLUMNS} FROM checks WHERE challenge_id = $1 \
             ORDER BY checked_at DESC, id DESC LIMIT $2"
        ))
        .bind(challenge.id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok((challenge, checks))
    }

    pub async fn find(&self, key: &ChallengeKey) -> Result<ChallengeRow> {
        sqlx::query_as(&format!(
            "SELECT {CHALLENGE_COLUMNS} FROM challenges WHERE company_id = $1 AND domain = $2"
        ))
        .bind(key.company_id)
        .bind(key.domain.as_str())
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| not_found(key))
    }

    /// Runs one check on demand, bounded by `limit` (and the configured check deadline), and
    /// applies it at `at` (the current time when `None`).
    pub async fn check_now(
        &self,
        key: &ChallengeKey,
        limit: Option<Duration>,
        at: Option<DateTime<Utc>>,
    ) -> Result<Applied> {
        let challenge = self.find(key).await?;
        let limit = limit.map_or(self.check_deadline, |l| l.min(self.check_deadline));
        let lookup = self.lookup(&key.domain, limit).await;
        self.apply(&challenge, &lookup, Trigger::OnDemand, None, at)
            .await?
            .ok_or_else(|| not_found(key))
    }

    /// Looks up the domain's TXT records, waiting for a DNS slot; gives up as a timeout after
    /// `limit` in all.
    pub(crate) async fn lookup(&self, domain: &DomainName, limit: Duration) -> TxtLookup {
        let lookup = self.lookup_uncounted(domain, limit).await;
        crate::metrics::metrics().dns_check(&lookup.answer);
        lookup
    }

    async fn lookup_uncounted(&self, domain: &DomainName, limit: Duration) -> TxtLookup {
        let started = tokio::time::Instant::now();
        let permit = tokio::time::timeout(limit, self.dns_slots.acquire()).await;
        match permit {
            Ok(Ok(_permit)) => {
                let left = limit.saturating_sub(started.elapsed());
                self.resolver.lookup_within(domain, left).await
            }
            // No slot in time (or the semaphore closed): nothing was asked, but to the caller it
            // is exactly a timeout.
            Ok(Err(_)) | Err(_) => TxtLookup {
                queried_name: domain.as_str().to_owned(),
                cname_chain: Vec::new(),
                answer: TxtAnswer::Timeout,
                probes: Vec::new(),
                nameserver: self.resolver.nameserver().to_owned(),
                duration: started.elapsed(),
            },
        }
    }

    /// Applies `lookup` to the challenge. `lease_owner`: the scheduler replica that claimed it;
    /// when another replica has taken the challenge over since, nothing is applied. `None` when
    /// the challenge was deleted meanwhile.
    pub(crate) async fn apply(
        &self,
        claimed: &ChallengeRow,
        lookup: &TxtLookup,
        trigger: Trigger,
        lease_owner: Option<&str>,
        at: Option<DateTime<Utc>>,
    ) -> Result<Option<Applied>> {
        let now = at.unwrap_or_else(Utc::now);
        let mut tx = self.pool.begin().await?;
        // Every challenge of the domain, in id order so concurrent checks lock in the same order.
        let rows: Vec<ChallengeRow> = sqlx::query_as(&format!(
            "SELECT {CHALLENGE_COLUMNS} FROM challenges WHERE domain = $1 ORDER BY id FOR UPDATE"
        ))
        .bind(&claimed.domain)
        .fetch_all(&mut *tx)
        .await?;
        let Some(current) = rows.iter().find(|r| r.id == claimed.id) else {
            return Ok(None);
        };
        if let Some(owner) = lease_owner
            && current.lease_owner.as_deref() != Some(owner)
        {
            return Ok(None);
        }
        let token =
            VerificationToken::parse(&current.token).map_err(|source| Error::StoredToken {
                challenge: current.id,
                source,
            })?;
        let evaluation = rules::evaluate(lookup, &token);
        let values: &[String] = match &lookup.answer {
            TxtAnswer::Records(values) => values,
            _ => &[],
        };
        let holder = rows
            .iter()
            .find(|r| r.id != current.id && r.state() == State::Verified);
        // The holder's token counts as present unless it is absent or served only by a wildcard
        // (its own checks then fail the same way); an unsure probe does not move ownership.
        let holder_facts = holder.map(|h| Holder {
            token_present: VerificationToken::parse(&h.token).is_ok_and(|t| {
                !matches!(
                    rules::presence(lookup, &t),
                    Presence::Absent | Presence::ViaWildcard(_) | Presence::TooManyAliases(_)
                )
            }),
            consecutive_failures: h.consecutive_failures.max(0) as u32,
            missing_since: h.missing_since,
        });
        let before = current.state();
        let decision = rules::decide(
            now,
            &self.rules,
            &facts(current),
            &evaluation,
            trigger,
            holder_facts.as_ref(),
        );

        if decision.revoke_holder
            && let Some(holder) = holder
        {
            let revoked: ChallengeRow = sqlx::query_as(&format!(
                "UPDATE challenges SET state = 'revoked', reason = $2, next_check_at = NULL, \
                     updated_at = $3, state_changed_at = $3, revision = revision + 1, \
                     lease_owner = NULL, lease_until = NULL \
                 WHERE id = $1 RETURNING {CHALLENGE_COLUMNS}"
            ))
            .bind(holder.id)
            .bind(rules::displaced_reason(&holder.domain, &self.rules))
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            outbox::record_change(&mut tx, &revoked, Some(State::Verified), None, now).await?;
        }

        let changed = decision.state != before;
        let updated = update(
            &mut tx,
            current.id,
            &decision,
            changed,
            lease_owner.is_some(),
            now,
        )
        .await?;
        let check: CheckRow = sqlx::query_as(&format!(
            "INSERT INTO checks (challenge_id, checked_at, outcome, temporary, detail, values_found, \
                 nameserver, duration_ms, trigger, queried_name, cname_chain, state_before, state_after, \
                 probed_names, wildcard_name) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
             RETURNING {CHECK_COLUMNS}"
        ))
        .bind(current.id)
        .bind(now)
        .bind(evaluation.outcome.as_db())
        .bind(evaluation.outcome.is_temporary())
        .bind(&evaluation.message)
        .bind(values)
        .bind(Some(lookup.nameserver.as_str()).filter(|s| !s.is_empty()))
        .bind(i32::try_from(lookup.duration.as_millis()).unwrap_or(i32::MAX))
        .bind(trigger.as_db())
        .bind(&lookup.queried_name)
        .bind(&lookup.cname_chain)
        .bind(before.as_db())
        .bind(decision.state.as_db())
        .bind(
            lookup
                .probes
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(&evaluation.wildcard)
        .fetch_one(&mut *tx)
        .await?;
        if changed {
            outbox::record_change(&mut tx, &updated, Some(before), Some(check.to_proto()), now)
                .await?;
        }
        tx.commit().await?;
        if changed {
            tracing::info!(
                challenge = %updated.id,
                domain = %updated.domain,
                from = before.as_db(),
                to = decision.state.as_db(),
                reason = %updated.reason,
                "verification state changed"
            );
        }
        Ok(Some(Applied {
            challenge: updated,
            check,
        }))
    }

    /// The challenge as the API shows it.
    pub fn to_proto(&self, row: &ChallengeRow) -> pb::Challenge {
        let state = row.state();
        let scheduled = matches!(state, State::Pending | State::Verified);
        let expire_time = match state {
            State::Pending => Some(row.pending_since + self.rules.give_up_after),
            State::Verified => row
                .missing_since
                .map(|since| since + self.rules.revoke_grace),
            State::Failed | State::Revoked => None,
        };
        pb::Challenge {
            challenge_id: row.id.to_string(),
            company_id: row.company_id.to_string(),
            domain_name: row.domain.clone(),
            token: row.token.clone(),
            txt_record_name: row.domain.clone(),
            txt_record_value: format!("{}{}", email2sms_domain::TXT_RECORD_PREFIX, row.token),
            state: state.to_proto() as i32,
            state_reason: row.reason.clone(),
            create_time: Some(timestamp(row.created_at)),
            update_time: Some(timestamp(row.updated_at)),
            verify_time: row.verified_at.map(timestamp),
            last_check_time: row.last_checked_at.map(timestamp),
            next_check_time: row.next_check_at.filter(|_| scheduled).map(timestamp),
            expire_time: expire_time.map(timestamp),
            consecutive_failures: row.consecutive_failures.max(0) as u32,
            state_sequence: row.revision.max(0) as u64,
        }
    }
}

fn not_found(key: &ChallengeKey) -> Error {
    Error::ChallengeNotFound {
        domain: key.domain.to_string(),
    }
}

fn facts(row: &ChallengeRow) -> Facts {
    Facts {
        state: row.state(),
        domain: row.domain.clone(),
        reason: row.reason.clone(),
        pending_since: row.pending_since,
        verified_at: row.verified_at,
        consecutive_failures: row.consecutive_failures.max(0) as u32,
        missing_since: row.missing_since,
    }
}

async fn lock(tx: &mut PgConnection, key: &ChallengeKey) -> Result<ChallengeRow> {
    sqlx::query_as(&format!(
        "SELECT {CHALLENGE_COLUMNS} FROM challenges WHERE company_id = $1 AND domain = $2 FOR UPDATE"
    ))
    .bind(key.company_id)
    .bind(key.domain.as_str())
    .fetch_optional(tx)
    .await?
    .ok_or_else(|| not_found(key))
}

async fn update(
    tx: &mut PgConnection,
    id: Uuid,
    decision: &Decision,
    state_changed: bool,
    release_lease: bool,
    now: DateTime<Utc>,
) -> Result<ChallengeRow> {
    Ok(sqlx::query_as(&format!(
        "UPDATE challenges SET state = $2, reason = $3, pending_since = $4, verified_at = $5, \
             consecutive_failures = $6, missing_since = $7, next_check_at = $8, \
             last_checked_at = $9, \
             updated_at = CASE WHEN $10 THEN $9 ELSE updated_at END, \
             state_changed_at = CASE WHEN $10 THEN $9 ELSE state_changed_at END, \
             revision = revision + CASE WHEN $10 THEN 1 ELSE 0 END, \
             lease_owner = CASE WHEN $11 THEN NULL ELSE lease_owner END, \
             lease_until = CASE WHEN $11 THEN NULL ELSE lease_until END \
         WHERE id = $1 RETURNING {CHALLENGE_COLUMNS}"
    ))
    .bind(id)
    .bind(decision.state.as_db())
    .bind(&decision.reason)
    .bind(decision.pending_since)
    .bind(decision.verified_at)
    .bind(i32::try_from(decision.consecutive_failures).unwrap_or(i32::MAX))
    .bind(decision.missing_since)
    .bind(decision.next_check_at)
    .bind(now)
    .bind(state_changed)
    .bind(release_lease)
    .fetch_one(tx)
    .await?)
}
