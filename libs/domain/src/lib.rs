//! Domain types of Email2SMS Security and the normalisers that validate every address, domain, IP, phone number and token entering the system.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
//!
//! Every type here is a newtype whose only constructors validate and normalise, so a value that
//! exists is already canonical: two values are equal exactly when the product must treat them as
//! the same sender, network, recipient or token. `Display` (and `as_str`) give the canonical form,
//! and parsing that form again yields an equal value.
//!
//! | type | canonical form |
//! |---|---|
//! | [`EmailAddress`] | lower-case, domain in IDNA ASCII form: `bob@xn--bcher-kva.example` |
//! | [`DomainName`] | IDNA ASCII, lower-case, no trailing dot: `example.com` |
//! | [`IpNetwork`] | `192.0.2.7`, `192.0.2.0/24`, `2001:db8::/32` (IPv4-mapped IPv6 becomes IPv4) |
//! | [`PhoneNumber`] | E.164: `+64211234567` |
//! | [`Region`] | ISO 3166-1 alpha-2, upper-case: `NZ` |
//! | [`VerificationToken`] | 32 lower-case hex characters |
//!
//! Each concern has its own error enum (for example [`EmailAddressError`]); [`DomainError`]
//! gathers them for callers that want one type. Every error message names the offending input and
//! says how to fix it in words an office user can act on, and every variant has a stable
//! machine-readable `code()` for APIs that report field violations.
//!
//! With the `serde` feature every type serialises as its canonical string and deserialising runs
//! the same validation as parsing.

mod domain_name;
mod email;
mod error;
mod ip;
mod phone;
#[cfg(feature = "serde")]
mod serde_impl;
mod token;

pub use domain_name::{DomainName, DomainNameError, MAX_DOMAIN_LEN, MAX_LABEL_LEN};
pub use email::{EmailAddress, EmailAddressError, MAX_EMAIL_LEN, MAX_LOCAL_PART_LEN};
pub use error::DomainError;
pub use ip::{IpNetwork, IpNetworkError, canonical_ip, longest_prefix_match};
pub use phone::{
    NumberKind, PhoneNumber, PhoneNumberError, Region, RegionError, UNMASKED_DIGITS,
    check_phone_local_part, is_plausible_phone_local_part, mask_phone,
};
pub use token::{TXT_RECORD_PREFIX, TokenError, VerificationToken};
