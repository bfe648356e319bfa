//! The seam between the SMTP server and the pipeline behind it (sender authentication, policy
//! lookup, SMS job publishing). The server owns the protocol; a [`MessageHandler`] owns the decision.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};

use super::budget::Reservation;
use super::command::{BodyType, Mailbox, ReversePath};
use super::reply::Reply;

/// Who is on the other end, as far as the server can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// The TCP peer: the client itself, or the trusted relay speaking for it.
    pub peer: SocketAddr,
    /// The real client IP: the peer, or what a trusted relay stated (XCLIENT or XFORWARD ADDR,
    /// PROXY header).
    pub ip: IpAddr,
    /// The client's source port when known.
    pub port: Option<u16>,
    /// The client's host name as its relay resolved it (XCLIENT or XFORWARD NAME); never looked
    /// up here.
    pub reverse_name: Option<String>,
    /// The EHLO/HELO name (or XCLIENT or XFORWARD HELO).
    pub helo: Option<String>,
    /// The relay's id of the message (XFORWARD IDENT, Postfix's queue id), for the log.
    pub relay_queue_id: Option<String>,
    /// Whether the client IP came from a trusted relay rather than the TCP connection.
    pub stated_by_relay: bool,
    /// Whether the session runs inside TLS (STARTTLS).
    pub tls: bool,
}

impl ClientInfo {
    pub fn from_peer(peer: SocketAddr) -> ClientInfo {
        ClientInfo {
            peer,
            ip: email2sms_domain::canonical_ip(peer.ip()),
            port: Some(peer.port()),
            reverse_name: None,
            helo: None,
            relay_queue_id: None,
            stated_by_relay: false,
            tls: false,
        }
    }
}

/// Everything about one message except its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub client: ClientInfo,
    /// MAIL FROM; [`ReversePath::Null`] for a bounce.
    pub reverse_path: ReversePath,
    /// Accepted RCPT TO addresses, each checked against the SMS domains and the phone number
    /// shape, without duplicates, in the order given.
    pub recipients: Vec<Mailbox>,
    pub body: BodyType,
    pub smtputf8: bool,
    /// SIZE= from MAIL FROM, when the client declared it.
    pub declared_size: Option<u64>,
}

/// One message as received: its content exactly as sent (dot-stuffing removed, CRLF line ends),
/// at most the configured size, together with its share of the gateway's buffer budget, which is
/// given back when the message is dropped. A handler that moves it to another thread (to parse it
/// off the async workers) keeps the budget accounted for until it is done.
#[derive(Debug)]
pub struct ReceivedMessage {
    content: Vec<u8>,
    _reservation: Option<Reservation>,
}

impl ReceivedMessage {
    pub fn new(content: Vec<u8>, reservation: Reservation) -> ReceivedMessage {
        ReceivedMessage {
            content,
            _reservation: Some(reservation),
        }
    }

    /// A message outside any budget, for tests and tools.
    pub fn unbudgeted(content: Vec<u8>) -> ReceivedMessage {
        ReceivedMessage {
            content,
            _reservation: None,
        }
    }

    pub fn content(&self) -> &[u8] {
        &self.content
    }
}

impl std::ops::Deref for ReceivedMessage {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.content
    }
}

/// The pipeline behind the SMTP server.
///
/// Replies must follow the contract in DESIGN.md: 250 only when every SMS of the message is safely
/// queued; 4xx whenever something needed is unavailable, so the relay keeps the mail and retries;
/// 5xx only for a decision that will not change on retry, with text an office user can act on.
pub trait MessageHandler: Send + Sync + 'static {
    /// Called at MAIL FROM, before any recipient. Return `Some(reply)` (4xx/5xx) to refuse the
    /// transaction early — only when it is certain that no message in it could be accepted;
    /// `None` lets the transaction continue. The default accepts.
    fn check_sender(
        &self,
        client: &ClientInfo,
        reverse_path: &ReversePath,
    ) -> impl Future<Output = Option<Reply>> + Send {
        let _ = (client, reverse_path);
        async { None }
    }

    /// Decides about one complete message. Anything slow that does not wait on I/O (parsing a
    /// 25 MB message takes seconds in a debug build) belongs off the async workers, or it stalls
    /// every other session on that worker.
    fn accept(
        &self,
        envelope: &Envelope,
        message: ReceivedMessage,
    ) -> impl Future<Output = Reply> + Send;
}

/// A handler that refuses every message with a temporary failure, so the sending server keeps it
/// and retries later: for protocol tests and for serving SMTP without the pipeline. The binary
/// runs [`crate::pipeline::Gateway`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NotReadyHandler;

impl MessageHandler for NotReadyHandler {
    async fn accept(&self, _envelope: &Envelope, _message: ReceivedMessage) -> Reply {
        Reply::new(
            451,
            "4.3.0",
            "this gateway cannot accept mail yet; your server will retry",
        )
    }
}
