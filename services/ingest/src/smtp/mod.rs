//! The SMTP server mail relays deliver to (RFC 5321 with PIPELINING, SIZE, 8BITMIME, SMTPUTF8,
//! ENHANCEDSTATUSCODES, STARTTLS, XCLIENT and the PROXY protocol).
//!
//! Layers, each testable alone: [`command`] parses lines without I/O; [`conn`] reads lines and
//! the DATA block; [`session`] is the conversation's state machine; [`server`] admits and runs
//! sessions. What happens to an accepted message is a [`handler::MessageHandler`]'s decision.

pub mod command;
pub mod conn;
pub mod handler;
pub mod proxy;
pub mod reply;
pub mod server;
pub mod session;
pub mod tls;

pub use handler::{ClientInfo, Envelope, MessageHandler, NotReadyHandler};
pub use reply::Reply;
pub use server::{ConnectionLimits, serve};
pub use session::{Limits, Session, SessionConfig, SessionEnd};
