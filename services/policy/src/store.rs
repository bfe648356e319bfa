//! Postgres helpers every handler shares: the tenant lookup, the compile version, idempotency keys
//! and reading entries.

use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::cache::Keys;
use crate::entries::{EntryKind, EntryRow, select_sql, visible_sql};
use crate::error::{Error, Result};

/// The company a request names: its row id (what every query filters by) and its public id
/// (what the API shows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompanyRef {
    pub id: Uuid,
    pub public_id: String,
}

/// The company's row id for `public_id`: our UUID, or the platform's own id when it is not one.
/// A company that does not exist is NOT_FOUND.
pub async fn company(conn: &mut PgConnection, public_id: &str) -> Result<CompanyRef> {
    find_company(conn, public_id, false)
        .await?
        .ok_or(Error::NotFound("company"))
}

/// The company, or `None`; with `lock`, the row is locked for the transaction.
pub async fn find_company(
    conn: &mut PgConnection,
    public_id: &str,
    lock: bool,
) -> Result<Option<CompanyRef>> {
    let id = crate::tenancy::parse_company_id("company_id", public_id)?;
    let lock = if lock { " FOR UPDATE" } else { "" };
    // Company ids are UUIDs (`tenancy::parse_company_id`); a row with a non-UUID `external_id`
    // from before that rule could never have had a domain (verification keys on UUIDs) and is
    // not reachable any more.
    let found: Option<(Uuid, String)> = sqlx::query_as(&format!(
        "SELECT id, id::text FROM companies WHERE id = $1 AND external_id IS NULL{lock}"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(found.map(|(id, public_id)| CompanyRef { id, public_id }))
}

/// Bumps the compile version inside the writing transaction (the row lock orders versions in
/// commit order) and returns it.
pub async fn bump_version(conn: &mut PgConnection) -> Result<u64> {
    let version: i64 = sqlx::query_scalar(
        "UPDATE cache_version SET version = version + 1, updated_at = now() RETURNING version",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(u64::try_from(version).unwrap_or(0))
}

pub async fn current_version(pool: &PgPool) -> Result<u64> {
    let version: i64 = sqlx::query_scalar("SELECT version FROM cache_version")
        .fetch_one(pool)
        .await?;
    Ok(u64::try_from(version).unwrap_or(0))
}

/// FNV-1a of the encoded request: detects a request_id reused for a different request.
pub fn request_hash(encoded: &[u8]) -> Vec<u8> {
    encoded
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
        })
        .to_be_bytes()
        .to_vec()
}

/// An idempotent create in progress: look it up first, store it with the resource.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub method: &'static str,
    pub request_id: Uuid,
    pub hash: Vec<u8>,
}

impl Idempotency {
    /// Serialises concurrent retries of the same key and returns the resource the first call
    /// created, if any. The same key with a different request is INVALID_ARGUMENT.
    pub async fn existing(&self, conn: &mut PgConnection, company: Uuid) -> Result<Option<Uuid>> {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("{company}/{}/{}", self.method, self.request_id))
            .execute(&mut *conn)
            .await?;
        let found: Option<(Uuid, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT resource_id, request_hash FROM idempotency_keys
             WHERE company_id = $1 AND method = $2 AND request_id = $3
               AND created_at > now() - interval '24 hours'",
        )
        .bind(company)
        .bind(self.method)
        .bind(self.request_id.to_string())
        .fetch_optional(&mut *conn)
        .await?;
        match found {
            None => Ok(None),
            Some((id, Some(hash))) if hash != self.hash => {
                let _ = id;
                Err(Error::invalid(
                    "request_id",
                    "REQUEST_ID_REUSED",
                    "this request_id was already used for a different request; choose a new one",
                ))
            }
            Some((id, _)) => Ok(Some(id)),
        }
    }

    pub async fn store(
        &self,
        conn: &mut PgConnection,
        company: Uuid,
        resource: Uuid,
    ) -> Result<()> {
        // An expired key of the same id is replaced: keys are promised for 24 hours only.
        sqlx::query(
            "INSERT INTO idempotency_keys (company_id, method, request_id, resource_id, request_hash)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (company_id, method, request_id)
             DO UPDATE SET resource_id = EXCLUDED.resource_id,
                           request_hash = EXCLUDED.request_hash, created_at = now()",
        )
        .bind(company)
        .bind(self.method)
        .bind(self.request_id.to_string())
        .bind(resource)
        .bind(&self.hash)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

/// One entry of `company` by id; another company's id is NOT_FOUND.
pub async fn entry(
    conn: &mut PgConnection,
    kind: EntryKind,
    company: Uuid,
    id: Uuid,
    what: &'static str,
) -> Result<EntryRow> {
    let sql = format!(
        "{} WHERE e.company_id = $1 AND e.id = $2 AND {}",
        select_sql(kind),
        visible_sql(kind)
    );
    sqlx::query_as::<_, EntryRow>(&sql)
        .bind(company)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(Error::NotFound(what))
}

/// Adds the email entries of every company at the domains in `keys` (their readiness depends on
/// who has the domain verified): after a domain's state or owner changed. The set's company then
/// becomes "several".
pub async fn add_emails_at_domains(conn: &mut PgConnection, keys: &mut Keys) -> Result<()> {
    if keys.domains.is_empty() {
        return Ok(());
    }
    let domains: Vec<String> = keys.domains.iter().cloned().collect();
    // The expression and predicate of `email_addresses_domain_idx`.
    let addresses: Vec<String> = sqlx::query_scalar(
        "SELECT address FROM email_addresses
          WHERE split_part(address, '@', 2) = ANY($1) AND deleted_at IS NULL",
    )
    .bind(&domains)
    .fetch_all(&mut *conn)
    .await?;
    if !addresses.is_empty() {
        keys.company_id.clear();
        keys.emails.extend(addresses);
    }
    Ok(())
}

/// The keys of every entry of `company` matching `condition` (over the aliases of
/// [`select_sql`]; `$2` is bound to `arg`), for recompiling after a change that affects many.
pub async fn keys_where(
    conn: &mut PgConnection,
    company: &CompanyRef,
    condition: &str,
    arg: Option<Uuid>,
) -> Result<Keys> {
    let mut keys = Keys::for_company(&company.public_id);
    for kind in [EntryKind::Email, EntryKind::Domain, EntryKind::Ip] {
        let mut builder: QueryBuilder<Postgres> = QueryBuilder::new(select_sql(kind));
        builder.push(" WHERE e.company_id = ");
        builder.push_bind(company.id);
        builder.push(" AND ");
        builder.push(visible_sql(kind));
        if let Some(arg) = arg {
            builder.push(" AND ");
            // `condition` uses `$ARG` for its one argument.
            let parts: Vec<&str> = condition.split("$ARG").collect();
            for (i, part) in parts.iter().enumerate() {
                builder.push(*part);
                if i + 1 < parts.len() {
                    builder.push_bind(arg);
                }
            }
        } else if !condition.is_empty() {
            builder.push(" AND ");
            builder.push(condition);
        }
        let rows: Vec<EntryRow> = builder.build_query_as().fetch_all(&mut *conn).await?;
        for row in &rows {
            keys.add_row(kind, row);
        }
    }
    Ok(keys)
}
