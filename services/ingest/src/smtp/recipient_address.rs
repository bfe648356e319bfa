//! The rule `RCPT TO` enforces before anything else is known: the address is at one of the
//! gateway's SMS domains and its local part could be a phone number. Whether the number may be
//! texted (its region, premium rate) needs the sender's company and is decided after DATA.
//!
//! The SMTP session and Diagnose both call [`check`], so Diagnose's first step says what a real
//! `RCPT TO` would have been answered.

use email2sms_domain::{DomainName, check_phone_local_part};

use super::command::{self, Mailbox};
use super::reply::Reply;

/// Why a recipient address was refused at `RCPT TO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The domain is not one of the SMS domains: this gateway relays nothing else.
    NotAnSmsDomain,
    /// The local part cannot be a phone number.
    NotAPhoneNumber { reason: String },
}

impl Refusal {
    /// The reply `RCPT TO` gets, naming the SMS domains and, for a bad number, a valid example.
    pub fn reply(&self, to: &Mailbox, sms_domains: &[DomainName]) -> Reply {
        match self {
            Refusal::NotAnSmsDomain => {
                let domains: Vec<&str> = sms_domains.iter().map(DomainName::as_str).collect();
                Reply::new(
                    550,
                    "5.7.1",
                    format!(
                        "relaying denied: this gateway only sends SMS to addresses at {}, not to {}; check the address after the @",
                        domains.join(" or "),
                        command::shown(&to.domain)
                    ),
                )
            }
            Refusal::NotAPhoneNumber { reason } => Reply::new(
                550,
                "5.1.3",
                format!(
                    "{reason}; a valid address looks like {}",
                    example_recipient(sms_domains)
                ),
            ),
        }
    }
}

/// Checks one `RCPT TO` address against the SMS domains and the phone number shape.
pub fn check(to: &Mailbox, sms_domains: &[DomainName]) -> Result<(), Refusal> {
    let ours = !to.is_address_literal()
        && DomainName::parse(&to.domain).is_ok_and(|domain| sms_domains.contains(&domain));
    if !ours {
        return Err(Refusal::NotAnSmsDomain);
    }
    check_phone_local_part(&to.local_part).map_err(|error| Refusal::NotAPhoneNumber {
        reason: error.to_string(),
    })
}

/// An address that would be accepted, for replies that show one.
pub fn example_recipient(sms_domains: &[DomainName]) -> String {
    let domain = sms_domains
        .first()
        .map_or("sms.example.net", DomainName::as_str);
    format!("64211234567@{domain}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domains() -> Vec<DomainName> {
        vec![DomainName::parse("sms.example.net").unwrap()]
    }

    fn mailbox(address: &str) -> Mailbox {
        command::parse_path(&format!("<{address}>")).unwrap()
    }

    #[test]
    fn a_number_at_an_sms_domain_passes() {
        assert_eq!(
            check(&mailbox("+64211234567@sms.example.net"), &domains()),
            Ok(())
        );
        assert_eq!(
            check(&mailbox("0211234567@SMS.Example.NET"), &domains()),
            Ok(())
        );
    }

    #[test]
    fn another_domain_is_relaying_and_names_the_sms_domains() {
        let to = mailbox("64211234567@example.com");
        let refusal = check(&to, &domains()).unwrap_err();
        assert_eq!(refusal, Refusal::NotAnSmsDomain);
        let reply = refusal.reply(&to, &domains());
        assert_eq!((reply.code, reply.enhanced), (550, Some("5.7.1")));
        assert!(reply.text.contains("sms.example.net"), "{}", reply.text);
        assert!(reply.text.contains("example.com"), "{}", reply.text);
    }

    #[test]
    fn an_address_literal_is_never_an_sms_domain() {
        let to = mailbox("64211234567@[192.0.2.1]");
        assert_eq!(check(&to, &domains()), Err(Refusal::NotAnSmsDomain));
    }

    #[test]
    fn a_local_part_that_cannot_be_a_number_gets_5_1_3_with_an_example() {
        let to = mailbox("jane@sms.example.net");
        let refusal = check(&to, &domains()).unwrap_err();
        let reply = refusal.reply(&to, &domains());
        assert_eq!((reply.code, reply.enhanced), (550, Some("5.1.3")));
        assert!(
            reply.text.ends_with("64211234567@sms.example.net"),
            "{}",
            reply.text
        );
    }
}
