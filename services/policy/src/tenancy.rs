//! The boundaries between companies: how company ids look, how much of the internet one IP entry
//! may claim, and how a value another company holds is refused without telling anyone about that
//! company.
//!
//! # Values another company holds
//!
//! An email address, a verified domain and an IP range each route mail for one company only, so
//! creating one that another company holds has to be refused, and every such refusal tells the
//! asking tenant something about another one (before this module, a tenant found another
//! company's single IP in 47 CreateIpAddress calls by bisection, and PreviewImport judged up to
//! 200,000 guessed addresses per call). No answer can make "taken" look like "free", since a free
//! value is created, so the refusals are made as uninformative as possible and rationed:
//!
//! * every such refusal carries one neutral message ([`not_available`]) whatever the case (an
//!   address another company registered or whose domain it verified, a domain it verified, an
//!   equal or overlapping IP range), so the answer says "not available", never why;
//! * each is recorded in `conflict_refusals` and logged at WARN for the platform operator, with
//!   the value asked for and a reference that the message shows the tenant;
//! * each counts against the company's budget ([`TenancyLimits::conflict_budget`] per
//!   [`TenancyLimits::conflict_window`]). Once it is spent, every create of an entry or an import
//!   preview of the company is RESOURCE_EXHAUSTED whether or not its value is free, so the
//!   answers no longer depend on other companies' data at all. A tenant learns at most the budget
//!   in facts about others per window; a company that really owns a value it cannot register
//!   needs the operator anyway.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::model::cidr_text;
use crate::store::CompanyRef;

/// The most general IPv4 prefix an entry may claim by default: a /24 is the smallest block
/// routed between networks on the internet (longer prefixes are filtered by most operators), so
/// it is the most that one organisation's mail servers plausibly need as a unit, and anything
/// wider claims other organisations' addresses too (`0.0.0.0/0` claimed every sender and, with
/// the cross-company overlap rule, locked every other company out).
pub const DEFAULT_WIDEST_IPV4_PREFIX: u8 = 24;
/// The IPv6 counterpart: a /48 is the smallest globally routed IPv6 block and what RIRs assign
/// to one end site (one organisation's network).
pub const DEFAULT_WIDEST_IPV6_PREFIX: u8 = 48;
/// Refusals over other companies' values a company may get per window. A company setting up
/// meets one or two at most (a shared consultant's address, a relay another company also
/// registered); ten leaves room for those while a harvest of other tenants' data stops at once.
pub const DEFAULT_CONFLICT_BUDGET: u32 = 10;
/// The window of the budget: a day, so a real conflict resolved with the operator's help does
/// not stop the company for long.
pub const DEFAULT_CONFLICT_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// The company-boundary settings of the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenancyLimits {
    pub widest_ipv4_prefix: u8,
    pub widest_ipv6_prefix: u8,
    pub conflict_budget: u32,
    pub conflict_window: Duration,
}

impl Default for TenancyLimits {
    fn default() -> Self {
        TenancyLimits {
            widest_ipv4_prefix: DEFAULT_WIDEST_IPV4_PREFIX,
            widest_ipv6_prefix: DEFAULT_WIDEST_IPV6_PREFIX,
            conflict_budget: DEFAULT_CONFLICT_BUDGET,
            conflict_window: DEFAULT_CONFLICT_WINDOW,
        }
    }
}

/// What was refused, as `conflict_refusals.kind` stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictKind {
    EmailAddress,
    IpAddress,
    Domain,
    ImportRow,
}

impl ConflictKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictKind::EmailAddress => "email_address",
            ConflictKind::IpAddress => "ip_address",
            ConflictKind::Domain => "domain",
            ConflictKind::ImportRow => "import_row",
        }
    }
}

/// What a malformed company id is told, wherever it appears.
const COMPANY_ID_RULE: &str = "company_id must be the Messenger platform's company id, a UUID such as 0190f1c2-0000-7000-8000-000000000001";

/// The one check of a company id (UpsertCompany and every request naming a company): a UUID in
/// its usual 36-character form, any case.
pub fn parse_company_id(field: &str, value: &str) -> Result<Uuid> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Error::required(field));
    }
    match Uuid::try_parse(value) {
        Ok(id) if value.len() == 36 => Ok(id),
        _ => Err(Error::invalid(field, "INVALID_COMPANY_ID", COMPANY_ID_RULE)),
    }
}

/// The neutral refusal of a value another company holds (see the module documentation).
pub fn not_available(value: &str, reference: i64) -> String {
    format!(
        "{value} is not available to this company: an email address, a verified domain and an IP range each route mail for one company only. If it is yours, ask the platform operator and quote reference {reference}"
    )
}

impl TenancyLimits {
    /// Refuses a range wider than the most general prefix allowed for its family.
    pub fn check_network(&self, field: &str, net: &IpNet) -> Result<()> {
        let (limit, family) = match net {
            IpNet::V4(_) => (self.widest_ipv4_prefix, "IPv4"),
            IpNet::V6(_) => (self.widest_ipv6_prefix, "IPv6"),
        };
        if net.prefix_len() >= limit {
            return Ok(());
        }
        Err(Error::invalid(
            field,
            "RANGE_TOO_WIDE",
            format!(
                "{} is wider than an {family} range may be: at most /{limit}, which is what one organisation's mail servers sit in; register your mail servers' own addresses or their /{limit}",
                cidr_text(net)
            ),
        ))
    }

    /// Serialises the company's refusals for the transaction and answers RESOURCE_EXHAUSTED when
    /// its budget is spent; otherwise how many refusals it has left.
    pub async fn check_budget(&self, conn: &mut PgConnection, company: &CompanyRef) -> Result<u32> {
        // One lock per company, in a key space of its own: concurrent creates cannot each see
        // budget left and together overspend it.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("conflict-budget/{}", company.id))
            .execute(&mut *conn)
            .await?;
        let (used, oldest): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
            "SELECT count(*), min(created_at) FROM conflict_refusals
              WHERE company_id = $1 AND created_at > now() - make_interval(secs => $2)",
        )
        .bind(company.id)
        .bind(self.conflict_window.as_secs_f64())
        .fetch_one(&mut *conn)
        .await?;
        let used = u32::try_from(used).unwrap_or(u32::MAX);
        if used < self.conflict_budget {
            return Ok(self.conflict_budget - used);
        }
        let resume = oldest.map(|t| {
            t + chrono::Duration::from_std(self.conflict_window).unwrap_or(chrono::Duration::MAX)
        });
        Err(Error::ResourceExhausted(format!(
            "registrations of this company are paused: {used} values it asked for in the last {} were not available to it, and at most {} such refusals are allowed in that time. The platform operator has been told{}",
            humanise(self.conflict_window),
            self.conflict_budget,
            resume
                .map(|t| format!(
                    "; registering resumes at {}",
                    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ))
                .unwrap_or_default()
        )))
    }
}

/// Records refusals of `values` (one row each, in order) for the operator, logs them and returns
/// their references. The caller commits them (they must outlive the refused request).
pub async fn record(
    conn: &mut PgConnection,
    company: &CompanyRef,
    kind: ConflictKind,
    values: &[String],
) -> Result<Vec<i64>> {
    if values.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO conflict_refusals (company_id, kind, value)
         SELECT $1, $2, v FROM unnest($3::text[]) WITH ORDINALITY AS t(v, n) ORDER BY n
         RETURNING id",
    )
    .bind(company.id)
    .bind(kind.as_str())
    .bind(values)
    .fetch_all(&mut *conn)
    .await?;
    // Identity values follow insertion order, which the ORDER BY above fixes.
    ids.sort_unstable();
    for (value, id) in values.iter().zip(&ids) {
        tracing::warn!(
            company = %company.public_id,
            kind = kind.as_str(),
            value = value.as_str(),
            reference = id,
            "refused a value another company holds"
        );
    }
    Ok(ids)
}

/// Records one refusal and returns the neutral ALREADY_EXISTS for it.
pub async fn refuse(
    conn: &mut PgConnection,
    company: &CompanyRef,
    kind: ConflictKind,
    value: &str,
) -> Result<Error> {
    let ids = record(conn, company, kind, &[value.to_owned()]).await?;
    Ok(Error::AlreadyExists(not_available(
        value,
        ids.first().copied().unwrap_or_default(),
    )))
}

/// Whether a company other than `$1` has the domain of the address `$2` verified.
const DOMAIN_VERIFIED_ELSEWHERE: &str = "EXISTS (SELECT 1 FROM domains
                         WHERE name = split_part($2, '@', 2) AND state = 'verified'
                           AND company_id <> $1)";

/// Whether another company holds `address`: an enabled entry of it, or its domain verified.
pub async fn email_held_elsewhere(
    conn: &mut PgConnection,
    company: Uuid,
    address: &str,
) -> Result<bool> {
    Ok(sqlx::query_scalar(&format!(
        "SELECT EXISTS (SELECT 1 FROM email_addresses
                         WHERE address = $2 AND company_id <> $1
                           AND deleted_at IS NULL AND NOT disabled)
             OR {DOMAIN_VERIFIED_ELSEWHERE}"
    ))
    .bind(company)
    .bind(address)
    .fetch_one(&mut *conn)
    .await?)
}

/// Whether another company has the domain of `address` verified.
pub async fn domain_verified_elsewhere(
    conn: &mut PgConnection,
    company: Uuid,
    address: &str,
) -> Result<bool> {
    Ok(
        sqlx::query_scalar(&format!("SELECT {DOMAIN_VERIFIED_ELSEWHERE}"))
            .bind(company)
            .bind(address)
            .fetch_one(&mut *conn)
            .await?,
    )
}

/// Whether another company has an IP entry equal to or overlapping `network`.
pub async fn network_held_elsewhere(
    conn: &mut PgConnection,
    company: Uuid,
    network: IpNet,
) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM ip_addresses WHERE network && $2::cidr AND company_id <> $1)",
    )
    .bind(company)
    .bind(network)
    .fetch_one(&mut *conn)
    .await?)
}

/// "24 hours", "90 minutes", "45 seconds".
pub(crate) fn humanise(window: Duration) -> String {
    let secs = window.as_secs();
    if secs.is_multiple_of(3600) {
        format!("{} hours", secs / 3600)
    } else if secs.is_multiple_of(60) {
        format!("{} minutes", secs / 60)
    } else {
        format!("{secs} seconds")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn company_ids_are_hyphenated_uuids_in_any_case() {
        let id = Uuid::new_v4();
        assert_eq!(parse_company_id("company_id", &id.to_string()).unwrap(), id);
        assert_eq!(
            parse_company_id("company_id", &id.to_string().to_uppercase()).unwrap(),
            id
        );
        for bad in ["acme-1", &id.simple().to_string(), &format!("{{{id}}}")] {
            assert!(parse_company_id("company_id", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ranges_wider_than_the_limit_name_it() {
        let limits = TenancyLimits::default();
        let wide: IpNet = "0.0.0.0/0".parse().unwrap();
        let Err(Error::InvalidArgument(v)) = limits.check_network("ip_range", &wide) else {
            panic!("accepted 0.0.0.0/0");
        };
        assert!(v[0].description.contains("/24"), "{v:?}");
        assert!(
            limits
                .check_network("ip_range", &"2001:db8::/48".parse().unwrap())
                .is_ok()
        );
    }
}
