//! The DATA block decoder (`smtp::data`) on arbitrary bytes, under both `--bare-lf` settings, fed
//! whole and in arbitrary pieces, with small limits so the size and line-length paths are reached.
//! It is checked against a model of the rules written here (RFC 5321 §4.5.2, §2.3.8 and the
//! module's doc), which looks at whole lines where the decoder goes byte by byte:
//!
//! * Only `<CR><LF>.<CR><LF>` ends the block (the DATA command's own line end is the first
//!   `<CR><LF>`); the leading dot of any other line is removed.
//! * `refuse`: only `<CR><LF>` ends a line; any bare `<CR>` or `<LF>` refuses the message (the
//!   first one on the wire is named), and a bare `<LF>` is neither a line end nor content.
//! * `normalize`: a bare `<LF>` also ends a line (as `<CR><LF>`), but a single-dot line that is not
//!   the real end marker (`\n.\n`, `\r\n.\n`, `\n.\r\n`) refuses the message; a bare `<CR>` still
//!   does.
//! * Limits: content (dot-stuffing removed, `<CR><LF>` line ends) over `max_size` is too big; a
//!   wire line over `max_line_len`, its line end included, is too long. The verdict is the worst
//!   defect: too big, line too long, bare line end, fake end marker, budget spent.
//! * Exactly the bytes up to the end marker are consumed; a piece without it is consumed whole.
//!
//! Besides: every split gives the same answer as one call; the buffer budget running out at a
//! piece boundary turns a message into `OverBudget` and nothing else; a feed never grows the kept
//! content beyond `max_growth` (the budget reserves by it); nothing is held once the content is
//! dropped; the line-end defect reported before the end is the model's; and a message, dot-stuffed
//! again as a client would send it, reads back as itself.
#![no_main]

use email2sms_ingest::smtp::data::{
    BareLf, BareLineEnd, DataBlock, DataDecoder, DataLimits, decode,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&[size_hi, size_lo, line, seed], wire)) = input.split_first_chunk::<4>() else {
        return;
    };
    // With at most twice the input as content, this stays far below the flood limit (twice the
    // size limit plus 1 MiB), which the model leaves out.
    if wire.len() > 1 << 18 {
        return;
    }
    let max_size = usize::from(u16::from_be_bytes([size_hi, size_lo]) % 4096);
    // At least 3: the end marker's line.
    let max_line_len = 3 + usize::from(line);
    // The size limit takes 12 bits; the top one says the buffer budget runs out after the piece
    // numbered by the next three.
    let stop_after = (size_hi & 0x80 != 0).then_some(usize::from((size_hi >> 4) & 7));
    for bare_lf in [BareLf::Refuse, BareLf::Normalize] {
        let limits = DataLimits {
            max_size,
            max_line_len,
            bare_lf,
        };
        check(limits, wire, seed, stop_after);
    }
});

fn check(limits: DataLimits, wire: &[u8], seed: u8, stop_after: Option<usize>) {
    let model = Model::read(limits, wire);
    let context = format!("{limits:?}, model {model:?}");

    let (used, block) = decode(limits, wire);
    match (&block, &model.end) {
        (Some(block), Some((expected, consumed))) => {
            assert_eq!(block, expected, "decode: the verdict differs ({context})");
            assert_eq!(used, *consumed, "decode: not consumed up to the end marker ({context})");
        }
        (None, None) => assert_eq!(used, wire.len(), "decode: unterminated but not all consumed"),
        _ => panic!("decode gave {block:?} after {used} bytes ({context})"),
    }

    let split = feed_in_pieces(limits, wire, seed, None);
    assert_eq!(split.block, block, "split differently, decoded differently ({context})");
    assert_eq!(split.used, used, "split differently, consumed differently ({context})");
    if block.is_none() {
        assert_eq!(
            split.line_end_defect, model.line_end_defect,
            "the line-end defect so far differs ({context})"
        );
    }

    if stop_after.is_some() {
        let stopped = feed_in_pieces(limits, wire, seed, stop_after);
        let expected = match &block {
            Some(DataBlock::Message(_)) if stopped.stopped => Some(DataBlock::OverBudget),
            other => other.as_ref().map(same),
        };
        assert_eq!(stopped.block, expected, "after the budget ran out ({context})");
        assert_eq!(stopped.used, used, "after the budget ran out, consumed differently");
    }

    if let Some(DataBlock::Message(message)) = &block {
        // A line that ended with a bare LF is one byte longer with CRLF.
        let again = DataLimits {
            max_line_len: limits.max_line_len + 1,
            ..limits
        };
        let stuffed = stuff(message);
        assert_eq!(
            decode(again, &stuffed),
            (stuffed.len(), Some(DataBlock::Message(message.clone()))),
            "{message:?} dot-stuffed again does not read back as itself ({limits:?})"
        );
    }
}

fn same(block: &DataBlock) -> DataBlock {
    match block {
        DataBlock::Message(m) => DataBlock::Message(m.clone()),
        DataBlock::TooBig => DataBlock::TooBig,
        DataBlock::LineTooLong => DataBlock::LineTooLong,
        DataBlock::BareLineEnd(b) => DataBlock::BareLineEnd(*b),
        DataBlock::FakeEndOfData => DataBlock::FakeEndOfData,
        DataBlock::OverBudget => DataBlock::OverBudget,
        DataBlock::Flood => DataBlock::Flood,
    }
}

struct Fed {
    block: Option<DataBlock>,
    /// Wire bytes consumed in all.
    used: usize,
    /// Whether the decoder was told to stop keeping before the block ended.
    stopped: bool,
    line_end_defect: Option<DataBlock>,
}

/// Feeds `wire` to one decoder in pieces of 1 to 64 bytes (sizes from a small generator seeded by
/// `seed`, so every boundary, inside a CRLF or between a line start and its dot, gets exercised),
/// telling it to stop keeping after piece `stop_after`; checks what must hold after every feed.
fn feed_in_pieces(limits: DataLimits, wire: &[u8], seed: u8, stop_after: Option<usize>) -> Fed {
    let mut decoder = DataDecoder::new(limits);
    let mut state = u32::from(seed) | 0x100;
    let mut at = 0;
    let mut stopped = false;
    let mut piece_no = 0;
    while at < wire.len() {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let len = 1 + (state >> 16) as usize % 64;
        let piece = &wire[at..(at + len).min(wire.len())];
        let (kept, growth) = (decoder.kept_len(), decoder.max_growth(piece.len()));
        let (used, block) = decoder.feed(piece);
        at += used;
        if let Some(block) = block {
            if let DataBlock::Message(message) = &block {
                assert!(
                    message.len() <= kept + growth,
                    "the last feed grew the content by more than max_growth"
                );
            }
            return Fed {
                block: Some(block),
                used: at,
                stopped,
                line_end_defect: None,
            };
        }
        assert_eq!(used, piece.len(), "a piece without the end was not consumed whole");
        assert!(
            decoder.kept_len() <= kept + growth,
            "a feed grew the content by more than max_growth"
        );
        assert!(decoder.kept_len() <= limits.max_size, "kept more than max_size");
        if !decoder.keeping() {
            assert_eq!(decoder.kept_capacity(), 0, "dropped content still holds memory");
        }
        if stop_after == Some(piece_no) {
            decoder.stop_keeping();
            stopped = true;
            assert!(!decoder.keeping() && decoder.kept_capacity() == 0);
        }
        piece_no += 1;
    }
    Fed {
        block: None,
        used: at,
        stopped,
        line_end_defect: decoder.line_end_defect(),
    }
}

#[derive(Debug)]
struct Model {
    /// The verdict and the wire bytes up to and including the end marker; `None` when there is
    /// no end marker (the decoder must wait for more).
    end: Option<(DataBlock, usize)>,
    /// When unterminated: the bare line end or fake end marker seen so far.
    line_end_defect: Option<DataBlock>,
}

impl Model {
    fn read(limits: DataLimits, wire: &[u8]) -> Model {
        let mut at = 0;
        // The DATA command's own line end.
        let mut after_crlf = true;
        let mut message = Vec::new();
        let mut received = 0;
        let (mut too_big, mut line_too_long, mut fake_end) = (false, false, false);
        let mut bare: Option<BareLineEnd> = None;
        loop {
            let rest = &wire[at..];
            // The next line, its line end excluded, and whether that line end is CRLF.
            let next = match limits.bare_lf {
                BareLf::Refuse => rest
                    .windows(2)
                    .position(|w| w == b"\r\n")
                    .map(|end| (&rest[..end], true)),
                BareLf::Normalize => rest.iter().position(|&b| b == b'\n').map(|lf| {
                    if lf > 0 && rest[lf - 1] == b'\r' {
                        (&rest[..lf - 1], true)
                    } else {
                        (&rest[..lf], false)
                    }
                }),
            };
            let Some((line, crlf)) = next else {
                // Unterminated: what has been seen of the last line (a CR at its very end may
                // still start a CRLF; a lone dot may still become the end marker).
                let content = rest.strip_prefix(b".").unwrap_or(rest);
                for (i, &b) in content.iter().enumerate() {
                    if b == b'\r' && i + 1 < content.len() {
                        bare.get_or_insert(BareLineEnd::Cr);
                    } else if b == b'\n' {
                        bare.get_or_insert(BareLineEnd::Lf);
                    }
                }
                let line_end_defect = match (bare, fake_end) {
                    (Some(bare), _) => Some(DataBlock::BareLineEnd(bare)),
                    (None, true) => Some(DataBlock::FakeEndOfData),
                    (None, false) => None,
                };
                return Model {
                    end: None,
                    line_end_defect,
                };
            };
            let wire_len = line.len() + if crlf { 2 } else { 1 };
            at += wire_len;
            line_too_long |= wire_len > limits.max_line_len;
            if line == b"." {
                if after_crlf && crlf {
                    let verdict = if too_big {
                        DataBlock::TooBig
                    } else if line_too_long {
                        DataBlock::LineTooLong
                    } else if let Some(bare) = bare {
                        DataBlock::BareLineEnd(bare)
                    } else if fake_end {
                        DataBlock::FakeEndOfData
                    } else {
                        DataBlock::Message(message)
                    };
                    return Model {
                        end: Some((verdict, at)),
                        line_end_defect: None,
                    };
                }
                // Only under normalize: a line end other than CRLF before or after the dot.
                fake_end = true;
                after_crlf = crlf;
                continue;
            }
            let content = line.strip_prefix(b".").unwrap_or(line);
            for &b in content {
                if b == b'\n' {
                    // Only under refuse (normalize ends the line there): no content either.
                    bare.get_or_insert(BareLineEnd::Lf);
                    continue;
                }
                if b == b'\r' {
                    bare.get_or_insert(BareLineEnd::Cr);
                }
                received += 1;
                message.push(b);
            }
            received += 2;
            message.extend_from_slice(b"\r\n");
            too_big |= received > limits.max_size;
            after_crlf = crlf;
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
