//! The SMTP command parser on arbitrary lines. Properties: an accepted line is UTF-8 text without
//! control characters (tabs aside), so nothing accepted can split a log line or a header; and an
//! accepted command, written back out the way a client would write it, parses to the same command
//! (nothing the session acts on depends on how the client spelled it).
#![no_main]

use email2sms_ingest::smtp::command::{
    BodyType, Command, Mailbox, ReversePath, XclientAttribute, XforwardAttribute, parse_command,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    let Ok(command) = parse_command(line) else {
        return;
    };
    let text = std::str::from_utf8(line).expect("an accepted command line is UTF-8");
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\t'),
        "accepted a control character: {text:?}"
    );
    let wire = write(&command);
    assert_eq!(
        parse_command(wire.as_bytes()),
        Ok(command.clone()),
        "{text:?} parsed to {command:?}, written back as {wire:?}"
    );
});

/// The command as a client writes it.
fn write(command: &Command) -> String {
    match command {
        Command::Ehlo(name) => format!("EHLO {name}"),
        Command::Helo(name) => format!("HELO {name}"),
        Command::Mail { from, params } => {
            let mut line = match from {
                ReversePath::Null => "MAIL FROM:<>".to_owned(),
                ReversePath::Mailbox(mailbox) => format!("MAIL FROM:{}", path(mailbox)),
            };
            if let Some(size) = params.size {
                line.push_str(&format!(" SIZE={size}"));
            }
            if params.body == BodyType::EightBitMime {
                line.push_str(" BODY=8BITMIME");
            }
            if params.smtputf8 {
                line.push_str(" SMTPUTF8");
            }
            line
        }
        Command::Rcpt { to } => format!("RCPT TO:{}", path(to)),
        Command::Data => "DATA".into(),
        Command::Rset => "RSET".into(),
        Command::Noop => "NOOP".into(),
        Command::Quit => "QUIT".into(),
        Command::StartTls => "STARTTLS".into(),
        Command::Vrfy => "VRFY".into(),
        Command::Help => "HELP".into(),
        Command::Xclient(attributes) => {
            let pairs: Vec<String> = attributes.iter().map(xclient_pair).collect();
            format!("XCLIENT {}", pairs.join(" "))
        }
        Command::Xforward(attributes) => {
            let pairs: Vec<String> = attributes.iter().map(xforward_pair).collect();
            format!("XFORWARD {}", pairs.join(" "))
        }
    }
}

fn path(mailbox: &Mailbox) -> String {
    format!("<{}@{}>", local_part(&mailbox.local_part), mailbox.domain)
}

/// A dot-atom as it is, anything else quoted (RFC 5321 §4.1.2).
fn local_part(local: &str) -> String {
    let atext =
        |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii();
    if local
        .split('.')
        .all(|atom| !atom.is_empty() && atom.chars().all(atext))
    {
        return local.to_owned();
    }
    let mut quoted = String::from("\"");
    for c in local.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

fn xclient_pair(attribute: &XclientAttribute) -> String {
    let value = |value: &Option<String>| match value {
        Some(value) => xtext(value),
        None => "[UNAVAILABLE]".into(),
    };
    match attribute {
        XclientAttribute::Addr(Some(std::net::IpAddr::V4(ip))) => format!("ADDR={ip}"),
        XclientAttribute::Addr(Some(std::net::IpAddr::V6(ip))) => format!("ADDR=IPV6:{ip}"),
        XclientAttribute::Addr(None) => "ADDR=[UNAVAILABLE]".into(),
        XclientAttribute::Name(name) => format!("NAME={}", value(name)),
        XclientAttribute::Helo(helo) => format!("HELO={}", value(helo)),
        XclientAttribute::Port(Some(port)) => format!("PORT={port}"),
        XclientAttribute::Port(None) => "PORT=[UNAVAILABLE]".into(),
        XclientAttribute::Ignored(name) => format!("{name}=x"),
    }
}

fn xforward_pair(attribute: &XforwardAttribute) -> String {
    let value = |value: &Option<String>| match value {
        Some(value) => xtext(value),
        None => "[UNAVAILABLE]".into(),
    };
    match attribute {
        XforwardAttribute::Addr(Some(std::net::IpAddr::V4(ip))) => format!("ADDR={ip}"),
        XforwardAttribute::Addr(Some(std::net::IpAddr::V6(ip))) => format!("ADDR=IPV6:{ip}"),
        XforwardAttribute::Addr(None) => "ADDR=[UNAVAILABLE]".into(),
        XforwardAttribute::Name(name) => format!("NAME={}", value(name)),
        XforwardAttribute::Helo(helo) => format!("HELO={}", value(helo)),
        XforwardAttribute::Port(Some(port)) => format!("PORT={port}"),
        XforwardAttribute::Port(None) => "PORT=[UNAVAILABLE]".into(),
        XforwardAttribute::Ident(ident) => format!("IDENT={}", value(ident)),
        XforwardAttribute::Ignored(name) => format!("{name}=x"),
    }
}

/// xtext (RFC 3461 §4): printable ASCII but `+` and `=` as is, every other byte as `+XX`.
fn xtext(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        if (b'!'..=b'~').contains(&byte) && byte != b'+' && byte != b'=' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("+{byte:02X}"));
        }
    }
    out
}
