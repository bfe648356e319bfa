//! The DATA block decoder (RFC 5321 §4.5.2, §2.3.8): bytes in, message content out, without I/O,
//! in the style of Stalwart's smtp-proto, so every split of the input and every hostile byte can
//! be tested (and fuzzed) directly. [`super::conn::Conn::read_data`] feeds it what the socket gives.
//!
//! * The block ends only with `<CR><LF>.<CR><LF>` (the DATA command's own line end counts as the
//!   first `<CR><LF>`); the leading dot of any other line is removed (dot-stuffing).
//! * A bare `<CR>` (not followed by `<LF>`) is always refused: RFC 5321 §2.3.8 forbids it, no mail
//!   client is known to need it, and `\r.\r\n` is one of the SMTP smuggling markers.
//! * A bare `<LF>` is refused by default ([`BareLf::Refuse`]), as Postfix 3.9 does with
//!   `smtpd_forbid_bare_newline`: a lone `\n.\n` never ended the message, but the fake end marker
//!   and everything after it became SMS text. [`BareLf::Normalize`] is for old clients that end
//!   lines with `<LF>` alone: such a line end counts as `<CR><LF>`, but a single-dot line that is
//!   not the standard `<CR><LF>.<CR><LF>` (`\n.\n`, `\r\n.\n`, `\n.\r\n`) still refuses the whole
//!   message, so nothing behind a fake end marker is ever sent.
//!
//! A defect does not stop the reading: the rest of the block is read to its real end and dropped,
//! so the session stays in step with the client and answers it once, after the block.

/// What to do with a `<LF>` not preceded by `<CR>` inside DATA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BareLf {
    /// Refuse the message (554 5.5.2, after reading it to its end).
    #[default]
    Refuse,
    /// Take it as a line end, but refuse a message with a single-dot line that does not end it.
    Normalize,
}

impl BareLf {
    pub fn as_str(self) -> &'static str {
        match self {
            BareLf::Refuse => "refuse",
            BareLf::Normalize => "normalize",
        }
    }
}

impl std::str::FromStr for BareLf {
    type Err = String;

    fn from_str(text: &str) -> Result<BareLf, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "refuse" => Ok(BareLf::Refuse),
            "normalize" | "normalise" => Ok(BareLf::Normalize),
            _ => Err(format!("{text:?} is neither refuse nor normalize")),
        }
    }
}

/// The limits of one DATA block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataLimits {
    /// Largest message kept, in bytes of content (dot-stuffing removed, CRLF line ends).
    pub max_size: usize,
    /// Longest line on the wire, its line end included.
    pub max_line_len: usize,
    pub bare_lf: BareLf,
}

/// A bare line-end character the client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BareLineEnd {
    Cr,
    Lf,
}

impl BareLineEnd {
    /// As Postfix names it in its reply: `<CR>` or `<LF>`.
    pub fn as_str(self) -> &'static str {
        match self {
            BareLineEnd::Cr => "<CR>",
            BareLineEnd::Lf => "<LF>",
        }
    }
}

/// The outcome of reading a DATA block to its end.
#[derive(Debug, PartialEq, Eq)]
pub enum DataBlock {
    Message(Vec<u8>),
    /// Larger than the limit; read to its end and dropped.
    TooBig,
    /// A line longer than the limit; read to its end and dropped.
    LineTooLong,
    /// A bare CR, or a bare LF under [`BareLf::Refuse`]; read to its end and dropped.
    BareLineEnd(BareLineEnd),
    /// Under [`BareLf::Normalize`]: a line of a single dot that is not `<CR><LF>.<CR><LF>`, the
    /// shape of an SMTP smuggling attempt; read to its end and dropped.
    FakeEndOfData,
    /// The caller told the decoder to stop keeping the content ([`DataDecoder::stop_keeping`]:
    /// the gateway's buffer budget is spent); read to its end and dropped. A temporary refusal.
    OverBudget,
    /// So far beyond the limit that reading on would only feed a flood: the session must end.
    Flood,
}

/// Where the decoder is within the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line.
    LineStart,
    /// The line so far is a single dot (not kept: it is the end marker's or dot-stuffing).
    Dot,
    /// The line so far is a dot and a CR.
    DotCr,
    /// Inside a line.
    Middle,
    /// Inside a line, just after a CR that is not kept yet.
    Cr,
}

/// Decodes one DATA block incrementally: [`DataDecoder::feed`] it bytes until it returns a block.
#[derive(Debug)]
pub struct DataDecoder {
    limits: DataLimits,
    message: Vec<u8>,
    /// Whether `message` is still being kept (false after any defect).
    keeping: bool,
    state: State,
    /// Whether the current line began after a bare LF (under [`BareLf::Normalize`]).
    after_bare_lf: bool,
    /// Content bytes so far, kept or not (CRLF line ends, dot-stuffing removed).
    received: usize,
    /// Wire bytes of the current line so far.
    line_len: usize,
    too_big: bool,
    line_too_long: bool,
    bare: Option<BareLineEnd>,
    fake_end: bool,
    over_budget: bool,
    /// Beyond this many content bytes a sender ignoring the limit is flooding us.
    flood_limit: usize,
}

impl DataDecoder {
    pub fn new(limits: DataLimits) -> DataDecoder {
        DataDecoder {
            limits,
            message: Vec::new(),
            keeping: true,
            state: State::LineStart,
            after_bare_lf: false,
            received: 0,
            line_len: 0,
            too_big: false,
            line_too_long: false,
            bare: None,
            fake_end: false,
            over_budget: false,
            flood_limit: limits.max_size.saturating_mul(2).saturating_add(1 << 20),
        }
    }

    /// Whether the content is still being kept (no defect, within the budget).
    pub fn keeping(&self) -> bool {
        self.keeping
    }

    /// Bytes of content kept so far.
    pub fn kept_len(&self) -> usize {
        self.message.len()
    }

    /// Bytes of memory the kept content holds now (its allocation), for the buffer budget.
    pub fn kept_capacity(&self) -> usize {
        self.message.capacity()
    }

    /// The most content `incoming` wire bytes can add: as many, or twice as many when a bare LF
    /// becomes CRLF, plus the CR held back from the last feed (it may start a CRLF).
    pub fn max_growth(&self, incoming: usize) -> usize {
        let pending = usize::from(matches!(self.state, State::Cr | State::DotCr));
        match self.limits.bare_lf {
            BareLf::Refuse => incoming,
            BareLf::Normalize => incoming.saturating_mul(2),
        }
        .saturating_add(pending)
    }

    pub fn max_size(&self) -> usize {
        self.limits.max_size
    }

    /// Content bytes received so far, kept or not.
    pub fn received(&self) -> usize {
        self.received
    }

    /// Grows the buffer to hold `capacity` bytes in all, exactly, so it does not grow by doubling
    /// past what the budget granted (as long as the caller makes room before each feed).
    pub fn reserve_total(&mut self, capacity: usize) {
        if self.keeping {
            let more = capacity.saturating_sub(self.message.len());
            self.message.reserve_exact(more);
        }
    }

    /// The line-end refusal found so far, if any: what to tell a client that stops sending after
    /// a bare LF (it may be waiting after its own `\n.\n`).
    pub fn line_end_defect(&self) -> Option<DataBlock> {
        match (self.bare, self.fake_end) {
            (Some(bare), _) => Some(DataBlock::BareLineEnd(bare)),
            (None, true) => Some(DataBlock::FakeEndOfData),
            (None, false) => None,
        }
    }

    /// Drops what was kept and keeps nothing more; the block will be [`DataBlock::OverBudget`]
    /// unless something worse is found.
    pub fn stop_keeping(&mut self) {
        self.over_budget = true;
        self.discard();
    }

    fn discard(&mut self) {
        self.keeping = false;
        self.message = Vec::new();
    }

    /// Consumes a prefix of `input`: all of it, or up to and including the end marker. Returns
    /// how many bytes were consumed and, once the block has ended (or is a flood), the block.
    pub fn feed(&mut self, input: &[u8]) -> (usize, Option<DataBlock>) {
        let mut i = 0;
        while i < input.len() {
            let byte = input[i];
            match self.state {
                State::Middle => {
                    // Fast path: copy up to the next CR or LF in one go.
                    let run = input[i..]
                        .iter()
                        .position(|&b| b == b'\r' || b == b'\n')
                        .unwrap_or(input.len() - i);
                    if run > 0 {
                        self.content(&input[i..i + run], run);
                        i += run;
                        continue;
                    }
                    self.wire(1);
                    if byte == b'\r' {
                        self.state = State::Cr;
                    } else {
                        self.bare_lf(false);
                    }
                }
                State::LineStart => {
                    self.wire(1);
                    match byte {
                        b'.' => self.state = State::Dot,
                        b'\r' => self.state = State::Cr,
                        b'\n' => self.bare_lf(false),
                        _ => {
                            self.content(&[byte], 0);
                            self.state = State::Middle;
                        }
                    }
                }
                State::Dot => {
                    self.wire(1);
                    match byte {
                        b'\r' => self.state = State::DotCr,
                        // A single-dot line ended by a bare LF: the `\n.\n` smuggling marker.
                        b'\n' => self.bare_lf(true),
                        _ => {
                            // Dot-stuffing: the leading dot is dropped.
                            self.content(&[byte], 0);
                            self.state = State::Middle;
                        }
                    }
                }
                State::DotCr => {
                    if byte == b'\n' {
                        self.wire(1);
                        if self.after_bare_lf {
                            // `\n.\r\n`: not the standard marker, whatever a lenient reader says.
                            self.fake_end = true;
                            self.discard();
                            self.line_end(false);
                        } else {
                            return (i + 1, Some(self.finish()));
                        }
                    } else {
                        // The stuffed dot is dropped; the CR was bare.
                        self.bare_cr();
                        self.content(b"\r", 0);
                        self.state = State::Middle;
                        continue;
                    }
                }
                State::Cr => {
                    if byte == b'\n' {
                        self.wire(1);
                        self.content(b"\r\n", 0);
                        self.line_end(false);
                    } else {
                        // The CR was bare; this byte is looked at again inside the line.
                        self.bare_cr();
                        self.content(b"\r", 0);
                        self.state = State::Middle;
                        continue;
                    }
                }
            }
            i += 1;
            if self.received > self.flood_limit {
                return (i, Some(DataBlock::Flood));
            }
        }
        if self.received > self.flood_limit {
            return (i, Some(DataBlock::Flood));
        }
        (i, None)
    }

    /// Counts `n` wire bytes of the current line.
    fn wire(&mut self, n: usize) {
        self.line_len += n;
        if self.line_len > self.limits.max_line_len && !self.line_too_long {
            self.line_too_long = true;
            self.discard();
        }
    }

    /// Content bytes; `wire` of them were not yet counted as wire bytes.
    fn content(&mut self, bytes: &[u8], wire: usize) {
        if wire > 0 {
            self.wire(wire);
        }
        self.received += bytes.len();
        if self.received > self.limits.max_size && !self.too_big {
            self.too_big = true;
            self.discard();
        }
        if self.keeping {
            self.message.extend_from_slice(bytes);
        }
    }

    fn line_end(&mut self, after_bare_lf: bool) {
        self.state = State::LineStart;
        self.line_len = 0;
        self.after_bare_lf = after_bare_lf;
    }

    fn bare_cr(&mut self) {
        self.bare.get_or_insert(BareLineEnd::Cr);
        self.discard();
    }

    /// A bare LF; `dot_line` when it ends a line holding only a dot.
    fn bare_lf(&mut self, dot_line: bool) {
        match self.limits.bare_lf {
            BareLf::Refuse => {
                self.bare.get_or_insert(BareLineEnd::Lf);
                self.discard();
                // Not a line end: the real end is still `<CR><LF>.<CR><LF>`.
                self.state = State::Middle;
            }
            BareLf::Normalize => {
                if dot_line {
                    self.fake_end = true;
                    self.discard();
                } else {
                    self.content(b"\r\n", 0);
                }
                self.line_end(true);
            }
        }
    }

    fn finish(&mut self) -> DataBlock {
        if self.too_big {
            DataBlock::TooBig
        } else if self.line_too_long {
            DataBlock::LineTooLong
        } else if let Some(bare) = self.bare {
            DataBlock::BareLineEnd(bare)
        } else if self.fake_end {
            DataBlock::FakeEndOfData
        } else if self.over_budget {
            DataBlock::OverBudget
        } else {
            DataBlock::Message(std::mem::take(&mut self.message))
        }
    }
}

/// Decodes a whole DATA block in one call: the block (if it ended) and the bytes consumed.
pub fn decode(limits: DataLimits, input: &[u8]) -> (usize, Option<DataBlock>) {
    DataDecoder::new(limits).feed(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: DataLimits = DataLimits {
        max_size: 1 << 20,
        max_line_len: 1000,
        bare_lf: BareLf::Refuse,
    };

    /// Feeds `wire` in pieces of `chunk` bytes; returns the block and the bytes left after it.
    fn decode_in_chunks(limits: DataLimits, wire: &[u8], chunk: usize) -> (DataBlock, Vec<u8>) {
        let mut decoder = DataDecoder::new(limits);
        let mut at = 0;
        while at < wire.len() {
            let piece = &wire[at..(at + chunk).min(wire.len())];
            let (used, block) = decoder.feed(piece);
            at += used;
            if let Some(block) = block {
                return (block, wire[at..].to_vec());
            }
            assert_eq!(
                used,
                piece.len(),
                "a piece without the end is consumed whole"
            );
        }
        panic!("no end of data in {wire:?}");
    }

    fn normalize() -> DataLimits {
        DataLimits {
            bare_lf: BareLf::Normalize,
            ..LIMITS
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { cases: 256, ..Default::default() })]

        /// Dot-stuffing then decoding gives back the exact lines, whatever they contain and however
        /// the bytes are split, under either bare-LF setting.
        #[test]
        fn dot_stuffing_round_trips(
            lines in proptest::collection::vec(
                proptest::collection::vec(proptest::sample::select(b".ab".to_vec()), 0..8),
                0..12,
            ),
            chunk in 1usize..20,
            normalise in proptest::bool::ANY,
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
            wire.extend_from_slice(b".\r\nNOOP\r\n");
            let limits = if normalise { normalize() } else { LIMITS };
            let (block, rest) = decode_in_chunks(limits, &wire, chunk);
            proptest::prop_assert_eq!(block, DataBlock::Message(expected));
            proptest::prop_assert_eq!(rest, b"NOOP\r\n".to_vec());
        }

        /// Whatever bytes come, the end is found at the first real `<CR><LF>.<CR><LF>` or not at
        /// all, every split gives the same answer, and nothing is ever kept after a bare CR or LF
        /// (under Refuse).
        #[test]
        fn any_bytes_any_split_same_answer(
            body in proptest::collection::vec(proptest::sample::select(b".\r\nab".to_vec()), 0..60),
            chunk in 1usize..9,
        ) {
            let mut wire = body.clone();
            wire.extend_from_slice(b"\r\n.\r\n");
            let (whole_used, whole) = decode(LIMITS, &wire);
            let whole = whole.expect("the appended marker ends it at the latest");
            let (split, rest) = decode_in_chunks(LIMITS, &wire, chunk);
            proptest::prop_assert_eq!(&split, &whole);
            proptest::prop_assert_eq!(rest.len(), wire.len() - whole_used);
            if let DataBlock::Message(content) = &whole {
                // Every CR and LF that reached the content is one of a CRLF pair.
                for (i, &b) in content.iter().enumerate() {
                    if b == b'\n' {
                        proptest::prop_assert!(i > 0 && content[i - 1] == b'\r');
                    }
                    if b == b'\r' {
                        proptest::prop_assert_eq!(content.get(i + 1), Some(&b'\n'));
                    }
                }
            }
        }
    }

    /// The SMTP smuggling markers: none ends the block, and under either setting the message
    /// (fake marker and smuggled commands included) is refused, the reading going on to the real
    /// end so the bytes after it are the next command.
    #[test]
    fn fake_end_markers_refuse_the_message_under_both_settings() {
        let cases: [(&[u8], DataBlock, DataBlock); 6] = [
            (
                b"\n.\n",
                DataBlock::BareLineEnd(BareLineEnd::Lf),
                DataBlock::FakeEndOfData,
            ),
            (
                b"\r\n.\n",
                DataBlock::BareLineEnd(BareLineEnd::Lf),
                DataBlock::FakeEndOfData,
            ),
            (
                b"\n.\r\n",
                DataBlock::BareLineEnd(BareLineEnd::Lf),
                DataBlock::FakeEndOfData,
            ),
            (
                b"\r.\r\n",
                DataBlock::BareLineEnd(BareLineEnd::Cr),
                DataBlock::BareLineEnd(BareLineEnd::Cr),
            ),
            (
                b"\r\n.\r",
                DataBlock::BareLineEnd(BareLineEnd::Cr),
                DataBlock::BareLineEnd(BareLineEnd::Cr),
            ),
            (
                b"\r\n.\r\r\n",
                DataBlock::BareLineEnd(BareLineEnd::Cr),
                DataBlock::BareLineEnd(BareLineEnd::Cr),
            ),
        ];
        for (marker, refused, normalised) in cases {
            let mut wire = b"Subject: one\r\n\r\nfirst".to_vec();
            wire.extend_from_slice(marker);
            wire.extend_from_slice(
                b"MAIL FROM:<evil@example.com>\r\nDATA\r\nsmuggled\r\n.\r\nQUIT\r\n",
            );
            for (limits, expected) in [(LIMITS, &refused), (normalize(), &normalised)] {
                for chunk in [1, 2, 3, 7, wire.len()] {
                    let (block, rest) = decode_in_chunks(limits, &wire, chunk);
                    assert_eq!(
                        &block, expected,
                        "{marker:?} {:?} chunk {chunk}",
                        limits.bare_lf
                    );
                    assert_eq!(rest, b"QUIT\r\n", "{marker:?} {:?}", limits.bare_lf);
                }
            }
        }
    }

    #[test]
    fn normalize_takes_a_bare_lf_as_a_line_end() {
        let (block, rest) = decode_in_chunks(
            normalize(),
            b"Subject: x\n\nline one\n..dotted\nend\r\n.\r\nNOOP",
            1,
        );
        assert_eq!(
            block,
            DataBlock::Message(b"Subject: x\r\n\r\nline one\r\n.dotted\r\nend\r\n".to_vec())
        );
        assert_eq!(rest, b"NOOP");
        // A client that ends everything with a bare LF never reaches the end (as in Postfix).
        let (used, block) = decode(normalize(), b"hi\n.\n");
        assert_eq!((used, block), (5, None));
    }

    #[test]
    fn a_refused_bare_lf_keeps_nothing() {
        let mut decoder = DataDecoder::new(LIMITS);
        let (_, block) = decoder.feed(b"a\nb");
        assert_eq!(block, None);
        assert_eq!(decoder.kept_capacity(), 0);
        let (_, block) = decoder.feed(b"\r\n.\r\n");
        assert_eq!(block, Some(DataBlock::BareLineEnd(BareLineEnd::Lf)));
    }

    #[test]
    fn limits_and_budget() {
        let small = DataLimits {
            max_size: 1000,
            ..LIMITS
        };
        let mut wire = b"x".repeat(900);
        wire.extend_from_slice(b"\r\n");
        wire.extend_from_slice(&wire.clone());
        wire.extend_from_slice(b".\r\n");
        assert_eq!(decode(small, &wire).1, Some(DataBlock::TooBig));
        let mut long = b"y".repeat(1200);
        long.extend_from_slice(b"\r\n.\r\n");
        assert_eq!(decode(LIMITS, &long).1, Some(DataBlock::LineTooLong));
        // A line of exactly the limit, CRLF included, is fine.
        let mut exact = b"z".repeat(998);
        exact.extend_from_slice(b"\r\n.\r\n");
        assert!(matches!(
            decode(LIMITS, &exact).1,
            Some(DataBlock::Message(_))
        ));
        let mut decoder = DataDecoder::new(LIMITS);
        decoder.feed(b"kept\r\n");
        decoder.stop_keeping();
        assert_eq!(decoder.kept_capacity(), 0);
        assert_eq!(
            decoder.feed(b"more\r\n.\r\n").1,
            Some(DataBlock::OverBudget)
        );
        // Far beyond the limit, the decoder gives up before the end.
        let flood = vec![b'x'; 3 << 20];
        let (_, block) = DataDecoder::new(small).feed(&flood);
        assert_eq!(block, Some(DataBlock::Flood));
    }
}
