//! `email2sms sender-log`: every mail server seen sending for a company, newest first.

use email2sms_proto::policy::v1 as pb;

use crate::client::{ConnectionArgs, PageArgs};
use crate::error::{CallExt, CliError};
use crate::output::{Output, policy as view};

#[derive(Debug, clap::Args)]
pub struct SenderLogArgs {
    #[arg(long)]
    company: String,
    /// Only servers inside this IP or CIDR.
    #[arg(long, default_value = "")]
    ip: String,
    #[command(flatten)]
    page: PageArgs,
}

pub async fn run(
    args: SenderLogArgs,
    connection: &ConnectionArgs,
    output: Output,
) -> Result<(), CliError> {
    let response = connection
        .policy()
        .await?
        .list_sender_log(pb::ListSenderLogRequest {
            company_id: args.company,
            page_size: args.page.page_size,
            page_token: args.page.page_token,
            client_ip_range: args.ip,
            seen_after_time: None,
        })
        .await
        .rpc("ListSenderLog")?;
    let items: Vec<_> = response
        .entries
        .iter()
        .map(view::sender_log_entry)
        .collect();
    output.page(
        "entries",
        &items,
        view::SENDER_LOG_COLUMNS,
        &response.next_page_token,
    );
    Ok(())
}
