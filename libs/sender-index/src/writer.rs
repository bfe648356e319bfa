//! The policy service's side: guarded writes, the version key, announcements, and finding stale
//! keys after a rebuild.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use email2sms_proto::policy::v1::CompiledSender;
use email2sms_proto::queue::v1::PolicyCacheInvalidated;
use ipnet::IpNet;
use prost::Message;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use crate::error::Result;
use crate::keys::{KeyLayout, cidr_text, domain_field, email_field, ip_field};
use crate::value::{belongs_to, encode};

/// Writes a batch of values, each to its key (or hash field) unless a newer version already wrote
/// that key: every write is guarded on its own, a batch only saves round trips and script calls.
/// KEYS[1] = version hash, KEYS[1 + i] = key or hash of write i; ARGV[1] = version, then four
/// arguments per write: version field, mode (`set`/`del`/`hset`/`hdel`), hash field, value.
/// Returns how many writes were applied.
const GUARDED_WRITES: &str = r"
local incoming = tonumber(ARGV[1])
local applied = 0
for i = 2, #KEYS do
  local a = (i - 2) * 4 + 2
  local current = tonumber(redis.call('HGET', KEYS[1], ARGV[a]) or '0')
  if current <= incoming then
    redis.call('HSET', KEYS[1], ARGV[a], ARGV[1])
    local mode = ARGV[a + 1]
    if mode == 'set' then redis.call('SET', KEYS[i], ARGV[a + 3])
    elseif mode == 'del' then redis.call('DEL', KEYS[i])
    elseif mode == 'hset' then redis.call('HSET', KEYS[i], ARGV[a + 2], ARGV[a + 3])
    else redis.call('HDEL', KEYS[i], ARGV[a + 2]) end
    applied = applied + 1
  end
end
return applied
";

/// Raises the version key, never lowers it.
const RAISE_VERSION: &str = r"
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
";

/// Guarded writes per script call: small enough that one call holds Redis for about a
/// millisecond, large enough that a rebuild of a million keys is a few thousand calls.
const BATCH: usize = 500;

/// Script calls per pipeline (one round trip).
const CALLS_PER_PIPELINE: usize = 4;

/// Keys asked for per SCAN step when looking for stale keys.
const SCAN_COUNT: usize = 5_000;

/// What a guarded write does to its key; the names are the script's `mode` argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Set,
    Del,
    HSet,
    HDel,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Set => "set",
            Mode::Del => "del",
            Mode::HSet => "hset",
            Mode::HDel => "hdel",
        }
    }
}

/// One guarded write: a compiled entry stored, or removed, at its key.
#[derive(Clone, PartialEq, Eq)]
pub struct Write {
    key: String,
    version_field: String,
    mode: Mode,
    field: String,
    value: Vec<u8>,
}

impl fmt::Debug for Write {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Write")
            .field("key", &self.key)
            .field("mode", &self.mode)
            .field("field", &self.field)
            .field("value_len", &self.value.len())
            .finish_non_exhaustive()
    }
}

impl Write {
    /// Stores `sender` as the email entry of `address`, or removes the entry (`None`).
    pub fn email(layout: &KeyLayout, address: &str, sender: Option<&CompiledSender>) -> Write {
        Write::string(layout.email(address), email_field(address), sender)
    }

    /// Stores `sender` as the domain entry of `domain`, or removes the entry (`None`).
    pub fn domain(layout: &KeyLayout, domain: &str, sender: Option<&CompiledSender>) -> Write {
        Write::string(layout.domain(domain), domain_field(domain), sender)
    }

    /// Stores `sender` as the IP entry of `net`, or removes the entry (`None`).
    pub fn ip(layout: &KeyLayout, net: &IpNet, sender: Option<&CompiledSender>) -> Write {
        let cidr = cidr_text(net);
        Write {
            key: layout.ip_table(),
            version_field: ip_field(&cidr),
            mode: if sender.is_some() {
                Mode::HSet
            } else {
                Mode::HDel
            },
            field: cidr,
            value: sender.map(encode).unwrap_or_default(),
        }
    }

    fn string(key: String, version_field: String, sender: Option<&CompiledSender>) -> Write {
        Write {
            key,
            version_field,
            mode: if sender.is_some() {
                Mode::Set
            } else {
                Mode::Del
            },
            field: String::new(),
            value: sender.map(encode).unwrap_or_default(),
        }
    }

    /// The key (or hash) written.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Whether this write stores a value (rather than removing one).
    pub fn stores(&self) -> bool {
        matches!(self.mode, Mode::Set | Mode::HSet)
    }
}

/// The names a rebuild wrote: email and domain keys, and fields of the IP table. Whatever else is
/// in Redis is stale.
#[derive(Debug, Default)]
pub struct Live {
    keys: HashSet<String>,
    ip_fields: HashSet<String>,
}

impl Live {
    /// Remembers the name `write` stores to.
    pub fn record(&mut self, write: &Write) {
        match write.mode {
            Mode::Set => {
                self.keys.insert(write.key.clone());
            }
            Mode::HSet => {
                self.ip_fields.insert(write.field.clone());
            }
            Mode::Del | Mode::HDel => {}
        }
    }
}

/// Writes the index. Cheap to clone.
#[derive(Clone)]
pub struct Writer {
    conn: ConnectionManager,
    layout: KeyLayout,
    write: Arc<redis::Script>,
    raise: Arc<redis::Script>,
}

impl fmt::Debug for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// A writer of the index under `layout` through `conn`.
    pub fn new(conn: ConnectionManager, layout: KeyLayout) -> Writer {
        Writer {
            conn,
            layout,
            write: Arc::new(redis::Script::new(GUARDED_WRITES)),
            raise: Arc::new(redis::Script::new(RAISE_VERSION)),
        }
    }

    /// The names this writer writes.
    pub fn layout(&self) -> &KeyLayout {
        &self.layout
    }

    /// Runs `writes` of `version` (each skipped where a newer version wrote its key), then raises
    /// the version key to `version`.
    pub async fn apply(&self, writes: &[Write], version: u64) -> Result<()> {
        self.write_all(writes, version).await?;
        self.raise_version(version).await
    }

    /// Guarded writes of `version`, [`BATCH`] per script call and [`CALLS_PER_PIPELINE`] calls
    /// per round trip. Leaves the version key alone.
    pub async fn write_all(&self, writes: &[Write], version: u64) -> Result<()> {
        let mut conn = self.conn.clone();
        let keyver = self.layout.key_versions();
        for group in writes.chunks(BATCH * CALLS_PER_PIPELINE) {
            let invocations: Vec<_> = group
                .chunks(BATCH)
                .map(|chunk| {
                    let mut inv = self.write.prepare_invoke();
                    inv.key(&keyver).arg(version);
                    for w in chunk {
                        inv.key(&w.key)
                            .arg(&w.version_field)
                            .arg(w.mode.as_str())
                            .arg(&w.field)
                            .arg(w.value.as_slice());
                    }
                    inv
                })
                .collect();
            let mut pipe = redis::pipe();
            pipe.load_script(&self.write).ignore();
            for inv in &invocations {
                pipe.invoke_script(inv).ignore();
            }
            let () = pipe.query_async(&mut conn).await?;
        }
        Ok(())
    }

    /// Raises the version key to `version`; never lowers it.
    pub async fn raise_version(&self, version: u64) -> Result<()> {
        let mut conn = self.conn.clone();
        let mut raise = self.raise.prepare_invoke();
        raise.key(self.layout.version()).arg(version);
        let _: i64 = raise.invoke_async(&mut conn).await?;
        Ok(())
    }

    /// Announces a change on the invalidation channel.
    pub async fn publish(&self, message: &PolicyCacheInvalidated) -> Result<()> {
        let mut conn = self.conn.clone();
        let _: i64 = conn
            .publish(self.layout.invalidations(), message.encode_to_vec())
            .await?;
        Ok(())
    }

    /// Removals of the email and domain keys and IP table fields in Redis that are not `live`
    /// (for a company rebuild: only those compiled for `company_id`).
    pub async fn stale_writes(&self, live: &Live, company_id: Option<&str>) -> Result<Vec<Write>> {
        let mut conn = self.conn.clone();
        let mut stale = Vec::new();
        let pattern = self.layout.scan_pattern();
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(&mut conn)
                .await?;
            let mut candidates: Vec<String> = keys
                .into_iter()
                .filter(|key| self.layout.entry_field(key).is_some() && !live.keys.contains(key))
                .collect();
            if let Some(company_id) = company_id
                && !candidates.is_empty()
            {
                let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
                    .arg(&candidates)
                    .query_async(&mut conn)
                    .await?;
                let mut values = values.into_iter();
                candidates.retain(|_| belongs_to(values.next().flatten().as_deref(), company_id));
            }
            for key in candidates {
                let version_field = self.layout.entry_field(&key).unwrap_or_default().to_owned();
                stale.push(Write {
                    key,
                    version_field,
                    mode: Mode::Del,
                    field: String::new(),
                    value: Vec::new(),
                });
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let table: HashMap<String, Vec<u8>> = conn.hgetall(self.layout.ip_table()).await?;
        for (cidr, value) in table {
            if live.ip_fields.contains(&cidr) {
                continue;
            }
            if let Some(company_id) = company_id
                && !belongs_to(Some(&value), company_id)
            {
                continue;
            }
            stale.push(Write {
                key: self.layout.ip_table(),
                version_field: ip_field(&cidr),
                mode: Mode::HDel,
                field: cidr,
                value: Vec::new(),
            });
        }
        Ok(stale)
    }
}
