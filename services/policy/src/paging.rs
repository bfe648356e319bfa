//! Opaque page tokens for keyset pagination.
//!
//! A token carries the sort key of the last row returned and a fingerprint of the filters it was
//! issued for; a token presented with other filters is INVALID_ARGUMENT (the service conventions
//! say a token is only valid with the same filters). Keyset rather than OFFSET, so a page costs the
//! same at row 100,000 as at row 0 and rows inserted meanwhile do not shift later pages.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PageKey {
    /// The sort value of the last row (name, address, network or time).
    #[serde(rename = "k")]
    pub key: String,
    /// The id of the last row: the tie breaker that makes the order total.
    #[serde(rename = "i")]
    pub id: Uuid,
    #[serde(rename = "f")]
    filters: u64,
}

/// FNV-1a: stable across builds and processes (unlike `DefaultHasher`), so tokens survive a
/// restart or a rolling deploy.
fn fingerprint(filters: &str) -> u64 {
    filters.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Decodes `token` (empty = first page) issued for `filters`.
pub fn decode(token: &str, filters: &str) -> Result<Option<PageKey>> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || {
        Error::invalid(
            "page_token",
            "INVALID_PAGE_TOKEN",
            "page_token is not one this list returned; start again without it",
        )
    };
    let bytes = hex::decode(token).map_err(|_| invalid())?;
    let key: PageKey = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if key.filters != fingerprint(filters) {
        return Err(Error::invalid(
            "page_token",
            "PAGE_TOKEN_FILTER_MISMATCH",
            "page_token was issued for different filters; keep the filters while paging",
        ));
    }
    Ok(Some(key))
}

/// The token for the page after the row with sort value `key` and id `id`.
pub fn encode(key: String, id: Uuid, filters: &str) -> String {
    let token = PageKey {
        key,
        id,
        filters: fingerprint(filters),
    };
    hex::encode(serde_json::to_vec(&token).unwrap_or_default())
}

/// Trims a page fetched with `limit + 1` rows to `limit` and returns the next token.
pub fn finish<T>(
    mut rows: Vec<T>,
    limit: i64,
    filters: &str,
    key_of: impl Fn(&T) -> (String, Uuid),
) -> (Vec<T>, String) {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if rows.len() > limit {
        rows.truncate(limit);
        let (key, id) = rows.last().map(&key_of).unwrap_or_default();
        (rows, encode(key, id, filters))
    } else {
        (rows, String::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips_with_the_same_filters_only() {
        let id = Uuid::new_v4();
        let token = encode("a@example.com".into(), id, "policy=1");
        let key = decode(&token, "policy=1").unwrap().unwrap();
        assert_eq!((key.key.as_str(), key.id), ("a@example.com", id));
        assert!(decode(&token, "policy=2").is_err());
        assert!(decode("zz", "policy=1").is_err());
    }
}
