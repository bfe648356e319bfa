//! Ingest's diagnosis as JSON.

use email2sms_proto::ingest::v1 as pb;
use email2sms_proto::policy::v1 as ppb;
use email2sms_proto::queue::v1 as qpb;
use serde_json::{Value, json};

use super::millis;
use crate::enum_text;

pub fn step(s: &pb::DiagnosisStep) -> Value {
    json!({
        "name": s.name,
        "outcome": enum_text!(pb::StepOutcome, s.outcome, "STEP_OUTCOME_"),
        "detail": s.detail,
        "evidence": s.evidence,
        "duration_ms": millis(&s.duration),
    })
}

pub fn diagnosis(d: &pb::DiagnoseResponse) -> Value {
    let reply = d.reply.clone().unwrap_or_default();
    json!({
        "decision": enum_text!(pb::Decision, d.decision, "DECISION_"),
        "reply": {
            "code": reply.code,
            "enhanced_code": reply.enhanced_code,
            "text": reply.text,
        },
        "steps": d.steps.iter().map(step).collect::<Vec<_>>(),
        "sender": d.sender.as_ref().map(super::policy::compiled_sender),
        "authentication": d.authentication.as_ref().map(|a| json!({
            "security_type": enum_text!(ppb::SecurityType, a.security_type, "SECURITY_TYPE_"),
            "spf_result": enum_text!(qpb::SpfResult, a.spf_result, "SPF_RESULT_"),
            "spf_domain": a.spf_domain,
            "aligned": a.aligned,
            "summary": a.summary,
        })),
        "sms": d.sms.as_ref().map(|s| json!({
            "recipient": s.recipient,
            "text": s.text,
            "encoding": enum_text!(qpb::SmsEncoding, s.encoding, "SMS_ENCODING_"),
            "segment_count": s.segment_count,
            "truncated": s.truncated,
        })),
    })
}
