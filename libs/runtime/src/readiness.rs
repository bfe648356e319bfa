//! Which facts make a binary ready: the pure rule behind the `readiness` health name.
//!
//! `liveness` says the process works (failing it restarts the pod, which cannot bring Redis back);
//! `readiness` says it can do its job now (failing it only takes the pod out of its Service's
//! endpoints until the dependency returns). Each binary states what it needs as a list of
//! [`Need`]s; the prober ([`crate::prober`]) gathers the [`Facts`] and this module decides.

use std::collections::BTreeMap;

/// Something outside the process a binary may need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dependency {
    /// Its PostgreSQL schema answers a query.
    Postgres,
    /// Redis answers PING (ingest's compiled sender rules, dedupe and sender-log marks).
    Redis,
    /// The policy service answers `readiness` SERVING (ingest's fallback when Redis cannot answer).
    Policy,
    /// The RabbitMQ connection is up (ingest publishes jobs; dispatch consumes them).
    Broker,
    /// The SMS connector can send (the SMPP transceiver is bound; stateless connectors always can).
    Connector,
}

impl Dependency {
    pub fn name(self) -> &'static str {
        match self {
            Dependency::Postgres => "postgres",
            Dependency::Redis => "redis",
            Dependency::Policy => "policy",
            Dependency::Broker => "broker",
            Dependency::Connector => "connector",
        }
    }
}

impl std::fmt::Display for Dependency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One requirement of a binary's rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// This dependency must be reachable.
    All(Dependency),
    /// At least one of these must be reachable (ingest decides from Redis, or from the policy
    /// service when Redis cannot answer).
    Either(Dependency, Dependency),
}

impl Need {
    /// The dependencies this requirement looks at.
    pub fn dependencies(self) -> impl Iterator<Item = Dependency> {
        let (first, second) = match self {
            Need::All(one) => (one, None),
            Need::Either(a, b) => (a, Some(b)),
        };
        std::iter::once(first).chain(second)
    }
}

/// What the last probe round found: reachable or not, per dependency. A dependency never probed
/// counts as unreachable, so a binary is not ready before its first round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    reachable: BTreeMap<Dependency, bool>,
}

impl Facts {
    pub fn set(&mut self, dependency: Dependency, reachable: bool) {
        self.reachable.insert(dependency, reachable);
    }

    pub fn with(mut self, dependency: Dependency, reachable: bool) -> Facts {
        self.set(dependency, reachable);
        self
    }

    /// What was found, or `None` when the dependency was not probed.
    pub fn known(&self, dependency: Dependency) -> Option<bool> {
        self.reachable.get(&dependency).copied()
    }

    pub fn reachable(&self, dependency: Dependency) -> bool {
        self.reachable.get(&dependency).copied().unwrap_or(false)
    }
}

/// Whether the process is stopping: once SIGTERM came, readiness stays off whatever the facts say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    Draining,
}

/// The verdict, with what is missing so the log can say why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Ready,
    NotReady { missing: Vec<Need>, draining: bool },
}

impl Verdict {
    pub fn is_ready(&self) -> bool {
        matches!(self, Verdict::Ready)
    }
}

/// The rule: ready while running and every need is met.
pub fn decide(needs: &[Need], facts: &Facts, phase: Phase) -> Verdict {
    let missing: Vec<Need> = needs
        .iter()
        .copied()
        .filter(|need| !need.dependencies().any(|d| facts.reachable(d)))
        .collect();
    let draining = phase == Phase::Draining;
    if missing.is_empty() && !draining {
        Verdict::Ready
    } else {
        Verdict::NotReady { missing, draining }
    }
}

/// ingest: it can decide (Redis, or the policy service when Redis cannot answer) and queue (the
/// broker connection its publisher uses).
pub const INGEST: &[Need] = &[
    Need::Either(Dependency::Redis, Dependency::Policy),
    Need::All(Dependency::Broker),
];
/// dispatch: it can take jobs (broker) and send them (connector). Postgres down makes every job
/// fail and retry, but the pool was needed to start, and a dispatcher without its database is
/// also reported by the jobs' errors; the broker and connector are what endpoints depend on.
pub const DISPATCH: &[Need] = &[
    Need::All(Dependency::Broker),
    Need::All(Dependency::Connector),
    Need::All(Dependency::Postgres),
];
/// policy: every RPC reads or writes Postgres. The broker is not needed: events wait in the
/// outbox table while it is down and the relay sends them when it returns.
pub const POLICY: &[Need] = &[Need::All(Dependency::Postgres)];
/// verification: as policy, its RPCs and its outbox are Postgres.
pub const VERIFICATION: &[Need] = &[Need::All(Dependency::Postgres)];

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(up: &[Dependency]) -> Facts {
        let mut facts = Facts::default();
        for dependency in [
            Dependency::Postgres,
            Dependency::Redis,
            Dependency::Policy,
            Dependency::Broker,
            Dependency::Connector,
        ] {
            facts.set(dependency, up.contains(&dependency));
        }
        facts
    }

    use Dependency::*;

    #[test]
    fn ingest_decides_from_redis_or_the_policy_service_and_needs_the_broker() {
        for (up, ready) in [
            (&[Redis, Policy, Broker][..], true),
            (&[Redis, Broker][..], true),
            (&[Policy, Broker][..], true),
            (&[Broker][..], false),
            (&[Redis, Policy][..], false),
            (&[][..], false),
        ] {
            assert_eq!(
                decide(INGEST, &facts(up), Phase::Running).is_ready(),
                ready,
                "{up:?}"
            );
        }
    }

    #[test]
    fn the_verdict_names_what_is_missing() {
        assert_eq!(
            decide(INGEST, &facts(&[Broker]), Phase::Running),
            Verdict::NotReady {
                missing: vec![Need::Either(Redis, Policy)],
                draining: false
            }
        );
    }

    #[test]
    fn dispatch_needs_broker_connector_and_database() {
        assert!(
            decide(
                DISPATCH,
                &facts(&[Broker, Connector, Postgres]),
                Phase::Running
            )
            .is_ready()
        );
        assert!(!decide(DISPATCH, &facts(&[Broker, Postgres]), Phase::Running).is_ready());
        assert!(!decide(DISPATCH, &facts(&[Connector, Postgres]), Phase::Running).is_ready());
    }

    #[test]
    fn policy_and_verification_need_only_postgres() {
        for rule in [POLICY, VERIFICATION] {
            assert!(decide(rule, &facts(&[Postgres]), Phase::Running).is_ready());
            assert!(!decide(rule, &facts(&[Redis, Broker, Policy]), Phase::Running).is_ready());
        }
    }

    #[test]
    fn never_probed_is_not_ready() {
        assert!(!decide(POLICY, &Facts::default(), Phase::Running).is_ready());
        assert!(decide(&[], &Facts::default(), Phase::Running).is_ready());
    }

    #[test]
    fn draining_is_never_ready() {
        let all = facts(&[Postgres, Redis, Policy, Broker, Connector]);
        for rule in [INGEST, DISPATCH, POLICY, VERIFICATION, &[][..]] {
            assert_eq!(
                decide(rule, &all, Phase::Draining),
                Verdict::NotReady {
                    missing: vec![],
                    draining: true
                }
            );
        }
    }
}
