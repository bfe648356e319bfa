//! `email2sms domain`: domain entries, proven through a DNS TXT record.

use email2sms_proto::policy::v1 as pb;
use serde_json::{Value, json};

use crate::client::{ConnectionArgs, PageArgs, request_id};
use crate::error::{CallExt, CliError};
use crate::output::{Output, policy as view, sanitize};

#[derive(Debug, clap::Subcommand)]
pub enum DomainCommand {
    /// Add a domain entry and print the TXT record to publish; it matches no mail until verified.
    Add {
        #[arg(long)]
        company: String,
        /// A domain policy of the company.
        #[arg(long)]
        policy: String,
        /// The forwarding user (messenger_user_id); the policy's default when absent.
        #[arg(long, default_value = "")]
        user: String,
        /// The domain, e.g. example.com (exactly that domain; subdomains are entries of their own).
        domain: String,
    },
    /// Check the domain's TXT record now and print what DNS returned.
    Verify {
        #[arg(long)]
        company: String,
        /// The domain_id.
        domain_id: String,
    },
    /// List a company's domain entries, by name.
    List {
        #[arg(long)]
        company: String,
        /// Only domains of this policy.
        #[arg(long, default_value = "")]
        policy: String,
        /// Only ready (true) or only not-ready (false) domains.
        #[arg(long)]
        ready: Option<bool>,
        /// Only domains whose name contains this text.
        #[arg(long, default_value = "")]
        query: String,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Delete a domain entry: its mail stops matching at once.
    Rm {
        #[arg(long)]
        company: String,
        /// The domain_id.
        domain_id: String,
    },
}

/// The lines telling the admin what to publish.
fn txt_instructions(domain: &Value) -> String {
    let v = &domain["verification"];
    format!(
        "Publish this DNS record, then run `email2sms domain verify --company {} {}`:\n  {}  TXT  \"{}\"",
        sanitize(domain["company_id"].as_str().unwrap_or("")),
        sanitize(domain["domain_id"].as_str().unwrap_or("")),
        sanitize(v["txt_record_name"].as_str().unwrap_or("")),
        sanitize(v["txt_record_value"].as_str().unwrap_or("")),
    )
}

pub async fn run(
    command: DomainCommand,
    connection: &ConnectionArgs,
    output: Output,
) -> Result<(), CliError> {
    let mut client = connection.policy().await?;
    match command {
        DomainCommand::Add {
            company,
            policy,
            user,
            domain,
        } => {
            let response = client
                .create_domain(pb::CreateDomainRequest {
                    company_id: company,
                    security_policy_id: policy,
                    domain_name: domain,
                    forwarding_user_id: user,
                    request_id: request_id(),
                })
                .await
                .rpc("CreateDomain")?;
            let domain = view::domain(&response.domain.unwrap_or_default());
            output.one(&domain);
            output.note("");
            output.note(&txt_instructions(&domain));
        }
        DomainCommand::Verify { company, domain_id } => {
            let response = client
                .verify_domain(pb::VerifyDomainRequest {
                    company_id: company,
                    domain_id,
                })
                .await
                .rpc("VerifyDomain")?;
            let domain = view::domain(&response.domain.unwrap_or_default());
            let check = response.check.as_ref().map(view::check);
            if output.json {
                output.one(&json!({ "domain": domain, "check": check }));
            } else {
                if let Some(check) = &check {
                    output.one(check);
                    println!();
                }
                println!(
                    "{}: {}",
                    sanitize(domain["domain_name"].as_str().unwrap_or("")),
                    sanitize(domain["verification"]["state"].as_str().unwrap_or(""))
                );
                if domain["verification"]["state"] != "verified" {
                    println!("{}", txt_instructions(&domain));
                }
            }
        }
        DomainCommand::List {
            company,
            policy,
            ready,
            query,
            page,
        } => {
            let response = client
                .list_domains(pb::ListDomainsRequest {
                    company_id: company,
                    page_size: page.page_size,
                    page_token: page.page_token,
                    security_policy_id: policy,
                    ready,
                    query,
                    ..Default::default()
                })
                .await
                .rpc("ListDomains")?;
            let items: Vec<_> = response.domains.iter().map(view::domain).collect();
            output.page(
                "domains",
                &items,
                view::DOMAIN_COLUMNS,
                &response.next_page_token,
            );
        }
        DomainCommand::Rm { company, domain_id } => {
            client
                .delete_domain(pb::DeleteDomainRequest {
                    company_id: company,
                    domain_id: domain_id.clone(),
                })
                .await
                .rpc("DeleteDomain")?;
            output.note(&format!("domain entry {domain_id} deleted"));
            if output.json {
                output.one(&json!({ "deleted": domain_id }));
            }
        }
    }
    Ok(())
}
