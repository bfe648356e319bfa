//! What the email address, IP address and domain RPCs do alike, generic over the entry kind: the
//! Get lookup, the answer to a retried create, the end of a create or update (one entry
//! recompiled) and the removal of a Delete. What differs between the kinds (the conflict checks,
//! the columns, soft or hard delete) stays with each kind's RPCs.

use ipnet::IpNet;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::PolicyApi;
use crate::cache::Keys;
use crate::entries::{EntryKind, EntryRow};
use crate::error::{Error, Result};
use crate::model::parse_id;
use crate::store::{self, CompanyRef, Idempotency};
use crate::write::PolicyWrite;

impl PolicyApi {
    /// Get*: the entry of the company named by the request; another company's is NOT_FOUND.
    pub(crate) async fn get_entry(
        &self,
        kind: EntryKind,
        company_id: &str,
        id_field: &str,
        id: &str,
    ) -> Result<(CompanyRef, EntryRow)> {
        let id = parse_id(id_field, id)?;
        let mut conn = self.pool.acquire().await?;
        let company = store::company(&mut conn, company_id).await?;
        let row = store::entry(&mut conn, kind, company.id, id, kind.what()).await?;
        Ok((company, row))
    }
}

/// The entry a create made the first time its request id was used, if it was.
pub(crate) async fn replayed(
    conn: &mut PgConnection,
    kind: EntryKind,
    company: &CompanyRef,
    key: Option<&Idempotency>,
) -> Result<Option<EntryRow>> {
    let Some(key) = key else {
        return Ok(None);
    };
    match key.existing(conn, company.id).await? {
        Some(id) => Ok(Some(
            store::entry(conn, kind, company.id, id, kind.what()).await?,
        )),
        None => Ok(None),
    }
}

/// The end of a create (with its idempotency key) or update of the entry `id`: stores the key,
/// bumps the version, reads the entry back, commits and recompiles the entry's key.
pub(crate) async fn commit_entry(
    mut tx: PolicyWrite<'_>,
    kind: EntryKind,
    company: &CompanyRef,
    id: Uuid,
    key: Option<&Idempotency>,
) -> Result<EntryRow> {
    if let Some(key) = key {
        key.store(&mut tx, company.id, id).await?;
    }
    tx.bump_version().await?;
    let row = store::entry(&mut tx, kind, company.id, id, kind.what()).await?;
    let mut keys = Keys::for_company(&company.public_id);
    keys.add_row(kind, &row);
    tx.commit(&keys).await?;
    Ok(row)
}

/// What a Delete removed.
#[derive(Debug)]
pub(crate) struct Removed {
    /// The keys to recompile without the entry.
    pub(crate) keys: Keys,
    /// The address or domain name (None for an IP entry).
    pub(crate) key: Option<String>,
}

/// Removes the entry `id` of `company`; NOT_FOUND when the company has no such entry. Email entries are soft-deleted (the row stays so that
/// re-adding or re-importing the address revives it); IP and domain entries are deleted.
pub(crate) async fn remove_entry(
    conn: &mut PgConnection,
    kind: EntryKind,
    company: &CompanyRef,
    id: Uuid,
) -> Result<Removed> {
    let sql = match kind {
        EntryKind::Email => {
            "UPDATE email_addresses SET deleted_at = now(), updated_at = now()
             WHERE company_id = $1 AND id = $2 AND deleted_at IS NULL
             RETURNING address, NULL::cidr"
        }
        EntryKind::Ip => {
            "DELETE FROM ip_addresses WHERE company_id = $1 AND id = $2
             RETURNING NULL::text, network"
        }
        EntryKind::Domain => {
            "DELETE FROM domains WHERE company_id = $1 AND id = $2 RETURNING name, NULL::cidr"
        }
    };
    let removed: Option<(Option<String>, Option<IpNet>)> = sqlx::query_as(sql)
        .bind(company.id)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    let (key, network) = removed.ok_or(Error::NotFound(kind.what()))?;
    let mut keys = Keys::for_company(&company.public_id);
    keys.add(kind, key.as_deref(), network);
    Ok(Removed { keys, key })
}

impl PolicyApi {
    /// Delete of an email or IP entry: nothing else depends on it, so only its key is
    /// recompiled (a domain's delete also recompiles the addresses at it, see `domains.rs`).
    pub(crate) async fn delete_entry(
        &self,
        kind: EntryKind,
        company_id: &str,
        id_field: &str,
        id: &str,
    ) -> Result<()> {
        let id = parse_id(id_field, id)?;
        let mut tx = self.begin_write().await?;
        let company = store::company(&mut tx, company_id).await?;
        let removed = remove_entry(&mut tx, kind, &company, id).await?;
        tx.commit(&removed.keys).await
    }
}
