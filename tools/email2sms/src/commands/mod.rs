//! The subcommands that do over gRPC what the portal does, and over AMQP what the operator does,
//! one module per family.

pub mod company;
pub mod diagnose;
pub mod domain;
pub mod email;
pub mod import;
pub mod ip;
pub mod messages;
pub mod policy;
pub mod queue;
pub mod sender_log;
pub mod user;
