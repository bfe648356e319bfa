//! SMTP command lines → typed commands (RFC 5321 §4.1, with the ESMTP parameters this server
//! announces). Pure functions without I/O, so every malformed input can be tested directly; the
//! session decides what to do with a command, this module only says what the client asked.

use std::fmt;
use std::net::IpAddr;

/// Longest reverse- or forward-path (RFC 5321 §4.5.3.1.3), angle brackets included.
pub const MAX_PATH_LEN: usize = 256;
/// Longest local part (RFC 5321 §4.5.3.1.1).
pub const MAX_LOCAL_PART_LEN: usize = 64;
/// Longest domain (RFC 5321 §4.5.3.1.2).
pub const MAX_DOMAIN_LEN: usize = 255;

/// One command, as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    Mail {
        from: ReversePath,
        params: MailParams,
    },
    Rcpt {
        to: Mailbox,
    },
    Data,
    Rset,
    Noop,
    Quit,
    StartTls,
    Vrfy,
    Help,
    Xclient(Vec<XclientAttribute>),
    Xforward(Vec<XforwardAttribute>),
}

/// `MAIL FROM:<>` is a bounce (null reverse-path); anything else names the sender's mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReversePath {
    Null,
    Mailbox(Mailbox),
}

impl fmt::Display for ReversePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReversePath::Null => f.write_str("<>"),
            ReversePath::Mailbox(mailbox) => write!(f, "<{mailbox}>"),
        }
    }
}

/// `local@domain` from a path. The local part is kept as sent (quoted strings unquoted); the
/// domain is lower-cased, since domains are case-insensitive and every later comparison wants it so.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mailbox {
    pub local_part: String,
    pub domain: String,
}

impl Mailbox {
    /// Whether either part needs SMTPUTF8 (RFC 6531) to be transported.
    pub fn is_ascii(&self) -> bool {
        self.local_part.is_ascii() && self.domain.is_ascii()
    }

    /// Whether the domain is an address literal such as `[192.0.2.1]`, which never names an SMS domain.
    pub fn is_address_literal(&self) -> bool {
        self.domain.starts_with('[')
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local_part, self.domain)
    }
}

/// `BODY=` of MAIL FROM (RFC 6152).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyType {
    #[default]
    SevenBit,
    EightBitMime,
}

/// The MAIL FROM parameters this server understands.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailParams {
    /// `SIZE=` (RFC 1870): the client's estimate of the message size in bytes.
    pub size: Option<u64>,
    pub body: BodyType,
    /// `SMTPUTF8` (RFC 6531): addresses and headers may contain UTF-8.
    pub smtputf8: bool,
}

/// One `NAME=value` of XCLIENT (Postfix's XCLIENT extension), value already xtext-decoded.
/// `None` stands for `[UNAVAILABLE]` / `[TEMPUNAVAIL]`: the relay does not know the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XclientAttribute {
    Addr(Option<IpAddr>),
    Name(Option<String>),
    Helo(Option<String>),
    Port(Option<u16>),
    /// PROTO, LOGIN, DESTADDR, DESTPORT: accepted so a relay can send them, not used here.
    Ignored(String),
}

/// One `NAME=value` of XFORWARD (Postfix's XFORWARD extension, what its SMTP client sends with
/// `smtp_send_xforward_command = yes`), value already xtext-decoded; `None` for `[UNAVAILABLE]`.
/// Unlike XCLIENT, XFORWARD is not a new connection: it describes the client of the next mail
/// transaction only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XforwardAttribute {
    Addr(Option<IpAddr>),
    Name(Option<String>),
    Helo(Option<String>),
    Port(Option<u16>),
    /// The relay's own id of the message (its queue id), so one mail can be followed from the
    /// relay's log into ours.
    Ident(Option<String>),
    /// PROTO (SMTP or ESMTP) and SOURCE (LOCAL or REMOTE): accepted so a relay can send them,
    /// not used here.
    Ignored(String),
}

/// Why a command line could not be understood; each maps to one reply in the session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("command not recognised")]
    Unknown,
    #[error("the command line is not valid UTF-8 text or contains control characters")]
    BadEncoding,
    #[error("{0}")]
    Syntax(&'static str),
    #[error("{0}")]
    BadSender(String),
    #[error("{0}")]
    BadRecipient(String),
    #[error("parameter {0} is not supported")]
    UnsupportedParameter(String),
    #[error("XCLIENT: {0}")]
    BadXclient(String),
    #[error("XFORWARD: {0}")]
    BadXforward(String),
}

/// Parses one command line, without its CRLF.
pub fn parse_command(line: &[u8]) -> Result<Command, CommandError> {
    let line = std::str::from_utf8(line).map_err(|_| CommandError::BadEncoding)?;
    // Tabs are tolerated as separators; every other control character is a broken client or an
    // attempt to smuggle something into a log or a header.
    if line.chars().any(|c| c.is_control() && c != '\t') {
        return Err(CommandError::BadEncoding);
    }
    let (verb, rest) = match line.find([' ', '\t']) {
        Some(i) => (&line[..i], line[i + 1..].trim_matches([' ', '\t'])),
        None => (line, ""),
    };
    let no_argument = |command: Command| {
        if rest.is_empty() {
            Ok(command)
        } else {
            Err(CommandError::Syntax("this command takes no argument"))
        }
    };
    match verb.to_ascii_uppercase().as_str() {
        "EHLO" => parse_helo_name(rest).map(Command::Ehlo),
        "HELO" => parse_helo_name(rest).map(Command::Helo),
        "MAIL" => parse_mail(rest),
        "RCPT" => parse_rcpt(rest),
        "DATA" => no_argument(Command::Data),
        "RSET" => no_argument(Command::Rset),
        // NOOP, HELP and VRFY may carry an argument that is ignored (RFC 5321 §4.1.1.9).
        "NOOP" => Ok(Command::Noop),
        "HELP" => Ok(Command::Help),
        "VRFY" => Ok(Command::Vrfy),
        "QUIT" => no_argument(Command::Quit),
        "STARTTLS" => no_argument(Command::StartTls),
        "XCLIENT" => parse_xclient(rest).map(Command::Xclient),
        "XFORWARD" => parse_xforward(rest).map(Command::Xforward),
        _ => Err(CommandError::Unknown),
    }
}

fn parse_helo_name(rest: &str) -> Result<String, CommandError> {
    // The name is only logged and handed on; clients send all sorts (address literals, bare
    // host names), so any single token is accepted.
    if rest.is_empty() {
        return Err(CommandError::Syntax(
            "say EHLO followed by your host name, e.g. EHLO mail.example.com",
        ));
    }
    if rest.contains([' ', '\t']) || rest.len() > MAX_DOMAIN_LEN + 2 {
        return Err(CommandError::Syntax(
            "the host name after EHLO/HELO must be one word, e.g. EHLO mail.example.com",
        ));
    }
    Ok(rest.to_owned())
}

/// Strips `keyword:` (case-insensitive) and the optional space some clients put after the colon.
fn strip_keyword<'a>(rest: &'a str, keyword: &str) -> Option<&'a str> {
    let head = rest.get(..keyword.len())?;
    if head.eq_ignore_ascii_case(keyword) {
        Some(rest[keyword.len()..].trim_start_matches([' ', '\t']))
    } else {
        None
    }
}

/// Splits `<path> params` at the closing bracket of the path.
fn split_path(text: &str) -> Option<(&str, &str)> {
    if !text.starts_with('<') {
        return None;
    }
    // A quoted local part may contain `>`, so find the bracket outside quotes.
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => return Some((&text[..=i], text[i + 1..].trim_start())),
            _ => {}
        }
    }
    None
}

fn parse_mail(rest: &str) -> Result<Command, CommandError> {
    let Some(text) = strip_keyword(rest, "FROM:") else {
        return Err(CommandError::Syntax("use MAIL FROM:<sender@example.com>"));
    };
    let Some((path, params)) = split_path(text) else {
        return Err(CommandError::BadSender(
            "the sender address must be in angle brackets, e.g. MAIL FROM:<alice@example.com>"
                .into(),
        ));
    };
    let from = if path == "<>" {
        ReversePath::Null
    } else {
        ReversePath::Mailbox(parse_path(path).map_err(CommandError::BadSender)?)
    };
    let mut parsed = MailParams::default();
    for param in params.split([' ', '\t']).filter(|p| !p.is_empty()) {
        let (key, value) = match param.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (param, None),
        };
        match (key.to_ascii_uppercase().as_str(), value) {
            ("SIZE", Some(value)) => {
                let size = value
                    .parse::<u64>()
                    .ok()
                    .filter(|_| value.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or(CommandError::Syntax("SIZE= must be a number of bytes"))?;
                parsed.size = Some(size);
            }
            ("BODY", Some(value)) if value.eq_ignore_ascii_case("7BIT") => {
                parsed.body = BodyType::SevenBit;
            }
            ("BODY", Some(value)) if value.eq_ignore_ascii_case("8BITMIME") => {
                parsed.body = BodyType::EightBitMime;
            }
            ("SMTPUTF8", None) => parsed.smtputf8 = true,
            _ => return Err(CommandError::UnsupportedParameter(shown(param))),
        }
    }
    Ok(Command::Mail {
        from,
        params: parsed,
    })
}

fn parse_rcpt(rest: &str) -> Result<Command, CommandError> {
    let Some(text) = strip_keyword(rest, "TO:") else {
        return Err(CommandError::Syntax(
            "use RCPT TO:<64211234567@sms.example.net>",
        ));
    };
    let Some((path, params)) = split_path(text) else {
        return Err(CommandError::BadRecipient(
            "the recipient address must be in angle brackets, e.g. RCPT TO:<64211234567@sms.example.net>".into(),
        ));
    };
    // No RCPT parameter is announced (no DSN), so any parameter is one we do not support.
    if let Some(param) = params.split([' ', '\t']).find(|p| !p.is_empty()) {
        return Err(CommandError::UnsupportedParameter(shown(param)));
    }
    let to = parse_path(path).map_err(CommandError::BadRecipient)?;
    Ok(Command::Rcpt { to })
}

/// Parses `<[@route,@route:]local@domain>` (RFC 5321 §4.1.2). Source routes are accepted and
/// ignored, as §C of the RFC requires.
pub fn parse_path(path: &str) -> Result<Mailbox, String> {
    if path.len() > MAX_PATH_LEN {
        return Err(format!(
            "the address is longer than {MAX_PATH_LEN} characters"
        ));
    }
    let inner = path
        .strip_prefix('<')
        .and_then(|p| p.strip_suffix('>'))
        .ok_or_else(|| "the address must be in angle brackets".to_owned())?;
    let inner = if inner.starts_with('@') {
        match inner.split_once(':') {
            Some((_, mailbox)) => mailbox,
            None => return Err("the source route is not followed by ':' and an address".into()),
        }
    } else {
        inner
    };
    let at = inner
        .rfind('@')
        .ok_or_else(|| format!("`{}` has no @ and domain", shown(inner)))?;
    let (local, domain) = (&inner[..at], &inner[at + 1..]);
    let local_part = parse_local_part(local)?;
    let domain = parse_domain(domain)?;
    Ok(Mailbox { local_part, domain })
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

fn parse_local_part(local: &str) -> Result<String, String> {
    if local.is_empty() {
        return Err("the part before the @ is empty".into());
    }
    let value = if let Some(quoted) = local.strip_prefix('"') {
        let body = quoted
            .strip_suffix('"')
            .ok_or_else(|| "the quoted part before the @ is not closed".to_owned())?;
        let mut out = String::new();
        let mut chars = body.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(escaped) => out.push(escaped),
                    None => return Err("the quoted part before the @ ends with a backslash".into()),
                },
                '"' => {
                    return Err("a quote inside the quoted part before the @ is not escaped".into());
                }
                c => out.push(c),
            }
        }
        out
    } else {
        let valid = local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(is_atext));
        if !valid {
            return Err(format!(
                "`{}` is not a valid part before the @ (letters, digits and . - _ + are fine; no spaces or double dots)",
                shown(local)
            ));
        }
        local.to_owned()
    };
    if value.len() > MAX_LOCAL_PART_LEN {
        return Err(format!(
            "the part before the @ is longer than {MAX_LOCAL_PART_LEN} characters"
        ));
    }
    Ok(value)
}

fn parse_domain(domain: &str) -> Result<String, String> {
    if domain.is_empty() {
        return Err("the domain after the @ is empty".into());
    }
    if let Some(literal) = domain.strip_prefix('[') {
        let literal = literal
            .strip_suffix(']')
            .ok_or_else(|| "the address literal after the @ is not closed with ]".to_owned())?;
        let ip = match literal.get(..5) {
            Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => literal[5..]
                .parse::<std::net::Ipv6Addr>()
                .ok()
                .map(IpAddr::V6),
            _ => literal.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4),
        };
        return match ip {
            Some(_) => Ok(domain.to_ascii_lowercase()),
            None => Err(format!(
                "`{}` is not a valid address literal",
                shown(domain)
            )),
        };
    }
    let valid = domain.len() <= MAX_DOMAIN_LEN
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || !c.is_ascii())
        });
    if valid {
        Ok(domain.to_lowercase())
    } else {
        Err(format!(
            "`{}` is not a valid domain after the @",
            shown(domain)
        ))
    }
}

/// The `NAME=value` pairs of XCLIENT and XFORWARD: names upper-cased, values xtext-decoded,
/// `None` for the placeholders `[UNAVAILABLE]` and `[TEMPUNAVAIL]` Postfix sends for a value it
/// does not know.
fn relay_attributes(rest: &str) -> Result<Vec<(String, Option<String>)>, String> {
    if rest.is_empty() {
        return Err("no attributes given".into());
    }
    rest.split([' ', '\t'])
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, raw) = pair
                .split_once('=')
                .ok_or_else(|| format!("`{}` is not NAME=value", shown(pair)))?;
            let value =
                xtext_decode(raw).ok_or_else(|| format!("bad xtext in `{}`", shown(pair)))?;
            let known = !(value.eq_ignore_ascii_case("[UNAVAILABLE]")
                || value.eq_ignore_ascii_case("[TEMPUNAVAIL]"));
            Ok((name.to_ascii_uppercase(), known.then_some(value)))
        })
        .collect()
}

/// ADDR of XCLIENT or XFORWARD, when known.
fn relay_addr(value: Option<String>) -> Result<Option<IpAddr>, String> {
    value
        .map(|value| {
            parse_xclient_addr(&value)
                .ok_or_else(|| format!("`{}` is not an IP address", shown(&value)))
        })
        .transpose()
}

/// PORT of XCLIENT or XFORWARD, when known.
fn relay_port(value: Option<String>) -> Result<Option<u16>, String> {
    value
        .map(|value| {
            value
                .parse()
                .map_err(|_| format!("`{}` is not a port", shown(&value)))
        })
        .transpose()
}

fn parse_xclient(rest: &str) -> Result<Vec<XclientAttribute>, CommandError> {
    let attribute = |(name, value): (String, Option<String>)| {
        Ok(match name.as_str() {
            "ADDR" => XclientAttribute::Addr(relay_addr(value)?),
            "NAME" => XclientAttribute::Name(value),
            "HELO" => XclientAttribute::Helo(value),
            "PORT" => XclientAttribute::Port(relay_port(value)?),
            "PROTO" | "LOGIN" | "DESTADDR" | "DESTPORT" => XclientAttribute::Ignored(name),
            _ => return Err(format!("unknown attribute `{}`", shown(&name))),
        })
    };
    relay_attributes(rest)
        .and_then(|pairs| pairs.into_iter().map(attribute).collect())
        .map_err(CommandError::BadXclient)
}

/// `XFORWARD 1*( SP attribute-name"="attribute-value )` with the attributes of Postfix's
/// XFORWARD_README: NAME, ADDR, PORT, PROTO, HELO, IDENT, SOURCE.
fn parse_xforward(rest: &str) -> Result<Vec<XforwardAttribute>, CommandError> {
    let attribute = |(name, value): (String, Option<String>)| {
        Ok(match name.as_str() {
            "ADDR" => XforwardAttribute::Addr(relay_addr(value)?),
            "NAME" => XforwardAttribute::Name(value),
            "HELO" => XforwardAttribute::Helo(value),
            "PORT" => XforwardAttribute::Port(relay_port(value)?),
            "IDENT" => XforwardAttribute::Ident(value),
            "PROTO" | "SOURCE" => XforwardAttribute::Ignored(name),
            _ => return Err(format!("unknown attribute `{}`", shown(&name))),
        })
    };
    relay_attributes(rest)
        .and_then(|pairs| pairs.into_iter().map(attribute).collect())
        .map_err(CommandError::BadXforward)
}

/// `IPV6:2001:db8::1` or a plain address, as Postfix sends it (in XCLIENT and XFORWARD).
fn parse_xclient_addr(value: &str) -> Option<IpAddr> {
    let bare = match value.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPV6:") => &value[5..],
        _ => value,
    };
    bare.parse().ok()
}

/// Decodes xtext (RFC 3461 §4): `+XX` is a hex-encoded byte.
fn xtext_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'+' {
            let hex = raw.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let text = String::from_utf8(out).ok()?;
    (!text.chars().any(char::is_control)).then_some(text)
}

/// Client input quoted in a reply: cut short, so a reply line stays readable and bounded.
pub fn shown(input: &str) -> String {
    const MAX: usize = 60;
    let mut out: String = input.chars().take(MAX).collect();
    if input.chars().count() > MAX {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailbox(local: &str, domain: &str) -> Mailbox {
        Mailbox {
            local_part: local.into(),
            domain: domain.into(),
        }
    }

    #[test]
    fn parses_every_command() {
        assert_eq!(
            parse_command(b"EHLO mail.example.com"),
            Ok(Command::Ehlo("mail.example.com".into()))
        );
        assert_eq!(
            parse_command(b"helo [192.0.2.1]"),
            Ok(Command::Helo("[192.0.2.1]".into()))
        );
        assert_eq!(parse_command(b"DATA"), Ok(Command::Data));
        assert_eq!(parse_command(b"rset"), Ok(Command::Rset));
        assert_eq!(parse_command(b"NOOP whatever"), Ok(Command::Noop));
        assert_eq!(parse_command(b"QUIT"), Ok(Command::Quit));
        assert_eq!(parse_command(b"STARTTLS"), Ok(Command::StartTls));
        assert_eq!(parse_command(b"VRFY bob"), Ok(Command::Vrfy));
        assert_eq!(parse_command(b"BDAT 100"), Err(CommandError::Unknown));
        assert!(matches!(
            parse_command(b"DATA now"),
            Err(CommandError::Syntax(_))
        ));
        assert!(matches!(
            parse_command(b"EHLO"),
            Err(CommandError::Syntax(_))
        ));
    }

    #[test]
    fn parses_mail_from_with_parameters() {
        assert_eq!(
            parse_command(b"MAIL FROM:<Alice@Example.COM> SIZE=1000 BODY=8BITMIME SMTPUTF8"),
            Ok(Command::Mail {
                from: ReversePath::Mailbox(mailbox("Alice", "example.com")),
                params: MailParams {
                    size: Some(1000),
                    body: BodyType::EightBitMime,
                    smtputf8: true
                },
            })
        );
        assert_eq!(
            parse_command(b"mail from: <>"),
            Ok(Command::Mail {
                from: ReversePath::Null,
                params: MailParams::default()
            })
        );
        assert_eq!(
            parse_command(b"MAIL FROM:<@relay.example,@other.example:bob@example.com>"),
            Ok(Command::Mail {
                from: ReversePath::Mailbox(mailbox("bob", "example.com")),
                params: MailParams::default()
            })
        );
        assert_eq!(
            parse_command(b"MAIL FROM:<\"john doe\"@example.com>"),
            Ok(Command::Mail {
                from: ReversePath::Mailbox(mailbox("john doe", "example.com")),
                params: MailParams::default()
            })
        );
    }

    #[test]
    fn refuses_malformed_paths_and_parameters() {
        for line in [
            &b"MAIL FROM:alice@example.com"[..],
            b"MAIL FROM:<alice>",
            b"MAIL FROM:<alice@>",
            b"MAIL FROM:<@example.com>",
            b"MAIL FROM:<a..b@example.com>",
            b"MAIL FROM:<a b@example.com>",
            b"MAIL FROM:<alice@exa mple.com>",
            b"MAIL FROM:<alice@-example.com>",
            b"MAIL FROM:<alice@[300.1.1.1]>",
            b"MAIL FROM:<\"open@example.com>",
        ] {
            assert!(
                matches!(parse_command(line), Err(CommandError::BadSender(_))),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        assert!(matches!(
            parse_command(b"MAIL FROM:<a@example.com> BODY=BINARYMIME"),
            Err(CommandError::UnsupportedParameter(_))
        ));
        assert!(matches!(
            parse_command(b"MAIL FROM:<a@example.com> SIZE=-1"),
            Err(CommandError::Syntax(_))
        ));
        assert!(matches!(
            parse_command(b"MAIL TO:<a@example.com>"),
            Err(CommandError::Syntax(_))
        ));
        assert!(matches!(
            parse_command(b"RCPT TO:<64211234567@sms.example.net> NOTIFY=NEVER"),
            Err(CommandError::UnsupportedParameter(_))
        ));
        let long = format!("RCPT TO:<{}@example.com>", "1".repeat(65));
        assert!(matches!(
            parse_command(long.as_bytes()),
            Err(CommandError::BadRecipient(_))
        ));
        assert_eq!(
            parse_command(b"MAIL FROM:<a@example.com>\r"),
            Err(CommandError::BadEncoding)
        );
        assert_eq!(parse_command(b"MAIL \xff"), Err(CommandError::BadEncoding));
    }

    #[test]
    fn parses_recipients_including_utf8_and_literals() {
        assert_eq!(
            parse_command(b"RCPT TO:<+64-21-123-4567@SMS.Example.NET>"),
            Ok(Command::Rcpt {
                to: mailbox("+64-21-123-4567", "sms.example.net")
            })
        );
        let Ok(Command::Rcpt { to }) = parse_command("RCPT TO:<jöhn@bücher.example>".as_bytes())
        else {
            panic!("UTF-8 address refused");
        };
        assert!(!to.is_ascii());
        let Ok(Command::Rcpt { to }) = parse_command(b"RCPT TO:<x@[IPv6:2001:db8::1]>") else {
            panic!("address literal refused");
        };
        assert!(to.is_address_literal());
    }

    #[test]
    fn parses_xclient() {
        assert_eq!(
            parse_command(
                b"XCLIENT ADDR=192.0.2.7 NAME=mail.example.com HELO=[UNAVAILABLE] PROTO=ESMTP"
            ),
            Ok(Command::Xclient(vec![
                XclientAttribute::Addr(Some("192.0.2.7".parse().unwrap())),
                XclientAttribute::Name(Some("mail.example.com".into())),
                XclientAttribute::Helo(None),
                XclientAttribute::Ignored("PROTO".into()),
            ]))
        );
        assert_eq!(
            parse_command(b"XCLIENT ADDR=IPV6:2001:db8::1 HELO=a+20b PORT=2525"),
            Ok(Command::Xclient(vec![
                XclientAttribute::Addr(Some("2001:db8::1".parse().unwrap())),
                XclientAttribute::Helo(Some("a b".into())),
                XclientAttribute::Port(Some(2525)),
            ]))
        );
        for bad in [
            &b"XCLIENT"[..],
            b"XCLIENT ADDR=not-an-ip",
            b"XCLIENT FOO=1",
            b"XCLIENT ADDR",
            b"XCLIENT NAME=a+0Ab",
            b"XCLIENT NAME=a+G",
        ] {
            assert!(
                matches!(parse_command(bad), Err(CommandError::BadXclient(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn parses_xforward_as_postfix_sends_it() {
        // Postfix 3.7 with smtp_send_xforward_command = yes, in its two commands.
        assert_eq!(
            parse_command(
                b"XFORWARD NAME=[UNAVAILABLE] ADDR=127.0.0.77 PORT=40123 PROTO=ESMTP HELO=mail.client.test"
            ),
            Ok(Command::Xforward(vec![
                XforwardAttribute::Name(None),
                XforwardAttribute::Addr(Some("127.0.0.77".parse().unwrap())),
                XforwardAttribute::Port(Some(40123)),
                XforwardAttribute::Ignored("PROTO".into()),
                XforwardAttribute::Helo(Some("mail.client.test".into())),
            ]))
        );
        assert_eq!(
            parse_command(b"xforward ident=4dLqZk2Fz1z9s source=REMOTE"),
            Ok(Command::Xforward(vec![
                XforwardAttribute::Ident(Some("4dLqZk2Fz1z9s".into())),
                XforwardAttribute::Ignored("SOURCE".into()),
            ]))
        );
        assert_eq!(
            parse_command(b"XFORWARD ADDR=IPV6:2001:db8::7 HELO=[TEMPUNAVAIL] NAME=a+2Bb"),
            Ok(Command::Xforward(vec![
                XforwardAttribute::Addr(Some("2001:db8::7".parse().unwrap())),
                XforwardAttribute::Helo(None),
                XforwardAttribute::Name(Some("a+b".into())),
            ]))
        );
        assert_eq!(
            parse_command(b"XFORWARD ADDR=[UNAVAILABLE]"),
            Ok(Command::Xforward(vec![XforwardAttribute::Addr(None)]))
        );
    }

    #[test]
    fn refuses_malformed_xforward_with_its_own_error() {
        for bad in [
            &b"XFORWARD"[..],
            b"XFORWARD ADDR=mail.example.com",
            b"XFORWARD PORT=70000",
            b"XFORWARD LOGIN=alice",
            b"XFORWARD HELO",
            b"XFORWARD HELO=a+0Db",
        ] {
            assert!(
                matches!(parse_command(bad), Err(CommandError::BadXforward(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(line in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = parse_command(&line);
        }

        #[test]
        fn random_commands_never_panic(
            verb in "(?i)(MAIL FROM:|RCPT TO:|XCLIENT |XFORWARD |EHLO |DATA|)",
            rest in "[<>@\"\\\\:,.\\[\\]a-zA-Z0-9=+ \u{e9}-]{0,80}",
        ) {
            let _ = parse_command(format!("{verb}{rest}").as_bytes());
        }
    }
}
