//! Sender domain names.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};

use crate::error::shown;

/// Longest domain name in octets, without a trailing dot (RFC 1035: 255 octets on the wire).
pub const MAX_DOMAIN_LEN: usize = 253;
/// Longest label (the text between two dots) in octets (RFC 1035).
pub const MAX_LABEL_LEN: usize = 63;

/// A registrable sender domain such as `example.com`, in IDNA ASCII form.
///
/// Normalisation: UTS 46 mapping and Punycode (`Bücher.example` → `xn--bcher-kva.example`),
/// lower case, and one trailing dot removed (`Example.COM.` equals `example.com`).
///
/// Refused: wildcards, IP literals, empty labels, labels over 63 octets, names over 253 octets,
/// anything but letters, digits and hyphens in a label, a hyphen at either end of a label, a
/// numeric top-level label, and single-label names such as `localhost` or `com`.
///
/// Matching is exact: see [`DomainName::covers_exactly`]. Look-alike Unicode names (IDN homographs) are not
/// folded together: `exаmple.com` with a Cyrillic `а` becomes a different `xn--` name and never
/// equals `example.com`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainName(String);

/// Why a domain name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DomainNameError {
    /// Nothing was entered.
    #[error("the domain is empty; enter a domain name like example.com")]
    Empty,
    /// The input contains a space, tab or line break.
    #[error(
        "`{}` contains a space or line break; a domain name is written without spaces, like example.com",
        shown(.input)
    )]
    Whitespace {
        /// The input as given.
        input: String,
    },
    /// The input contains an invisible control character.
    #[error(
        "`{}` contains an invisible control character; type the domain name again, like example.com",
        shown(.input)
    )]
    ControlCharacter {
        /// The input as given.
        input: String,
    },
    /// The input is a web address rather than a domain.
    #[error(
        "`{}` is a web address; enter only the domain name, like example.com",
        shown(.input)
    )]
    LooksLikeUrl {
        /// The input as given.
        input: String,
    },
    /// The input is an email address rather than a domain.
    #[error(
        "`{}` contains an @; enter only the domain, the part after the @, like example.com",
        shown(.input)
    )]
    ContainsAt {
        /// The input as given.
        input: String,
    },
    /// The input contains a `*` wildcard.
    #[error(
        "`{}` contains a wildcard (*); wildcards are not supported: add each domain exactly, like example.com and sales.example.com",
        shown(.input)
    )]
    Wildcard {
        /// The input as given.
        input: String,
    },
    /// The input is an IP address, not a name.
    #[error(
        "`{}` is an IP address, not a domain name; add it as an IP address instead, or enter a domain like example.com",
        shown(.input)
    )]
    IpLiteral {
        /// The input as given.
        input: String,
    },
    /// IDNA processing (UTS 46) refused the input.
    #[error(
        "`{}` contains characters that are not allowed in a domain name; check the spelling, like example.com",
        shown(.input)
    )]
    Idna {
        /// The input as given.
        input: String,
    },
    /// More than one dot at the end, which would be ambiguous.
    #[error(
        "`{}` ends with more than one dot; remove the dots at the end, like example.com",
        shown(.input)
    )]
    TrailingDots {
        /// The input as given.
        input: String,
    },
    /// Two dots in a row, or a dot at the start.
    #[error(
        "`{}` has an empty part (two dots in a row, or a dot at the start); write it like example.com",
        shown(.input)
    )]
    EmptyLabel {
        /// The input as given.
        input: String,
    },
    /// A label is longer than 63 octets.
    #[error(
        "`{}` has a part between dots that is {len} characters long (`{}`); each part can be at most 63",
        shown(.input), shown(.label)
    )]
    LabelTooLong {
        /// The input as given.
        input: String,
        /// The offending label, in ASCII form.
        label: String,
        /// Its length in octets.
        len: usize,
    },
    /// The whole name is longer than 253 octets.
    #[error(
        "`{}` is {len} characters long; a domain name can be at most 253",
        shown(.input)
    )]
    TooLong {
        /// The input as given.
        input: String,
        /// Its length in octets, in ASCII form.
        len: usize,
    },
    /// A character other than a letter, digit, hyphen or dot.
    #[error(
        "`{}` contains `{}`, which a domain name cannot contain; use only letters, digits, hyphens and dots, like my-company.example.com",
        shown(.input), .character.escape_debug()
    )]
    InvalidCharacter {
        /// The input as given.
        input: String,
        /// The first character refused.
        character: char,
    },
    /// A label starts or ends with a hyphen.
    #[error(
        "`{}` has a part that starts or ends with a hyphen (`{}`); a hyphen may only be inside a part, like my-company.com",
        shown(.input), shown(.label)
    )]
    HyphenAtLabelEdge {
        /// The input as given.
        input: String,
        /// The offending label, in ASCII form.
        label: String,
    },
    /// Only one label, such as `localhost` or `com`.
    #[error(
        "`{}` is not a complete domain name; a sender domain has at least two parts, like example.com",
        shown(.input)
    )]
    SingleLabel {
        /// The input as given.
        input: String,
    },
    /// The last label is all digits, which no real top-level domain is.
    #[error(
        "`{}` ends in a number, which no real domain does; enter a domain like example.com, or add an IP address as an IP address",
        shown(.input)
    )]
    NumericTopLevel {
        /// The input as given.
        input: String,
    },
}

impl DomainNameError {
    /// Stable upper-case identifier of the failure, suitable as the `reason` of an API error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Empty => "DOMAIN_EMPTY",
            Self::Whitespace { .. } => "DOMAIN_WHITESPACE",
            Self::ControlCharacter { .. } => "DOMAIN_CONTROL_CHARACTER",
            Self::LooksLikeUrl { .. } => "DOMAIN_LOOKS_LIKE_URL",
            Self::ContainsAt { .. } => "DOMAIN_CONTAINS_AT",
            Self::Wildcard { .. } => "DOMAIN_WILDCARD",
            Self::IpLiteral { .. } => "DOMAIN_IP_LITERAL",
            Self::Idna { .. } => "DOMAIN_IDNA",
            Self::TrailingDots { .. } => "DOMAIN_TRAILING_DOTS",
            Self::EmptyLabel { .. } => "DOMAIN_EMPTY_LABEL",
            Self::LabelTooLong { .. } => "DOMAIN_LABEL_TOO_LONG",
            Self::TooLong { .. } => "DOMAIN_TOO_LONG",
            Self::InvalidCharacter { .. } => "DOMAIN_INVALID_CHARACTER",
            Self::HyphenAtLabelEdge { .. } => "DOMAIN_HYPHEN_AT_LABEL_EDGE",
            Self::SingleLabel { .. } => "DOMAIN_SINGLE_LABEL",
            Self::NumericTopLevel { .. } => "DOMAIN_NUMERIC_TOP_LEVEL",
        }
    }
}

impl DomainName {
    /// Validates and normalises a domain name; see the type's documentation for the rules.
    pub fn parse(input: &str) -> Result<Self, DomainNameError> {
        let owned = || input.to_owned();
        if input.is_empty() {
            return Err(DomainNameError::Empty);
        }
        // These get their own messages before IDNA, which would only say "invalid".
        for c in input.chars() {
            if c.is_whitespace() {
                return Err(DomainNameError::Whitespace { input: owned() });
            }
            if c.is_control() {
                return Err(DomainNameError::ControlCharacter { input: owned() });
            }
        }
        if input.contains("://") {
            return Err(DomainNameError::LooksLikeUrl { input: owned() });
        }
        if input.contains('@') {
            return Err(DomainNameError::ContainsAt { input: owned() });
        }
        if input.contains('*') {
            return Err(DomainNameError::Wildcard { input: owned() });
        }
        if is_ip_literal(input) {
            return Err(DomainNameError::IpLiteral { input: owned() });
        }

        // No deny list and no hyphen or length checks here: those are done below on the ASCII
        // result so that each failure gets a specific message.
        let ascii = Uts46::new()
            .to_ascii(
                input.as_bytes(),
                AsciiDenyList::EMPTY,
                Hyphens::Allow,
                DnsLength::Ignore,
            )
            .map_err(|_| DomainNameError::Idna { input: owned() })?;

        // UTS 46 maps full-width digits and ideographic dots, so an IP literal can appear only now.
        if is_ip_literal(&ascii) {
            return Err(DomainNameError::IpLiteral { input: owned() });
        }
        if ascii.ends_with("..") {
            return Err(DomainNameError::TrailingDots { input: owned() });
        }
        // The fully qualified form with one trailing dot names the same domain.
        let name = ascii.strip_suffix('.').unwrap_or(&ascii);
        if name.is_empty() {
            return Err(DomainNameError::EmptyLabel { input: owned() });
        }

        let mut labels = 0usize;
        let mut last = "";
        for label in name.split('.') {
            labels += 1;
            last = label;
            if label.is_empty() {
                return Err(DomainNameError::EmptyLabel { input: owned() });
            }
            if label.len() > MAX_LABEL_LEN {
                return Err(DomainNameError::LabelTooLong {
                    input: owned(),
                    label: label.to_owned(),
                    len: label.len(),
                });
            }
            if let Some(character) = label
                .chars()
                .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
            {
                return Err(DomainNameError::InvalidCharacter {
                    input: owned(),
                    character,
                });
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(DomainNameError::HyphenAtLabelEdge {
                    input: owned(),
                    label: label.to_owned(),
                });
            }
        }
        if name.len() > MAX_DOMAIN_LEN {
            return Err(DomainNameError::TooLong {
                input: owned(),
                len: name.len(),
            });
        }
        if labels < 2 {
            return Err(DomainNameError::SingleLabel { input: owned() });
        }
        if last.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DomainNameError::NumericTopLevel { input: owned() });
        }
        Ok(Self(name.to_owned()))
    }

    /// The canonical ASCII form, for example `xn--bcher-kva.example`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The labels from left to right: `sales.example.com` gives `sales`, `example`, `com`.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.0.split('.')
    }

    /// The Unicode form for showing to people (`xn--bcher-kva.example` → `bücher.example`).
    /// Never use it for comparison or storage: that is what the ASCII form is for.
    pub fn to_unicode(&self) -> String {
        idna::domain_to_unicode(&self.0).0
    }

    /// The exact-domain rule: whether something granted for `self` (a verified sender domain
    /// entry, an SPF-checked envelope domain) also holds for the domain `other`.
    ///
    /// This is exact equality on purpose: **a subdomain is never covered by its parent**, nor a
    /// parent by its subdomain. An entry for `example.com` does not cover `sales.example.com`,
    /// because the company verified control of `example.com` only, and whoever runs a subdomain's
    /// mail may be someone else; each subdomain must be added and verified on its own. Likewise an
    /// envelope in `news.example.com` does not align with a From in `example.com`.
    ///
    /// Called by the sender lookup (`email2sms-sender-index`, domain entries) and by the SPF
    /// envelope/From alignment (`email2sms-spf`), so both apply the same rule.
    pub fn covers_exactly(&self, other: &DomainName) -> bool {
        self == other
    }
}

/// Recognises the forms an IP address takes where a domain is expected: `192.0.2.1`, `::1`, and
/// the RFC 5321 address literals `[192.0.2.1]` and `[IPv6:2001:db8::1]`.
fn is_ip_literal(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    s.starts_with('[') || s.parse::<IpAddr>().is_ok()
}

impl FromStr for DomainName {
    type Err = DomainNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for DomainName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> String {
        DomainName::parse(s)
            .unwrap_or_else(|e| panic!("{s:?} refused: {e}"))
            .to_string()
    }

    fn code(s: &str) -> &'static str {
        match DomainName::parse(s) {
            Ok(d) => panic!("{s:?} accepted as {d}"),
            Err(e) => e.code(),
        }
    }

    #[test]
    fn lower_cases_and_accepts_one_trailing_dot() {
        assert_eq!(ok("Example.COM."), "example.com");
        assert_eq!(
            DomainName::parse("Example.COM.").unwrap(),
            DomainName::parse("example.com").unwrap()
        );
        assert_eq!(ok("sms.localhost"), "sms.localhost");
    }

    #[test]
    fn two_trailing_dots_are_refused() {
        assert_eq!(code("example.com.."), "DOMAIN_TRAILING_DOTS");
    }

    #[test]
    fn idn_is_converted_to_ascii() {
        assert_eq!(ok("Bücher.example"), "xn--bcher-kva.example");
        assert_eq!(ok("xn--bcher-kva.example"), "xn--bcher-kva.example");
        assert_eq!(
            DomainName::parse("xn--bcher-kva.example")
                .unwrap()
                .to_unicode(),
            "bücher.example"
        );
        // Ideographic full stop is a dot in UTS 46.
        assert_eq!(ok("example。com"), "example.com");
        // Full-width letters are the same letters.
        assert_eq!(ok("ｅｘａｍｐｌｅ.com"), "example.com");
    }

    #[test]
    fn idn_homographs_stay_distinct() {
        // The second `а` is CYRILLIC SMALL LETTER A (U+0430).
        let fake = DomainName::parse("ex\u{0430}mple.com").unwrap();
        let real = DomainName::parse("example.com").unwrap();
        assert_ne!(fake, real);
        assert!(fake.as_str().starts_with("xn--"), "{fake}");
        assert!(!real.covers_exactly(&fake));
        assert!(!fake.covers_exactly(&real));
        // Greek omicron in place of o.
        let greek = DomainName::parse("g\u{03bf}\u{03bf}gle.com").unwrap();
        assert_ne!(greek, DomainName::parse("google.com").unwrap());
    }

    #[test]
    fn subdomain_is_not_covered_by_parent() {
        let parent = DomainName::parse("example.com").unwrap();
        let child = DomainName::parse("sales.example.com").unwrap();
        assert!(!parent.covers_exactly(&child));
        assert!(!child.covers_exactly(&parent));
        assert!(parent.covers_exactly(&DomainName::parse("EXAMPLE.com.").unwrap()));
    }

    #[test]
    fn wildcards_are_refused() {
        assert_eq!(code("*.example.com"), "DOMAIN_WILDCARD");
        assert_eq!(code("ex*ample.com"), "DOMAIN_WILDCARD");
    }

    #[test]
    fn label_lengths() {
        let l63 = "a".repeat(63);
        let l64 = "a".repeat(64);
        assert_eq!(ok(&format!("{l63}.com")), format!("{l63}.com"));
        assert_eq!(code(&format!("{l64}.com")), "DOMAIN_LABEL_TOO_LONG");
        let err = DomainName::parse(&format!("{l64}.com")).unwrap_err();
        assert!(err.to_string().contains("64 characters"), "{err}");
    }

    #[test]
    fn total_length() {
        // 63+1+63+1+63+1+61 = 253
        let l63 = "a".repeat(63);
        let name253 = format!("{l63}.{l63}.{l63}.{}", "b".repeat(61));
        assert_eq!(name253.len(), 253);
        assert_eq!(ok(&name253), name253);
        assert_eq!(ok(&format!("{name253}.")), name253);
        let name254 = format!("{l63}.{l63}.{l63}.{}", "b".repeat(62));
        assert_eq!(name254.len(), 254);
        assert_eq!(code(&name254), "DOMAIN_TOO_LONG");
        assert_eq!(code(&"a.".repeat(150)), "DOMAIN_TOO_LONG");
    }

    #[test]
    fn empty_labels_are_refused() {
        assert_eq!(code(""), "DOMAIN_EMPTY");
        assert_eq!(code("."), "DOMAIN_EMPTY_LABEL");
        assert_eq!(code(".example.com"), "DOMAIN_EMPTY_LABEL");
        assert_eq!(code("example..com"), "DOMAIN_EMPTY_LABEL");
    }

    #[test]
    fn ldh_rules() {
        assert_eq!(ok("my-company.example"), "my-company.example");
        assert_eq!(ok("123.example"), "123.example");
        assert_eq!(code("-bad.example"), "DOMAIN_HYPHEN_AT_LABEL_EDGE");
        assert_eq!(code("bad-.example"), "DOMAIN_HYPHEN_AT_LABEL_EDGE");
        assert_eq!(code("under_score.example"), "DOMAIN_INVALID_CHARACTER");
        assert_eq!(code("ex!ample.com"), "DOMAIN_INVALID_CHARACTER");
        assert_eq!(code("example.com/path"), "DOMAIN_INVALID_CHARACTER");
        assert_eq!(code("example.com:25"), "DOMAIN_INVALID_CHARACTER");
    }

    #[test]
    fn single_label_names_are_refused() {
        assert_eq!(code("localhost"), "DOMAIN_SINGLE_LABEL");
        assert_eq!(code("com"), "DOMAIN_SINGLE_LABEL");
        assert_eq!(code("com."), "DOMAIN_SINGLE_LABEL");
        let err = DomainName::parse("localhost").unwrap_err();
        assert!(err.to_string().contains("at least two parts"), "{err}");
    }

    #[test]
    fn ip_literals_are_refused() {
        assert_eq!(code("192.0.2.1"), "DOMAIN_IP_LITERAL");
        assert_eq!(code("192.0.2.1."), "DOMAIN_IP_LITERAL");
        assert_eq!(code("[192.0.2.1]"), "DOMAIN_IP_LITERAL");
        assert_eq!(code("[IPv6:2001:db8::1]"), "DOMAIN_IP_LITERAL");
        assert_eq!(code("2001:db8::1"), "DOMAIN_IP_LITERAL");
        assert_eq!(code("１９２.０.２.１"), "DOMAIN_IP_LITERAL");
        assert_eq!(code("1.2.3.999"), "DOMAIN_NUMERIC_TOP_LEVEL");
    }

    #[test]
    fn helpful_refusals_for_common_mistakes() {
        assert_eq!(code("https://example.com"), "DOMAIN_LOOKS_LIKE_URL");
        assert_eq!(code("bob@example.com"), "DOMAIN_CONTAINS_AT");
        assert_eq!(code("exa mple.com"), "DOMAIN_WHITESPACE");
        assert_eq!(code(" example.com"), "DOMAIN_WHITESPACE");
        assert_eq!(code("example.com\u{0}"), "DOMAIN_CONTROL_CHARACTER");
        assert_eq!(code("xn--.com"), "DOMAIN_IDNA");
    }

    #[test]
    fn messages_quote_the_input_and_say_how_to_fix() {
        let err = DomainName::parse("*.example.com").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("`*.example.com`"), "{msg}");
        assert!(msg.contains("add each domain exactly"), "{msg}");
    }
}
