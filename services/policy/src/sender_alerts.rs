//! The admin alert for a new mail server: one per (company, server), ever, and at most
//! `limit` single alerts per company in any `window`; the servers beyond that are listed together
//! in one digest email once the oldest of them has waited a whole window.
//!
//! Why a budget: only authenticated mail reaches the sender log (ingest's `sender_sightings`), but
//! a company whose mail moves to a new provider, or an IP-range entry covering a busy network, can
//! still bring dozens of new servers in an hour. Dozens of emails teach admins to ignore them; one
//! digest an hour does not. The default of 5 an hour lets a normal change (a new relay, a backup
//! MX, a few provider addresses) arrive one by one.
//!
//! "Exactly once" rests on the row's lease (`admin_notify_claimed_until`): whoever sets it while
//! `admin_notified_at` is NULL is the only one sending, so the consumer and the retry loop can never
//! both send; `admin_notified_at` is set right after the smarthost accepted the message.
//! "At most `limit` per window" rests on the company row's lock: deciding between a single alert
//! and the digest happens under `FOR NO KEY UPDATE` of the company, and counts the single alerts
//! sent in the window and those in flight (leased), so concurrent consumers cannot both take the
//! last place.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::Result;
use crate::mail::{Mailer, NewServer, new_server_body, new_servers_digest_body};

const SUBJECT: &str = "Email2SMS: a new mail server sent email for your company";
const DIGEST_SUBJECT: &str = "Email2SMS: new mail servers sent email for your company";

/// A lease outlives one SMTP conversation (15 s timeout) with a wide margin.
const LEASE: &str = "5 minutes";

/// Most servers one digest lists; more wait for the next digest (a digest of thousands of lines is
/// read by nobody, and it bounds the work of one claim).
const DIGEST_MAX_SERVERS: i64 = 200;

/// How many single alerts a company gets per window.
#[derive(Debug, Clone, Copy)]
pub struct AlertBudget {
    pub limit: u32,
    pub window: Duration,
}

impl Default for AlertBudget {
    fn default() -> Self {
        Self {
            limit: 5,
            window: Duration::from_secs(3600),
        }
    }
}

/// The smarthost and the budget: what sending alerts needs.
#[derive(Debug, Clone)]
pub struct SenderAlerts {
    pub mailer: Mailer,
    pub budget: AlertBudget,
}

/// What the alert (or a digest line) says about one server.
#[derive(sqlx::FromRow)]
struct Claimed {
    id: Uuid,
    ip: String,
    first_seen: DateTime<Utc>,
    sample_envelope_sender: String,
    sample_from: String,
    sample_helo: String,
    reverse_dns_name: String,
    company_name: String,
    admin_emails: Vec<String>,
}

impl Claimed {
    fn server(&self) -> NewServer<'_> {
        NewServer {
            company: &self.company_name,
            ip: &self.ip,
            reverse_dns_name: &self.reverse_dns_name,
            envelope_sender: &self.sample_envelope_sender,
            from: &self.sample_from,
            helo: &self.sample_helo,
            first_seen: self.first_seen,
        }
    }
}

fn interval(duration: Duration) -> String {
    format!("{} milliseconds", duration.as_millis())
}

impl SenderAlerts {
    /// Sends the new-server alert for row `id` if nobody has (and nobody is sending it now), or
    /// puts it in the company's next digest when the company's budget is spent.
    pub async fn alert_admins(&self, pool: &PgPool, id: Uuid) -> Result<()> {
        let mut tx = pool.begin().await?;
        let company: Option<Uuid> = sqlx::query_scalar(
            "SELECT c.id FROM companies c JOIN sender_log s ON s.company_id = c.id
              WHERE s.id = $1 AND s.admin_notified_at IS NULL
                AND s.admin_notify_digest_since IS NULL
              FOR NO KEY UPDATE OF c",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(company) = company else {
            return Ok(());
        };
        let singles: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sender_log
              WHERE company_id = $1 AND admin_notify_digest_since IS NULL AND id <> $2
                AND (admin_notified_at > now() - $3::interval
                     OR (admin_notified_at IS NULL AND admin_notify_claimed_until > now()))",
        )
        .bind(company)
        .bind(id)
        .bind(interval(self.budget.window))
        .fetch_one(&mut *tx)
        .await?;
        if singles >= i64::from(self.budget.limit) {
            sqlx::query(
                "UPDATE sender_log SET admin_notify_digest_since = now()
                  WHERE id = $1 AND admin_notified_at IS NULL",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            tracing::info!(%id, %company, "new mail server alert goes into the digest: the company's alert budget is spent");
            return Ok(());
        }
        let claimed: Option<Claimed> = sqlx::query_as(&format!(
            "UPDATE sender_log s SET admin_notify_claimed_until = now() + interval '{LEASE}'
               FROM companies c
              WHERE s.id = $1 AND c.id = s.company_id AND s.admin_notified_at IS NULL
                AND (s.admin_notify_claimed_until IS NULL OR s.admin_notify_claimed_until < now())
              RETURNING s.id, host(s.ip) AS ip, s.first_seen, s.sample_envelope_sender,
                        s.sample_from, s.sample_helo, s.reverse_dns_name,
                        c.name AS company_name, c.admin_emails"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        let Some(row) = claimed else {
            return Ok(());
        };
        let result = if row.admin_emails.is_empty() {
            Err("no admin email address configured".to_owned())
        } else {
            // One message to every admin: one SMTP transaction, so a failure never leaves some
            // admins alerted and the retry alerting them again.
            self.mailer
                .send(&row.admin_emails, SUBJECT, new_server_body(&row.server()))
                .await
                .map_err(|failure| failure.message)
        };
        settle(pool, &[id], result).await
    }

    /// Sends one digest to `company`'s admins listing the servers waiting for it.
    async fn send_digest(&self, pool: &PgPool, company: Uuid) -> Result<()> {
        let rows: Vec<Claimed> = sqlx::query_as(&format!(
            "WITH due AS (
                 SELECT id FROM sender_log
                  WHERE company_id = $1 AND admin_notified_at IS NULL
                    AND admin_notify_digest_since IS NOT NULL
                    AND (admin_notify_claimed_until IS NULL OR admin_notify_claimed_until < now())
                  ORDER BY first_seen LIMIT {DIGEST_MAX_SERVERS}
                  FOR UPDATE SKIP LOCKED)
             UPDATE sender_log s SET admin_notify_claimed_until = now() + interval '{LEASE}'
               FROM companies c, due
              WHERE s.id = due.id AND c.id = s.company_id
              RETURNING s.id, host(s.ip) AS ip, s.first_seen, s.sample_envelope_sender,
                        s.sample_from, s.sample_helo, s.reverse_dns_name,
                        c.name AS company_name, c.admin_emails"
        ))
        .bind(company)
        .fetch_all(pool)
        .await?;
        let Some(first) = rows.first() else {
            return Ok(());
        };
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let result = if first.admin_emails.is_empty() {
            Err("no admin email address configured".to_owned())
        } else {
            let servers: Vec<NewServer<'_>> = rows.iter().map(Claimed::server).collect();
            self.mailer
                .send(
                    &first.admin_emails,
                    DIGEST_SUBJECT,
                    new_servers_digest_body(&first.company_name, &servers, self.budget.limit),
                )
                .await
                .map_err(|failure| failure.message)
        };
        settle(pool, &ids, result).await
    }

    /// Retries the single alerts that failed, and sends the digests that are due, every
    /// `interval`, until `stop` is cancelled.
    pub async fn retry_loop(
        self,
        pool: PgPool,
        interval: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            if let Err(error) = self.retry_once(&pool).await {
                tracing::warn!(%error, "cannot read the sender log for alert retries");
            }
        }
    }

    async fn retry_once(&self, pool: &PgPool) -> Result<()> {
        let due: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM sender_log
              WHERE admin_notified_at IS NULL AND admin_notify_digest_since IS NULL
                AND (admin_notify_claimed_until IS NULL OR admin_notify_claimed_until < now())
              ORDER BY first_seen LIMIT 100",
        )
        .fetch_all(pool)
        .await?;
        for id in due {
            if let Err(error) = self.alert_admins(pool, id).await {
                tracing::warn!(%id, %error, "alert retry failed");
            }
        }
        let digests: Vec<Uuid> = sqlx::query_scalar(
            "SELECT company_id FROM sender_log
              WHERE admin_notified_at IS NULL AND admin_notify_digest_since IS NOT NULL
              GROUP BY company_id
             HAVING min(admin_notify_digest_since) <= now() - $1::interval
              LIMIT 100",
        )
        .bind(interval(self.budget.window))
        .fetch_all(pool)
        .await?;
        for company in digests {
            if let Err(error) = self.send_digest(pool, company).await {
                tracing::warn!(%company, %error, "new mail servers digest failed");
            }
        }
        Ok(())
    }
}

/// Records the smarthost's answer for the rows of one message: sent, or the error (the lease is
/// released so the retry loop tries again).
async fn settle(
    pool: &PgPool,
    ids: &[Uuid],
    result: std::result::Result<(), String>,
) -> Result<()> {
    match result {
        Ok(()) => {
            sqlx::query(
                "UPDATE sender_log SET admin_notified_at = now(), admin_notify_error = NULL,
                        admin_notify_claimed_until = NULL
                  WHERE id = ANY($1)",
            )
            .bind(ids)
            .execute(pool)
            .await?;
        }
        Err(error) => {
            tracing::warn!(servers = ids.len(), %error, "new mail server alert not sent; will retry");
            sqlx::query(
                "UPDATE sender_log SET admin_notify_error = $2, admin_notify_claimed_until = NULL
                  WHERE id = ANY($1)",
            )
            .bind(ids)
            .bind(error)
            .execute(pool)
            .await?;
        }
    }
    Ok(())
}
