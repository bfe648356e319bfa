//! Opaque, tamper-evident page tokens: the one format of every List RPC that pages.
//!
//! A token is `base64url(version | id | sort | tag)` without padding, where `id` (16 bytes) and
//! `sort` (the rest) are the keyset position of the last row returned, and `tag` is the HMAC-SHA256
//! (32 bytes) over a domain label, the scope (the company id), the filters the token was
//! issued for, and the body. The scope and the filters are bound by the tag rather than written
//! into the token: a client learns nothing from a token (not even its own company's internal id),
//! and a token presented by another company, with other filters, altered in any byte, or minted
//! by another service or deployment (another key) fails the same one check.
//!
//! Sizes: a position of a 17-byte email address is 66 bytes, 88 characters; the hex-encoded
//! JSON it replaces was about 190 characters and carried the address in clear.
//!
//! The key is 32 random bytes in a one-row `page_token_key` table each service's migrations
//! create, so every replica shares it and it survives restarts and deploys without configuration;
//! [`PageTokenKey::load`] reads it once per process.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use sqlx::PgPool;
use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::grpc_error::Violation;

/// The first byte of every token: a new layout gets a new number, and older tokens are refused.
const VERSION: u8 = 1;
/// Bytes of the HMAC-SHA256 tag (kept whole: ring verifies whole tags in constant time).
const TAG_BYTES: usize = 32;
const ID_BYTES: usize = 16;
/// Longest token text decoded at all: the longest sort key we page by is an email address (254
/// bytes) or an IP network; 1,024 characters (768 bytes) leaves room and bounds the work a
/// stranger can ask for.
pub const MAX_TOKEN_CHARS: usize = 1024;
/// Shortest acceptable key: HMAC-SHA256 keys shorter than the hash output weaken it.
const MIN_KEY_BYTES: usize = 32;
/// Separates these MACs from any other use of the key.
const LABEL: &[u8] = b"email2sms page token\0";

/// The reason code of the field violation (for services that give reason codes).
pub const REASON: &str = "INVALID_PAGE_TOKEN";
/// What the client is told, whatever was wrong with the token.
pub const DESCRIPTION: &str =
    "page_token is not one this list returned for these filters; start again without a page_token";

/// Where the next page starts: the sort value and id of the last row of this page.
#[derive(Clone, PartialEq, Eq)]
pub struct Keyset {
    /// The tie breaker that makes the order total.
    pub id: Uuid,
    /// The sort value, encoded by the service (UTF-8 text, big-endian micros, ...).
    pub sort: Vec<u8>,
}

impl fmt::Debug for Keyset {
    // The sort value may be an email address: kept out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyset")
            .field("id", &self.id)
            .field("sort_bytes", &self.sort.len())
            .finish()
    }
}

/// A page token that is not one this list issued for this company and these filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{DESCRIPTION}")]
pub struct InvalidPageToken;

impl InvalidPageToken {
    /// The BadRequest field violation every service answers with.
    pub fn violation(self) -> Violation {
        Violation::new("page_token", REASON, DESCRIPTION)
    }
}

/// Loading the key failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the page token key: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the page token key is {0} bytes; at least {MIN_KEY_BYTES} are needed")]
    TooShort(usize),
}

/// The service's HMAC key for page tokens.
#[derive(Clone)]
pub struct PageTokenKey(hmac::Key);

impl fmt::Debug for PageTokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PageTokenKey(..)")
    }
}

impl PageTokenKey {
    /// A key from its raw bytes (at least 32).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.len() < MIN_KEY_BYTES {
            return Err(KeyError::TooShort(bytes.len()));
        }
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, bytes)))
    }

    /// Reads the key from the one-row `page_token_key` table of the pool's schema.
    pub async fn load(pool: &PgPool) -> Result<Self, KeyError> {
        let (key,): (Vec<u8>,) = sqlx::query_as("SELECT key FROM page_token_key WHERE only_row")
            .fetch_one(pool)
            .await?;
        Self::from_bytes(&key)
    }

    /// What the tag covers. Length-prefixed filters, so no filters/body split can collide with
    /// another.
    fn signed(scope: Uuid, filters: &[u8], body: &[u8]) -> Vec<u8> {
        let mut signed = Vec::with_capacity(LABEL.len() + 16 + 8 + filters.len() + body.len());
        signed.extend_from_slice(LABEL);
        signed.extend_from_slice(scope.as_bytes());
        signed.extend_from_slice(
            &u64::try_from(filters.len())
                .unwrap_or(u64::MAX)
                .to_be_bytes(),
        );
        signed.extend_from_slice(filters);
        signed.extend_from_slice(body);
        signed
    }

    /// The token for the page after `position`, valid only for `scope` and `filters`.
    pub fn seal(&self, scope: Uuid, filters: &[u8], position: &Keyset) -> String {
        let mut bytes = Vec::with_capacity(1 + ID_BYTES + position.sort.len() + TAG_BYTES);
        bytes.push(VERSION);
        bytes.extend_from_slice(position.id.as_bytes());
        bytes.extend_from_slice(&position.sort);
        let tag = hmac::sign(&self.0, &Self::signed(scope, filters, &bytes));
        bytes.extend_from_slice(tag.as_ref());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The position in `token` (`None` for an empty token: the first page), if this key issued it
    /// for `scope` and `filters`.
    pub fn open(
        &self,
        scope: Uuid,
        filters: &[u8],
        token: &str,
    ) -> Result<Option<Keyset>, InvalidPageToken> {
        if token.is_empty() {
            return Ok(None);
        }
        if token.len() > MAX_TOKEN_CHARS {
            return Err(InvalidPageToken);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| InvalidPageToken)?;
        if bytes.len() < 1 + ID_BYTES + TAG_BYTES || bytes[0] != VERSION {
            return Err(InvalidPageToken);
        }
        let (body, tag) = bytes.split_at(bytes.len() - TAG_BYTES);
        // Compares in constant time, so a tag cannot be found byte by byte from response times.
        hmac::verify(&self.0, &Self::signed(scope, filters, body), tag)
            .map_err(|_| InvalidPageToken)?;
        let id = Uuid::from_slice(&body[1..=ID_BYTES]).map_err(|_| InvalidPageToken)?;
        Ok(Some(Keyset {
            id,
            sort: body[1 + ID_BYTES..].to_vec(),
        }))
    }
}

/// The key of a service, read from its database on first use and kept for the life of the
/// process (cloning shares it).
#[derive(Debug, Clone, Default)]
pub struct PageTokenKeyCell(std::sync::Arc<OnceCell<PageTokenKey>>);

impl PageTokenKeyCell {
    /// The key, read from `pool` the first time.
    pub async fn get(&self, pool: &PgPool) -> Result<&PageTokenKey, KeyError> {
        self.0.get_or_try_init(|| PageTokenKey::load(pool)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> PageTokenKey {
        PageTokenKey::from_bytes(&[byte; 32]).unwrap()
    }

    fn position() -> Keyset {
        Keyset {
            id: Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
            sort: b"alice@example.com".to_vec(),
        }
    }

    const COMPANY: Uuid = Uuid::from_u128(1);

    #[test]
    fn a_token_round_trips_and_is_compact_url_safe_text() {
        let token = key(7).seal(COMPANY, b"policy=1", &position());
        assert_eq!(
            key(7).open(COMPANY, b"policy=1", &token),
            Ok(Some(position()))
        );
        // 1 + 16 + 17 + 32 bytes = 66, 88 characters of base64url without padding.
        assert_eq!(token.len(), 88);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert!(!token.contains("alice"));
    }

    #[test]
    fn an_empty_token_is_the_first_page() {
        assert_eq!(key(7).open(COMPANY, b"", ""), Ok(None));
    }

    #[test]
    fn every_flipped_bit_of_every_byte_is_refused() {
        let token = key(7).seal(COMPANY, b"f", &position());
        let bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        for index in 0..bytes.len() {
            for bit in 0..8 {
                let mut altered = bytes.clone();
                altered[index] ^= 1 << bit;
                let altered = URL_SAFE_NO_PAD.encode(altered);
                assert_eq!(
                    key(7).open(COMPANY, b"f", &altered),
                    Err(InvalidPageToken),
                    "byte {index} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn truncated_extended_and_garbage_tokens_are_refused() {
        let token = key(7).seal(COMPANY, b"f", &position());
        for bad in [
            &token[..token.len() - 1],
            &token[..10],
            &format!("{token}A"),
            "not base64!",
            "AA",
            &"A".repeat(MAX_TOKEN_CHARS + 4),
        ] {
            assert_eq!(
                key(7).open(COMPANY, b"f", bad),
                Err(InvalidPageToken),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_token_for_other_filters_is_refused() {
        let token = key(7).seal(COMPANY, b"policy=1", &position());
        assert_eq!(
            key(7).open(COMPANY, b"policy=2", &token),
            Err(InvalidPageToken)
        );
        assert_eq!(key(7).open(COMPANY, b"", &token), Err(InvalidPageToken));
    }

    #[test]
    fn a_token_issued_to_another_company_is_refused() {
        let token = key(7).seal(COMPANY, b"f", &position());
        assert_eq!(
            key(7).open(Uuid::from_u128(2), b"f", &token),
            Err(InvalidPageToken)
        );
    }

    #[test]
    fn a_token_from_another_key_is_refused() {
        let token = key(7).seal(COMPANY, b"f", &position());
        assert_eq!(key(8).open(COMPANY, b"f", &token), Err(InvalidPageToken));
    }

    #[test]
    fn a_short_key_is_refused() {
        assert!(matches!(
            PageTokenKey::from_bytes(&[0; 16]),
            Err(KeyError::TooShort(16))
        ));
    }

    #[test]
    fn the_violation_tells_the_client_to_start_again() {
        let violation = InvalidPageToken.violation();
        assert_eq!(violation.field, "page_token");
        assert!(
            violation
                .description
                .contains("start again without a page_token")
        );
    }
}
