//! The policy service's resources as JSON, and the columns their lists show.

use email2sms_proto::policy::v1 as pb;
use email2sms_proto::verification::v1 as vpb;
use serde_json::{Value, json};

use super::{Column, millis, time};
use crate::enum_text;

pub fn company(c: &pb::Company) -> Value {
    let limits = c.limits.clone().unwrap_or_default();
    json!({
        "company_id": c.company_id,
        "display_name": c.display_name,
        "default_region": c.default_region,
        "admin_email_addresses": c.admin_email_addresses,
        "suspended": c.suspended,
        "limits": {
            "max_sms_parts": limits.max_sms_parts,
            "over_limit_behavior": enum_text!(pb::OverLimitBehavior, limits.over_limit_behavior, "OVER_LIMIT_BEHAVIOR_"),
            "allowed_destination_regions": limits.allowed_destination_regions,
            "international_sms_per_day": limits.international_sms_per_day,
            "keep_typography": limits.keep_typography(),
        },
        "create_time": time(&c.create_time),
        "update_time": time(&c.update_time),
    })
}

pub fn user(u: &pb::MessengerUser) -> Value {
    json!({
        "messenger_user_id": u.messenger_user_id,
        "company_id": u.company_id,
        "external_id": u.external_id,
        "username": u.username,
        "display_name": u.display_name,
        "sender_id": u.sender_id,
        "active": u.active,
        "create_time": time(&u.create_time),
        "update_time": time(&u.update_time),
    })
}

pub const USER_COLUMNS: &[Column] = &[
    ("ID", "messenger_user_id"),
    ("USERNAME", "username"),
    ("NAME", "display_name"),
    ("EXTERNAL ID", "external_id"),
    ("SENDER", "sender_id"),
    ("ACTIVE", "active"),
];

pub fn security_policy(p: &pb::SecurityPolicy) -> Value {
    json!({
        "security_policy_id": p.security_policy_id,
        "company_id": p.company_id,
        "display_name": p.display_name,
        "sent_from": enum_text!(pb::SentFromKind, p.sent_from, "SENT_FROM_KIND_"),
        "security_type": enum_text!(pb::SecurityType, p.security_type, "SECURITY_TYPE_"),
        "allowed_ip_ranges": p.allowed_ip_ranges,
        "default_forwarding_user_id": p.default_forwarding_user_id,
        "text_mode": enum_text!(pb::TextMode, p.text_mode, "TEXT_MODE_"),
        "entry_count": p.entry_count,
        "create_time": time(&p.create_time),
        "update_time": time(&p.update_time),
    })
}

pub const POLICY_COLUMNS: &[Column] = &[
    ("ID", "security_policy_id"),
    ("NAME", "display_name"),
    ("SENT FROM", "sent_from"),
    ("SECURITY", "security_type"),
    ("DEFAULT USER", "default_forwarding_user_id"),
    ("ENTRIES", "entry_count"),
];

fn readiness(r: &Option<pb::Readiness>) -> Value {
    let r = r.clone().unwrap_or_default();
    json!({
        "ready": r.ready,
        "reason_code": enum_text!(pb::NotReadyReason, r.reason_code, "NOT_READY_REASON_"),
        "reason": r.reason,
        "effective_forwarding_user_id": r.effective_forwarding_user_id,
    })
}

pub fn domain(d: &pb::Domain) -> Value {
    let v = d.verification.clone().unwrap_or_default();
    json!({
        "domain_id": d.domain_id,
        "company_id": d.company_id,
        "security_policy_id": d.security_policy_id,
        "domain_name": d.domain_name,
        "unicode_domain_name": d.unicode_domain_name,
        "forwarding_user_id": d.forwarding_user_id,
        "verification": {
            "token": v.token,
            "txt_record_name": v.txt_record_name,
            "txt_record_value": v.txt_record_value,
            "state": enum_text!(vpb::VerificationState, v.state, "VERIFICATION_STATE_"),
            "state_reason": v.state_reason,
            "verify_time": time(&v.verify_time),
            "last_check_time": time(&v.last_check_time),
        },
        "readiness": readiness(&d.readiness),
        "create_time": time(&d.create_time),
        "update_time": time(&d.update_time),
    })
}

pub const DOMAIN_COLUMNS: &[Column] = &[
    ("ID", "domain_id"),
    ("DOMAIN", "domain_name"),
    ("STATE", "verification.state"),
    ("READY", "readiness.ready"),
    ("USER", "readiness.effective_forwarding_user_id"),
    ("REASON", "readiness.reason"),
];

pub fn check(c: &vpb::Check) -> Value {
    json!({
        "check_id": c.check_id,
        "check_time": time(&c.check_time),
        "trigger": enum_text!(vpb::CheckTrigger, c.trigger, "CHECK_TRIGGER_"),
        "result": enum_text!(vpb::CheckResult, c.result, "CHECK_RESULT_"),
        "temporary": c.temporary,
        "queried_name": c.queried_name,
        "cname_chain": c.cname_chain,
        "txt_values": c.txt_values,
        "nameserver": c.nameserver,
        "duration_ms": millis(&c.duration),
        "message": c.message,
        "state_before": enum_text!(vpb::VerificationState, c.state_before, "VERIFICATION_STATE_"),
        "state_after": enum_text!(vpb::VerificationState, c.state_after, "VERIFICATION_STATE_"),
        "wildcard_name": c.wildcard_name,
    })
}

pub fn email_address(e: &pb::EmailAddress) -> Value {
    json!({
        "email_address_id": e.email_address_id,
        "company_id": e.company_id,
        "security_policy_id": e.security_policy_id,
        "email_address": e.email_address,
        "forwarding_user_id": e.forwarding_user_id,
        "disabled": e.disabled,
        "readiness": readiness(&e.readiness),
        "source": enum_text!(pb::EntrySource, e.source, "ENTRY_SOURCE_"),
        "import_id": e.import_id,
        "last_notify_time": time(&e.last_notify_time),
        "create_time": time(&e.create_time),
        "update_time": time(&e.update_time),
    })
}

pub const EMAIL_COLUMNS: &[Column] = &[
    ("ID", "email_address_id"),
    ("ADDRESS", "email_address"),
    ("READY", "readiness.ready"),
    ("USER", "readiness.effective_forwarding_user_id"),
    ("SOURCE", "source"),
    ("REASON", "readiness.reason"),
];

pub fn ip_address(i: &pb::IpAddress) -> Value {
    json!({
        "ip_address_id": i.ip_address_id,
        "company_id": i.company_id,
        "security_policy_id": i.security_policy_id,
        "ip_range": i.ip_range,
        "description": i.description,
        "forwarding_user_id": i.forwarding_user_id,
        "readiness": readiness(&i.readiness),
        "create_time": time(&i.create_time),
        "update_time": time(&i.update_time),
    })
}

pub const IP_COLUMNS: &[Column] = &[
    ("ID", "ip_address_id"),
    ("RANGE", "ip_range"),
    ("READY", "readiness.ready"),
    ("USER", "readiness.effective_forwarding_user_id"),
    ("DESCRIPTION", "description"),
    ("REASON", "readiness.reason"),
];

pub fn import(i: &pb::Import) -> Value {
    let t = i.totals.unwrap_or_default();
    json!({
        "import_id": i.import_id,
        "company_id": i.company_id,
        "security_policy_id": i.security_policy_id,
        "file_name": i.file_name,
        "state": enum_text!(pb::ImportState, i.state, "IMPORT_STATE_"),
        "totals": {
            "total_rows": t.total_rows,
            "ok_rows": t.ok_rows,
            "invalid_email_rows": t.invalid_email_rows,
            "unknown_user_rows": t.unknown_user_rows,
            "inactive_user_rows": t.inactive_user_rows,
            "duplicate_in_file_rows": t.duplicate_in_file_rows,
            "already_registered_rows": t.already_registered_rows,
            "registered_to_other_company_rows": t.registered_to_other_company_rows,
            "malformed_rows": t.malformed_rows,
        },
        "created_count": i.created_count,
        "notification_id": i.notification_id,
        "create_time": time(&i.create_time),
        "commit_time": time(&i.commit_time),
        "expire_time": time(&i.expire_time),
    })
}

pub fn import_row(r: &pb::ImportRow) -> Value {
    json!({
        "line_number": r.line_number,
        "email_address": r.email_address,
        "normalized_email_address": r.normalized_email_address,
        "username": r.username,
        "messenger_user_id": r.messenger_user_id,
        "status": enum_text!(pb::ImportRowStatus, r.status, "IMPORT_ROW_STATUS_"),
        "message": r.message,
    })
}

pub const IMPORT_ROW_COLUMNS: &[Column] = &[
    ("LINE", "line_number"),
    ("EMAIL", "email_address"),
    ("USERNAME", "username"),
    ("STATUS", "status"),
    ("PROBLEM", "message"),
];

pub fn notification(n: &pb::Notification) -> Value {
    json!({
        "notification_id": n.notification_id,
        "state": enum_text!(pb::NotificationState, n.state, "NOTIFICATION_STATE_"),
    })
}

pub fn sender_log_entry(e: &pb::SenderLogEntry) -> Value {
    json!({
        "sender_log_entry_id": e.sender_log_entry_id,
        "company_id": e.company_id,
        "client_ip": e.client_ip,
        "first_seen_time": time(&e.first_seen_time),
        "last_seen_time": time(&e.last_seen_time),
        "seen_count": e.seen_count,
        "sample_envelope_sender": e.sample_envelope_sender,
        "sample_from_address": e.sample_from_address,
        "sample_helo": e.sample_helo,
        "reverse_dns_name": e.reverse_dns_name,
        "admin_notified": e.admin_notified,
        "admin_notify_time": time(&e.admin_notify_time),
        "admin_notify_error": e.admin_notify_error,
        "admin_notify_in_digest": e.admin_notify_in_digest,
    })
}

pub const SENDER_LOG_COLUMNS: &[Column] = &[
    ("IP", "client_ip"),
    ("FIRST SEEN", "first_seen_time"),
    ("LAST SEEN", "last_seen_time"),
    ("COUNT", "seen_count"),
    ("FROM", "sample_from_address"),
    ("HELO", "sample_helo"),
    ("PTR", "reverse_dns_name"),
    ("ALERTED", "admin_notified"),
];

pub fn compiled_sender(s: &pb::CompiledSender) -> Value {
    json!({
        "match_kind": enum_text!(pb::MatchKind, s.match_kind, "MATCH_KIND_"),
        "entry_id": s.entry_id,
        "matched_value": s.matched_value,
        "company_id": s.company_id,
        "security_policy_id": s.security_policy_id,
        "security_type": enum_text!(pb::SecurityType, s.security_type, "SECURITY_TYPE_"),
        "allowed_ip_ranges": s.allowed_ip_ranges,
        "forwarding_user_id": s.forwarding_user_id,
        "sender_id": s.sender_id,
        "default_region": s.default_region,
        "text_mode": enum_text!(pb::TextMode, s.text_mode, "TEXT_MODE_"),
        "readiness": readiness(&s.readiness),
    })
}
