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
    /// Every status, as the schema's CHECK constraints list them.
    pub const ALL: [ReceiptStatus; 9] = [
        ReceiptStatus::Enroute,
        ReceiptStatus::Delivered,
        ReceiptStatus::Expired,
        ReceiptStatus::Deleted,
        ReceiptStatus::Undeliverable,
        ReceiptStatus::Accepted,
        ReceiptStatus::Unknown,
        ReceiptStatus::Rejected,
        ReceiptStatus::Skipped,
    ];

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
    /// Under which forms of `provider_message_id` the part may have been recorded.
    pub id_forms: IdForms,
}

/// Under which forms a receipt's message id may name the id a submit was answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdForms {
    /// Only as given: the connector knows how its SMSC writes ids (and converted it already).
    AsGiven,
    /// As given, or as the same number in the other base when the two forms cannot be confused
    /// (see [`message_id_forms`]).
    EitherBase,
}

impl IdForms {
    /// The ids a part of this receipt may have been recorded under.
    pub fn of(self, id: &str) -> Vec<String> {
        match self {
            IdForms::AsGiven => vec![normalise_message_id(id)],
            IdForms::EitherBase => message_id_forms(id),
        }
    }
}

/// How an SMSC writes, in its delivery receipts, the message id its submit_sm_resp gave (SMPP
/// 3.4 leaves the receipt text to the SMSC): the SMPP connector's `receipt_ids` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptIds {
    /// Unknown: the id as given, or the same number in the other base where that cannot be taken
    /// for another message's id ([`message_id_forms`]).
    Auto,
    /// The same string.
    Same,
    /// submit_sm_resp gave a hexadecimal id, the receipt has its decimal value.
    Decimal,
    /// submit_sm_resp gave a decimal id, the receipt has its hexadecimal value.
    Hex,
}

impl ReceiptIds {
    pub fn parse(text: &str) -> Option<ReceiptIds> {
        Some(match text {
            "auto" => ReceiptIds::Auto,
            "same" => ReceiptIds::Same,
            "decimal" => ReceiptIds::Decimal,
            "hex" => ReceiptIds::Hex,
            _ => return None,
        })
    }

    /// The forms under which dispatch matches the ids this gives.
    pub fn id_forms(self) -> IdForms {
        match self {
            ReceiptIds::Auto => IdForms::EitherBase,
            ReceiptIds::Same | ReceiptIds::Decimal | ReceiptIds::Hex => IdForms::AsGiven,
        }
    }

    /// The receipt's (normalised) id in the form submit_sm_resp gave it. An id that is not a
    /// number in the expected base is kept as it is (it then matches only itself).
    pub fn submit_form(self, id: &str) -> String {
        let id = normalise_message_id(id);
        let converted = match self {
            ReceiptIds::Auto | ReceiptIds::Same => None,
            ReceiptIds::Decimal => id
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| id.parse::<u128>().ok())
                .flatten()
                .map(|value| format!("{value:x}")),
            ReceiptIds::Hex => u128::from_str_radix(&id, 16)
                .ok()
                .filter(|_| id.bytes().all(|b| b.is_ascii_hexdigit()))
                .map(|value| value.to_string()),
        };
        converted.unwrap_or(id)
    }
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

/// Every form under which a provider may report the same message id when how it writes ids is not
/// known: as given, and converted between hexadecimal and decimal (many SMSCs answer submit_sm
/// with a hex id and put the decimal value in the receipt, or the reverse) only where the two
/// forms cannot be confused: a digits-only id stands for a hex id with a letter in it, and an id
/// with a hex letter for a decimal one. Digits-only ids are never converted into other digits-only
/// ids: an SMSC numbering its messages 1, 2, 3… in decimal would otherwise see its receipt for
/// "16" taken for message "10" (0x10) or "22" (0x16), which left 32 of 200 jobs without their
/// receipt in the npm SMSC test. The relation is symmetric: `a` is among the forms of `b` exactly
/// when `b` is among those of `a`. Sorted, so locks taken over the set never deadlock.
pub fn message_id_forms(id: &str) -> Vec<String> {
    let id = normalise_message_id(id);
    let mut forms = vec![id.clone()];
    if !id.is_empty() && id.len() <= 30 {
        if id.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(value) = id.parse::<u128>() {
                let hex = format!("{value:x}");
                if hex.bytes().any(|b| b.is_ascii_alphabetic()) {
                    forms.push(hex);
                }
            }
        } else if id.bytes().all(|b| b.is_ascii_hexdigit())
            && let Ok(value) = u128::from_str_radix(&id, 16)
        {
            forms.push(value.to_string());
        }
    }
    forms.sort();
    forms.dedup();
    forms
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
        let from_receipt = message_id_forms("1234");
        let from_submit = message_id_forms("4D2");
        assert!(from_receipt.contains(&"4d2".to_owned()));
        assert!(from_submit.contains(&"1234".to_owned()));
        assert!(message_id_forms("msg-1").len() == 1);
    }

    #[test]
    fn digits_only_ids_are_never_taken_for_other_digits_only_ids() {
        // 16 is 0x10 and 0x16 is 22: with decimal message ids these are three messages.
        assert_eq!(message_id_forms("16"), vec!["16".to_owned()]);
        assert_eq!(message_id_forms("10"), vec!["10", "a"]);
        assert_eq!(message_id_forms("x1"), vec!["x1"]);
        // Symmetric over a range of both kinds of id.
        let ids: Vec<String> = (0..600u32)
            .flat_map(|n| [n.to_string(), format!("{n:x}")])
            .collect();
        for a in &ids {
            for b in message_id_forms(a) {
                assert!(message_id_forms(&b).contains(a), "{a} ~ {b}");
            }
        }
    }

    #[test]
    fn receipt_ids_in_the_submit_form() {
        assert_eq!(ReceiptIds::Decimal.submit_form("0001000000"), "f4240");
        assert_eq!(ReceiptIds::Decimal.submit_form("16"), "10");
        assert_eq!(ReceiptIds::Hex.submit_form("F4240"), "1000000");
        assert_eq!(ReceiptIds::Hex.submit_form("10"), "16");
        assert_eq!(ReceiptIds::Same.submit_form("0010"), "10");
        // Not a number in the expected base: kept, so it matches only itself.
        assert_eq!(ReceiptIds::Decimal.submit_form("ab-1"), "ab-1");
        assert_eq!(ReceiptIds::Hex.submit_form("xyz"), "xyz");
        assert_eq!(IdForms::AsGiven.of("16"), vec!["16".to_owned()]);
    }
}
