//! The dispatch service's SMS as JSON, and the columns of `messages list`.

use email2sms_proto::dispatch::v1 as pb;
use email2sms_proto::queue::v1 as qpb;
use serde_json::{Value, json};

use super::{Column, time};
use crate::enum_text;

pub fn origin(o: &Option<qpb::EmailOrigin>) -> Value {
    let o = o.clone().unwrap_or_default();
    json!({
        "message_id": o.message_id,
        "envelope_sender": o.envelope_sender,
        "from_address": o.from_address,
        "subject": o.subject,
        "client_ip": o.client_ip,
        "helo": o.helo,
        "receive_time": time(&o.receive_time),
        "email_id": o.email_id,
    })
}

pub fn message(m: &pb::SmsMessage) -> Value {
    json!({
        "job_id": m.job_id,
        "company_id": m.company_id,
        "forwarding_user_id": m.forwarding_user_id,
        "sender_id": m.sender_id,
        "recipient": m.recipient,
        "text": m.text,
        "encoding": enum_text!(qpb::SmsEncoding, m.encoding, "SMS_ENCODING_"),
        "segment_count": m.segment_count,
        "truncated": m.truncated,
        "state": enum_text!(qpb::SmsState, m.state, "SMS_STATE_"),
        "needs_review": m.needs_review,
        "attempt_count": m.attempt_count,
        "connector": m.connector,
        "provider_message_id": m.provider_message_id,
        "failure_kind": enum_text!(qpb::FailureKind, m.failure_kind, "FAILURE_KIND_"),
        "error_code": m.error_code,
        "error_message": m.error_message,
        "origin": origin(&m.origin),
        "create_time": time(&m.create_time),
        "queue_time": time(&m.queue_time),
        "submit_time": time(&m.submit_time),
        "final_time": time(&m.final_time),
        "expire_time": time(&m.expire_time),
        "update_time": time(&m.update_time),
    })
}

pub const MESSAGE_COLUMNS: &[Column] = &[
    ("JOB", "job_id"),
    ("CREATED", "create_time"),
    ("TO", "recipient"),
    ("STATE", "state"),
    ("REVIEW", "needs_review"),
    ("PARTS", "segment_count"),
    ("FROM", "origin.from_address"),
    ("ERROR", "error_message"),
];

pub fn state_change(c: &pb::SmsStateChange) -> Value {
    json!({
        "state": enum_text!(qpb::SmsState, c.state, "SMS_STATE_"),
        "change_time": time(&c.change_time),
        "attempt": c.attempt,
        "detail": c.detail,
    })
}

pub const HISTORY_COLUMNS: &[Column] = &[
    ("TIME", "change_time"),
    ("STATE", "state"),
    ("ATTEMPT", "attempt"),
    ("DETAIL", "detail"),
];

/// A job as it sits in a queue (the dead-letter queue), decoded from its protobuf body.
pub fn job(j: &qpb::SmsJob) -> Value {
    json!({
        "job_id": j.job_id,
        "company_id": j.company_id,
        "recipient": j.recipient,
        "forwarding_user_id": j.forwarding_user_id,
        "segment_count": j.segment_count,
        "create_time": time(&j.create_time),
        "expire_time": time(&j.expire_time),
        "origin": origin(&j.origin),
    })
}
