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

use super::budget::Reservation;
pub use super::data::DataBlock;
use super::data::DataDecoder;
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

/// Which limit a timed-out read ran into; each has its own 421 4.4.2 text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// The client was silent for longer than the command or DATA timeout.
    Idle,
    /// The message took longer than the whole-DATA deadline, however steadily it trickled.
    WholeData,
    /// The session lasted longer than its maximum duration.
    Session,
}

/// Why a read did not produce what was asked for.
#[derive(Debug)]
pub enum Interrupted {
    /// The client closed the connection.
    Eof,
    /// A deadline passed before the client sent what was needed.
    Timeout(Deadline),
    /// The client did not read our replies within the write timeout: it cannot be told anything.
    WriteTimeout,
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
    /// Longest a write of queued replies may take: a client that stops reading (while it goes on
    /// pipelining commands) blocks our writes once the socket buffers are full.
    write_timeout: Duration,
    /// When the session must end, whatever it is doing.
    session_deadline: Instant,
    /// A write timed out: nothing more can be written (closing must not wait for it again).
    write_stuck: bool,
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
    /// A connection without a write timeout or session deadline (see [`Conn::with_deadlines`]).
    pub fn new(stream: S, phase: watch::Receiver<Phase>) -> Conn<S> {
        // About 34 years: tokio's timers take any `Instant`, and this one never comes.
        let far = Duration::from_secs(1 << 30);
        Conn::with_deadlines(stream, phase, far, Instant::now() + far)
    }

    pub fn with_deadlines(
        stream: S,
        phase: watch::Receiver<Phase>,
        write_timeout: Duration,
        session_deadline: Instant,
    ) -> Conn<S> {
        Conn {
            io: Transport::Plain(stream),
            input: Vec::with_capacity(1024),
            start: 0,
            output: Vec::with_capacity(1024),
            phase,
            write_timeout,
            session_deadline,
            write_stuck: false,
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

    /// Writes the queued replies; an [`io::ErrorKind::TimedOut`] error when the client does not
    /// take them within the write timeout.
    pub async fn flush(&mut self) -> io::Result<()> {
        if self.write_stuck {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not read the replies",
            ));
        }
        if !self.output.is_empty() {
            let write = async {
                self.io.write_all(&self.output).await?;
                self.io.flush().await
            };
            let written = tokio::time::timeout(self.write_timeout, write).await;
            let Ok(written) = written else {
                self.write_stuck = true;
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client did not read the replies",
                ));
            };
            written?;
            self.output.clear();
        }
        Ok(())
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Reads more bytes into the buffer, first writing any queued replies (the client may be
    /// waiting for them before it sends more). Gives up at the earliest of `deadline` (of kind
    /// `kind`) and the session deadline, or when the server reaches `stop_at`.
    async fn fill(
        &mut self,
        deadline: Instant,
        kind: Deadline,
        stop_at: Phase,
    ) -> Result<(), Interrupted> {
        self.flush().await.map_err(|error| {
            if error.kind() == io::ErrorKind::TimedOut {
                Interrupted::WriteTimeout
            } else {
                Interrupted::Io(error)
            }
        })?;
        let (deadline, kind) = if self.session_deadline <= deadline {
            (self.session_deadline, Deadline::Session)
        } else {
            (deadline, kind)
        };
        // A client that always has bytes ready would never see a timer fire (the read is
        // polled first), so a passed deadline is checked before reading.
        if Instant::now() >= deadline {
            return Err(Interrupted::Timeout(kind));
        }
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
                Err(_) => Err(Interrupted::Timeout(kind)),
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
            if self
                .fill(deadline, Deadline::Idle, Phase::Closing)
                .await
                .is_err()
            {
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
            self.fill(deadline, Deadline::Idle, Phase::Closing).await?;
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
            self.fill(deadline, Deadline::Idle, stop_at).await?;
        }
    }

    /// Reads a DATA block after the 354 reply through `decoder` (the rules are in [`super::data`]),
    /// keeping the buffered content within `reservation` (grown from the shared budget; when it
    /// cannot grow, the decoder stops keeping and the block is [`DataBlock::OverBudget`]). Gives
    /// up after `idle_timeout` of silence or at `deadline`, whichever comes first.
    pub async fn read_data(
        &mut self,
        decoder: &mut DataDecoder,
        reservation: &mut Reservation,
        idle_timeout: Duration,
        deadline: Instant,
    ) -> Result<DataBlock, Interrupted> {
        loop {
            let buffered = &self.input[self.start..];
            if !buffered.is_empty() {
                make_room(decoder, reservation, buffered.len());
                let (used, block) = decoder.feed(buffered);
                self.consume(used);
                if !decoder.keeping() {
                    // Dropped content (too big, a bare line end) needs no budget.
                    reservation.shrink_to(0);
                }
                if let Some(block) = block {
                    if let DataBlock::Message(message) = &block {
                        reservation.shrink_to(message.capacity());
                    }
                    return Ok(block);
                }
            }
            let idle = (Instant::now() + idle_timeout).min(deadline);
            let kind = if idle == deadline {
                Deadline::WholeData
            } else {
                Deadline::Idle
            };
            self.fill(idle, kind, Phase::Closing).await?;
        }
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

    /// Writes what is queued and closes the connection (each within the write timeout).
    pub async fn close(&mut self) {
        if self.flush().await.is_ok() {
            let _ = tokio::time::timeout(self.write_timeout, self.io.shutdown()).await;
        }
    }
}

/// Makes room in the decoder's buffer for what `incoming` wire bytes can add, paid from the
/// reservation: growing geometrically within what it holds, then asking the budget for double,
/// else for exactly what is needed, else the decoder stops keeping (and holds nothing more).
fn make_room(decoder: &mut DataDecoder, reservation: &mut Reservation, incoming: usize) {
    if !decoder.keeping() {
        reservation.shrink_to(0);
        return;
    }
    let needed = decoder
        .kept_len()
        .saturating_add(decoder.max_growth(incoming))
        .min(decoder.max_size());
    let capacity = decoder.kept_capacity();
    if needed <= capacity {
        return;
    }
    let doubled = needed.max(capacity.saturating_mul(2).min(decoder.max_size()));
    let held = reservation.held();
    let granted = if needed <= held {
        doubled.min(held)
    } else if reservation.grow_to(doubled) {
        doubled
    } else if reservation.grow_to(needed) {
        needed
    } else {
        decoder.stop_keeping();
        reservation.shrink_to(0);
        return;
    };
    decoder.reserve_total(granted);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::budget::BufferBudget;
    use crate::smtp::data::{BareLf, DataLimits};
    use tokio::io::AsyncWriteExt;

    /// Reads one DATA block from `wire`, delivered one byte per read so every chunk boundary
    /// (inside CRLF, between a line start and its dot) goes through the socket loop; returns the
    /// block, what is left buffered after it and the budget.
    async fn read_bytewise(wire: Vec<u8>, budget: usize) -> (DataBlock, Vec<u8>, usize) {
        let (mut client, server) = tokio::io::duplex(1);
        let (_phase, phase_rx) = watch::channel(Phase::Running);
        let writer = tokio::spawn(async move {
            client.write_all(&wire).await.unwrap();
            client
        });
        let mut conn = Conn::new(server, phase_rx);
        let budget = BufferBudget::new(budget);
        let mut reservation = budget.reserve(0).unwrap();
        let mut decoder = DataDecoder::new(DataLimits {
            max_size: 1 << 20,
            max_line_len: 1000,
            bare_lf: BareLf::Refuse,
        });
        let block = conn
            .read_data(
                &mut decoder,
                &mut reservation,
                Duration::from_secs(5),
                Instant::now() + Duration::from_secs(60),
            )
            .await
            .unwrap();
        drop(writer);
        let held = reservation.held();
        if let DataBlock::Message(message) = &block {
            assert!(
                message.capacity() <= held,
                "the buffer is within its reservation"
            );
        }
        (block, conn.buffered().to_vec(), held)
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { cases: 64, ..Default::default() })]

        /// However the bytes are split (a read may end just after a CR, which the decoder holds
        /// back), the kept buffer never outgrows its reservation, under either bare-LF setting.
        #[test]
        fn the_buffer_stays_within_its_reservation(
            lines in proptest::collection::vec(
                proptest::collection::vec(proptest::sample::select(b"ab\r\n".to_vec()), 0..40),
                0..60,
            ),
            chunks in proptest::collection::vec(1usize..50, 1..20),
            normalise in proptest::bool::ANY,
        ) {
            let mut wire: Vec<u8> = lines.concat();
            wire.extend_from_slice(b"\r\n.\r\n");
            // Tight, so the reservation often grows by exactly what is needed.
            let budget = BufferBudget::new(wire.len() + 8);
            let mut reservation = budget.reserve(1).unwrap();
            let mut decoder = DataDecoder::new(DataLimits {
                max_size: 1 << 20,
                max_line_len: 1 << 20,
                bare_lf: if normalise { BareLf::Normalize } else { BareLf::Refuse },
            });
            let mut at = 0;
            for chunk in chunks.iter().cycle() {
                let piece = &wire[at..(at + chunk).min(wire.len())];
                make_room(&mut decoder, &mut reservation, piece.len());
                let (used, block) = decoder.feed(piece);
                proptest::prop_assert!(decoder.kept_capacity() <= reservation.held().max(1));
                at += used;
                if block.is_some() || at == wire.len() {
                    break;
                }
            }
        }
    }

    /// A read that ends just after a CR: the decoder holds the CR back and adds it with the next
    /// byte, one more than that read brought; the room made counts it (the Vec would otherwise
    /// double past the budget).
    #[test]
    fn a_held_back_cr_is_paid_for() {
        let budget = BufferBudget::new(3);
        let mut reservation = budget.reserve(1).unwrap();
        let mut decoder = DataDecoder::new(DataLimits {
            max_size: 1000,
            max_line_len: 1000,
            bare_lf: BareLf::Refuse,
        });
        for piece in [&b"ab\r"[..], b"\n", b".\r\n"] {
            make_room(&mut decoder, &mut reservation, piece.len());
            let (_, block) = decoder.feed(piece);
            assert!(decoder.kept_capacity() <= reservation.held(), "{piece:?}");
            if let Some(block) = block {
                assert_eq!(block, DataBlock::OverBudget);
            }
        }
    }

    #[tokio::test]
    async fn a_block_arrives_byte_by_byte_and_leaves_the_next_command() {
        let (block, rest, _) = read_bytewise(b"..a\r\nb\r\n.\r\nNOOP".to_vec(), 1 << 20).await;
        assert_eq!(block, DataBlock::Message(b".a\r\nb\r\n".to_vec()));
        assert!(b"NOOP".starts_with(&rest));
    }

    #[tokio::test]
    async fn a_message_beyond_the_budget_is_read_to_its_end_and_refused() {
        let mut wire = b"x".repeat(900);
        wire.extend_from_slice(b"\r\n");
        let mut wire = wire.repeat(200);
        wire.extend_from_slice(b".\r\nNOOP");
        let (block, rest, held) = read_bytewise(wire.clone(), 100_000).await;
        assert_eq!(block, DataBlock::OverBudget);
        assert!(held <= 100_000);
        assert!(b"NOOP".starts_with(&rest));
        // With room, the same message is kept whole.
        let (block, _, _) = read_bytewise(wire, 1 << 20).await;
        assert!(matches!(block, DataBlock::Message(m) if m.len() == 902 * 200));
    }
}
