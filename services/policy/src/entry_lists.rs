//! The one List path of email addresses, IP addresses and domains: filters, keyset paging over
//! each kind's sort key, and presentation by the caller.

use ipnet::IpNet;
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use crate::PolicyApi;
use crate::companies::like_escape;
use crate::entries::{EntryKind, EntryRow, ready_sql, select_sql, visible_sql};
use crate::error::Result;
use crate::model::{page_size, parse_opt_id};
use crate::store;

/// Filters of the three List RPCs, applied over the aliases of [`select_sql`].
#[derive(Debug, Default)]
pub(crate) struct EntryFilters {
    pub(crate) policy: Option<Uuid>,
    pub(crate) forwarding_user: Option<Uuid>,
    pub(crate) ready: Option<bool>,
    pub(crate) import: Option<Uuid>,
    pub(crate) query: String,
    pub(crate) state: Option<&'static str>,
    pub(crate) contains_ip: Option<std::net::IpAddr>,
}

impl EntryFilters {
    /// The filters all three List RPCs share; the kind-specific ones are set on the result.
    pub(crate) fn common(
        security_policy_id: &str,
        forwarding_user_id: &str,
        ready: Option<bool>,
    ) -> Result<EntryFilters> {
        Ok(EntryFilters {
            policy: parse_opt_id("security_policy_id", security_policy_id)?,
            forwarding_user: parse_opt_id("forwarding_user_id", forwarding_user_id)?,
            ready,
            ..EntryFilters::default()
        })
    }

    fn fingerprint(&self) -> String {
        format!("{self:?}")
    }
}

/// The sort expression of each entry kind's list (and page token key).
fn sort_sql(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::Email => "e.address",
        EntryKind::Domain => "e.name",
        EntryKind::Ip => "e.network",
    }
}

/// One page of a company's entries of `kind`, each presented by `present`, and the next page
/// token: the one List path of emails, IP addresses and domains.
pub(crate) async fn list_entries<T>(
    api: &PolicyApi,
    kind: EntryKind,
    company_id: &str,
    filters: EntryFilters,
    page_size_requested: i32,
    page_token: &str,
    present: fn(&EntryRow) -> T,
) -> Result<(Vec<T>, String)> {
    let limit = page_size(page_size_requested, "page_size")?;
    let fingerprint = filters.fingerprint();
    let mut conn = api.pool.acquire().await?;
    let company = store::company(&mut conn, company_id).await?;
    let pager = api.pager(company.id).await?;
    let after = pager.decode(page_token, &fingerprint)?;
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(select_sql(kind));
    q.push(" WHERE e.company_id = ").push_bind(company.id);
    q.push(" AND ").push(visible_sql(kind));
    if let Some(policy) = filters.policy {
        q.push(" AND e.policy_id = ").push_bind(policy);
    }
    if let Some(user) = filters.forwarding_user {
        q.push(" AND e.forwarding_user_id = ").push_bind(user);
    }
    if let Some(ready) = filters.ready {
        q.push(if ready { " AND " } else { " AND NOT " })
            .push(ready_sql(kind));
    }
    if let Some(import) = filters.import {
        q.push(" AND e.import_id = ").push_bind(import);
    }
    if !filters.query.is_empty() {
        q.push(" AND ")
            .push(sort_sql(kind))
            .push(" ILIKE ")
            .push_bind(format!("%{}%", like_escape(&filters.query.to_lowercase())));
    }
    if let Some(state) = filters.state {
        q.push(" AND e.state = ").push_bind(state);
    }
    if let Some(ip) = filters.contains_ip {
        q.push(" AND e.network >>= ")
            .push_bind(IpNet::from(ip))
            .push("::inet");
    }
    if let Some(after) = &after {
        q.push(" AND (").push(sort_sql(kind)).push(", e.id) > (");
        q.push_bind(after.key.clone());
        q.push(if kind == EntryKind::Ip {
            "::cidr, "
        } else {
            ", "
        });
        q.push_bind(after.id).push(")");
    }
    q.push(" ORDER BY ")
        .push(sort_sql(kind))
        .push(", e.id LIMIT ")
        .push_bind(limit + 1);
    let rows: Vec<EntryRow> = q.build_query_as().fetch_all(&mut *conn).await?;
    let (rows, next_page_token) =
        pager.finish(rows, limit, &fingerprint, |r| (r.matched_value(), r.id));
    Ok((rows.iter().map(present).collect(), next_page_token))
}
