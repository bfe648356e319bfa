//! The mail servers a company's mail came from, reported to the policy's sender log.
//!
//! Two rules, both against what a stranger can make the gateway do:
//!
//! - **Only authenticated mail is reported.** A forged mail naming a company's domain proves
//!   nothing about that company's servers. Before this rule, 30 forged mails from 30 addresses
//!   gave the victim's admins 30 alert emails, 31 sender-log rows and 30 Redis markers that never
//!   expired. Now a mail counts only once it passed the matched policy's authentication (SPF pass
//!   and alignment, or the client IP inside the allowed ranges), whether it was then accepted or
//!   refused for a later reason (a bad recipient, no forwarding user).
//! - **Counted in memory, reported in batches.** Every authenticated mail adds to one entry per
//!   (company, client IP); [`Sightings::take`] empties the table every flush interval into one
//!   `sender.ip_seen` event per pair carrying the count. A busy server costs one event (and one
//!   Postgres upsert at the policy) per interval per ingest replica, not a write per message, and
//!   needs no Redis marker at all. The table holds at most `max_pairs` entries; past that a new
//!   pair triggers an early flush instead of growing it.
//!
//! What is lost: the counts of the current window when a replica dies without a graceful stop (a
//! SIGTERM flushes them). The sender log is a statistic and an alert trigger; the first sight of a
//! server is reported again by the next mail from it.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::IpAddr;
use std::sync::Mutex;

use email2sms_proto::queue::v1::SenderIpSeen;
use tokio::sync::Notify;

/// One (company, client IP) pair's mail in the current window.
#[derive(Debug)]
struct Pending {
    /// The first mail's details (envelope sender, From, HELO, reply) and the window's flags.
    event: SenderIpSeen,
    accepted_messages: u32,
}

/// The table of pairs seen since the last flush.
#[derive(Debug)]
pub struct Sightings {
    pending: Mutex<HashMap<(String, IpAddr), Pending>>,
    max_pairs: usize,
    /// Woken when the table is full, so the flush loop empties it before the interval ends.
    full: Notify,
}

impl Sightings {
    pub fn new(max_pairs: usize) -> Self {
        Self {
            pending: Mutex::new(HashMap::new()),
            max_pairs: max_pairs.max(1),
            full: Notify::new(),
        }
    }

    /// Counts one authenticated mail of `company` from `ip` (`accepted`: it got a 250). Only the
    /// first mail of a pair in a window builds the event (`first`), whose samples the log keeps;
    /// every later one only adds to the count, so a busy server costs no allocation per mail.
    pub fn note(
        &self,
        company: &str,
        ip: IpAddr,
        accepted: bool,
        first: impl FnOnce() -> SenderIpSeen,
    ) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let full = pending.len() >= self.max_pairs;
        match pending.entry((company.to_owned(), ip)) {
            Entry::Occupied(mut entry) => {
                let entry = entry.get_mut();
                entry.accepted_messages =
                    entry.accepted_messages.saturating_add(u32::from(accepted));
                entry.event.accepted |= accepted;
            }
            Entry::Vacant(entry) => {
                if full {
                    // Dropped, not queued: the flush is already due and the next mail from this
                    // server is counted in the next window. Memory stays bounded.
                    self.full.notify_one();
                    return;
                }
                entry.insert(Pending {
                    event: SenderIpSeen {
                        accepted,
                        ..first()
                    },
                    accepted_messages: u32::from(accepted),
                });
                if pending.len() >= self.max_pairs {
                    self.full.notify_one();
                }
            }
        }
    }

    /// Empties the table: one event per pair, with its count.
    pub fn take(&self) -> Vec<SenderIpSeen> {
        let drained = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        drained
            .into_values()
            .map(|pending| SenderIpSeen {
                accepted_messages: pending.accepted_messages,
                ..pending.event
            })
            .collect()
    }

    /// Puts back events whose publish failed, so their counts go out with the next flush. An event
    /// whose pair was seen again meanwhile is merged into it; past `max_pairs` it is dropped.
    pub fn restore(&self, events: Vec<SenderIpSeen>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for event in events {
            let Ok(ip) = event.client_ip.parse::<IpAddr>() else {
                continue;
            };
            let full = pending.len() >= self.max_pairs;
            match pending.entry((event.company_id.clone(), ip)) {
                Entry::Occupied(mut entry) => {
                    let entry = entry.get_mut();
                    entry.accepted_messages = entry
                        .accepted_messages
                        .saturating_add(event.accepted_messages);
                    entry.event.accepted |= event.accepted;
                    // The older event's samples are the first mail's.
                    entry.event.envelope_sender = event.envelope_sender;
                    entry.event.from_address = event.from_address;
                    entry.event.helo = event.helo;
                    entry.event.smtp_reply = event.smtp_reply;
                }
                Entry::Vacant(entry) if !full => {
                    let accepted_messages = event.accepted_messages;
                    entry.insert(Pending {
                        event,
                        accepted_messages,
                    });
                }
                Entry::Vacant(_) => {}
            }
        }
    }

    /// Resolves when the table reached `max_pairs`.
    pub async fn filled(&self) {
        self.full.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(company: &str, ip: &str, accepted: bool, from: &str) -> SenderIpSeen {
        SenderIpSeen {
            company_id: company.into(),
            client_ip: ip.into(),
            accepted,
            from_address: from.into(),
            ..SenderIpSeen::default()
        }
    }

    #[test]
    fn mail_of_one_server_becomes_one_event_with_its_count() {
        let sightings = Sightings::new(100);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        sightings.note("c1", ip, false, || {
            seen("c1", "192.0.2.1", false, "first@a.test")
        });
        for _ in 0..99 {
            sightings.note("c1", ip, true, || {
                seen("c1", "192.0.2.1", true, "later@a.test")
            });
        }
        let events = sightings.take();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].accepted_messages, 99);
        assert!(events[0].accepted);
        assert_eq!(events[0].from_address, "first@a.test");
        assert!(sightings.take().is_empty(), "a flush empties the table");
    }

    #[test]
    fn companies_and_servers_are_counted_apart() {
        let sightings = Sightings::new(100);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        sightings.note("c1", a, true, || seen("c1", "192.0.2.1", true, ""));
        sightings.note("c1", b, true, || seen("c1", "192.0.2.2", true, ""));
        sightings.note("c2", a, true, || seen("c2", "192.0.2.1", true, ""));
        let mut events: Vec<_> = sightings
            .take()
            .into_iter()
            .map(|e| (e.company_id, e.client_ip, e.accepted_messages))
            .collect();
        events.sort();
        assert_eq!(
            events,
            [
                ("c1".into(), "192.0.2.1".into(), 1),
                ("c1".into(), "192.0.2.2".into(), 1),
                ("c2".into(), "192.0.2.1".into(), 1)
            ]
        );
    }

    #[test]
    fn the_table_never_grows_past_its_bound() {
        let sightings = Sightings::new(3);
        for n in 0..10u8 {
            let ip = IpAddr::from([192, 0, 2, n]);
            sightings.note("c1", ip, true, || seen("c1", &ip.to_string(), true, ""));
        }
        assert_eq!(sightings.take().len(), 3);
    }

    #[test]
    fn restored_counts_go_out_with_the_next_flush() {
        let sightings = Sightings::new(10);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            sightings.note("c1", ip, true, || {
                seen("c1", "192.0.2.1", true, "old@a.test")
            });
        }
        let failed = sightings.take();
        sightings.note("c1", ip, true, || {
            seen("c1", "192.0.2.1", true, "new@a.test")
        });
        sightings.restore(failed);
        let events = sightings.take();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].accepted_messages, 4);
        assert_eq!(events[0].from_address, "old@a.test");
    }
}
