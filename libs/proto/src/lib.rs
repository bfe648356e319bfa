//! Generated gRPC and queue types for every email2sms.*.v1 package, re-exporting tonic and prost.
//!
//! The `.proto` sources live in `proto/` at the repository root; `build.rs`
//! compiles them with `protox` (no `protoc` needed) and `tonic-prost-build`.
//!
//! * Server traits have default methods that answer `UNIMPLEMENTED`, so a
//!   service can `impl PolicyService for Svc {}` and fill in RPCs one by one.
//! * Clients are generated with transport support (`XxxClient::connect`).
//! * [`FILE_DESCRIPTOR_SET`] feeds `tonic-reflection` (v1 and v1alpha).
#![forbid(unsafe_code)]

pub use prost;
pub use prost_types;
pub use tonic;

/// The encoded `google.protobuf.FileDescriptorSet` of every email2sms proto
/// file and its imports (well-known types included), with source info.
/// Register it with `tonic_reflection::server::Builder::register_encoded_file_descriptor_set`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/email2sms_descriptor.bin"));

/// `email2sms.policy.*`: the admin API and internal sender resolution.
pub mod policy {
    /// `email2sms.policy.v1`.
    #[allow(
        missing_docs,
        missing_debug_implementations,
        unused_variables,
        clippy::all,
        clippy::pedantic,
        clippy::nursery
    )]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/email2sms.policy.v1.rs"));
    }
}

/// `email2sms.verification.*`: DNS TXT domain ownership challenges.
pub mod verification {
    /// `email2sms.verification.v1`.
    #[allow(
        missing_docs,
        missing_debug_implementations,
        unused_variables,
        clippy::all,
        clippy::pedantic,
        clippy::nursery
    )]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/email2sms.verification.v1.rs"));
    }
}

/// `email2sms.dispatch.*`: SMS status queries.
pub mod dispatch {
    /// `email2sms.dispatch.v1`.
    #[allow(
        missing_docs,
        missing_debug_implementations,
        unused_variables,
        clippy::all,
        clippy::pedantic,
        clippy::nursery
    )]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/email2sms.dispatch.v1.rs"));
    }
}

/// `email2sms.ingest.*`: the Diagnose call.
pub mod ingest {
    /// `email2sms.ingest.v1`.
    #[allow(
        missing_docs,
        missing_debug_implementations,
        unused_variables,
        clippy::all,
        clippy::pedantic,
        clippy::nursery
    )]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/email2sms.ingest.v1.rs"));
    }
}

/// `email2sms.queue.*`: RabbitMQ payloads (SMS job, events) and the Redis
/// invalidation message.
pub mod queue {
    /// `email2sms.queue.v1`.
    #[allow(
        missing_docs,
        missing_debug_implementations,
        unused_variables,
        clippy::all,
        clippy::pedantic,
        clippy::nursery
    )]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/email2sms.queue.v1.rs"));

        /// Routing key (event name) of [`DomainVerificationChanged`].
        pub const DOMAIN_VERIFICATION_CHANGED_ROUTING_KEY: &str = "domain.verification.changed";
        /// Routing key (event name) of [`SenderIpSeen`].
        pub const SENDER_IP_SEEN_ROUTING_KEY: &str = "sender.ip_seen";
        /// Routing key (event name) of [`SmsStatusChanged`].
        pub const SMS_STATUS_CHANGED_ROUTING_KEY: &str = "sms.status.changed";
        /// AMQP `content_type` of every payload of this package.
        pub const CONTENT_TYPE: &str = "application/protobuf";
        /// AMQP `type` property of an [`SmsJob`] message (its full proto name).
        pub const SMS_JOB_TYPE: &str = "email2sms.queue.v1.SmsJob";
        /// AMQP `type` of [`DomainVerificationChanged`].
        pub const DOMAIN_VERIFICATION_CHANGED_TYPE: &str =
            "email2sms.queue.v1.DomainVerificationChanged";
        /// AMQP `type` of [`SenderIpSeen`].
        pub const SENDER_IP_SEEN_TYPE: &str = "email2sms.queue.v1.SenderIpSeen";
        /// AMQP `type` of [`SmsStatusChanged`].
        pub const SMS_STATUS_CHANGED_TYPE: &str = "email2sms.queue.v1.SmsStatusChanged";
    }
}
