//! Delivery receipts and provider message ids.

/// The receipt states of SMPP (`stat:` of the receipt text), as stored in the dispatch schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptStatus {
    Enroute,
    Delivered,
    Expired,
    Deleted,
    Undeliverable,
    Accepted,
    Unknown,
    Rejected,
    Skipped,
}

impl ReceiptStatus {
    /// Parses the `stat:` value (`DELIVRD`, `UNDELIV`, ...), case-insensitively; full words too.
    pub fn parse(stat: &str) -> Option<ReceiptStatus> {
        Some(match stat.to_ascii_uppercase().as_str() {
            "ENROUTE" => ReceiptStatus::Enroute,
            "DELIVRD" | "DELIVERED" => ReceiptStatus::Delivered,
            "EXPIRED" => ReceiptStatus::Expired,
            "DELETED" => ReceiptStatus::Deleted,
            "UNDELIV" | "UNDELIVERABLE" => ReceiptStatus::Undeliverable,
            "ACCEPTD" | "ACCEPTED" => ReceiptStatus::Accepted,
            "UNKNOWN" => ReceiptStatus::Unknown,
            "REJECTD" | "REJECTED" => ReceiptStatus::Rejected,
            "SKIPPED" => ReceiptStatus::Skipped,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ReceiptStatus::Enroute => "enroute",
            ReceiptStatus::Delivered => "delivered",
            ReceiptStatus::Expired => "expired",
            ReceiptStatus::Deleted => "deleted",
            ReceiptStatus::Undeliverable => "undeliverable",
            ReceiptStatus::Accepted => "accepted",
            ReceiptStatus::Unknown => "unknown",
            ReceiptStatus::Rejected => "rejected",
            ReceiptStatus::Skipped => "skipped",
        }
    }

    pub fn from_db(text: &str) -> Option<ReceiptStatus> {
        ReceiptStatus::parse(text)
    }

    /// True when no later receipt will change the outcome of the part.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            ReceiptStatus::Enroute | ReceiptStatus::Accepted | ReceiptStatus::Unknown
        )
    }
}

/// One delivery receipt for one part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReceipt {
    pub connector: String,
    /// Normalised with [`normalise_message_id`].
    pub provider_message_id: String,
    pub status: ReceiptStatus,
    /// The receipt's `err:` value; `None` when absent or zero.
    pub error_code: Option<String>,
    /// The receipt as received, for support.
    pub raw: String,
}

/// Parses the de-facto standard SMPP receipt text (SMPP 3.4 appendix B):
/// `id:IIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm done date:YYMMDDhhmm stat:DDDDDDD err:E text:...`.
/// Returns (id, status, error code).
pub fn parse_receipt_text(text: &str) -> Option<(String, ReceiptStatus, Option<String>)> {
    let id = field(text, "id:")?;
    let status = ReceiptStatus::parse(&field(text, "stat:")?)?;
    let error = field(text, "err:").filter(|err| !err.trim_start_matches('0').is_empty());
    Some((normalise_message_id(&id), status, error))
}

/// The value after `key` (case-insensitive) up to the next space.
fn field(text: &str, key: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    // `id:` must start a word, or it would match inside another key.
    let start = lower
        .match_indices(key)
        .find(|(at, _)| *at == 0 || lower.as_bytes()[at - 1] == b' ')?
        .0
        + key.len();
    let value: String = text[start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    (!value.is_empty()).then_some(value)
}

/// Normalises a provider message id: trimmed, lower-case, leading zeros dropped (SMSCs pad ids in
/// receipts to 10 digits but not in submit_sm_resp, or the other way round).
pub fn normalise_message_id(id: &str) -> String {
    let id = id.trim().trim_end_matches('\0').to_ascii_lowercase();
    let trimmed = id.trim_start_matches('0');
    if trimmed.is_empty() && !id.is_empty() {
        "0".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// Every form under which a provider may report the same message id: as given, and converted
/// between hexadecimal and decimal (many SMSCs answer submit_sm with a hex id and put the decimal
/// value in the receipt, or the reverse). Sorted, so locks taken over the set never deadlock.
pub fn message_id_candidates(id: &str) -> Vec<String> {
    let id = normalise_message_id(id);
    let mut candidates = vec![id.clone()];
    if !id.is_empty() && id.len() <= 30 {
        if id.bytes().all(|b| b.is_ascii_digit())
            && let Ok(value) = id.parse::<u128>()
        {
            candidates.push(format!("{value:x}"));
        }
        if id.bytes().all(|b| b.is_ascii_hexdigit())
            && let Ok(value) = u128::from_str_radix(&id, 16)
        {
            candidates.push(value.to_string());
        }
    }
    candidates.sort();
    candidates.dedup();
    candidates
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_standard_receipt() {
        let text = "id:0000012345 sub:001 dlvrd:001 submit date:2611270212 done date:2611270213 stat:DELIVRD err:000 text:hello";
        let (id, status, error) = parse_receipt_text(text).unwrap();
        assert_eq!(
            (id.as_str(), status, error),
            ("12345", ReceiptStatus::Delivered, None)
        );
        let (_, status, error) = parse_receipt_text("id:AB12 stat:UNDELIV err:0B1").unwrap();
        assert_eq!(
            (status, error.as_deref()),
            (ReceiptStatus::Undeliverable, Some("0B1"))
        );
        assert!(parse_receipt_text("hello there").is_none());
        assert!(parse_receipt_text("id:1 stat:WHATEVER").is_none());
    }

    #[test]
    fn ids_match_across_hex_decimal_and_case() {
        assert_eq!(normalise_message_id(" 00AbC\0"), "abc");
        assert_eq!(normalise_message_id("000"), "0");
        let from_receipt = message_id_candidates("1234");
        let from_submit = message_id_candidates("4D2");
        assert!(from_receipt.contains(&"4d2".to_owned()));
        assert!(from_submit.contains(&"1234".to_owned()));
        assert!(message_id_candidates("msg-1").len() == 1);
    }
}
