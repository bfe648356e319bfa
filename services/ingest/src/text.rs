//! What ingest reads from a message: the From mailbox, the auto-reply signals and the text that
//! becomes the SMS. Pure: bytes in, facts out, so Diagnose and the tests see exactly what the
//! SMTP path sees.
//!
//! Characters that Postgres or an SMSC cannot take are cleaned here, never refused: a NUL in a
//! body once got 250 and then failed in dispatch on every retry. Every text that reaches a job
//! (subject, body, Message-ID) goes through [`email2sms_sms::sendable`]: NUL and the other
//! C0 and C1 controls, DEL, the byte-order mark and the Unicode noncharacters are removed, line
//! ends and vertical spacing become one line break, a tab a space. Cleaning rather than refusing,
//! because the sender's words are still there and readable (a NUL usually comes from a broken
//! charset conversion, `P\0u\0m\0p`), and a refusal would bounce an alert for a byte nobody saw.
//! Rust strings cannot hold unpaired surrogates, and GSM-7 or UCS-2 (UTF-16) carry every other
//! character, so nothing else needs removing.
//! The From address is left as sent: with a control character it is not the address without
//! it, and the decision refuses it as invalid.
//!
//! Texts are cut at [`MAX_TEXT_CHARS`], beyond the longest SMS there is, so sizing and cutting
//! the SMS text stays cheap whatever the message holds.

use email2sms_proto::policy::v1::{CompanyLimits, OverLimitBehavior, TextMode};
use email2sms_proto::queue::v1::SmsEncoding;
use mail_parser::{Address, HeaderName, MessageParser};

use crate::smtp::Reply;

/// The facts ingest needs from the headers and body of one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedMail {
    /// Every mailbox in every From header (groups flattened); exactly one is acceptable.
    pub from: Vec<String>,
    /// How many From headers there were (RFC 5322 allows exactly one).
    pub from_headers: usize,
    pub subject: String,
    pub message_id: Option<String>,
    /// Why this looks like an automatic message, if it does.
    pub auto_reply: Option<String>,
    /// The cleaned body text (signature, quotes and footers removed, whitespace collapsed).
    pub body: String,
}

/// The most characters of subject or body kept: more than the longest SMS, 255 parts of 153
/// septets (39,015 characters) or 67 UTF-16 units, so a text cut here still needs more than 255
/// parts and is then cut by the part limit exactly as the whole text would be.
pub const MAX_TEXT_CHARS: usize = 40_000;

/// [`email2sms_sms::sendable`], then at most [`MAX_TEXT_CHARS`] characters.
pub fn clean_text(text: &str) -> String {
    let clean = email2sms_sms::sendable(text);
    match clean.char_indices().nth(MAX_TEXT_CHARS) {
        Some((cut, _)) => clean[..cut].to_owned(),
        None => clean.into_owned(),
    }
}

/// A header value as one clean line (the Message-ID).
fn one_line(text: &str) -> String {
    clean_text(text).replace('\n', " ").trim().to_owned()
}

/// Parses the message. A message mail-parser cannot read at all yields empty facts, which the
/// decision then refuses as "no From" — never a panic. This does all the work of reading a
/// message (a 25 MB one takes a while): the SMTP handler runs it off the async workers.
pub fn parse(message: &[u8]) -> ParsedMail {
    let Some(mail) = MessageParser::default().parse(message) else {
        return ParsedMail::default();
    };
    let mut from = Vec::new();
    let mut from_headers = 0;
    for value in mail.header_values(HeaderName::From) {
        from_headers += 1;
        if let Some(address) = value.as_address() {
            collect_addresses(address, &mut from);
        }
    }
    let subject = collapse(&clean_text(mail.subject().unwrap_or_default()));
    // Cleaned first (a quote marker or signature line hidden behind a control character is
    // still found), cut after (quotes and footers are removed from the whole text).
    let body = mail
        .body_text(0)
        .map(|text| clean_text(&clean_body(&email2sms_sms::sendable(&text))))
        .unwrap_or_default();
    ParsedMail {
        // Left as sent: an address with a control character is not the address without it, and
        // the decision refuses it (EmailAddress does not take control characters).
        from,
        from_headers,
        auto_reply: auto_reply_reason(&mail, &subject),
        subject,
        message_id: mail.message_id().map(one_line),
        body,
    }
}

fn collect_addresses(address: &Address<'_>, out: &mut Vec<String>) {
    // A group ("undisclosed:;") or a display name without an address counts as an entry without a
    // mailbox, so "exactly one mailbox" rejects it rather than silently ignoring it.
    for addr in address.iter() {
        out.push(addr.address().unwrap_or_default().trim().to_owned());
    }
    if let Address::Group(groups) = address
        && groups.iter().all(|g| g.addresses.is_empty())
    {
        out.push(String::new());
    }
}

fn header_text(mail: &mail_parser::Message<'_>, name: &str) -> Option<String> {
    mail.header_raw(name).map(|v| v.trim().to_ascii_lowercase())
}

/// Why the message is an automatic one (RFC 3834 and the de-facto headers of common mailers).
fn auto_reply_reason(mail: &mail_parser::Message<'_>, subject: &str) -> Option<String> {
    if let Some(value) = header_text(mail, "Auto-Submitted")
        && value.split(';').next().map(str::trim) != Some("no")
    {
        return Some(format!("it is marked \"Auto-Submitted: {value}\""));
    }
    if let Some(value) = header_text(mail, "Precedence")
        && matches!(value.as_str(), "bulk" | "junk" | "list")
    {
        return Some(format!("it is marked \"Precedence: {value}\""));
    }
    for header in [
        "X-Autoreply",
        "X-Autorespond",
        "X-Auto-Response-Suppress",
        "X-Autoresponse",
    ] {
        // X-Auto-Response-Suppress is set by Exchange on its own automatic replies only when it
        // carries OOF/AutoReply; a normal mail may carry "None"... keep it to the real markers.
        if let Some(value) = header_text(mail, header) {
            if header == "X-Auto-Response-Suppress" && !value.contains("oof") {
                continue;
            }
            return Some(format!("it carries the {header} header"));
        }
    }
    let lower = subject.to_lowercase();
    for marker in [
        "out of office",
        "out of the office",
        "automatic reply",
        "auto-reply",
        "autoreply",
        "auto reply",
        "abwesenheitsnotiz",
    ] {
        if lower.starts_with(marker) || lower.contains(&format!(": {marker}")) {
            return Some(format!("its subject says it is an {marker} message"));
        }
    }
    None
}

/// Lines that mobile mail apps append; everything from such a line on is dropped.
const FOOTERS: &[&str] = &[
    "sent from my iphone",
    "sent from my ipad",
    "sent from my android",
    "sent from my samsung",
    "sent from my mobile",
    "sent from my phone",
    "sent from outlook",
    "sent from mail for windows",
    "sent from yahoo mail",
    "get outlook for ios",
    "get outlook for android",
    "sent with proton mail",
];

/// Removes what is not the sender's own words and collapses whitespace.
pub fn clean_body(text: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    for line in text.lines() {
        let trimmed_end = line.trim_end_matches('\r');
        // RFC 3676 signature separator "-- " (some clients drop the trailing space).
        if trimmed_end == "-- " || trimmed_end == "--" {
            break;
        }
        let trimmed = trimmed_end.trim();
        let lower = trimmed.to_lowercase();
        if FOOTERS.iter().any(|f| lower.starts_with(f)) {
            break;
        }
        // Outlook's reply separator and the header block it starts.
        if lower.starts_with("-----original message-----")
            || lower.starts_with("________________________________")
        {
            break;
        }
        if trimmed.starts_with('>') {
            continue;
        }
        kept.push(trimmed_end);
    }
    // "On <date>, <name> wrote:" opens a quoted block: drop it (it may be wrapped over two
    // lines) together with what follows, which is the quote.
    let joined = kept.join("\n");
    let mut cut = joined.len();
    for (index, _) in joined.match_indices("wrote:") {
        let line_start = joined[..index].rfind('\n').map_or(0, |i| i + 1);
        let previous_start = joined[..line_start.saturating_sub(1)]
            .rfind('\n')
            .map_or(0, |i| i + 1);
        let candidates = [line_start, previous_start];
        if let Some(start) = candidates
            .iter()
            .find(|&&start| joined[start..].trim_start().starts_with("On "))
        {
            cut = cut.min(*start);
            break;
        }
    }
    collapse(&joined[..cut])
}

/// Runs of spaces and tabs become one space; blank lines disappear; lines stay lines (an SMS can
/// show them), and the ends are trimmed.
pub fn collapse(text: &str) -> String {
    text.lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The text of the SMS, sized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsText {
    pub text: String,
    pub encoding: SmsEncoding,
    pub segments: u32,
    pub truncated: bool,
    /// The typography replaced to keep the text GSM-7 (`CompanyLimits.keep_typography` off);
    /// empty when nothing was.
    pub replacements: Vec<email2sms_sms::Replacement>,
}

/// Chooses the text per the policy's mode, then applies the company's part limit. `platform_max`
/// applies when the company sets no limit.
pub fn sms_text(
    mail: &ParsedMail,
    mode: TextMode,
    limits: Option<&CompanyLimits>,
    platform_max: u32,
) -> Result<SmsText, Reply> {
    let text = match mode {
        TextMode::Subject => mail.subject.clone(),
        TextMode::SubjectAndBody => match (mail.subject.is_empty(), mail.body.is_empty()) {
            (true, _) => mail.body.clone(),
            (false, true) => mail.subject.clone(),
            (false, false) => format!("{}\n{}", mail.subject, mail.body),
        },
        // The proto's BODY is the body only; BODY_OR_SUBJECT (the default) falls back to the
        // subject so that a subject-only alert still goes out.
        TextMode::Body => mail.body.clone(),
        TextMode::BodyOrSubject | TextMode::Unspecified => {
            if mail.body.is_empty() {
                mail.subject.clone()
            } else {
                mail.body.clone()
            }
        }
    };
    if text.trim().is_empty() {
        let what = match mode {
            TextMode::Subject => "the subject is empty",
            TextMode::Body => "the body is empty",
            _ => "both the body and the subject are empty",
        };
        return Err(Reply::new(
            550,
            "5.6.0",
            format!(
                "the email has no text to send: {what} (signatures and quoted replies are removed); write the message in the email and send it again"
            ),
        ));
    }
    // Typography first: whether the text is GSM-7 decides how many parts it needs.
    let keep_typography = limits.is_some_and(CompanyLimits::keep_typography);
    let (text, replacements) = if keep_typography {
        (text, Vec::new())
    } else {
        match email2sms_sms::prefer_gsm7(&text) {
            email2sms_sms::Transliterated {
                text: std::borrow::Cow::Owned(plain),
                replacements,
            } => (plain, replacements),
            _ => (text, Vec::new()),
        }
    };
    let company_max = limits.map_or(0, |l| l.max_sms_parts);
    let max = if company_max == 0 {
        platform_max
    } else {
        company_max.min(platform_max)
    };
    let sized = email2sms_sms::encode(&text);
    let mut truncated = false;
    let text = if sized.segments > max as usize {
        let refuse = limits.is_some_and(|l| l.over_limit_behavior() == OverLimitBehavior::Refuse);
        if refuse {
            return Err(Reply::new(
                550,
                "5.3.4",
                format!(
                    "the text is too long: it needs {} SMS parts but your company allows at most {max}; shorten the email to about {} characters and send it again",
                    sized.segments,
                    max as usize * per_part(sized.encoding)
                ),
            ));
        }
        let (cut, was_cut) = email2sms_sms::truncate_to_parts(&text, max as usize);
        truncated = was_cut;
        cut
    } else {
        text
    };
    // Sized again only when it was cut: measuring a 2 KB text is a pass over it.
    let sized = if truncated {
        email2sms_sms::encode(&text)
    } else {
        sized
    };
    Ok(SmsText {
        encoding: match sized.encoding {
            email2sms_sms::Encoding::Gsm7 => SmsEncoding::Gsm7,
            email2sms_sms::Encoding::Ucs2 => SmsEncoding::Ucs2,
        },
        segments: u32::try_from(sized.segments).unwrap_or(u32::MAX),
        truncated,
        text,
        replacements,
    })
}

fn per_part(encoding: email2sms_sms::Encoding) -> usize {
    match encoding {
        email2sms_sms::Encoding::Gsm7 => email2sms_sms::GSM7_PART_SEPTETS,
        email2sms_sms::Encoding::Ucs2 => email2sms_sms::UCS2_PART_UNITS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(raw: &str) -> ParsedMail {
        parse(raw.replace('\n', "\r\n").as_bytes())
    }

    fn text_of(raw: &str) -> SmsText {
        sms_text(&mail(raw), TextMode::BodyOrSubject, None, 10).unwrap()
    }

    #[test]
    fn control_characters_are_removed_from_every_text() {
        let parsed = parse(
            b"From: Ana <a\0na@example.com>\r\nSubject: Al\x00ert\x01 now\r\nMessage-ID: <m\x00x@example.com>\r\n\r\nPump\x00 3\tfailed\x7f\x0b\x0csecond\r\n",
        );
        assert_eq!(parsed.subject, "Alert now");
        assert_eq!(parsed.body, "Pump 3 failed\nsecond");
        assert_eq!(parsed.message_id.as_deref(), Some("mx@example.com"));
        for text in [&parsed.subject, &parsed.body] {
            assert!(!text.contains('\0'), "{text:?}");
        }
        // The From stays as sent, for the decision to refuse.
        assert_eq!(parsed.from, ["a\0na@example.com"]);
        let sms = sms_text(&parsed, TextMode::BodyOrSubject, None, 10).unwrap();
        assert_eq!(
            sms.encoding,
            SmsEncoding::Gsm7,
            "a control character forced UCS-2"
        );
        // A quoted line behind a NUL is still a quote.
        assert_eq!(clean_body(&email2sms_sms::sendable("hi\n\0> quoted")), "hi");
    }

    #[test]
    fn a_huge_body_is_cut_beyond_the_longest_sms_and_truncated_as_before() {
        let words = "lorem ipsum ".repeat(10_000);
        let raw = format!("From: a@example.com\r\n\r\n{words}\r\n");
        let parsed = parse(raw.as_bytes());
        assert_eq!(parsed.body.chars().count(), MAX_TEXT_CHARS);
        let cut = sms_text(&parsed, TextMode::Body, None, 255).unwrap();
        let whole = ParsedMail {
            body: collapse(&words),
            ..parsed.clone()
        };
        assert_eq!(cut, sms_text(&whole, TextMode::Body, None, 255).unwrap());
        assert!(cut.truncated);
        assert_eq!(cut.segments, 255);
    }

    #[test]
    fn quoted_printable_body() {
        let sms = text_of(
            "From: a@example.com\nSubject: x\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\nCaf=C3=A9 at 10, a very long line that is soft=\n wrapped\n",
        );
        assert_eq!(
            sms.text,
            "Café at 10, a very long line that is soft wrapped"
        );
        assert_eq!(sms.encoding, SmsEncoding::Gsm7);
    }

    #[test]
    fn base64_body() {
        // "Привет мир" in UTF-8, base64.
        let sms = text_of(
            "From: a@example.com\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n0J/RgNC40LLQtdGCINC80LjRgA==\n",
        );
        assert_eq!(sms.text, "Привет мир");
        assert_eq!(sms.encoding, SmsEncoding::Ucs2);
        assert_eq!(sms.segments, 1);
    }

    #[test]
    fn encoded_utf8_subject_used_when_body_empty() {
        let parsed = mail("From: a@example.com\nSubject: =?utf-8?B?R3LDvMOfZSDwn5iA?=\n\n\n");
        assert_eq!(parsed.subject, "Grüße 😀");
        let sms = sms_text(&parsed, TextMode::BodyOrSubject, None, 10).unwrap();
        assert_eq!(sms.text, "Grüße 😀");
        assert_eq!(sms.encoding, SmsEncoding::Ucs2);
    }

    #[test]
    fn html_only_becomes_readable_text() {
        let sms = text_of(
            "From: a@example.com\nContent-Type: text/html; charset=utf-8\n\n<html><body><p>Server <b>down</b></p><p>call&nbsp;me</p></body></html>\n",
        );
        assert!(sms.text.contains("Server down"), "{:?}", sms.text);
        assert!(sms.text.contains("call"), "{:?}", sms.text);
        assert!(!sms.text.contains('<'));
    }

    #[test]
    fn big_attachment_is_ignored() {
        let blob = "QUFB".repeat(10 * 1024 * 1024 / 4 + 100);
        let mut raw = String::from(
            "From: a@example.com\nSubject: s\nContent-Type: multipart/mixed; boundary=XX\n\n--XX\nContent-Type: text/plain\n\nPump 3 failed\n--XX\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n",
        );
        for chunk in blob.as_bytes().chunks(76) {
            raw.push_str(std::str::from_utf8(chunk).unwrap());
            raw.push('\n');
        }
        raw.push_str("--XX--\n");
        assert!(raw.len() > 10_000_000);
        assert_eq!(text_of(&raw).text, "Pump 3 failed");
    }

    #[test]
    fn signature_quotes_and_footers_are_removed() {
        let sms = text_of(
            "From: a@example.com\n\nPlease  call   the plant.\n\nOn Mon, 1 Jan 2026 at 10:00, Bob <b@x.com> wrote:\n> old text\n> more\n",
        );
        assert_eq!(sms.text, "Please call the plant.");
        let sms = text_of("From: a@example.com\n\nAlarm cleared\n> quoted\n-- \nJane\nACME Ltd\n");
        assert_eq!(sms.text, "Alarm cleared");
        let sms = text_of("From: a@example.com\n\nOn my way\n\nSent from my iPhone\n");
        assert_eq!(sms.text, "On my way");
    }

    #[test]
    fn modes_and_empty_text() {
        let parsed = mail("From: a@example.com\nSubject: Alert\n\nBody here\n");
        let subject = sms_text(&parsed, TextMode::Subject, None, 10).unwrap();
        assert_eq!(subject.text, "Alert");
        let both = sms_text(&parsed, TextMode::SubjectAndBody, None, 10).unwrap();
        assert_eq!(both.text, "Alert\nBody here");
        let subject_only = mail("From: a@example.com\nSubject: Alert\n\n> quoted\n");
        let reply = sms_text(&subject_only, TextMode::Body, None, 10).unwrap_err();
        assert!(reply.text.contains("the body is empty"), "{reply:?}");
        let fallback = sms_text(&subject_only, TextMode::BodyOrSubject, None, 10).unwrap();
        assert_eq!(fallback.text, "Alert");
        let empty = mail("From: a@example.com\n\n-- \nsig\n");
        let reply = sms_text(&empty, TextMode::Body, None, 10).unwrap_err();
        assert_eq!((reply.code, reply.enhanced), (550, Some("5.6.0")));
        assert!(reply.text.contains("no text to send"));
    }

    #[test]
    fn part_limits_truncate_or_refuse() {
        let parsed = ParsedMail {
            body: "x".repeat(400),
            ..ParsedMail::default()
        };
        let truncate = CompanyLimits {
            max_sms_parts: 2,
            over_limit_behavior: OverLimitBehavior::Truncate as i32,
            ..CompanyLimits::default()
        };
        let sms = sms_text(&parsed, TextMode::Body, Some(&truncate), 10).unwrap();
        assert!(sms.truncated);
        assert_eq!(sms.segments, 2);
        let refuse = CompanyLimits {
            max_sms_parts: 2,
            over_limit_behavior: OverLimitBehavior::Refuse as i32,
            ..CompanyLimits::default()
        };
        let reply = sms_text(&parsed, TextMode::Body, Some(&refuse), 10).unwrap_err();
        assert_eq!(reply.enhanced, Some("5.3.4"));
    }

    #[test]
    fn typography_is_replaced_to_stay_gsm7_unless_the_company_keeps_it() {
        let parsed = ParsedMail {
            body: "Meeting – “today”…".into(),
            ..ParsedMail::default()
        };
        // The default (and an explicit false): plain equivalents, GSM-7, and what was replaced.
        for limits in [None, Some(CompanyLimits::default())] {
            let sms = sms_text(&parsed, TextMode::Body, limits.as_ref(), 10).unwrap();
            assert_eq!(sms.text, "Meeting - \"today\"...");
            assert_eq!(sms.encoding, SmsEncoding::Gsm7);
            let replaced: Vec<(char, &str, usize)> = sms
                .replacements
                .iter()
                .map(|r| (r.from, r.to, r.count))
                .collect();
            assert_eq!(
                replaced,
                [
                    ('–', "-", 1),
                    ('“', "\"", 1),
                    ('”', "\"", 1),
                    ('…', "...", 1)
                ]
            );
        }
        // Kept: sent as written, in UCS-2.
        let keep = CompanyLimits {
            keep_typography: Some(true),
            ..CompanyLimits::default()
        };
        let sms = sms_text(&parsed, TextMode::Body, Some(&keep), 10).unwrap();
        assert_eq!(sms.text, "Meeting – “today”…");
        assert_eq!(sms.encoding, SmsEncoding::Ucs2);
        assert!(sms.replacements.is_empty());
        // A text that needs UCS-2 anyway keeps its typography either way.
        let emoji = ParsedMail {
            body: "Meeting – today 🎉".into(),
            ..ParsedMail::default()
        };
        for limits in [None, Some(keep)] {
            let sms = sms_text(&emoji, TextMode::Body, limits.as_ref(), 10).unwrap();
            assert_eq!(sms.text, "Meeting – today 🎉");
            assert_eq!(sms.encoding, SmsEncoding::Ucs2);
            assert!(sms.replacements.is_empty());
        }
    }

    #[test]
    fn from_and_auto_reply() {
        let parsed = mail("From: Jane <jane@example.com>\nAuto-Submitted: auto-replied\n\nx\n");
        assert_eq!(parsed.from, vec!["jane@example.com".to_owned()]);
        assert!(parsed.auto_reply.is_some());
        let parsed = mail("From: a@x.com, b@x.com\nAuto-Submitted: no\n\nx\n");
        assert_eq!(parsed.from.len(), 2);
        assert!(parsed.auto_reply.is_none());
        assert!(
            mail("From: a@x.com\nPrecedence: bulk\n\nx\n")
                .auto_reply
                .is_some()
        );
        assert!(
            mail("From: a@x.com\nSubject: Out of Office: away\n\nx\n")
                .auto_reply
                .is_some()
        );
        assert!(
            mail("From: a@x.com\nX-Autoreply: yes\n\nx\n")
                .auto_reply
                .is_some()
        );
    }
}
