//! Security policies ("Create Email2SMS Security").

use chrono::{DateTime, Utc};
use email2sms_proto::policy::v1 as pb;
use ipnet::IpNet;
use prost::Message;
use sqlx::{PgConnection, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::PolicyApi;
use crate::cache::Keys;
use crate::error::{Error, Result, Violation};
use crate::model::{
    cidr_text, id_text, page_size, parse_id, parse_network, parse_opt_id, parse_request_id,
    security_type_enum, security_type_text, sent_from_enum, sent_from_text, text_mode_enum,
    text_mode_text, timestamp, update_paths,
};
use crate::store::{self, CompanyRef, Idempotency, keys_where, request_hash};
use crate::tenancy::TenancyLimits;

const UPDATABLE: &[&str] = &[
    "display_name",
    "security_type",
    "allowed_ip_ranges",
    "default_forwarding_user_id",
    "text_mode",
];

#[derive(Debug, sqlx::FromRow)]
struct PolicyRow {
    id: Uuid,
    name: String,
    sent_from: String,
    security_type: String,
    allowed_networks: Vec<IpNet>,
    default_forwarding_user_id: Option<Uuid>,
    text_mode: String,
    entry_count: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// The columns of [`PolicyRow`]; `entry_count` counts the entries that exist for the API.
const POLICY_SELECT: &str = "SELECT p.id, p.name, p.sent_from, p.security_type, p.allowed_networks,
        p.default_forwarding_user_id, p.text_mode,
        (SELECT count(*) FROM domains d WHERE d.policy_id = p.id)
          + (SELECT count(*) FROM email_addresses a WHERE a.policy_id = p.id AND a.deleted_at IS NULL)
          + (SELECT count(*) FROM ip_addresses i WHERE i.policy_id = p.id) AS entry_count,
        p.created_at, p.updated_at
     FROM security_policies p";

impl PolicyRow {
    fn to_proto(&self, company: &CompanyRef) -> pb::SecurityPolicy {
        pb::SecurityPolicy {
            security_policy_id: self.id.to_string(),
            company_id: company.public_id.clone(),
            display_name: self.name.clone(),
            sent_from: sent_from_enum(&self.sent_from) as i32,
            security_type: security_type_enum(&self.security_type) as i32,
            allowed_ip_ranges: self.allowed_networks.iter().map(cidr_text).collect(),
            default_forwarding_user_id: id_text(self.default_forwarding_user_id),
            text_mode: text_mode_enum(&self.text_mode) as i32,
            entry_count: u64::try_from(self.entry_count).unwrap_or(0),
            create_time: Some(timestamp(self.created_at)),
            update_time: Some(timestamp(self.updated_at)),
        }
    }
}

async fn fetch(conn: &mut PgConnection, company: Uuid, id: Uuid) -> Result<PolicyRow> {
    sqlx::query_as(&format!(
        "{POLICY_SELECT} WHERE p.company_id = $1 AND p.id = $2"
    ))
    .bind(company)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::NotFound("security policy"))
}

fn parse_security_type(value: i32) -> Result<pb::SecurityType> {
    pb::SecurityType::try_from(value).map_err(|_| {
        Error::invalid(
            "security_policy.security_type",
            "UNKNOWN_ENUM",
            "unknown security_type",
        )
    })
}

fn parse_text_mode(value: i32) -> Result<pb::TextMode> {
    pb::TextMode::try_from(value).map_err(|_| {
        Error::invalid(
            "security_policy.text_mode",
            "UNKNOWN_ENUM",
            "unknown text_mode",
        )
    })
}

/// Most allowed ranges of one policy (the schema's `security_policies_allowed_networks_valid`).
const MAX_ALLOWED_RANGES: usize = 1000;

/// Validates allowed IP ranges (canonical CIDRs, host bits refused, none wider than an IP entry
/// may be, no duplicates). More than the bound is refused before any range is read.
fn parse_ranges(ranges: &[String], limits: &TenancyLimits) -> Result<Vec<IpNet>> {
    let mut violations = Vec::new();
    let mut nets = Vec::new();
    if ranges.len() > MAX_ALLOWED_RANGES {
        return Err(Error::invalid(
            "security_policy.allowed_ip_ranges",
            "TOO_MANY",
            format!(
                "at most {MAX_ALLOWED_RANGES} allowed IP ranges; {} were given",
                ranges.len()
            ),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, range) in ranges.iter().enumerate() {
        let field = format!("security_policy.allowed_ip_ranges[{i}]");
        match parse_network(&field, range.trim())
            .and_then(|net| limits.check_network(&field, &net).map(|()| net))
        {
            Ok(net) => {
                if seen.insert(net) {
                    nets.push(net);
                }
            }
            Err(Error::InvalidArgument(mut v)) => violations.append(&mut v),
            Err(other) => return Err(other),
        }
    }
    if violations.is_empty() {
        Ok(nets)
    } else {
        Err(Error::InvalidArgument(violations))
    }
}

/// "By IP Addresses" needs at least one range; every other type must have none.
fn check_ranges_fit_type(security_type: &str, nets: &[IpNet]) -> Result<()> {
    match (security_type == "by_ip_addresses", nets.is_empty()) {
        (true, true) => Err(Error::invalid(
            "security_policy.allowed_ip_ranges",
            "REQUIRED_FOR_BY_IP_ADDRESSES",
            "a \"By IP Addresses\" policy needs at least one IP or CIDR of your mail server",
        )),
        (false, false) => Err(Error::invalid(
            "security_policy.allowed_ip_ranges",
            "ONLY_FOR_BY_IP_ADDRESSES",
            "allowed_ip_ranges apply only to \"By IP Addresses\" policies; send them empty (and include allowed_ip_ranges in update_mask when changing the type)",
        )),
        _ => Ok(()),
    }
}

fn check_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.chars().count() > 200 {
        return Err(Error::invalid(
            "security_policy.display_name",
            "TOO_LONG",
            "display_name is at most 200 characters",
        ));
    }
    Ok(name.to_owned())
}

impl PolicyApi {
    pub(crate) async fn create_security_policy(
        &self,
        request: pb::CreateSecurityPolicyRequest,
    ) -> Result<pb::CreateSecurityPolicyResponse> {
        let request_id = parse_request_id(&request.request_id)?;
        let hash = request_hash(&request.encode_to_vec());
        let policy = request
            .security_policy
            .ok_or_else(|| Error::required("security_policy"))?;
        let mut violations = Vec::new();
        let sent_from = pb::SentFromKind::try_from(policy.sent_from)
            .ok()
            .and_then(sent_from_text);
        if sent_from.is_none() {
            violations.push(Violation::new(
                "security_policy.sent_from",
                "REQUIRED",
                "sent_from (Emails Sent From) is required: DOMAIN, EMAIL_ADDRESS or IP_ADDRESS",
            ));
        }
        let security_type = security_type_text(parse_security_type(policy.security_type)?);
        if security_type.is_none() {
            violations.push(Violation::new(
                "security_policy.security_type",
                "REQUIRED",
                "security_type is required",
            ));
        }
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations));
        }
        let (Some(sent_from), Some(security_type)) = (sent_from, security_type) else {
            return Err(Error::required("security_policy.sent_from"));
        };
        let nets = parse_ranges(&policy.allowed_ip_ranges, &self.tenancy)?;
        check_ranges_fit_type(security_type, &nets)?;
        let name = check_name(&policy.display_name)?;
        let default_user = parse_opt_id(
            "security_policy.default_forwarding_user_id",
            &policy.default_forwarding_user_id,
        )?;
        let text_mode = text_mode_text(parse_text_mode(policy.text_mode)?);

        let mut tx = self.begin_write().await?;
        let company = store::company(&mut tx, &request.company_id).await?;
        let idempotency = request_id.map(|request_id| Idempotency {
            method: "CreateSecurityPolicy",
            request_id,
            hash,
        });
        if let Some(key) = &idempotency
            && let Some(id) = key.existing(&mut tx, company.id).await?
        {
            let row = fetch(&mut tx, company.id, id).await?;
            return Ok(pb::CreateSecurityPolicyResponse {
                security_policy: Some(row.to_proto(&company)),
            });
        }
        let id: Uuid = sqlx::query_scalar(
            "INSERT INTO security_policies
                (company_id, name, sent_from, security_type, allowed_networks,
                 default_forwarding_user_id, text_mode)
             VALUES ($1, $2, $3, $4, $5::cidr[], $6, $7) RETURNING id",
        )
        .bind(company.id)
        .bind(&name)
        .bind(sent_from)
        .bind(security_type)
        .bind(&nets)
        .bind(default_user)
        .bind(text_mode)
        .fetch_one(&mut *tx)
        .await?;
        if let Some(key) = &idempotency {
            key.store(&mut tx, company.id, id).await?;
        }
        let row = fetch(&mut tx, company.id, id).await?;
        // A new policy has no entries, so nothing compiled changes.
        tx.commit_uncompiled().await?;
        Ok(pb::CreateSecurityPolicyResponse {
            security_policy: Some(row.to_proto(&company)),
        })
    }

    pub(crate) async fn get_security_policy(
        &self,
        request: pb::GetSecurityPolicyRequest,
    ) -> Result<pb::GetSecurityPolicyResponse> {
        let id = parse_id("security_policy_id", &request.security_policy_id)?;
        let mut conn = self.pool.acquire().await?;
        let company = store::company(&mut conn, &request.company_id).await?;
        let row = fetch(&mut conn, company.id, id).await?;
        Ok(pb::GetSecurityPolicyResponse {
            security_policy: Some(row.to_proto(&company)),
        })
    }

    pub(crate) async fn list_security_policies(
        &self,
        request: pb::ListSecurityPoliciesRequest,
    ) -> Result<pb::ListSecurityPoliciesResponse> {
        let limit = page_size(request.page_size, "page_size")?;
        let sent_from = pb::SentFromKind::try_from(request.sent_from)
            .map_err(|_| Error::invalid("sent_from", "UNKNOWN_ENUM", "unknown sent_from"))?;
        let security_type = pb::SecurityType::try_from(request.security_type).map_err(|_| {
            Error::invalid("security_type", "UNKNOWN_ENUM", "unknown security_type")
        })?;
        let filters = format!("s={};t={}", request.sent_from, request.security_type);
        let mut conn = self.pool.acquire().await?;
        let company = store::company(&mut conn, &request.company_id).await?;
        let pager = self.pager(company.id).await?;
        let after = pager.decode(&request.page_token, &filters)?;
        let mut q: QueryBuilder<Postgres> =
            QueryBuilder::new(format!("{POLICY_SELECT} WHERE p.company_id = "));
        q.push_bind(company.id);
        if let Some(kind) = sent_from_text(sent_from) {
            q.push(" AND p.sent_from = ").push_bind(kind);
        }
        if let Some(kind) = security_type_text(security_type) {
            q.push(" AND p.security_type = ").push_bind(kind);
        }
        if let Some(after) = &after {
            q.push(" AND (p.created_at, p.id) > (")
                .push_bind(after.key.clone())
                .push("::timestamptz, ")
                .push_bind(after.id)
                .push(")");
        }
        q.push(" ORDER BY p.created_at, p.id LIMIT ")
            .push_bind(limit + 1);
        let rows: Vec<PolicyRow> = q.build_query_as().fetch_all(&mut *conn).await?;
        let (rows, next_page_token) = pager.finish(rows, limit, &filters, |r| {
            (
                r.created_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                r.id,
            )
        });
        Ok(pb::ListSecurityPoliciesResponse {
            security_policies: rows.iter().map(|r| r.to_proto(&company)).collect(),
            next_page_token,
        })
    }

    pub(crate) async fn update_security_policy(
        &self,
        request: pb::UpdateSecurityPolicyRequest,
    ) -> Result<pb::UpdateSecurityPolicyResponse> {
        let paths = update_paths(request.update_mask.as_ref(), UPDATABLE)?;
        let policy = request
            .security_policy
            .ok_or_else(|| Error::required("security_policy"))?;
        let id = parse_id(
            "security_policy.security_policy_id",
            &policy.security_policy_id,
        )?;
        let set = |path: &str| paths.contains(&path);

        let mut tx = self.begin_write().await?;
        let company = store::company(&mut tx, &request.company_id).await?;
        let current: (String, Vec<IpNet>) = sqlx::query_as(
            "SELECT security_type, allowed_networks FROM security_policies
             WHERE company_id = $1 AND id = $2 FOR UPDATE",
        )
        .bind(company.id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(Error::NotFound("security policy"))?;
        let security_type = if set("security_type") {
            security_type_text(parse_security_type(policy.security_type)?).ok_or_else(|| {
                Error::invalid(
                    "security_policy.security_type",
                    "REQUIRED",
                    "security_type cannot be unset",
                )
            })?
        } else {
            match current.0.as_str() {
                "by_google_mail" => "by_google_mail",
                "by_outlook" => "by_outlook",
                "by_ip_addresses" => "by_ip_addresses",
                _ => "via_spf",
            }
        };
        let nets = if set("allowed_ip_ranges") {
            parse_ranges(&policy.allowed_ip_ranges, &self.tenancy)?
        } else {
            current.1
        };
        check_ranges_fit_type(security_type, &nets)?;
        let name = check_name(&policy.display_name)?;
        let default_user = parse_opt_id(
            "security_policy.default_forwarding_user_id",
            &policy.default_forwarding_user_id,
        )?;
        let text_mode = text_mode_text(parse_text_mode(policy.text_mode)?);
        sqlx::query(
            "UPDATE security_policies SET
                name = CASE WHEN $3 THEN $4 ELSE name END,
                security_type = $5,
                allowed_networks = $6::cidr[],
                default_forwarding_user_id =
                    CASE WHEN $7 THEN $8 ELSE default_forwarding_user_id END,
                text_mode = CASE WHEN $9 THEN $10 ELSE text_mode END,
                version = version + 1,
                updated_at = now()
             WHERE company_id = $1 AND id = $2",
        )
        .bind(company.id)
        .bind(id)
        .bind(set("display_name"))
        .bind(&name)
        .bind(security_type)
        .bind(&nets)
        .bind(set("default_forwarding_user_id"))
        .bind(default_user)
        .bind(set("text_mode"))
        .bind(text_mode)
        .execute(&mut *tx)
        .await?;
        // The change applies to every entry of the policy at once.
        let keys = keys_where(&mut tx, &company, "e.policy_id = $ARG", Some(id)).await?;
        tx.bump_version().await?;
        let row = fetch(&mut tx, company.id, id).await?;
        tx.commit(&keys).await?;
        Ok(pb::UpdateSecurityPolicyResponse {
            security_policy: Some(row.to_proto(&company)),
        })
    }

    pub(crate) async fn delete_security_policy(
        &self,
        request: pb::DeleteSecurityPolicyRequest,
    ) -> Result<pb::DeleteSecurityPolicyResponse> {
        let id = parse_id("security_policy_id", &request.security_policy_id)?;
        let mut tx = self.begin_write().await?;
        let company = store::company(&mut tx, &request.company_id).await?;
        let locked: Option<Uuid> = sqlx::query_scalar(
            "SELECT id FROM security_policies WHERE company_id = $1 AND id = $2 FOR UPDATE",
        )
        .bind(company.id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        if locked.is_none() {
            return Err(Error::NotFound("security policy"));
        }
        let mut keys: Keys = keys_where(&mut tx, &company, "e.policy_id = $ARG", Some(id)).await?;
        let entries = (keys.emails.len() + keys.domains.len() + keys.ips.len()) as u64;
        if entries > 0 && !request.force {
            return Err(Error::FailedPrecondition(format!(
                "the security policy still has {entries} entries: delete them first, or delete with force to remove them too"
            )));
        }
        for table in ["domains", "email_addresses", "ip_addresses"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE company_id = $1 AND policy_id = $2"
            ))
            .bind(company.id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM security_policies WHERE company_id = $1 AND id = $2")
            .bind(company.id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        // Bumped before the addresses are read, so that they are read under the version lock.
        tx.bump_version().await?;
        // Deleted domains that were verified unblock other companies' addresses at them.
        store::add_emails_at_domains(&mut tx, &mut keys).await?;
        tx.commit(&keys).await?;
        Ok(pb::DeleteSecurityPolicyResponse {
            deleted_entry_count: entries,
        })
    }
}
