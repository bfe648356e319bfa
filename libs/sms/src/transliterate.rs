//! Typography that costs a whole SMS its alphabet: one curly quote or automatic en dash (Outlook
//! and Word insert them as you type) makes the text UCS-2, and each part drops from 153 to 67
//! characters — a 300-character email goes from 2 SMS to 5.
//!
//! [`prefer_gsm7`] replaces such characters by their GSM-7 equivalents, but only when that makes
//! the whole text GSM-7: a text that needs UCS-2 anyway (emoji, Cyrillic, Chinese) keeps its
//! typography, since UCS-2 carries it at no extra cost. Letters are never changed (`á` is not `a`
//! in every language); only punctuation and spaces with an unambiguous plain form are.

use std::borrow::Cow;

use crate::is_gsm7;

/// What a character becomes. Ordered by code point for the binary search.
const EQUIVALENTS: &[(char, &str)] = &[
    ('\u{00A0}', " "),   // no-break space
    ('\u{00AB}', "\""),  // « left-pointing double angle quotation mark
    ('\u{00AD}', ""),    // soft hyphen: invisible unless a line breaks there
    ('\u{00BB}', "\""),  // » right-pointing double angle quotation mark
    ('\u{2002}', " "),   // en space
    ('\u{2003}', " "),   // em space
    ('\u{2004}', " "),   // three-per-em space
    ('\u{2005}', " "),   // four-per-em space
    ('\u{2006}', " "),   // six-per-em space
    ('\u{2007}', " "),   // figure space
    ('\u{2008}', " "),   // punctuation space
    ('\u{2009}', " "),   // thin space
    ('\u{200A}', " "),   // hair space
    ('\u{2010}', "-"),   // hyphen
    ('\u{2011}', "-"),   // non-breaking hyphen
    ('\u{2012}', "-"),   // figure dash
    ('\u{2013}', "-"),   // en dash (Outlook's "word - word")
    ('\u{2014}', "-"),   // em dash
    ('\u{2015}', "-"),   // horizontal bar
    ('\u{2018}', "'"),   // ‘ left single quotation mark
    ('\u{2019}', "'"),   // ’ right single quotation mark, also the typographic apostrophe
    ('\u{201A}', "'"),   // ‚ single low-9 quotation mark
    ('\u{201B}', "'"),   // ‛ single high-reversed-9 quotation mark
    ('\u{201C}', "\""),  // “ left double quotation mark
    ('\u{201D}', "\""),  // ” right double quotation mark
    ('\u{201E}', "\""),  // „ double low-9 quotation mark
    ('\u{201F}', "\""),  // ‟ double high-reversed-9 quotation mark
    ('\u{2022}', "-"),   // • bullet (lists pasted from Word)
    ('\u{2024}', "."),   // one dot leader
    ('\u{2026}', "..."), // … horizontal ellipsis
    ('\u{202F}', " "),   // narrow no-break space (French punctuation)
    ('\u{2032}', "'"),   // ′ prime
    ('\u{2033}', "\""),  // ″ double prime
    ('\u{2039}', "'"),   // ‹ single left-pointing angle quotation mark
    ('\u{203A}', "'"),   // › single right-pointing angle quotation mark
    ('\u{205F}', " "),   // medium mathematical space
    ('\u{2212}', "-"),   // − minus sign
];

/// The GSM-7 equivalent of `c`, when it has one.
pub fn gsm7_equivalent(c: char) -> Option<&'static str> {
    EQUIVALENTS
        .binary_search_by_key(&c, |&(from, _)| from)
        .ok()
        .map(|index| EQUIVALENTS[index].1)
}

/// One kind of character replaced, for Diagnose: "3 × U+2019 ’ → '".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replacement {
    pub from: char,
    pub to: &'static str,
    pub count: usize,
}

/// A text as it will be sent, and what was replaced to get there (empty when nothing was).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transliterated<'a> {
    pub text: Cow<'a, str>,
    pub replacements: Vec<Replacement>,
}

/// `text` with its typography replaced by GSM-7 equivalents when that makes the whole text GSM-7;
/// otherwise `text` unchanged (borrowed) and no replacements.
pub fn prefer_gsm7(text: &str) -> Transliterated<'_> {
    let unchanged = Transliterated {
        text: Cow::Borrowed(text),
        replacements: Vec::new(),
    };
    if is_gsm7(text) {
        return unchanged;
    }
    let mut out = String::with_capacity(text.len());
    let mut replacements: Vec<Replacement> = Vec::new();
    for c in text.chars() {
        match gsm7_equivalent(c) {
            Some(to) => {
                out.push_str(to);
                match replacements.iter_mut().find(|r| r.from == c) {
                    Some(seen) => seen.count += 1,
                    None => replacements.push(Replacement {
                        from: c,
                        to,
                        count: 1,
                    }),
                }
            }
            None => out.push(c),
        }
    }
    if replacements.is_empty() || !is_gsm7(&out) {
        return unchanged;
    }
    Transliterated {
        text: Cow::Owned(out),
        replacements,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Encoding, encode, gsm7_septets};

    #[test]
    fn the_table_is_sorted_and_every_equivalent_is_gsm7() {
        assert!(
            EQUIVALENTS.windows(2).all(|w| w[0].0 < w[1].0),
            "sorted, no duplicates"
        );
        for &(from, to) in EQUIVALENTS {
            assert!(gsm7_septets(from).is_none(), "{from:?} is GSM-7 already");
            assert!(is_gsm7(to), "{from:?} → {to:?} is not GSM-7");
        }
    }

    #[test]
    fn outlook_typography_becomes_gsm7() {
        let sent = prefer_gsm7("Meeting – “today”…");
        assert_eq!(sent.text, "Meeting - \"today\"...");
        assert_eq!(encode(&sent.text).encoding, Encoding::Gsm7);
        assert_eq!(encode("Meeting – “today”…").encoding, Encoding::Ucs2);
        assert_eq!(
            sent.replacements,
            vec![
                Replacement {
                    from: '–',
                    to: "-",
                    count: 1
                },
                Replacement {
                    from: '“',
                    to: "\"",
                    count: 1
                },
                Replacement {
                    from: '”',
                    to: "\"",
                    count: 1
                },
                Replacement {
                    from: '…',
                    to: "...",
                    count: 1
                },
            ]
        );
    }

    #[test]
    fn a_text_that_needs_ucs2_anyway_keeps_its_typography() {
        for text in ["See you – “soon” 🙂", "Встреча – “завтра”", "会议 – “今天”"]
        {
            let sent = prefer_gsm7(text);
            assert_eq!(sent.text, text);
            assert!(matches!(sent.text, Cow::Borrowed(_)));
            assert!(sent.replacements.is_empty());
        }
    }

    #[test]
    fn letters_are_never_changed() {
        // á has no GSM-7 form: the text stays UCS-2 with its dash, not "Informacion - ...".
        let sent = prefer_gsm7("Información – mañana");
        assert_eq!(sent.text, "Información – mañana");
        assert!(sent.replacements.is_empty());
    }

    #[test]
    fn gsm7_text_is_borrowed_untouched() {
        let sent = prefer_gsm7("Plain text, 5€ [ok]");
        assert!(matches!(sent.text, Cow::Borrowed("Plain text, 5€ [ok]")));
    }

    #[test]
    fn repeated_characters_are_counted_once_each() {
        let sent = prefer_gsm7("it’s Bob’s\u{00A0}car");
        assert_eq!(sent.text, "it's Bob's car");
        assert_eq!(
            sent.replacements,
            vec![
                Replacement {
                    from: '’',
                    to: "'",
                    count: 2
                },
                Replacement {
                    from: '\u{00A0}',
                    to: " ",
                    count: 1
                },
            ]
        );
    }
}
