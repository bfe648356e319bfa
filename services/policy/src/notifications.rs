//! Notification batches: "your address may now send SMS by email", one plain-text email per
//! address through the smarthost.
//!
//! A batch is created in one transaction with one `notifications` row per address; the unique
//! (company, request_id, address) constraint and the unique (company, request_id) batch make a
//! repeated request find the first batch and send nothing. Sending claims each row
//! (`pending` → `sending`) with `FOR UPDATE SKIP LOCKED` before talking to the smarthost, so two
//! senders (a retry racing the first run) can never both send one address.
//!
//! Batches of at most [`SYNC_LIMIT`] addresses are sent before the RPC answers (state COMPLETED);
//! larger ones continue in the background (state IN_PROGRESS; poll GetNotification). Either way the
//! sending runs in a spawned task, so a client that hangs up cannot leave a row half sent.

use chrono::{DateTime, Utc};
use email2sms_proto::policy::v1 as pb;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::PolicyApi;
use crate::error::{Error, Result};
use crate::mail::{Mailer, notification_body};
use crate::model::{opt_timestamp, page_size, parse_id, parse_request_id, timestamp};
use crate::paging::Pager;
use crate::store::{self, CompanyRef};

/// Largest batch sent before the RPC answers.
pub const SYNC_LIMIT: usize = 20;
/// Results returned inline by SendNotification when the request says 0, and the cap.
const DEFAULT_INLINE_RESULTS: i64 = 100;
const MAX_INLINE_RESULTS: i64 = 1000;
const SUBJECT: &str = "You can now send SMS by email";

/// Creates a batch for `targets` (entry id, address) and its pending rows. Returns `None` when the
/// company already has a batch for `request_id` (nothing is created then).
pub(crate) async fn create_batch(
    conn: &mut PgConnection,
    company: Uuid,
    request_id: &str,
    import_id: Option<Uuid>,
    targets: &[(Uuid, String)],
) -> Result<Option<Uuid>> {
    let batch: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO notification_batches (company_id, request_id, import_id) VALUES ($1, $2, $3)
         ON CONFLICT (company_id, request_id) DO NOTHING RETURNING id",
    )
    .bind(company)
    .bind(request_id)
    .bind(import_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(batch) = batch else {
        return Ok(None);
    };
    let ids: Vec<Uuid> = targets.iter().map(|(id, _)| *id).collect();
    let addresses: Vec<&str> = targets.iter().map(|(_, a)| a.as_str()).collect();
    // The same address twice in one request is one email: the unique constraint drops the copy.
    sqlx::query(
        "INSERT INTO notifications (company_id, request_id, import_id, email_address, batch_id,
                                    email_address_id)
         SELECT $1, $2, $3, t.address, $4, t.id
           FROM unnest($5::uuid[], $6::text[]) AS t (id, address)
         ON CONFLICT (company_id, request_id, email_address) DO NOTHING",
    )
    .bind(company)
    .bind(request_id)
    .bind(import_id)
    .bind(batch)
    .bind(&ids)
    .bind(&addresses)
    .execute(&mut *conn)
    .await?;
    if targets.is_empty() {
        sqlx::query("UPDATE notification_batches SET completed_at = now() WHERE id = $1")
            .bind(batch)
            .execute(&mut *conn)
            .await?;
    }
    Ok(Some(batch))
}

/// Sends every pending address of `batch`, one claimed row at a time, then marks the batch
/// complete when nothing is left pending.
pub async fn run_batch(pool: PgPool, mailer: Mailer, batch: Uuid) {
    if let Err(error) = send_pending(&pool, &mailer, batch).await {
        // Rows left pending are picked up by the next RetryNotification or restart.
        tracing::warn!(%batch, %error, "notification batch interrupted");
    }
}

async fn send_pending(pool: &PgPool, mailer: &Mailer, batch: Uuid) -> Result<()> {
    loop {
        let claimed: Option<(Uuid, Uuid, String, Option<Uuid>)> = sqlx::query_as(
            "UPDATE notifications SET status = 'sending', updated_at = now()
              WHERE id = (SELECT id FROM notifications WHERE batch_id = $1 AND status = 'pending'
                           ORDER BY email_address LIMIT 1 FOR UPDATE SKIP LOCKED)
              RETURNING id, company_id, email_address, email_address_id",
        )
        .bind(batch)
        .fetch_optional(pool)
        .await?;
        let Some((row, company, address, entry)) = claimed else {
            break;
        };
        // Read at send time: an entry deleted or disabled since the request is not notified, and
        // the forwarding user named is the current one.
        let context: Option<(bool, String, Option<String>)> = sqlx::query_as(
            "SELECT e.deleted_at IS NULL AND NOT e.disabled, c.name,
                    CASE WHEN u.display_name = '' THEN u.username
                         ELSE u.display_name || ' (' || u.username || ')' END
               FROM email_addresses e
               JOIN companies c ON c.id = e.company_id
               LEFT JOIN messenger_users u
                      ON u.company_id = e.company_id AND u.id = e.forwarding_user_id
              WHERE e.company_id = $1 AND e.id = $2",
        )
        .bind(company)
        .bind(entry)
        .fetch_optional(pool)
        .await?;
        let outcome = match context {
            Some((true, company_name, user)) => {
                let user = user.unwrap_or_else(|| "(not allocated yet)".to_owned());
                let body = notification_body(&address, &company_name, &mailer.sms_domain, &user);
                Some(
                    mailer
                        .send(std::slice::from_ref(&address), SUBJECT, body)
                        .await,
                )
            }
            _ => None,
        };
        let update = match &outcome {
            None => sqlx::query(
                "UPDATE notifications SET status = 'skipped', updated_at = now(),
                        error = 'the email address entry was deleted or disabled meanwhile'
                  WHERE id = $1",
            )
            .bind(row),
            Some(Ok(())) => sqlx::query(
                "UPDATE notifications SET status = 'sent', sent_at = now(), error = NULL,
                        retryable = false, attempts = attempts + 1, last_attempt_at = now(),
                        updated_at = now()
                  WHERE id = $1",
            )
            .bind(row),
            Some(Err(failure)) => sqlx::query(
                "UPDATE notifications SET status = 'failed', error = $2, retryable = $3,
                        attempts = attempts + 1, last_attempt_at = now(), updated_at = now()
                  WHERE id = $1",
            )
            .bind(row)
            .bind(failure.message.clone())
            .bind(failure.retryable),
        };
        update.execute(pool).await?;
    }
    sqlx::query(
        "UPDATE notification_batches SET completed_at = now()
          WHERE id = $1 AND completed_at IS NULL
            AND NOT EXISTS (SELECT 1 FROM notifications
                             WHERE batch_id = $1 AND status IN ('pending', 'sending'))",
    )
    .bind(batch)
    .execute(pool)
    .await?;
    Ok(())
}

/// Starts sending `batch`; waits for it when it has at most [`SYNC_LIMIT`] addresses to send.
pub(crate) async fn start_sending(
    background: &tokio_util::task::TaskTracker,
    pool: &PgPool,
    mailer: &Mailer,
    batch: Uuid,
    to_send: usize,
) {
    let task = background.spawn(run_batch(pool.clone(), mailer.clone(), batch));
    if to_send <= SYNC_LIMIT {
        let _ = task.await;
    }
}

/// Resumes batches a previous process left unfinished (rows still `pending`). Rows left `sending`
/// by a crash stay as they are: the email may have gone out, and sending twice is worse.
pub async fn resume_unfinished(pool: PgPool, mailer: Mailer) {
    let batches: Vec<Uuid> = match sqlx::query_scalar(
        "SELECT DISTINCT batch_id FROM notifications
          WHERE status = 'pending' AND batch_id IS NOT NULL",
    )
    .fetch_all(&pool)
    .await
    {
        Ok(batches) => batches,
        Err(error) => {
            tracing::warn!(%error, "cannot look for unfinished notification batches");
            return;
        }
    };
    for batch in batches {
        run_batch(pool.clone(), mailer.clone(), batch).await;
    }
}

/// The counts row of one batch.
#[derive(sqlx::FromRow)]
struct BatchRow {
    request_id: String,
    import_id: Option<Uuid>,
    created_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
    total: i64,
    pending: i64,
    sent: i64,
    failed: i64,
    retryable: i64,
    skipped: i64,
}

/// The batch with its counts, if it is this company's.
pub(crate) async fn fetch_batch(
    conn: &mut PgConnection,
    company: &CompanyRef,
    batch: Uuid,
) -> Result<pb::Notification> {
    let row: Option<BatchRow> = sqlx::query_as(
        "SELECT b.request_id, b.import_id, b.created_at, b.completed_at,
                count(n.id) AS total,
                count(n.id) FILTER (WHERE n.status IN ('pending', 'sending')) AS pending,
                count(n.id) FILTER (WHERE n.status = 'sent') AS sent,
                count(n.id) FILTER (WHERE n.status = 'failed') AS failed,
                count(n.id) FILTER (WHERE n.status = 'failed' AND n.retryable) AS retryable,
                count(n.id) FILTER (WHERE n.status = 'skipped') AS skipped
           FROM notification_batches b LEFT JOIN notifications n ON n.batch_id = b.id
          WHERE b.company_id = $1 AND b.id = $2
          GROUP BY b.id",
    )
    .bind(company.id)
    .bind(batch)
    .fetch_optional(&mut *conn)
    .await?;
    let row = row.ok_or(Error::NotFound("notification"))?;
    let count = |n: i64| u32::try_from(n).unwrap_or(u32::MAX);
    let in_progress = row.pending > 0;
    Ok(pb::Notification {
        notification_id: batch.to_string(),
        company_id: company.public_id.clone(),
        request_id: row.request_id,
        import_id: row.import_id.map(|id| id.to_string()).unwrap_or_default(),
        state: if in_progress {
            pb::NotificationState::InProgress
        } else {
            pb::NotificationState::Completed
        } as i32,
        totals: Some(pb::NotificationTotals {
            total: count(row.total),
            pending: count(row.pending),
            sent: count(row.sent),
            failed: count(row.failed),
            retryable: count(row.retryable),
            skipped: count(row.skipped),
        }),
        create_time: Some(timestamp(row.created_at)),
        complete_time: if in_progress {
            None
        } else {
            opt_timestamp(row.completed_at)
        },
    })
}

fn outcome(status: &str) -> pb::NotificationOutcome {
    match status {
        "sent" => pb::NotificationOutcome::Sent,
        "failed" => pb::NotificationOutcome::Failed,
        "skipped" => pb::NotificationOutcome::Skipped,
        // 'pending' and 'sending' (claimed, not finished) are both "no outcome yet".
        _ => pb::NotificationOutcome::Pending,
    }
}

/// One stored per-address result.
#[derive(sqlx::FromRow)]
struct ResultRow {
    id: Uuid,
    email_address_id: Option<Uuid>,
    email_address: String,
    status: String,
    error: Option<String>,
    retryable: bool,
    attempts: i32,
    last_attempt_at: Option<DateTime<Utc>>,
}

/// One page of a batch's results, ordered by address.
async fn results_page(
    conn: &mut PgConnection,
    pager: Pager<'_>,
    batch: Uuid,
    statuses: &[&str],
    limit: i64,
    token: &str,
) -> Result<(Vec<pb::NotificationResult>, String)> {
    let filters = format!("batch={batch};statuses={}", statuses.join(","));
    let after = pager.decode(token, &filters)?;
    let statuses: Option<Vec<String>> = if statuses.is_empty() {
        None
    } else {
        Some(statuses.iter().map(|s| (*s).to_owned()).collect())
    };
    let rows: Vec<ResultRow> = sqlx::query_as(
        "SELECT id, email_address_id, email_address, status, error, retryable, attempts,
                last_attempt_at
           FROM notifications
          WHERE batch_id = $1
            AND ($2::text[] IS NULL OR status = ANY ($2))
            AND ($3::text IS NULL OR (email_address, id) > ($3, $4))
          ORDER BY email_address, id
          LIMIT $5",
    )
    .bind(batch)
    .bind(statuses)
    .bind(after.as_ref().map(|k| k.key.clone()))
    .bind(after.as_ref().map(|k| k.id).unwrap_or_default())
    .bind(limit + 1)
    .fetch_all(&mut *conn)
    .await?;
    let (rows, next) = pager.finish(rows, limit, &filters, |r| (r.email_address.clone(), r.id));
    let results = rows
        .into_iter()
        .map(|r| {
            let outcome = outcome(&r.status);
            pb::NotificationResult {
                email_address_id: r
                    .email_address_id
                    .map(|id| id.to_string())
                    .unwrap_or_default(),
                email_address: r.email_address,
                outcome: outcome as i32,
                error: r.error.unwrap_or_default(),
                retryable: outcome == pb::NotificationOutcome::Failed && r.retryable,
                attempt_count: u32::try_from(r.attempts).unwrap_or(0),
                last_attempt_time: opt_timestamp(r.last_attempt_at),
            }
        })
        .collect();
    Ok((results, next))
}

impl PolicyApi {
    pub(crate) fn mailer(&self) -> Result<&Mailer> {
        self.mailer.as_ref().ok_or(Error::Unimplemented(
            "this server has no smarthost configured",
        ))
    }

    pub(crate) async fn send_notification(
        &self,
        request: pb::SendNotificationRequest,
    ) -> Result<pb::SendNotificationResponse> {
        let mailer = self.mailer()?.clone();
        let request_id =
            parse_request_id(&request.request_id)?.ok_or_else(|| Error::required("request_id"))?;
        let inline = match request.page_size {
            0 => DEFAULT_INLINE_RESULTS,
            n if n < 0 => {
                return Err(Error::invalid(
                    "page_size",
                    "NEGATIVE_PAGE_SIZE",
                    "page_size must not be negative",
                ));
            }
            n => i64::from(n).min(MAX_INLINE_RESULTS),
        };
        let target = request.target.ok_or_else(|| Error::required("target"))?;
        let mut tx = self.pool.begin().await?;
        let company = store::company(&mut tx, &request.company_id).await?;
        let existing: Option<Uuid> = sqlx::query_scalar(
            "SELECT id FROM notification_batches WHERE company_id = $1 AND request_id = $2",
        )
        .bind(company.id)
        .bind(request_id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let (batch, to_send) = match existing {
            // The same request again: the first batch, nothing sent again.
            Some(batch) => (batch, 0),
            None => {
                let (import_id, targets) = match target {
                    pb::send_notification_request::Target::EmailAddressIds(ids) => {
                        (None, explicit_targets(&mut tx, &company, &ids).await?)
                    }
                    pb::send_notification_request::Target::ImportId(import) => {
                        let import = parse_id("import_id", &import)?;
                        (
                            Some(import),
                            import_targets(&mut tx, &company, import).await?,
                        )
                    }
                };
                let created = create_batch(
                    &mut tx,
                    company.id,
                    &request_id.to_string(),
                    import_id,
                    &targets,
                )
                .await?;
                match created {
                    Some(batch) => (batch, targets.len()),
                    // A concurrent identical request created it first; its answer is the batch.
                    None => {
                        return Err(Error::Unavailable(
                            "the same request is being processed; retry shortly".into(),
                        ));
                    }
                }
            }
        };
        tx.commit().await?;
        if to_send > 0 {
            start_sending(&self.background, &self.pool, &mailer, batch, to_send).await;
        }
        let mut conn = self.pool.acquire().await?;
        let notification = fetch_batch(&mut conn, &company, batch).await?;
        let (results, next_page_token) = results_page(
            &mut conn,
            self.pager(company.id).await?,
            batch,
            &[],
            inline,
            "",
        )
        .await?;
        Ok(pb::SendNotificationResponse {
            notification: Some(notification),
            results,
            next_page_token,
        })
    }

    pub(crate) async fn get_notification(
        &self,
        request: pb::GetNotificationRequest,
    ) -> Result<pb::GetNotificationResponse> {
        let batch = parse_id("notification_id", &request.notification_id)?;
        let mut conn = self.pool.acquire().await?;
        let company = store::company(&mut conn, &request.company_id).await?;
        Ok(pb::GetNotificationResponse {
            notification: Some(fetch_batch(&mut conn, &company, batch).await?),
        })
    }

    pub(crate) async fn list_notification_results(
        &self,
        request: pb::ListNotificationResultsRequest,
    ) -> Result<pb::ListNotificationResultsResponse> {
        let batch = parse_id("notification_id", &request.notification_id)?;
        let limit = page_size(request.page_size, "page_size")?;
        let mut statuses: Vec<&str> = Vec::new();
        for value in &request.outcomes {
            let wanted: &[&str] = match pb::NotificationOutcome::try_from(*value) {
                Ok(pb::NotificationOutcome::Pending) => &["pending", "sending"],
                Ok(pb::NotificationOutcome::Sent) => &["sent"],
                Ok(pb::NotificationOutcome::Failed) => &["failed"],
                Ok(pb::NotificationOutcome::Skipped) => &["skipped"],
                _ => {
                    return Err(Error::invalid(
                        "outcomes",
                        "UNKNOWN_ENUM",
                        "unknown notification outcome",
                    ));
                }
            };
            for status in wanted {
                if !statuses.contains(status) {
                    statuses.push(status);
                }
            }
        }
        let mut conn = self.pool.acquire().await?;
        let company = store::company(&mut conn, &request.company_id).await?;
        // Tenant check before any result is read.
        fetch_batch(&mut conn, &company, batch).await?;
        let (results, next_page_token) = results_page(
            &mut conn,
            self.pager(company.id).await?,
            batch,
            &statuses,
            limit,
            &request.page_token,
        )
        .await?;
        Ok(pb::ListNotificationResultsResponse {
            results,
            next_page_token,
        })
    }

    pub(crate) async fn retry_notification(
        &self,
        request: pb::RetryNotificationRequest,
    ) -> Result<pb::RetryNotificationResponse> {
        let mailer = self.mailer()?.clone();
        let batch = parse_id("notification_id", &request.notification_id)?;
        let mut tx = self.pool.begin().await?;
        let company = store::company(&mut tx, &request.company_id).await?;
        fetch_batch(&mut tx, &company, batch).await?;
        // Only retryable failures go back to pending; sent, skipped and permanent failures stay.
        let retried = sqlx::query(
            "UPDATE notifications SET status = 'pending', updated_at = now()
              WHERE batch_id = $1 AND company_id = $2 AND status = 'failed' AND retryable",
        )
        .bind(batch)
        .bind(company.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if retried > 0 {
            sqlx::query("UPDATE notification_batches SET completed_at = NULL WHERE id = $1")
                .bind(batch)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        if retried > 0 {
            let to_send = usize::try_from(retried).unwrap_or(usize::MAX);
            start_sending(&self.background, &self.pool, &mailer, batch, to_send).await;
        }
        let mut conn = self.pool.acquire().await?;
        Ok(pb::RetryNotificationResponse {
            notification: Some(fetch_batch(&mut conn, &company, batch).await?),
        })
    }
}

/// The company's live entries with these ids; any unknown (or other company's) id is NOT_FOUND.
async fn explicit_targets(
    conn: &mut PgConnection,
    company: &CompanyRef,
    ids: &pb::EmailAddressIds,
) -> Result<Vec<(Uuid, String)>> {
    if ids.email_address_ids.is_empty() {
        return Err(Error::required("email_address_ids.email_address_ids"));
    }
    // One list page: refused before any id is parsed or looked up.
    let max = usize::try_from(crate::model::MAX_PAGE_SIZE).unwrap_or(1000);
    if ids.email_address_ids.len() > max {
        return Err(Error::invalid(
            "email_address_ids.email_address_ids",
            "TOO_MANY",
            format!(
                "at most {max} email address ids per notification; {} were given (notify a whole import with import_id)",
                ids.email_address_ids.len()
            ),
        ));
    }
    let mut wanted = Vec::with_capacity(ids.email_address_ids.len());
    for id in &ids.email_address_ids {
        wanted.push(parse_id("email_address_ids.email_address_ids", id)?);
    }
    wanted.sort();
    wanted.dedup();
    let found: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT id, address FROM email_addresses
          WHERE company_id = $1 AND id = ANY ($2) AND deleted_at IS NULL
          ORDER BY address",
    )
    .bind(company.id)
    .bind(&wanted)
    .fetch_all(&mut *conn)
    .await?;
    if found.len() != wanted.len() {
        return Err(Error::NotFound("email address"));
    }
    Ok(found)
}

/// The live entries a committed import of this company created.
async fn import_targets(
    conn: &mut PgConnection,
    company: &CompanyRef,
    import: Uuid,
) -> Result<Vec<(Uuid, String)>> {
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM imports WHERE company_id = $1 AND id = $2")
            .bind(company.id)
            .bind(import)
            .fetch_optional(&mut *conn)
            .await?;
    match status.as_deref() {
        None => return Err(Error::NotFound("import")),
        Some("committed") => {}
        Some(_) => {
            return Err(Error::FailedPrecondition(
                "the import is not committed yet: commit it first".into(),
            ));
        }
    }
    Ok(sqlx::query_as(
        "SELECT id, address FROM email_addresses
          WHERE company_id = $1 AND import_id = $2 AND deleted_at IS NULL AND NOT disabled
          ORDER BY address",
    )
    .bind(company.id)
    .bind(import)
    .fetch_all(&mut *conn)
    .await?)
}
