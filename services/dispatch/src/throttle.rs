//! Send-rate limits per forwarding user, per company and per connector: token buckets kept in
//! Redis, so every dispatch replica draws from the same buckets.
//!
//! One Lua script refills each bucket by the time elapsed since it was last touched and takes one
//! token from all of them atomically, or from none: a job refused by its company's bucket must not
//! use up its user's token. The clock is Redis' own (`TIME`) so replicas with skewed clocks agree.
//!
//! **Redis down → fail open.** The throttles protect fairness between customers, not the SMSC (the
//! SMPP connector's own `tps` limit and the SMSC's 0x58 throttling still apply), and an outage of
//! a cache must not stop every SMS. So when Redis does not answer within a short timeout the job is
//! sent anyway and a warning is logged (at most every few seconds); the reconnect is retried in the
//! background of later jobs, never more than once per second, so a dead Redis costs no latency.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;

/// A rate: `tokens` per `per`. Zero tokens means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub tokens: u32,
    pub per: Duration,
}

impl Rate {
    pub const UNLIMITED: Rate = Rate {
        tokens: 0,
        per: Duration::from_secs(1),
    };

    pub fn is_unlimited(&self) -> bool {
        self.tokens == 0
    }

    /// Parses `N/s`, `N/min` or `N/h` (also `N/sec`, `N/m`, `N/hour`); `0` alone is unlimited.
    pub fn parse(text: &str) -> Result<Rate, String> {
        let text = text.trim();
        if text == "0" {
            return Ok(Rate::UNLIMITED);
        }
        let (count, unit) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?}: use N/s, N/min or N/h (0 = unlimited)"))?;
        let tokens: u32 = count
            .trim()
            .parse()
            .map_err(|_| format!("{text:?}: {count:?} is not a whole number"))?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            other => return Err(format!("{text:?}: unknown unit {other:?} (s, min or h)")),
        };
        Ok(Rate { tokens, per })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_unlimited() {
            return f.write_str("unlimited");
        }
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "min",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.tokens)
    }
}

/// The configured limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub per_user: Rate,
    pub per_company: Rate,
    pub per_connector: Rate,
}

impl Limits {
    pub const NONE: Limits = Limits {
        per_user: Rate::UNLIMITED,
        per_company: Rate::UNLIMITED,
        per_connector: Rate::UNLIMITED,
    };

    fn all_unlimited(&self) -> bool {
        self.per_user.is_unlimited()
            && self.per_company.is_unlimited()
            && self.per_connector.is_unlimited()
    }
}

/// Which bucket refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    User,
    Company,
    Connector,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::User => "forwarding user",
            Scope::Company => "company",
            Scope::Connector => "connector",
        }
    }
}

/// The answer for one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A token was taken (or no limit applies, or Redis is down and we fail open).
    Send,
    /// Over the limit of `scope`; a token is expected back after `wait`.
    Wait { scope: Scope, wait: Duration },
}

/// The token bucket script. KEYS: the buckets. ARGV[1]: now in ms ("" = Redis' clock; tests
/// pass their own); then per bucket its capacity and the ms it takes to refill completely.
/// Returns {0, 0} when a token was taken from every bucket, else {index of the refusing bucket,
/// ms until it has a token}.
const SCRIPT: &str = r"
local now = tonumber(ARGV[1])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local levels = {}
for i = 1, #KEYS do
  local capacity = tonumber(ARGV[2 * i])
  local period = tonumber(ARGV[2 * i + 1])
  local bucket = redis.call('HMGET', KEYS[i], 'tokens', 'at')
  local tokens = tonumber(bucket[1])
  local at = tonumber(bucket[2])
  if tokens == nil or at == nil then
    tokens = capacity
    at = now
  end
  local elapsed = now - at
  if elapsed < 0 then elapsed = 0 end
  tokens = math.min(capacity, tokens + elapsed * capacity / period)
  if tokens < 1 then
    return {i, math.ceil((1 - tokens) * period / capacity)}
  end
  levels[i] = tokens
end
for i = 1, #KEYS do
  local period = tonumber(ARGV[2 * i + 1])
  redis.call('HSET', KEYS[i], 'tokens', tostring(levels[i] - 1), 'at', tostring(now))
  -- A bucket left alone refills completely within `period`; after that it need not exist.
  redis.call('PEXPIRE', KEYS[i], period + 1000)
end
return {0, 0}
";

/// How long a Redis call may take before the job is sent without throttling.
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);
/// Least time between two reconnect attempts while Redis is down.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);
/// Least time between two "Redis is down" warnings.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The shared throttles of this dispatcher.
pub struct Throttle {
    limits: Limits,
    prefix: String,
    client: Option<redis::Client>,
    script: redis::Script,
    /// The connection once made; it reconnects by itself after that.
    manager: Mutex<Option<ConnectionManager>>,
    /// Held by the one job that tries to connect, while the others wait for its (bounded) attempt:
    /// failing them open instead would let the burst that arrives at start-up, or after a
    /// reconnect, through unthrottled. Holds the time of the last attempt.
    connecting: tokio::sync::Mutex<Option<Instant>>,
    last_warning: Mutex<Option<Instant>>,
}

impl fmt::Debug for Throttle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Throttle")
            .field("limits", &self.limits)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Throttle {
    /// Throttles in Redis at `redis_url`, keys under `prefix`. Nothing connects until the first
    /// job, so dispatch starts (and fails open) while Redis is down.
    pub fn new(redis_url: &str, prefix: &str, limits: Limits) -> Result<Throttle, String> {
        let client = if limits.all_unlimited() {
            None
        } else {
            Some(redis::Client::open(redis_url).map_err(|e| format!("REDIS_URL: {e}"))?)
        };
        Ok(Throttle {
            limits,
            prefix: prefix.to_owned(),
            client,
            script: redis::Script::new(SCRIPT),
            manager: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(None),
            last_warning: Mutex::new(None),
        })
    }

    /// No limits at all (tests, and the benchmark).
    pub fn unlimited() -> Throttle {
        Throttle::new("redis://unused", "", Limits::NONE).expect("no client is opened")
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Takes a token for a job of `user` in `company` through `connector`.
    pub async fn acquire(&self, user: &str, company: &str, connector: &str) -> Decision {
        self.acquire_at(user, company, connector, None).await
    }

    /// [`Throttle::acquire`] with the clock given (milliseconds), for tests.
    pub async fn acquire_at(
        &self,
        user: &str,
        company: &str,
        connector: &str,
        now_ms: Option<u64>,
    ) -> Decision {
        let buckets: Vec<(Scope, Rate, String)> = [
            (Scope::User, self.limits.per_user, format!("user:{user}")),
            (
                Scope::Company,
                self.limits.per_company,
                format!("company:{company}"),
            ),
            (
                Scope::Connector,
                self.limits.per_connector,
                format!("connector:{connector}"),
            ),
        ]
        .into_iter()
        .filter(|(_, rate, _)| !rate.is_unlimited())
        .collect();
        if buckets.is_empty() {
            return Decision::Send;
        }
        let Some(mut connection) = self.connection().await else {
            return Decision::Send;
        };
        let mut invocation = self.script.prepare_invoke();
        invocation.arg(now_ms.map(|ms| ms.to_string()).unwrap_or_default());
        for (_, rate, key) in &buckets {
            invocation
                .key(format!("{}throttle:{key}", self.prefix))
                .arg(rate.tokens)
                .arg(u64::try_from(rate.per.as_millis()).unwrap_or(u64::MAX));
        }
        let answer: Result<redis::RedisResult<(usize, u64)>, _> =
            tokio::time::timeout(REDIS_TIMEOUT, invocation.invoke_async(&mut connection)).await;
        match answer {
            Ok(Ok((0, _))) => Decision::Send,
            Ok(Ok((index, wait_ms))) => match buckets.get(index - 1) {
                Some((scope, _, _)) => Decision::Wait {
                    scope: *scope,
                    wait: Duration::from_millis(wait_ms),
                },
                None => Decision::Send,
            },
            Ok(Err(error)) => {
                self.warn(&error.to_string());
                Decision::Send
            }
            Err(_) => {
                self.warn("Redis did not answer in time");
                Decision::Send
            }
        }
    }

    /// The connection, connecting at most once per [`RECONNECT_EVERY`]; `None` while Redis is
    /// unreachable. Jobs arriving during an attempt wait for it (at most `2 × REDIS_TIMEOUT`).
    async fn connection(&self) -> Option<ConnectionManager> {
        let client = self.client.as_ref()?;
        if let Some(manager) = self.manager.lock().expect("redis connection").clone() {
            return Some(manager);
        }
        let mut last_attempt = self.connecting.lock().await;
        if let Some(manager) = self.manager.lock().expect("redis connection").clone() {
            return Some(manager);
        }
        if last_attempt.is_some_and(|at| at.elapsed() < RECONNECT_EVERY) {
            return None;
        }
        *last_attempt = Some(Instant::now());
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1);
        match tokio::time::timeout(
            REDIS_TIMEOUT * 2,
            ConnectionManager::new_with_config(client.clone(), config),
        )
        .await
        {
            Ok(Ok(manager)) => {
                *self.manager.lock().expect("redis connection") = Some(manager.clone());
                Some(manager)
            }
            Ok(Err(error)) => {
                self.warn(&error.to_string());
                None
            }
            Err(_) => {
                self.warn("connecting to Redis timed out");
                None
            }
        }
    }

    fn warn(&self, error: &str) {
        let mut last = self.last_warning.lock().expect("warning clock");
        if last.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!(
                error,
                "throttles unavailable (Redis): sending without the per-user, per-company and \
                 per-connector limits until it is back"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(
            Rate::parse("10/s").unwrap(),
            Rate {
                tokens: 10,
                per: Duration::from_secs(1)
            }
        );
        assert_eq!(Rate::parse("30/min").unwrap().per, Duration::from_secs(60));
        assert_eq!(
            Rate::parse(" 5 / h ").unwrap().per,
            Duration::from_secs(3600)
        );
        assert!(Rate::parse("0").unwrap().is_unlimited());
        assert!(Rate::parse("0/s").unwrap().is_unlimited());
        assert!(Rate::parse("10").is_err());
        assert!(Rate::parse("x/s").is_err());
        assert!(Rate::parse("10/fortnight").is_err());
        assert_eq!(Rate::parse("30/min").unwrap().to_string(), "30/min");
    }
}
