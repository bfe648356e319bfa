//! `email2sms messages` and `email2sms review`: what happened to each SMS, and settling the ones
//! held for review after a crash mid-send.

use email2sms_proto::dispatch::v1 as pb;
use email2sms_proto::prost_types::Timestamp;
use email2sms_proto::queue::v1 as qpb;
use serde_json::json;

use crate::client::{ConnectionArgs, PageArgs};
use crate::enum_arg;
use crate::error::{CallExt, CliError};
use crate::output::{Output, dispatch as view};

enum_arg!(
    parse_state,
    qpb::SmsState,
    "SMS_STATE_",
    "queued, submitting, submitted, delivered, failed, expired"
);
enum_arg!(
    parse_resolution,
    pb::ReviewResolution,
    "REVIEW_RESOLUTION_",
    "sent, not_sent, resend"
);

/// An RFC 3339 time (`2026-12-04T10:00:00Z`) as a protobuf timestamp.
fn parse_time(text: &str) -> Result<Timestamp, String> {
    let time = chrono::DateTime::parse_from_rfc3339(text).map_err(|error| {
        format!("expected an RFC 3339 time such as 2026-12-04T10:00:00Z: {error}")
    })?;
    Ok(Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    })
}

/// The filters of ListMessages.
#[derive(Debug, clap::Args)]
pub struct MessageFilters {
    #[arg(long)]
    company: String,
    /// Only SMS to this number, in any form ingest accepts (+64 21 100 0003, 021 100 0003).
    #[arg(long, default_value = "")]
    recipient: String,
    /// Only SMS sent as this forwarding user (messenger_user_id).
    #[arg(long, default_value = "")]
    user: String,
    /// Only SMS in this state (repeat for several): queued, submitting, submitted, delivered,
    /// failed, expired.
    #[arg(long = "state", value_parser = parse_state)]
    states: Vec<i32>,
    /// Only SMS created at or after this RFC 3339 time.
    #[arg(long, value_parser = parse_time)]
    since: Option<Timestamp>,
    /// Only SMS created before this RFC 3339 time.
    #[arg(long, value_parser = parse_time)]
    until: Option<Timestamp>,
    /// Only SMS made from the email with this Message-ID (without angle brackets).
    #[arg(long, default_value = "")]
    email_message_id: String,
    #[command(flatten)]
    page: PageArgs,
}

impl MessageFilters {
    fn request(self, needs_review_only: bool) -> pb::ListMessagesRequest {
        pb::ListMessagesRequest {
            company_id: self.company,
            page_size: self.page.page_size,
            page_token: self.page.page_token,
            recipient: self.recipient,
            forwarding_user_id: self.user,
            states: self.states,
            start_time: self.since,
            end_time: self.until,
            email_message_id: self.email_message_id,
            needs_review_only,
        }
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum MessagesCommand {
    /// List a company's SMS, newest first.
    List {
        #[command(flatten)]
        filters: MessageFilters,
        /// Only SMS held for review.
        #[arg(long)]
        needs_review: bool,
    },
    /// Show one SMS with its full state history.
    Get {
        #[arg(long)]
        company: String,
        /// The job id.
        job_id: String,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum ReviewCommand {
    /// List the SMS held for review (found mid-send after a crash: sent or not is unknown).
    List {
        #[command(flatten)]
        filters: MessageFilters,
    },
    /// Settle an SMS held for review, after checking with the provider.
    Resolve {
        #[arg(long)]
        company: String,
        /// sent (the provider has it), not_sent (record it failed), resend (queue it again).
        #[arg(long = "as", value_parser = parse_resolution)]
        resolution: i32,
        /// Why, for the SMS's history (e.g. the provider's ticket number); up to 500 characters.
        #[arg(long, default_value = "")]
        note: String,
        /// The job id.
        job_id: String,
    },
}

async fn list(
    request: pb::ListMessagesRequest,
    connection: &ConnectionArgs,
    output: Output,
) -> Result<(), CliError> {
    let response = connection
        .dispatch()
        .await?
        .list_messages(request)
        .await
        .rpc("ListMessages")?;
    let items: Vec<_> = response.messages.iter().map(view::message).collect();
    output.page(
        "messages",
        &items,
        view::MESSAGE_COLUMNS,
        &response.next_page_token,
    );
    Ok(())
}

pub async fn run_messages(
    command: MessagesCommand,
    connection: &ConnectionArgs,
    output: Output,
) -> Result<(), CliError> {
    match command {
        MessagesCommand::List {
            filters,
            needs_review,
        } => list(filters.request(needs_review), connection, output).await,
        MessagesCommand::Get { company, job_id } => {
            let response = connection
                .dispatch()
                .await?
                .get_message(pb::GetMessageRequest {
                    company_id: company,
                    job_id,
                })
                .await
                .rpc("GetMessage")?;
            let message = view::message(&response.message.unwrap_or_default());
            let history: Vec<_> = response.history.iter().map(view::state_change).collect();
            if output.json {
                output.one(&json!({ "message": message, "history": history }));
            } else {
                output.one(&message);
                println!();
                output.table(&history, view::HISTORY_COLUMNS);
            }
            Ok(())
        }
    }
}

pub async fn run_review(
    command: ReviewCommand,
    connection: &ConnectionArgs,
    output: Output,
) -> Result<(), CliError> {
    match command {
        ReviewCommand::List { filters } => list(filters.request(true), connection, output).await,
        ReviewCommand::Resolve {
            company,
            resolution,
            note,
            job_id,
        } => {
            let response = connection
                .dispatch()
                .await?
                .resolve_message_review(pb::ResolveMessageReviewRequest {
                    company_id: company,
                    job_id,
                    resolution,
                    note,
                })
                .await
                .rpc("ResolveMessageReview")?;
            output.one(&view::message(&response.message.unwrap_or_default()));
            Ok(())
        }
    }
}
