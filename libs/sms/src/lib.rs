//! SMS text encoding, shared by ingest (which decides the encoding and the number of parts before it
//! accepts an email) and dispatch (which splits the text into the parts it submits).
//!
//! * GSM 03.38 7-bit default alphabet with its extension table: the characters `^{}\[~]|€` and form
//!   feed are sent as the escape septet 0x1B followed by their extension code, so they cost two
//!   septets and are never split across two parts.
//! * Anything GSM-7 cannot carry makes the whole text UCS-2 (UTF-16 big-endian). Lengths are UTF-16
//!   code units: a character outside the Basic Multilingual Plane (most emoji) is a surrogate pair,
//!   costs two, and is never split across two parts.
//! * One part carries 160 septets (GSM-7) or 70 code units (UCS-2). A longer text is split into parts
//!   of 153 septets or 67 code units, because each part then starts with a 6-octet concatenation User
//!   Data Header (`05 00 03 ref total seq`, IEI 0x00: 8-bit reference number).
//!
//! Every part's user data fits the 140 octets of one SMS; the tests check it for arbitrary text.
//! [`prefer_gsm7`] replaces typography (curly quotes, dashes, no-break spaces) by GSM-7 equivalents
//! when that keeps a text in GSM-7.
#![forbid(unsafe_code)]

mod transliterate;

use std::fmt;

pub use transliterate::{Replacement, Transliterated, gsm7_equivalent, prefer_gsm7};

/// Octets of user data in one SMS (TP-UDL limit for 8-bit data).
pub const MAX_USER_DATA_OCTETS: usize = 140;
/// Septets in a single (unsplit) GSM-7 SMS.
pub const GSM7_SINGLE_SEPTETS: usize = 160;
/// Septets per part of a concatenated GSM-7 SMS (the UDH takes 6 octets + 1 fill bit = 7 septets).
pub const GSM7_PART_SEPTETS: usize = 153;
/// UTF-16 code units in a single (unsplit) UCS-2 SMS.
pub const UCS2_SINGLE_UNITS: usize = 70;
/// UTF-16 code units per part of a concatenated UCS-2 SMS (the UDH takes 6 octets = 3 units).
pub const UCS2_PART_UNITS: usize = 67;
/// The concatenation UDH numbers parts with one octet, so a message has at most this many parts.
pub const MAX_PARTS: usize = 255;
/// The GSM-7 escape septet that introduces an extension-table character.
pub const GSM7_ESCAPE: u8 = 0x1B;
/// Length of the concatenation UDH including its length octet: `05 00 03 ref total seq`.
pub const CONCAT_UDH_LEN: usize = 6;

/// How a text is encoded on the air interface. SMPP data_coding: GSM-7 is 0x00 (SMSC default
/// alphabet), UCS-2 is 0x08.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    Gsm7,
    Ucs2,
}

impl Encoding {
    /// The SMPP `data_coding` value for this encoding.
    pub fn smpp_data_coding(self) -> u8 {
        match self {
            Encoding::Gsm7 => 0x00,
            Encoding::Ucs2 => 0x08,
        }
    }

    /// Lower-case name as stored in the dispatch schema and written by the file connector.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Gsm7 => "gsm7",
            Encoding::Ucs2 => "ucs2",
        }
    }

    fn single_capacity(self) -> usize {
        match self {
            Encoding::Gsm7 => GSM7_SINGLE_SEPTETS,
            Encoding::Ucs2 => UCS2_SINGLE_UNITS,
        }
    }

    fn part_capacity(self) -> usize {
        match self {
            Encoding::Gsm7 => GSM7_PART_SEPTETS,
            Encoding::Ucs2 => UCS2_PART_UNITS,
        }
    }

    /// What one character costs: septets (GSM-7) or UTF-16 code units (UCS-2).
    fn cost(self, c: char) -> usize {
        match self {
            Encoding::Gsm7 => gsm7_septets(c).map_or(0, |s| s.len()),
            Encoding::Ucs2 => c.len_utf16(),
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of sizing a text: which encoding it needs and how many parts it becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodedText {
    pub encoding: Encoding,
    /// Number of SMS parts (1 for a text that fits one SMS, including the empty text).
    pub segments: usize,
    /// Length in the encoding's units: septets (extension characters count 2) or UTF-16 code units.
    pub units: usize,
    /// Units still free in the last part before another part is needed.
    pub remaining_in_last_part: usize,
}

/// The GSM 03.38 default alphabet, indexed by septet. 0x1B is the escape to the extension table and
/// maps to no character of its own.
const GSM7_BASIC: [char; 128] = [
    '@', '£', '$', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', '\n', 'Ø', 'ø', '\r', 'Å', 'å', //
    'Δ', '_', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ', '\u{1B}', 'Æ', 'æ', 'ß', 'É', //
    ' ', '!', '"', '#', '¤', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', '/', //
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ':', ';', '<', '=', '>', '?', //
    '¡', 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', //
    'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'Ä', 'Ö', 'Ñ', 'Ü', '§', //
    '¿', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', //
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 'ä', 'ö', 'ñ', 'ü', 'à', //
];

/// The GSM 03.38 extension table (after the escape septet 0x1B).
const GSM7_EXTENSION: [(char, u8); 10] = [
    ('\u{0C}', 0x0A),
    ('^', 0x14),
    ('{', 0x28),
    ('}', 0x29),
    ('\\', 0x2F),
    ('[', 0x3C),
    ('~', 0x3D),
    (']', 0x3E),
    ('|', 0x40),
    ('€', 0x65),
];

/// No GSM-7 representation, in [`GSM7_LOOKUP`].
const NOT_GSM7: u8 = 0xFF;
/// Marks an extension-table code in [`GSM7_LOOKUP`] (the codes themselves are below 0x80).
const EXTENSION_FLAG: u8 = 0x80;
/// The one GSM-7 character above U+03FF: the euro sign, in the extension table at 0x65.
const EURO: (char, u8) = ('€', 0x65);
/// One past the highest code point [`GSM7_LOOKUP`] covers: Ω (U+03A9), the last Greek capital of
/// the basic alphabet. Every other character of both tables is below it, which the table's
/// construction checks at compile time (an index past the end fails the build).
const GSM7_LOOKUP_LEN: usize = 0x3AA;

/// Code point → septet (basic alphabet), `EXTENSION_FLAG | code` (extension table) or
/// [`NOT_GSM7`]: one indexed load per character. The linear search of the 128-entry alphabet this
/// replaces was 21% of ingest's CPU under the 2 KB-message load (issue 15's profile).
const GSM7_LOOKUP: [u8; GSM7_LOOKUP_LEN] = {
    let mut table = [NOT_GSM7; GSM7_LOOKUP_LEN];
    let mut septet = 0;
    while septet < GSM7_BASIC.len() {
        // 0x1B is the escape to the extension table, not a character a user can send.
        if septet != GSM7_ESCAPE as usize {
            table[GSM7_BASIC[septet] as usize] = septet as u8;
        }
        septet += 1;
    }
    let mut index = 0;
    while index < GSM7_EXTENSION.len() {
        let (c, code) = GSM7_EXTENSION[index];
        if c != EURO.0 {
            table[c as usize] = EXTENSION_FLAG | code;
        }
        index += 1;
    }
    table
};

/// The septets of one character in GSM-7: one for the basic alphabet, escape + code for the
/// extension table, `None` when GSM-7 cannot carry it.
pub fn gsm7_septets(c: char) -> Option<Gsm7Char> {
    let entry = if c == EURO.0 {
        EXTENSION_FLAG | EURO.1
    } else {
        GSM7_LOOKUP.get(c as usize).copied().unwrap_or(NOT_GSM7)
    };
    match entry {
        NOT_GSM7 => None,
        code if code & EXTENSION_FLAG != 0 => Some(Gsm7Char::Extension(code & !EXTENSION_FLAG)),
        code => Some(Gsm7Char::Basic(code)),
    }
}

/// One character's GSM-7 representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gsm7Char {
    Basic(u8),
    /// Sent as 0x1B then this code.
    Extension(u8),
}

impl Gsm7Char {
    pub fn len(self) -> usize {
        match self {
            Gsm7Char::Basic(_) => 1,
            Gsm7Char::Extension(_) => 2,
        }
    }

    pub fn is_empty(self) -> bool {
        false
    }

    fn push_to(self, out: &mut Vec<u8>) {
        match self {
            Gsm7Char::Basic(code) => out.push(code),
            Gsm7Char::Extension(code) => out.extend_from_slice(&[GSM7_ESCAPE, code]),
        }
    }
}

/// True when every character of `text` is in the GSM-7 alphabet or its extension table.
pub fn is_gsm7(text: &str) -> bool {
    text.chars().all(|c| gsm7_septets(c).is_some())
}

/// The encoding `text` needs: GSM-7 when it can carry every character, else UCS-2.
pub fn detect_encoding(text: &str) -> Encoding {
    if is_gsm7(text) {
        Encoding::Gsm7
    } else {
        Encoding::Ucs2
    }
}

/// A running count of one encoding's units and of the parts they fill, greedily as
/// [`part_boundaries`] cuts them: a character goes to the next part when it does not fit whole.
#[derive(Debug, Clone, Copy)]
struct Tally {
    units: usize,
    parts: usize,
    used_in_part: usize,
}

impl Tally {
    const EMPTY: Tally = Tally {
        units: 0,
        parts: 1,
        used_in_part: 0,
    };

    fn add(&mut self, cost: usize, part_capacity: usize) {
        if self.used_in_part + cost > part_capacity {
            self.parts += 1;
            self.used_in_part = 0;
        }
        self.used_in_part += cost;
        self.units += cost;
    }

    fn sized(self, encoding: Encoding) -> EncodedText {
        if self.units <= encoding.single_capacity() {
            EncodedText {
                encoding,
                segments: 1,
                units: self.units,
                remaining_in_last_part: encoding.single_capacity() - self.units,
            }
        } else {
            EncodedText {
                encoding,
                segments: self.parts,
                units: self.units,
                remaining_in_last_part: encoding.part_capacity() - self.used_in_part,
            }
        }
    }
}

/// Sizes `text`: the encoding it needs and how many parts it becomes. The count is the number of
/// parts [`split`] produces, because both use the same rule (characters are never split).
///
/// One pass over the text: both encodings are counted side by side until a character GSM-7 cannot
/// carry ends the GSM-7 count (measuring the encoding first, then the units, then the parts, then
/// the last part took four passes of the old linear lookup).
pub fn encode(text: &str) -> EncodedText {
    let mut gsm7 = Some(Tally::EMPTY);
    let mut ucs2 = Tally::EMPTY;
    for c in text.chars() {
        ucs2.add(c.len_utf16(), UCS2_PART_UNITS);
        if let Some(tally) = gsm7.as_mut() {
            match gsm7_septets(c) {
                Some(septets) => tally.add(septets.len(), GSM7_PART_SEPTETS),
                None => gsm7 = None,
            }
        }
    }
    match gsm7 {
        Some(tally) => tally.sized(Encoding::Gsm7),
        None => ucs2.sized(Encoding::Ucs2),
    }
}

/// Byte offsets in `text` where each part of a multi-part message starts: greedy, a character goes to
/// the next part when it does not fit whole in the current one.
fn part_boundaries(text: &str, encoding: Encoding) -> Vec<usize> {
    let capacity = encoding.part_capacity();
    let mut starts = vec![0];
    let mut used = 0;
    for (offset, c) in text.char_indices() {
        let cost = encoding.cost(c);
        if used + cost > capacity {
            starts.push(offset);
            used = 0;
        }
        used += cost;
    }
    starts
}

/// One SMS part as submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// 1-based position in the message.
    pub sequence: u8,
    /// Number of parts of the message.
    pub total: u8,
    /// The text this part carries.
    pub text: String,
    /// The concatenation UDH (`05 00 03 ref total seq`); empty for a single-part message.
    pub udh: Vec<u8>,
    /// The text in the encoding, unpacked: one septet per octet (GSM-7) or UTF-16 big-endian (UCS-2).
    pub body: Vec<u8>,
}

impl Part {
    /// UDH followed by the body, unpacked: what an SMPP `short_message` carries (SMPP sends GSM-7
    /// one septet per octet; the SMSC packs it for the air interface).
    pub fn smpp_short_message(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.udh.len() + self.body.len());
        out.extend_from_slice(&self.udh);
        out.extend_from_slice(&self.body);
        out
    }

    /// True when the part starts with a UDH (SMPP esm_class UDHI 0x40).
    pub fn has_udh(&self) -> bool {
        !self.udh.is_empty()
    }
}

/// A text split into the parts it is sent as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitText {
    pub encoding: Encoding,
    pub parts: Vec<Part>,
}

/// Why a text cannot be sent as SMS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitError {
    /// The text needs more parts than the concatenation UDH can number.
    TooManyParts { needed: usize },
}

impl fmt::Display for SplitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SplitError::TooManyParts { needed } => write!(
                f,
                "the text needs {needed} SMS parts; at most {MAX_PARTS} can be joined"
            ),
        }
    }
}

impl std::error::Error for SplitError {}

/// Splits `text` into the parts it is sent as. `reference` is the concatenation reference number
/// shared by every part of this message; the caller varies it between messages to the same
/// recipient so the handset never joins parts of two messages.
pub fn split(text: &str, reference: u8) -> Result<SplitText, SplitError> {
    let sized = encode(text);
    let encoding = sized.encoding;
    if sized.segments == 1 {
        return Ok(SplitText {
            encoding,
            parts: vec![Part {
                sequence: 1,
                total: 1,
                text: text.to_owned(),
                udh: Vec::new(),
                body: encode_body(text, encoding),
            }],
        });
    }
    let mut starts = part_boundaries(text, encoding);
    if starts.len() > MAX_PARTS {
        return Err(SplitError::TooManyParts {
            needed: starts.len(),
        });
    }
    // Checked above: at most 255 parts.
    let total = starts.len() as u8;
    starts.push(text.len());
    let parts = starts
        .windows(2)
        .zip(1..=total)
        .map(|(range, sequence)| {
            let chunk = &text[range[0]..range[1]];
            Part {
                sequence,
                total,
                text: chunk.to_owned(),
                udh: concat_udh(reference, total, sequence).to_vec(),
                body: encode_body(chunk, encoding),
            }
        })
        .collect();
    Ok(SplitText { encoding, parts })
}

/// The concatenation UDH with an 8-bit reference: UDHL 5, IEI 0x00, IEDL 3, reference, total, seq.
pub fn concat_udh(reference: u8, total: u8, sequence: u8) -> [u8; CONCAT_UDH_LEN] {
    [0x05, 0x00, 0x03, reference, total, sequence]
}

fn encode_body(text: &str, encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::Gsm7 => gsm7_unpacked(text).unwrap_or_default(),
        Encoding::Ucs2 => ucs2_be(text),
    }
}

/// `text` as GSM-7 septets, one per octet (escape + code for extension characters); `None` when a
/// character is not in GSM-7.
pub fn gsm7_unpacked(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        gsm7_septets(c)?.push_to(&mut out);
    }
    Some(out)
}

/// Decodes unpacked GSM-7 septets (one per octet) back to text; `None` for a septet above 0x7F, an
/// unknown extension code or a trailing escape.
pub fn gsm7_decode(septets: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(septets.len());
    let mut iter = septets.iter();
    while let Some(&septet) = iter.next() {
        if septet == GSM7_ESCAPE {
            let &code = iter.next()?;
            let (c, _) = GSM7_EXTENSION.iter().find(|(_, e)| *e == code)?;
            out.push(*c);
        } else {
            out.push(*GSM7_BASIC.get(usize::from(septet))?);
        }
    }
    Some(out)
}

/// `text` as UTF-16 big-endian (what SMS calls UCS-2; characters outside the BMP become surrogate
/// pairs, which every current handset joins).
pub fn ucs2_be(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

/// Decodes UTF-16 big-endian; `None` for an odd length or an unpaired surrogate.
pub fn ucs2_decode(bytes: &[u8]) -> Option<String> {
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
        .collect();
    String::from_utf16(&units).ok()
}

/// Number of fill bits after a UDH of `udh_octets` octets so that the first septet starts on a
/// septet boundary (3GPP TS 23.040 §9.2.3.24).
pub fn fill_bits(udh_octets: usize) -> usize {
    (7 - (udh_octets * 8) % 7) % 7
}

/// Packs septets into the TP-UD octets of an SMS: `udh` first (may be empty), then fill bits, then
/// the septets, 7 bits each, least significant bit first.
pub fn pack_gsm7(udh: &[u8], septets: &[u8]) -> Vec<u8> {
    let start_bit = udh.len() * 8 + fill_bits(udh.len());
    let total_bits = start_bit + septets.len() * 7;
    let mut out = vec![0u8; total_bits.div_ceil(8)];
    out[..udh.len()].copy_from_slice(udh);
    for (index, &septet) in septets.iter().enumerate() {
        let bit = start_bit + index * 7;
        let (octet, shift) = (bit / 8, bit % 8);
        // The septet's 7 bits straddle at most two octets.
        let value = u16::from(septet & 0x7F) << shift;
        out[octet] |= (value & 0xFF) as u8;
        if shift > 1 {
            out[octet + 1] |= (value >> 8) as u8;
        }
    }
    out
}

/// Inverse of [`pack_gsm7`]: `udh_octets` octets of UDH, then `septet_count` septets. `None` when the
/// data is too short.
pub fn unpack_gsm7(data: &[u8], udh_octets: usize, septet_count: usize) -> Option<Vec<u8>> {
    let start_bit = udh_octets * 8 + fill_bits(udh_octets);
    if (start_bit + septet_count * 7).div_ceil(8) > data.len() {
        return None;
    }
    let septets = (0..septet_count)
        .map(|index| {
            let bit = start_bit + index * 7;
            let (octet, shift) = (bit / 8, bit % 8);
            let low = u16::from(data[octet]);
            let high = data.get(octet + 1).map_or(0, |&b| u16::from(b));
            (((high << 8 | low) >> shift) & 0x7F) as u8
        })
        .collect();
    Some(septets)
}

impl Part {
    /// The TP-UD octets of this part on the air interface: UDH, then the GSM-7 septets packed with
    /// fill bits, or the UCS-2 bytes. Always at most [`MAX_USER_DATA_OCTETS`].
    pub fn air_user_data(&self, encoding: Encoding) -> Vec<u8> {
        match encoding {
            Encoding::Gsm7 => pack_gsm7(&self.udh, &self.body),
            Encoding::Ucs2 => self.smpp_short_message(),
        }
    }
}

/// What [`sendable`] does with one character: keep it, make it a line break or a space, or drop it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sendable {
    Keep,
    LineBreak,
    Space,
    Drop,
}

/// Whether an SMS can carry `c`. GSM-7 and UCS-2 (UTF-16 here) can both encode every control
/// character, but Postgres refuses NUL in text (a job with one was retried for ever), many
/// SMSCs end the message at a NUL or reject control characters, and a handset shows the others
/// as boxes or nothing. So: line ends and vertical spacing (CR, VT, FF, NEL, U+2028, U+2029)
/// become one line break, a tab a space; every other C0 and C1 control, DEL, the byte-order mark
/// (an SMSC may take a U+FEFF inside UCS-2 for one and swap the bytes) and the noncharacters
/// (U+FFFE, U+FFFF, U+FDD0-U+FDEF and the last two of every plane) are dropped.
pub fn sendable_char(c: char) -> Sendable {
    match c {
        '\n' | '\r' | '\u{0B}' | '\u{0C}' | '\u{85}' | '\u{2028}' | '\u{2029}' => {
            Sendable::LineBreak
        }
        '\t' => Sendable::Space,
        '\u{FEFF}' | '\u{FDD0}'..='\u{FDEF}' => Sendable::Drop,
        c if c.is_control() => Sendable::Drop,
        c if (c as u32) & 0xFFFE == 0xFFFE => Sendable::Drop,
        _ => Sendable::Keep,
    }
}

/// `text` with every character handled as [`sendable_char`] says; a CR LF pair is one line
/// break. Borrows when nothing changes, which is nearly always.
pub fn sendable(text: &str) -> std::borrow::Cow<'_, str> {
    if text
        .chars()
        .all(|c| c == '\n' || sendable_char(c) == Sendable::Keep)
    {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match sendable_char(c) {
            Sendable::Keep => out.push(c),
            Sendable::LineBreak => {
                if c == '\r' && chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push('\n');
            }
            Sendable::Space => out.push(' '),
            Sendable::Drop => {}
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Cuts `text` to what fits in `max_parts` parts (clamped to 1..=255), on a character boundary, so
/// that an extension character or a surrogate pair is never cut in half. Returns the text and whether
/// anything was cut. Ingest uses it for a company's maximum-parts setting.
pub fn truncate_to_parts(text: &str, max_parts: usize) -> (String, bool) {
    let max_parts = max_parts.clamp(1, MAX_PARTS);
    let sized = encode(text);
    if sized.segments <= max_parts {
        return (text.to_owned(), false);
    }
    let encoding = sized.encoding;
    let end = if max_parts == 1 {
        prefix_end(text, encoding, encoding.single_capacity())
    } else {
        let starts = part_boundaries(text, encoding);
        // More parts than allowed, so there is a start of part max_parts + 1: cut there.
        starts[max_parts]
    };
    // A prefix of a UCS-2 text may be all GSM-7 and then count in septets; it still fits, because a
    // GSM-7 character costs at most 2 septets and 2 × 67 ≤ 153, 2 × 70 ≤ 160.
    (text[..end].to_owned(), true)
}

/// Byte offset of the end of the longest prefix of `text` costing at most `capacity` units.
fn prefix_end(text: &str, encoding: Encoding, capacity: usize) -> usize {
    let mut used = 0;
    for (offset, c) in text.char_indices() {
        used += encoding.cost(c);
        if used > capacity {
            return offset;
        }
    }
    text.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sendable_drops_controls_and_keeps_text() {
        assert_eq!(
            sendable("P\0u\0m\0p\u{1} 3\u{7f}\u{9b} failed"),
            "Pump 3 failed"
        );
        assert_eq!(sendable("a\r\nb\rc\u{2028}d\u{0C}e"), "a\nb\nc\nd\ne");
        assert_eq!(sendable("tab\there"), "tab here");
        assert_eq!(
            sendable("\u{FEFF}bom \u{FFFE}\u{FFFF}\u{1FFFF}\u{FDD0}x"),
            "bom x"
        );
        // Ordinary text, emoji with joiners and every GSM-7 character but the controls stay.
        let kept = "Kia ora — café 😀 👩\u{200D}💻 €[]{} Привет\nnext";
        assert!(matches!(sendable(kept), std::borrow::Cow::Borrowed(_)));
        assert_eq!(sendable(kept), kept);
    }

    proptest! {
        /// Whatever comes in, what goes out has no character `sendable_char` would change except
        /// line breaks, and encodes.
        #[test]
        fn sendable_output_is_clean(text in "\\PC*|[\\x00-\\x1f\\x7f-\\x9f a-z]*") {
            let out = sendable(&text);
            for c in out.chars() {
                prop_assert!(c == '\n' || sendable_char(c) == Sendable::Keep, "{c:?}");
            }
            prop_assert!(split(&out, 1).is_ok() || encode(&out).segments > MAX_PARTS);
        }
    }

    #[test]
    fn basic_alphabet_is_one_septet_each() {
        let text = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
        let sized = encode(text);
        assert_eq!(sized.encoding, Encoding::Gsm7);
        assert_eq!(sized.units, 127, "every basic character but the escape");
        assert_eq!(
            gsm7_unpacked(text).unwrap(),
            (0u8..128).filter(|&s| s != 0x1B).collect::<Vec<_>>()
        );
    }

    /// The O(1) lookup against the GSM 03.38 tables as written, for every Unicode scalar value.
    #[test]
    fn lookup_agrees_with_the_gsm_03_38_tables_for_every_character() {
        let by_search = |c: char| {
            if c == '\u{1B}' {
                return None;
            }
            if let Some(code) = GSM7_BASIC.iter().position(|&b| b == c) {
                return Some(Gsm7Char::Basic(code as u8));
            }
            GSM7_EXTENSION
                .iter()
                .find(|(e, _)| *e == c)
                .map(|&(_, code)| Gsm7Char::Extension(code))
        };
        let mut carried = 0;
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            assert_eq!(gsm7_septets(c), by_search(c), "{c:?} (U+{:04X})", c as u32);
            carried += usize::from(by_search(c).is_some());
        }
        // 127 basic characters (the escape is not one) and 10 in the extension table.
        assert_eq!(carried, 137);
    }

    /// The one-pass sizing against what the parts [`part_boundaries`] cuts hold.
    fn sized_by_boundaries(text: &str) -> (Encoding, usize, usize) {
        let encoding = detect_encoding(text);
        let units: usize = text.chars().map(|c| encoding.cost(c)).sum();
        if units <= encoding.single_capacity() {
            return (encoding, 1, encoding.single_capacity() - units);
        }
        let starts = part_boundaries(text, encoding);
        let last: usize = text[*starts.last().unwrap()..]
            .chars()
            .map(|c| encoding.cost(c))
            .sum();
        (encoding, starts.len(), encoding.part_capacity() - last)
    }

    #[test]
    fn extension_characters_cost_two_septets() {
        for c in ['^', '{', '}', '\\', '[', '~', ']', '|', '€', '\u{0C}'] {
            let text = c.to_string();
            let sized = encode(&text);
            assert_eq!(sized.encoding, Encoding::Gsm7, "{c:?}");
            assert_eq!(sized.units, 2, "{c:?}");
            assert_eq!(gsm7_unpacked(&text).unwrap()[0], GSM7_ESCAPE);
            assert_eq!(gsm7_decode(&gsm7_unpacked(&text).unwrap()).unwrap(), text);
        }
        assert_eq!(gsm7_unpacked("€").unwrap(), vec![0x1B, 0x65]);
    }

    #[test]
    fn characters_outside_gsm7_need_ucs2() {
        for text in ["ç", "é but also ê", "😀", "Привет", "`backtick`", "\u{1B}"] {
            assert_eq!(detect_encoding(text), Encoding::Ucs2, "{text}");
        }
        assert_eq!(
            detect_encoding("Ça coûte 5€"),
            Encoding::Ucs2,
            "û is not GSM-7"
        );
        assert_eq!(detect_encoding("Ça coute 5€"), Encoding::Gsm7);
    }

    #[test]
    fn segment_limits_gsm7() {
        assert_eq!(encode("").segments, 1);
        assert_eq!(encode(&"a".repeat(160)).segments, 1);
        assert_eq!(encode(&"a".repeat(161)).segments, 2);
        assert_eq!(encode(&"a".repeat(306)).segments, 2);
        assert_eq!(encode(&"a".repeat(307)).segments, 3);
        assert_eq!(encode(&"€".repeat(80)).segments, 1, "80 × 2 = 160 septets");
        assert_eq!(encode(&"€".repeat(81)).segments, 2);
        assert_eq!(encode(&"a".repeat(160)).remaining_in_last_part, 0);
    }

    #[test]
    fn extension_character_is_never_split() {
        // 152 septets then € (2): it does not fit the first part's 153, so it starts part 2.
        let text = format!("{}€{}", "a".repeat(152), "b".repeat(10));
        let split = split(&text, 7).unwrap();
        assert_eq!(split.parts.len(), 2);
        assert_eq!(split.parts[0].body.len(), 152);
        assert_eq!(split.parts[1].body[..2], [0x1B, 0x65]);
        assert_eq!(encode(&text).segments, 2);
    }

    #[test]
    fn segment_limits_ucs2() {
        assert_eq!(encode(&"ж".repeat(70)).segments, 1);
        assert_eq!(encode(&"ж".repeat(71)).segments, 2);
        assert_eq!(encode(&"ж".repeat(134)).segments, 2);
        assert_eq!(encode(&"ж".repeat(135)).segments, 3);
        let emoji = encode(&"😀".repeat(35));
        assert_eq!(
            (emoji.units, emoji.segments),
            (70, 1),
            "emoji are surrogate pairs"
        );
        assert_eq!(encode(&"😀".repeat(36)).segments, 2);
    }

    #[test]
    fn surrogate_pair_is_never_split() {
        // 66 units then an emoji (2): it does not fit part 1's 67, so it starts part 2.
        let text = format!("{}😀{}", "ж".repeat(66), "ж".repeat(10));
        let split = split(&text, 1).unwrap();
        assert_eq!(split.encoding, Encoding::Ucs2);
        assert_eq!(split.parts.len(), 2);
        assert_eq!(split.parts[0].body.len(), 66 * 2);
        assert_eq!(
            ucs2_decode(&split.parts[1].body).unwrap().chars().next(),
            Some('😀')
        );
    }

    #[test]
    fn three_part_message_has_udh_with_reference_total_and_order() {
        let text = "x".repeat(400);
        let split = split(&text, 0xAB).unwrap();
        assert_eq!(split.parts.len(), 3);
        for (index, part) in split.parts.iter().enumerate() {
            assert_eq!(part.udh, vec![0x05, 0x00, 0x03, 0xAB, 3, index as u8 + 1]);
            assert!(part.has_udh());
            assert!(part.smpp_short_message().starts_with(&part.udh));
        }
        assert_eq!(
            split.parts.iter().map(|p| p.body.len()).collect::<Vec<_>>(),
            vec![153, 153, 94]
        );
        let single = super::split("hello", 1).unwrap();
        assert!(single.parts[0].udh.is_empty());
        assert_eq!(single.parts[0].smpp_short_message(), b"hello".to_vec());
    }

    #[test]
    fn packing_known_vector() {
        // "hellohello" packed is the classic 3GPP example E8 32 9B FD 46 97 D9 EC 37.
        let packed = pack_gsm7(&[], &gsm7_unpacked("hellohello").unwrap());
        assert_eq!(
            packed,
            vec![0xE8, 0x32, 0x9B, 0xFD, 0x46, 0x97, 0xD9, 0xEC, 0x37]
        );
    }

    #[test]
    fn packing_after_udh_uses_one_fill_bit() {
        assert_eq!(fill_bits(6), 1);
        assert_eq!(fill_bits(0), 0);
        assert_eq!(fill_bits(7), 0);
        let udh = concat_udh(1, 2, 1);
        let packed = pack_gsm7(&udh, &[0x41]);
        assert_eq!(&packed[..6], &udh);
        // 'A' (0x41) shifted left by the one fill bit.
        assert_eq!(packed[6], 0x82);
        assert_eq!(unpack_gsm7(&packed, 6, 1).unwrap(), vec![0x41]);
    }

    #[test]
    fn full_parts_fit_140_octets() {
        let split = split(&"a".repeat(153 * 2), 9).unwrap();
        for part in &split.parts {
            assert_eq!(part.air_user_data(Encoding::Gsm7).len(), 140);
        }
        let single = super::split(&"a".repeat(160), 9).unwrap();
        assert_eq!(single.parts[0].air_user_data(Encoding::Gsm7).len(), 140);
        let ucs = super::split(&"ж".repeat(134), 9).unwrap();
        for part in &ucs.parts {
            assert_eq!(part.air_user_data(Encoding::Ucs2).len(), 140);
        }
    }

    #[test]
    fn too_many_parts_is_an_error() {
        let text = "a".repeat(153 * 255 + 1);
        assert_eq!(
            split(&text, 0).unwrap_err(),
            SplitError::TooManyParts { needed: 256 }
        );
        assert_eq!(split(&"a".repeat(153 * 255), 0).unwrap().parts.len(), 255);
    }

    #[test]
    fn truncation() {
        assert_eq!(truncate_to_parts("hello", 1), ("hello".to_owned(), false));
        let (cut, truncated) = truncate_to_parts(&"a".repeat(200), 1);
        assert_eq!((cut.len(), truncated), (160, true));
        let (cut, truncated) = truncate_to_parts(&"a".repeat(500), 2);
        assert_eq!((cut.len(), truncated), (306, true));
        // The € that would straddle the limit is dropped whole.
        let (cut, truncated) = truncate_to_parts(&format!("{}€€", "a".repeat(159)), 1);
        assert_eq!((cut, truncated), ("a".repeat(159), true));
        let (cut, _) = truncate_to_parts(&format!("{}😀", "ж".repeat(69)), 1);
        assert_eq!(cut, "ж".repeat(69));
        assert_eq!(
            truncate_to_parts(&"a".repeat(200), 0).0.len(),
            160,
            "0 means 1"
        );
    }

    /// Text drawn from GSM-7 basic and extension characters, plus some that force UCS-2.
    fn sms_text() -> impl Strategy<Value = String> {
        let gsm = prop::sample::select("aZ0 @£€[]{}^~|\\\n".chars().collect::<Vec<_>>());
        let any = prop_oneof![
            8 => gsm,
            1 => prop::sample::select(vec!['😀', 'ж', 'ç', '中', '🇳']),
            1 => any::<char>(),
        ];
        prop::collection::vec(any, 0..700).prop_map(|chars| chars.into_iter().collect())
    }

    fn gsm_only_text() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(GSM7_BASIC.to_vec()), 0..700).prop_map(|chars| {
            chars
                .into_iter()
                .map(|c| if c == '\u{1B}' { '€' } else { c })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn one_pass_sizing_agrees_with_the_part_boundaries(text in sms_text()) {
            let sized = encode(&text);
            prop_assert_eq!(
                (sized.encoding, sized.segments, sized.remaining_in_last_part),
                sized_by_boundaries(&text)
            );
        }

        #[test]
        fn segment_count_agrees_with_split(text in sms_text(), reference in any::<u8>()) {
            let sized = encode(&text);
            let split = split(&text, reference).unwrap();
            prop_assert_eq!(sized.segments, split.parts.len());
            prop_assert_eq!(sized.encoding, split.encoding);
            let joined: String = split.parts.iter().map(|p| p.text.as_str()).collect();
            prop_assert_eq!(joined, text);
        }

        #[test]
        fn every_part_fits_140_octets(text in sms_text(), reference in any::<u8>()) {
            let split = split(&text, reference).unwrap();
            for part in &split.parts {
                prop_assert!(part.air_user_data(split.encoding).len() <= MAX_USER_DATA_OCTETS);
                prop_assert_eq!(usize::from(part.total), split.parts.len());
            }
        }

        #[test]
        fn packing_round_trips(text in gsm_only_text(), reference in any::<u8>()) {
            let split = split(&text, reference).unwrap();
            prop_assert_eq!(split.encoding, Encoding::Gsm7);
            for part in &split.parts {
                let packed = part.air_user_data(Encoding::Gsm7);
                let septets = unpack_gsm7(&packed, part.udh.len(), part.body.len()).unwrap();
                prop_assert_eq!(&septets, &part.body);
                prop_assert_eq!(gsm7_decode(&septets).unwrap(), part.text.clone());
            }
        }

        #[test]
        fn ucs2_round_trips(text in sms_text()) {
            prop_assert_eq!(ucs2_decode(&ucs2_be(&text)).unwrap(), text);
        }

        #[test]
        fn truncation_fits_and_is_a_prefix(text in sms_text(), max in 1usize..5) {
            let (cut, truncated) = truncate_to_parts(&text, max);
            prop_assert!(text.starts_with(&cut));
            prop_assert!(encode(&cut).segments <= max);
            prop_assert_eq!(truncated, cut.len() < text.len());
            prop_assert_eq!(truncated, encode(&text).segments > max);
        }
    }
}
