//! `IngestService.Diagnose`: the decision engine without publishing or recording anything.

use std::net::IpAddr;

use email2sms_proto::ingest::v1::{
    Decision, DiagnoseRequest, DiagnoseResponse, DiagnosisStep, SmsPreview, SmtpReply, StepOutcome,
    ingest_service_server::IngestService,
};
use email2sms_proto::tonic::{Request, Response, Status};

use crate::decision::{Engine, MailFacts, StepName};
use crate::error::IngestError;
use crate::text::{self, ParsedMail};

/// The diagnosis API (scope `admin`).
#[derive(Debug, Clone)]
pub struct IngestApi {
    pub engine: Option<Engine>,
    pub max_message_size: usize,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> IngestError {
    IngestError::InvalidArgument {
        field,
        reason: reason.into(),
    }
}

impl IngestApi {
    pub async fn diagnose(
        &self,
        request: DiagnoseRequest,
    ) -> Result<DiagnoseResponse, IngestError> {
        let Some(engine) = &self.engine else {
            return Err(IngestError::NoPipeline);
        };
        let client_ip: IpAddr = request.client_ip.trim().parse().map_err(|_| {
            invalid(
                "client_ip",
                "write an IPv4 or IPv6 address, e.g. 203.0.113.7",
            )
        })?;
        let recipient = request.recipient.trim().to_owned();
        if !recipient.contains('@') {
            return Err(invalid(
                "recipient",
                "write a recipient address, e.g. 64211234567@sms.example.net",
            ));
        }
        if request.raw_message.len() > self.max_message_size {
            return Err(invalid(
                "raw_message",
                format!(
                    "larger than the message size limit of {} bytes",
                    self.max_message_size
                ),
            ));
        }
        let mail = if request.raw_message.is_empty() {
            // Without a message, the From header is parsed the same way a real one would be, and
            // the text is a placeholder so that the text step shows what a one-line mail gives.
            let raw = format!(
                "From: {}\r\nSubject: {PLACEHOLDER_SUBJECT}\r\n\r\n{PLACEHOLDER_BODY}\r\n",
                request.from_header.replace(['\r', '\n'], " ")
            );
            text::parse(raw.as_bytes())
        } else {
            text::parse(&request.raw_message)
        };
        let recipients = vec![recipient];
        let envelope = request.envelope_sender.trim();
        let facts = MailFacts {
            client_ip,
            helo: request.helo.trim(),
            envelope_sender: (!envelope.is_empty()).then_some(envelope),
            recipients: &recipients,
            mail: &mail,
        };
        let company = request.company_id.trim();
        let outcome = engine
            .decide(&facts, (!company.is_empty()).then_some(company))
            .await;
        let from = outcome.from.clone();
        let mut answer = response(outcome, &mail);
        if request.raw_message.is_empty() {
            say_which_text_was_evaluated(&mut answer);
        }
        if !company.is_empty() {
            conceal_other_companies(&mut answer, from.as_deref(), client_ip);
        }
        Ok(answer)
    }
}

/// The message Diagnose evaluates when the request has no `raw_message`.
const PLACEHOLDER_SUBJECT: &str = "Diagnose";
const PLACEHOLDER_BODY: &str = "Diagnose test message";

/// Without `raw_message` the text step judged a placeholder, not the caller's mail: say so, so
/// nobody reads "21 characters, 1 part" as a verdict on their own email.
fn say_which_text_was_evaluated(answer: &mut DiagnoseResponse) {
    if let Some(step) = answer
        .steps
        .iter_mut()
        .find(|step| step.name == StepName::Text.as_str())
        && step.outcome() != StepOutcome::Skipped
    {
        step.detail = format!(
            "evaluated the placeholder text {PLACEHOLDER_BODY:?} (subject {PLACEHOLDER_SUBJECT:?}), since no raw_message was given: {}",
            step.detail
        );
    }
}

/// For a company-scoped caller, makes a refusal at `resolve_sender` independent of what other
/// companies registered: the engine's evidence lists the keys it tried up to the first hit (one
/// when another company holds the address, three when nobody does) and says which cache
/// answered, and the step timings tell a hit from a miss. So the evidence becomes the three
/// lookups resolution always makes, and no step has a duration. Nothing else in such an answer
/// depends on other companies (the engine already hides the match, its detail and the reply).
fn conceal_other_companies(answer: &mut DiagnoseResponse, from: Option<&str>, client_ip: IpAddr) {
    let Some(step) = answer
        .steps
        .iter_mut()
        .find(|step| step.name == StepName::ResolveSender.as_str())
    else {
        return;
    };
    if step.outcome() != StepOutcome::Fail {
        return;
    }
    let from = from.unwrap_or_default();
    let domain = from.rsplit_once('@').map_or("", |(_, domain)| domain);
    step.evidence = vec![
        format!("email address entry for {from}"),
        format!("verified domain entry for {domain}"),
        format!(
            "IP address entry with the longest prefix containing {}",
            email2sms_domain::canonical_ip(client_ip)
        ),
    ];
    for step in &mut answer.steps {
        step.duration = None;
    }
}

fn response(outcome: crate::decision::Outcome, _mail: &ParsedMail) -> DiagnoseResponse {
    let decision = if outcome.reply.is_positive() {
        Decision::Accept
    } else if outcome.reply.is_transient() {
        Decision::Tempfail
    } else {
        Decision::Reject
    };
    let sms = match (&outcome.sms, outcome.recipients.first()) {
        (Some(sms), Some(recipient)) if decision == Decision::Accept => Some(SmsPreview {
            recipient: recipient.e164.clone(),
            text: sms.text.clone(),
            encoding: sms.encoding as i32,
            segment_count: sms.segments,
            truncated: sms.truncated,
        }),
        _ => None,
    };
    DiagnoseResponse {
        decision: decision as i32,
        reply: Some(SmtpReply {
            code: u32::from(outcome.reply.code),
            enhanced_code: outcome.reply.enhanced.unwrap_or_default().to_owned(),
            text: outcome.reply.text.clone(),
        }),
        steps: outcome
            .steps
            .iter()
            .map(|step| DiagnosisStep {
                name: step.name.as_str().to_owned(),
                outcome: step.outcome as i32,
                detail: step.detail.clone(),
                evidence: step.evidence.clone(),
                duration: prost_types::Duration::try_from(step.duration).ok(),
            })
            .collect(),
        sender: outcome.sender.as_deref().cloned(),
        authentication: outcome.authentication.clone(),
        sms,
    }
}

#[email2sms_proto::tonic::async_trait]
impl IngestService for IngestApi {
    async fn diagnose(
        &self,
        request: Request<DiagnoseRequest>,
    ) -> Result<Response<DiagnoseResponse>, Status> {
        Ok(Response::new(
            IngestApi::diagnose(self, request.into_inner()).await?,
        ))
    }
}
