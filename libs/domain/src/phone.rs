//! SMS recipients: phone numbers in E.164 and the regions that give national numbers a meaning.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use phonenumber::country::Id;
use phonenumber::metadata::DATABASE;
use phonenumber::{Mode, ParseError, Type};

use crate::error::shown;

/// A region (country or territory) as an ISO 3166-1 alpha-2 code, upper-case (`NZ`, `GB`, `US`),
/// that the phone number metadata knows. A company's default region turns national numbers such
/// as `021 123 4567` into international ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region(Id);

/// Why a region code was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegionError {
    /// Nothing was entered.
    #[error("the region is empty; enter a two-letter country code like NZ, AU, GB or US")]
    Empty,
    /// Not two letters.
    #[error(
        "`{}` is not a two-letter country code; enter one like NZ, AU, GB or US",
        shown(.input)
    )]
    NotTwoLetters {
        /// The input as given.
        input: String,
    },
    /// Two letters, but not a region with phone numbers.
    #[error(
        "`{}` is not a country code we know phone numbers for; enter an ISO country code like NZ, AU, GB or US{}",
        shown(.input),
        if .input.eq_ignore_ascii_case("uk") { " (the United Kingdom is GB)" } else { "" }
    )]
    Unknown {
        /// The input as given.
        input: String,
    },
}

impl RegionError {
    /// Stable upper-case identifier of the failure, suitable as the `reason` of an API error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Empty => "REGION_EMPTY",
            Self::NotTwoLetters { .. } => "REGION_NOT_TWO_LETTERS",
            Self::Unknown { .. } => "REGION_UNKNOWN",
        }
    }
}

impl Region {
    /// Validates a region code; lower case is accepted and upper-cased.
    pub fn parse(input: &str) -> Result<Self, RegionError> {
        if input.is_empty() {
            return Err(RegionError::Empty);
        }
        if input.len() != 2 || !input.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(RegionError::NotTwoLetters {
                input: input.to_owned(),
            });
        }
        let upper = input.to_ascii_uppercase();
        // The enum has every region of the metadata, but the database is what parsing consults.
        match Id::from_str(&upper) {
            Ok(id) if DATABASE.by_id(upper.as_str()).is_some() => Ok(Self(id)),
            _ => Err(RegionError::Unknown {
                input: input.to_owned(),
            }),
        }
    }

    /// The upper-case code, for example `NZ`.
    pub fn as_str(&self) -> &str {
        self.0.as_ref()
    }

    /// The `phonenumber` crate's identifier of this region.
    pub fn to_phonenumber_id(self) -> Id {
        self.0
    }
}

impl Hash for Region {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialOrd for Region {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Region {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl FromStr for Region {
    type Err = RegionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A valid phone number in E.164 form, such as `+64211234567`.
///
/// Accepted input: an international number with `+` or the `00` international prefix
/// (`+64 21 123 4567`, `0064 21 123 4567`), or a national number with a default region
/// (`021 123 4567` with `NZ`; also the region's own international prefix, such as `011` for `US`).
/// Spaces and `.` `-` `(` `)` may separate digits. The number must be valid according to the
/// phone number metadata (`phonenumber::is_valid`), not merely the right length.
///
/// `00` is read as the international prefix whatever the region, because that is what it is in
/// nearly every country and no national number starts with it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhoneNumber {
    e164: String,
    country_code: u16,
    region: Option<Region>,
    kind: NumberKind,
}

/// What kind of line a number is, from the phone number metadata. An SMS to a premium-rate
/// number earns its owner money per message: pumping SMS to such numbers is the costliest fraud an
/// SMS platform sees, so the gateway refuses the [special-rate](Self::is_special_rate) kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NumberKind {
    /// A mobile phone.
    Mobile,
    /// A landline.
    FixedLine,
    /// Where the numbering plan does not tell the two apart (the USA, Canada).
    FixedLineOrMobile,
    /// Free to call (0800).
    TollFree,
    /// Premium rate: the caller pays the owner (the UK's 09).
    PremiumRate,
    /// Shared cost: a special rate between local and premium (Australia's 1300).
    SharedCost,
    /// An internet telephony number.
    Voip,
    /// Follow-me numbers (the UK's 070): routinely charged at premium rates.
    PersonalNumber,
    /// A pager.
    Pager,
    /// Universal access numbers (one number for a whole organisation).
    Uan,
    /// A voicemail box.
    Voicemail,
    /// Valid, but the metadata names no kind.
    Unknown,
}

impl NumberKind {
    /// Premium-rate, shared-cost and personal numbers: the recipient's operator pays their owner
    /// for every message, so they are what SMS pumping targets.
    pub fn is_special_rate(self) -> bool {
        matches!(
            self,
            Self::PremiumRate | Self::SharedCost | Self::PersonalNumber
        )
    }

    /// Words for a refusal text: "a premium-rate number".
    pub fn describe(self) -> &'static str {
        match self {
            Self::Mobile => "a mobile number",
            Self::FixedLine => "a landline number",
            Self::FixedLineOrMobile => "a landline or mobile number",
            Self::TollFree => "a toll-free number",
            Self::PremiumRate => "a premium-rate number",
            Self::SharedCost => "a shared-cost (special-rate) number",
            Self::Voip => "an internet (VoIP) number",
            Self::PersonalNumber => "a personal (follow-me, special-rate) number",
            Self::Pager => "a pager number",
            Self::Uan => "a universal access number",
            Self::Voicemail => "a voicemail number",
            Self::Unknown => "a number of unknown kind",
        }
    }

    fn of(kind: Type) -> Self {
        match kind {
            Type::Mobile => Self::Mobile,
            Type::FixedLine => Self::FixedLine,
            Type::FixedLineOrMobile => Self::FixedLineOrMobile,
            Type::TollFree => Self::TollFree,
            Type::PremiumRate => Self::PremiumRate,
            Type::SharedCost => Self::SharedCost,
            Type::Voip => Self::Voip,
            Type::PersonalNumber => Self::PersonalNumber,
            Type::Pager => Self::Pager,
            Type::Uan => Self::Uan,
            Type::Voicemail => Self::Voicemail,
            _ => Self::Unknown,
        }
    }
}

/// Why a phone number was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PhoneNumberError {
    /// Nothing was entered.
    #[error("the phone number is empty; enter a number like +64 21 123 4567")]
    Empty,
    /// The input contains letters.
    #[error(
        "`{}` contains letters; enter the phone number as digits only, like +64 21 123 4567",
        shown(.input)
    )]
    Letters {
        /// The input as given.
        input: String,
    },
    /// A character other than digits, `+` and the separators.
    #[error(
        "`{}` contains `{}`, which a phone number cannot contain; use digits, a leading +, and spaces, dots, dashes or brackets between them, like +64 21 123 4567",
        shown(.input), .character.escape_debug()
    )]
    InvalidCharacter {
        /// The input as given.
        input: String,
        /// The first character refused.
        character: char,
    },
    /// A `+` that is not at the very start.
    #[error(
        "`{}` has a + that is not at the start; the + goes only before the country code, like +64 21 123 4567",
        shown(.input)
    )]
    MisplacedPlus {
        /// The input as given.
        input: String,
    },
    /// A national number and no region to interpret it.
    #[error(
        "`{}` has no country code; write it with + and the country code, like +64 21 123 4567, or set the company's default region",
        shown(.input)
    )]
    MissingCountryCode {
        /// The input as given.
        input: String,
    },
    /// The country calling code after `+` or `00` does not exist.
    #[error(
        "`{}` starts with a country code that does not exist; check the digits after the + (64 for New Zealand, 61 for Australia, 44 for the UK, 1 for the US)",
        shown(.input)
    )]
    UnknownCountryCode {
        /// The input as given.
        input: String,
    },
    /// Too few digits to be a phone number.
    #[error(
        "`{}` has too few digits for a phone number; check that no digits are missing",
        shown(.input)
    )]
    TooShort {
        /// The input as given.
        input: String,
    },
    /// More digits than any phone number has.
    #[error(
        "`{}` has too many digits for a phone number (at most 15 including the country code); check for extra digits",
        shown(.input)
    )]
    TooLong {
        /// The input as given.
        input: String,
    },
    /// The right shape, but not a number that can exist in its country.
    #[error(
        "`{}` is not a valid phone number (read as {read_as}); check the digits and the country code",
        shown(.input)
    )]
    Invalid {
        /// The input as given.
        input: String,
        /// How the input was understood, so the person can see a wrong country code.
        read_as: String,
    },
    /// An SMTP recipient's local part that cannot be a phone number.
    #[error(
        "`{}` is not a phone number; the part before the @ must be the mobile number in digits, like 64211234567 or +64211234567",
        shown(.input)
    )]
    NotPlausible {
        /// The input as given.
        input: String,
    },
}

impl PhoneNumberError {
    /// Stable upper-case identifier of the failure, suitable as the `reason` of an API error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Empty => "PHONE_EMPTY",
            Self::Letters { .. } => "PHONE_LETTERS",
            Self::InvalidCharacter { .. } => "PHONE_INVALID_CHARACTER",
            Self::MisplacedPlus { .. } => "PHONE_MISPLACED_PLUS",
            Self::MissingCountryCode { .. } => "PHONE_MISSING_COUNTRY_CODE",
            Self::UnknownCountryCode { .. } => "PHONE_UNKNOWN_COUNTRY_CODE",
            Self::TooShort { .. } => "PHONE_TOO_SHORT",
            Self::TooLong { .. } => "PHONE_TOO_LONG",
            Self::Invalid { .. } => "PHONE_INVALID",
            Self::NotPlausible { .. } => "PHONE_NOT_PLAUSIBLE",
        }
    }
}

/// E.164 allows at most 15 digits including the country code.
const MAX_E164_DIGITS: usize = 15;
/// A national number may carry a trunk prefix and carrier-selection digits on top of its
/// significant digits; anything longer is refused before the metadata's regexes see it.
const MAX_NATIONAL_DIGITS: usize = 17;
/// Fewest digits of an SMTP recipient that could be a phone number (short national numbers of
/// small countries).
const MIN_PLAUSIBLE_DIGITS: usize = 6;

fn is_separator(c: char) -> bool {
    matches!(c, ' ' | '\u{a0}' | '.' | '-' | '(' | ')')
}

/// The number types that make a number valid (short codes and emergency numbers do not).
const VALID_TYPES: [Type; 10] = [
    Type::FixedLine,
    Type::Mobile,
    Type::TollFree,
    Type::PremiumRate,
    Type::SharedCost,
    Type::PersonalNumber,
    Type::Voip,
    Type::Pager,
    Type::Uan,
    Type::Voicemail,
];

/// Shortest and longest national significant number of any region sharing a calling code.
/// The crate's metadata leaves the general descriptor's lengths empty, so they are gathered from
/// the per-type descriptors.
fn possible_lengths(country_code: u16) -> Option<(usize, usize)> {
    let lengths = DATABASE
        .by_code(&country_code)?
        .into_iter()
        .flat_map(|meta| {
            VALID_TYPES
                .iter()
                .filter_map(|t| meta.descriptors().get(*t))
        })
        .flat_map(|desc| desc.possible_length().iter().copied());
    let (min, max) = lengths.fold((u16::MAX, 0), |(lo, hi), l| (lo.min(l), hi.max(l)));
    (min <= max).then_some((usize::from(min), usize::from(max)))
}

/// Parses a number written without an international prefix in `region`.
///
/// The crate strips leading digits equal to the region's own calling code even when what remains
/// is too short (Rwanda's `250 123 456` became `+250 123456`), where libphonenumber keeps the
/// national reading if that is the valid one. Writing the national trunk prefix in front forces the
/// national reading, so that is tried when the first reading is not a valid number.
fn parse_national(region: Region, digits: &str) -> Result<phonenumber::PhoneNumber, ParseError> {
    let first = phonenumber::parse(Some(region.0), digits);
    if first.as_ref().is_ok_and(phonenumber::is_valid) {
        return first;
    }
    let trunk = DATABASE
        .by_id(region.as_str())
        .and_then(|meta| meta.national_prefix());
    match trunk {
        Some(trunk) if !digits.starts_with(trunk) => {
            match phonenumber::parse(Some(region.0), format!("{trunk}{digits}")) {
                Ok(n) if phonenumber::is_valid(&n) => Ok(n),
                _ => first,
            }
        }
        _ => first,
    }
}

impl PhoneNumber {
    /// Validates a phone number and converts it to E.164. `default_region` interprets numbers
    /// written without a country code; without it such numbers are refused.
    pub fn parse(input: &str, default_region: Option<Region>) -> Result<Self, PhoneNumberError> {
        let owned = || input.to_owned();
        let mut digits = String::new();
        let mut plus = false;
        for c in input.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
            } else if c == '+' {
                if plus || !digits.is_empty() {
                    return Err(PhoneNumberError::MisplacedPlus { input: owned() });
                }
                plus = true;
            } else if is_separator(c) {
                continue;
            } else if c.is_alphabetic() {
                return Err(PhoneNumberError::Letters { input: owned() });
            } else {
                return Err(PhoneNumberError::InvalidCharacter {
                    input: owned(),
                    character: c,
                });
            }
            // Stop early on absurd input so the metadata's regexes never see it.
            if digits.len() > MAX_NATIONAL_DIGITS {
                return Err(PhoneNumberError::TooLong { input: owned() });
            }
        }
        if digits.is_empty() {
            return Err(if input.chars().all(|c| c == ' ' || c == '\u{a0}') {
                PhoneNumberError::Empty
            } else {
                PhoneNumberError::TooShort { input: owned() }
            });
        }
        let international = if plus {
            Some(digits.as_str())
        } else {
            digits.strip_prefix("00")
        };

        let parsed = match international {
            Some(number) => {
                if number.len() > MAX_E164_DIGITS {
                    return Err(PhoneNumberError::TooLong { input: owned() });
                }
                phonenumber::parse(None, format!("+{number}"))
            }
            None => {
                let Some(region) = default_region else {
                    return Err(PhoneNumberError::MissingCountryCode { input: owned() });
                };
                parse_national(region, &digits)
            }
        };
        let number = parsed.map_err(|e| match e {
            ParseError::InvalidCountryCode => {
                PhoneNumberError::UnknownCountryCode { input: owned() }
            }
            ParseError::TooLong => PhoneNumberError::TooLong { input: owned() },
            ParseError::NoNumber | ParseError::TooShortAfterIdd | ParseError::TooShortNsn => {
                PhoneNumberError::TooShort { input: owned() }
            }
            ParseError::MalformedInteger(_) => PhoneNumberError::Invalid {
                input: owned(),
                read_as: digits.clone(),
            },
        })?;
        let e164 = number.format().mode(Mode::E164).to_string();
        if number.extension().is_some() || !phonenumber::is_valid(&number) {
            // The parser accepts any 2+ digits after the country code; the lengths the country
            // actually uses tell "too short" apart from "wrong digits", which people fix differently.
            let national_len = number.national().to_string().len();
            return Err(match possible_lengths(number.country().code()) {
                Some((min, _)) if national_len < min => {
                    PhoneNumberError::TooShort { input: owned() }
                }
                Some((_, max)) if national_len > max => {
                    PhoneNumberError::TooLong { input: owned() }
                }
                _ => PhoneNumberError::Invalid {
                    input: owned(),
                    read_as: e164,
                },
            });
        }
        if e164.len() > MAX_E164_DIGITS + 1 {
            return Err(PhoneNumberError::TooLong { input: owned() });
        }
        let region = number.country().id().and_then(|id| {
            // A region the number belongs to is one the metadata knows; checked anyway.
            DATABASE.by_id(id.as_ref()).map(|_| Region(id))
        });
        Ok(Self {
            e164,
            country_code: number.country().code(),
            region,
            kind: NumberKind::of(number.number_type(&DATABASE)),
        })
    }

    /// The E.164 form, for example `+64211234567`.
    pub fn as_str(&self) -> &str {
        &self.e164
    }

    /// The E.164 digits without the `+`, for example `64211234567`, as SMS gateways often want.
    pub fn digits(&self) -> &str {
        &self.e164[1..]
    }

    /// The country calling code, for example 64 for New Zealand.
    pub fn country_code(&self) -> u16 {
        self.country_code
    }

    /// The region the number belongs to, when the metadata can tell (not for non-geographic
    /// numbers such as +800).
    pub fn region(&self) -> Option<Region> {
        self.region
    }

    /// What kind of line the number is (mobile, premium-rate, …).
    pub fn kind(&self) -> NumberKind {
        self.kind
    }
}

/// Checks, before any region is known, that an SMTP recipient's local part could be a phone
/// number: digits with an optional leading `+` or `00`, `.` or `-` between them, and 6 to 15
/// digits after the prefix. Ingest uses it to refuse an impossible `RCPT TO` at once; the full
/// validation ([`PhoneNumber::parse`] with the company's region) happens after the sender is known.
pub fn check_phone_local_part(local: &str) -> Result<(), PhoneNumberError> {
    let rest = local
        .strip_prefix('+')
        .or_else(|| local.strip_prefix("00"))
        .unwrap_or(local);
    let mut count = 0usize;
    for c in rest.chars() {
        match c {
            '0'..='9' => count += 1,
            '.' | '-' => {}
            _ => {
                return Err(PhoneNumberError::NotPlausible {
                    input: local.to_owned(),
                });
            }
        }
    }
    if (MIN_PLAUSIBLE_DIGITS..=MAX_E164_DIGITS).contains(&count) {
        Ok(())
    } else {
        Err(PhoneNumberError::NotPlausible {
            input: local.to_owned(),
        })
    }
}

/// [`check_phone_local_part`] as a yes/no answer.
pub fn is_plausible_phone_local_part(local: &str) -> bool {
    check_phone_local_part(local).is_ok()
}

/// Digits of a phone number that [`mask_phone`] leaves readable: enough for support to tell two
/// numbers of one customer apart, too few to call anyone.
pub const UNMASKED_DIGITS: usize = 3;

/// A phone number (or any text that may be one) as logs may show it: every digit but the last
/// [`UNMASKED_DIGITS`] replaced by `*`, everything else kept, so `+64211234567` becomes
/// `+********567`. Use it wherever a recipient or sender number would reach a log line.
pub fn mask_phone(text: &str) -> String {
    let digits = text.chars().filter(char::is_ascii_digit).count();
    let mut hidden = digits.saturating_sub(UNMASKED_DIGITS);
    text.chars()
        .map(|c| {
            if c.is_ascii_digit() && hidden > 0 {
                hidden -= 1;
                '*'
            } else {
                c
            }
        })
        .collect()
}

impl PhoneNumber {
    /// This number as logs may show it ([`mask_phone`]).
    pub fn masked(&self) -> String {
        mask_phone(&self.e164)
    }
}

impl FromStr for PhoneNumber {
    type Err = PhoneNumberError;

    /// Parses without a default region, so only international numbers (`+` or `00`) are
    /// accepted; the E.164 form always is.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s, None)
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.e164)
    }
}

impl AsRef<str> for PhoneNumber {
    fn as_ref(&self) -> &str {
        &self.e164
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(s: &str) -> Region {
        Region::parse(s).unwrap()
    }

    #[test]
    fn masking_keeps_only_the_last_three_digits() {
        assert_eq!(mask_phone("+64211234567"), "+********567");
        assert_eq!(mask_phone("021 123 4567"), "*** *** *567");
        assert_eq!(mask_phone("12"), "12");
        assert_eq!(mask_phone(""), "");
        assert_eq!(
            PhoneNumber::parse("+64 21 123 4567", None)
                .unwrap()
                .masked(),
            "+********567"
        );
    }

    fn ok(s: &str, r: Option<&str>) -> String {
        PhoneNumber::parse(s, r.map(region))
            .unwrap_or_else(|e| panic!("{s:?} refused: {e}"))
            .to_string()
    }

    fn err(s: &str, r: Option<&str>) -> PhoneNumberError {
        match PhoneNumber::parse(s, r.map(region)) {
            Ok(n) => panic!("{s:?} accepted as {n}"),
            Err(e) => e,
        }
    }

    #[test]
    fn new_zealand_forms() {
        assert_eq!(ok("+64 21 123 4567", None), "+64211234567");
        assert_eq!(ok("+64 21 123 4567", Some("US")), "+64211234567");
        assert_eq!(ok("0064 21 123 4567", None), "+64211234567");
        assert_eq!(ok("0064211234567", Some("NZ")), "+64211234567");
        assert_eq!(ok("021 123 4567", Some("NZ")), "+64211234567");
        assert_eq!(ok("(021) 123-4567", Some("NZ")), "+64211234567");
        assert_eq!(ok("021.123.4567", Some("nz")), "+64211234567");
        assert_eq!(ok("+64\u{a0}21\u{a0}123\u{a0}4567", None), "+64211234567");
        // A recipient written with the country code but no + still works in its own region.
        assert_eq!(ok("64211234567", Some("NZ")), "+64211234567");
        // ...but a national number that starts with the country code keeps its national reading
        // (Rwanda's calling code is 250, and so is this number's area code).
        assert_eq!(ok("250 123 456", Some("RW")), "+250250123456");
        assert_eq!(ok("0250 123 456", Some("RW")), "+250250123456");
        let n = PhoneNumber::parse("021 123 4567", Some(region("NZ"))).unwrap();
        assert_eq!(n.country_code(), 64);
        assert_eq!(n.region(), Some(region("NZ")));
        assert_eq!(n.digits(), "64211234567");
        assert_eq!(n.as_str(), "+64211234567");
    }

    #[test]
    fn national_number_needs_a_region() {
        let e = err("021 123 4567", None);
        assert_eq!(e.code(), "PHONE_MISSING_COUNTRY_CODE");
        assert!(e.to_string().contains("+64 21 123 4567"), "{e}");
    }

    #[test]
    fn other_countries() {
        assert_eq!(ok("(201) 555-0123", Some("US")), "+12015550123");
        assert_eq!(ok("+1 201-555-0123", None), "+12015550123");
        assert_eq!(ok("1 201 555 0123", Some("US")), "+12015550123");
        // The US international prefix is 011, not 00.
        assert_eq!(ok("011 64 21 123 4567", Some("US")), "+64211234567");
        assert_eq!(ok("07400 123456", Some("GB")), "+447400123456");
        assert_eq!(ok("+44 7400 123456", None), "+447400123456");
        assert_eq!(ok("0412 345 678", Some("AU")), "+61412345678");
        // Italian numbers keep their leading zero after the country code.
        assert_eq!(ok("+39 06 1234 5678", None), "+390612345678");
        assert_eq!(ok("06 1234 5678", Some("IT")), "+390612345678");
        assert_eq!(
            PhoneNumber::parse("+1 201 555 0123", None)
                .unwrap()
                .region(),
            Some(region("US"))
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(err("", None).code(), "PHONE_EMPTY");
        assert_eq!(err("   ", Some("NZ")).code(), "PHONE_EMPTY");
        assert_eq!(err("+", None).code(), "PHONE_TOO_SHORT");
        assert_eq!(err("---", Some("NZ")).code(), "PHONE_TOO_SHORT");
        assert_eq!(err("0800 FLOWERS", Some("NZ")).code(), "PHONE_LETTERS");
        assert_eq!(err("+64 21 123 4567 ext 5", None).code(), "PHONE_LETTERS");
        assert_eq!(
            err("+64 21 123 4567#", None).code(),
            "PHONE_INVALID_CHARACTER"
        );
        assert_eq!(
            err("+64/21/1234567", None).code(),
            "PHONE_INVALID_CHARACTER"
        );
        assert_eq!(err("64+211234567", None).code(), "PHONE_MISPLACED_PLUS");
        assert_eq!(err("++64211234567", None).code(), "PHONE_MISPLACED_PLUS");
        assert_eq!(err("+64 21", None).code(), "PHONE_TOO_SHORT");
        assert_eq!(err("12", Some("NZ")).code(), "PHONE_TOO_SHORT");
        assert_eq!(
            err("+64 21 123 4567 8901 234", None).code(),
            "PHONE_TOO_LONG"
        );
        assert_eq!(err(&"9".repeat(40), Some("NZ")).code(), "PHONE_TOO_LONG");
        assert_eq!(
            err("+999 123 456 789", None).code(),
            "PHONE_UNKNOWN_COUNTRY_CODE"
        );
        let e = err("+64 99 999 9999", None);
        assert_eq!(e.code(), "PHONE_INVALID");
        assert!(e.to_string().contains("read as +64999999999"), "{e}");
        assert_eq!(err("+1 000 000 0000", None).code(), "PHONE_INVALID");
    }

    #[test]
    fn regions() {
        assert_eq!(region("nz").as_str(), "NZ");
        assert_eq!(region("Gb").to_string(), "GB");
        assert_eq!(Region::parse("").unwrap_err().code(), "REGION_EMPTY");
        assert_eq!(
            Region::parse("NZL").unwrap_err().code(),
            "REGION_NOT_TWO_LETTERS"
        );
        assert_eq!(
            Region::parse("N1").unwrap_err().code(),
            "REGION_NOT_TWO_LETTERS"
        );
        assert_eq!(Region::parse("ZZ").unwrap_err().code(), "REGION_UNKNOWN");
        assert_eq!(
            Region::parse("001").unwrap_err().code(),
            "REGION_NOT_TWO_LETTERS"
        );
        let uk = Region::parse("UK").unwrap_err();
        assert_eq!(uk.code(), "REGION_UNKNOWN");
        assert!(uk.to_string().contains("the United Kingdom is GB"), "{uk}");
        assert!(region("AU") < region("NZ"));
    }

    #[test]
    fn plausible_local_parts() {
        for good in [
            "64211234567",
            "+64211234567",
            "0064211234567",
            "021-123-4567",
            "021.123.4567",
            "123456",
            "123456789012345",
        ] {
            assert!(is_plausible_phone_local_part(good), "{good}");
        }
        for bad in [
            "",
            "+",
            "12345",
            "1234567890123456",
            "bob",
            "64 21 123 4567",
            "+64(21)1234567",
            "6421123456x",
            "++64211234567",
            "64+211234567",
            "٦٤٢١١٢٣٤٥٦٧",
        ] {
            assert!(!is_plausible_phone_local_part(bad), "{bad}");
        }
        assert_eq!(
            check_phone_local_part("bob").unwrap_err().code(),
            "PHONE_NOT_PLAUSIBLE"
        );
    }
}

#[cfg(test)]
mod kind_tests {
    use super::*;

    fn kind(number: &str) -> NumberKind {
        PhoneNumber::parse(number, None).unwrap().kind()
    }

    #[test]
    fn special_rate_kinds_are_told_apart_from_mobiles() {
        // Example numbers of libphonenumber's metadata for the UK and New Zealand.
        assert_eq!(kind("+447400123456"), NumberKind::Mobile);
        assert_eq!(kind("+64211234567"), NumberKind::Mobile);
        assert_eq!(kind("+449012345678"), NumberKind::PremiumRate);
        assert_eq!(kind("+611300123456"), NumberKind::SharedCost);
        assert_eq!(kind("+447012345678"), NumberKind::PersonalNumber);
        assert_eq!(kind("+448001234567"), NumberKind::TollFree);
        assert_eq!(kind("+6490012345"), NumberKind::PremiumRate);
        for special in [
            "+449012345678",
            "+611300123456",
            "+447012345678",
            "+6490012345",
        ] {
            assert!(kind(special).is_special_rate(), "{special}");
        }
        for ordinary in [
            "+447400123456",
            "+64211234567",
            "+448001234567",
            "+12015550123",
        ] {
            assert!(!kind(ordinary).is_special_rate(), "{ordinary}");
        }
    }
}
