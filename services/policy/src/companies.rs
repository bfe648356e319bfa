//! Companies and their Messenger users, synced in from the Messenger platform.

use chrono::{DateTime, Utc};
use email2sms_proto::policy::v1 as pb;
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use crate::PolicyApi;
use crate::error::{Error, Result, Violation};
use crate::model::{over_limit_enum, over_limit_text, page_size, parse_id, timestamp};
use crate::store::{self, CompanyRef, keys_where};

/// Writable paths of UpsertCompany's mask.
const COMPANY_PATHS: &[&str] = &[
    "display_name",
    "admin_email_addresses",
    "default_region",
    "limits",
    "limits.max_sms_parts",
    "limits.over_limit_behavior",
    "limits.allowed_destination_regions",
    "limits.international_sms_per_day",
    "suspended",
];

/// Most regions a company may add to its own for SMS destinations: about every region there is.
const MAX_DESTINATION_REGIONS: usize = 250;

/// A new company's international SMS per UTC day when it names none: GOV.UK Notify's default
/// daily limit for international text messages.
const DEFAULT_INTERNATIONAL_SMS_PER_DAY: u32 = 100;
/// Most admin addresses of a company (the schema's `companies_admin_emails_normalised` says the
/// same): every one gets each new-sender alert.
const MAX_ADMIN_EMAILS: usize = 50;

/// Writable paths of UpsertMessengerUser's mask.
const USER_PATHS: &[&str] = &["username", "display_name", "sender_id", "active"];

#[derive(Debug, sqlx::FromRow)]
struct CompanyRow {
    id: Uuid,
    public_id: String,
    name: String,
    admin_emails: Vec<String>,
    default_region: String,
    max_sms_parts: i32,
    over_limit: String,
    allowed_destination_regions: Vec<String>,
    international_sms_per_day: i32,
    suspended: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

const COMPANY_COLUMNS: &str = "id, coalesce(external_id, id::text) AS public_id, name, admin_emails, \
     default_region, max_sms_parts, over_limit, allowed_destination_regions, \
     international_sms_per_day, suspended, created_at, updated_at";

impl CompanyRow {
    fn to_proto(&self) -> pb::Company {
        pb::Company {
            company_id: self.public_id.clone(),
            display_name: self.name.clone(),
            admin_email_addresses: self.admin_emails.clone(),
            default_region: self.default_region.clone(),
            limits: Some(pb::CompanyLimits {
                max_sms_parts: u32::try_from(self.max_sms_parts).unwrap_or(0),
                over_limit_behavior: over_limit_enum(&self.over_limit) as i32,
                allowed_destination_regions: self.allowed_destination_regions.clone(),
                international_sms_per_day: Some(
                    u32::try_from(self.international_sms_per_day).unwrap_or(0),
                ),
            }),
            suspended: self.suspended,
            create_time: Some(timestamp(self.created_at)),
            update_time: Some(timestamp(self.updated_at)),
        }
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct UserRow {
    id: Uuid,
    external_id: String,
    username: String,
    display_name: String,
    sender_id: Option<String>,
    active: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

const USER_COLUMNS: &str =
    "id, external_id, username, display_name, sender_id, active, created_at, updated_at";

impl UserRow {
    fn to_proto(&self, company: &CompanyRef) -> pb::MessengerUser {
        pb::MessengerUser {
            messenger_user_id: self.id.to_string(),
            company_id: company.public_id.clone(),
            external_id: self.external_id.clone(),
            username: self.username.clone(),
            display_name: self.display_name.clone(),
            sender_id: self.sender_id.clone().unwrap_or_default(),
            active: self.active,
            create_time: Some(timestamp(self.created_at)),
            update_time: Some(timestamp(self.updated_at)),
        }
    }
}

/// The validated writable fields of a company.
struct CompanyFields {
    name: String,
    admin_emails: Vec<String>,
    region: String,
    max_sms_parts: i32,
    over_limit: Option<&'static str>,
    destination_regions: Vec<String>,
    international_sms_per_day: i32,
    suspended: bool,
}

/// Validates the fields `checked` selects: all of them on creation, the masked ones on update.
fn validate_company(
    company: &pb::Company,
    checked: impl Fn(&str) -> bool,
) -> Result<CompanyFields> {
    let mut violations = Vec::new();
    let name = company.display_name.trim().to_owned();
    if checked("display_name") && (name.is_empty() || name.chars().count() > 200) {
        violations.push(Violation::new(
            "company.display_name",
            "INVALID_NAME",
            "display_name is required, at most 200 characters",
        ));
    }
    let mut admin_emails = Vec::new();
    if company.admin_email_addresses.len() > MAX_ADMIN_EMAILS {
        // Stop here: normalising and deduplicating 100,000 addresses after this violation took
        // 43 s on a worker and stalled every other RPC, for an answer that is a refusal anyway.
        violations.push(Violation::new(
            "company.admin_email_addresses",
            "TOO_MANY",
            format!(
                "at most {MAX_ADMIN_EMAILS} admin email addresses; {} were given",
                company.admin_email_addresses.len()
            ),
        ));
    } else {
        let mut seen = std::collections::HashSet::new();
        for (i, address) in company.admin_email_addresses.iter().enumerate() {
            match email2sms_domain::EmailAddress::parse(address.trim()) {
                Ok(a) => {
                    if seen.insert(a.as_str().to_owned()) {
                        admin_emails.push(a.as_str().to_owned());
                    }
                }
                Err(e) => violations.push(Violation::new(
                    format!("company.admin_email_addresses[{i}]"),
                    e.code(),
                    e.to_string(),
                )),
            }
        }
    }
    let region = match email2sms_domain::Region::parse(company.default_region.trim()) {
        Ok(r) => r.as_str().to_owned(),
        Err(_) if !checked("default_region") => String::new(),
        Err(e) => {
            violations.push(Violation::new(
                "company.default_region",
                e.code(),
                e.to_string(),
            ));
            String::new()
        }
    };
    let limits = company.limits.clone().unwrap_or_default();
    if limits.max_sms_parts > 255 {
        violations.push(Violation::new(
            "company.limits.max_sms_parts",
            "OUT_OF_RANGE",
            "max_sms_parts is at most 255 (the concatenation counter's ceiling); 0 means no company limit",
        ));
    }
    let destination_regions =
        destination_regions(&limits.allowed_destination_regions, &mut violations);
    let international_sms_per_day = match i32::try_from(
        limits
            .international_sms_per_day
            .unwrap_or(DEFAULT_INTERNATIONAL_SMS_PER_DAY),
    ) {
        Ok(n) => n,
        Err(_) => {
            violations.push(Violation::new(
                "company.limits.international_sms_per_day",
                "OUT_OF_RANGE",
                "international_sms_per_day is at most 2147483647",
            ));
            0
        }
    };
    let over_limit = pb::OverLimitBehavior::try_from(limits.over_limit_behavior).map_err(|_| {
        Error::invalid(
            "company.limits.over_limit_behavior",
            "UNKNOWN_ENUM",
            "unknown over_limit_behavior",
        )
    })?;
    if !violations.is_empty() {
        return Err(Error::InvalidArgument(violations));
    }
    Ok(CompanyFields {
        name,
        admin_emails,
        region,
        max_sms_parts: i32::try_from(limits.max_sms_parts).unwrap_or(0),
        over_limit: over_limit_text(over_limit),
        destination_regions,
        international_sms_per_day,
        suspended: company.suspended,
    })
}

/// The regions a company added for SMS destinations, upper-case, sorted and without repeats. The
/// count is checked before anything is parsed, so a huge list costs nothing.
fn destination_regions(input: &[String], violations: &mut Vec<Violation>) -> Vec<String> {
    if input.len() > MAX_DESTINATION_REGIONS {
        violations.push(Violation::new(
            "company.limits.allowed_destination_regions",
            "TOO_MANY",
            format!("at most {MAX_DESTINATION_REGIONS} destination regions"),
        ));
        return Vec::new();
    }
    let mut regions = std::collections::BTreeSet::new();
    for (i, text) in input.iter().enumerate() {
        match email2sms_domain::Region::parse(text.trim()) {
            Ok(region) => {
                regions.insert(region.as_str().to_owned());
            }
            Err(e) => violations.push(Violation::new(
                format!("company.limits.allowed_destination_regions[{i}]"),
                e.code(),
                e.to_string(),
            )),
        }
    }
    regions.into_iter().collect()
}

/// Validates the user; on update only the fields `checked` selects (the external id, the key, is
/// always required).
fn validate_user(user: &pb::MessengerUser, checked: impl Fn(&str) -> bool) -> Result<()> {
    let mut violations = Vec::new();
    if user.external_id.is_empty() || user.external_id.chars().count() > 200 {
        violations.push(Violation::new(
            "messenger_user.external_id",
            "REQUIRED",
            "external_id is required, at most 200 characters",
        ));
    }
    let username = user.username.trim();
    if checked("username") && (username.is_empty() || username.chars().count() > 200) {
        violations.push(Violation::new(
            "messenger_user.username",
            "REQUIRED",
            "username is required, at most 200 characters",
        ));
    }
    if checked("sender_id") && !user.sender_id.is_empty() && !valid_sender_id(&user.sender_id) {
        violations.push(Violation::new(
            "messenger_user.sender_id",
            "INVALID_SENDER_ID",
            "sender_id must be an alphanumeric sender ID of at most 11 characters or a number in E.164 (+ and up to 15 digits)",
        ));
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidArgument(violations))
    }
}

/// An alphanumeric sender ID (at most 11 GSM characters; letters, digits, space and a few
/// punctuation marks) or an E.164 number.
fn valid_sender_id(sender: &str) -> bool {
    if let Some(digits) = sender.strip_prefix('+') {
        return (2..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
    }
    if sender.bytes().all(|b| b.is_ascii_digit()) {
        return (1..=15).contains(&sender.len());
    }
    (1..=11).contains(&sender.chars().count())
        && sender
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " .-_&".contains(c))
}

impl PolicyApi {
    pub(crate) async fn upsert_company(
        &self,
        request: pb::UpsertCompanyRequest,
    ) -> Result<pb::UpsertCompanyResponse> {
        let company = request.company.ok_or_else(|| Error::required("company"))?;
        // The rule every other RPC applies to the id, so no company is made that they refuse.
        let id = crate::tenancy::parse_company_id("company.company_id", &company.company_id)?;
        let public_id = id.to_string();
        let paths: Vec<String> = request.update_mask.map(|m| m.paths).unwrap_or_default();
        for path in &paths {
            if !COMPANY_PATHS.contains(&path.as_str()) {
                return Err(Error::invalid(
                    "update_mask",
                    "FIELD_NOT_UPDATABLE",
                    format!(
                        "{path:?} cannot be updated; updatable: {}",
                        COMPANY_PATHS.join(", ")
                    ),
                ));
            }
        }
        let set = |path: &str| {
            paths.is_empty()
                || paths
                    .iter()
                    .any(|p| p == path || (path.starts_with("limits.") && p == "limits"))
        };

        let mut tx = self.begin_write().await?;
        let existing = store::find_company(&mut tx, &public_id, true).await?;
        let fields = validate_company(&company, |path| {
            existing.is_none() || set(path) || (path == "limits" && set("limits.max_sms_parts"))
        })?;
        let (row, created) = match existing {
            None => {
                let row: Option<CompanyRow> = sqlx::query_as(&format!(
                    "INSERT INTO companies (id, external_id, name, admin_emails, default_region,
                                            max_sms_parts, over_limit, suspended,
                                            allowed_destination_regions, international_sms_per_day)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                     ON CONFLICT DO NOTHING RETURNING {COMPANY_COLUMNS}"
                ))
                .bind(id)
                // Company ids are UUIDs (the row's own id); only older rows have another one.
                .bind(None::<String>)
                .bind(&fields.name)
                .bind(&fields.admin_emails)
                .bind(&fields.region)
                // A new company without limits gets the schema default of 10 parts.
                .bind(if company.limits.is_some() {
                    fields.max_sms_parts
                } else {
                    10
                })
                .bind(fields.over_limit.unwrap_or("truncate"))
                .bind(fields.suspended)
                .bind(&fields.destination_regions)
                .bind(fields.international_sms_per_day)
                .fetch_optional(&mut *tx)
                .await?;
                match row {
                    Some(row) => (row, true),
                    // A concurrent upsert created it first; retrying finds it.
                    None => {
                        return Err(Error::Unavailable(
                            "concurrent upsert of the same company".into(),
                        ));
                    }
                }
            }
            Some(found) => {
                let row: CompanyRow = sqlx::query_as(&format!(
                    "UPDATE companies SET
                        name = CASE WHEN $2 THEN $3 ELSE name END,
                        admin_emails = CASE WHEN $4 THEN $5 ELSE admin_emails END,
                        default_region = CASE WHEN $6 THEN $7 ELSE default_region END,
                        max_sms_parts = CASE WHEN $8 THEN $9 ELSE max_sms_parts END,
                        over_limit = CASE WHEN $10 AND $11::text IS NOT NULL THEN $11 ELSE over_limit END,
                        suspended = CASE WHEN $12 THEN $13 ELSE suspended END,
                        allowed_destination_regions =
                            CASE WHEN $14 THEN $15 ELSE allowed_destination_regions END,
                        international_sms_per_day =
                            CASE WHEN $16 THEN $17 ELSE international_sms_per_day END,
                        updated_at = now()
                     WHERE id = $1 RETURNING {COMPANY_COLUMNS}"
                ))
                .bind(found.id)
                .bind(set("display_name"))
                .bind(&fields.name)
                .bind(set("admin_email_addresses"))
                .bind(&fields.admin_emails)
                .bind(set("default_region"))
                .bind(&fields.region)
                .bind(set("limits.max_sms_parts"))
                .bind(fields.max_sms_parts)
                .bind(set("limits.over_limit_behavior"))
                .bind(fields.over_limit)
                .bind(set("suspended"))
                .bind(fields.suspended)
                .bind(set("limits.allowed_destination_regions"))
                .bind(&fields.destination_regions)
                // Without a mask an update leaves the cap alone unless the request names one.
                .bind(
                    set("limits.international_sms_per_day")
                        && company
                            .limits
                            .as_ref()
                            .is_some_and(|l| l.international_sms_per_day.is_some()),
                )
                .bind(fields.international_sms_per_day)
                .fetch_one(&mut *tx)
                .await?;
                (row, false)
            }
        };
        let company_ref = CompanyRef {
            id: row.id,
            public_id: row.public_id.clone(),
        };
        // Region, limits and suspension are part of every compiled entry of the company.
        let keys = if created {
            crate::cache::Keys::default()
        } else {
            keys_where(&mut tx, &company_ref, "", None).await?
        };
        tx.commit(&keys).await?;
        Ok(pb::UpsertCompanyResponse {
            company: Some(row.to_proto()),
            created,
        })
    }

    pub(crate) async fn get_company(
        &self,
        request: pb::GetCompanyRequest,
    ) -> Result<pb::GetCompanyResponse> {
        let mut conn = self.pool.acquire().await?;
        let company = store::company(&mut conn, &request.company_id).await?;
        let row: CompanyRow = sqlx::query_as(&format!(
            "SELECT {COMPANY_COLUMNS} FROM companies WHERE id = $1"
        ))
        .bind(company.id)
        .fetch_one(&mut *conn)
        .await?;
        Ok(pb::GetCompanyResponse {
            company: Some(row.to_proto()),
        })
    }

    pub(crate) async fn upsert_messenger_user(
        &self,
        request: pb::UpsertMessengerUserRequest,
    ) -> Result<pb::UpsertMessengerUserResponse> {
        let user = request
            .messenger_user
            .ok_or_else(|| Error::required("messenger_user"))?;
        let paths: Vec<String> = request.update_mask.map(|m| m.paths).unwrap_or_default();
        for path in &paths {
            if !USER_PATHS.contains(&path.as_str()) {
                return Err(Error::invalid(
                    "update_mask",
                    "FIELD_NOT_UPDATABLE",
                    format!(
                        "{path:?} cannot be updated; updatable: {}",
                        USER_PATHS.join(", ")
                    ),
                ));
            }
        }
        let set = |path: &str| paths.is_empty() || paths.iter().any(|p| p == path);
        let sender_id = Some(user.sender_id.clone()).filter(|s| !s.is_empty());

        let mut tx = self.begin_write().await?;
        let company = store::company(&mut tx, &request.company_id).await?;
        let existing: Option<Uuid> = sqlx::query_scalar(
            "SELECT id FROM messenger_users WHERE company_id = $1 AND external_id = $2 FOR UPDATE",
        )
        .bind(company.id)
        .bind(&user.external_id)
        .fetch_optional(&mut *tx)
        .await?;
        validate_user(&user, |path| existing.is_none() || set(path))?;
        let (row, created): (UserRow, bool) = match existing {
            None => (
                sqlx::query_as(&format!(
                    "INSERT INTO messenger_users
                        (company_id, external_id, username, display_name, sender_id, active)
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING {USER_COLUMNS}"
                ))
                .bind(company.id)
                .bind(&user.external_id)
                .bind(user.username.trim())
                .bind(&user.display_name)
                .bind(&sender_id)
                .bind(user.active)
                .fetch_one(&mut *tx)
                .await?,
                true,
            ),
            Some(id) => (
                sqlx::query_as(&format!(
                    "UPDATE messenger_users SET
                        username = CASE WHEN $3 THEN $4 ELSE username END,
                        display_name = CASE WHEN $5 THEN $6 ELSE display_name END,
                        sender_id = CASE WHEN $7 THEN $8 ELSE sender_id END,
                        active = CASE WHEN $9 THEN $10 ELSE active END,
                        updated_at = now()
                     WHERE company_id = $1 AND id = $2 RETURNING {USER_COLUMNS}"
                ))
                .bind(company.id)
                .bind(id)
                .bind(set("username"))
                .bind(user.username.trim())
                .bind(set("display_name"))
                .bind(&user.display_name)
                .bind(set("sender_id"))
                .bind(&sender_id)
                .bind(set("active"))
                .bind(user.active)
                .fetch_one(&mut *tx)
                .await?,
                false,
            ),
        };
        // Every entry forwarding through the user (its own or its policy's default) carries the
        // user's sender ID and activity in its compiled value. They are read under the version
        // lock: an entry forwarding by its policy's default locks nothing of the user when it is
        // created, so one committed while this transaction ran is only seen if it committed
        // before this bump (or it waits for this commit and compiles the user as changed).
        tx.bump_version().await?;
        let keys = if created {
            crate::cache::Keys::default()
        } else {
            keys_where(&mut tx, &company, "u.id = $ARG", Some(row.id)).await?
        };
        tx.commit(&keys).await?;
        Ok(pb::UpsertMessengerUserResponse {
            messenger_user: Some(row.to_proto(&company)),
            created,
        })
    }

    pub(crate) async fn get_messenger_user(
        &self,
        request: pb::GetMessengerUserRequest,
    ) -> Result<pb::GetMessengerUserResponse> {
        let id = parse_id("messenger_user_id", &request.messenger_user_id)?;
        let mut conn = self.pool.acquire().await?;
        let company = store::company(&mut conn, &request.company_id).await?;
        let row: UserRow = sqlx::query_as(&format!(
            "SELECT {USER_COLUMNS} FROM messenger_users WHERE company_id = $1 AND id = $2"
        ))
        .bind(company.id)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(Error::NotFound("messenger user"))?;
        Ok(pb::GetMessengerUserResponse {
            messenger_user: Some(row.to_proto(&company)),
        })
    }

    pub(crate) async fn list_messenger_users(
        &self,
        request: pb::ListMessengerUsersRequest,
    ) -> Result<pb::ListMessengerUsersResponse> {
        let limit = page_size(request.page_size, "page_size")?;
        let filters = format!(
            "q={:?};a={:?};x={:?}",
            request.query, request.active, request.external_id
        );
        let mut conn = self.pool.acquire().await?;
        let company = store::company(&mut conn, &request.company_id).await?;
        let pager = self.pager(company.id).await?;
        let after = pager.decode(&request.page_token, &filters)?;
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new(format!(
            "SELECT {USER_COLUMNS} FROM messenger_users WHERE company_id = "
        ));
        q.push_bind(company.id);
        if !request.query.is_empty() {
            let pattern = format!("%{}%", like_escape(&request.query));
            q.push(" AND (username ILIKE ")
                .push_bind(pattern.clone())
                .push(" OR display_name ILIKE ")
                .push_bind(pattern.clone())
                .push(" OR external_id ILIKE ")
                .push_bind(pattern)
                .push(")");
        }
        if let Some(active) = request.active {
            q.push(" AND active = ").push_bind(active);
        }
        if !request.external_id.is_empty() {
            q.push(" AND external_id = ")
                .push_bind(request.external_id.clone());
        }
        if let Some(after) = &after {
            q.push(" AND (lower(username), id) > (lower(")
                .push_bind(after.key.clone())
                .push("), ")
                .push_bind(after.id)
                .push(")");
        }
        q.push(" ORDER BY lower(username), id LIMIT ")
            .push_bind(limit + 1);
        let rows: Vec<UserRow> = q.build_query_as().fetch_all(&mut *conn).await?;
        let (rows, next_page_token) =
            pager.finish(rows, limit, &filters, |r| (r.username.clone(), r.id));
        Ok(pb::ListMessengerUsersResponse {
            messenger_users: rows.iter().map(|r| r.to_proto(&company)).collect(),
            next_page_token,
        })
    }
}

/// Escapes `%`, `_` and `\` so that a search text matches literally inside ILIKE.
pub(crate) fn like_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_id_is_alphanumeric_up_to_11_or_e164() {
        assert!(valid_sender_id("Acme Ltd"));
        assert!(valid_sender_id("+64211234567"));
        assert!(!valid_sender_id("ThisIsTooLongSender"));
        assert!(!valid_sender_id("+64abc"));
    }
}
