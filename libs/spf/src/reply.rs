//! SPF outcome → SMTP reply, as DESIGN.md requires: `temperror` → 451 4.4.3, `fail` →
//! 550 5.7.23, `permerror` → 550 5.7.24 (an internal error of the check too: it is reported as
//! `permerror`, never as a temporary failure), any other non-pass → 550 5.7.1. Each text says what the
//! sender's administrator has to fix, in words an office user can pass on.

use std::fmt;

use crate::{SpfCause, SpfCheck, SpfOutcome, SpfResult};

/// Longest piece of sender-controlled text (domain, `exp=` explanation) put into a reply.
const MAX_QUOTED: usize = 120;

/// An SMTP reply: basic code, enhanced status code (RFC 3463) and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpReply {
    /// Basic reply code, e.g. 550.
    pub code: u16,
    /// Enhanced status code, e.g. `5.7.23`.
    pub enhanced: &'static str,
    /// Human-readable text: one line, printable ASCII.
    pub text: String,
}

impl SmtpReply {
    /// Whether the relay should retry (4xx).
    pub fn is_temporary(&self) -> bool {
        (400..500).contains(&self.code)
    }
}

impl fmt::Display for SmtpReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.code, self.enhanced, self.text)
    }
}

/// The refusal for an SPF outcome, or `None` when it passed. Pure: no I/O, no clock.
pub fn spf_refusal_reply(outcome: &SpfOutcome) -> Option<SmtpReply> {
    let ip = outcome.client_ip;
    let cause = quote(&outcome.cause.to_string());
    let reply = |code, enhanced, text: String| {
        Some(SmtpReply {
            code,
            enhanced,
            text: sanitize(&text),
        })
    };
    match &outcome.check {
        SpfCheck::Sender { domain } => {
            let d = quote(domain);
            match outcome.result {
                SpfResult::Pass => None,
                SpfResult::Temperror => reply(
                    451,
                    "4.4.3",
                    format!(
                        "The SPF record of {d} could not be checked because DNS is failing temporarily ({cause}); please try again later. If this persists, the administrator of {d} must make sure its DNS servers answer."
                    ),
                ),
                SpfResult::Fail => {
                    let mut text = format!(
                        "SPF check failed: the SPF record of {d} does not list {ip} as a server allowed to send its mail. The administrator of {d} must add this mail server to the SPF record of {d}, or send through a server it lists."
                    );
                    if let Some(exp) = &outcome.explanation {
                        text.push_str(&format!(" {d} explains: \"{}\"", quote(exp)));
                    }
                    reply(550, "5.7.23", text)
                }
                // A fault of the check itself: the same record fails the same way on every
                // retry, so it is permanent too, but the record may well be valid.
                SpfResult::Permerror if matches!(outcome.cause, SpfCause::Internal(_)) => reply(
                    550,
                    "5.7.24",
                    format!(
                        "The SPF record of {d} could not be evaluated ({cause}). Its administrator should check that it is valid SPF (one v=spf1 TXT record, ip4/ip6 ranges as address/length) and contact the SMS gateway's support quoting this reply: the gateway may be at fault."
                    ),
                ),
                SpfResult::Permerror => reply(
                    550,
                    "5.7.24",
                    format!(
                        "The SPF record of {d} is invalid ({cause}). The administrator of {d} must correct the SPF record (one v=spf1 TXT record, valid syntax, at most 10 DNS lookups)."
                    ),
                ),
                SpfResult::None if matches!(outcome.cause, SpfCause::InvalidIdentity(_)) => reply(
                    550,
                    "5.7.1",
                    format!(
                        "Not authorised: the envelope sender domain {d} is not a valid domain name, so the sender cannot be verified. The sender's administrator must send with a valid envelope sender address in the same domain as the From address."
                    ),
                ),
                SpfResult::None => reply(
                    550,
                    "5.7.1",
                    format!(
                        "Not authorised: {d} publishes no SPF record, so {ip} cannot be verified as its mail server. The administrator of {d} must publish an SPF record (a TXT record starting with v=spf1) that lists this mail server."
                    ),
                ),
                SpfResult::Softfail | SpfResult::Neutral => reply(
                    550,
                    "5.7.1",
                    format!(
                        "Not authorised: the SPF record of {d} does not confirm {ip} as its mail server (SPF {}). The administrator of {d} must list this mail server in the SPF record so that it gives pass.",
                        outcome.result
                    ),
                ),
            }
        }
        SpfCheck::Provider { domain } => {
            let d = quote(domain);
            match outcome.result {
                SpfResult::Pass => None,
                SpfResult::Temperror => reply(
                    451,
                    "4.4.3",
                    format!(
                        "The list of outbound servers published by {d} could not be checked because DNS is failing temporarily ({cause}); please try again later."
                    ),
                ),
                SpfResult::Fail => reply(
                    550,
                    "5.7.23",
                    format!(
                        "SPF check failed: {ip} is not one of the outbound mail servers published by {d}. The sender's administrator must send this mail through that provider's servers, or change the security policy to match how the mail is sent."
                    ),
                ),
                SpfResult::Permerror if matches!(outcome.cause, SpfCause::Internal(_)) => reply(
                    550,
                    "5.7.24",
                    format!(
                        "The SPF record of {d} could not be evaluated ({cause}). This is a fault in the gateway's SPF check, not in your mail: the sender's administrator should contact the SMS gateway's support quoting this reply."
                    ),
                ),
                SpfResult::Permerror => reply(
                    550,
                    "5.7.24",
                    format!(
                        "The SPF record of {d} cannot be used ({cause}). The gateway's configured provider domain may be wrong; the sender's administrator should contact the SMS gateway's support."
                    ),
                ),
                // The synthetic record ends in -all, so these only arise from odd provider
                // records; still a permanent refusal, as DESIGN.md says for every non-pass.
                SpfResult::None | SpfResult::Softfail | SpfResult::Neutral => reply(
                    550,
                    "5.7.1",
                    format!(
                        "Not authorised: {d} does not confirm {ip} as one of its outbound mail servers (SPF {}). The sender's administrator must send this mail through that provider's servers.",
                        outcome.result
                    ),
                ),
            }
        }
    }
}

/// Sender-controlled text, shortened so a reply line stays well under SMTP's 512 octets.
fn quote(s: &str) -> String {
    if s.chars().count() > MAX_QUOTED {
        let mut q: String = s.chars().take(MAX_QUOTED).collect();
        q.push_str("...");
        q
    } else {
        s.to_owned()
    }
}

/// Reply text must be one line of printable ASCII: CR/LF from a DNS record or an envelope
/// address must never be able to end the reply and inject another.
fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn outcome(result: SpfResult, check: SpfCheck, cause: SpfCause) -> SpfOutcome {
        SpfOutcome {
            result,
            check,
            client_ip: "192.0.2.1".parse::<IpAddr>().unwrap(),
            cause,
            explanation: None,
            trace: Vec::new(),
        }
    }

    fn sender(result: SpfResult) -> SpfOutcome {
        outcome(
            result,
            SpfCheck::Sender {
                domain: "example.com".into(),
            },
            SpfCause::Mechanism("-all".into()),
        )
    }

    #[test]
    fn pass_is_not_refused() {
        assert_eq!(spf_refusal_reply(&sender(SpfResult::Pass)), None);
        let provider = outcome(
            SpfResult::Pass,
            SpfCheck::Provider {
                domain: "_spf.google.com".into(),
            },
            SpfCause::Mechanism("include:_spf.google.com".into()),
        );
        assert_eq!(spf_refusal_reply(&provider), None);
    }

    #[test]
    fn codes_follow_the_design() {
        let cases = [
            (SpfResult::Temperror, 451, "4.4.3"),
            (SpfResult::Fail, 550, "5.7.23"),
            (SpfResult::Permerror, 550, "5.7.24"),
            (SpfResult::Softfail, 550, "5.7.1"),
            (SpfResult::Neutral, 550, "5.7.1"),
            (SpfResult::None, 550, "5.7.1"),
        ];
        for (result, code, enhanced) in cases {
            for check in [
                SpfCheck::Sender {
                    domain: "example.com".into(),
                },
                SpfCheck::Provider {
                    domain: "_spf.google.com".into(),
                },
            ] {
                let reply = spf_refusal_reply(&outcome(result, check, SpfCause::Error("x".into())))
                    .unwrap();
                assert_eq!((reply.code, reply.enhanced), (code, enhanced), "{result}");
                assert_eq!(reply.is_temporary(), code == 451);
            }
        }
    }

    /// An internal error (a panic inside viaspf, as `ip4:0.0.0.0/0` caused in 0.6.0) is
    /// permanent: 550 5.7.24 saying the record could not be evaluated and what to check, never
    /// a 451 that makes the relay retry for days.
    #[test]
    fn internal_errors_are_permanent_and_say_what_to_check() {
        let cause = SpfCause::Internal("attempt to shift left with overflow".into());
        let sender = spf_refusal_reply(&outcome(
            SpfResult::Permerror,
            SpfCheck::Sender {
                domain: "example.com".into(),
            },
            cause.clone(),
        ))
        .unwrap();
        assert_eq!((sender.code, sender.enhanced), (550, "5.7.24"), "{sender}");
        assert!(!sender.is_temporary());
        assert!(
            sender.text.starts_with(
                "The SPF record of example.com could not be evaluated (internal error in the SPF check: attempt to shift left with overflow)."
            ),
            "{sender}"
        );
        assert!(sender.text.contains("Its administrator should check"));
        assert!(sender.text.contains("contact the SMS gateway's support"));
        let provider = spf_refusal_reply(&outcome(
            SpfResult::Permerror,
            SpfCheck::Provider {
                domain: "_spf.google.com".into(),
            },
            cause,
        ))
        .unwrap();
        assert_eq!((provider.code, provider.enhanced), (550, "5.7.24"));
        assert!(
            provider
                .text
                .starts_with("The SPF record of _spf.google.com could not be evaluated"),
            "{provider}"
        );
        // Long causes stay within one SMTP reply line.
        let long = spf_refusal_reply(&outcome(
            SpfResult::Permerror,
            SpfCheck::Sender {
                domain: "x".repeat(300),
            },
            SpfCause::Internal("y".repeat(1000)),
        ))
        .unwrap();
        assert!(long.to_string().len() < 510, "{}", long.to_string().len());
    }

    #[test]
    fn fail_text_says_what_the_administrator_must_fix() {
        let reply = spf_refusal_reply(&sender(SpfResult::Fail)).unwrap();
        assert!(
            reply.to_string().starts_with(
                "550 5.7.23 SPF check failed: the SPF record of example.com does not list 192.0.2.1"
            ),
            "{reply}"
        );
        assert!(reply.text.contains("administrator of example.com must add"));
    }

    #[test]
    fn sender_controlled_text_cannot_inject_lines() {
        let mut o = sender(SpfResult::Fail);
        o.explanation = Some("go away\r\n250 OK".into());
        let reply = spf_refusal_reply(&o).unwrap();
        assert!(!reply.text.contains('\r') && !reply.text.contains('\n'));
        assert!(reply.text.contains("go away??250 OK"));
        let long = outcome(
            SpfResult::None,
            SpfCheck::Sender {
                domain: "x".repeat(1000),
            },
            SpfCause::InvalidIdentity("bad".into()),
        );
        assert!(spf_refusal_reply(&long).unwrap().text.len() < 450);
    }

    #[test]
    fn none_and_invalid_identity_explain_themselves() {
        let none = outcome(
            SpfResult::None,
            SpfCheck::Sender {
                domain: "example.com".into(),
            },
            SpfCause::NoSpfRecord,
        );
        assert!(
            spf_refusal_reply(&none)
                .unwrap()
                .text
                .contains("example.com publishes no SPF record")
        );
        let invalid = outcome(
            SpfResult::None,
            SpfCheck::Sender {
                domain: "not_a_domain".into(),
            },
            SpfCause::InvalidIdentity("bad".into()),
        );
        assert!(
            spf_refusal_reply(&invalid)
                .unwrap()
                .text
                .contains("not a valid domain name")
        );
    }
}
