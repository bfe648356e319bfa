//! The DATA reader (`Conn::read_data`) on arbitrary bytes, delivered in arbitrary pieces, with
//! small limits so the size and line-length paths are reached. It is checked against a model of
//! RFC 5321 §4.5.2 written here: the block ends at the first line that is a single dot (CRLF `.`
//! CRLF, or `.` CRLF at the very start), only CRLF ends a line (a bare LF or CR is content, so
//! `\n.\n` cannot end the message and smuggle a second one behind it), a leading dot is removed,
//! and the verdict (message, too big, line too long) is the model's, however the bytes arrive.
//! Nothing after the end marker is consumed, and the message, dot-stuffed again as a client
//! would send it, reads back as itself.
#![no_main]

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use email2sms_ingest::smtp::conn::{Conn, DataBlock, Interrupted, Phase};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

fuzz_target!(|input: &[u8]| {
    let Some((&[size_hi, size_lo, line, seed], wire)) = input.split_first_chunk::<4>() else {
        return;
    };
    let max_size = usize::from(u16::from_be_bytes([size_hi, size_lo]) % 4096);
    // At least 3: a line of its own CRLF and one character.
    let max_line_len = 3 + usize::from(line);
    let (block, left) = read(wire, seed, max_size, max_line_len);
    let model = Model::read(wire, max_size, max_line_len);
    match (block, &model) {
        (
            Ok(DataBlock::Message(message)),
            Model::Ended {
                message: expected,
                too_big: false,
                line_too_long: false,
                consumed,
            },
        ) => {
            assert_eq!(&message, expected, "the message differs from the model's");
            let again = read(&stuff(&message), seed, max_size, max_line_len).0;
            assert!(
                matches!(&again, Ok(DataBlock::Message(m)) if *m == message),
                "{message:?} dot-stuffed again reads as {again:?}"
            );
            assert!(
                wire[*consumed..].starts_with(&left),
                "read past the end marker"
            );
        }
        (
            Ok(DataBlock::TooBig),
            Model::Ended {
                too_big: true,
                consumed,
                ..
            },
        )
        | (
            Ok(DataBlock::LineTooLong),
            Model::Ended {
                too_big: false,
                line_too_long: true,
                consumed,
                ..
            },
        ) => {
            assert!(
                wire[*consumed..].starts_with(&left),
                "read past the end marker"
            );
        }
        (Err(Interrupted::Eof), Model::Unterminated) => {}
        (block, model) => panic!(
            "read_data gave {block:?}; the model says {model:?} (max_size {max_size}, max_line_len {max_line_len})"
        ),
    }
});

/// What `read_data` makes of `wire` arriving in pieces, and what it left unconsumed.
fn read(
    wire: &[u8],
    seed: u8,
    max_size: usize,
    max_line_len: usize,
) -> (Result<DataBlock, Interrupted>, Vec<u8>) {
    runtime().block_on(async {
        // The sender stays alive: a closed channel reads as a shutdown.
        let (_phase, phase_rx) = tokio::sync::watch::channel(Phase::Running);
        let mut conn = Conn::new(Pieces(pieces(wire, seed)), phase_rx);
        let block = conn
            .read_data(max_size, max_line_len, Duration::from_secs(5))
            .await;
        (block, conn.buffered().to_vec())
    })
}

#[derive(Debug)]
enum Model {
    Ended {
        message: Vec<u8>,
        too_big: bool,
        line_too_long: bool,
        /// Wire bytes up to and including the end marker.
        consumed: usize,
    },
    /// No end marker: the reader must wait for more (here: reach the end of input).
    Unterminated,
}

impl Model {
    fn read(wire: &[u8], max_size: usize, max_line_len: usize) -> Model {
        let mut at = 0;
        let mut message = Vec::new();
        let mut received = 0;
        let (mut too_big, mut line_too_long) = (false, false);
        loop {
            let rest = &wire[at..];
            let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
                return Model::Unterminated;
            };
            let line = &rest[..end];
            at += end + 2;
            if line == b"." {
                return Model::Ended {
                    message,
                    too_big,
                    line_too_long,
                    consumed: at,
                };
            }
            let content = line.strip_prefix(b".").unwrap_or(line);
            line_too_long |= end + 2 > max_line_len;
            received += content.len() + 2;
            too_big |= received > max_size;
            message.extend_from_slice(content);
            message.extend_from_slice(b"\r\n");
        }
    }
}

/// The message as a client sends it: a dot before every line that starts with one, then the end
/// marker.
fn stuff(message: &[u8]) -> Vec<u8> {
    let mut wire = Vec::new();
    let mut line_start = true;
    for (i, &byte) in message.iter().enumerate() {
        if line_start && byte == b'.' {
            wire.push(b'.');
        }
        wire.push(byte);
        line_start = byte == b'\n' && i > 0 && message[i - 1] == b'\r';
    }
    wire.extend_from_slice(b".\r\n");
    wire
}

/// Splits `wire` into pieces of 1 to 64 bytes, sizes from a small generator seeded by `seed`, so
/// every boundary (inside a CRLF, between a line start and its dot) gets exercised.
fn pieces(wire: &[u8], seed: u8) -> VecDeque<Vec<u8>> {
    let mut state = u32::from(seed) | 0x100;
    let mut pieces = VecDeque::new();
    let mut at = 0;
    while at < wire.len() {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let len = 1 + (state >> 16) as usize % 64;
        let end = (at + len).min(wire.len());
        pieces.push_back(wire[at..end].to_vec());
        at = end;
    }
    pieces
}

/// A client that sends its pieces one per read, then closes; what it is sent is dropped.
struct Pieces(VecDeque<Vec<u8>>);

impl AsyncRead for Pieces {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(mut piece) = self.0.pop_front() {
            let n = piece.len().min(buf.remaining());
            buf.put_slice(&piece[..n]);
            if n < piece.len() {
                self.0.push_front(piece.split_off(n));
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Pieces {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a tokio runtime")
    })
}
