//! The crate-wide error and the helper that makes user input safe to quote in a message.

use crate::{
    DomainNameError, EmailAddressError, IpNetworkError, PhoneNumberError, RegionError, TokenError,
};

/// Any validation failure of this crate, for callers that want a single error type.
///
/// Each variant wraps the error of one concern unchanged, so its message and `code()` are the
/// concern's own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// An email address was refused.
    #[error(transparent)]
    Email(#[from] EmailAddressError),
    /// A domain name was refused.
    #[error(transparent)]
    Domain(#[from] DomainNameError),
    /// An IP address or network was refused.
    #[error(transparent)]
    Ip(#[from] IpNetworkError),
    /// A phone number was refused.
    #[error(transparent)]
    Phone(#[from] PhoneNumberError),
    /// A region code was refused.
    #[error(transparent)]
    Region(#[from] RegionError),
    /// A verification token was refused.
    #[error(transparent)]
    Token(#[from] TokenError),
}

impl DomainError {
    /// Stable upper-case identifier of the failure (for example `EMAIL_MULTIPLE_AT`), suitable as
    /// the `reason` of an API error; the message may be reworded, the code never is.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Email(e) => e.code(),
            Self::Domain(e) => e.code(),
            Self::Ip(e) => e.code(),
            Self::Phone(e) => e.code(),
            Self::Region(e) => e.code(),
            Self::Token(e) => e.code(),
        }
    }
}

/// Longest piece of user input quoted in a message: a 300-character paste would otherwise bury
/// the explanation that follows it.
const SHOWN_MAX_CHARS: usize = 80;

/// Renders user input for quoting inside an error message: control characters are escaped so a
/// stray newline or escape sequence cannot break a log line or a terminal, and long input is cut.
pub(crate) fn shown(input: &str) -> String {
    let mut out = String::new();
    for (count, c) in input.chars().enumerate() {
        if count == SHOWN_MAX_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_escapes_control_characters() {
        assert_eq!(shown("a\nb\u{1b}"), "a\\nb\\u{1b}");
    }

    #[test]
    fn shown_cuts_long_input() {
        let long = "x".repeat(300);
        let s = shown(&long);
        assert_eq!(s.chars().count(), SHOWN_MAX_CHARS + 1);
        assert!(s.ends_with('…'));
    }

    #[test]
    fn umbrella_error_keeps_message_and_code() {
        let inner = crate::EmailAddress::parse("a@b@c").unwrap_err();
        let outer = DomainError::from(inner.clone());
        assert_eq!(outer.to_string(), inner.to_string());
        assert_eq!(outer.code(), "EMAIL_MULTIPLE_AT");
    }
}
