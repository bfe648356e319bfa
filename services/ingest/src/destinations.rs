//! Where a company's SMS may go: what a stolen mailbox at an authorised domain can make the gateway
//! send.
//!
//! Three rules, checked for every recipient after the sender is proven:
//!
//! - **Premium-rate, shared-cost and personal (follow-me) numbers are refused**, in every region
//!   and with no setting: an SMS to such a number earns its owner money, which is what SMS pumping
//!   (international revenue share fraud) lives on.
//! - **Only the company's own region, plus the regions its admin added**
//!   (`CompanyLimits.allowed_destination_regions`). Numbers that belong to no region (+800, +882 …)
//!   are never allowed.
//! - **At most `international_sms_per_day` SMS a UTC day to other regions** (100 unless the admin
//!   set it, after GOV.UK Notify's default), counted in Redis so every ingest replica shares one
//!   count. The count is reserved before the jobs are published and given back when publishing
//!   fails, so a relay's retry after a 451 is not counted twice. Reaching it is a `452 4.5.3`: the
//!   relay keeps the mail and tries again, and the text says when the count resets.
//!
//! The first two are pure (the compiled sender and the number in, a verdict out) and are what
//! Diagnose shows; the cap needs Redis and is taken only for real mail, never by Diagnose.

use chrono::{DateTime, Datelike, Duration as ChronoDuration, TimeZone, Utc};
use email2sms_domain::{NumberKind, PhoneNumber, Region};
use email2sms_proto::policy::v1::CompiledSender;

use crate::smtp::Reply;

/// A company's international SMS per day when its compiled entry names none (an entry compiled
/// before the setting existed).
pub const DEFAULT_INTERNATIONAL_SMS_PER_DAY: u32 = 100;

/// The destination rules of one company, as compiled into its sender entries.
#[derive(Debug, Clone)]
pub struct DestinationRules {
    home: Option<Region>,
    allowed: Vec<String>,
    pub international_per_day: u32,
}

/// Why a recipient may not receive the company's SMS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    SpecialRate { number: String, kind: NumberKind },
    RegionNotAllowed { number: String, region: String },
    NoRegion { number: String },
}

impl Refusal {
    /// For Diagnose and the log.
    pub fn detail(&self) -> String {
        match self {
            Self::SpecialRate { number, kind } => {
                format!("{number} is {}: refused in every region", kind.describe())
            }
            Self::RegionNotAllowed { number, region } => {
                format!("{number} is in {region}, not among the company's destination regions")
            }
            Self::NoRegion { number } => {
                format!("{number} belongs to no region (a non-geographic number)")
            }
        }
    }

    /// The 550 5.7.1 text: which rule, and what the admin can change.
    pub fn reply_text(&self, address: &str) -> String {
        match self {
            Self::SpecialRate { kind, .. } => format!(
                "the recipient {address} is {}; SMS to premium-rate, shared-cost and personal numbers are never sent, to protect your company from SMS fraud",
                kind.describe()
            ),
            Self::RegionNotAllowed { region, .. } => format!(
                "the recipient {address} is a number in {region}, and your company sends SMS only to the countries its administrator allowed; ask your administrator to add {region} to the allowed destination countries in the Email2SMS portal"
            ),
            Self::NoRegion { .. } => format!(
                "the recipient {address} is a non-geographic number, to which no SMS is sent; write a mobile number with its country code"
            ),
        }
    }
}

impl DestinationRules {
    pub fn of(sender: &CompiledSender) -> Self {
        let limits = sender.limits.as_ref();
        Self {
            home: Region::parse(&sender.default_region).ok(),
            allowed: limits
                .map(|l| l.allowed_destination_regions.clone())
                .unwrap_or_default(),
            international_per_day: limits
                .and_then(|l| l.international_sms_per_day)
                .unwrap_or(DEFAULT_INTERNATIONAL_SMS_PER_DAY),
        }
    }

    /// Whether `number` may receive the company's SMS; `Ok(true)` when it is outside the company's
    /// own region (and so counts against the daily cap).
    pub fn check(&self, number: &PhoneNumber) -> Result<bool, Refusal> {
        let kind = number.kind();
        if kind.is_special_rate() {
            return Err(Refusal::SpecialRate {
                number: number.as_str().to_owned(),
                kind,
            });
        }
        let Some(region) = number.region() else {
            return Err(Refusal::NoRegion {
                number: number.as_str().to_owned(),
            });
        };
        if Some(region) == self.home {
            return Ok(false);
        }
        if self.allowed.iter().any(|r| r == region.as_str()) {
            return Ok(true);
        }
        Err(Refusal::RegionNotAllowed {
            number: number.as_str().to_owned(),
            region: region.as_str().to_owned(),
        })
    }
}

/// The Redis key counting `company`'s international SMS on `now`'s UTC day.
pub fn daily_key(prefix: &str, company: &str, now: DateTime<Utc>) -> String {
    format!(
        "{prefix}ingest:international:{company}:{:04}{:02}{:02}",
        now.year(),
        now.month(),
        now.day()
    )
}

/// When the count of `now`'s day resets: the next UTC midnight.
pub fn resets_at(now: DateTime<Utc>) -> DateTime<Utc> {
    let next = now.date_naive() + ChronoDuration::days(1);
    Utc.from_utc_datetime(&next.and_hms_opt(0, 0, 0).unwrap_or_default())
}

/// The 452 given when the day's international SMS are used up.
pub fn cap_reached(per_day: u32, now: DateTime<Utc>) -> Reply {
    let reset = resets_at(now);
    let minutes = (reset - now).num_minutes().max(1);
    Reply::new(
        452,
        "4.5.3",
        format!(
            "your company has sent its {per_day} SMS to other countries for today; the count resets at {} (in {}h{:02}m), and your mail server will try again; ask your administrator to raise the daily limit in the Email2SMS portal if this is too few",
            reset.format("%H:%M UTC"),
            minutes / 60,
            minutes % 60
        ),
    )
}

/// Takes `count` from the day's budget of `per_day`, atomically across replicas: the new count, or
/// -1 (nothing taken) when it would pass the budget. The key lives two days, so a day's count
/// outlives the day in every time zone's view and then goes. One `Script` for the process: it
/// hashes its source once, and Redis runs it by that hash (`EVALSHA`).
pub static RESERVE_SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if n == tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], 172800) end
if n > tonumber(ARGV[2]) then
  redis.call('DECRBY', KEYS[1], ARGV[1])
  return -1
end
return n
",
    )
});

/// SMS to other regions taken from a day's budget: given back when the email is not queued.
#[derive(Debug)]
pub struct Reservation {
    pub key: String,
    pub count: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use email2sms_proto::policy::v1::CompanyLimits;

    fn sender(allowed: &[&str], per_day: Option<u32>) -> CompiledSender {
        CompiledSender {
            default_region: "NZ".into(),
            limits: Some(CompanyLimits {
                allowed_destination_regions: allowed.iter().map(|r| (*r).to_owned()).collect(),
                international_sms_per_day: per_day,
                ..CompanyLimits::default()
            }),
            ..CompiledSender::default()
        }
    }

    fn check(rules: &DestinationRules, number: &str) -> Result<bool, Refusal> {
        rules.check(&PhoneNumber::parse(number, Region::parse("NZ").ok()).unwrap())
    }

    #[test]
    fn the_own_region_is_domestic_and_others_need_the_admin() {
        let home_only = DestinationRules::of(&sender(&[], None));
        assert_eq!(check(&home_only, "0211234567"), Ok(false));
        assert_eq!(
            check(&home_only, "+61412345678"),
            Err(Refusal::RegionNotAllowed {
                number: "+61412345678".into(),
                region: "AU".into()
            })
        );
        assert_eq!(home_only.international_per_day, 100);
        let with_au = DestinationRules::of(&sender(&["AU"], Some(5)));
        assert_eq!(check(&with_au, "+61412345678"), Ok(true));
        assert_eq!(with_au.international_per_day, 5);
        assert!(check(&with_au, "+447400123456").is_err());
    }

    #[test]
    fn special_rate_numbers_are_refused_even_in_allowed_regions() {
        let rules = DestinationRules::of(&sender(&["GB", "AU"], None));
        for number in [
            "+449012345678",
            "+447012345678",
            "+611300123456",
            "+6490012345",
        ] {
            match check(&rules, number) {
                Err(Refusal::SpecialRate { kind, .. }) => assert!(kind.is_special_rate()),
                other => panic!("{number}: {other:?}"),
            }
        }
        assert_eq!(check(&rules, "+447400123456"), Ok(true));
    }

    #[test]
    fn the_count_resets_at_the_next_utc_midnight() {
        let now = Utc.with_ymd_and_hms(2026, 12, 2, 22, 30, 0).unwrap();
        assert_eq!(
            daily_key("p:", "c1", now),
            "p:ingest:international:c1:20261202"
        );
        assert_eq!(
            resets_at(now),
            Utc.with_ymd_and_hms(2026, 12, 3, 0, 0, 0).unwrap()
        );
        let reply = cap_reached(100, now);
        assert_eq!((reply.code, reply.enhanced), (452, Some("4.5.3")));
        assert!(
            reply.text.contains("00:00 UTC (in 1h30m)"),
            "{}",
            reply.text
        );
    }
}
