//! The sender log: every mail server (client IP) that sent a company's authenticated mail, from
//! ingest's `sender.ip_seen` events (each counts the mail of a few seconds), and its listing.
//!
//! "One alert per new server" starts here: the unique (company, IP) constraint with
//! `INSERT … ON CONFLICT … RETURNING (xmax = 0)` tells exactly one of any number of concurrent
//! reports that the IP is new; only that report tries the alert ([`crate::sender_alerts`] sends it
//! at most once, within the company's alert budget).

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use email2sms_proto::policy::v1 as pb;
use email2sms_proto::queue::v1::SenderIpSeen;
use ipnet::IpNet;
use sqlx::PgPool;
use uuid::Uuid;

use crate::PolicyApi;
use crate::error::{Error, Result};
use crate::model::{opt_timestamp, page_size, timestamp};
use crate::paging;
use crate::store;

/// The accepted mails one report counts. An ingest older than the `accepted_messages` field sent
/// one report per accepted first sight, which counts as one.
fn accepted_messages(event: &SenderIpSeen) -> u32 {
    event.accepted_messages.max(u32::from(event.accepted))
}

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
                                 reverse_dns_name, seen_count)
         VALUES ($1, $2::inet, $3, $4, $5, $6, $7)
         ON CONFLICT (company_id, ip) DO UPDATE
            SET last_seen = greatest(sender_log.last_seen, now()),
                seen_count = sender_log.seen_count + EXCLUDED.seen_count,
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
    .bind(i64::from(accepted_messages(event)))
    .fetch_one(&mut *conn)
    .await?;
    Ok((id, inserted))
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
    in_digest: bool,
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
        let mut conn = self.pool.acquire().await?;
        let company = store::company(&mut conn, &request.company_id).await?;
        let pager = self.pager(company.id).await?;
        let after = pager.decode(&request.page_token, &filters)?;
        let after_time: Option<DateTime<Utc>> = match &after {
            None => None,
            Some(key) => Some(
                DateTime::parse_from_rfc3339(&key.key)
                    .map_err(|_| paging::invalid())?
                    .with_timezone(&Utc),
            ),
        };
        let rows: Vec<LogRow> = sqlx::query_as(
            "SELECT id, host(ip) AS ip, first_seen, last_seen, seen_count, sample_envelope_sender,
                    sample_from, sample_helo, reverse_dns_name, admin_notified_at,
                    admin_notify_error, admin_notify_digest_since IS NOT NULL AS in_digest
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
        let (rows, next_page_token) = pager.finish(rows, limit, &filters, |r| {
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
                admin_notify_in_digest: r.in_digest,
            })
            .collect();
        Ok(pb::ListSenderLogResponse {
            entries,
            next_page_token,
        })
    }
}
