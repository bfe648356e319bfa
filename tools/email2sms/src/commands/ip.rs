//! `email2sms ip`: IP address entries (a mail server by IP or CIDR).

use email2sms_proto::policy::v1 as pb;
use serde_json::json;

use crate::client::{ConnectionArgs, PageArgs, request_id};
use crate::error::{CallExt, CliError};
use crate::output::{Output, policy as view};

#[derive(Debug, clap::Subcommand)]
pub enum IpCommand {
    /// Add an IP address entry: mail from a server inside the range may send, from any address.
    Add {
        #[arg(long)]
        company: String,
        /// An ip_address policy of the company.
        #[arg(long)]
        policy: String,
        /// The forwarding user (messenger_user_id); the policy's default when absent.
        #[arg(long, default_value = "")]
        user: String,
        /// Free text, e.g. "Office Exchange server".
        #[arg(long, default_value = "")]
        description: String,
        /// A single IP or a CIDR (at most /24 for IPv4, /48 for IPv6 by default).
        range: String,
    },
    /// List a company's IP address entries, by address.
    List {
        #[arg(long)]
        company: String,
        /// Only entries of this policy.
        #[arg(long, default_value = "")]
        policy: String,
        /// Only entries whose range contains this IP.
        #[arg(long, default_value = "")]
        contains: String,
        /// Only ready (true) or only not-ready (false) entries.
        #[arg(long)]
        ready: Option<bool>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Delete an IP address entry.
    Rm {
        #[arg(long)]
        company: String,
        /// The ip_address_id.
        ip_address_id: String,
    },
}

pub async fn run(
    command: IpCommand,
    connection: &ConnectionArgs,
    output: Output,
) -> Result<(), CliError> {
    let mut client = connection.policy().await?;
    match command {
        IpCommand::Add {
            company,
            policy,
            user,
            description,
            range,
        } => {
            let response = client
                .create_ip_address(pb::CreateIpAddressRequest {
                    company_id: company,
                    ip_address: Some(pb::IpAddress {
                        security_policy_id: policy,
                        ip_range: range,
                        description,
                        forwarding_user_id: user,
                        ..Default::default()
                    }),
                    request_id: request_id(),
                })
                .await
                .rpc("CreateIpAddress")?;
            output.one(&view::ip_address(&response.ip_address.unwrap_or_default()));
        }
        IpCommand::List {
            company,
            policy,
            contains,
            ready,
            page,
        } => {
            let response = client
                .list_ip_addresses(pb::ListIpAddressesRequest {
                    company_id: company,
                    page_size: page.page_size,
                    page_token: page.page_token,
                    security_policy_id: policy,
                    forwarding_user_id: String::new(),
                    contains_ip: contains,
                    ready,
                })
                .await
                .rpc("ListIpAddresses")?;
            let items: Vec<_> = response.ip_addresses.iter().map(view::ip_address).collect();
            output.page(
                "ip_addresses",
                &items,
                view::IP_COLUMNS,
                &response.next_page_token,
            );
        }
        IpCommand::Rm {
            company,
            ip_address_id,
        } => {
            client
                .delete_ip_address(pb::DeleteIpAddressRequest {
                    company_id: company,
                    ip_address_id: ip_address_id.clone(),
                })
                .await
                .rpc("DeleteIpAddress")?;
            output.note(&format!("IP address entry {ip_address_id} deleted"));
            if output.json {
                output.one(&json!({ "deleted": ip_address_id }));
            }
        }
    }
    Ok(())
}
