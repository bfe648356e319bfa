//! One SMTP conversation (RFC 5321) as a state machine over any `AsyncRead + AsyncWrite`, so the
//! tests drive it through `tokio::io::duplex` and the server through TCP (or TLS after STARTTLS).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use email2sms_domain::DomainName;
use futures::FutureExt;
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::budget::{BufferBudget, MIN_RESERVATION};
use super::command::{
    self, BodyType, Command, CommandError, MailParams, Mailbox, ReversePath, XclientAttribute,
    XforwardAttribute,
};
use super::conn::{CommandLine, Conn, Deadline, Interrupted, Phase};
use super::data::{BareLf, DataBlock, DataDecoder, DataLimits};
use super::handler::{ClientInfo, Envelope, MessageHandler, ReceivedMessage};
use super::proxy::{self, ProxyHeader};
use super::recipient_address;
use super::relay::{self, RelayCommand};
use super::reply::Reply;

/// The limits a session enforces; each has its own reply.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest message accepted, in bytes (announced as SIZE; 552 5.3.4 above it).
    pub max_message_size: usize,
    /// Recipients per message (452 4.5.3 for the next one).
    pub max_recipients: usize,
    /// Longest line, CRLF included, in commands (500 5.5.2) and in the message (552 5.3.4).
    pub max_line_length: usize,
    /// How long the client may take to send a command (421 4.4.2).
    pub command_timeout: Duration,
    /// How long the client may be silent while sending the message (421 4.4.2).
    pub data_timeout: Duration,
    /// How long one message may take from the 354 to its end, however steadily it trickles in
    /// (421 4.4.2): the silence timeout alone restarts with every byte.
    pub data_deadline: Duration,
    /// How long a write of our replies may take before the session is dropped: a client that
    /// pipelines commands and never reads the replies blocks it once the socket buffers are full.
    pub write_timeout: Duration,
    /// How long one session may last, whatever it does (421 4.4.2).
    pub max_session_duration: Duration,
    /// What to do with a bare LF inside a message.
    pub bare_lf: BareLf,
    /// Protocol errors tolerated before the session is closed (421 4.7.0).
    pub max_bad_commands: u32,
    /// How long to wait, on a connection from a trusted relay, for a PROXY protocol header
    /// before greeting; zero disables the PROXY protocol.
    pub proxy_wait: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 100,
            max_line_length: 1000,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            data_deadline: Duration::from_secs(600),
            write_timeout: Duration::from_secs(60),
            max_session_duration: Duration::from_secs(1800),
            bare_lf: BareLf::Refuse,
            max_bad_commands: 20,
            proxy_wait: Duration::from_millis(300),
        }
    }
}

/// What every session of one server shares.
#[derive(Clone)]
pub struct SessionConfig {
    /// The name in the greeting and the EHLO reply.
    pub hostname: String,
    /// Recipient domains accepted; anything else is relaying and refused.
    pub sms_domains: Vec<DomainName>,
    /// Peers allowed to state the real client (XCLIENT, XFORWARD, PROXY).
    pub trusted_relays: Vec<IpNet>,
    /// STARTTLS is offered only when set.
    pub tls: Option<TlsAcceptor>,
    pub limits: Limits,
    /// Bytes of message content all sessions together may hold.
    pub budget: Arc<BufferBudget>,
}

impl std::fmt::Debug for SessionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionConfig")
            .field("hostname", &self.hostname)
            .field("sms_domains", &self.sms_domains)
            .field("trusted_relays", &self.trusted_relays)
            .field("starttls", &self.tls.is_some())
            .field("limits", &self.limits)
            .field("budget", &self.budget.total())
            .finish()
    }
}

impl SessionConfig {
    pub fn is_trusted_relay(&self, ip: std::net::IpAddr) -> bool {
        let ip = email2sms_domain::canonical_ip(ip);
        self.trusted_relays.iter().any(|net| net.contains(&ip))
    }
}

/// How the conversation started (RFC 5321 §4.1.1.1): EHLO enables the extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Greeting {
    Helo,
    Ehlo,
}

#[derive(Debug)]
struct Transaction {
    reverse_path: ReversePath,
    params: MailParams,
    recipients: Vec<Mailbox>,
}

/// How a session ended, for the log.
#[derive(Debug, PartialEq, Eq)]
pub enum SessionEnd {
    Quit,
    ClientClosed,
    Timeout(Deadline),
    /// The client did not read our replies within the write timeout.
    WriteTimeout,
    Shutdown,
    TooManyErrors,
    ProxyRefused,
    Flood,
    TlsFailed,
    Io(String),
}

pub struct Session<S, H> {
    conn: Conn<S>,
    config: Arc<SessionConfig>,
    handler: Arc<H>,
    client: ClientInfo,
    /// Whether the TCP peer is a trusted relay (decides XCLIENT, XFORWARD and PROXY).
    trusted_peer: bool,
    /// While XFORWARD attributes stand for the next transaction (in `client`), the session's own
    /// client, restored when that transaction ends (see [`relay`]).
    before_xforward: Option<ClientInfo>,
    /// The HELO name came from XCLIENT; the relay's own EHLO must not replace it.
    helo_from_relay: bool,
    greeting: Option<Greeting>,
    transaction: Option<Transaction>,
    bad_commands: u32,
}

impl<S, H> std::fmt::Debug for Session<S, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("client", &self.client)
            .field("greeting", &self.greeting)
            .finish()
    }
}

/// What the loop does after a command.
enum Next {
    Continue,
    Close(SessionEnd),
}

impl<S, H> Session<S, H>
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: MessageHandler,
{
    pub fn new(
        stream: S,
        peer: std::net::SocketAddr,
        config: Arc<SessionConfig>,
        handler: Arc<H>,
        phase: watch::Receiver<Phase>,
    ) -> Self {
        let trusted_peer = config.is_trusted_relay(peer.ip());
        let limits = &config.limits;
        let conn = Conn::with_deadlines(
            stream,
            phase,
            limits.write_timeout,
            Instant::now() + limits.max_session_duration,
        );
        Session {
            conn,
            config,
            handler,
            client: ClientInfo::from_peer(peer),
            trusted_peer,
            before_xforward: None,
            helo_from_relay: false,
            greeting: None,
            transaction: None,
            bad_commands: 0,
        }
    }

    fn limits(&self) -> &Limits {
        &self.config.limits
    }

    /// Runs the conversation to its end.
    pub async fn run(mut self) -> SessionEnd {
        let _open = crate::metrics::OpenSession::start();
        let end = self.converse().await;
        self.conn.close().await;
        end
    }

    async fn converse(&mut self) -> SessionEnd {
        if let Err(end) = self.read_proxy_header().await {
            return end;
        }
        self.conn.reply(&self.greeting_reply());
        let mut first_command = true;
        loop {
            // Between transactions a draining server closes at once; inside one it lets the
            // client finish until the grace period ends.
            let stop_at = if self.transaction.is_some() {
                Phase::Closing
            } else {
                Phase::Draining
            };
            let limits = self.limits().clone();
            let line = self
                .conn
                .read_command(limits.max_line_length, limits.command_timeout, stop_at)
                .await;
            let line = match line {
                Ok(line) => line,
                Err(interrupted) => return self.interrupted(interrupted),
            };
            if first_command {
                first_command = false;
                if let Some(end) = self.refuse_untrusted_proxy(&line) {
                    return end;
                }
            }
            let next = match line {
                CommandLine::TooLong => self.bad_command(Reply::new(
                    500,
                    "5.5.2",
                    format!(
                        "line too long: commands may be at most {} characters",
                        limits.max_line_length
                    ),
                )),
                CommandLine::Line(line) => match command::parse_command(&line) {
                    Ok(command) => self.execute(command).await,
                    Err(error) => self.bad_command(syntax_reply(&error)),
                },
            };
            if let Next::Close(end) = next {
                return end;
            }
        }
    }

    fn greeting_reply(&self) -> Reply {
        Reply::plain(
            220,
            format!("{} ESMTP Email2SMS gateway ready", self.config.hostname),
        )
    }

    /// Replies 421 for an interrupted read and ends the session.
    fn interrupted(&mut self, interrupted: Interrupted) -> SessionEnd {
        match interrupted {
            Interrupted::Eof => SessionEnd::ClientClosed,
            Interrupted::Io(error) => SessionEnd::Io(error.to_string()),
            Interrupted::WriteTimeout => SessionEnd::WriteTimeout,
            Interrupted::Timeout(deadline) => {
                let host = &self.config.hostname;
                let text = match deadline {
                    Deadline::Idle => {
                        format!("{host} timeout: no data for too long; closing the connection")
                    }
                    Deadline::WholeData => format!(
                        "{host} timeout: the message took longer than {} to arrive; closing the connection, your server will retry",
                        shown_duration(self.limits().data_deadline)
                    ),
                    Deadline::Session => format!(
                        "{host}: this connection has lasted {}, the longest allowed; closing it, connect again to send more",
                        shown_duration(self.limits().max_session_duration)
                    ),
                };
                self.conn.reply(&Reply::new(421, "4.4.2", text));
                SessionEnd::Timeout(deadline)
            }
            Interrupted::Shutdown => {
                self.conn.reply(&Reply::new(
                    421,
                    "4.3.2",
                    format!(
                        "{} is restarting; please try again in a moment",
                        self.config.hostname
                    ),
                ));
                SessionEnd::Shutdown
            }
        }
    }

    /// On a connection from a trusted relay, a PROXY protocol header (v1 or v2) may come first
    /// and names the real client. The relay speaks before the greeting, so wait briefly for it.
    async fn read_proxy_header(&mut self) -> Result<(), SessionEnd> {
        if !self.trusted_peer || self.limits().proxy_wait.is_zero() {
            return Ok(());
        }
        let wait = self.limits().proxy_wait;
        if !self.conn.wait_for_bytes(1, wait).await
            || !proxy::looks_like_proxy(self.conn.buffered())
        {
            return Ok(());
        }
        let timeout = self.limits().command_timeout;
        let filled = self
            .conn
            .fill_until(timeout, |bytes| {
                !matches!(proxy::parse(bytes), proxy::Parsed::Incomplete)
            })
            .await;
        if let Err(interrupted) = filled {
            return Err(self.interrupted(interrupted));
        }
        match proxy::parse(self.conn.buffered()) {
            proxy::Parsed::Complete { header, len } => {
                self.conn.consume(len);
                if let ProxyHeader::Client(client) = header {
                    self.client.ip = email2sms_domain::canonical_ip(client.ip());
                    self.client.port = Some(client.port());
                    self.client.stated_by_relay = true;
                }
                tracing::debug!(client = %self.client.ip, "PROXY header from trusted relay");
                Ok(())
            }
            proxy::Parsed::NotProxy => Ok(()),
            // Incomplete cannot remain after `fill_until`; treat it as malformed all the same.
            parsed @ (proxy::Parsed::Invalid(_) | proxy::Parsed::Incomplete) => {
                let reason = match parsed {
                    proxy::Parsed::Invalid(reason) => reason,
                    _ => "incomplete PROXY header",
                };
                tracing::warn!(reason, "refusing a malformed PROXY header");
                self.conn.reply(&Reply::new(
                    421,
                    "4.7.0",
                    format!("malformed PROXY protocol header ({reason}); closing"),
                ));
                Err(SessionEnd::ProxyRefused)
            }
        }
    }

    /// A PROXY header as the first thing an untrusted peer sends: it claims to speak for another
    /// client, which only a trusted relay may do. Refuse and close (a v2 header is binary, so the
    /// stream cannot be resynchronised).
    fn refuse_untrusted_proxy(&mut self, line: &CommandLine) -> Option<SessionEnd> {
        let CommandLine::Line(line) = line else {
            return None;
        };
        let v1 = line.starts_with(proxy::V1_PREFIX);
        // A v2 signature starts with CRLF CRLF NUL: an empty line followed by "\r\n\0".
        let v2 = line.is_empty() && self.conn.buffered().starts_with(b"\r\n\0");
        if !(v1 || v2) {
            return None;
        }
        tracing::warn!(peer = %self.client.peer, "PROXY header from an untrusted peer");
        self.conn.reply(&Reply::new(
            550,
            "5.7.0",
            "PROXY protocol headers are accepted only from trusted relays; closing",
        ));
        Some(SessionEnd::ProxyRefused)
    }

    /// Counts a protocol error; too many end the session (a confused or hostile client).
    fn bad_command(&mut self, reply: Reply) -> Next {
        self.bad_commands += 1;
        if self.bad_commands >= self.limits().max_bad_commands {
            self.conn.reply(&Reply::new(
                421,
                "4.7.0",
                "too many errors in this session; closing the connection",
            ));
            return Next::Close(SessionEnd::TooManyErrors);
        }
        self.conn.reply(&reply);
        Next::Continue
    }

    fn reply(&mut self, reply: Reply) -> Next {
        self.conn.reply(&reply);
        Next::Continue
    }

    async fn execute(&mut self, command: Command) -> Next {
        match command {
            Command::Ehlo(name) => self.hello(name, Greeting::Ehlo),
            Command::Helo(name) => self.hello(name, Greeting::Helo),
            Command::Mail { from, params } => self.mail(from, params).await,
            Command::Rcpt { to } => self.rcpt(to),
            Command::Data => self.data().await,
            Command::Rset => {
                self.end_transaction();
                self.reply(Reply::ok("OK"))
            }
            Command::Noop => self.reply(Reply::ok("OK")),
            Command::Help => self.reply(Reply::new(
                214,
                "2.0.0",
                "this gateway turns mail to <phone number>@<SMS domain> into SMS; see RFC 5321 for the commands",
            )),
            // Verifying a phone number here would tell nothing useful and helps harvesting.
            Command::Vrfy => self.reply(Reply::new(
                252,
                "2.5.0",
                "cannot verify the address, but will try delivery",
            )),
            Command::Quit => {
                self.conn.reply(&Reply::new(
                    221,
                    "2.0.0",
                    format!("{} closing connection", self.config.hostname),
                ));
                Next::Close(SessionEnd::Quit)
            }
            Command::StartTls => self.start_tls().await,
            Command::Xclient(attributes) => self.xclient(attributes),
            Command::Xforward(attributes) => self.xforward(attributes),
        }
    }

    /// Ends the mail transaction, if any, and with it what XFORWARD said about its client;
    /// returns the client the transaction was for.
    fn end_transaction(&mut self) -> ClientInfo {
        self.transaction = None;
        match self.before_xforward.take() {
            Some(own) => std::mem::replace(&mut self.client, own),
            None => self.client.clone(),
        }
    }

    fn hello(&mut self, name: String, greeting: Greeting) -> Next {
        // EHLO/HELO resets any transaction (RFC 5321 §4.1.4).
        self.end_transaction();
        self.greeting = Some(greeting);
        if !self.helo_from_relay {
            self.client.helo = Some(name.clone());
        }
        if greeting == Greeting::Helo {
            return self.reply(Reply::plain(
                250,
                format!("{} greets {}", self.config.hostname, command::shown(&name)),
            ));
        }
        let mut lines = vec![
            format!("{} greets {}", self.config.hostname, command::shown(&name)),
            "PIPELINING".to_owned(),
            format!("SIZE {}", self.limits().max_message_size),
            "8BITMIME".to_owned(),
            "SMTPUTF8".to_owned(),
            "ENHANCEDSTATUSCODES".to_owned(),
        ];
        if self.config.tls.is_some() && !self.client.tls {
            lines.push("STARTTLS".to_owned());
        }
        if self.trusted_peer {
            lines.push(relay::XCLIENT_KEYWORD.to_owned());
            lines.push(relay::XFORWARD_KEYWORD.to_owned());
        }
        self.reply(Reply::plain(250, lines.join("\n")))
    }

    async fn mail(&mut self, from: ReversePath, params: MailParams) -> Next {
        if self.greeting.is_none() {
            return self.bad_command(Reply::new(503, "5.5.1", "say EHLO (or HELO) first"));
        }
        if self.transaction.is_some() {
            return self.bad_command(Reply::new(
                503,
                "5.5.1",
                "a message is already in progress; send RSET to start over",
            ));
        }
        let max = self.limits().max_message_size;
        if params.size.is_some_and(|size| size > max as u64) {
            return self.reply(too_big_reply(max));
        }
        if let ReversePath::Mailbox(mailbox) = &from
            && !mailbox.is_ascii()
            && !params.smtputf8
        {
            return self.reply(Reply::new(
                553,
                "5.6.7",
                "the sender address has non-ASCII characters; send it with the SMTPUTF8 parameter",
            ));
        }
        let early = AssertUnwindSafe(self.handler.check_sender(&self.client, &from))
            .catch_unwind()
            .await;
        match early {
            Ok(Some(refusal)) => {
                tracing::info!(client = %self.client.ip, %from, reply = %refusal, "sender refused");
                return self.reply(refusal);
            }
            Ok(None) => {}
            Err(_) => {
                tracing::error!("the message handler panicked checking a sender");
                return self.reply(unavailable_reply());
            }
        }
        self.transaction = Some(Transaction {
            reverse_path: from,
            params,
            recipients: Vec::new(),
        });
        self.reply(Reply::new(250, "2.1.0", "sender OK"))
    }

    fn rcpt(&mut self, to: Mailbox) -> Next {
        let max_recipients = self.limits().max_recipients;
        let Some(transaction) = &self.transaction else {
            return self.bad_command(Reply::new(503, "5.5.1", "send MAIL FROM before RCPT TO"));
        };
        if !to.is_ascii() && !transaction.params.smtputf8 {
            return self.reply(Reply::new(
                553,
                "5.6.7",
                "the recipient address has non-ASCII characters; send it with the SMTPUTF8 parameter",
            ));
        }
        if let Err(refusal) = recipient_address::check(&to, &self.config.sms_domains) {
            // Support staff look for these when a user asks why no SMS went out.
            match refusal {
                recipient_address::Refusal::NotAnSmsDomain => {
                    tracing::info!(client = %self.client.ip, recipient = %to, "recipient refused: not an SMS domain")
                }
                recipient_address::Refusal::NotAPhoneNumber { .. } => {
                    tracing::info!(client = %self.client.ip, recipient = %to, "recipient refused: not a phone number")
                }
            }
            return self.reply(refusal.reply(&to, &self.config.sms_domains));
        }
        if transaction.recipients.contains(&to) {
            // The same number twice gets one SMS; the client need not know.
            return self.reply(Reply::new(250, "2.1.5", "recipient OK"));
        }
        if transaction.recipients.len() >= max_recipients {
            // 452 makes the relay send the remaining recipients in a later transaction.
            return self.reply(Reply::new(
                452,
                "4.5.3",
                format!(
                    "too many recipients: at most {max_recipients} per message; the others will be sent in another message"
                ),
            ));
        }
        if let Some(transaction) = &mut self.transaction {
            transaction.recipients.push(to);
        }
        self.reply(Reply::new(250, "2.1.5", "recipient OK"))
    }

    async fn data(&mut self) -> Next {
        let Some(transaction) = &self.transaction else {
            return self.bad_command(Reply::new(
                503,
                "5.5.1",
                "send MAIL FROM and RCPT TO before DATA",
            ));
        };
        if transaction.recipients.is_empty() {
            return self.bad_command(Reply::new(
                554,
                "5.5.1",
                "no valid recipients; nothing to send",
            ));
        }
        let limits = self.limits().clone();
        // The declared SIZE is reserved at once (most relays declare it); without one, a little,
        // grown as the message arrives.
        let declared = transaction.params.size.map_or(MIN_RESERVATION, |size| {
            usize::try_from(size).unwrap_or(usize::MAX)
        });
        let Some(mut reservation) = self
            .config
            .budget
            .reserve(declared.clamp(1, limits.max_message_size))
        else {
            tracing::warn!(
                client = %self.client.ip,
                declared,
                available = self.config.budget.available(),
                "message refused at DATA: the buffer budget is spent"
            );
            return self.reply(busy_reply());
        };
        self.conn.reply(&Reply::plain(
            354,
            "send the message; end with <CR><LF>.<CR><LF>",
        ));
        let mut decoder = DataDecoder::new(DataLimits {
            max_size: limits.max_message_size,
            max_line_len: limits.max_line_length,
            bare_lf: limits.bare_lf,
        });
        let block = self
            .conn
            .read_data(
                &mut decoder,
                &mut reservation,
                limits.data_timeout,
                Instant::now() + limits.data_deadline,
            )
            .await;
        // Whatever happens now, this transaction is over (RFC 5321 §4.1.1.4).
        let Some(transaction) = self.transaction.take() else {
            return Next::Continue;
        };
        let client = self.end_transaction();
        let message = match block {
            // A client that ends its lines with a bare LF also ends its message with `\n.\n`
            // and then waits: tell it why nothing came, permanently, rather than a 421 it would
            // retry for days.
            Err(Interrupted::Timeout(Deadline::Idle)) if decoder.line_end_defect().is_some() => {
                if let Some(block) = decoder.line_end_defect() {
                    self.conn.reply(&data_refusal(&block));
                }
                return Next::Close(SessionEnd::Timeout(Deadline::Idle));
            }
            Err(interrupted) => return Next::Close(self.interrupted(interrupted)),
            Ok(DataBlock::Flood) => {
                self.conn.reply(&too_big_reply(limits.max_message_size));
                return Next::Close(SessionEnd::Flood);
            }
            Ok(DataBlock::TooBig) => return self.reply(too_big_reply(limits.max_message_size)),
            Ok(DataBlock::LineTooLong) => {
                return self.reply(Reply::new(
                    552,
                    "5.3.4",
                    format!(
                        "the message has a line longer than {} characters, which SMTP does not allow; ask your mail administrator",
                        limits.max_line_length
                    ),
                ));
            }
            Ok(DataBlock::OverBudget) => {
                tracing::warn!(
                    client = %client.ip,
                    received = decoder.received(),
                    "message refused: the buffer budget ran out while it arrived"
                );
                return self.reply(busy_reply());
            }
            Ok(block @ (DataBlock::BareLineEnd(_) | DataBlock::FakeEndOfData)) => {
                tracing::info!(client = %client.ip, ?block, "message refused: bare line end");
                return self.reply(data_refusal(&block));
            }
            Ok(DataBlock::Message(message)) => message,
        };
        let envelope = Envelope {
            client,
            reverse_path: transaction.reverse_path,
            recipients: transaction.recipients,
            body: transaction.params.body,
            smtputf8: transaction.params.smtputf8,
            declared_size: transaction.params.size,
        };
        // Earlier pipelined replies go out now, not after the handler's work.
        if let Err(error) = self.conn.flush().await {
            return Next::Close(write_failed(&error));
        }
        let size = message.len();
        let message = ReceivedMessage::new(message, reservation);
        let received = Instant::now();
        let reply = AssertUnwindSafe(self.handler.accept(&envelope, message))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                tracing::error!("the message handler panicked; answering 451 so the relay retries");
                unavailable_reply()
            });
        crate::metrics::metrics().message_answered(&reply, received.elapsed());
        tracing::info!(
            client = %envelope.client.ip,
            relay_queue_id = envelope.client.relay_queue_id.as_deref(),
            from = %envelope.reverse_path,
            recipients = envelope.recipients.len(),
            size,
            eight_bit = matches!(envelope.body, BodyType::EightBitMime),
            reply = %reply,
            "message"
        );
        self.reply(reply)
    }

    async fn start_tls(&mut self) -> Next {
        let Some(acceptor) = self.config.tls.clone() else {
            return self.bad_command(Reply::new(502, "5.5.1", "STARTTLS is not available here"));
        };
        if self.client.tls {
            return self.bad_command(Reply::new(503, "5.5.1", "TLS is already active"));
        }
        if self.greeting.is_none() {
            return self.bad_command(Reply::new(503, "5.5.1", "say EHLO first"));
        }
        self.conn
            .reply(&Reply::new(220, "2.0.0", "ready to start TLS"));
        let timeout = self.limits().command_timeout;
        if let Err(error) = self.conn.start_tls(&acceptor, timeout).await {
            tracing::info!(%error, "TLS handshake failed");
            return Next::Close(SessionEnd::TlsFailed);
        }
        // RFC 3207 §4.2: forget everything learnt before TLS; the client starts with EHLO again.
        self.end_transaction();
        self.client.tls = true;
        self.greeting = None;
        if !self.helo_from_relay {
            self.client.helo = None;
        }
        Next::Continue
    }

    fn xclient(&mut self, attributes: Vec<XclientAttribute>) -> Next {
        let refused = relay::refusal(
            RelayCommand::Xclient,
            self.trusted_peer,
            self.transaction.is_some(),
        );
        if let Some(reply) = refused {
            if !self.trusted_peer {
                tracing::warn!(peer = %self.client.peer, "XCLIENT from an untrusted peer");
            }
            return self.bad_command(reply);
        }
        // A new client replaces the one an earlier XFORWARD described.
        self.end_transaction();
        if let Some(stated) = relay::apply_xclient(&mut self.client, attributes) {
            self.helo_from_relay = stated;
        }
        // The XCLIENT specification: the server answers as if a new client had connected,
        // and the relay says EHLO again.
        self.greeting = None;
        self.reply(self.greeting_reply())
    }

    fn xforward(&mut self, attributes: Vec<XforwardAttribute>) -> Next {
        let refused = relay::refusal(
            RelayCommand::Xforward,
            self.trusted_peer,
            self.transaction.is_some(),
        );
        if let Some(reply) = refused {
            if !self.trusted_peer {
                tracing::warn!(peer = %self.client.peer, "XFORWARD from an untrusted peer");
            }
            return self.bad_command(reply);
        }
        if self.before_xforward.is_none() {
            self.before_xforward = Some(self.client.clone());
        }
        relay::apply_xforward(&mut self.client, attributes);
        self.reply(Reply::ok("OK"))
    }
}

fn too_big_reply(max: usize) -> Reply {
    Reply::new(
        552,
        "5.3.4",
        format!(
            "the message is too big: this gateway accepts at most {max} bytes; send a shorter message without large attachments"
        ),
    )
}

/// The budget of buffered message bytes is spent: temporary, the relay keeps the mail.
fn busy_reply() -> Reply {
    Reply::new(
        452,
        "4.3.1",
        "the gateway is receiving too much mail at once; nothing was sent, and your server will try again later",
    )
}

/// A message refused for its line ends. Postfix answers `521 5.5.2 … Error: bare <LF> received`
/// and disconnects; 521 says the host takes no mail at all (RFC 7504), while this gateway has
/// read the message to its end and stays in step, so it gives the usual permanent refusal of a
/// message, 554, with the same enhanced code and words.
fn data_refusal(block: &DataBlock) -> Reply {
    let text = match block {
        DataBlock::BareLineEnd(bare) => format!(
            "Error: bare {} received: every line of a message must end with <CR><LF> (RFC 5321 section 2.3.8); nothing was sent, ask your mail administrator to fix the sending server",
            bare.as_str()
        ),
        _ => "Error: a line of a single dot next to a bare <LF> received; a message ends only with <CR><LF>.<CR><LF>, nothing was sent (the text after such a line is refused, as SMTP smuggling uses it); ask your mail administrator to fix the sending server".to_owned(),
    };
    Reply::new(554, "5.5.2", text)
}

/// A session that cannot write its replies ends; a timed-out write is the client not reading.
fn write_failed(error: &std::io::Error) -> SessionEnd {
    if error.kind() == std::io::ErrorKind::TimedOut {
        SessionEnd::WriteTimeout
    } else {
        SessionEnd::Io(error.to_string())
    }
}

/// `10m`, `90s`, `1h30m`, `250ms` for reply texts.
fn shown_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    if secs == 0 {
        return format!("{}ms", duration.as_millis());
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    for (value, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if value > 0 {
            out.push_str(&format!("{value}{unit}"));
        }
    }
    out
}

fn unavailable_reply() -> Reply {
    Reply::new(
        451,
        "4.3.0",
        "temporary problem in the gateway; your server will retry",
    )
}

fn syntax_reply(error: &CommandError) -> Reply {
    match error {
        CommandError::Unknown => Reply::new(500, "5.5.1", "command not recognised"),
        CommandError::BadEncoding => Reply::new(
            500,
            "5.5.2",
            "the command contains characters that are not allowed",
        ),
        CommandError::Syntax(text) => Reply::new(501, "5.5.4", *text),
        CommandError::BadSender(text) => {
            Reply::new(501, "5.1.7", format!("bad sender address: {text}"))
        }
        CommandError::BadRecipient(text) => {
            Reply::new(501, "5.1.3", format!("bad recipient address: {text}"))
        }
        CommandError::UnsupportedParameter(param) => {
            Reply::new(555, "5.5.4", format!("parameter {param} is not supported"))
        }
        CommandError::BadXclient(text) => Reply::new(501, "5.5.4", format!("XCLIENT: {text}")),
        CommandError::BadXforward(text) => Reply::new(501, "5.5.4", format!("XFORWARD: {text}")),
    }
}
