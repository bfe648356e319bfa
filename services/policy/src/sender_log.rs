//! The sender log: every mail server (client IP) seen per company, from ingest's
//! `sender.ip_seen` events, and the one admin alert per new server.
//!
//! "Exactly once" rests on two things. The unique (company, IP) constraint with
//! `INSERT … ON CONFLICT … RETURNING (xmax = 0)` tells exactly one of any number of concurrent
//! reports that the IP is new; only that report tries the alert. And the alert is sent only by
//! whoever takes the row's lease (`admin_notify_claimed_until`) while `admin_notified_at` is NULL,
//! so the retry loop and a first sight can never both send it; `admin_notified_at` is set right
//! after the smarthost accepted the message.

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use email2sms_proto::policy::v1 as pb;
use email2sms_proto::queue::v1::SenderIpSeen;
use ipnet::IpNet;
use sqlx::PgPool;
use uuid::Uuid;

use crate::PolicyApi;
use crate::error::{Error, Result};
use crate::mail::{Mailer, NewServer, new_server_body};
use crate::model::{opt_timestamp, page_size, timestamp};
use crate::paging;
use crate::store;

const SUBJECT: &str = "Email2SMS: a new mail server sent email for your company";

/// Records one report. Returns the row and whether this report created it (the IP is new).
pub async fn record(pool: &PgPool, event: &SenderIpSeen) -> Result<(Uuid, bool)> {
    let ip: IpAddr = event.client_ip.trim().parse().map_err(|_| {
        Error::invalid("client_ip", "INVALID_IP", "client_ip must be an IP address")
    })?;
    // IPv4-mapped IPv6 is the same server as its IPv4 address: one row, shown as IPv4.
    let ip = ip.to_canonical();
    let mut conn = pool.acquire().await?;
    let company = store::find_company(&mut conn, &event.company_id, false)
        .await?
        .ok_or(Error::NotFound("company"))?;
    let (id, inserted): (Uuid, bool) = sqlx::query_as(
        "INSERT INTO sender_log (company_id, ip, sample_envelope_sender, sample_from, sample_helo,
                                 reverse_dns_name)
         VALUES ($1, $2::inet, $3, $4, $5, $6)
         ON CONFLICT (company_id, ip) DO UPDATE
            SET last_seen = greatest(sender_log.last_seen, now()),
                seen_count = sender_log.seen_count + 1,
                reverse_dns_name = CASE WHEN sender_log.reverse_dns_name = ''
                                        THEN EXCLUDED.reverse_dns_name
                                        ELSE sender_log.reverse_dns_name END
         RETURNING id, (xmax = 0)",
    )
    .bind(company.id)
    .bind(ip.to_string())
    .bind(&event.envelope_sender)
    .bind(&event.from_address)
    .bind(&event.helo)
    .bind(&event.reverse_dns_name)
    .fetch_one(&mut *conn)
    .await?;
    Ok((id, inserted))
}

/// The row's lease and what the alert says, when this caller won the lease.
#[derive(sqlx::FromRow)]
struct Claimed {
    ip: String,
    first_seen: DateTime<Utc>,
    sample_envelope_sender: String,
    sample_from: String,
    sample_helo: String,
    reverse_dns_name: String,
    company_name: String,
    admin_emails: Vec<String>,
}

/// Sends the new-server alert for row `id` if nobody has (and nobody is sending it now).
pub async fn alert_admins(pool: &PgPool, mailer: &Mailer, id: Uuid) -> Result<()> {
    // The lease outlives one SMTP conversation (15 s timeout) with a wide margin.
    let claimed: Option<Claimed> = sqlx::query_as(
        "UPDATE sender_log s SET admin_notify_claimed_until = now() + interval '5 minutes'
           FROM companies c
          WHERE s.id = $1 AND c.id = s.company_id AND s.admin_notified_at IS NULL
            AND (s.admin_notify_claimed_until IS NULL OR s.admin_notify_claimed_until < now())
          RETURNING host(s.ip) AS ip, s.first_seen, s.sample_envelope_sender, s.sample_from,
                    s.sample_helo, s.reverse_dns_name, c.name AS company_name, c.admin_emails",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some(row) = claimed else {
        return Ok(());
    };
    let result = if row.admin_emails.is_empty() {
        Err("no admin email address configured".to_owned())
    } else {
        let body = new_server_body(&NewServer {
            company: &row.company_name,
            ip: &row.ip,
            reverse_dns_name: &row.reverse_dns_name,
            envelope_sender: &row.sample_envelope_sender,
            from: &row.sample_from,
            helo: &row.sample_helo,
            first_seen: row.first_seen,
        });
        // One message to every admin: one SMTP transaction, so a failure never leaves some admins
        // alerted and the retry alerting them again.
        mailer
            .send(&row.admin_emails, SUBJECT, body)
            .await
            .map_err(|failure| failure.message)
    };
    match result {
        Ok(()) => {
            sqlx::query(
                "UPDATE sender_log SET admin_notified_at = now(), admin_notify_error = NULL,
                        admin_notify_claimed_until = NULL
                  WHERE id = $1",
            )
            .bind(id)
            .execute(pool)
            .await?;
        }
        Err(error) => {
            tracing::warn!(%id, %error, "new mail server alert not sent; will retry");
            sqlx::query(
                "UPDATE sender_log SET admin_notify_error = $2, admin_notify_claimed_until = NULL
                  WHERE id = $1",
            )
            .bind(id)
            .bind(error)
            .execute(pool)
            .await?;
        }
    }
    Ok(())
}

/// Retries the alerts that failed (rows with `admin_notified_at` NULL and no live lease), every
/// `interval`, until `stop` is cancelled.
pub async fn retry_loop(
    pool: PgPool,
    mailer: Mailer,
    interval: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let due: Vec<Uuid> = match sqlx::query_scalar(
            "SELECT id FROM sender_log
              WHERE admin_notified_at IS NULL
                AND (admin_notify_claimed_until IS NULL OR admin_notify_claimed_until < now())
              ORDER BY first_seen LIMIT 100",
        )
        .fetch_all(&pool)
        .await
        {
            Ok(due) => due,
            Err(error) => {
                tracing::warn!(%error, "cannot read the sender log for alert retries");
                continue;
            }
        };
        for id in due {
            if let Err(error) = alert_admins(&pool, &mailer, id).await {
                tracing::warn!(%id, %error, "alert retry failed");
            }
        }
    }
}

#[derive(sqlx::FromRow)]
struct LogRow {
    id: Uuid,
    ip: String,
    first_seen: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    seen_count: i64,
    sample_envelope_sender: String,
    sample_from: String,
    sample_helo: String,
    reverse_dns_name: String,
    admin_notified_at: Option<DateTime<Utc>>,
    admin_notify_error: Option<String>,
}

impl PolicyApi {
    pub(crate) async fn list_sender_log(
        &self,
        request: pb::ListSenderLogRequest,
    ) -> Result<pb::ListSenderLogResponse> {
        let limit = page_size(request.page_size, "page_size")?;
        let range: Option<IpNet> = match request.client_ip_range.trim() {
            "" => None,
            text => Some(
                text.parse::<IpNet>()
                    .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        Error::invalid(
                            "client_ip_range",
                            "INVALID_IP_RANGE",
                            "client_ip_range must be an IP address or a CIDR such as 192.0.2.0/24",
                        )
                    })?,
            ),
        };
        let seen_after: Option<DateTime<Utc>> = match request.seen_after_time {
            None => None,
            Some(t) => Some(
                DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
                    .ok_or_else(|| {
                        Error::invalid(
                            "seen_after_time",
                            "INVALID_TIME",
                            "seen_after_time is out of range",
                        )
                    })?,
            ),
        };
        let filters = format!(
            "range={};after={}",
            range.map(|r| r.to_string()).unwrap_or_default(),
            seen_after.map(|t| t.to_rfc3339()).unwrap_or_default()
        );
        let after = paging::decode(&request.page_token, &filters)?;
        let after_time: Option<DateTime<Utc>> = match &after {
            None => None,
            Some(key) => Some(
                DateTime::parse_from_rfc3339(&key.key)
                    .map_err(|_| {
                        Error::invalid(
                            "page_token",
                            "INVALID_PAGE_TOKEN",
                            "page_token is not one this list returned; start again without it",
                        )
                    })?
                    .with_timezone(&Utc),
            ),
        };
        let mut conn = self.pool.acquire().await?;
        let company = store::company(&mut conn, &request.company_id).await?;
        let rows: Vec<LogRow> = sqlx::query_as(
            "SELECT id, host(ip) AS ip, first_seen, last_seen, seen_count, sample_envelope_sender,
                    sample_from, sample_helo, reverse_dns_name, admin_notified_at,
                    admin_notify_error
               FROM sender_log
              WHERE company_id = $1
                AND ($2::inet IS NULL OR ip <<= $2::inet)
                AND ($3::timestamptz IS NULL OR last_seen >= $3)
                AND ($4::timestamptz IS NULL OR (first_seen, id) < ($4, $5))
              ORDER BY first_seen DESC, id DESC
              LIMIT $6",
        )
        .bind(company.id)
        .bind(range.map(|r| r.to_string()))
        .bind(seen_after)
        .bind(after_time)
        .bind(after.as_ref().map(|k| k.id).unwrap_or_default())
        .bind(limit + 1)
        .fetch_all(&mut *conn)
        .await?;
        let (rows, next_page_token) = paging::finish(rows, limit, &filters, |r| {
            (
                r.first_seen
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                r.id,
            )
        });
        let entries = rows
            .into_iter()
            .map(|r| pb::SenderLogEntry {
                sender_log_entry_id: r.id.to_string(),
                company_id: company.public_id.clone(),
                client_ip: r.ip,
                first_seen_time: Some(timestamp(r.first_seen)),
                last_seen_time: Some(timestamp(r.last_seen)),
                seen_count: u64::try_from(r.seen_count).unwrap_or(0),
                sample_envelope_sender: r.sample_envelope_sender,
                sample_from_address: r.sample_from,
                sample_helo: r.sample_helo,
                reverse_dns_name: r.reverse_dns_name,
                admin_notified: r.admin_notified_at.is_some(),
                admin_notify_time: opt_timestamp(r.admin_notified_at),
                admin_notify_error: if r.admin_notified_at.is_some() {
                    String::new()
                } else {
                    r.admin_notify_error.unwrap_or_default()
                },
            })
            .collect();
        Ok(pb::ListSenderLogResponse {
            entries,
            next_page_token,
        })
    }
}
