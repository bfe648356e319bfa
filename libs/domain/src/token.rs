//! Domain verification tokens.

use std::fmt;
use std::str::FromStr;

use rand::rngs::OsRng;
use rand::{CryptoRng, TryRngCore};

use crate::error::shown;

/// What precedes the token in the DNS TXT record that proves control of a domain.
pub const TXT_RECORD_PREFIX: &str = "email2sms-verification=";

/// Random bytes in a token: 128 bits, written as 32 hex characters.
const TOKEN_BYTES: usize = 16;
const TOKEN_CHARS: usize = TOKEN_BYTES * 2;

/// The secret a company publishes in DNS to prove it controls a domain: 32 lower-case hex
/// characters (128 random bits), published as the TXT record value
/// `email2sms-verification=<token>` (see [`VerificationToken::txt_value`]).
///
/// The token is not confidential once published, but it must be unpredictable, or someone could
/// publish the token of a domain they do not control before its owner is even asked to. Hence
/// [`VerificationToken::generate`] reads the operating system's CSPRNG directly.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VerificationToken(String);

/// Why a verification token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Nothing was entered.
    #[error("the verification token is empty; copy the 32-character token shown for the domain")]
    Empty,
    /// The whole TXT value was given instead of the token.
    #[error(
        "`{}` is the whole TXT record value; the token is only the 32 characters after the =",
        shown(.input)
    )]
    TxtValueGiven {
        /// The input as given.
        input: String,
    },
    /// Not 32 characters long.
    #[error(
        "`{}` is {len} characters long; a verification token is exactly 32 characters (0-9 and a-f), copy it again",
        shown(.input)
    )]
    WrongLength {
        /// The input as given.
        input: String,
        /// Its length in characters.
        len: usize,
    },
    /// A character that is not a hex digit.
    #[error(
        "`{}` contains `{}`; a verification token has only the digits 0-9 and letters a-f, copy it again",
        shown(.input), .character.escape_debug()
    )]
    NotHex {
        /// The input as given.
        input: String,
        /// The first character refused.
        character: char,
    },
}

impl TokenError {
    /// Stable upper-case identifier of the failure, suitable as the `reason` of an API error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Empty => "TOKEN_EMPTY",
            Self::TxtValueGiven { .. } => "TOKEN_TXT_VALUE_GIVEN",
            Self::WrongLength { .. } => "TOKEN_WRONG_LENGTH",
            Self::NotHex { .. } => "TOKEN_NOT_HEX",
        }
    }
}

impl VerificationToken {
    /// A new token from the operating system's CSPRNG (`getrandom`), used directly rather than
    /// through `rand::rng()`: that one is also a CSPRNG (ChaCha12 seeded and periodically reseeded
    /// from the OS), but holds state in user space that a `fork` would duplicate.
    ///
    /// # Panics
    /// If the operating system cannot supply random bytes, which on Linux happens only before the
    /// kernel's entropy pool is first initialised; there is no safe fallback for a secret.
    pub fn generate() -> Self {
        Self::generate_with(&mut OsRng.unwrap_err())
    }

    /// A new token from the given generator; the `CryptoRng` bound keeps predictable generators
    /// out. Meant for tests that need reproducible tokens from a seeded `StdRng`.
    pub fn generate_with<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; TOKEN_BYTES];
        rng.fill_bytes(&mut bytes);
        Self(hex::encode(bytes))
    }

    /// Accepts exactly 32 hex characters; upper case is accepted and lowered.
    pub fn parse(input: &str) -> Result<Self, TokenError> {
        if input.is_empty() {
            return Err(TokenError::Empty);
        }
        if input
            .get(..TXT_RECORD_PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(TXT_RECORD_PREFIX))
        {
            return Err(TokenError::TxtValueGiven {
                input: input.to_owned(),
            });
        }
        if let Some(character) = input.chars().find(|c| !c.is_ascii_hexdigit()) {
            return Err(TokenError::NotHex {
                input: input.to_owned(),
                character,
            });
        }
        if input.len() != TOKEN_CHARS {
            return Err(TokenError::WrongLength {
                input: input.to_owned(),
                len: input.chars().count(),
            });
        }
        Ok(Self(input.to_ascii_lowercase()))
    }

    /// The 32 lower-case hex characters.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The exact value of the TXT record to publish at the domain:
    /// `email2sms-verification=` followed by the token.
    pub fn txt_value(&self) -> String {
        format!("{TXT_RECORD_PREFIX}{}", self.0)
    }

    /// Whether a TXT record value found in DNS is this token's record. Surrounding whitespace is
    /// ignored and case is not significant, because DNS control panels and people's copy-paste
    /// change both; nothing else is forgiven.
    pub fn matches_txt(&self, txt: &str) -> bool {
        let txt = txt.trim();
        txt.len() == TXT_RECORD_PREFIX.len() + TOKEN_CHARS
            && txt
                .get(..TXT_RECORD_PREFIX.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(TXT_RECORD_PREFIX))
            && txt
                .get(TXT_RECORD_PREFIX.len()..)
                .is_some_and(|t| t.eq_ignore_ascii_case(&self.0))
    }
}

impl FromStr for VerificationToken {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for VerificationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for VerificationToken {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const T: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn generated_tokens_are_32_lower_hex_and_differ() {
        let a = VerificationToken::generate();
        let b = VerificationToken::generate();
        assert_eq!(a.as_str().len(), 32);
        assert!(
            a.as_str()
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        );
        assert_ne!(a, b);
    }

    #[test]
    fn seeded_generation_is_reproducible() {
        let a = VerificationToken::generate_with(&mut StdRng::seed_from_u64(7));
        let b = VerificationToken::generate_with(&mut StdRng::seed_from_u64(7));
        assert_eq!(a, b);
    }

    #[test]
    fn thread_rng_is_a_crypto_rng() {
        // Compile-time check of the claim in `generate`'s documentation.
        fn assert_crypto<R: CryptoRng>(_: &R) {}
        assert_crypto(&rand::rng());
    }

    #[test]
    fn parse_normalises_case() {
        let upper = T.to_ascii_uppercase();
        assert_eq!(VerificationToken::parse(&upper).unwrap().as_str(), T);
        assert_eq!(
            VerificationToken::parse(&upper).unwrap(),
            VerificationToken::parse(T).unwrap()
        );
    }

    #[test]
    fn parse_refusals() {
        let code = |s: &str| VerificationToken::parse(s).unwrap_err().code();
        assert_eq!(code(""), "TOKEN_EMPTY");
        assert_eq!(code(&T[..31]), "TOKEN_WRONG_LENGTH");
        assert_eq!(code(&format!("{T}0")), "TOKEN_WRONG_LENGTH");
        assert_eq!(code(&format!("{}g", &T[..31])), "TOKEN_NOT_HEX");
        assert_eq!(code(&format!(" {T}")), "TOKEN_NOT_HEX");
        assert_eq!(code(&format!("{}é", &T[..30])), "TOKEN_NOT_HEX");
        assert_eq!(
            code(&format!("email2sms-verification={T}")),
            "TOKEN_TXT_VALUE_GIVEN"
        );
    }

    #[test]
    fn txt_value_is_the_documented_format() {
        let t = VerificationToken::parse(T).unwrap();
        assert_eq!(
            t.txt_value(),
            "email2sms-verification=0123456789abcdef0123456789abcdef"
        );
        assert!(t.matches_txt(&t.txt_value()));
        assert!(t.matches_txt(&format!("  {}\n", t.txt_value().to_ascii_uppercase())));
        assert!(!t.matches_txt(T));
        assert!(!t.matches_txt(&format!("{}0", t.txt_value())));
        assert!(!t.matches_txt("email2sms-verification=ffffffffffffffffffffffffffffffff"));
        assert!(!t.matches_txt("v=spf1 -all"));
    }
}
