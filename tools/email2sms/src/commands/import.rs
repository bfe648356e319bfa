//! `email2sms import`: the CSV import of email address entries, previewed then committed.

use std::path::PathBuf;

use email2sms_proto::policy::v1 as pb;
use serde_json::json;

use crate::client::{ConnectionArgs, request_id};
use crate::error::{CallExt, CliError};
use crate::output::{Output, policy as view};

/// The largest file read: the policy service takes 32 MiB (100,000 rows are about 5 MB).
const MAX_CSV_BYTES: u64 = 32 * 1024 * 1024;
/// Rows per page while reading every verdict (the API's cap).
const ROWS_PER_PAGE: i32 = 1000;

#[derive(Debug, clap::Subcommand)]
pub enum ImportCommand {
    /// Validate an `Email,Username` CSV file without creating anything: every row with its line
    /// and problem, and totals. Prints the import id to commit.
    Preview {
        #[arg(long)]
        company: String,
        /// The email_address policy the entries will be created in.
        #[arg(long)]
        policy: String,
        /// Show only the rows with a problem.
        #[arg(long)]
        problems_only: bool,
        /// The CSV file.
        file: PathBuf,
    },
    /// Create exactly the previewed OK rows (again: nothing more happens).
    Commit {
        #[arg(long)]
        company: String,
        /// Also email every created address that it may now send SMS by email.
        #[arg(long)]
        notify: bool,
        /// The import id printed by `import preview`.
        import_id: String,
    },
}

pub async fn run(
    command: ImportCommand,
    connection: &ConnectionArgs,
    output: Output,
) -> Result<(), CliError> {
    let mut client = connection.policy().await?;
    match command {
        ImportCommand::Preview {
            company,
            policy,
            problems_only,
            file,
        } => {
            let read = |source| CliError::Input {
                path: file.clone(),
                source,
            };
            let size = std::fs::metadata(&file).map_err(read)?.len();
            if size > MAX_CSV_BYTES {
                return Err(CliError::Usage(format!(
                    "{} is {size} bytes; the policy service takes at most {MAX_CSV_BYTES}",
                    file.display()
                )));
            }
            let csv_content = std::fs::read(&file).map_err(read)?;
            let response = client
                .preview_import(pb::PreviewImportRequest {
                    company_id: company.clone(),
                    security_policy_id: policy,
                    csv_content,
                    file_name: file
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    page_size: ROWS_PER_PAGE,
                    request_id: request_id(),
                })
                .await
                .rpc("PreviewImport")?;
            let import = response.import.unwrap_or_default();
            let mut rows = response.rows;
            let mut token = response.next_page_token;
            while !token.is_empty() {
                let page = client
                    .list_import_rows(pb::ListImportRowsRequest {
                        company_id: company.clone(),
                        import_id: import.import_id.clone(),
                        page_size: ROWS_PER_PAGE,
                        page_token: token,
                        statuses: Vec::new(),
                    })
                    .await
                    .rpc("ListImportRows")?;
                rows.extend(page.rows);
                token = page.next_page_token;
            }
            let ok = pb::ImportRowStatus::Ok as i32;
            let rows: Vec<_> = rows
                .iter()
                .filter(|r| !problems_only || r.status != ok)
                .map(view::import_row)
                .collect();
            let import = view::import(&import);
            if output.json {
                output.one(&json!({ "import": import, "rows": rows }));
            } else {
                output.table(&rows, view::IMPORT_ROW_COLUMNS);
                println!();
                output.one(&json!({
                    "import_id": import["import_id"],
                    "state": import["state"],
                    "expire_time": import["expire_time"],
                    "totals": import["totals"],
                }));
            }
        }
        ImportCommand::Commit {
            company,
            notify,
            import_id,
        } => {
            let response = client
                .commit_import(pb::CommitImportRequest {
                    company_id: company,
                    import_id,
                    notify,
                })
                .await
                .rpc("CommitImport")?;
            output.one(&json!({
                "import": view::import(&response.import.unwrap_or_default()),
                "notification": response.notification.as_ref().map(view::notification),
            }));
        }
    }
    Ok(())
}
