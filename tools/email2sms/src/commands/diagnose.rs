//! `email2sms diagnose`: what ingest would do with an email, every step, sending nothing.

use std::path::PathBuf;

use email2sms_proto::ingest::v1 as pb;

use crate::client::ConnectionArgs;
use crate::error::{CallExt, CliError};
use crate::output::{Output, ingest as view, sanitize};

/// The largest message file read (ingest refuses bigger ones anyway).
const MAX_MESSAGE_FILE_BYTES: u64 = 32 * 1024 * 1024;

#[derive(Debug, clap::Args)]
pub struct DiagnoseArgs {
    /// Answer as the portal would for this company: other companies' matches stay hidden.
    /// Operators leave it out and see the match, its keys and timings.
    #[arg(long, default_value = "")]
    company: String,
    /// The From header, e.g. 'Jane <jane@example.com>'.
    #[arg(long, default_value = "")]
    from: String,
    /// The client IP (the mail server that would connect).
    #[arg(long)]
    ip: String,
    /// The envelope sender (MAIL FROM); the From address when absent. '' is a null sender.
    #[arg(long)]
    mail_from: Option<String>,
    /// The HELO/EHLO name.
    #[arg(long, default_value = "")]
    helo: String,
    /// The recipient, e.g. 64211234567@sms.example.net.
    #[arg(long)]
    to: String,
    /// A whole RFC 5322 message (headers and body) to take From and text from.
    #[arg(long)]
    message_file: Option<PathBuf>,
}

/// The bare address of a From header value (`Jane <jane@example.com>` is `jane@example.com`).
fn address_of(from: &str) -> String {
    match (from.rfind('<'), from.rfind('>')) {
        (Some(open), Some(close)) if open < close => from[open + 1..close].trim().to_owned(),
        _ => from.trim().to_owned(),
    }
}

pub async fn run(
    args: DiagnoseArgs,
    connection: &ConnectionArgs,
    output: Output,
) -> Result<(), CliError> {
    let raw_message = match &args.message_file {
        Some(path) => {
            let read = |source| CliError::Input {
                path: path.clone(),
                source,
            };
            let size = std::fs::metadata(path).map_err(read)?.len();
            if size > MAX_MESSAGE_FILE_BYTES {
                return Err(CliError::Usage(format!(
                    "{} is {size} bytes; at most {MAX_MESSAGE_FILE_BYTES} are accepted",
                    path.display()
                )));
            }
            std::fs::read(path).map_err(read)?
        }
        None => Vec::new(),
    };
    if args.from.is_empty() && raw_message.is_empty() {
        return Err(CliError::Usage(
            "give --from (or --message-file with a From header)".into(),
        ));
    }
    let envelope_sender = args.mail_from.unwrap_or_else(|| address_of(&args.from));
    let response = connection
        .ingest()
        .await?
        .diagnose(pb::DiagnoseRequest {
            client_ip: args.ip,
            helo: args.helo,
            envelope_sender,
            from_header: args.from,
            recipient: args.to,
            raw_message,
            company_id: args.company,
        })
        .await
        .rpc("Diagnose")?;
    let diagnosis = view::diagnosis(&response);
    if output.json {
        output.one(&diagnosis);
        return Ok(());
    }
    for (index, step) in diagnosis["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let text = |key: &str| sanitize(step[key].as_str().unwrap_or(""));
        println!(
            "{:>2}. {:<16} {:<8} {}",
            index + 1,
            text("name"),
            text("outcome").to_uppercase(),
            text("detail")
        );
        for line in step["evidence"].as_array().into_iter().flatten() {
            println!("      {}", sanitize(line.as_str().unwrap_or("")));
        }
    }
    let reply = &diagnosis["reply"];
    println!(
        "\ndecision: {}  reply: {} {} {}",
        sanitize(diagnosis["decision"].as_str().unwrap_or("")),
        reply["code"],
        sanitize(reply["enhanced_code"].as_str().unwrap_or("")),
        sanitize(reply["text"].as_str().unwrap_or(""))
    );
    if let Some(sms) = diagnosis["sms"].as_object() {
        println!(
            "SMS to {} ({} part(s)): {}",
            sanitize(sms["recipient"].as_str().unwrap_or("")),
            sms["segment_count"],
            sanitize(sms["text"].as_str().unwrap_or(""))
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_envelope_sender_defaults_to_the_from_address() {
        assert_eq!(
            super::address_of("Jane <jane@example.com>"),
            "jane@example.com"
        );
        assert_eq!(super::address_of(" jane@example.com "), "jane@example.com");
    }
}
