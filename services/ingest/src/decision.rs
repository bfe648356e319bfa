//! The decision about one message, step by step, exactly as DESIGN.md orders it. The SMTP handler
//! and the Diagnose RPC both run [`Engine::decide`], so what support sees is what mail gets.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use email2sms_domain::{DomainName, EmailAddress, PhoneNumber, Region};
use email2sms_proto::ingest::v1::StepOutcome;
use email2sms_proto::policy::v1::{CompiledSender, SecurityType, TextMode};
use email2sms_proto::queue::v1::{AuthenticationResults, SpfResult as PbSpf};
use email2sms_spf::{ProviderDomain, SpfOutcome, SpfResult, SpfVerifier};

use crate::policy::PolicyLookup;
use crate::smtp::{Reply, command, recipient_address};
use crate::text::{ParsedMail, SmsText, sms_text};

/// One step of the decision, for Diagnose and the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: StepName,
    pub outcome: StepOutcome,
    pub detail: String,
    pub evidence: Vec<String>,
    pub duration: Duration,
}

/// The steps of a decision, in the order an SMTP session meets them: the recipient address at
/// `RCPT TO`, then everything that needs the message. Each keeps its name whether it ran, failed
/// or was skipped, so a UI can lay Diagnose out in fixed slots; `authentication` is SPF (Via SPF,
/// By Google Mail, By Outlook.com) or the IP allowlist (By IP Addresses), its detail says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepName {
    Recipient,
    SenderIdentity,
    AutoReply,
    ResolveSender,
    Readiness,
    Authentication,
    Alignment,
    ForwardingUser,
    Destination,
    Text,
}

impl StepName {
    /// Every step, in order: a decision lists all of them.
    pub const ALL: [StepName; 10] = [
        StepName::Recipient,
        StepName::SenderIdentity,
        StepName::AutoReply,
        StepName::ResolveSender,
        StepName::Readiness,
        StepName::Authentication,
        StepName::Alignment,
        StepName::ForwardingUser,
        StepName::Destination,
        StepName::Text,
    ];

    /// The stable machine name `DiagnosisStep.name` carries.
    pub fn as_str(self) -> &'static str {
        match self {
            StepName::Recipient => "recipient",
            StepName::SenderIdentity => "sender_identity",
            StepName::AutoReply => "auto_reply",
            StepName::ResolveSender => "resolve_sender",
            StepName::Readiness => "readiness",
            StepName::Authentication => "authentication",
            StepName::Alignment => "alignment",
            StepName::ForwardingUser => "forwarding_user",
            StepName::Destination => "destination",
            StepName::Text => "text",
        }
    }
}

/// What the client presented.
#[derive(Debug, Clone)]
pub struct MailFacts<'a> {
    pub client_ip: IpAddr,
    pub helo: &'a str,
    /// MAIL FROM; `None` for the null reverse-path (a bounce).
    pub envelope_sender: Option<&'a str>,
    /// Recipient addresses as given (`64211234567@sms.example.net`).
    pub recipients: &'a [String],
    pub mail: &'a ParsedMail,
}

/// One SMS to queue: E.164 number and the address it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub e164: String,
    pub address: String,
    /// True when the number is outside the company's own region: it counts against the
    /// company's daily international cap.
    pub international: bool,
}

/// The decision with everything it was based on.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The reply to give; 250 only means "authorised" here — the handler still has to queue.
    pub reply: Reply,
    pub steps: Vec<Step>,
    pub sender: Option<Arc<CompiledSender>>,
    pub authentication: Option<AuthenticationResults>,
    /// True once the sender proved it is the matched company's (SPF pass and alignment, or the
    /// client IP inside the allowed ranges). Only such mail reaches the sender log: a forged mail
    /// proves nothing about the company's servers.
    pub authenticated: bool,
    pub from: Option<String>,
    pub recipients: Vec<Recipient>,
    pub sms: Option<SmsText>,
}

impl Outcome {
    pub fn accepted(&self) -> bool {
        self.reply.is_positive()
    }
}

/// Everything the decision needs besides the message.
#[derive(Debug, Clone)]
pub struct Engine {
    pub spf: Arc<SpfVerifier>,
    pub google: ProviderDomain,
    pub outlook: ProviderDomain,
    pub policy: PolicyLookup,
    /// The platform-wide most SMS parts per recipient.
    pub max_parts: u32,
    /// The domains `RCPT TO` accepts (`EMAIL2SMS_SMS_DOMAINS`).
    pub sms_domains: Vec<DomainName>,
}

struct Recorder {
    steps: Vec<Step>,
    started: Instant,
}

impl Recorder {
    fn push(&mut self, name: StepName, outcome: StepOutcome, detail: impl Into<String>) {
        self.push_with(name, outcome, detail, Vec::new());
    }

    fn push_with(
        &mut self,
        name: StepName,
        outcome: StepOutcome,
        detail: impl Into<String>,
        evidence: Vec<String>,
    ) {
        let now = Instant::now();
        self.steps.push(Step {
            name,
            outcome,
            detail: detail.into(),
            evidence,
            duration: now - self.started,
        });
        self.started = now;
    }
}

fn refuse(code: u16, enhanced: &'static str, text: impl Into<String>) -> Reply {
    Reply::new(code, enhanced, text)
}

impl Engine {
    /// Decides about one message. `company_scope` (Diagnose for one company) hides a match that
    /// belongs to another company, so no tenant learns about another.
    pub async fn decide(&self, facts: &MailFacts<'_>, company_scope: Option<&str>) -> Outcome {
        let mut rec = Recorder {
            steps: Vec::new(),
            started: Instant::now(),
        };
        let mut outcome = Outcome {
            reply: Reply::ok("accepted"),
            steps: Vec::new(),
            sender: None,
            authentication: None,
            authenticated: false,
            from: None,
            recipients: Vec::new(),
            sms: None,
        };
        let reply = self.run(facts, company_scope, &mut rec, &mut outcome).await;
        if let Err(reply) = reply {
            outcome.reply = reply;
            // Diagnose promises every step: the ones not reached are listed as skipped.
            let done: Vec<StepName> = rec.steps.iter().map(|s| s.name).collect();
            for name in StepName::ALL {
                if !done.contains(&name) {
                    rec.push(
                        name,
                        StepOutcome::Skipped,
                        "not reached: an earlier step decided",
                    );
                }
            }
        }
        let metrics = crate::metrics::metrics();
        for step in &rec.steps {
            if step.outcome != StepOutcome::Skipped {
                metrics.step_took(step.name, step.duration);
            }
        }
        outcome.steps = rec.steps;
        outcome
    }

    async fn run(
        &self,
        facts: &MailFacts<'_>,
        company_scope: Option<&str>,
        rec: &mut Recorder,
        outcome: &mut Outcome,
    ) -> Result<(), Reply> {
        let mail = facts.mail;
        // 1. What `RCPT TO` checked (a real session refused anything else before DATA).
        for address in facts.recipients {
            let checked = command::parse_path(&format!("<{address}>"))
                .map_err(|error| {
                    Reply::new(501, "5.1.3", format!("bad recipient address: {error}"))
                })
                .and_then(|to| {
                    recipient_address::check(&to, &self.sms_domains)
                        .map_err(|refusal| refusal.reply(&to, &self.sms_domains))
                });
            if let Err(reply) = checked {
                rec.push(
                    StepName::Recipient,
                    StepOutcome::Fail,
                    format!("RCPT TO {address}: {}", reply.text),
                );
                return Err(reply);
            }
        }
        rec.push(
            StepName::Recipient,
            StepOutcome::Pass,
            format!(
                "RCPT TO {}: a phone number at an SMS domain",
                facts.recipients.join(", ")
            ),
        );

        // 2. The From mailbox is the identity; anything but exactly one is ambiguous.
        let from = match (mail.from_headers, mail.from.as_slice()) {
            (1, [one]) if !one.is_empty() => one.clone(),
            (headers, mailboxes) => {
                let detail = if headers == 0 || mailboxes.is_empty() {
                    "the email has no From address".to_owned()
                } else {
                    format!(
                        "the From header names {} mailboxes in {headers} header(s)",
                        mailboxes.len()
                    )
                };
                rec.push(StepName::SenderIdentity, StepOutcome::Fail, &detail);
                return Err(refuse(
                    550,
                    "5.7.1",
                    format!(
                        "{detail}; the From header must contain exactly one email address, the registered sender - send from a normal mailbox"
                    ),
                ));
            }
        };
        let from = match EmailAddress::parse(&from) {
            Ok(address) => address,
            Err(error) => {
                rec.push(
                    StepName::SenderIdentity,
                    StepOutcome::Fail,
                    format!("the From address {from:?} is not valid: {error}"),
                );
                return Err(refuse(
                    550,
                    "5.7.1",
                    format!(
                        "the From address {from} is not a valid email address ({error}); send from a registered address"
                    ),
                ));
            }
        };
        let from_domain = from.domain().as_str().to_owned();
        outcome.from = Some(from.as_str().to_owned());
        rec.push(
            StepName::SenderIdentity,
            StepOutcome::Pass,
            format!("From mailbox {from}"),
        );

        // 3. Bounces and automatic replies never become SMS.
        if facts.envelope_sender.is_none() {
            rec.push(
                StepName::AutoReply,
                StepOutcome::Fail,
                "the envelope sender is empty (<>): this is a bounce or delivery notification",
            );
            return Err(refuse(
                550,
                "5.7.1",
                "this is a delivery notification (empty envelope sender) and notifications are never sent as SMS; nothing needs fixing unless you expected a normal email",
            ));
        }
        if let Some(reason) = &mail.auto_reply {
            rec.push(
                StepName::AutoReply,
                StepOutcome::Fail,
                format!("automatic message: {reason}"),
            );
            return Err(refuse(
                550,
                "5.7.1",
                format!(
                    "this looks like an automatic reply ({reason}); automatic replies are never sent as SMS so that absence notices cannot text anyone - turn off the auto-reply rule for the SMS address"
                ),
            ));
        }
        rec.push(
            StepName::AutoReply,
            StepOutcome::Pass,
            "not an automatic message",
        );

        // 4. Who is this sender? email → verified domain (exact) → IP longest prefix.
        let resolution = match self.policy.resolve(&from, facts.client_ip).await {
            Ok(resolution) => resolution,
            Err(error) => {
                rec.push(
                    StepName::ResolveSender,
                    StepOutcome::Tempfail,
                    format!("the sender rules cannot be read right now: {error}"),
                );
                return Err(refuse(
                    451,
                    "4.3.0",
                    "the gateway cannot check its sender rules right now; nothing was sent, and your mail server will try again later",
                ));
            }
        };
        crate::metrics::metrics().lookup_answered_by(resolution.source);
        let mut evidence = resolution.tried.clone();
        evidence.push(format!("answered by {}", resolution.source.as_str()));
        let sender = resolution
            .sender
            .filter(|s| company_scope.is_none_or(|company| company == s.company_id));
        let Some(sender) = sender else {
            rec.push_with(
                StepName::ResolveSender,
                StepOutcome::Fail,
                match company_scope {
                    Some(_) => format!(
                        "{from} sending from {} is not registered for your company",
                        facts.client_ip
                    ),
                    None => format!(
                        "no email address, verified domain or IP address rule matches {from} from {}",
                        facts.client_ip
                    ),
                },
                evidence,
            );
            return Err(refuse(
                550,
                "5.7.1",
                format!(
                    "{from} is not authorised to send SMS through this gateway; ask your administrator to register this address, its domain or your mail server's IP address {} in the Email2SMS portal",
                    facts.client_ip
                ),
            ));
        };
        rec.push_with(
            StepName::ResolveSender,
            StepOutcome::Info,
            format!(
                "matched {} entry {} (company {})",
                match_kind_name(sender.match_kind()),
                sender.matched_value,
                sender.company_id
            ),
            evidence,
        );
        outcome.sender = Some(sender.clone());

        // 5. A matched but unready entry is refused with its own reason, never skipped.
        let readiness = sender.readiness.clone().unwrap_or_default();
        if !readiness.ready {
            let reason = if readiness.reason.is_empty() {
                "the entry is not ready".to_owned()
            } else {
                readiness.reason.clone()
            };
            rec.push(StepName::Readiness, StepOutcome::Fail, &reason);
            return Err(refuse(
                550,
                "5.7.1",
                format!(
                    "{} is registered but cannot send SMS yet: {reason}; ask your administrator to fix this in the Email2SMS portal",
                    sender.matched_value
                ),
            ));
        }
        rec.push(StepName::Readiness, StepOutcome::Pass, "the entry is ready");

        // 6. Authentication per the policy's security type.
        let envelope = facts.envelope_sender.unwrap_or_default();
        let envelope_domain = email2sms_spf::address_domain(envelope)
            .unwrap_or_default()
            .to_owned();
        let aligned =
            email2sms_spf::envelope_domain_aligned_exactly(&envelope_domain, &from_domain);
        let security = sender.security_type();
        let mut auth = AuthenticationResults {
            security_type: security as i32,
            aligned,
            ..AuthenticationResults::default()
        };
        match security {
            SecurityType::ViaSpf | SecurityType::ByGoogleMail | SecurityType::ByOutlook => {
                let spf = match security {
                    SecurityType::ViaSpf => {
                        self.spf
                            .check_sender(facts.client_ip, envelope, facts.helo)
                            .await
                    }
                    SecurityType::ByGoogleMail => {
                        self.spf.check_provider(facts.client_ip, &self.google).await
                    }
                    _ => {
                        self.spf
                            .check_provider(facts.client_ip, &self.outlook)
                            .await
                    }
                };
                if let email2sms_spf::SpfCause::Internal(detail) = &spf.cause {
                    // A fault in the SPF check itself (a viaspf bug, like its old /0 panic): the
                    // sender is refused with 550 5.7.24, and the operators must hear of it.
                    tracing::error!(
                        domain = spf.check.domain(),
                        client_ip = %facts.client_ip,
                        detail,
                        "internal error in the SPF check; refused as permerror"
                    );
                }
                crate::metrics::metrics().spf_result(spf_result_name(spf.result));
                auth.spf_result = spf_result(spf.result) as i32;
                auth.spf_domain = spf.check.domain().to_owned();
                auth.summary = spf.summary();
                outcome.authentication = Some(auth.clone());
                let mut trace = vec![spf.summary()];
                trace.extend(spf.trace.iter().cloned());
                if let Some(reply) = email2sms_spf::spf_refusal_reply(&spf) {
                    rec.push_with(
                        StepName::Authentication,
                        if reply.is_temporary() {
                            StepOutcome::Tempfail
                        } else {
                            StepOutcome::Fail
                        },
                        spf_detail(&spf),
                        trace,
                    );
                    return Err(Reply::new(reply.code, reply.enhanced, reply.text));
                }
                rec.push_with(
                    StepName::Authentication,
                    StepOutcome::Pass,
                    spf_detail(&spf),
                    trace,
                );
                if !aligned {
                    rec.push(
                        StepName::Alignment,
                        StepOutcome::Fail,
                        format!(
                            "the envelope sender domain {envelope_domain:?} differs from the From domain {from_domain}"
                        ),
                    );
                    return Err(refuse(
                        550,
                        "5.7.1",
                        format!(
                            "the envelope sender domain ({}) must be exactly the From domain ({from_domain}); ask your IT helpdesk to send with the return address in {from_domain}",
                            if envelope_domain.is_empty() {
                                "none"
                            } else {
                                &envelope_domain
                            }
                        ),
                    ));
                }
                rec.push(
                    StepName::Alignment,
                    StepOutcome::Pass,
                    format!("envelope domain {envelope_domain} equals the From domain"),
                );
                outcome.authenticated = true;
            }
            SecurityType::ByIpAddresses => {
                let ip = email2sms_domain::canonical_ip(facts.client_ip);
                let inside = sender.allowed_ip_ranges.iter().any(|range| {
                    range
                        .parse::<ipnet::IpNet>()
                        .is_ok_and(|net| net.contains(&ip))
                });
                auth.summary = format!(
                    "client {ip} {} the allowed ranges",
                    if inside { "is inside" } else { "is outside" }
                );
                outcome.authentication = Some(auth.clone());
                if !inside {
                    rec.push_with(
                        StepName::Authentication,
                        StepOutcome::Fail,
                        format!("IP allowlist: {}", auth.summary),
                        sender.allowed_ip_ranges.clone(),
                    );
                    return Err(refuse(
                        550,
                        "5.7.1",
                        format!(
                            "mail for {} must come from your company's own mail server, but it came from {ip}; ask your administrator to add this address to the security policy in the Email2SMS portal",
                            sender.matched_value
                        ),
                    ));
                }
                rec.push_with(
                    StepName::Authentication,
                    StepOutcome::Pass,
                    format!("IP allowlist: {}", auth.summary),
                    sender.allowed_ip_ranges.clone(),
                );
                rec.push(
                    StepName::Alignment,
                    StepOutcome::Skipped,
                    "not applicable: By IP Addresses proves the sender by its mail server's address, not by the envelope domain",
                );
                outcome.authenticated = true;
            }
            SecurityType::Unspecified => {
                rec.push(
                    StepName::Authentication,
                    StepOutcome::Fail,
                    "the security policy has no security type",
                );
                return Err(refuse(
                    550,
                    "5.7.1",
                    "the security policy of this sender has no security type; ask your administrator to choose one in the Email2SMS portal",
                ));
            }
        }

        // 7. Who the SMS is sent as.
        if sender.forwarding_user_id.is_empty() {
            rec.push(
                StepName::ForwardingUser,
                StepOutcome::Fail,
                "no forwarding user",
            );
            return Err(refuse(
                550,
                "5.7.1",
                format!(
                    "{} has no Messenger user to send SMS as; ask your administrator to allocate one in the Email2SMS portal",
                    sender.matched_value
                ),
            ));
        }
        rec.push(
            StepName::ForwardingUser,
            StepOutcome::Info,
            forwarding_user_detail(&sender),
        );

        // 8. Recipients in E.164, read with the company's region, and where they may go.
        let region = Region::parse(&sender.default_region).ok();
        let rules = crate::destinations::DestinationRules::of(&sender);
        for address in facts.recipients {
            let local = address
                .rsplit_once('@')
                .map_or(address.as_str(), |(l, _)| l);
            let number = match PhoneNumber::parse(local, region) {
                Ok(number) => number,
                Err(error) => {
                    rec.push(
                        StepName::Destination,
                        StepOutcome::Fail,
                        format!("{address}: {error}"),
                    );
                    return Err(refuse(
                        550,
                        "5.1.3",
                        format!(
                            "the recipient {address} is not a valid phone number ({error}); write the number with its country code, e.g. +64211234567@..., and send again"
                        ),
                    ));
                }
            };
            match rules.check(&number) {
                Ok(international) => outcome.recipients.push(Recipient {
                    e164: number.as_str().to_owned(),
                    address: address.clone(),
                    international,
                }),
                Err(refusal) => {
                    rec.push(
                        StepName::Destination,
                        StepOutcome::Fail,
                        format!("{address}: {}", refusal.detail()),
                    );
                    return Err(refuse(550, "5.7.1", refusal.reply_text(address)));
                }
            }
        }
        rec.push(
            StepName::Destination,
            StepOutcome::Pass,
            outcome
                .recipients
                .iter()
                .map(|r| r.e164.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        );

        // 9. The text and the company's part limit.
        let mode = TextMode::try_from(sender.text_mode).unwrap_or(TextMode::BodyOrSubject);
        match sms_text(mail, mode, sender.limits.as_ref(), self.max_parts) {
            Ok(sms) => {
                rec.push(
                    StepName::Text,
                    StepOutcome::Pass,
                    format!(
                        "{} characters, {:?}, {} part(s){}{}",
                        sms.text.chars().count(),
                        sms.encoding,
                        sms.segments,
                        if sms.truncated { ", truncated" } else { "" },
                        replaced_typography(&sms.replacements)
                    ),
                );
                outcome.sms = Some(sms);
            }
            Err(reply) => {
                rec.push(StepName::Text, StepOutcome::Fail, reply.text.clone());
                return Err(reply);
            }
        }
        outcome.authentication.get_or_insert(auth);
        // The words of the real 250 (Diagnose shows them), with the ids the jobs will get
        // only when they are queued.
        outcome.reply = Reply::queued(&vec!["<job id>"; outcome.recipients.len()]);
        Ok(())
    }
}

fn spf_detail(spf: &SpfOutcome) -> String {
    format!("SPF: {}", spf.summary())
}

fn spf_result(result: SpfResult) -> PbSpf {
    match result {
        SpfResult::Pass => PbSpf::Pass,
        SpfResult::Fail => PbSpf::Fail,
        SpfResult::Softfail => PbSpf::Softfail,
        SpfResult::Neutral => PbSpf::Neutral,
        SpfResult::None => PbSpf::None,
        SpfResult::Temperror => PbSpf::Temperror,
        SpfResult::Permerror => PbSpf::Permerror,
    }
}

/// Who the SMS goes out as, by the names an admin knows: "sent as jo (sender ID \"Acme\")".
/// The id is kept in parentheses for support; an entry compiled before usernames were carried
/// shows the id alone.
fn forwarding_user_detail(sender: &CompiledSender) -> String {
    let sender_id = if sender.sender_id.is_empty() {
        "the platform's default sender ID".to_owned()
    } else {
        format!("sender ID {:?}", sender.sender_id)
    };
    if sender.forwarding_username.is_empty() {
        format!(
            "sent as forwarding user {} ({sender_id})",
            sender.forwarding_user_id
        )
    } else {
        format!(
            "sent as {} ({sender_id}; user {})",
            sender.forwarding_username, sender.forwarding_user_id
        )
    }
}

/// What the text step says about typography replaced to keep the SMS GSM-7:
/// "; typography replaced to stay GSM-7: 2 × U+201C “ → \"".
fn replaced_typography(replacements: &[email2sms_sms::Replacement]) -> String {
    if replacements.is_empty() {
        return String::new();
    }
    let each: Vec<String> = replacements
        .iter()
        .map(|r| {
            format!(
                "{} × U+{:04X} {} → {:?}",
                r.count,
                u32::from(r.from),
                r.from,
                r.to
            )
        })
        .collect();
    format!("; typography replaced to stay GSM-7: {}", each.join(", "))
}

/// The RFC 7208 name of an SPF result, for the metrics.
fn spf_result_name(result: SpfResult) -> &'static str {
    match result {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::Softfail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::None => "none",
        SpfResult::Temperror => "temperror",
        SpfResult::Permerror => "permerror",
    }
}

fn match_kind_name(kind: email2sms_proto::policy::v1::MatchKind) -> &'static str {
    use email2sms_proto::policy::v1::MatchKind;
    match kind {
        MatchKind::EmailAddress => "email address",
        MatchKind::Domain => "domain",
        MatchKind::IpAddress => "IP address",
        MatchKind::Unspecified => "unknown",
    }
}
