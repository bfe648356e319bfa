//! The verification rules, free of I/O: what a DNS answer means for a token, and what a check
//! does to a challenge at a given moment. Time is always passed in, so the rules (back-off, give
//! up, grace, revocation) are tested by moving `now`, never by sleeping.

use chrono::{DateTime, Duration, Utc};
use email2sms_domain::VerificationToken;

use crate::dns::{TxtAnswer, TxtLookup};
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

/// What `lookup` means for `token`.
pub fn evaluate(lookup: &TxtLookup, token: &VerificationToken) -> Evaluation {
    let name = &lookup.queried_name;
    let alias = alias_note(lookup);
    let server = &lookup.nameserver;
    let retry = "this is temporary and the check will be retried";
    let (outcome, message) = match &lookup.answer {
        TxtAnswer::Records(values) if token_present(values, token) => (
            Outcome::Found,
            format!("found the verification token at {name}{alias}"),
        ),
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
        TxtAnswer::ServFail => (
            Outcome::ServFail,
            format!("the DNS server {server} answered SERVFAIL for {name}; {retry}"),
        ),
        TxtAnswer::Refused => (
            Outcome::Refused,
            format!("the DNS server {server} refused the query for {name}; {retry}"),
        ),
        TxtAnswer::Timeout => (
            Outcome::Timeout,
            format!(
                "no answer from the DNS server {server} for {name} within {:.1}s; {retry}",
                lookup.duration.as_secs_f64()
            ),
        ),
        TxtAnswer::Error(error) => (
            Outcome::Error,
            format!("the DNS lookup of {name} at {server} failed ({error}); {retry}"),
        ),
    };
    Evaluation { outcome, message }
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

    fn lookup(answer: TxtAnswer) -> TxtLookup {
        TxtLookup {
            queried_name: "example.com".into(),
            cname_chain: vec![],
            answer,
            nameserver: "127.0.0.1:53".into(),
            duration: std::time::Duration::from_millis(3),
        }
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
