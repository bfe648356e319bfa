//! The compiled sender index in Redis: the contract between the policy service, which compiles
//! the sender entries into it, and ingest, which reads it on every email.
//!
//! # Key layout
//!
//! Every key starts with the configured prefix `P` (`EMAIL2SMS_REDIS_PREFIX`, default
//! `email2sms:`). Values are protobuf-encoded `email2sms.policy.v1.CompiledSender`, the same
//! message `ResolveSender` returns, so the index and Postgres agree by construction.
//!
//! | key | type | content |
//! |---|---|---|
//! | `P policy:email:<normalised address>` | string | the matchable email entry (enabled, not deleted) |
//! | `P policy:domain:<normalised domain>` | string | the VERIFIED domain entry (exact domain only) |
//! | `P policy:ip` | hash | field = canonical CIDR (`203.0.113.0/24`, `198.51.100.7/32`), value = the IP entry |
//! | `P policy:version` | string | decimal compile version of the data in Redis |
//! | `P policy:keyver` | hash | field = `email:<a>`, `domain:<d>` or `ip:<cidr>`, value = version that last wrote it |
//! | `P policy:invalidations` | channel | protobuf `email2sms.queue.v1.PolicyCacheInvalidated` after every change |
//!
//! (`P policy:email:…` means the prefix immediately followed by `policy:email:…`.) [`KeyLayout`]
//! builds every one of these names; nothing else spells them.
//!
//! # Resolution order
//!
//! [`resolve`]: the email entry of the From address; else the entry of the exact From domain
//! ([`email2sms_domain::DomainName::covers_exactly`]: `sales.example.com` is not covered by
//! `example.com`); else the IP entry with the longest prefix containing the client IP. A matched
//! entry that is not ready is returned, not skipped, so the refusal can say why. [`Reader`] reads
//! the steps straight from Redis; ingest puts its in-process cache in front of the same reader by
//! implementing [`Lookups`] itself.
//!
//! # Writing
//!
//! [`Writer`] applies guarded writes: each key remembers (in `P policy:keyver`) the compile version
//! that last wrote it, and an older version never overwrites a newer one, so two concurrent
//! recompiles can never leave the older answer in Redis.

mod error;
mod keys;
mod reader;
mod value;
mod writer;

pub use error::{Error, Result};
pub use keys::{DEFAULT_PREFIX, KeyLayout, cidr_text};
pub use reader::{IpTable, Lookups, Reader, Resolved, resolve};
pub use value::{belongs_to, decode, encode};
pub use writer::{Live, Write, Writer};
