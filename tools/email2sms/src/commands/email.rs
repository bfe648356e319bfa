//! `email2sms email`: single email address entries ("Create Email").

use email2sms_proto::policy::v1 as pb;
use serde_json::json;

use crate::client::{ConnectionArgs, PageArgs, request_id};
use crate::error::{CallExt, CliError};
use crate::output::{Output, policy as view};

#[derive(Debug, clap::Subcommand)]
pub enum EmailCommand {
    /// Add an email address entry: mail whose From is exactly this address may send.
    Add {
        #[arg(long)]
        company: String,
        /// An email_address policy of the company.
        #[arg(long)]
        policy: String,
        /// The forwarding user (messenger_user_id); the policy's default when absent.
        #[arg(long, default_value = "")]
        user: String,
        /// The address, e.g. jane@example.com.
        address: String,
    },
    /// List a company's email address entries, by address.
    List {
        #[arg(long)]
        company: String,
        /// Only entries of this policy.
        #[arg(long, default_value = "")]
        policy: String,
        /// Only ready (true) or only not-ready (false) entries.
        #[arg(long)]
        ready: Option<bool>,
        /// Only addresses containing this text.
        #[arg(long, default_value = "")]
        query: String,
        /// Only entries created by this import.
        #[arg(long, default_value = "")]
        import: String,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Delete an email address entry.
    Rm {
        #[arg(long)]
        company: String,
        /// The email_address_id.
        email_address_id: String,
    },
}

pub async fn run(
    command: EmailCommand,
    connection: &ConnectionArgs,
    output: Output,
) -> Result<(), CliError> {
    let mut client = connection.policy().await?;
    match command {
        EmailCommand::Add {
            company,
            policy,
            user,
            address,
        } => {
            let response = client
                .create_email_address(pb::CreateEmailAddressRequest {
                    company_id: company,
                    email_address: Some(pb::EmailAddress {
                        security_policy_id: policy,
                        email_address: address,
                        forwarding_user_id: user,
                        ..Default::default()
                    }),
                    request_id: request_id(),
                })
                .await
                .rpc("CreateEmailAddress")?;
            output.one(&view::email_address(
                &response.email_address.unwrap_or_default(),
            ));
        }
        EmailCommand::List {
            company,
            policy,
            ready,
            query,
            import,
            page,
        } => {
            let response = client
                .list_email_addresses(pb::ListEmailAddressesRequest {
                    company_id: company,
                    page_size: page.page_size,
                    page_token: page.page_token,
                    security_policy_id: policy,
                    forwarding_user_id: String::new(),
                    ready,
                    import_id: import,
                    query,
                })
                .await
                .rpc("ListEmailAddresses")?;
            let items: Vec<_> = response
                .email_addresses
                .iter()
                .map(view::email_address)
                .collect();
            output.page(
                "email_addresses",
                &items,
                view::EMAIL_COLUMNS,
                &response.next_page_token,
            );
        }
        EmailCommand::Rm {
            company,
            email_address_id,
        } => {
            client
                .delete_email_address(pb::DeleteEmailAddressRequest {
                    company_id: company,
                    email_address_id: email_address_id.clone(),
                })
                .await
                .rpc("DeleteEmailAddress")?;
            output.note(&format!("email address entry {email_address_id} deleted"));
            if output.json {
                output.one(&json!({ "deleted": email_address_id }));
            }
        }
    }
    Ok(())
}
