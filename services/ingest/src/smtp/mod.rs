//! The SMTP server mail relays deliver to (RFC 5321 with PIPELINING, SIZE, 8BITMIME, SMTPUTF8,
//! ENHANCEDSTATUSCODES, STARTTLS, and for trusted relays XCLIENT, XFORWARD and the PROXY protocol).
//!
//! Layers, each testable alone: [`command`] parses lines and [`data`] decodes the DATA block,
//! both without I/O; [`conn`] reads lines and feeds the DATA decoder, with the read and write
//! deadlines; [`relay`] says what a trusted relay may state about the real client;
//! [`recipient_address`] is what `RCPT TO` accepts; [`session`] is the conversation's state
//! machine; [`server`] admits and runs sessions; [`budget`] bounds the message bytes buffered
//! across them. What happens to an accepted message is a [`handler::MessageHandler`]'s decision.
//!
//! No client can hold a session for ever: besides the command and DATA silence timeouts, a
//! write deadline ends a session whose client stops reading our replies, a whole-DATA deadline
//! ends a message that trickles in byte by byte, and a maximum session duration ends any session
//! (421 4.4.2 where the client can still be told).

pub mod budget;
pub mod command;
pub mod conn;
pub mod data;
pub mod handler;
pub mod proxy;
pub mod recipient_address;
pub mod relay;
pub mod reply;
pub mod server;
pub mod session;
pub mod tls;

pub use budget::BufferBudget;
pub use data::BareLf;
pub use handler::{ClientInfo, Envelope, MessageHandler, NotReadyHandler, ReceivedMessage};
pub use reply::Reply;
pub use server::{ConnectionLimits, serve};
pub use session::{Limits, Session, SessionConfig, SessionEnd};
