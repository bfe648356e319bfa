//! SMTP replies: a code, an enhanced status code (RFC 3463) and text for a person.

use std::fmt;

/// Job ids named in the 250 of an accepted message; the others are counted. A reply line is at
/// most 512 octets (RFC 5321 §4.5.3.1.5): `250 2.0.0 queued 100 SMS as ` is 28, each id 38 with
/// its `, `, and ` and 90 more` 12, so 10 ids make 420 and leave room; 12 would be the most.
pub const QUEUED_IDS_SHOWN: usize = 10;

/// One reply. `text` may have several lines (`\n`), sent as a multi-line reply; every line carries
/// the enhanced code, as RFC 2034 asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// `class.subject.detail`, e.g. `5.7.1`; `None` for the greeting and the EHLO reply, which
    /// RFC 2034 exempts.
    pub enhanced: Option<&'static str>,
    pub text: String,
}

impl Reply {
    pub fn new(code: u16, enhanced: &'static str, text: impl Into<String>) -> Reply {
        Reply {
            code,
            enhanced: Some(enhanced),
            text: text.into(),
        }
    }

    /// A reply without an enhanced status code.
    pub fn plain(code: u16, text: impl Into<String>) -> Reply {
        Reply {
            code,
            enhanced: None,
            text: text.into(),
        }
    }

    pub fn ok(text: impl Into<String>) -> Reply {
        Reply::new(250, "2.0.0", text)
    }

    /// The 250 of an accepted message: `queued 2 SMS as <job id>, <job id>`, as Postfix says
    /// `queued as <queue id>`, so the relay's log names the jobs, and `GetMessage` (or
    /// `ListMessages`) finds each. Past [`QUEUED_IDS_SHOWN`] ids the rest are counted.
    pub fn queued<S: AsRef<str>>(job_ids: &[S]) -> Reply {
        let shown: Vec<&str> = job_ids
            .iter()
            .take(QUEUED_IDS_SHOWN)
            .map(AsRef::as_ref)
            .collect();
        let mut text = format!("queued {} SMS as {}", job_ids.len(), shown.join(", "));
        if job_ids.len() > shown.len() {
            text.push_str(&format!(" and {} more", job_ids.len() - shown.len()));
        }
        Reply::ok(text)
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 4xx: the client keeps the message and tries again later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// The reply as it goes on the wire, CRLF-terminated.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let lines: Vec<&str> = if self.text.is_empty() {
            vec![""]
        } else {
            self.text.split('\n').collect()
        };
        for (i, line) in lines.iter().enumerate() {
            let separator = if i + 1 == lines.len() { ' ' } else { '-' };
            // Text comes partly from client input and from handlers: keep it one printable line.
            let line: String = line
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            let line = match self.enhanced {
                Some(enhanced) => format!("{}{separator}{enhanced} {line}", self.code),
                None => format!("{}{separator}{line}", self.code),
            };
            out.extend_from_slice(line.trim_end().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.enhanced {
            Some(enhanced) => write!(f, "{} {enhanced} {}", self.code, self.text),
            None => write!(f, "{} {}", self.code, self.text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_single_and_multi_line_replies() {
        assert_eq!(
            Reply::new(550, "5.7.1", "no").to_wire(),
            b"550 5.7.1 no\r\n".to_vec()
        );
        assert_eq!(
            Reply::plain(250, "host\nPIPELINING\nSIZE 10").to_wire(),
            b"250-host\r\n250-PIPELINING\r\n250 SIZE 10\r\n".to_vec()
        );
        assert_eq!(
            Reply::new(451, "4.3.0", "a\rb").to_wire(),
            b"451 4.3.0 a b\r\n".to_vec()
        );
    }

    #[test]
    fn the_250_names_what_was_queued_within_one_reply_line() {
        assert_eq!(
            Reply::queued(&["0190e0b6-0000-7000-8000-000000000001"]).to_string(),
            "250 2.0.0 queued 1 SMS as 0190e0b6-0000-7000-8000-000000000001"
        );
        assert_eq!(
            Reply::queued(&["a", "b"]).to_string(),
            "250 2.0.0 queued 2 SMS as a, b"
        );
        let ids: Vec<String> = (0..100)
            .map(|n| format!("0190e0b6-0000-7000-8000-{n:012}"))
            .collect();
        let reply = Reply::queued(&ids);
        let wire = reply.to_wire();
        assert!(wire.len() <= 512, "{} octets", wire.len());
        assert!(
            reply.text.ends_with(&format!("{} and 90 more", ids[9])),
            "{reply}"
        );
        assert!(!reply.text.contains(&ids[10]), "{reply}");
    }
}
