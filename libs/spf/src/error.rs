//! The crate's one error type.

/// Errors from building an SPF verifier or parsing its configuration. SPF evaluation itself
/// never fails: every problem becomes an [`crate::SpfOutcome`] (`temperror`, `permerror`, …).
#[derive(Debug, thiserror::Error)]
pub enum SpfError {
    /// The DNS resolver could not be built (e.g. `/etc/resolv.conf` unreadable).
    #[error("cannot set up the DNS resolver for SPF: {0}")]
    Resolver(String),
    /// A configured provider SPF domain (e.g. `EMAIL2SMS_GOOGLE_SPF_DOMAIN`) is not a DNS name
    /// that can be placed in an `include:` mechanism.
    #[error("invalid provider SPF domain {domain:?}: {reason}")]
    InvalidProviderDomain {
        /// The value as configured.
        domain: String,
        /// Why it was rejected.
        reason: &'static str,
    },
}
