//! Outbound mail through the configured smarthost: the notification to an authorised address and
//! the new-mail-server alert to company admins. Plain SMTP (`smtp://host:port`): the smarthost is
//! an internal relay, and this build carries no TLS stack for it.

use std::fmt;
use std::time::Duration;

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// How long one SMTP conversation may take before it counts as a (retryable) failure.
const SMTP_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a message was not accepted, and whether trying again may help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendFailure {
    pub message: String,
    /// False only for a permanent (5xx) refusal or an address that cannot be written.
    pub retryable: bool,
}

/// A cheap-to-clone handle on the smarthost.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    relay: String,
    /// The SMS domain named in notifications (the first of `EMAIL2SMS_SMS_DOMAINS`).
    pub sms_domain: String,
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailer")
            .field("relay", &self.relay)
            .field("from", &self.from.to_string())
            .field("sms_domain", &self.sms_domain)
            .finish()
    }
}

/// `host` and `port` of an `smtp://host[:port]` URL.
pub fn parse_relay(relay: &str) -> Result<(String, u16), String> {
    let rest = relay.strip_prefix("smtp://").ok_or_else(|| {
        "only smtp://host:port is supported (the smarthost is reached without TLS)".to_owned()
    })?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') => (
            host,
            port.parse::<u16>()
                .map_err(|_| format!("invalid port in {relay:?}"))?,
        ),
        _ => (rest, 25),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("no host in {relay:?}"));
    }
    Ok((host.to_owned(), port))
}

impl Mailer {
    pub fn new(relay: &str, from: &str, sms_domain: &str) -> Result<Mailer, String> {
        let (host, port) = parse_relay(relay)?;
        let from: Mailbox = from
            .parse()
            .map_err(|e| format!("invalid sender address {from:?}: {e}"))?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .timeout(Some(SMTP_TIMEOUT))
            .build();
        Ok(Mailer {
            transport,
            from,
            relay: relay.to_owned(),
            sms_domain: sms_domain.to_owned(),
        })
    }

    /// Sends one plain-text message to every address of `to` in one SMTP transaction.
    pub async fn send(
        &self,
        to: &[String],
        subject: &str,
        body: String,
    ) -> Result<(), SendFailure> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(subject)
            .header(ContentType::TEXT_PLAIN);
        for address in to {
            let mailbox: Mailbox = address.parse().map_err(|e| SendFailure {
                message: format!("the address {address:?} cannot be used: {e}"),
                retryable: false,
            })?;
            builder = builder.to(mailbox);
        }
        let message = builder.body(body).map_err(|e| SendFailure {
            message: format!("the message cannot be built: {e}"),
            retryable: false,
        })?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(error) => Err(SendFailure {
                message: format!("smarthost {}: {error}", self.relay),
                // Connection refused, timeouts and 4xx replies may pass later; a 5xx will not.
                retryable: !error.is_permanent(),
            }),
        }
    }
}

/// The text telling `address` it may send SMS by email.
pub fn notification_body(
    address: &str,
    company: &str,
    sms_domain: &str,
    forwarding_user: &str,
) -> String {
    format!(
        "Hello,\n\n\
         Your email address {address} is now authorised to send SMS by email for {company}.\n\n\
         To send an SMS, send an email from {address} to <number>@{sms_domain}, where <number> is \
         the mobile number in international format, digits only, without + or spaces.\n\
         For example: 64211234567@{sms_domain}\n\n\
         The text of your email becomes the SMS. Your messages are sent as the Messenger user \
         {forwarding_user}.\n\n\
         If you did not expect this email, please contact your administrator.\n"
    )
}

/// The alert telling the admins a mail server they may not know sent mail as their company.
#[derive(Debug)]
pub struct NewServer<'a> {
    pub company: &'a str,
    pub ip: &'a str,
    pub reverse_dns_name: &'a str,
    pub envelope_sender: &'a str,
    pub from: &'a str,
    pub helo: &'a str,
    pub first_seen: chrono::DateTime<chrono::Utc>,
}

pub fn new_server_body(server: &NewServer<'_>) -> String {
    let or_none = |value: &str| {
        if value.is_empty() {
            "(none)".to_owned()
        } else {
            value.to_owned()
        }
    };
    format!(
        "Hello,\n\n\
         A mail server not seen before sent email to Email2SMS for {company}.\n\n\
         Server IP address: {ip}\n\
         Reverse DNS name: {rdns}\n\
         First seen: {first_seen}\n\
         Envelope sender: {envelope}\n\
         From: {from}\n\
         HELO name: {helo}\n\n\
         If you recognise this server, there is nothing to do. If you do not, review your \
         Email2SMS Security settings. You will not be emailed again about this server.\n",
        company = server.company,
        ip = server.ip,
        rdns = or_none(server.reverse_dns_name),
        first_seen = server.first_seen.to_rfc3339(),
        envelope = or_none(server.envelope_sender),
        from = or_none(server.from),
        helo = or_none(server.helo),
    )
}

/// One email for several new servers: the company's single-alert budget was spent, so these are
/// listed together. Each server gets the same facts as a single alert.
pub fn new_servers_digest_body(company: &str, servers: &[NewServer<'_>], budget: u32) -> String {
    let or_none = |value: &str| {
        if value.is_empty() {
            "(none)".to_owned()
        } else {
            value.to_owned()
        }
    };
    let mut body = format!(
        "Hello,\n\n\
         {count} mail servers not seen before sent email to Email2SMS for {company}. You were \
         already alerted about {budget} new servers within the hour, so these come together in \
         this one email.\n",
        count = servers.len(),
    );
    for server in servers {
        body.push_str(&format!(
            "\nServer IP address: {ip}\n\
             Reverse DNS name: {rdns}\n\
             First seen: {first_seen}\n\
             Envelope sender: {envelope}\n\
             From: {from}\n\
             HELO name: {helo}\n",
            ip = server.ip,
            rdns = or_none(server.reverse_dns_name),
            first_seen = server.first_seen.to_rfc3339(),
            envelope = or_none(server.envelope_sender),
            from = or_none(server.from),
            helo = or_none(server.helo),
        ));
    }
    body.push_str(
        "\nIf you recognise these servers, there is nothing to do. If you do not, review your \
         Email2SMS Security settings. You will not be emailed again about these servers.\n",
    );
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_urls_parse_with_default_port() {
        assert_eq!(
            parse_relay("smtp://127.0.0.1:2525").unwrap(),
            ("127.0.0.1".into(), 2525)
        );
        assert_eq!(
            parse_relay("smtp://mail.example").unwrap(),
            ("mail.example".into(), 25)
        );
        assert!(parse_relay("smtps://mail.example").is_err());
    }

    #[test]
    fn notification_names_format_domain_and_user() {
        let body = notification_body("jo@example.com", "Acme", "sms.example.net", "jo.smith");
        assert!(body.contains("64211234567@sms.example.net"));
        assert!(body.contains("jo.smith"));
        assert!(body.contains("jo@example.com"));
    }
}
