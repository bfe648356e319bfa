//! SPF (RFC 7208) for ingest: viaspf over hickory-resolver, provider checks, SMTP replies and exact-domain alignment.
//!
//! * [`SpfVerifier::check_sender`] — security type "Via SPF": `check_host()` for the envelope
//!   sender's domain and the client IP.
//! * [`SpfVerifier::check_provider`] — "By Google Mail" / "By Outlook.com": is the client IP one
//!   of the provider's outbound servers (`_spf.google.com`, `spf.protection.outlook.com`, or a
//!   configured test name)? See [`PROVIDER_CHECK_SENDER_DOMAIN`] for how.
//! * [`spf_refusal_reply`] — the SMTP reply DESIGN.md prescribes for a non-pass outcome.
//! * [`envelope_domain_aligned_exactly`] — the envelope domain must equal the From domain.
//!
//! Licence: GPL-3.0-or-later, because viaspf is. Only the ingest binary may depend on this crate.

#![forbid(unsafe_code)]

mod alignment;
mod error;
mod lookup;
mod reply;
mod verifier;

pub use alignment::{address_domain, envelope_domain_aligned_exactly};
pub use error::SpfError;
pub use lookup::{DEFAULT_ATTEMPTS, DEFAULT_QUERY_TIMEOUT, DnsSettings, HickoryLookup};
pub use reply::{SmtpReply, spf_refusal_reply};
pub use verifier::{
    DEFAULT_OVERALL_TIMEOUT, MAX_DNS_LOOKUPS, MAX_VOID_LOOKUPS, PROVIDER_CHECK_SENDER_DOMAIN,
    ProviderDomain, SpfCause, SpfCheck, SpfOutcome, SpfResult, SpfSettings, SpfVerifier,
};
/// viaspf's lookup trait and name type, for callers that supply their own DNS (tests).
pub use viaspf::lookup::{Lookup, LookupError, LookupResult, Name};
