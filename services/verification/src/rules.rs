//! The verification rules, free of I/O: what a DNS answer means for a token, and what a check
//! does to a challenge at a given moment. Time is always passed in, so the rules (back-off, give
//! up, grace, revocation) are tested by moving `now`, never by sleeping.

use chrono::{DateTime, Duration, Utc};
use email2sms_domain::{TXT_RECORD_PREFIX, VerificationToken};

use crate::dns::{Probe, TxtAnswer, TxtLookup};
use crate::model::{Outcome, State, Trigger};
use crate::settings::VerificationArgs;

/// The timings of the rules, from the configuration.
#[derive(Debug, Clone)]
pub struct Rules {
    pub pending_first_interval: Duration,
    pub pending_max_interval: Duration,
    pub give_up_after: Duration,
    pub recheck_interval: Duration,
    pub missing_recheck_interval: Duration,
    pub revoke_grace: Duration,
    pub revoke_after_failures: u32,
    pub temporary_retry: Duration,
}

fn chrono(duration: std::time::Duration) -> Duration {
    Duration::from_std(duration).unwrap_or(Duration::MAX)
}

impl Rules {
    pub fn from_args(args: &VerificationArgs) -> Rules {
        Rules {
            pending_first_interval: chrono(args.pending_first_interval),
            pending_max_interval: chrono(args.pending_max_interval),
            give_up_after: chrono(args.give_up_after),
            recheck_interval: chrono(args.recheck_interval),
            missing_recheck_interval: chrono(args.missing_recheck_interval),
            revoke_grace: chrono(args.revoke_grace),
            revoke_after_failures: args.revoke_after_failures,
            temporary_retry: chrono(args.temporary_retry),
        }
    }

    /// The wait after the `misses`-th check in a row that did not find a pending token: the
    /// first interval, doubling, capped.
    pub fn pending_backoff(&self, misses: u32) -> Duration {
        let doublings = misses.saturating_sub(1).min(30);
        self.pending_first_interval
            .checked_mul(1 << doublings)
            .unwrap_or(self.pending_max_interval)
            .min(self.pending_max_interval)
    }
}

/// A DNS answer judged against one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    pub outcome: Outcome,
    /// A sentence for the customer, naming what was found.
    pub message: String,
    /// The wildcard record that serves the token (`*.example.com`), for [`Outcome::Wildcard`].
    pub wildcard: Option<String>,
}

/// Most wildcard probes in one check: one per distinct parent domain of the names the answer
/// came through. The queried name plus three aliases in other domains covers the setups seen in
/// practice (the name itself, or the name aliased once or twice to a DNS provider's host); a
/// longer chain is refused rather than probed further, so a check costs at most five lookups.
pub const MAX_WILDCARD_PROBES: usize = 4;

/// The parents under which a wildcard could have served the answer: of the queried name and of
/// each CNAME target, in that order and without repeats (`www.example.com` aliased to
/// `verify.example.com` needs one probe). A parent of one label is a top-level domain (or the
/// root): only its registry could publish a wildcard there, and it cannot know the token (random
/// per challenge), so it is not probed and `example.com` itself costs no probe. `Err(n)`: `n`
/// parents, more than [`MAX_WILDCARD_PROBES`].
pub fn wildcard_parents(queried: &str, cname_chain: &[String]) -> Result<Vec<String>, usize> {
    let mut parents: Vec<String> = Vec::new();
    for name in std::iter::once(queried).chain(cname_chain.iter().map(String::as_str)) {
        if let Some((_, parent)) = name.split_once('.')
            && parent.contains('.')
            && !parents.iter().any(|p| p == parent)
        {
            parents.push(parent.to_owned());
        }
    }
    if parents.len() > MAX_WILDCARD_PROBES {
        Err(parents.len())
    } else {
        Ok(parents)
    }
}

/// Whether any value looks like a verification record (of any token): only then can the answer
/// prove something, and only then are wildcard probes worth their lookups.
pub fn has_verification_record(values: &[String]) -> bool {
    values.iter().any(|v| {
        unwrap_value(v)
            .get(..TXT_RECORD_PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(TXT_RECORD_PREFIX))
    })
}

/// Where a token in a check's answer comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence<'a> {
    /// Not in the answer.
    Absent,
    /// Published at the name (or at the alias it points to) itself: no probe answered with it.
    AtName,
    /// A random name under the probe's parent answers with the token too: a wildcard serves it.
    ViaWildcard(&'a Probe),
    /// The answer came through aliases under this many parents, more than can be probed.
    TooManyAliases(usize),
    /// A probe failed (SERVFAIL, timeout, ...): whether a wildcard serves the token is not known.
    Unsure(&'a Probe),
    /// The lookup has fewer probes than the answer needs (it was not made by
    /// [`crate::dns::TxtResolver`]); never taken as proof.
    Unprobed,
}

/// Where `token` in `lookup`'s answer comes from.
pub fn presence<'a>(lookup: &'a TxtLookup, token: &VerificationToken) -> Presence<'a> {
    let TxtAnswer::Records(values) = &lookup.answer else {
        return Presence::Absent;
    };
    if !token_present(values, token) {
        return Presence::Absent;
    }
    let parents = match wildcard_parents(&lookup.queried_name, &lookup.cname_chain) {
        Ok(parents) => parents,
        Err(count) => return Presence::TooManyAliases(count),
    };
    // A probe answering with the token decides, whatever the others said.
    let carries = |probe: &&Probe| matches!(&probe.answer, TxtAnswer::Records(values) if token_present(values, token));
    if let Some(probe) = lookup.probes.iter().find(carries) {
        return Presence::ViaWildcard(probe);
    }
    if let Some(probe) = lookup.probes.iter().find(|p| p.answer.is_temporary()) {
        return Presence::Unsure(probe);
    }
    let probed = |parent: &String| lookup.probes.iter().any(|p| &p.parent == parent);
    if !parents.iter().all(probed) {
        return Presence::Unprobed;
    }
    Presence::AtName
}

/// A TXT value as people and DNS control panels mangle it: surrounding spaces, and quotes that a
/// panel stored literally because the customer pasted them. Case is left to the token match.
fn unwrap_value(value: &str) -> &str {
    value.trim().trim_matches(|c| c == '"' || c == '\'').trim()
}

/// Whether any TXT value at the name carries `token`.
pub fn token_present(values: &[String], token: &VerificationToken) -> bool {
    values.iter().any(|v| token.matches_txt(unwrap_value(v)))
}

fn quoted_list(values: &[String]) -> String {
    values
        .iter()
        .map(|v| format!("{v:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn alias_note(lookup: &TxtLookup) -> String {
    match lookup.cname_chain.last() {
        Some(target) => format!(" (an alias of {target})"),
        None => String::new(),
    }
}

const RETRY: &str = "this is temporary and the check will be retried";

/// A sentence for a lookup of `name` that failed in a way that says nothing about the customer's
/// DNS; `None` for a definite answer.
fn temporary_failure(
    name: &str,
    answer: &TxtAnswer,
    server: &str,
    duration: std::time::Duration,
) -> Option<(Outcome, String)> {
    Some(match answer {
        TxtAnswer::ServFail => (
            Outcome::ServFail,
            format!("the DNS server {server} answered SERVFAIL for {name}"),
        ),
        TxtAnswer::Refused => (
            Outcome::Refused,
            format!("the DNS server {server} refused the query for {name}"),
        ),
        TxtAnswer::Timeout => (
            Outcome::Timeout,
            format!(
                "no answer from the DNS server {server} for {name} within {:.1}s",
                duration.as_secs_f64()
            ),
        ),
        TxtAnswer::Error(error) => (
            Outcome::Error,
            format!("the DNS lookup of {name} at {server} failed ({error})"),
        ),
        TxtAnswer::Records(_) | TxtAnswer::NxDomain => return None,
    })
}

/// The token is in the answer: whether that proves anything depends on where it comes from.
fn evaluate_found(lookup: &TxtLookup, token: &VerificationToken) -> Evaluation {
    let name = &lookup.queried_name;
    let found = format!(
        "found the verification token at {name}{}",
        alias_note(lookup)
    );
    let (outcome, message, wildcard) = match presence(lookup, token) {
        Presence::AtName | Presence::Absent => (Outcome::Found, found, None),
        Presence::ViaWildcard(probe) => {
            let wildcard = format!("*.{}", probe.parent);
            let points_to = match probe.cname_chain.last() {
                Some(target) => format!(" (an alias of {target})"),
                None => String::new(),
            };
            (
                Outcome::Wildcard,
                format!(
                    "{found}, but the wildcard record {wildcard}{points_to} serves it too: {}, a name nobody created, answers with it, so it proves nothing about {name}; publish the TXT record at {name} itself and remove the token from {wildcard}",
                    probe.name
                ),
                Some(wildcard),
            )
        }
        Presence::TooManyAliases(count) => (
            Outcome::TooManyAliases,
            format!(
                "{found}, but through aliases under {count} different domains: at most {MAX_WILDCARD_PROBES} are checked for wildcard records, so it cannot be accepted; publish the TXT record at {name} itself, or alias {name} to the record's name directly"
            ),
            None,
        ),
        Presence::Unsure(probe) => {
            let (outcome, what) = temporary_failure(
                &probe.name,
                &probe.answer,
                &lookup.nameserver,
                lookup.duration,
            )
            .unwrap_or((Outcome::Error, format!("{} was not answered", probe.name)));
            (
                outcome,
                format!(
                    "{found}, but could not check whether the wildcard record *.{} serves it: {what}; {RETRY}",
                    probe.parent
                ),
                None,
            )
        }
        Presence::Unprobed => (
            Outcome::Error,
            format!(
                "{found}, but the check did not ask whether a wildcard record serves it; {RETRY}"
            ),
            None,
        ),
    };
    Evaluation {
        outcome,
        message,
        wildcard,
    }
}

/// What `lookup` means for `token`.
pub fn evaluate(lookup: &TxtLookup, token: &VerificationToken) -> Evaluation {
    let name = &lookup.queried_name;
    let alias = alias_note(lookup);
    let server = &lookup.nameserver;
    let (outcome, message) = match &lookup.answer {
        TxtAnswer::Records(values) if token_present(values, token) => {
            return evaluate_found(lookup, token);
        }
        TxtAnswer::Records(values) if values.is_empty() => (
            Outcome::NoData,
            format!("no TXT record found at {name}{alias}"),
        ),
        TxtAnswer::Records(values) => (
            Outcome::WrongValue,
            format!(
                "found other TXT records at {name}{alias}: {}; none of them is {}",
                quoted_list(values),
                token.txt_value()
            ),
        ),
        TxtAnswer::NxDomain => (
            Outcome::NxDomain,
            format!(
                "no TXT record found at {name}{alias}: the name does not exist in DNS (NXDOMAIN)"
            ),
        ),
        answer => {
            let (outcome, what) = temporary_failure(name, answer, server, lookup.duration)
                .unwrap_or((Outcome::Error, format!("unexpected answer for {name}")));
            (outcome, format!("{what}; {RETRY}"))
        }
    };
    Evaluation {
        outcome,
        message,
        wildcard: None,
    }
}

/// The challenge as the rules need to see it.
#[derive(Debug, Clone)]
pub struct Facts {
    pub state: State,
    pub domain: String,
    pub reason: String,
    pub pending_since: DateTime<Utc>,
    pub verified_at: Option<DateTime<Utc>>,
    pub consecutive_failures: u32,
    pub missing_since: Option<DateTime<Utc>>,
}

/// Another company's verified challenge for the same domain, as seen by this check.
#[derive(Debug, Clone)]
pub struct Holder {
    /// Whether the DNS answer of this check carries the holder's token.
    pub token_present: bool,
    pub consecutive_failures: u32,
    pub missing_since: Option<DateTime<Utc>>,
}

impl Holder {
    /// Ownership moves only when the holder itself would be revoked: its token missing past the
    /// grace period and in enough checks in a row (this check's answer counting as one more).
    fn lost_ownership(&self, now: DateTime<Utc>, rules: &Rules) -> bool {
        !self.token_present
            && self
                .missing_since
                .is_some_and(|since| now >= since + rules.revoke_grace)
            && self.consecutive_failures + 1 >= rules.revoke_after_failures
    }
}

/// What a check does to a challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub state: State,
    pub reason: String,
    pub pending_since: DateTime<Utc>,
    pub verified_at: Option<DateTime<Utc>>,
    pub consecutive_failures: u32,
    pub missing_since: Option<DateTime<Utc>>,
    /// `None`: not scheduled any more (FAILED, REVOKED).
    pub next_check_at: Option<DateTime<Utc>>,
    /// The other company's verified challenge must be revoked first (ownership moves).
    pub revoke_holder: bool,
}

/// The reason given to the holder whose ownership moved to another company.
pub fn displaced_reason(domain: &str, rules: &Rules) -> String {
    format!(
        "another company proved ownership of {domain} after this company's verification token had been missing from DNS for more than {}",
        human(rules.revoke_grace)
    )
}

/// A duration as people write it: `72h`, `7d`, `90s` (hours up to a week, as grace periods are
/// usually quoted).
pub fn human(duration: Duration) -> String {
    let seconds = duration.num_seconds();
    if seconds >= 7 * 86_400 && seconds % 86_400 == 0 {
        format!("{}d", seconds / 86_400)
    } else if seconds > 0 && seconds % 3600 == 0 {
        format!("{}h", seconds / 3600)
    } else if seconds > 0 && seconds % 60 == 0 {
        format!("{}m", seconds / 60)
    } else if seconds > 0 {
        format!("{seconds}s")
    } else {
        format!("{}ms", duration.num_milliseconds())
    }
}

/// Applies one check to a challenge at `now`.
pub fn decide(
    now: DateTime<Utc>,
    rules: &Rules,
    facts: &Facts,
    evaluation: &Evaluation,
    trigger: Trigger,
    holder: Option<&Holder>,
) -> Decision {
    let mut decision = Decision {
        state: facts.state,
        reason: facts.reason.clone(),
        pending_since: facts.pending_since,
        verified_at: facts.verified_at,
        consecutive_failures: facts.consecutive_failures,
        missing_since: facts.missing_since,
        next_check_at: None,
        revoke_holder: false,
    };
    // Someone asking for a check of a domain that gave up (or was revoked) starts it over.
    if trigger == Trigger::OnDemand && matches!(facts.state, State::Failed | State::Revoked) {
        decision.state = State::Pending;
        decision.pending_since = now;
        decision.consecutive_failures = 0;
        decision.missing_since = None;
    }
    let found = evaluation.outcome == Outcome::Found;
    let temporary = evaluation.outcome.is_temporary();
    let domain = &facts.domain;
    match decision.state {
        State::Pending => {
            let give_up_at = decision.pending_since + rules.give_up_after;
            let displaces = holder.map(|h| h.lost_ownership(now, rules));
            if found && displaces != Some(false) {
                decision.state = State::Verified;
                decision.reason = evaluation.message.clone();
                decision.verified_at = Some(now);
                decision.consecutive_failures = 0;
                decision.missing_since = None;
                decision.next_check_at = Some(now + rules.recheck_interval);
                decision.revoke_holder = displaces == Some(true);
                return decision;
            }
            if !temporary {
                decision.consecutive_failures += 1;
            }
            let why = if found {
                format!(
                    "the verification token is published at {domain}, but {domain} is already verified by another company; it moves to this company only if that company's token stays missing from DNS for {}",
                    human(rules.revoke_grace)
                )
            } else {
                evaluation.message.clone()
            };
            if now >= give_up_at {
                decision.state = State::Failed;
                decision.reason = format!(
                    "gave up after {}: the verification token was not found at {domain} (last check: {why}); publish the TXT record and check again, or rotate the token",
                    human(rules.give_up_after)
                );
                decision.next_check_at = None;
            } else {
                decision.reason = why;
                let wait = if temporary {
                    rules.temporary_retry
                } else {
                    rules.pending_backoff(decision.consecutive_failures)
                };
                decision.next_check_at = Some((now + wait).min(give_up_at));
            }
        }
        State::Verified => {
            if found {
                decision.reason = evaluation.message.clone();
                decision.consecutive_failures = 0;
                decision.missing_since = None;
                decision.next_check_at = Some(now + rules.recheck_interval);
            } else if temporary {
                // Says nothing about the customer's DNS: keep the state and its reason.
                decision.next_check_at = Some(now + rules.temporary_retry);
            } else {
                decision.consecutive_failures += 1;
                let since = *decision.missing_since.get_or_insert(now);
                let revoke_at = since + rules.revoke_grace;
                if now >= revoke_at && decision.consecutive_failures >= rules.revoke_after_failures
                {
                    decision.state = State::Revoked;
                    decision.reason = format!(
                        "the verification token has been missing from {domain} since {} (more than {}, {} checks in a row): {}",
                        since.format("%Y-%m-%d %H:%M UTC"),
                        human(rules.revoke_grace),
                        decision.consecutive_failures,
                        evaluation.message
                    );
                    decision.next_check_at = None;
                } else {
                    decision.reason = format!(
                        "still verified, but the verification token was not found in the last {} check(s): {}; publish it again before {} or the domain will be revoked",
                        decision.consecutive_failures,
                        evaluation.message,
                        revoke_at.format("%Y-%m-%d %H:%M:%S UTC")
                    );
                    let next = now + rules.missing_recheck_interval;
                    // Check again right at the end of the grace period rather than long after.
                    decision.next_check_at = Some(if revoke_at > now {
                        next.min(revoke_at)
                    } else {
                        next
                    });
                }
            }
        }
        // Not scheduled; a scheduled check can only reach them in a race with a state change.
        State::Failed | State::Revoked => {}
    }
    decision
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::TxtAnswer;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    fn rules() -> Rules {
        Rules {
            pending_first_interval: Duration::minutes(1),
            pending_max_interval: Duration::hours(1),
            give_up_after: Duration::days(7),
            recheck_interval: Duration::days(1),
            missing_recheck_interval: Duration::hours(1),
            revoke_grace: Duration::hours(72),
            revoke_after_failures: 3,
            temporary_retry: Duration::minutes(5),
        }
    }

    /// A lookup of example.com answering `answer` (a name directly under a top-level domain needs
    /// no probe).
    fn lookup(answer: TxtAnswer) -> TxtLookup {
        TxtLookup {
            queried_name: "example.com".into(),
            cname_chain: vec![],
            answer,
            probes: vec![],
            nameserver: "127.0.0.1:53".into(),
            duration: std::time::Duration::from_millis(3),
        }
    }

    fn probe(parent: &str, answer: TxtAnswer) -> Probe {
        Probe {
            parent: parent.into(),
            name: format!("0123456789abcdef.{parent}"),
            cname_chain: vec![],
            answer,
        }
    }

    fn token_record() -> TxtAnswer {
        TxtAnswer::Records(vec![format!("email2sms-verification={TOKEN}")])
    }

    #[test]
    fn wildcard_parents_are_each_parent_once_and_bounded() {
        let chain = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(
            wildcard_parents("www.example.com", &chain(&["verify.example.com"])),
            Ok(vec!["example.com".to_owned()])
        );
        assert_eq!(
            wildcard_parents("example.com", &chain(&["x.provider.net", "host"])),
            Ok(vec!["provider.net".to_owned()]),
            "top-level domains and the root are not probed"
        );
        let deep = |n: usize| {
            (0..n)
                .map(|i| format!("a.b{i}.example"))
                .collect::<Vec<_>>()
        };
        assert_eq!(wildcard_parents("x.y.example", &deep(4)), Err(5));
        assert_eq!(
            wildcard_parents("x.y.example", &deep(3)).unwrap().len(),
            MAX_WILDCARD_PROBES
        );
    }

    #[test]
    fn only_verification_records_are_worth_probing() {
        assert!(!has_verification_record(&["v=spf1 -all".into()]));
        assert!(has_verification_record(&[
            "v=spf1 -all".into(),
            " \"EMAIL2SMS-verification=zz\"".into()
        ]));
    }

    #[test]
    fn a_probe_answering_with_the_token_is_a_wildcard() {
        let token = VerificationToken::parse(TOKEN).unwrap();
        let mut wild = lookup(token_record());
        wild.queried_name = "sales.example.com".into();
        wild.probes = vec![probe("example.com", token_record())];
        let judged = evaluate(&wild, &token);
        assert_eq!(judged.outcome, Outcome::Wildcard);
        assert!(!judged.outcome.is_temporary());
        assert_eq!(judged.wildcard.as_deref(), Some("*.example.com"));
        assert!(
            judged.message.contains("0123456789abcdef.example.com"),
            "{}",
            judged.message
        );
        // Another token at the probe name: the wildcard does not serve this one.
        wild.probes = vec![probe(
            "example.com",
            TxtAnswer::Records(vec![
                "email2sms-verification=ffffffffffffffffffffffffffffffff".into(),
            ]),
        )];
        assert_eq!(evaluate(&wild, &token).outcome, Outcome::Found);
    }

    #[test]
    fn a_failed_probe_makes_the_check_temporary() {
        let token = VerificationToken::parse(TOKEN).unwrap();
        let mut unsure = lookup(token_record());
        unsure.queried_name = "sales.example.com".into();
        unsure.probes = vec![probe("example.com", TxtAnswer::ServFail)];
        let judged = evaluate(&unsure, &token);
        assert_eq!(judged.outcome, Outcome::ServFail);
        assert!(
            judged
                .message
                .contains("could not check whether the wildcard record *.example.com"),
            "{}",
            judged.message
        );
        assert!(judged.message.contains("temporary"), "{}", judged.message);
        // A pending challenge stays pending and the failure does not count.
        let now = Utc::now();
        let d = decide(
            now,
            &rules(),
            &facts(State::Pending, now),
            &judged,
            Trigger::OnDemand,
            None,
        );
        assert_eq!(d.state, State::Pending);
        assert_eq!(d.consecutive_failures, 0);
    }

    #[test]
    fn a_lookup_without_its_probes_proves_nothing() {
        let token = VerificationToken::parse(TOKEN).unwrap();
        let mut bare = lookup(token_record());
        bare.queried_name = "sales.example.com".into();
        let judged = evaluate(&bare, &token);
        assert_eq!(judged.outcome, Outcome::Error);
        assert!(judged.outcome.is_temporary());
    }

    fn judge(answer: TxtAnswer) -> Evaluation {
        let token = VerificationToken::parse(TOKEN).unwrap();
        evaluate(&lookup(answer), &token)
    }

    fn facts(state: State, now: DateTime<Utc>) -> Facts {
        Facts {
            state,
            domain: "example.com".into(),
            reason: String::new(),
            pending_since: now,
            verified_at: (state == State::Verified).then_some(now),
            consecutive_failures: 0,
            missing_since: None,
        }
    }

    #[test]
    fn values_are_matched_ignoring_case_spaces_and_quotes() {
        for value in [
            format!("email2sms-verification={TOKEN}"),
            format!("  EMAIL2SMS-VERIFICATION={}  ", TOKEN.to_uppercase()),
            format!("\"email2sms-verification={TOKEN}\""),
            format!("' email2sms-verification={TOKEN} '"),
        ] {
            let found = judge(TxtAnswer::Records(vec![
                "v=spf1 -all".into(),
                value.clone(),
            ]));
            assert_eq!(found.outcome, Outcome::Found, "{value:?}");
        }
    }

    #[test]
    fn each_answer_is_named_for_the_customer() {
        let wrong = judge(TxtAnswer::Records(vec!["v=spf1 -all".into()]));
        assert_eq!(wrong.outcome, Outcome::WrongValue);
        assert!(
            wrong
                .message
                .starts_with("found other TXT records at example.com: \"v=spf1 -all\""),
            "{}",
            wrong.message
        );
        let none = judge(TxtAnswer::Records(vec![]));
        assert_eq!(none.message, "no TXT record found at example.com");
        let nx = judge(TxtAnswer::NxDomain);
        assert!(nx.message.starts_with("no TXT record found at example.com"));
        let timeout = judge(TxtAnswer::Timeout);
        assert!(timeout.outcome.is_temporary());
        assert!(timeout.message.contains("temporary"), "{}", timeout.message);
    }

    #[test]
    fn pending_backs_off_then_gives_up() {
        let rules = rules();
        let start = Utc::now();
        let miss = judge(TxtAnswer::Records(vec![]));
        let mut facts = facts(State::Pending, start);
        let mut now = start;
        let mut waits = Vec::new();
        loop {
            let d = decide(now, &rules, &facts, &miss, Trigger::Scheduled, None);
            if d.state == State::Failed {
                assert!(d.reason.starts_with("gave up after 7d"), "{}", d.reason);
                assert_eq!(d.next_check_at, None);
                break;
            }
            let next = d.next_check_at.unwrap();
            waits.push(next - now);
            facts.consecutive_failures = d.consecutive_failures;
            now = next;
        }
        assert_eq!(waits[0], Duration::minutes(1));
        assert_eq!(waits[1], Duration::minutes(2));
        assert_eq!(waits[7], Duration::hours(1), "capped");
        assert!(now >= start + Duration::days(7));
    }

    #[test]
    fn temporary_failures_keep_the_state_and_do_not_count() {
        let rules = rules();
        let now = Utc::now();
        let facts = facts(State::Verified, now);
        let d = decide(
            now,
            &rules,
            &facts,
            &judge(TxtAnswer::ServFail),
            Trigger::Scheduled,
            None,
        );
        assert_eq!(d.state, State::Verified);
        assert_eq!(d.consecutive_failures, 0);
        assert_eq!(d.missing_since, None);
        assert_eq!(d.next_check_at, Some(now + Duration::minutes(5)));
    }

    #[test]
    fn verified_is_revoked_after_grace_and_enough_misses() {
        let rules = rules();
        let start = Utc::now();
        let miss = judge(TxtAnswer::Records(vec!["v=spf1 -all".into()]));
        let mut facts = facts(State::Verified, start);
        let mut now = start;
        let mut checks = 0;
        loop {
            let d = decide(now, &rules, &facts, &miss, Trigger::Scheduled, None);
            checks += 1;
            if d.state == State::Revoked {
                break;
            }
            assert!(d.reason.starts_with("still verified"), "{}", d.reason);
            facts.consecutive_failures = d.consecutive_failures;
            facts.missing_since = d.missing_since;
            now = d.next_check_at.unwrap();
        }
        assert_eq!(
            now,
            start + Duration::hours(72),
            "revoked right at the end of the grace"
        );
        assert_eq!(checks, 73);
    }

    #[test]
    fn a_second_company_waits_until_the_holder_lost_its_token_for_the_grace() {
        let rules = rules();
        let now = Utc::now();
        let found = judge(TxtAnswer::Records(vec![format!(
            "email2sms-verification={TOKEN}"
        )]));
        let pending = facts(State::Pending, now);
        let holder_present = Holder {
            token_present: true,
            consecutive_failures: 0,
            missing_since: None,
        };
        let d = decide(
            now,
            &rules,
            &pending,
            &found,
            Trigger::OnDemand,
            Some(&holder_present),
        );
        assert_eq!(d.state, State::Pending);
        assert!(
            d.reason.contains("already verified by another company"),
            "{}",
            d.reason
        );
        let holder_gone = Holder {
            token_present: false,
            consecutive_failures: 2,
            missing_since: Some(now - Duration::hours(73)),
        };
        let d = decide(
            now,
            &rules,
            &pending,
            &found,
            Trigger::OnDemand,
            Some(&holder_gone),
        );
        assert_eq!(d.state, State::Verified);
        assert!(d.revoke_holder);
    }

    #[test]
    fn asking_again_restarts_a_failed_challenge() {
        let rules = rules();
        let now = Utc::now();
        let failed = facts(State::Failed, now - Duration::days(8));
        let d = decide(
            now,
            &rules,
            &failed,
            &judge(TxtAnswer::NxDomain),
            Trigger::OnDemand,
            None,
        );
        assert_eq!(d.state, State::Pending);
        assert_eq!(d.pending_since, now);
        assert_eq!(d.consecutive_failures, 1);
    }
}
