//! CSV import of email address entries (`Email,Username`): a preview that judges every row and
//! stores the verdicts, and a commit that applies exactly the previewed OK rows in one
//! transaction.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use email2sms_proto::policy::v1 as pb;
use prost::Message;
use sqlx::{PgConnection, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::PolicyApi;
use crate::cache::Keys;
use crate::entries::EntryKind;
use crate::error::{Error, Result};
use crate::model::{opt_timestamp, parse_id, parse_request_id, timestamp};
use crate::notifications;
use crate::paging::{self, Pager};
use crate::store::{self, CompanyRef, Idempotency, request_hash};

/// Largest file accepted: 100,000 realistic rows are about 5 MB, so this leaves room for long
/// addresses and usernames while keeping one request's memory bounded.
pub const MAX_IMPORT_BYTES: usize = 16 * 1024 * 1024;
/// Most data rows in one file.
pub const MAX_IMPORT_ROWS: usize = 200_000;
/// Longest field, in characters: an address is at most 254 (RFC 5321's 256-octet path less its
/// brackets) and a username at most 200 (the `messenger_users` check), so no importable row is
/// longer, while a row's stored text and the verdict that quotes it stay a few hundred characters
/// instead of up to the whole 16 MB file on one line.
pub const MAX_FIELD_CHARS: usize = 320;
/// Why a row with a longer field is not read.
const FIELD_TOO_LONG: &str = "a field longer than 320 characters";
/// Row verdicts returned inline by PreviewImport when the request says 0.
const DEFAULT_INLINE_ROWS: i64 = 100;

/// One judged row, before it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JudgedRow {
    pub line_number: i32,
    pub raw_email: String,
    pub normalised: Option<String>,
    pub username: String,
    pub user: Option<Uuid>,
    pub status: &'static str,
    pub message: String,
}

/// A data row as read from the file, before any lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedRow {
    pub line_number: i32,
    /// `None` when the row does not have exactly two fields or cannot be read.
    pub fields: Option<(String, String)>,
    /// Why the row cannot be read at all (a broken quote).
    pub problem: Option<&'static str>,
    pub found_fields: usize,
}

fn wrong_columns(line: &str) -> Error {
    let shown: String = line.chars().take(80).collect();
    Error::invalid(
        "csv_content",
        "WRONG_COLUMNS",
        format!("the first row must be the header Email,Username (in any case); found {shown:?}"),
    )
}

/// Splits one CSV line (RFC 4180 quoting: `"a ""b"""`), trimming spaces around fields.
pub fn split_csv_line(line: &str) -> Result<Vec<String>, &'static str> {
    let mut fields = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    let mut after_quote = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    current.push('"');
                } else {
                    in_quotes = false;
                    after_quote = true;
                }
            } else {
                current.push(c);
            }
            continue;
        }
        match c {
            ',' => {
                fields.push(current.trim().to_owned());
                current.clear();
                after_quote = false;
            }
            '"' if !after_quote && current.trim().is_empty() => {
                current.clear();
                in_quotes = true;
            }
            '"' => {
                return Err(
                    "a quote in the middle of a field (quote the whole field and double inner quotes)",
                );
            }
            c if after_quote && !c.is_whitespace() => {
                return Err("text after a closing quote");
            }
            c => current.push(c),
        }
    }
    if in_quotes {
        return Err("an unterminated quote");
    }
    fields.push(current.trim().to_owned());
    Ok(fields)
}

/// Parses the file: UTF-8 with or without BOM, CRLF or LF, quoted fields, a header row
/// `Email,Username` in any case, blank lines, surrounding spaces. A file that cannot be imported at
/// all is INVALID_ARGUMENT with a message that says why.
pub fn parse_csv(content: &[u8]) -> Result<Vec<ParsedRow>> {
    if content.len() > MAX_IMPORT_BYTES {
        return Err(Error::invalid(
            "csv_content",
            "FILE_TOO_LARGE",
            format!(
                "the file is {} bytes; at most {MAX_IMPORT_BYTES} bytes can be imported at once: split it",
                content.len()
            ),
        ));
    }
    let text = std::str::from_utf8(content).map_err(|e| {
        Error::invalid(
            "csv_content",
            "NOT_UTF8",
            format!(
                "the file is not UTF-8 text (invalid byte at offset {}): save it as \"CSV UTF-8\" and upload it again",
                e.valid_up_to()
            ),
        )
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut header_seen = false;
    let mut rows = Vec::new();
    // Physical lines, so that line numbers are what a text editor shows (CRLF or LF). A quoted
    // field spanning lines is not something an `Email,Username` export produces; reading line by
    // line keeps a broken quote confined to its own line instead of swallowing the file.
    for (index, line) in text.split('\n').enumerate() {
        let line_number = i32::try_from(index + 1).unwrap_or(i32::MAX);
        let line = line.strip_suffix('\r').unwrap_or(line);
        // Blank lines (or lines of only separators and spaces) count but produce no row.
        if line.chars().all(|c| c.is_whitespace() || c == ',') {
            continue;
        }
        let unreadable = |problem| ParsedRow {
            line_number,
            fields: None,
            problem: Some(problem),
            found_fields: 0,
        };
        let row = match split_csv_line(line) {
            Err(_) if !header_seen => return Err(wrong_columns(line)),
            Err(problem) => unreadable(problem),
            Ok(fields) if !header_seen => {
                header_seen = true;
                let names: Vec<String> = fields.iter().map(|f| f.to_lowercase()).collect();
                if names != ["email", "username"] {
                    return Err(wrong_columns(line));
                }
                continue;
            }
            Ok(fields) if fields.iter().any(|f| f.chars().count() > MAX_FIELD_CHARS) => {
                unreadable(FIELD_TOO_LONG)
            }
            Ok(fields) => {
                let found_fields = fields.len();
                let mut fields = fields.into_iter();
                let pair = match (fields.next(), fields.next(), fields.next()) {
                    (Some(email), Some(username), None) => Some((email, username)),
                    _ => None,
                };
                ParsedRow {
                    line_number,
                    fields: pair,
                    problem: None,
                    found_fields,
                }
            }
        };
        // Unreadable rows count too: each is kept (and stored) with its verdict.
        rows.push(row);
        if rows.len() > MAX_IMPORT_ROWS {
            return Err(Error::invalid(
                "csv_content",
                "TOO_MANY_ROWS",
                format!("at most {MAX_IMPORT_ROWS} rows can be imported at once: split the file"),
            ));
        }
    }
    if !header_seen {
        return Err(Error::invalid(
            "csv_content",
            "EMPTY_FILE",
            "the file is empty: it needs the header Email,Username and one row per address",
        ));
    }
    Ok(rows)
}

/// Judges every row against the file itself and the company's data.
async fn judge(
    conn: &mut PgConnection,
    company: Uuid,
    rows: Vec<ParsedRow>,
) -> Result<Vec<JudgedRow>> {
    let users: Vec<(String, Uuid, bool)> = sqlx::query_as(
        "SELECT lower(username), id, active FROM messenger_users WHERE company_id = $1",
    )
    .bind(company)
    .fetch_all(&mut *conn)
    .await?;
    let users: HashMap<String, (Uuid, bool)> = users
        .into_iter()
        .map(|(name, id, active)| (name, (id, active)))
        .collect();

    let mut judged = Vec::with_capacity(rows.len());
    let mut first_line: HashMap<String, i32> = HashMap::new();
    for row in rows {
        let Some((raw_email, username)) = row.fields else {
            judged.push(JudgedRow {
                line_number: row.line_number,
                raw_email: String::new(),
                normalised: None,
                username: String::new(),
                user: None,
                status: "malformed_row",
                message: if let Some(problem) = row.problem {
                    format!("the row cannot be read: {problem}")
                } else {
                    format!(
                        "expected 2 fields (Email,Username), found {}",
                        row.found_fields
                    )
                },
            });
            continue;
        };
        let mut out = JudgedRow {
            line_number: row.line_number,
            raw_email: raw_email.clone(),
            normalised: None,
            username: username.clone(),
            user: None,
            status: "ok",
            message: String::new(),
        };
        match email2sms_domain::EmailAddress::parse(&raw_email) {
            Err(e) => {
                out.status = "invalid_email";
                out.message = e.to_string();
            }
            Ok(address) => {
                let address = address.as_str().to_owned();
                out.normalised = Some(address.clone());
                if let Some(first) = first_line.get(&address) {
                    out.status = "duplicate_in_file";
                    out.message = format!("the same address as line {first}");
                } else {
                    first_line.insert(address, row.line_number);
                }
            }
        }
        if let Some((id, active)) = users.get(&username.to_lowercase()) {
            out.user = Some(*id);
            if out.status == "ok" && !active {
                out.status = "inactive_user";
                out.message = format!(
                    "the Messenger user {username:?} is disabled: re-activate it or pick another user"
                );
            }
        } else if out.status == "ok" {
            out.status = "unknown_user";
            out.message = if username.is_empty() {
                "the Username column is empty".to_owned()
            } else {
                format!("no Messenger user of this company has the username {username:?}")
            };
        }
        judged.push(out);
    }

    // Registration, for every address still OK or only blocked by its user: one query for the
    // entries, one for the domains other companies verified.
    let addresses: Vec<String> = judged
        .iter()
        .filter(|r| r.status != "duplicate_in_file")
        .filter_map(|r| r.normalised.clone())
        .collect();
    let registered: Vec<(String, bool)> = sqlx::query_as(
        "SELECT address, bool_or(company_id = $1) FROM email_addresses
         WHERE address = ANY($2) AND deleted_at IS NULL AND (company_id = $1 OR NOT disabled)
         GROUP BY address",
    )
    .bind(company)
    .bind(&addresses)
    .fetch_all(&mut *conn)
    .await?;
    let registered: HashMap<String, bool> = registered.into_iter().collect();
    let verified_elsewhere: std::collections::HashSet<String> = sqlx::query_scalar(
        "SELECT name FROM domains
          WHERE name IN (SELECT DISTINCT split_part(a, '@', 2) FROM unnest($2::text[]) a)
            AND state = 'verified' AND company_id <> $1",
    )
    .bind(company)
    .bind(&addresses)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect();
    for row in &mut judged {
        if !matches!(row.status, "ok" | "unknown_user" | "inactive_user") {
            continue;
        }
        let Some(address) = row.normalised.as_ref() else {
            continue;
        };
        let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
        match registered.get(address) {
            Some(true) => {
                row.status = "already_registered";
                row.message = "already an entry of this company: nothing to do".to_owned();
            }
            Some(false) => row.status = NOT_AVAILABLE,
            None if verified_elsewhere.contains(domain) => row.status = NOT_AVAILABLE,
            None => {}
        }
    }
    Ok(judged)
}

/// The stored status of a row another company holds (the address, or its domain verified): one
/// neutral verdict for both; its message is set once the refusal is recorded.
const NOT_AVAILABLE: &str = "registered_to_other_company";

/// Records the rows another company holds against the company's conflict budget and gives each
/// its neutral message. A file with more such rows than the budget has left is refused whole
/// (RESOURCE_EXHAUSTED, no verdicts), its refusals recorded all the same: otherwise one preview
/// of 200,000 guessed addresses would say which of them other companies registered.
async fn ration_unavailable(
    conn: &mut PgConnection,
    company: &CompanyRef,
    limits: &crate::tenancy::TenancyLimits,
    judged: &mut [JudgedRow],
) -> Result<Option<Error>> {
    let remaining = limits.check_budget(conn, company).await?;
    let held: Vec<usize> = (0..judged.len())
        .filter(|&i| judged[i].status == NOT_AVAILABLE)
        .collect();
    let values: Vec<String> = held
        .iter()
        .filter_map(|&i| judged[i].normalised.clone())
        .collect();
    let references = crate::tenancy::record(
        conn,
        company,
        crate::tenancy::ConflictKind::ImportRow,
        &values,
    )
    .await?;
    if held.len() > usize::try_from(remaining).unwrap_or(usize::MAX) {
        return Ok(Some(Error::ResourceExhausted(format!(
            "the file has more addresses that are not available to this company than it may be told about now (at most {remaining} more within {}): nothing was previewed, and the platform operator has been told. Remove addresses that are not your company's, or ask the operator",
            crate::tenancy::humanise(limits.conflict_window)
        ))));
    }
    for (&i, reference) in held.iter().zip(references) {
        let row = &mut judged[i];
        row.message =
            crate::tenancy::not_available(row.normalised.as_deref().unwrap_or_default(), reference);
    }
    Ok(None)
}

fn status_enum(text: &str) -> pb::ImportRowStatus {
    use pb::ImportRowStatus as S;
    match text {
        "ok" => S::Ok,
        "invalid_email" => S::InvalidEmail,
        "unknown_user" => S::UnknownUser,
        "inactive_user" => S::InactiveUser,
        "duplicate_in_file" => S::DuplicateInFile,
        "already_registered" => S::AlreadyRegistered,
        "registered_to_other_company" => S::RegisteredToOtherCompany,
        "malformed_row" => S::MalformedRow,
        _ => S::Unspecified,
    }
}

fn status_text(status: pb::ImportRowStatus) -> Option<&'static str> {
    use pb::ImportRowStatus as S;
    Some(match status {
        S::Unspecified => return None,
        S::Ok => "ok",
        S::InvalidEmail => "invalid_email",
        S::UnknownUser => "unknown_user",
        S::InactiveUser => "inactive_user",
        S::DuplicateInFile => "duplicate_in_file",
        S::AlreadyRegistered => "already_registered",
        S::RegisteredToOtherCompany => "registered_to_other_company",
        S::MalformedRow => "malformed_row",
    })
}

#[derive(Debug, sqlx::FromRow)]
struct ImportRowRecord {
    line_number: i32,
    raw_email: String,
    normalised_email: Option<String>,
    username: String,
    messenger_user_id: Option<Uuid>,
    status: String,
    message: String,
}

impl ImportRowRecord {
    fn to_proto(&self) -> pb::ImportRow {
        pb::ImportRow {
            line_number: u32::try_from(self.line_number).unwrap_or(0),
            email_address: self.raw_email.clone(),
            normalized_email_address: self.normalised_email.clone().unwrap_or_default(),
            username: self.username.clone(),
            messenger_user_id: crate::model::id_text(self.messenger_user_id),
            status: status_enum(&self.status) as i32,
            message: self.message.clone(),
        }
    }
}

#[derive(Debug, sqlx::FromRow)]
struct ImportRecord {
    id: Uuid,
    policy_id: Uuid,
    file_name: String,
    status: String,
    expired: bool,
    created_rows: Option<i32>,
    created_at: DateTime<Utc>,
    committed_at: Option<DateTime<Utc>>,
    expires_at: DateTime<Utc>,
    notification_id: Option<Uuid>,
}

const IMPORT_COLUMNS: &str = "id, policy_id, file_name, status, \
     (status = 'previewed' AND expires_at <= now()) AS expired, created_rows, created_at, \
     committed_at, expires_at, \
     (SELECT n.id FROM notification_batches n WHERE n.company_id = imports.company_id \
       AND n.request_id = imports.id::text AND n.import_id = imports.id) AS notification_id";

async fn fetch_import(
    conn: &mut PgConnection,
    company: &CompanyRef,
    id: Uuid,
    lock: bool,
) -> Result<pb::Import> {
    let record: ImportRecord = sqlx::query_as(&format!(
        "SELECT {IMPORT_COLUMNS} FROM imports WHERE company_id = $1 AND id = $2{}",
        if lock { " FOR UPDATE" } else { "" }
    ))
    .bind(company.id)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::NotFound("import"))?;
    let counts: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, count(*) FROM import_rows WHERE import_id = $1 GROUP BY status",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let count = |status: &str| {
        counts
            .iter()
            .find(|(s, _)| s == status)
            .map_or(0, |(_, n)| u32::try_from(*n).unwrap_or(u32::MAX))
    };
    let totals = pb::ImportTotals {
        total_rows: counts
            .iter()
            .map(|(_, n)| u32::try_from(*n).unwrap_or(u32::MAX))
            .sum(),
        ok_rows: count("ok"),
        invalid_email_rows: count("invalid_email"),
        unknown_user_rows: count("unknown_user"),
        inactive_user_rows: count("inactive_user"),
        duplicate_in_file_rows: count("duplicate_in_file"),
        already_registered_rows: count("already_registered"),
        registered_to_other_company_rows: count("registered_to_other_company"),
        malformed_rows: count("malformed_row"),
    };
    let state = match (record.status.as_str(), record.expired) {
        ("committed", _) => pb::ImportState::Committed,
        (_, true) => pb::ImportState::Expired,
        _ => pb::ImportState::Previewed,
    };
    Ok(pb::Import {
        import_id: record.id.to_string(),
        company_id: company.public_id.clone(),
        security_policy_id: record.policy_id.to_string(),
        file_name: record.file_name,
        state: state as i32,
        totals: Some(totals),
        created_count: record
            .created_rows
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0),
        notification_id: record
            .notification_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        create_time: Some(timestamp(record.created_at)),
        commit_time: opt_timestamp(record.committed_at),
        expire_time: Some(timestamp(record.expires_at)),
    })
}

async fn rows_page(
    conn: &mut PgConnection,
    pager: Pager<'_>,
    import: Uuid,
    statuses: &[&'static str],
    limit: i64,
    page_token: &str,
) -> Result<(Vec<pb::ImportRow>, String)> {
    let filters = format!("import={import};statuses={statuses:?}");
    let after = pager.decode(page_token, &filters)?;
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
        "SELECT line_number, raw_email, normalised_email, username, messenger_user_id, status, message
         FROM import_rows WHERE import_id = ",
    );
    q.push_bind(import);
    if !statuses.is_empty() {
        q.push(" AND status = ANY(")
            .push_bind(statuses.to_vec())
            .push(")");
    }
    if let Some(after) = &after {
        let line: i32 = after.key.parse().map_err(|_| paging::invalid())?;
        q.push(" AND line_number > ").push_bind(line);
    }
    q.push(" ORDER BY line_number LIMIT ").push_bind(limit + 1);
    let rows: Vec<ImportRowRecord> = q.build_query_as().fetch_all(&mut *conn).await?;
    let (rows, token) = pager.finish(rows, limit, &filters, |r| {
        (r.line_number.to_string(), import)
    });
    Ok((rows.iter().map(ImportRowRecord::to_proto).collect(), token))
}

fn inline_page_size(requested: i32) -> Result<i64> {
    match requested {
        0 => Ok(DEFAULT_INLINE_ROWS),
        n if n < 0 => Err(Error::invalid(
            "page_size",
            "NEGATIVE_PAGE_SIZE",
            "page_size must not be negative",
        )),
        n => Ok(i64::from(n).min(crate::model::MAX_PAGE_SIZE)),
    }
}

impl PolicyApi {
    pub(crate) async fn preview_import(
        &self,
        request: pb::PreviewImportRequest,
    ) -> Result<pb::PreviewImportResponse> {
        let request_id = parse_request_id(&request.request_id)?;
        let hash = request_hash(&request.encode_to_vec());
        let policy = parse_id("security_policy_id", &request.security_policy_id)?;
        let limit = inline_page_size(request.page_size)?;
        let file_name: String = request.file_name.trim().chars().take(500).collect();
        let parsed = parse_csv(&request.csv_content)?;

        let mut tx = self.pool.begin().await?;
        let company = store::company(&mut tx, &request.company_id).await?;
        let idempotency = request_id.map(|request_id| Idempotency {
            method: "PreviewImport",
            request_id,
            hash,
        });
        let existing = match &idempotency {
            Some(key) => key.existing(&mut tx, company.id).await?,
            None => None,
        };
        let id = match existing {
            Some(id) => id,
            None => {
                let kind: Option<String> = sqlx::query_scalar(
                    "SELECT sent_from FROM security_policies WHERE company_id = $1 AND id = $2",
                )
                .bind(company.id)
                .bind(policy)
                .fetch_optional(&mut *tx)
                .await?;
                if kind.as_deref() != Some("email_address") {
                    return Err(Error::invalid(
                        "security_policy_id",
                        "NOT_FOUND_IN_COMPANY",
                        "no Email Addresses security policy with this id exists in this company",
                    ));
                }
                let mut judged = judge(&mut tx, company.id, parsed).await?;
                if let Some(refused) =
                    ration_unavailable(&mut tx, &company, &self.tenancy, &mut judged).await?
                {
                    // Commit only the recorded refusals.
                    tx.commit().await?;
                    return Err(refused);
                }
                let ok = judged.iter().filter(|r| r.status == "ok").count();
                let id: Uuid = sqlx::query_scalar(
                    "INSERT INTO imports (company_id, policy_id, file_name, total_rows, ok_rows)
                     VALUES ($1, $2, $3, $4, $5) RETURNING id",
                )
                .bind(company.id)
                .bind(policy)
                .bind(&file_name)
                .bind(i32::try_from(judged.len()).unwrap_or(i32::MAX))
                .bind(i32::try_from(ok).unwrap_or(i32::MAX))
                .fetch_one(&mut *tx)
                .await?;
                insert_rows(&mut tx, id, &judged).await?;
                if let Some(key) = &idempotency {
                    key.store(&mut tx, company.id, id).await?;
                }
                id
            }
        };
        let import = fetch_import(&mut tx, &company, id, false).await?;
        let (rows, next_page_token) =
            rows_page(&mut tx, self.pager(company.id).await?, id, &[], limit, "").await?;
        tx.commit().await?;
        Ok(pb::PreviewImportResponse {
            import: Some(import),
            rows,
            next_page_token,
        })
    }

    pub(crate) async fn get_import(
        &self,
        request: pb::GetImportRequest,
    ) -> Result<pb::GetImportResponse> {
        let id = parse_id("import_id", &request.import_id)?;
        let mut conn = self.pool.acquire().await?;
        let company = store::company(&mut conn, &request.company_id).await?;
        Ok(pb::GetImportResponse {
            import: Some(fetch_import(&mut conn, &company, id, false).await?),
        })
    }

    pub(crate) async fn list_import_rows(
        &self,
        request: pb::ListImportRowsRequest,
    ) -> Result<pb::ListImportRowsResponse> {
        let id = parse_id("import_id", &request.import_id)?;
        let limit = crate::model::page_size(request.page_size, "page_size")?;
        let mut statuses = Vec::new();
        for status in &request.statuses {
            let text = pb::ImportRowStatus::try_from(*status)
                .ok()
                .and_then(status_text)
                .ok_or_else(|| Error::invalid("statuses", "UNKNOWN_ENUM", "unknown row status"))?;
            if !statuses.contains(&text) {
                statuses.push(text);
            }
        }
        let mut conn = self.pool.acquire().await?;
        let company = store::company(&mut conn, &request.company_id).await?;
        // Tenant check: the import must be this company's before any row is read.
        let owned: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM imports WHERE company_id = $1 AND id = $2)",
        )
        .bind(company.id)
        .bind(id)
        .fetch_one(&mut *conn)
        .await?;
        if !owned {
            return Err(Error::NotFound("import"));
        }
        let (rows, next_page_token) = rows_page(
            &mut conn,
            self.pager(company.id).await?,
            id,
            &statuses,
            limit,
            &request.page_token,
        )
        .await?;
        Ok(pb::ListImportRowsResponse {
            rows,
            next_page_token,
        })
    }

    pub(crate) async fn commit_import(
        &self,
        request: pb::CommitImportRequest,
    ) -> Result<pb::CommitImportResponse> {
        let id = parse_id("import_id", &request.import_id)?;
        let mut tx = self.begin_write().await?;
        let company = store::company(&mut tx, &request.company_id).await?;
        let import = fetch_import(&mut tx, &company, id, true).await?;
        match pb::ImportState::try_from(import.state) {
            Ok(pb::ImportState::Committed) => {
                // Idempotent: the first commit's result, nothing created, nobody notified again.
                return Ok(pb::CommitImportResponse {
                    import: Some(import),
                    notification: None,
                });
            }
            Ok(pb::ImportState::Expired) => {
                return Err(Error::FailedPrecondition(
                    "the preview expired and can no longer be committed: preview the file again"
                        .into(),
                ));
            }
            _ => {}
        }
        // Checked before anything is written, so a server without a smarthost refuses the whole
        // commit instead of committing without the promised emails.
        let mailer = if request.notify {
            Some(self.mailer()?.clone())
        } else {
            None
        };
        // Phase timings go to the log: the commit's cost is the number operators ask about.
        let started = std::time::Instant::now();
        // Rows whose address another company registered since the preview are skipped, never
        // applied half; a deleted row of this company is revived (one row per address).
        //
        // Two statements rather than one INSERT ... ON CONFLICT DO UPDATE: speculative insertion
        // costs about a third of a 100,000-row commit, and almost every row is new. An address
        // this company registers concurrently between the two makes the commit fail with
        // ALREADY_EXISTS (nothing applied); committing again then skips that row.
        //
        // Rows at a domain another company verified since the preview are skipped too. Those
        // domains are read first and passed as a (small) array: as a join, the check changed how
        // the planner joined the 100,000 rows.
        let blocked_domains: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT d.name FROM domains d
              WHERE d.state = 'verified' AND d.company_id <> $2
                AND d.name IN (SELECT split_part(normalised_email, '@', 2) FROM import_rows
                                WHERE import_id = $1 AND status = 'ok')",
        )
        .bind(id)
        .bind(company.id)
        .fetch_all(&mut *tx)
        .await?;
        let mut created: Vec<(Uuid, String)> = sqlx::query_as(
            "UPDATE email_addresses e
                SET policy_id = i.policy_id, forwarding_user_id = r.messenger_user_id,
                    import_id = i.id, disabled = false, deleted_at = NULL,
                    created_at = now(), updated_at = now()
               FROM import_rows r JOIN imports i ON i.id = r.import_id
              WHERE r.import_id = $1 AND i.company_id = $2 AND r.status = 'ok'
                AND e.company_id = i.company_id AND e.address = r.normalised_email
                AND e.deleted_at IS NOT NULL
                AND NOT EXISTS (
                    SELECT 1 FROM email_addresses o
                     WHERE o.address = r.normalised_email AND o.company_id <> i.company_id
                       AND o.deleted_at IS NULL AND NOT o.disabled)
                AND NOT (split_part(r.normalised_email, '@', 2) = ANY($3))
             RETURNING e.id, e.address",
        )
        .bind(id)
        .bind(company.id)
        .bind(&blocked_domains)
        .fetch_all(&mut *tx)
        .await?;
        let inserted: Vec<(Uuid, String)> = sqlx::query_as(
            "INSERT INTO email_addresses (company_id, policy_id, address, forwarding_user_id, import_id)
             SELECT i.company_id, i.policy_id, r.normalised_email, r.messenger_user_id, i.id
               FROM import_rows r JOIN imports i ON i.id = r.import_id
              WHERE r.import_id = $1 AND i.company_id = $2 AND r.status = 'ok'
                AND NOT EXISTS (
                    SELECT 1 FROM email_addresses o
                     WHERE o.address = r.normalised_email
                       AND (o.company_id = i.company_id
                            OR (o.deleted_at IS NULL AND NOT o.disabled)))
                AND NOT (split_part(r.normalised_email, '@', 2) = ANY($3))
             RETURNING id, address",
        )
        .bind(id)
        .bind(company.id)
        .bind(&blocked_domains)
        .fetch_all(&mut *tx)
        .await?;
        created.extend(inserted);
        sqlx::query(
            "UPDATE imports SET status = 'committed', committed_at = now(), created_rows = $3
             WHERE company_id = $1 AND id = $2",
        )
        .bind(company.id)
        .bind(id)
        .bind(i32::try_from(created.len()).unwrap_or(i32::MAX))
        .execute(&mut *tx)
        .await?;
        let written = started.elapsed();
        tx.bump_version().await?;
        // The batch is created in the commit's transaction, keyed by the import id: only the
        // first commit gets here (a repeated one returned above), so nobody is notified twice.
        let batch = match mailer {
            Some(_) => {
                notifications::create_batch(
                    &mut tx,
                    company.id,
                    &id.to_string(),
                    Some(id),
                    &created,
                )
                .await?
            }
            None => None,
        };
        let import = fetch_import(&mut tx, &company, id, false).await?;
        let pending = tx.commit_before_recompile().await?;
        let mut keys = Keys::for_company(&company.public_id);
        for (_, address) in &created {
            keys.add(EntryKind::Email, Some(address), None);
        }
        let committed = started.elapsed();
        pending.recompile(&keys).await;
        tracing::info!(
            import = %id,
            created = created.len(),
            written_ms = written.as_millis(),
            committed_ms = committed.as_millis(),
            total_ms = started.elapsed().as_millis(),
            "import committed"
        );
        let notification = match (batch, mailer) {
            (Some(batch), Some(mailer)) => {
                // Always in the background, as the CommitImport contract says: an import is
                // usually large, and the commit itself is already done.
                self.background
                    .spawn(notifications::run_batch(self.pool.clone(), mailer, batch));
                let mut conn = self.pool.acquire().await?;
                Some(notifications::fetch_batch(&mut conn, &company, batch).await?)
            }
            _ => None,
        };
        Ok(pb::CommitImportResponse {
            import: Some(import),
            notification,
        })
    }
}

/// Stores the verdicts with one statement per 10,000 rows (arrays unnested by Postgres), so
/// 100,000 rows take a few round trips instead of 100,000.
async fn insert_rows(conn: &mut PgConnection, import: Uuid, rows: &[JudgedRow]) -> Result<()> {
    for chunk in rows.chunks(10_000) {
        let lines: Vec<i32> = chunk.iter().map(|r| r.line_number).collect();
        let raw: Vec<&str> = chunk.iter().map(|r| r.raw_email.as_str()).collect();
        let users: Vec<&str> = chunk.iter().map(|r| r.username.as_str()).collect();
        let normalised: Vec<Option<&str>> = chunk.iter().map(|r| r.normalised.as_deref()).collect();
        let statuses: Vec<&str> = chunk.iter().map(|r| r.status).collect();
        let messages: Vec<&str> = chunk.iter().map(|r| r.message.as_str()).collect();
        let user_ids: Vec<Option<Uuid>> = chunk.iter().map(|r| r.user).collect();
        sqlx::query(
            "INSERT INTO import_rows
                (import_id, line_number, raw_email, username, normalised_email, status, message,
                 messenger_user_id)
             SELECT $1, * FROM unnest($2::int[], $3::text[], $4::text[], $5::text[], $6::text[],
                                      $7::text[], $8::uuid[])",
        )
        .bind(import)
        .bind(&lines)
        .bind(&raw)
        .bind(&users)
        .bind(&normalised)
        .bind(&statuses)
        .bind(&messages)
        .bind(&user_ids)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_in_any_case_bom_crlf_quotes_and_blank_lines_are_accepted() {
        let file = "\u{feff}EMAIL , username\r\n\r\n\"jo@example.com\", jo \r\n  \r\nbob@example.com,bob\r\n";
        let rows = parse_csv(file.as_bytes()).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].line_number, 3);
        assert_eq!(rows[0].fields, Some(("jo@example.com".into(), "jo".into())));
        assert_eq!(rows[1].line_number, 5);
    }

    #[test]
    fn wrong_columns_and_non_utf8_are_refused_with_a_message() {
        assert!(matches!(
            parse_csv(b"Address,User\na@b.c,x\n"),
            Err(Error::InvalidArgument(v)) if v[0].reason == "WRONG_COLUMNS"
        ));
        assert!(matches!(
            parse_csv(b"Email,Username\n\xff@b.c,x\n"),
            Err(Error::InvalidArgument(v)) if v[0].reason == "NOT_UTF8"
        ));
        assert!(matches!(
            parse_csv(b""),
            Err(Error::InvalidArgument(v)) if v[0].reason == "EMPTY_FILE"
        ));
    }

    #[test]
    fn row_with_wrong_field_count_is_malformed_at_its_line() {
        let rows = parse_csv(b"Email,Username\na@b.example,x,extra\n").unwrap();
        assert_eq!(rows[0].fields, None);
        assert_eq!(rows[0].found_fields, 3);
        assert_eq!(rows[0].line_number, 2);
        let rows = parse_csv(b"Email,Username\n\"a@b.example,x\nc@d.example,y\n").unwrap();
        assert_eq!(rows[0].problem, Some("an unterminated quote"));
        assert_eq!(
            rows[1].line_number, 3,
            "a broken quote does not swallow the next line"
        );
    }

    #[test]
    fn a_field_over_the_bound_makes_its_row_unreadable_and_the_next_row_is_read() {
        let longest = "u".repeat(MAX_FIELD_CHARS);
        let file = format!(
            "Email,Username\na@b.example,{longest}\nc@d.example,{longest}x\ne@f.example,y\n"
        );
        let rows = parse_csv(file.as_bytes()).unwrap();
        assert_eq!(
            rows[0].fields,
            Some(("a@b.example".into(), longest.clone())),
            "a field of exactly the bound is read"
        );
        assert_eq!(rows[1].line_number, 3);
        assert_eq!(rows[1].fields, None);
        assert_eq!(rows[1].problem, Some(FIELD_TOO_LONG));
        assert_eq!(rows[2].fields, Some(("e@f.example".into(), "y".into())));
        assert!(FIELD_TOO_LONG.contains(&MAX_FIELD_CHARS.to_string()));
    }

    #[test]
    fn unreadable_rows_count_towards_the_row_bound() {
        let file = format!("Email,Username\n{}", "\"\n".repeat(MAX_IMPORT_ROWS + 1));
        assert!(matches!(
            parse_csv(file.as_bytes()),
            Err(Error::InvalidArgument(v)) if v[0].reason == "TOO_MANY_ROWS"
        ));
        let file = format!("Email,Username\n{}", "\"\n".repeat(MAX_IMPORT_ROWS));
        assert_eq!(parse_csv(file.as_bytes()).unwrap().len(), MAX_IMPORT_ROWS);
    }

    #[test]
    fn quoted_fields_keep_commas_and_doubled_quotes() {
        assert_eq!(
            split_csv_line(r#" "a,b" , "say ""hi""" "#).unwrap(),
            vec!["a,b".to_owned(), "say \"hi\"".to_owned()]
        );
        assert!(split_csv_line(r#"a"b,c"#).is_err());
    }
}
