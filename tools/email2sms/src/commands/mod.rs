//! The subcommands that do over gRPC what the portal does, and over AMQP what the operator does,
//! one module per family.

pub mod company;
pub mod email;
pub mod ip;
pub mod messages;
pub mod policy;
pub mod user;
