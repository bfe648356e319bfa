//! `email2sms company`: what the Messenger platform sync and the portal's settings page do.

use email2sms_proto::policy::v1 as pb;
use email2sms_proto::prost_types::FieldMask;

use crate::client::ConnectionArgs;
use crate::enum_arg;
use crate::error::{CallExt, CliError};
use crate::output::{Output, policy as view};

enum_arg!(
    parse_over_limit,
    pb::OverLimitBehavior,
    "OVER_LIMIT_BEHAVIOR_",
    "truncate, refuse"
);

#[derive(Debug, clap::Subcommand)]
pub enum CompanyCommand {
    /// Create a company (or change the given fields of an existing one: UpsertCompany).
    ///
    /// The id is the Messenger platform's company id, a UUID; a new one is generated when
    /// --id is not given. Only the fields given are changed on an existing company.
    Create {
        /// The company id (UUID); generated when absent.
        #[arg(long)]
        id: Option<uuid::Uuid>,
        #[command(flatten)]
        fields: CompanyFields,
    },
    /// Show a company.
    Get {
        /// The company id (UUID).
        company_id: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct CompanyFields {
    /// Name shown in notification emails.
    #[arg(long)]
    name: Option<String>,
    /// ISO 3166-1 alpha-2 region of national phone numbers (e.g. NZ); required for a new company.
    #[arg(long)]
    region: Option<String>,
    /// Where new-sender alerts go (repeat for several; `--admin-email ''` clears them).
    #[arg(long = "admin-email")]
    admin_emails: Vec<String>,
    /// Most SMS parts per recipient and email (0: the platform's maximum).
    #[arg(long)]
    max_sms_parts: Option<u32>,
    /// What happens to longer text: truncate or refuse.
    #[arg(long, value_parser = parse_over_limit)]
    over_limit: Option<i32>,
    /// Another region whose numbers may receive SMS (repeat for several).
    #[arg(long = "allow-region")]
    allow_regions: Vec<String>,
    /// Most SMS per UTC day to numbers outside the company's region.
    #[arg(long)]
    international_per_day: Option<u32>,
    /// Send typography (curly quotes, dashes, …) as written (true), or replace it by GSM-7
    /// equivalents when that keeps an SMS in GSM-7 (false, the default).
    #[arg(long)]
    keep_typography: Option<bool>,
    /// Suspend (true) or restore (false) the company.
    #[arg(long)]
    suspended: Option<bool>,
}

impl CompanyFields {
    /// The company to send and the mask naming exactly the fields given.
    fn company(self, company_id: String) -> (pb::Company, FieldMask) {
        let mut paths = Vec::new();
        let mut mark = |given: bool, path: &str| {
            if given {
                paths.push(path.to_owned());
            }
        };
        mark(self.name.is_some(), "display_name");
        mark(self.region.is_some(), "default_region");
        mark(!self.admin_emails.is_empty(), "admin_email_addresses");
        mark(self.max_sms_parts.is_some(), "limits.max_sms_parts");
        mark(self.over_limit.is_some(), "limits.over_limit_behavior");
        mark(
            !self.allow_regions.is_empty(),
            "limits.allowed_destination_regions",
        );
        mark(
            self.international_per_day.is_some(),
            "limits.international_sms_per_day",
        );
        mark(self.keep_typography.is_some(), "limits.keep_typography");
        mark(self.suspended.is_some(), "suspended");
        let non_empty =
            |values: Vec<String>| values.into_iter().filter(|v| !v.is_empty()).collect();
        let company = pb::Company {
            company_id,
            display_name: self.name.unwrap_or_default(),
            admin_email_addresses: non_empty(self.admin_emails),
            default_region: self.region.unwrap_or_default(),
            limits: Some(pb::CompanyLimits {
                max_sms_parts: self.max_sms_parts.unwrap_or(0),
                over_limit_behavior: self.over_limit.unwrap_or(0),
                allowed_destination_regions: non_empty(self.allow_regions),
                international_sms_per_day: self.international_per_day,
                keep_typography: self.keep_typography,
            }),
            suspended: self.suspended.unwrap_or(false),
            ..Default::default()
        };
        (company, FieldMask { paths })
    }
}

pub async fn run(
    command: CompanyCommand,
    connection: &ConnectionArgs,
    output: Output,
) -> Result<(), CliError> {
    let mut client = connection.policy().await?;
    match command {
        CompanyCommand::Create { id, fields } => {
            let id = id.unwrap_or_else(uuid::Uuid::new_v4).to_string();
            let (company, mask) = fields.company(id);
            if mask.paths.is_empty() {
                return Err(CliError::Usage(
                    "nothing to set: give at least --name and --region".into(),
                ));
            }
            let response = client
                .upsert_company(pb::UpsertCompanyRequest {
                    company: Some(company),
                    update_mask: Some(mask),
                })
                .await
                .rpc("UpsertCompany")?;
            let company = response.company.unwrap_or_default();
            output.note(&format!(
                "company {} {}",
                company.company_id,
                if response.created {
                    "created"
                } else {
                    "updated"
                }
            ));
            output.one(&view::company(&company));
        }
        CompanyCommand::Get { company_id } => {
            let response = client
                .get_company(pb::GetCompanyRequest { company_id })
                .await
                .rpc("GetCompany")?;
            output.one(&view::company(&response.company.unwrap_or_default()));
        }
    }
    Ok(())
}
