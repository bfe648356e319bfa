//! Conversions between the database's text enums and times and the contract's types, plus the
//! small parsers every handler shares (ids, page sizes, update masks, idempotency keys).

use chrono::{DateTime, Utc};
use email2sms_proto::policy::v1 as pb;
use email2sms_proto::verification::v1::VerificationState;
use uuid::Uuid;

use crate::error::{Error, Result};

/// Page size when the request says 0.
pub const DEFAULT_PAGE_SIZE: i64 = 50;
/// Largest page a client can ask for; bigger requests are capped, not refused.
pub const MAX_PAGE_SIZE: i64 = 1000;

pub fn timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

pub fn opt_timestamp(time: Option<DateTime<Utc>>) -> Option<prost_types::Timestamp> {
    time.map(timestamp)
}

/// The page size a list request asked for, defaulted and capped per the service conventions.
pub fn page_size(requested: i32, field: &str) -> Result<i64> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n < 0 => Err(Error::invalid(
            field,
            "NEGATIVE_PAGE_SIZE",
            "page_size must not be negative",
        )),
        n => Ok(i64::from(n).min(MAX_PAGE_SIZE)),
    }
}

/// A required id field holding a server-assigned UUID.
pub fn parse_id(field: &str, value: &str) -> Result<Uuid> {
    if value.is_empty() {
        return Err(Error::required(field));
    }
    Uuid::parse_str(value).map_err(|_| {
        Error::invalid(
            field,
            "INVALID_ID",
            format!("{field} must be an id returned by this service (a UUID)"),
        )
    })
}

/// An optional id field: empty means none.
pub fn parse_opt_id(field: &str, value: &str) -> Result<Option<Uuid>> {
    if value.is_empty() {
        Ok(None)
    } else {
        parse_id(field, value).map(Some)
    }
}

pub fn id_text(id: Option<Uuid>) -> String {
    id.map(|id| id.to_string()).unwrap_or_default()
}

/// The paths of an update mask, checked against the updatable ones. An empty mask is refused so
/// that a client never wipes fields it did not mean to touch.
pub fn update_paths(
    mask: Option<&prost_types::FieldMask>,
    updatable: &[&'static str],
) -> Result<Vec<&'static str>> {
    let paths = mask.map(|m| m.paths.as_slice()).unwrap_or_default();
    if paths.is_empty() {
        return Err(Error::invalid(
            "update_mask",
            "EMPTY_UPDATE_MASK",
            format!(
                "update_mask must name the fields to change; updatable: {}",
                updatable.join(", ")
            ),
        ));
    }
    let mut out = Vec::new();
    for path in paths {
        match updatable.iter().find(|u| **u == path) {
            Some(u) => {
                if !out.contains(u) {
                    out.push(*u);
                }
            }
            None => {
                return Err(Error::invalid(
                    "update_mask",
                    "FIELD_NOT_UPDATABLE",
                    format!(
                        "{path:?} cannot be updated; updatable: {}",
                        updatable.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// A `request_id` for idempotent creates: empty (no idempotency) or a UUID.
pub fn parse_request_id(value: &str) -> Result<Option<Uuid>> {
    if value.is_empty() {
        return Ok(None);
    }
    Uuid::parse_str(value).map(Some).map_err(|_| {
        Error::invalid(
            "request_id",
            "INVALID_REQUEST_ID",
            "request_id must be a UUID chosen by the client",
        )
    })
}

pub fn sent_from_text(kind: pb::SentFromKind) -> Option<&'static str> {
    match kind {
        pb::SentFromKind::Unspecified => None,
        pb::SentFromKind::Domain => Some("domain"),
        pb::SentFromKind::EmailAddress => Some("email_address"),
        pb::SentFromKind::IpAddress => Some("ip_address"),
    }
}

pub fn sent_from_enum(text: &str) -> pb::SentFromKind {
    match text {
        "domain" => pb::SentFromKind::Domain,
        "email_address" => pb::SentFromKind::EmailAddress,
        "ip_address" => pb::SentFromKind::IpAddress,
        _ => pb::SentFromKind::Unspecified,
    }
}

pub fn security_type_text(kind: pb::SecurityType) -> Option<&'static str> {
    match kind {
        pb::SecurityType::Unspecified => None,
        pb::SecurityType::ViaSpf => Some("via_spf"),
        pb::SecurityType::ByGoogleMail => Some("by_google_mail"),
        pb::SecurityType::ByOutlook => Some("by_outlook"),
        pb::SecurityType::ByIpAddresses => Some("by_ip_addresses"),
    }
}

pub fn security_type_enum(text: &str) -> pb::SecurityType {
    match text {
        "via_spf" => pb::SecurityType::ViaSpf,
        "by_google_mail" => pb::SecurityType::ByGoogleMail,
        "by_outlook" => pb::SecurityType::ByOutlook,
        "by_ip_addresses" => pb::SecurityType::ByIpAddresses,
        _ => pb::SecurityType::Unspecified,
    }
}

/// Unspecified on input means the contract's default, BODY_OR_SUBJECT.
pub fn text_mode_text(mode: pb::TextMode) -> &'static str {
    match mode {
        pb::TextMode::Unspecified | pb::TextMode::BodyOrSubject => "body_or_subject",
        pb::TextMode::Body => "body",
        pb::TextMode::Subject => "subject",
        pb::TextMode::SubjectAndBody => "subject_and_body",
    }
}

pub fn text_mode_enum(text: &str) -> pb::TextMode {
    match text {
        "body" => pb::TextMode::Body,
        "subject" => pb::TextMode::Subject,
        "subject_and_body" => pb::TextMode::SubjectAndBody,
        _ => pb::TextMode::BodyOrSubject,
    }
}

/// `None` for UNSPECIFIED ("keep the current value").
pub fn over_limit_text(behavior: pb::OverLimitBehavior) -> Option<&'static str> {
    match behavior {
        pb::OverLimitBehavior::Unspecified => None,
        pb::OverLimitBehavior::Truncate => Some("truncate"),
        pb::OverLimitBehavior::Refuse => Some("reject"),
    }
}

pub fn over_limit_enum(text: &str) -> pb::OverLimitBehavior {
    match text {
        "reject" => pb::OverLimitBehavior::Refuse,
        _ => pb::OverLimitBehavior::Truncate,
    }
}

pub fn verification_state_text(state: VerificationState) -> Option<&'static str> {
    match state {
        VerificationState::Unspecified => None,
        VerificationState::Pending => Some("pending"),
        VerificationState::Verified => Some("verified"),
        VerificationState::Failed => Some("failed"),
        VerificationState::Revoked => Some("revoked"),
    }
}

pub fn verification_state_enum(text: &str) -> VerificationState {
    match text {
        "pending" => VerificationState::Pending,
        "verified" => VerificationState::Verified,
        "failed" => VerificationState::Failed,
        "revoked" => VerificationState::Revoked,
        _ => VerificationState::Unspecified,
    }
}

/// The canonical CIDR text of a stored network: always with a prefix (`203.0.113.7/32`), as the
/// contract returns IP ranges.
pub fn cidr_text(net: &ipnet::IpNet) -> String {
    format!("{}/{}", net.network(), net.prefix_len())
}

/// Parses an IP or CIDR from a request into the stored form; host bits set is refused.
pub fn parse_network(field: &str, value: &str) -> Result<ipnet::IpNet> {
    if value.is_empty() {
        return Err(Error::required(field));
    }
    email2sms_domain::IpNetwork::parse(value)
        .map(|n| n.to_ipnet())
        .map_err(|e| Error::invalid(field, e.code(), e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_defaults_to_50_and_is_capped_at_1000() {
        assert_eq!(page_size(0, "page_size").unwrap(), 50);
        assert_eq!(page_size(5000, "page_size").unwrap(), 1000);
        assert!(page_size(-1, "page_size").is_err());
    }

    #[test]
    fn single_ip_is_returned_in_cidr_form() {
        let net = parse_network("ip_range", "203.0.113.7").unwrap();
        assert_eq!(cidr_text(&net), "203.0.113.7/32");
        let mapped = parse_network("ip_range", "::ffff:192.0.2.1").unwrap();
        assert_eq!(cidr_text(&mapped), "192.0.2.1/32");
        assert!(parse_network("ip_range", "10.0.0.1/8").is_err());
    }

    #[test]
    fn empty_update_mask_is_refused() {
        assert!(update_paths(None, &["description"]).is_err());
        let mask = prost_types::FieldMask {
            paths: vec!["create_time".into()],
        };
        assert!(update_paths(Some(&mask), &["description"]).is_err());
    }
}
