//! What every Email2SMS binary shares: configuration errors and exit codes, telemetry, the gRPC server
//! with health, reflection, bearer-token auth and graceful shutdown, the building blocks of
//! the services' gRPC error statuses, and per-service Postgres migrations.
#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
pub mod db;
pub mod grpc;
pub mod grpc_error;
pub mod health_check;
pub mod lifecycle;
pub mod page_token;
pub mod prober;
pub mod readiness;
pub mod secret_files;
pub mod service;
pub mod shutdown;
pub mod telemetry;

pub use config::{ConfigError, EX_UNAVAILABLE, EX_USAGE};
