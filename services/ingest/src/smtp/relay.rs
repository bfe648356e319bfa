//! What a relay in front of the gateway may say about the real client, and for how long.
//!
//! The client IP decides who may send (a company's "By IP Addresses" entries, SPF), and the
//! sender log shows it to the company's admin. Behind a relay every connection comes from the
//! relay, so the relay has to pass the original client on, and only a relay listed in
//! `EMAIL2SMS_TRUSTED_RELAYS` may: anyone else could claim any company's mail server.
//!
//! Three ways, as the common relays speak them:
//! * the PROXY protocol (HAProxy, load balancers): the whole connection ([`super::proxy`]);
//! * XCLIENT (Postfix's `smtpd_proxy_filter`, nginx): the relay "reconnects" as the client, so
//!   the attributes last for the rest of the session and the server greets again;
//! * XFORWARD (Postfix's SMTP client with `smtp_send_xforward_command = yes`, the usual relay
//!   in front of a mail gateway): the attributes describe the client of the next mail
//!   transaction only. A relay that caches its connection sends other clients' mail over the same
//!   session, each after its own XFORWARD, so the attributes end with the transaction (the end
//!   of DATA, RSET, EHLO/HELO, STARTTLS), as in Postfix's own SMTP server; the session is then
//!   the relay's again.
//!
//! Pure functions over [`ClientInfo`]; the session decides when they apply.

use super::command::{XclientAttribute, XforwardAttribute};
use super::handler::ClientInfo;
use super::reply::Reply;

/// The EHLO line announcing XCLIENT, to trusted relays only.
pub const XCLIENT_KEYWORD: &str = "XCLIENT ADDR NAME HELO PORT PROTO LOGIN DESTADDR DESTPORT";
/// The EHLO line announcing XFORWARD, to trusted relays only. Postfix sends just the attributes
/// named here, so every one of XFORWARD_README's is listed.
pub const XFORWARD_KEYWORD: &str = "XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE";

/// The two commands by which a relay states the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayCommand {
    Xclient,
    Xforward,
}

impl RelayCommand {
    pub fn as_str(self) -> &'static str {
        match self {
            RelayCommand::Xclient => "XCLIENT",
            RelayCommand::Xforward => "XFORWARD",
        }
    }
}

/// Why a relay command is refused before it changes anything: a stranger (550 5.7.0, the
/// reply Postfix gives, so a misconfigured relay bounces with a clear reason instead of
/// retrying for days) or inside a mail transaction, where the client of the transaction is
/// already decided (503 5.5.1).
pub fn refusal(command: RelayCommand, trusted_peer: bool, in_transaction: bool) -> Option<Reply> {
    let name = command.as_str();
    if !trusted_peer {
        return Some(Reply::new(
            550,
            "5.7.0",
            format!("{name} is accepted only from trusted relays"),
        ));
    }
    if in_transaction {
        return Some(Reply::new(
            503,
            "5.5.1",
            format!("{name} is not allowed inside a mail transaction"),
        ));
    }
    None
}

/// Applies XCLIENT to the session's client; returns whether it stated the HELO name (which the
/// relay's own EHLO after XCLIENT must then not replace).
pub fn apply_xclient(client: &mut ClientInfo, attributes: Vec<XclientAttribute>) -> Option<bool> {
    let mut helo_stated = None;
    for attribute in attributes {
        match attribute {
            XclientAttribute::Addr(Some(ip)) => state_ip(client, ip),
            XclientAttribute::Addr(None) => {}
            XclientAttribute::Name(name) => client.reverse_name = name,
            XclientAttribute::Helo(helo) => {
                helo_stated = Some(helo.is_some());
                client.helo = helo;
            }
            XclientAttribute::Port(port) => client.port = port,
            XclientAttribute::Ignored(_) => {}
        }
    }
    helo_stated
}

/// Applies XFORWARD to the client of the next transaction. Attributes add up over several
/// commands (Postfix sends two: the client, then IDENT and SOURCE). An unknown ADDR leaves
/// the relay's own address, as XCLIENT does: mail the relay made up itself (a bounce, a local
/// submission) comes from the relay.
pub fn apply_xforward(client: &mut ClientInfo, attributes: Vec<XforwardAttribute>) {
    for attribute in attributes {
        match attribute {
            XforwardAttribute::Addr(Some(ip)) => state_ip(client, ip),
            XforwardAttribute::Addr(None) => {}
            XforwardAttribute::Name(name) => client.reverse_name = name,
            XforwardAttribute::Helo(helo) => client.helo = helo,
            XforwardAttribute::Port(port) => client.port = port,
            XforwardAttribute::Ident(ident) => client.relay_queue_id = ident,
            XforwardAttribute::Ignored(_) => {}
        }
    }
}

fn state_ip(client: &mut ClientInfo, ip: std::net::IpAddr) {
    client.ip = email2sms_domain::canonical_ip(ip);
    client.stated_by_relay = true;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay() -> ClientInfo {
        let mut client = ClientInfo::from_peer("10.1.2.3:50000".parse().unwrap());
        client.helo = Some("relay.internal".into());
        client
    }

    #[test]
    fn strangers_are_refused_before_anything_else_then_transactions() {
        let stranger = refusal(RelayCommand::Xforward, false, true).unwrap();
        assert_eq!(
            stranger.to_string(),
            "550 5.7.0 XFORWARD is accepted only from trusted relays"
        );
        let inside = refusal(RelayCommand::Xforward, true, true).unwrap();
        assert_eq!(
            inside.to_string(),
            "503 5.5.1 XFORWARD is not allowed inside a mail transaction"
        );
        assert_eq!(refusal(RelayCommand::Xclient, true, false), None);
    }

    #[test]
    fn xforward_states_the_original_client_and_adds_up_over_commands() {
        let mut client = relay();
        apply_xforward(
            &mut client,
            vec![
                XforwardAttribute::Name(Some("mx.sender.example".into())),
                XforwardAttribute::Addr(Some("::ffff:192.0.2.77".parse().unwrap())),
                XforwardAttribute::Port(Some(40123)),
                XforwardAttribute::Helo(Some("mx.sender.example".into())),
            ],
        );
        apply_xforward(
            &mut client,
            vec![
                XforwardAttribute::Ident(Some("4dLqZk2Fz1z9s".into())),
                XforwardAttribute::Ignored("SOURCE".into()),
            ],
        );
        // A v4-mapped address is the IPv4 address the rules are written with.
        assert_eq!(client.ip.to_string(), "192.0.2.77");
        assert!(client.stated_by_relay);
        assert_eq!(client.peer.to_string(), "10.1.2.3:50000");
        assert_eq!(client.port, Some(40123));
        assert_eq!(client.helo.as_deref(), Some("mx.sender.example"));
        assert_eq!(client.reverse_name.as_deref(), Some("mx.sender.example"));
        assert_eq!(client.relay_queue_id.as_deref(), Some("4dLqZk2Fz1z9s"));
    }

    #[test]
    fn an_unknown_xforward_address_leaves_the_relay_and_unknown_names_are_cleared() {
        let mut client = relay();
        client.reverse_name = Some("stale.example".into());
        apply_xforward(
            &mut client,
            vec![
                XforwardAttribute::Addr(None),
                XforwardAttribute::Name(None),
                XforwardAttribute::Helo(None),
            ],
        );
        assert_eq!(client.ip.to_string(), "10.1.2.3");
        assert!(!client.stated_by_relay);
        assert_eq!(client.reverse_name, None);
        assert_eq!(client.helo, None);
    }

    #[test]
    fn xclient_says_whether_it_stated_the_helo() {
        let mut client = relay();
        let stated = apply_xclient(
            &mut client,
            vec![
                XclientAttribute::Addr(Some("192.0.2.50".parse().unwrap())),
                XclientAttribute::Helo(Some("mx.sender.example".into())),
            ],
        );
        assert_eq!(stated, Some(true));
        assert_eq!(client.ip.to_string(), "192.0.2.50");
        assert_eq!(
            apply_xclient(&mut client, vec![XclientAttribute::Port(Some(1))]),
            None
        );
    }
}
