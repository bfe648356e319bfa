//! The value encoding: protobuf `CompiledSender`, the message `ResolveSender` returns.

use email2sms_proto::policy::v1::CompiledSender;
use prost::Message;

use crate::error::{Error, Result};

/// The bytes stored for `sender`.
pub fn encode(sender: &CompiledSender) -> Vec<u8> {
    sender.encode_to_vec()
}

/// The sender stored at `key` as `bytes`.
pub fn decode(key: &str, bytes: &[u8]) -> Result<CompiledSender> {
    CompiledSender::decode(bytes).map_err(|source| Error::Undecodable {
        key: key.to_owned(),
        source,
    })
}

/// Whether a stored value was compiled for the company `company_id` (public id); an absent or
/// undecodable value belongs to nobody.
pub fn belongs_to(value: Option<&[u8]>, company_id: &str) -> bool {
    value
        .and_then(|v| CompiledSender::decode(v).ok())
        .is_some_and(|s| s.company_id == company_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_round_trips_and_knows_its_company() {
        let sender = CompiledSender {
            matched_value: "example.com".into(),
            company_id: "company-1".into(),
            version: 7,
            ..CompiledSender::default()
        };
        let bytes = encode(&sender);
        assert_eq!(decode("k", &bytes).unwrap(), sender);
        assert!(belongs_to(Some(&bytes), "company-1"));
        assert!(!belongs_to(Some(&bytes), "company-2"));
        assert!(!belongs_to(None, "company-1"));
    }

    #[test]
    fn garbage_is_refused_naming_the_key() {
        // 0xff is a field number 31 varint tag with an unfinished varint.
        let error = decode("email2sms:policy:email:a@b.example", &[0xff]).unwrap_err();
        assert!(
            error.to_string().contains("policy:email:a@b.example"),
            "{error}"
        );
        assert!(!belongs_to(Some(&[0xff]), ""));
    }
}
