//! The status API for the portal: GetMessage and ListMessages, and ResolveMessageReview for the SMS
//! a crash left held for review; always scoped to one company.

use chrono::{DateTime, Utc};
use email2sms_proto::dispatch::v1::dispatch_service_server::DispatchService;
use email2sms_proto::dispatch::v1::{
    GetMessageRequest, GetMessageResponse, ListMessagesRequest, ListMessagesResponse,
    ResolveMessageReviewRequest, ResolveMessageReviewResponse, ReviewResolution, SmsMessage,
    SmsStateChange,
};
use email2sms_proto::prost::Message;
use email2sms_proto::prost_types::Timestamp;
use email2sms_proto::queue::v1::{EmailOrigin, SMS_JOB_TYPE, SmsEncoding, SmsJob, SmsState};
use email2sms_queue::topology::SMS_JOB_ROUTING_KEY;
use email2sms_queue::{Outgoing, Publisher, Topology};
use std::sync::Arc;

use email2sms_domain::{PhoneNumber, PhoneNumberError, Region};
use email2sms_runtime::page_token::{
    InvalidPageToken, KeyError, Keyset, PageTokenKey, PageTokenKeyCell,
};
use sqlx::{PgPool, Postgres, QueryBuilder};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::error::{Error, Violation};
use crate::jobs::state::failure_kind_from_stored;
use crate::jobs::{self, JobState};

/// Default and maximum page sizes of ListMessages.
const DEFAULT_PAGE_SIZE: i64 = 50;
const MAX_PAGE_SIZE: i64 = 1000;

/// Longest note a review resolution keeps.
const MAX_REVIEW_NOTE_CHARS: usize = 500;

/// The gRPC DispatchService.
#[derive(Debug, Clone)]
pub struct DispatchApi {
    pool: PgPool,
    requeue: JobRequeue,
    /// Read from the database on the first ListMessages, then kept.
    page_token_key: PageTokenKeyCell,
}

impl DispatchApi {
    pub fn new(pool: PgPool, requeue: JobRequeue) -> Self {
        DispatchApi {
            pool,
            requeue,
            page_token_key: PageTokenKeyCell::default(),
        }
    }

    async fn page_token_key(&self) -> Result<&PageTokenKey, Error> {
        self.page_token_key
            .get(&self.pool)
            .await
            .map_err(|error| match error {
                KeyError::Database(db) => Error::Database(db),
                // Only an edited key row is too short: an internal error, logged.
                short @ KeyError::TooShort(_) => {
                    Error::Database(sqlx::Error::Decode(Box::new(short)))
                }
            })
    }
}

/// Where a job resolved for resending goes: the job queue, as ingest publishes it.
#[derive(Debug, Clone)]
pub struct JobRequeue {
    publisher: Arc<Publisher>,
    topology: Topology,
}

impl JobRequeue {
    pub fn new(publisher: Arc<Publisher>, topology: Topology) -> Self {
        JobRequeue {
            publisher,
            topology,
        }
    }

    /// Publishes `job` (confirmed, persistent, routable) to the job queue.
    async fn publish(&self, job: &SmsJob) -> Result<(), email2sms_queue::QueueError> {
        self.publisher
            .publish(Outgoing {
                exchange: &self.topology.jobs_exchange(),
                routing_key: SMS_JOB_ROUTING_KEY,
                payload: &job.encode_to_vec(),
                message_id: job.job_id.clone(),
                message_type: SMS_JOB_TYPE,
                headers: lapin::types::FieldTable::default(),
            })
            .await
    }
}

/// One `sms_jobs` row as the API shows it.
#[derive(Debug, sqlx::FromRow)]
struct JobRow {
    job_id: Uuid,
    company_id: Uuid,
    forwarding_user_id: Uuid,
    sender_id: Option<String>,
    recipient: String,
    text: String,
    encoding: String,
    segments: i32,
    truncated: bool,
    state: String,
    attempts: i32,
    connector: Option<String>,
    provider_message_id: Option<String>,
    failure_kind: Option<String>,
    error_code: Option<String>,
    last_error: Option<String>,
    origin: Option<Vec<u8>>,
    company_region: Option<String>,
    job_created_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    submitted_at: Option<DateTime<Utc>>,
    final_at: Option<DateTime<Utc>>,
    valid_until: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
}

const JOB_COLUMNS: &str = "job_id, company_id, forwarding_user_id, sender_id, recipient, text, \
    encoding, segments, truncated, state, attempts, connector, provider_message_id, failure_kind, \
    error_code, last_error, origin, company_region, job_created_at, created_at, submitted_at, final_at, \
    valid_until, updated_at";

fn timestamp(time: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: time.timestamp(),
        // Always below 2 × 10⁹ (leap seconds included), so it fits.
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

fn from_timestamp(field: &'static str, ts: &Timestamp) -> Result<DateTime<Utc>, Violation> {
    u32::try_from(ts.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(ts.seconds, nanos))
        .ok_or_else(|| Violation::without_reason(field, "not a valid timestamp"))
}

impl From<JobRow> for SmsMessage {
    fn from(row: JobRow) -> SmsMessage {
        let state = JobState::parse(&row.state).unwrap_or(JobState::NeedsReview);
        let encoding = match row.encoding.as_str() {
            "gsm7" => SmsEncoding::Gsm7,
            "ucs2" => SmsEncoding::Ucs2,
            _ => SmsEncoding::Unspecified,
        };
        let failure_kind = failure_kind_from_stored(row.failure_kind.as_deref());
        SmsMessage {
            job_id: row.job_id.to_string(),
            company_id: row.company_id.to_string(),
            forwarding_user_id: row.forwarding_user_id.to_string(),
            sender_id: row.sender_id.unwrap_or_default(),
            recipient: row.recipient,
            text: row.text,
            encoding: encoding as i32,
            segment_count: u32::try_from(row.segments).unwrap_or(0),
            truncated: row.truncated,
            state: state.proto() as i32,
            needs_review: state == JobState::NeedsReview,
            attempt_count: u32::try_from(row.attempts).unwrap_or(0),
            connector: row.connector.unwrap_or_default(),
            provider_message_id: row.provider_message_id.unwrap_or_default(),
            failure_kind: failure_kind as i32,
            error_code: row.error_code.unwrap_or_default(),
            error_message: row.last_error.unwrap_or_default(),
            origin: row
                .origin
                .and_then(|bytes| EmailOrigin::decode(bytes.as_slice()).ok()),
            create_time: Some(timestamp(row.job_created_at.unwrap_or(row.created_at))),
            queue_time: Some(timestamp(row.created_at)),
            submit_time: row.submitted_at.map(timestamp),
            final_time: row.final_at.map(timestamp),
            expire_time: row.valid_until.map(timestamp),
            update_time: Some(timestamp(row.updated_at)),
        }
    }
}

fn parse_uuid(field: &'static str, text: &str) -> Result<Uuid, Violation> {
    if text.is_empty() {
        return Err(Violation::without_reason(field, "required"));
    }
    Uuid::parse_str(text).map_err(|_| Violation::without_reason(field, "must be a UUID"))
}

/// ListMessages filters, validated.
#[derive(Debug)]
struct ListFilter {
    company_id: Uuid,
    page_size: i64,
    recipient: Option<String>,
    forwarding_user_id: Option<Uuid>,
    states: Vec<JobState>,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    email_message_id: Option<String>,
    needs_review_only: bool,
}

impl ListFilter {
    fn parse(request: &ListMessagesRequest) -> Result<ListFilter, Vec<Violation>> {
        let mut problems = Vec::new();
        let company_id = parse_uuid("company_id", &request.company_id)
            .map_err(|p| problems.push(p))
            .ok();
        let page_size = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            size if size < 0 => {
                problems.push(Violation::without_reason(
                    "page_size",
                    "must not be negative",
                ));
                DEFAULT_PAGE_SIZE
            }
            size => i64::from(size).min(MAX_PAGE_SIZE),
        };
        // Read as ingest reads a recipient once the company is known: see `recipient_filter`.
        let recipient = Some(request.recipient.trim().to_owned()).filter(|text| !text.is_empty());
        let forwarding_user_id = match request.forwarding_user_id.as_str() {
            "" => None,
            text => parse_uuid("forwarding_user_id", text)
                .map_err(|p| problems.push(p))
                .ok(),
        };
        let mut states = Vec::new();
        for (index, value) in request.states.iter().enumerate() {
            match SmsState::try_from(*value) {
                Ok(SmsState::Unspecified) | Err(_) => problems.push(Violation::without_reason(
                    format!("states[{index}]"),
                    "not a known state",
                )),
                // SUBMITTING includes jobs under review, as they are shown as SUBMITTING.
                Ok(state) => states.extend(JobState::showing_as(state)),
            }
        }
        let start = request
            .start_time
            .as_ref()
            .map(|ts| from_timestamp("start_time", ts))
            .transpose()
            .map_err(|p| problems.push(p))
            .ok()
            .flatten();
        let end = request
            .end_time
            .as_ref()
            .map(|ts| from_timestamp("end_time", ts))
            .transpose()
            .map_err(|p| problems.push(p))
            .ok()
            .flatten();
        if let (Some(start), Some(end)) = (start, end)
            && start >= end
        {
            problems.push(Violation::without_reason(
                "end_time",
                "must be after start_time",
            ));
        }
        let email_message_id = Some(
            request
                .email_message_id
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned(),
        )
        .filter(|id| !id.is_empty());
        match company_id {
            Some(company_id) if problems.is_empty() => Ok(ListFilter {
                company_id,
                page_size,
                recipient,
                forwarding_user_id,
                states,
                start,
                end,
                email_message_id,
                needs_review_only: request.needs_review_only,
            }),
            _ => Err(problems),
        }
    }

    /// The filters as one stable text, which a page token's tag covers, so a token is only
    /// accepted with the filters it was issued for.
    fn canonical(&self) -> String {
        format!(
            "{}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{}",
            self.company_id,
            self.recipient,
            self.forwarding_user_id,
            // As stored, so tokens stay valid whatever the enum's names.
            self.states.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            self.start.map(|t| t.timestamp_micros()),
            self.end.map(|t| t.timestamp_micros()),
            self.email_message_id,
            self.needs_review_only
        )
    }
}

/// Where the next page starts: after (created_at, job_id) of the last row shown, in a page token
/// of `email2sms_runtime::page_token` (bound to the company and the filters by its tag).
#[derive(Debug, PartialEq, Eq)]
struct PageToken {
    created_at_micros: i64,
    job_id: Uuid,
}

impl PageToken {
    fn seal(&self, key: &PageTokenKey, filter: &ListFilter) -> String {
        let position = Keyset {
            id: self.job_id,
            sort: self.created_at_micros.to_be_bytes().to_vec(),
        };
        key.seal(filter.company_id, filter.canonical().as_bytes(), &position)
    }

    /// The position in `text` (`None`: the first page), if `key` issued it for `filter`.
    fn open(
        key: &PageTokenKey,
        filter: &ListFilter,
        text: &str,
    ) -> Result<Option<PageToken>, InvalidPageToken> {
        let Some(position) = key.open(filter.company_id, filter.canonical().as_bytes(), text)?
        else {
            return Ok(None);
        };
        // Eight big-endian bytes; anything else was not sealed by `seal` (of this version).
        let micros: [u8; 8] = position.sort.try_into().map_err(|_| InvalidPageToken)?;
        Ok(Some(PageToken {
            created_at_micros: i64::from_be_bytes(micros),
            job_id: position.id,
        }))
    }
}

/// A request's `company_id` and `job_id`; a bad one is added to `problems`.
fn message_key(
    company_id: &str,
    job_id: &str,
    problems: &mut Vec<Violation>,
) -> Option<(Uuid, Uuid)> {
    let company_id = parse_uuid("company_id", company_id)
        .map_err(|p| problems.push(p))
        .ok();
    let job_id = parse_uuid("job_id", job_id)
        .map_err(|p| problems.push(p))
        .ok();
    company_id.zip(job_id)
}

/// The company's message `job_id`, locked for update when `lock`. The company is part of the
/// key: another company's message is indistinguishable from a missing one.
async fn company_message(
    conn: &mut sqlx::PgConnection,
    company_id: Uuid,
    job_id: Uuid,
    lock: bool,
) -> Result<JobRow, Error> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    sqlx::query_as(&format!(
        "SELECT {JOB_COLUMNS} FROM sms_jobs WHERE job_id = $1 AND company_id = $2{lock}"
    ))
    .bind(job_id)
    .bind(company_id)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| Error::NotFound(format!("message {job_id}")))
}

async fn get_message(
    pool: &PgPool,
    request: GetMessageRequest,
) -> Result<GetMessageResponse, Error> {
    let mut problems = Vec::new();
    let Some((company_id, job_id)) =
        message_key(&request.company_id, &request.job_id, &mut problems)
    else {
        return Err(Error::InvalidArgument(problems));
    };
    let row = company_message(&mut *pool.acquire().await?, company_id, job_id, false).await?;
    let history: Vec<(String, DateTime<Utc>, Option<i32>, String)> = sqlx::query_as(
        "SELECT to_state, at, attempt, detail FROM sms_job_history
         WHERE job_id = $1 ORDER BY position",
    )
    .bind(job_id)
    .fetch_all(pool)
    .await?;
    Ok(GetMessageResponse {
        message: Some(row.into()),
        history: history
            .into_iter()
            .map(|(state, at, attempt, detail)| SmsStateChange {
                state: JobState::parse(&state).map_or(SmsState::Unspecified, JobState::proto)
                    as i32,
                change_time: Some(timestamp(at)),
                attempt: attempt.and_then(|a| u32::try_from(a).ok()).unwrap_or(0),
                detail,
            })
            .collect(),
    })
}

/// A recipient as a person types it, in E.164: every form ingest accepts in RCPT TO (libs/domain's
/// [`PhoneNumber`], the same parser): international with `+` or `00`, or national, with spaces,
/// dots, dashes or brackets. A national number (or one written without `+`, such as
/// `64211000003`) is read with the company's default region; dispatch learns it from the jobs
/// ingest publishes (`SmsJob.company_region`), so the region recorded on the company's most recent
/// job is used. A company with none recorded can be searched by international numbers only.
async fn recipient_filter(pool: &PgPool, company_id: Uuid, typed: &str) -> Result<String, Error> {
    let refused = |error: PhoneNumberError| {
        Error::InvalidArgument(vec![Violation::without_reason(
            "recipient",
            error.to_string(),
        )])
    };
    match PhoneNumber::parse(typed, None) {
        Ok(number) => return Ok(number.as_str().to_owned()),
        Err(PhoneNumberError::MissingCountryCode { .. }) => {}
        Err(error) => return Err(refused(error)),
    }
    // Served by the company index, newest first: normally the first row has it.
    let region: Option<String> = sqlx::query_scalar(
        "SELECT company_region FROM sms_jobs
         WHERE company_id = $1 AND company_region IS NOT NULL
         ORDER BY created_at DESC, job_id DESC LIMIT 1",
    )
    .bind(company_id)
    .fetch_optional(pool)
    .await?;
    let region = region.as_deref().and_then(|code| Region::parse(code).ok());
    PhoneNumber::parse(typed, region)
        .map(|number| number.as_str().to_owned())
        .map_err(refused)
}

async fn list_messages(
    pool: &PgPool,
    key: &PageTokenKey,
    request: ListMessagesRequest,
) -> Result<ListMessagesResponse, Error> {
    let mut filter = ListFilter::parse(&request).map_err(Error::InvalidArgument)?;
    if let Some(typed) = filter.recipient.take() {
        filter.recipient = Some(recipient_filter(pool, filter.company_id, &typed).await?);
    }
    let after = PageToken::open(key, &filter, &request.page_token)
        .map_err(|invalid| Error::InvalidArgument(vec![invalid.violation()]))?;
    // Ordered by the time dispatch recorded the job (newest first), which the company index
    // serves; it trails ingest's create_time by the queue latency only.
    let mut query: QueryBuilder<Postgres> = QueryBuilder::new(format!(
        "SELECT {JOB_COLUMNS} FROM sms_jobs WHERE company_id = "
    ));
    query.push_bind(filter.company_id);
    if let Some(recipient) = &filter.recipient {
        query.push(" AND recipient = ").push_bind(recipient.clone());
    }
    if let Some(user) = filter.forwarding_user_id {
        query.push(" AND forwarding_user_id = ").push_bind(user);
    }
    if !filter.states.is_empty() {
        let states: Vec<&str> = filter.states.iter().map(|s| s.as_str()).collect();
        query.push(" AND state = ANY(").push_bind(states).push(")");
    }
    if filter.needs_review_only {
        query
            .push(" AND state = ")
            .push_bind(JobState::NeedsReview.as_str());
    }
    if let Some(start) = filter.start {
        query.push(" AND created_at >= ").push_bind(start);
    }
    if let Some(end) = filter.end {
        query.push(" AND created_at < ").push_bind(end);
    }
    if let Some(id) = &filter.email_message_id {
        query.push(" AND email_message_id = ").push_bind(id.clone());
    }
    if let Some(token) = &after {
        let created_at = DateTime::from_timestamp_micros(token.created_at_micros)
            .ok_or_else(|| Error::InvalidArgument(vec![InvalidPageToken.violation()]))?;
        query
            .push(" AND (created_at, job_id) < (")
            .push_bind(created_at)
            .push(", ")
            .push_bind(token.job_id)
            .push(")");
    }
    // One extra row tells whether there is a next page.
    query
        .push(" ORDER BY created_at DESC, job_id DESC LIMIT ")
        .push_bind(filter.page_size + 1);
    let mut rows: Vec<JobRow> = query.build_query_as().fetch_all(pool).await?;
    let more = rows.len() as i64 > filter.page_size;
    rows.truncate(usize::try_from(filter.page_size).unwrap_or(0));
    let next_page_token = match rows.last() {
        Some(last) if more => PageToken {
            created_at_micros: last.created_at.timestamp_micros(),
            job_id: last.job_id,
        }
        .seal(key, &filter),
        _ => String::new(),
    };
    Ok(ListMessagesResponse {
        messages: rows.into_iter().map(SmsMessage::from).collect(),
        next_page_token,
    })
}

/// The job as ingest published it, rebuilt from its row for sending again: what dispatch reads of
/// a job is all kept (the policy match and authentication results are not, and are not needed).
fn job_from_row(row: &JobRow) -> SmsJob {
    SmsJob {
        job_id: row.job_id.to_string(),
        create_time: Some(timestamp(row.job_created_at.unwrap_or(row.created_at))),
        expire_time: row.valid_until.map(timestamp),
        company_id: row.company_id.to_string(),
        forwarding_user_id: row.forwarding_user_id.to_string(),
        sender_id: row.sender_id.clone().unwrap_or_default(),
        recipient: row.recipient.clone(),
        text: row.text.clone(),
        truncated: row.truncated,
        origin: row
            .origin
            .as_deref()
            .and_then(|bytes| EmailOrigin::decode(bytes).ok()),
        company_region: row.company_region.clone().unwrap_or_default(),
        ..SmsJob::default()
    }
}

async fn resolve_message_review(
    pool: &PgPool,
    requeue: &JobRequeue,
    request: ResolveMessageReviewRequest,
) -> Result<ResolveMessageReviewResponse, Error> {
    let mut problems = Vec::new();
    let key = message_key(&request.company_id, &request.job_id, &mut problems);
    let resolution = match ReviewResolution::try_from(request.resolution) {
        Ok(ReviewResolution::Sent) => Some(jobs::ReviewResolution::Sent),
        Ok(ReviewResolution::NotSent) => Some(jobs::ReviewResolution::NotSent),
        Ok(ReviewResolution::Resend) => Some(jobs::ReviewResolution::Resend),
        Ok(ReviewResolution::Unspecified) | Err(_) => {
            problems.push(Violation::without_reason(
                "resolution",
                "say what happened: SENT (the provider has it), NOT_SENT or RESEND",
            ));
            None
        }
    };
    let note = request.note.trim();
    if note.chars().count() > MAX_REVIEW_NOTE_CHARS {
        problems.push(Violation::without_reason(
            "note",
            format!("at most {MAX_REVIEW_NOTE_CHARS} characters"),
        ));
    }
    let (Some((company_id, job_id)), Some(resolution), true) =
        (key, resolution, problems.is_empty())
    else {
        return Err(Error::InvalidArgument(problems));
    };
    let mut tx = pool.begin().await?;
    let row = company_message(&mut tx, company_id, job_id, true).await?;
    if row.state != JobState::NeedsReview.as_str() {
        return Err(Error::FailedPrecondition(format!(
            "message {job_id} is {}, not held for review: only a message held for review can be \
             resolved",
            row.state
        )));
    }
    let announced = jobs::resolve_review(&mut tx, job_id, resolution, note).await?;
    // Read before the commit, so that once it is committed nothing can fail any more: a client
    // told of an error may retry, and a retry of a committed resolution is refused.
    let resolved = company_message(&mut tx, company_id, job_id, false).await?;
    if resolution == jobs::ReviewResolution::Resend {
        // Published before the commit, while the row is still locked: the consumer that takes it
        // waits for the commit and then finds it queued. Should the publish fail, nothing changes.
        requeue.publish(&job_from_row(&row)).await?;
    }
    tx.commit().await?;
    announced.committed();
    Ok(ResolveMessageReviewResponse {
        message: Some(resolved.into()),
    })
}

#[tonic::async_trait]
impl DispatchService for DispatchApi {
    async fn get_message(
        &self,
        request: Request<GetMessageRequest>,
    ) -> Result<Response<GetMessageResponse>, Status> {
        Ok(Response::new(
            get_message(&self.pool, request.into_inner()).await?,
        ))
    }

    async fn list_messages(
        &self,
        request: Request<ListMessagesRequest>,
    ) -> Result<Response<ListMessagesResponse>, Status> {
        Ok(Response::new(
            list_messages(
                &self.pool,
                self.page_token_key().await?,
                request.into_inner(),
            )
            .await?,
        ))
    }

    async fn resolve_message_review(
        &self,
        request: Request<ResolveMessageReviewRequest>,
    ) -> Result<Response<ResolveMessageReviewResponse>, Status> {
        Ok(Response::new(
            resolve_message_review(&self.pool, &self.requeue, request.into_inner()).await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(company: u128) -> ListFilter {
        ListFilter::parse(&ListMessagesRequest {
            company_id: Uuid::from_u128(company).to_string(),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn page_tokens_round_trip_for_their_company_and_filters_only() {
        let key = PageTokenKey::from_bytes(&[3; 32]).unwrap();
        let token = PageToken {
            created_at_micros: 1_790_000_000_123_456,
            job_id: Uuid::now_v7(),
        };
        let text = token.seal(&key, &filter(1));
        assert_eq!(PageToken::open(&key, &filter(1), &text), Ok(Some(token)));
        assert_eq!(PageToken::open(&key, &filter(1), ""), Ok(None));
        assert_eq!(
            PageToken::open(&key, &filter(2), &text),
            Err(InvalidPageToken)
        );
        let mut review_only = filter(1);
        review_only.needs_review_only = true;
        assert_eq!(
            PageToken::open(&key, &review_only, &text),
            Err(InvalidPageToken)
        );
        let other_key = PageTokenKey::from_bytes(&[4; 32]).unwrap();
        assert_eq!(
            PageToken::open(&other_key, &filter(1), &text),
            Err(InvalidPageToken)
        );
        assert_eq!(
            PageToken::open(&key, &filter(1), "zz"),
            Err(InvalidPageToken)
        );
    }
}
