//! `email2sms policy`: security policies ("Create Email2SMS Security"), and rebuilding the
//! compiled sender lookups.

use email2sms_proto::policy::v1 as pb;
use email2sms_proto::prost_types::FieldMask;
use serde_json::json;

use crate::client::{ConnectionArgs, PageArgs, request_id};
use crate::enum_arg;
use crate::error::{CallExt, CliError};
use crate::output::{Output, policy as view};

enum_arg!(
    parse_sent_from,
    pb::SentFromKind,
    "SENT_FROM_KIND_",
    "domain, email_address, ip_address"
);
enum_arg!(
    parse_security_type,
    pb::SecurityType,
    "SECURITY_TYPE_",
    "via_spf, by_google_mail, by_outlook, by_ip_addresses"
);
enum_arg!(
    parse_text_mode,
    pb::TextMode,
    "TEXT_MODE_",
    "body, subject, subject_and_body, body_or_subject"
);

#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Show one security policy.
    Get {
        #[arg(long)]
        company: String,
        /// The security_policy_id.
        policy_id: String,
    },
    /// List a company's security policies, oldest first.
    List {
        #[arg(long)]
        company: String,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Create a security policy, or with --id change the given fields of one.
    ///
    /// Changing the security type or the allowed IPs applies to all its entries at once.
    Set {
        #[arg(long)]
        company: String,
        /// The policy to change; a new one is created when absent.
        #[arg(long)]
        id: Option<String>,
        /// Which sources its entries are (fixed at creation): domain, email_address, ip_address.
        #[arg(long, value_parser = parse_sent_from)]
        sent_from: Option<i32>,
        /// How mail must be proven: via_spf, by_google_mail, by_outlook, by_ip_addresses.
        #[arg(long, value_parser = parse_security_type)]
        security_type: Option<i32>,
        /// For by_ip_addresses: an IP or CIDR the mail server must be in (repeat for several).
        #[arg(long = "allow-ip")]
        allow_ips: Vec<String>,
        /// The forwarding user of entries naming none (messenger_user_id; '' clears it).
        #[arg(long)]
        default_user: Option<String>,
        /// Which part of the email becomes the SMS: body, subject, subject_and_body,
        /// body_or_subject.
        #[arg(long, value_parser = parse_text_mode)]
        text_mode: Option<i32>,
        /// Name shown in the portal.
        #[arg(long)]
        name: Option<String>,
    },
    /// Delete a security policy (one with entries only with --force, which deletes them too).
    Rm {
        #[arg(long)]
        company: String,
        policy_id: String,
        #[arg(long)]
        force: bool,
    },
    /// Rebuild the compiled sender lookups in Redis from Postgres (needs an `internal` token).
    RebuildCache {
        /// Only this company's keys; all of them when absent.
        #[arg(long, default_value = "")]
        company: String,
    },
}

pub async fn run(
    command: PolicyCommand,
    connection: &ConnectionArgs,
    output: Output,
) -> Result<(), CliError> {
    match command {
        PolicyCommand::Get { company, policy_id } => {
            let mut client = connection.policy().await?;
            let response = client
                .get_security_policy(pb::GetSecurityPolicyRequest {
                    company_id: company,
                    security_policy_id: policy_id,
                })
                .await
                .rpc("GetSecurityPolicy")?;
            output.one(&view::security_policy(
                &response.security_policy.unwrap_or_default(),
            ));
        }
        PolicyCommand::List { company, page } => {
            let mut client = connection.policy().await?;
            let response = client
                .list_security_policies(pb::ListSecurityPoliciesRequest {
                    company_id: company,
                    page_size: page.page_size,
                    page_token: page.page_token,
                    ..Default::default()
                })
                .await
                .rpc("ListSecurityPolicies")?;
            let items: Vec<_> = response
                .security_policies
                .iter()
                .map(view::security_policy)
                .collect();
            output.page(
                "security_policies",
                &items,
                view::POLICY_COLUMNS,
                &response.next_page_token,
            );
        }
        PolicyCommand::Set {
            company,
            id,
            sent_from,
            security_type,
            allow_ips,
            default_user,
            text_mode,
            name,
        } => {
            let mut client = connection.policy().await?;
            let mut paths = Vec::new();
            for (given, path) in [
                (name.is_some(), "display_name"),
                (security_type.is_some(), "security_type"),
                (!allow_ips.is_empty(), "allowed_ip_ranges"),
                (default_user.is_some(), "default_forwarding_user_id"),
                (text_mode.is_some(), "text_mode"),
            ] {
                if given {
                    paths.push(path.to_owned());
                }
            }
            let policy = pb::SecurityPolicy {
                security_policy_id: id.clone().unwrap_or_default(),
                display_name: name.unwrap_or_default(),
                sent_from: sent_from.unwrap_or(0),
                security_type: security_type.unwrap_or(0),
                allowed_ip_ranges: allow_ips.into_iter().filter(|r| !r.is_empty()).collect(),
                default_forwarding_user_id: default_user.unwrap_or_default(),
                text_mode: text_mode.unwrap_or(0),
                ..Default::default()
            };
            let stored = match id {
                None => {
                    client
                        .create_security_policy(pb::CreateSecurityPolicyRequest {
                            company_id: company,
                            security_policy: Some(policy),
                            request_id: request_id(),
                        })
                        .await
                        .rpc("CreateSecurityPolicy")?
                        .security_policy
                }
                Some(_) => {
                    if sent_from.is_some() {
                        return Err(CliError::Usage(
                            "--sent-from is fixed at creation; create a new policy instead".into(),
                        ));
                    }
                    if paths.is_empty() {
                        return Err(CliError::Usage("nothing to change".into()));
                    }
                    client
                        .update_security_policy(pb::UpdateSecurityPolicyRequest {
                            company_id: company,
                            security_policy: Some(policy),
                            update_mask: Some(FieldMask { paths }),
                        })
                        .await
                        .rpc("UpdateSecurityPolicy")?
                        .security_policy
                }
            };
            output.one(&view::security_policy(&stored.unwrap_or_default()));
        }
        PolicyCommand::Rm {
            company,
            policy_id,
            force,
        } => {
            let mut client = connection.policy().await?;
            client
                .delete_security_policy(pb::DeleteSecurityPolicyRequest {
                    company_id: company,
                    security_policy_id: policy_id.clone(),
                    force,
                })
                .await
                .rpc("DeleteSecurityPolicy")?;
            output.note(&format!("security policy {policy_id} deleted"));
            if output.json {
                output.one(&json!({"deleted": policy_id}));
            }
        }
        PolicyCommand::RebuildCache { company } => {
            let response = connection
                .resolution()
                .await?
                .rebuild_cache(pb::RebuildCacheRequest {
                    company_id: company,
                })
                .await
                .rpc("RebuildCache")?;
            output.note(&format!(
                "cache rebuilt: {} keys written, {} stale keys removed, version {}",
                response.keys_written, response.keys_removed, response.version
            ));
            if output.json {
                output.one(&json!({
                    "keys_written": response.keys_written,
                    "keys_removed": response.keys_removed,
                    "version": response.version,
                }));
            }
        }
    }
    Ok(())
}
