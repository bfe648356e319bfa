//! `email2sms user`: the Messenger users of a company, the identities SMS are sent as.

use email2sms_proto::policy::v1 as pb;
use email2sms_proto::prost_types::FieldMask;

use crate::client::{ConnectionArgs, PageArgs};
use crate::error::{CallExt, CliError};
use crate::output::{Output, policy as view};

#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Add a Messenger user, or change the given fields of the one with this --external-id.
    Add {
        /// The company (UUID).
        #[arg(long)]
        company: String,
        /// The platform's id of the user (the key within the company); defaults to --username.
        #[arg(long)]
        external_id: Option<String>,
        /// The Messenger login name (what the CSV import's Username column names).
        #[arg(long)]
        username: String,
        /// Human name.
        #[arg(long)]
        name: Option<String>,
        /// SMS source address: an alphanumeric sender ID (up to 11 characters) or an E.164 number.
        #[arg(long)]
        sender_id: Option<String>,
        /// Add the user as disabled on the platform (its entries are then not ready).
        #[arg(long)]
        inactive: bool,
    },
    /// List a company's users, by username.
    List {
        #[arg(long)]
        company: String,
        /// Only users whose username, name or external id contains this text.
        #[arg(long, default_value = "")]
        query: String,
        /// Only active (true) or only inactive (false) users.
        #[arg(long)]
        active: Option<bool>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Deactivate a user (the platform keeps users; the API has no delete): every entry that
    /// forwards through it stops routing mail at once.
    Rm {
        #[arg(long)]
        company: String,
        /// The user's messenger_user_id.
        messenger_user_id: String,
    },
}

pub async fn run(
    command: UserCommand,
    connection: &ConnectionArgs,
    output: Output,
) -> Result<(), CliError> {
    let mut client = connection.policy().await?;
    match command {
        UserCommand::Add {
            company,
            external_id,
            username,
            name,
            sender_id,
            inactive,
        } => {
            let mut paths = vec!["username".to_owned(), "active".to_owned()];
            if name.is_some() {
                paths.push("display_name".into());
            }
            if sender_id.is_some() {
                paths.push("sender_id".into());
            }
            let response = client
                .upsert_messenger_user(pb::UpsertMessengerUserRequest {
                    company_id: company,
                    messenger_user: Some(pb::MessengerUser {
                        external_id: external_id.unwrap_or_else(|| username.clone()),
                        display_name: name.unwrap_or_else(|| username.clone()),
                        username,
                        sender_id: sender_id.unwrap_or_default(),
                        active: !inactive,
                        ..Default::default()
                    }),
                    update_mask: Some(FieldMask { paths }),
                })
                .await
                .rpc("UpsertMessengerUser")?;
            let user = response.messenger_user.unwrap_or_default();
            output.note(&format!(
                "user {} {}",
                user.messenger_user_id,
                if response.created { "added" } else { "updated" }
            ));
            output.one(&view::user(&user));
        }
        UserCommand::List {
            company,
            query,
            active,
            page,
        } => {
            let response = client
                .list_messenger_users(pb::ListMessengerUsersRequest {
                    company_id: company,
                    page_size: page.page_size,
                    page_token: page.page_token,
                    query,
                    active,
                    external_id: String::new(),
                })
                .await
                .rpc("ListMessengerUsers")?;
            let items: Vec<_> = response.messenger_users.iter().map(view::user).collect();
            output.page(
                "messenger_users",
                &items,
                view::USER_COLUMNS,
                &response.next_page_token,
            );
        }
        UserCommand::Rm {
            company,
            messenger_user_id,
        } => {
            // The upsert is keyed by external id, so read it first.
            let user = client
                .get_messenger_user(pb::GetMessengerUserRequest {
                    company_id: company.clone(),
                    messenger_user_id,
                })
                .await
                .rpc("GetMessengerUser")?
                .messenger_user
                .unwrap_or_default();
            let response = client
                .upsert_messenger_user(pb::UpsertMessengerUserRequest {
                    company_id: company,
                    messenger_user: Some(pb::MessengerUser {
                        external_id: user.external_id,
                        active: false,
                        ..Default::default()
                    }),
                    update_mask: Some(FieldMask {
                        paths: vec!["active".into()],
                    }),
                })
                .await
                .rpc("UpsertMessengerUser")?;
            let user = response.messenger_user.unwrap_or_default();
            output.note(&format!("user {} deactivated", user.messenger_user_id));
            output.one(&view::user(&user));
        }
    }
    Ok(())
}
