//! Sender email addresses.

use std::fmt;
use std::str::FromStr;

use crate::error::shown;
use crate::{DomainName, DomainNameError};

/// Longest local part (before the `@`) in octets (RFC 5321 §4.5.3.1.1).
pub const MAX_LOCAL_PART_LEN: usize = 64;
/// Longest address in octets: the RFC 5321 path limit of 256 less the angle brackets.
pub const MAX_EMAIL_LEN: usize = 254;

/// One bare email address such as `bob@example.com`, in canonical form.
///
/// Normalisation: the whole address is lower-cased, because the product matches addresses
/// case-insensitively (RFC 5321 lets a server treat local parts case-sensitively, but no mail
/// system in use does, and people type `Bob@Example.com` and `bob@example.com` for the same
/// person). The domain goes through [`DomainName`] and so is in IDNA ASCII form.
///
/// Only the plain `local@domain` form is accepted: display names (`Bob <bob@x.com>`), comments,
/// quoted local parts, whitespace and control characters are refused with a message saying so.
/// The local part is an RFC 5322 dot-atom of ASCII characters; internationalised local parts
/// (RFC 6531) are refused because lower-casing them is not well defined and the mail path does not
/// negotiate SMTPUTF8.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmailAddress {
    // The full canonical text, so `as_str` costs nothing; `at` is the index of the `@` in it.
    full: String,
    at: usize,
    domain: DomainName,
}

/// Why an email address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EmailAddressError {
    /// Nothing was entered.
    #[error("the email address is empty; enter an address like name@example.com")]
    Empty,
    /// The input contains `<` or `>`, as in `Bob <bob@x.com>`.
    #[error(
        "`{}` includes a name or angle brackets; enter only the address itself, like {}",
        shown(.input), .suggestion.as_deref().map(shown).unwrap_or_else(|| "name@example.com".to_owned())
    )]
    DisplayName {
        /// The input as given.
        input: String,
        /// The text between the angle brackets, when there is one to suggest.
        suggestion: Option<String>,
    },
    /// The input contains a parenthesised comment.
    #[error(
        "`{}` contains brackets ( ); comments are not accepted in an email address, enter only the address, like name@example.com",
        shown(.input)
    )]
    Comment {
        /// The input as given.
        input: String,
    },
    /// The local part is a quoted string.
    #[error(
        "`{}` contains quotation marks; quoted email addresses are not accepted, enter the address without quotes, like name@example.com",
        shown(.input)
    )]
    QuotedLocalPart {
        /// The input as given.
        input: String,
    },
    /// The input contains a space, tab or line break.
    #[error(
        "`{}` contains a space or line break; an email address has no spaces, like name@example.com",
        shown(.input)
    )]
    Whitespace {
        /// The input as given.
        input: String,
    },
    /// The input contains an invisible control character.
    #[error(
        "`{}` contains an invisible control character; type the address again, like name@example.com",
        shown(.input)
    )]
    ControlCharacter {
        /// The input as given.
        input: String,
    },
    /// There is no `@`.
    #[error(
        "`{}` has no @; an email address has exactly one @, like name@example.com",
        shown(.input)
    )]
    MissingAt {
        /// The input as given.
        input: String,
    },
    /// There is more than one `@`.
    #[error(
        "`{}` has more than one @; an email address has exactly one @, like name@example.com",
        shown(.input)
    )]
    MultipleAt {
        /// The input as given.
        input: String,
    },
    /// Nothing before the `@`.
    #[error(
        "`{}` has nothing before the @; add the name part, like name@example.com",
        shown(.input)
    )]
    MissingLocalPart {
        /// The input as given.
        input: String,
    },
    /// Nothing after the `@`.
    #[error(
        "`{}` has nothing after the @; add the domain, like name@example.com",
        shown(.input)
    )]
    MissingDomain {
        /// The input as given.
        input: String,
    },
    /// The part before the `@` is over 64 octets.
    #[error(
        "`{}` has {len} characters before the @; email addresses allow at most 64 there",
        shown(.input)
    )]
    LocalPartTooLong {
        /// The input as given.
        input: String,
        /// Octets before the `@`.
        len: usize,
    },
    /// A dot at the start or end of the local part, or two dots in a row.
    #[error(
        "`{}` has a dot at the start or end of the part before the @, or two dots in a row; write it like first.last@example.com",
        shown(.input)
    )]
    LocalPartDots {
        /// The input as given.
        input: String,
    },
    /// A character not allowed before the `@`.
    #[error(
        "`{}` contains `{}` before the @, which email addresses here cannot use; use letters a-z, digits and . _ - + ' only, like first.last@example.com",
        shown(.input), .character.escape_debug()
    )]
    InvalidLocalCharacter {
        /// The input as given.
        input: String,
        /// The first character refused.
        character: char,
    },
    /// The part after the `@` is not a valid domain.
    // Deliberately not a `source`: the message already includes it, and a chain printer would
    // otherwise show it twice.
    #[error("`{}`: the part after the @ is not valid: {domain_error}", shown(.input))]
    Domain {
        /// The input as given.
        input: String,
        /// What is wrong with the domain.
        domain_error: DomainNameError,
    },
    /// The whole address is over 254 octets.
    #[error(
        "`{}` is {len} characters long; an email address can be at most 254",
        shown(.input)
    )]
    TooLong {
        /// The input as given.
        input: String,
        /// Octets of the normalised address.
        len: usize,
    },
}

impl EmailAddressError {
    /// Stable upper-case identifier of the failure, suitable as the `reason` of an API error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Empty => "EMAIL_EMPTY",
            Self::DisplayName { .. } => "EMAIL_DISPLAY_NAME",
            Self::Comment { .. } => "EMAIL_COMMENT",
            Self::QuotedLocalPart { .. } => "EMAIL_QUOTED_LOCAL_PART",
            Self::Whitespace { .. } => "EMAIL_WHITESPACE",
            Self::ControlCharacter { .. } => "EMAIL_CONTROL_CHARACTER",
            Self::MissingAt { .. } => "EMAIL_MISSING_AT",
            Self::MultipleAt { .. } => "EMAIL_MULTIPLE_AT",
            Self::MissingLocalPart { .. } => "EMAIL_MISSING_LOCAL_PART",
            Self::MissingDomain { .. } => "EMAIL_MISSING_DOMAIN",
            Self::LocalPartTooLong { .. } => "EMAIL_LOCAL_PART_TOO_LONG",
            Self::LocalPartDots { .. } => "EMAIL_LOCAL_PART_DOTS",
            Self::InvalidLocalCharacter { .. } => "EMAIL_INVALID_LOCAL_CHARACTER",
            Self::Domain { .. } => "EMAIL_INVALID_DOMAIN",
            Self::TooLong { .. } => "EMAIL_TOO_LONG",
        }
    }
}

/// RFC 5322 `atext`: what a dot-atom local part may contain besides dots.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c)
}

impl EmailAddress {
    /// Validates and normalises an email address; see the type's documentation for the rules.
    pub fn parse(input: &str) -> Result<Self, EmailAddressError> {
        let owned = || input.to_owned();
        if input.is_empty() {
            return Err(EmailAddressError::Empty);
        }
        // Display names and comments contain spaces, so they are recognised before whitespace to
        // give the message that actually helps.
        if input.contains(['<', '>']) {
            let suggestion = input
                .split_once('<')
                .and_then(|(_, rest)| rest.split_once('>'))
                .map(|(inner, _)| inner.trim().to_owned())
                .filter(|inner| !inner.is_empty() && inner != input);
            return Err(EmailAddressError::DisplayName {
                input: owned(),
                suggestion,
            });
        }
        if input.contains(['(', ')']) {
            return Err(EmailAddressError::Comment { input: owned() });
        }
        if input.contains('"') {
            return Err(EmailAddressError::QuotedLocalPart { input: owned() });
        }
        for c in input.chars() {
            if c.is_whitespace() {
                return Err(EmailAddressError::Whitespace { input: owned() });
            }
            if c.is_control() {
                return Err(EmailAddressError::ControlCharacter { input: owned() });
            }
        }
        let Some((local, domain)) = input.split_once('@') else {
            return Err(EmailAddressError::MissingAt { input: owned() });
        };
        if domain.contains('@') {
            return Err(EmailAddressError::MultipleAt { input: owned() });
        }
        if local.is_empty() {
            return Err(EmailAddressError::MissingLocalPart { input: owned() });
        }
        if domain.is_empty() {
            return Err(EmailAddressError::MissingDomain { input: owned() });
        }
        if local.len() > MAX_LOCAL_PART_LEN {
            return Err(EmailAddressError::LocalPartTooLong {
                input: owned(),
                len: local.len(),
            });
        }
        if let Some(character) = local.chars().find(|&c| c != '.' && !is_atext(c)) {
            return Err(EmailAddressError::InvalidLocalCharacter {
                input: owned(),
                character,
            });
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(EmailAddressError::LocalPartDots { input: owned() });
        }
        let domain =
            DomainName::parse(domain).map_err(|domain_error| EmailAddressError::Domain {
                input: owned(),
                domain_error,
            })?;

        let local = local.to_ascii_lowercase();
        let full = format!("{local}@{domain}");
        if full.len() > MAX_EMAIL_LEN {
            return Err(EmailAddressError::TooLong {
                input: owned(),
                len: full.len(),
            });
        }
        Ok(Self {
            at: local.len(),
            full,
            domain,
        })
    }

    /// The canonical address, for example `bob@example.com`.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The lower-cased part before the `@`.
    pub fn local_part(&self) -> &str {
        &self.full[..self.at]
    }

    /// The domain after the `@`.
    pub fn domain(&self) -> &DomainName {
        &self.domain
    }
}

impl FromStr for EmailAddress {
    type Err = EmailAddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl AsRef<str> for EmailAddress {
    fn as_ref(&self) -> &str {
        &self.full
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> String {
        EmailAddress::parse(s)
            .unwrap_or_else(|e| panic!("{s:?} refused: {e}"))
            .to_string()
    }

    fn err(s: &str) -> EmailAddressError {
        match EmailAddress::parse(s) {
            Ok(e) => panic!("{s:?} accepted as {e}"),
            Err(e) => e,
        }
    }

    fn code(s: &str) -> &'static str {
        err(s).code()
    }

    #[test]
    fn lower_cases_the_whole_address() {
        assert_eq!(ok("Bob.Smith@Example.COM"), "bob.smith@example.com");
        let e = EmailAddress::parse("Bob+sms@Example.com.").unwrap();
        assert_eq!(e.local_part(), "bob+sms");
        assert_eq!(e.domain().as_str(), "example.com");
        assert_eq!(e.as_str(), "bob+sms@example.com");
    }

    #[test]
    fn idn_domain_becomes_ascii() {
        assert_eq!(ok("info@Bücher.example"), "info@xn--bcher-kva.example");
        assert_ne!(
            EmailAddress::parse("bob@ex\u{0430}mple.com").unwrap(),
            EmailAddress::parse("bob@example.com").unwrap()
        );
    }

    #[test]
    fn more_than_one_at() {
        assert_eq!(code("a@b@c"), "EMAIL_MULTIPLE_AT");
        let msg = err("bob@x@y.com").to_string();
        assert_eq!(
            msg,
            "`bob@x@y.com` has more than one @; an email address has exactly one @, like name@example.com"
        );
    }

    #[test]
    fn missing_parts() {
        assert_eq!(code(""), "EMAIL_EMPTY");
        assert_eq!(code("bob.example.com"), "EMAIL_MISSING_AT");
        assert_eq!(code("@example.com"), "EMAIL_MISSING_LOCAL_PART");
        assert_eq!(code("bob@"), "EMAIL_MISSING_DOMAIN");
        assert_eq!(code("@"), "EMAIL_MISSING_LOCAL_PART");
    }

    #[test]
    fn display_names_are_refused_with_the_address_suggested() {
        let e = err("Bob <bob@x.com>");
        assert_eq!(e.code(), "EMAIL_DISPLAY_NAME");
        assert!(e.to_string().ends_with("like bob@x.com"), "{e}");
        assert_eq!(code("\"Bob Smith\" <bob@x.com>"), "EMAIL_DISPLAY_NAME");
        assert_eq!(code("<bob@x.com>"), "EMAIL_DISPLAY_NAME");
        assert!(err("<>").to_string().ends_with("like name@example.com"));
    }

    #[test]
    fn comments_are_refused() {
        assert_eq!(code("bob(work)@x.com"), "EMAIL_COMMENT");
        assert_eq!(code("bob@x.com (Bob)"), "EMAIL_COMMENT");
    }

    #[test]
    fn quoted_local_parts_are_refused() {
        assert_eq!(code("\"bob smith\"@x.com"), "EMAIL_QUOTED_LOCAL_PART");
        assert_eq!(code("\"bob\"@x.com"), "EMAIL_QUOTED_LOCAL_PART");
        assert!(err("\"a b\"@x.com").to_string().contains("quot"));
    }

    #[test]
    fn whitespace_anywhere_is_refused() {
        assert_eq!(code(" bob@x.com"), "EMAIL_WHITESPACE");
        assert_eq!(code("bob@x.com "), "EMAIL_WHITESPACE");
        assert_eq!(code("bob @x.com"), "EMAIL_WHITESPACE");
        assert_eq!(code("bob@x.com\n"), "EMAIL_WHITESPACE");
        assert_eq!(code("bob@x.com\u{a0}"), "EMAIL_WHITESPACE");
        assert_eq!(code("bob\u{7}@x.com"), "EMAIL_CONTROL_CHARACTER");
        assert_eq!(code("bob@x.com\u{0}"), "EMAIL_CONTROL_CHARACTER");
    }

    #[test]
    fn local_part_length() {
        let l64 = "a".repeat(64);
        assert_eq!(ok(&format!("{l64}@x.com")), format!("{l64}@x.com"));
        assert_eq!(
            code(&format!("{}@x.com", "a".repeat(65))),
            "EMAIL_LOCAL_PART_TOO_LONG"
        );
        let e = err(&format!("{}@example.com", "a".repeat(300)));
        assert_eq!(e.code(), "EMAIL_LOCAL_PART_TOO_LONG");
        assert!(e.to_string().contains("300 characters"), "{e}");
        // The message quotes a shortened input, not all 300 characters.
        assert!(e.to_string().len() < 250, "{e}");
    }

    #[test]
    fn total_length_is_the_rfc5321_path_limit() {
        let local = "a".repeat(64);
        // 64 + 1 + 189 = 254
        let domain189 = format!("{}.{}.{}", "b".repeat(63), "c".repeat(63), "d".repeat(61));
        assert_eq!(domain189.len(), 189);
        assert_eq!(ok(&format!("{local}@{domain189}")).len(), 254);
        let domain190 = format!("{}.{}.{}", "b".repeat(63), "c".repeat(63), "d".repeat(62));
        assert_eq!(code(&format!("{local}@{domain190}")), "EMAIL_TOO_LONG");
    }

    #[test]
    fn domain_rules_apply_after_the_at() {
        let e = err("bob@localhost");
        assert_eq!(e.code(), "EMAIL_INVALID_DOMAIN");
        assert!(matches!(
            e,
            EmailAddressError::Domain {
                domain_error: DomainNameError::SingleLabel { .. },
                ..
            }
        ));
        assert_eq!(code("bob@[192.0.2.1]"), "EMAIL_INVALID_DOMAIN");
        assert_eq!(code("bob@*.example.com"), "EMAIL_INVALID_DOMAIN");
        assert_eq!(code("bob@example..com"), "EMAIL_INVALID_DOMAIN");
        assert_eq!(
            code(&format!("bob@{}.com", "a".repeat(64))),
            "EMAIL_INVALID_DOMAIN"
        );
    }

    #[test]
    fn dots_in_the_local_part() {
        assert_eq!(ok("first.last@x.com"), "first.last@x.com");
        assert_eq!(code(".bob@x.com"), "EMAIL_LOCAL_PART_DOTS");
        assert_eq!(code("bob.@x.com"), "EMAIL_LOCAL_PART_DOTS");
        assert_eq!(code("bo..b@x.com"), "EMAIL_LOCAL_PART_DOTS");
    }

    #[test]
    fn local_part_characters() {
        assert_eq!(ok("o'brien@x.com"), "o'brien@x.com");
        assert_eq!(
            ok("a!#$%&'*+-/=?^_`{|}~z@x.com"),
            "a!#$%&'*+-/=?^_`{|}~z@x.com"
        );
        assert_eq!(code("bob,smith@x.com"), "EMAIL_INVALID_LOCAL_CHARACTER");
        assert_eq!(code("bob\\@x.com"), "EMAIL_INVALID_LOCAL_CHARACTER");
        assert_eq!(code("josé@x.com"), "EMAIL_INVALID_LOCAL_CHARACTER");
        assert_eq!(code("bob;x@x.com"), "EMAIL_INVALID_LOCAL_CHARACTER");
    }
}
