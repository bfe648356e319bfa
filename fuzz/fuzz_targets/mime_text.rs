//! What ingest reads from an arbitrary message (mail-parser, then the signature, quote and
//! whitespace clean-up) and the SMS text built from it in every text mode. Properties: the text
//! has no NUL or other control character but the line break (nothing a handset or a log would
//! render as garbage or cut at), it is already tidy (tidying it again changes nothing), and the
//! SMS is sized as its encoder says, never over the part limit, and never empty.
#![no_main]

use email2sms_ingest::text::{self, collapse};
use email2sms_proto::policy::v1::{CompanyLimits, OverLimitBehavior, TextMode};
use libfuzzer_sys::fuzz_target;

/// The platform's part limit in the tests: small, so truncation is reached.
const PLATFORM_MAX: u32 = 3;

fn assert_clean(what: &str, text: &str) {
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "the {what} holds a control character: {text:?}"
    );
}

fuzz_target!(|message: &[u8]| {
    let mail = text::parse(message);
    assert_clean("subject", &mail.subject);
    assert_clean("body", &mail.body);
    assert_eq!(
        collapse(&mail.subject),
        mail.subject,
        "the subject is not tidy"
    );
    assert_eq!(collapse(&mail.body), mail.body, "the body is not tidy");
    for from in &mail.from {
        assert_eq!(from.trim(), from, "a From address is not trimmed");
    }
    assert!(mail.from_headers >= usize::from(!mail.from.is_empty()));
    let refuse = CompanyLimits {
        max_sms_parts: 2,
        over_limit_behavior: OverLimitBehavior::Refuse as i32,
        ..Default::default()
    };
    for mode in [
        TextMode::Subject,
        TextMode::Body,
        TextMode::SubjectAndBody,
        TextMode::BodyOrSubject,
    ] {
        for limits in [None, Some(&refuse)] {
            let max = limits.map_or(PLATFORM_MAX, |l| l.max_sms_parts);
            match text::sms_text(&mail, mode, limits, PLATFORM_MAX) {
                Ok(sms) => {
                    assert!(!sms.text.trim().is_empty(), "an empty SMS was accepted");
                    assert_clean("SMS", &sms.text);
                    let sized = email2sms_sms::encode(&sms.text);
                    assert_eq!(
                        sms.segments as usize, sized.segments,
                        "segments mis-counted"
                    );
                    assert!(
                        sms.segments >= 1 && sms.segments <= max,
                        "{} parts over {max}",
                        sms.segments
                    );
                    assert!(
                        !(sms.truncated && limits.is_some()),
                        "truncated although the company refuses"
                    );
                }
                Err(reply) => assert_eq!(reply.code, 550, "{reply:?}"),
            }
        }
    }
});
