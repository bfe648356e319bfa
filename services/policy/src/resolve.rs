//! Sender resolution straight from Postgres, and the cache rebuild.

use std::net::IpAddr;

use email2sms_domain::EmailAddress;
use email2sms_proto::policy::v1 as pb;
use ipnet::IpNet;
use sqlx::PgPool;

use crate::SenderResolutionApi;
use crate::entries::{EntryKind, EntryRow, matchable_sql, select_sql};
use crate::error::{Error, Result};
use crate::model::timestamp;
use crate::store;

/// Resolves a sender in the product's order: exact email entry, else the VERIFIED entry of the
/// exact From domain (a subdomain is its own entry, so `sales.example.com` does not match
/// `example.com`), else the IP entry with the longest prefix containing the client IP.
pub async fn resolve_sender(
    pool: &PgPool,
    from: &EmailAddress,
    client_ip: IpAddr,
) -> Result<Option<pb::CompiledSender>> {
    let version = store::current_version(pool).await?;
    let email = format!(
        "{} WHERE e.address = $1 AND {}",
        select_sql(EntryKind::Email),
        matchable_sql(EntryKind::Email)
    );
    if let Some(row) = sqlx::query_as::<_, EntryRow>(&email)
        .bind(from.as_str())
        .fetch_optional(pool)
        .await?
    {
        return Ok(Some(row.compiled(EntryKind::Email, version)));
    }
    let domain = format!(
        "{} WHERE e.name = $1 AND {}",
        select_sql(EntryKind::Domain),
        matchable_sql(EntryKind::Domain)
    );
    if let Some(row) = sqlx::query_as::<_, EntryRow>(&domain)
        .bind(from.domain().as_str())
        .fetch_optional(pool)
        .await?
    {
        return Ok(Some(row.compiled(EntryKind::Domain, version)));
    }
    // Networks never overlap across companies and are unique, so the longest prefix is one row.
    let ip = format!(
        "{} WHERE e.network >>= $1::inet ORDER BY masklen(e.network) DESC LIMIT 1",
        select_sql(EntryKind::Ip)
    );
    let row = sqlx::query_as::<_, EntryRow>(&ip)
        .bind(IpNet::from(email2sms_domain::canonical_ip(client_ip)))
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|row| row.compiled(EntryKind::Ip, version)))
}

impl SenderResolutionApi {
    pub(crate) async fn resolve(
        &self,
        request: pb::ResolveSenderRequest,
    ) -> Result<pb::ResolveSenderResponse> {
        let mut violations = Vec::new();
        let from = if request.from_address.trim().is_empty() {
            violations.push(crate::error::Violation::new(
                "from_address",
                "REQUIRED",
                "from_address is required",
            ));
            None
        } else {
            match EmailAddress::parse(request.from_address.trim()) {
                Ok(a) => Some(a),
                Err(e) => {
                    violations.push(crate::error::Violation::new(
                        "from_address",
                        e.code(),
                        e.to_string(),
                    ));
                    None
                }
            }
        };
        let ip = match request.client_ip.trim().parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                violations.push(crate::error::Violation::new(
                    "client_ip",
                    "INVALID_IP",
                    "client_ip must be an IP address in text form",
                ));
                None
            }
        };
        let (Some(from), Some(ip)) = (from, ip) else {
            return Err(Error::InvalidArgument(violations));
        };
        let sender = resolve_sender(&self.pool, &from, ip).await?;
        let version = match &sender {
            Some(s) => s.version,
            None => store::current_version(&self.pool).await?,
        };
        Ok(pb::ResolveSenderResponse { sender, version })
    }

    pub(crate) async fn rebuild_cache(
        &self,
        request: pb::RebuildCacheRequest,
    ) -> Result<pb::RebuildCacheResponse> {
        let company = if request.company_id.is_empty() {
            None
        } else {
            let mut conn = self.pool.acquire().await?;
            let company = store::company(&mut conn, &request.company_id).await?;
            Some((company.id, company.public_id))
        };
        let stats = self.cache.rebuild(&self.pool, company).await?;
        Ok(pb::RebuildCacheResponse {
            keys_written: stats.keys_written,
            keys_removed: stats.keys_removed,
            version: stats.version,
            duration: prost_types::Duration::try_from(stats.duration).ok(),
            complete_time: Some(timestamp(chrono::Utc::now())),
        })
    }
}
