//! The byte level of a session: buffered reading of command lines and of the DATA block, batched
//! replies for pipelining, the STARTTLS upgrade, timeouts and the shutdown interrupt.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::reply::Reply;

/// Where the server is in its life; sessions watch it to know when to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Running,
    /// SIGTERM: no new connections; sessions between transactions close, the others finish.
    Draining,
    /// The grace period is over: every session closes at its next read.
    Closing,
}

/// The stream, plain or inside TLS after STARTTLS.
enum Transport<S> {
    Plain(S),
    Tls(Box<TlsStream<S>>),
    /// Only between taking the plain stream and getting the TLS one back; a failed handshake
    /// leaves it so, and the session ends.
    Upgrading,
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Transport<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Transport::Upgrading => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Transport<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Transport::Upgrading => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Transport::Upgrading => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Transport::Upgrading => Poll::Ready(Ok(())),
        }
    }
}

/// Why a read did not produce what was asked for.
#[derive(Debug)]
pub enum Interrupted {
    /// The client closed the connection.
    Eof,
    /// The client was silent for longer than the timeout.
    Timeout,
    /// The server is shutting down.
    Shutdown,
    Io(io::Error),
}

/// One command line, or the fact that it was too long (and has been skipped).
#[derive(Debug, PartialEq, Eq)]
pub enum CommandLine {
    Line(Vec<u8>),
    TooLong,
}

/// The outcome of reading a DATA block to its end.
#[derive(Debug, PartialEq, Eq)]
pub enum DataBlock {
    Message(Vec<u8>),
    /// Larger than the limit; read to its end and dropped.
    TooBig,
    /// A line longer than the limit; read to its end and dropped.
    LineTooLong,
    /// So far beyond the limit that reading on would only feed a flood: the session must end.
    Flood,
}

/// Read size: large enough that a DATA block arrives in few reads.
const READ_CHUNK: usize = 16 * 1024;

pub struct Conn<S> {
    io: Transport<S>,
    /// Received, not yet consumed bytes are `input[start..]`.
    input: Vec<u8>,
    start: usize,
    /// Replies not yet written: pipelined commands get their replies in one write (RFC 2920).
    output: Vec<u8>,
    phase: watch::Receiver<Phase>,
}

impl<S> std::fmt::Debug for Conn<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("buffered", &(self.input.len() - self.start))
            .field("pending_output", &self.output.len())
            .finish()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    pub fn new(stream: S, phase: watch::Receiver<Phase>) -> Conn<S> {
        Conn {
            io: Transport::Plain(stream),
            input: Vec::with_capacity(1024),
            start: 0,
            output: Vec::with_capacity(1024),
            phase,
        }
    }

    /// Bytes received and not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.input[self.start..]
    }

    pub fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.input.len() {
            self.input.clear();
            self.start = 0;
        }
    }

    /// Queues a reply; it is written before the next read blocks, or by [`Conn::flush`].
    pub fn reply(&mut self, reply: &Reply) {
        self.output.extend_from_slice(&reply.to_wire());
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.output.is_empty() {
            self.io.write_all(&self.output).await?;
            self.io.flush().await?;
            self.output.clear();
        }
        Ok(())
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Reads more bytes into the buffer, first writing any queued replies (the client may be
    /// waiting for them before it sends more). Gives up at `deadline` or when the server reaches
    /// `stop_at`.
    async fn fill(&mut self, deadline: Instant, stop_at: Phase) -> Result<(), Interrupted> {
        self.flush().await.map_err(Interrupted::Io)?;
        if self.start > 0 && self.start * 2 > self.input.capacity() {
            self.input.drain(..self.start);
            self.start = 0;
        }
        let mut phase = self.phase.clone();
        // `read_buf` appends only what was read, so a read cancelled by the timeout or the
        // shutdown leaves the buffer as it was.
        self.input.reserve(READ_CHUNK);
        let read = self.io.read_buf(&mut self.input);
        tokio::select! {
            biased;
            result = phase.wait_for(|p| *p >= stop_at) => {
                // A closed channel means the server is gone: stop as well.
                let _ = result;
                Err(Interrupted::Shutdown)
            }
            result = tokio::time::timeout_at(deadline, read) => match result {
                Err(_) => Err(Interrupted::Timeout),
                Ok(Err(error)) => Err(Interrupted::Io(error)),
                Ok(Ok(0)) => Err(Interrupted::Eof),
                Ok(Ok(_)) => Ok(()),
            },
        }
    }

    /// Waits until at least `n` bytes are buffered or `wait` has passed, for peeking at the
    /// start of a connection. Returns false on timeout or end of input.
    pub async fn wait_for_bytes(&mut self, n: usize, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        while self.buffered().len() < n {
            if self.fill(deadline, Phase::Closing).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Reads until `done(buffered)` holds, for the PROXY header.
    pub async fn fill_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&[u8]) -> bool,
    ) -> Result<(), Interrupted> {
        let deadline = Instant::now() + timeout;
        while !done(self.buffered()) {
            self.fill(deadline, Phase::Closing).await?;
        }
        Ok(())
    }

    /// Reads one command line, ended by LF (a CR before it is dropped). Lines longer than
    /// `max_len` are skipped to their end and reported, so the session stays in step with the client.
    pub async fn read_command(
        &mut self,
        max_len: usize,
        timeout: Duration,
        stop_at: Phase,
    ) -> Result<CommandLine, Interrupted> {
        let deadline = Instant::now() + timeout;
        let mut too_long = false;
        loop {
            let buffered = self.buffered();
            if let Some(pos) = buffered.iter().position(|&b| b == b'\n') {
                let mut line = &buffered[..pos];
                if let Some(stripped) = line.strip_suffix(b"\r") {
                    line = stripped;
                }
                let result = if too_long || line.len() + 2 > max_len {
                    CommandLine::TooLong
                } else {
                    CommandLine::Line(line.to_vec())
                };
                self.consume(pos + 1);
                return Ok(result);
            }
            if buffered.len() > max_len {
                // Keep memory bounded: drop what we have and remember to skip the rest.
                too_long = true;
                let n = buffered.len();
                self.consume(n);
            }
            self.fill(deadline, stop_at).await?;
        }
    }

    /// Reads a DATA block after the 354 reply: lines end only with CRLF, the block ends only
    /// with a line holding a single dot (CRLF `.` CRLF), and a leading dot of any other line is
    /// removed (RFC 5321 §4.5.2). A bare LF or CR is content, never a line end, so `\n.\n` or
    /// `\r\n.\n` cannot end the message and smuggle a second one behind it.
    pub async fn read_data(
        &mut self,
        max_size: usize,
        max_line_len: usize,
        idle_timeout: Duration,
    ) -> Result<DataBlock, Interrupted> {
        let mut message = Vec::new();
        let mut received = 0usize;
        let mut too_big = false;
        let mut line_too_long = false;
        // Whether the buffer start is the start of a line (the DATA command's CRLF counts).
        let mut line_start = true;
        // Bytes of the current line already consumed because it was too long to keep.
        let mut line_len = 0usize;
        // Beyond this, a sender ignoring the limit is flooding us; stop reading.
        let flood_limit = max_size.saturating_mul(2).saturating_add(1 << 20);
        loop {
            let buffered = &self.input[self.start..];
            match find_crlf(buffered) {
                Some(pos) => {
                    let line = &buffered[..pos];
                    if line_start && line == b"." {
                        self.consume(pos + 2);
                        break;
                    }
                    let content = if line_start && line.first() == Some(&b'.') {
                        &line[1..]
                    } else {
                        line
                    };
                    line_len += pos + 2;
                    received += content.len() + 2;
                    if line_len > max_line_len {
                        line_too_long = true;
                    }
                    if received > max_size {
                        too_big = true;
                    }
                    if !too_big && !line_too_long {
                        message.extend_from_slice(content);
                        message.extend_from_slice(b"\r\n");
                    }
                    self.consume(pos + 2);
                    line_start = true;
                    line_len = 0;
                }
                None => {
                    // No line end yet. Keep a trailing CR (it may start the CRLF) and, when the
                    // partial line is already too long or too big to keep, drop the rest now so
                    // memory stays bounded.
                    let keep = usize::from(buffered.ends_with(b"\r"));
                    let partial = buffered.len() - keep;
                    if partial > 0
                        && (line_len + partial > max_line_len || received + partial > max_size)
                    {
                        // A lone "." at the start could still be the end marker's dot.
                        let dot = usize::from(line_start && buffered[0] == b'.');
                        if !(dot == 1 && partial == 1) {
                            received += partial - dot;
                            line_len += partial;
                            line_too_long |= line_len > max_line_len;
                            too_big |= received > max_size;
                            line_start = false;
                            self.consume(partial);
                        }
                    }
                    if received > flood_limit {
                        return Ok(DataBlock::Flood);
                    }
                    self.fill(Instant::now() + idle_timeout, Phase::Closing)
                        .await?;
                }
            }
        }
        Ok(if too_big {
            DataBlock::TooBig
        } else if line_too_long {
            DataBlock::LineTooLong
        } else {
            DataBlock::Message(message)
        })
    }

    /// Upgrades to TLS after the 220 reply to STARTTLS. Anything the client sent after STARTTLS
    /// in the clear is discarded first: it must not be taken as if it came inside TLS (the
    /// STARTTLS command injection of CVE-2011-0411).
    pub async fn start_tls(&mut self, acceptor: &TlsAcceptor, timeout: Duration) -> io::Result<()> {
        self.flush().await?;
        let discarded = self.buffered().len();
        if discarded > 0 {
            tracing::warn!(
                bytes = discarded,
                "discarding plaintext sent after STARTTLS"
            );
        }
        self.input.clear();
        self.start = 0;
        let Transport::Plain(stream) = std::mem::replace(&mut self.io, Transport::Upgrading) else {
            return Err(io::Error::other("TLS is already active"));
        };
        let tls = tokio::time::timeout(timeout, acceptor.accept(stream))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        self.io = Transport::Tls(Box::new(tls));
        Ok(())
    }

    /// Writes what is queued and closes the connection.
    pub async fn close(&mut self) {
        let _ = self.flush().await;
        let _ = self.io.shutdown().await;
    }
}

fn find_crlf(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|w| w == b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tokio::io::AsyncWriteExt;

    /// Reads one DATA block from `wire`, delivered one byte per read so every chunk boundary
    /// (inside CRLF, between a line start and its dot) is exercised.
    fn read_data_bytewise(wire: Vec<u8>, max_size: usize) -> (DataBlock, Vec<u8>) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let (mut client, server) = tokio::io::duplex(1);
            let (_phase, phase_rx) = watch::channel(Phase::Running);
            let writer = tokio::spawn(async move {
                client.write_all(&wire).await.unwrap();
                client
            });
            let mut conn = Conn::new(server, phase_rx);
            let block = conn
                .read_data(max_size, 1000, Duration::from_secs(5))
                .await
                .unwrap();
            drop(writer);
            let rest = conn.buffered().to_vec();
            (block, rest)
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { cases: 64, ..Default::default() })]

        /// Dot-stuffing then reading gives back the exact lines, whatever they contain and however
        /// the bytes are split.
        #[test]
        fn dot_stuffing_round_trips(
            lines in proptest::collection::vec(
                proptest::collection::vec(proptest::sample::select(b".a\r\n".to_vec()), 0..8)
                    // A line cannot contain CRLF: turn the LF of any CRLF into a letter.
                    .prop_map(|mut line| {
                        for i in 1..line.len() {
                            if line[i - 1] == b'\r' && line[i] == b'\n' {
                                line[i] = b'b';
                            }
                        }
                        line
                    }),
                0..12,
            )
        ) {
            let mut wire = Vec::new();
            let mut expected = Vec::new();
            for line in &lines {
                if line.first() == Some(&b'.') {
                    wire.push(b'.');
                }
                wire.extend_from_slice(line);
                wire.extend_from_slice(b"\r\n");
                expected.extend_from_slice(line);
                expected.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(b".\r\nNOOP");
            let (block, rest) = read_data_bytewise(wire, 1 << 20);
            proptest::prop_assert_eq!(block, DataBlock::Message(expected));
            // Nothing after the end marker was taken as content (it may not all have arrived).
            proptest::prop_assert!(b"NOOP".starts_with(&rest));
        }
    }

    #[test]
    fn a_message_over_the_size_is_read_to_its_end_and_dropped() {
        let mut wire = b"x".repeat(5000);
        wire.extend_from_slice(b"\r\n.\r\n");
        let (block, _) = read_data_bytewise(wire, 1000);
        assert_eq!(block, DataBlock::TooBig);
    }
}
