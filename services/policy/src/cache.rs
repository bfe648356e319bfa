//! The compiled sender lookups in Redis, which ingest reads on every email.
//!
//! # Key layout
//!
//! The key names, the value encoding (protobuf `CompiledSender`, the message `ResolveSender`
//! returns), the guarded writes and the one reader ingest also uses live in
//! `email2sms-sender-index` (libs/sender-index), whose documentation has the table; this module
//! decides *what* to compile and *when*.
//!
//! After every change the policy service publishes a protobuf
//! `email2sms.queue.v1.PolicyCacheInvalidated` on the channel `P policy:invalidations`, listing
//! the email and domain keys that changed and whether the IP table changed (reload it whole);
//! `full_rebuild` means "drop everything".
//!
//! # Ordering
//!
//! Every write transaction bumps `cache_version` in Postgres; a recompile reads the entries and
//! that version in one snapshot and writes through the index's guarded writes
//! (`email2sms_sender_index::Writer`), which refuse to overwrite a key with data of an older
//! version (`P policy:keyver`), so two concurrent recompiles can never leave the older answer in
//! Redis.
//!
//! # Redis down
//!
//! Writes commit in Postgres regardless. A failed recompile marks the cache dirty; the repair loop
//! ([`Cache::repair_loop`]) rebuilds everything as soon as Redis answers again, and also rebuilds
//! when `P policy:version` is missing or behind Postgres (a flushed or replaced Redis).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use email2sms_proto::policy::v1 as pb;
use email2sms_proto::queue::v1::PolicyCacheInvalidated;
use email2sms_sender_index::{KeyLayout, Live, Reader, Write, Writer};
use ipnet::IpNet;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sqlx::PgPool;
use uuid::Uuid;

use crate::entries::{EntryKind, EntryRow, matchable_sql, select_sql};
use crate::error::{Error, Result};
use crate::model::timestamp;

/// Default key prefix; configurable so that tests (and several deployments) can share a Redis.
pub use email2sms_sender_index::DEFAULT_PREFIX;

/// Entry rows fetched from the rebuild's cursor at a time: the rebuild streams, so its memory
/// is a few batches plus the set of live key names, whatever the number of entries.
const FETCH_ROWS: usize = 5_000;

/// Compiled batches a rebuild may have waiting for Redis while it reads on from Postgres.
const QUEUED_BATCHES: usize = 4;

/// The keys one change touched. Empty sets mean "nothing of that kind changed".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keys {
    /// The company whose data changed (public id); empty for several companies.
    pub company_id: String,
    pub emails: BTreeSet<String>,
    pub domains: BTreeSet<String>,
    pub ips: BTreeSet<IpNet>,
}

impl Keys {
    pub fn for_company(company_id: &str) -> Keys {
        Keys {
            company_id: company_id.to_owned(),
            ..Keys::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.emails.is_empty() && self.domains.is_empty() && self.ips.is_empty()
    }

    /// Adds the key of an entry row.
    pub fn add_row(&mut self, kind: EntryKind, row: &EntryRow) {
        self.add(kind, row.key.as_deref(), row.network);
    }

    pub fn add(&mut self, kind: EntryKind, key: Option<&str>, network: Option<IpNet>) {
        match (kind, key, network) {
            (EntryKind::Email, Some(key), _) => {
                self.emails.insert(key.to_owned());
            }
            (EntryKind::Domain, Some(key), _) => {
                self.domains.insert(key.to_owned());
            }
            (EntryKind::Ip, _, Some(net)) => {
                self.ips.insert(net);
            }
            _ => {}
        }
    }
}

/// What a rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebuildStats {
    pub keys_written: u64,
    pub keys_removed: u64,
    pub version: u64,
    pub duration: Duration,
}

/// The Redis side of the compiled lookups.
#[derive(Clone)]
pub struct Cache {
    writer: Writer,
    reader: Reader,
    dirty: Arc<AtomicBool>,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("prefix", &self.prefix())
            .field("dirty", &self.dirty.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl From<redis::RedisError> for Error {
    fn from(error: redis::RedisError) -> Error {
        Error::Unavailable(format!("redis: {error}"))
    }
}

impl From<email2sms_sender_index::Error> for Error {
    fn from(error: email2sms_sender_index::Error) -> Error {
        if error.is_redis() {
            Error::Unavailable(error.to_string())
        } else {
            Error::Internal(error.to_string())
        }
    }
}

/// Reads the matchable rows of `kind` whose key is among `bind` (`filter` compares the key with
/// `$1`) inside the current snapshot; no keys, no query.
async fn matchable_rows(
    conn: &mut sqlx::PgConnection,
    kind: EntryKind,
    filter: &str,
    bind: KeyBind<'_>,
) -> Result<Vec<EntryRow>> {
    let no_keys = match bind {
        KeyBind::Texts(keys) => keys.is_empty(),
        KeyBind::Nets(nets) => nets.is_empty(),
    };
    if no_keys {
        return Ok(Vec::new());
    }
    let sql = format!(
        "{} WHERE {} AND {filter}",
        select_sql(kind),
        matchable_sql(kind)
    );
    let query = sqlx::query_as::<_, EntryRow>(&sql);
    let query = match bind {
        KeyBind::Texts(keys) => query.bind(keys),
        KeyBind::Nets(nets) => query.bind(nets),
    };
    Ok(query.fetch_all(&mut *conn).await?)
}

enum KeyBind<'a> {
    Texts(&'a [String]),
    Nets(&'a [IpNet]),
}

/// Everything compiled from one consistent snapshot of Postgres.
struct Snapshot {
    version: u64,
    emails: Vec<EntryRow>,
    domains: Vec<EntryRow>,
    ips: Vec<EntryRow>,
}

/// Opens a read-only REPEATABLE READ transaction and reads the compile version in it: one
/// snapshot for the version and every row, so the version truly describes the data.
async fn begin_snapshot(
    pool: &PgPool,
) -> Result<(sqlx::Transaction<'static, sqlx::Postgres>, u64)> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let version: i64 = sqlx::query_scalar("SELECT version FROM cache_version")
        .fetch_one(&mut *tx)
        .await?;
    Ok((tx, u64::try_from(version).unwrap_or(0)))
}

/// The matchable rows behind `keys`, with the version, from one snapshot.
async fn snapshot(pool: &PgPool, keys: &Keys) -> Result<Snapshot> {
    let (mut tx, version) = begin_snapshot(pool).await?;
    let email_keys: Vec<String> = keys.emails.iter().cloned().collect();
    let domain_keys: Vec<String> = keys.domains.iter().cloned().collect();
    let ip_keys: Vec<IpNet> = keys.ips.iter().copied().collect();
    let emails = matchable_rows(
        &mut tx,
        EntryKind::Email,
        // A semi-join rather than `= ANY($1)`: an import recompiles 100,000 keys at once, which a
        // hash join handles in one pass.
        "e.address IN (SELECT unnest($1::text[]))",
        KeyBind::Texts(&email_keys),
    )
    .await?;
    let domains = matchable_rows(
        &mut tx,
        EntryKind::Domain,
        "e.name IN (SELECT unnest($1::text[]))",
        KeyBind::Texts(&domain_keys),
    )
    .await?;
    let ips = matchable_rows(
        &mut tx,
        EntryKind::Ip,
        "e.network = ANY($1::cidr[])",
        KeyBind::Nets(&ip_keys),
    )
    .await?;
    tx.commit().await?;
    Ok(Snapshot {
        version,
        emails,
        domains,
        ips,
    })
}

impl Cache {
    /// A cache on `redis_url` under `prefix`. Connects lazily, so a Redis that is down at start
    /// does not stop the service: writes go to Postgres and the repair loop catches up.
    pub fn new(redis_url: &str, prefix: &str) -> Result<Cache, redis::RedisError> {
        let client = redis::Client::open(redis_url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            // Generous enough for a pipeline of a whole batch on a busy Redis; an unreachable
            // Redis fails fast through the connection timeout instead.
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        let layout = KeyLayout::new(prefix);
        Ok(Cache {
            writer: Writer::new(conn.clone(), layout.clone()),
            reader: Reader::new(conn, layout),
            dirty: Arc::new(AtomicBool::new(false)),
        })
    }

    pub fn prefix(&self) -> &str {
        self.layout().prefix()
    }

    /// The names of the compiled lookups under this cache's prefix.
    pub fn layout(&self) -> &KeyLayout {
        self.writer.layout()
    }

    /// Makes the repair loop rebuild everything at its next check.
    pub fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::SeqCst);
    }

    /// True when Redis may lack changes (a recompile failed) until the next rebuild.
    pub fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::SeqCst)
    }

    /// Recompiles `keys` after a committed change. Never fails the caller: Postgres is the
    /// system of record, so a Redis problem is logged and repaired later.
    pub async fn recompile(&self, pool: &PgPool, keys: &Keys) {
        if keys.is_empty() {
            return;
        }
        if let Err(error) = self.try_recompile(pool, keys).await {
            tracing::warn!(%error, "could not recompile the sender cache; it is marked dirty and will be rebuilt when Redis answers");
            self.dirty.store(true, Ordering::SeqCst);
        }
    }

    async fn try_recompile(&self, pool: &PgPool, keys: &Keys) -> Result<()> {
        let snap = snapshot(pool, keys).await?;
        let mut writes = Vec::new();
        let found: HashMap<&str, &EntryRow> = snap
            .emails
            .iter()
            .filter_map(|r| r.key.as_deref().map(|k| (k, r)))
            .collect();
        for email in &keys.emails {
            writes.push(
                self.email_write(
                    email,
                    found
                        .get(email.as_str())
                        .map(|r| r.compiled(EntryKind::Email, snap.version)),
                ),
            );
        }
        let found: HashMap<&str, &EntryRow> = snap
            .domains
            .iter()
            .filter_map(|r| r.key.as_deref().map(|k| (k, r)))
            .collect();
        for domain in &keys.domains {
            writes.push(
                self.domain_write(
                    domain,
                    found
                        .get(domain.as_str())
                        .map(|r| r.compiled(EntryKind::Domain, snap.version)),
                ),
            );
        }
        let found: HashMap<IpNet, &EntryRow> = snap
            .ips
            .iter()
            .filter_map(|r| r.network.map(|n| (n, r)))
            .collect();
        for net in &keys.ips {
            writes.push(
                self.ip_write(
                    net,
                    found
                        .get(net)
                        .map(|r| r.compiled(EntryKind::Ip, snap.version)),
                ),
            );
        }
        self.apply(&writes, snap.version).await?;
        self.publish(PolicyCacheInvalidated {
            version: snap.version,
            occur_time: Some(timestamp(chrono::Utc::now())),
            company_id: keys.company_id.clone(),
            email_addresses: keys.emails.iter().cloned().collect(),
            domain_names: keys.domains.iter().cloned().collect(),
            ip_table_changed: !keys.ips.is_empty(),
            full_rebuild: false,
        })
        .await
    }

    fn email_write(&self, email: &str, value: Option<pb::CompiledSender>) -> Write {
        Write::email(self.layout(), email, value.as_ref())
    }

    fn domain_write(&self, domain: &str, value: Option<pb::CompiledSender>) -> Write {
        Write::domain(self.layout(), domain, value.as_ref())
    }

    fn ip_write(&self, net: &IpNet, value: Option<pb::CompiledSender>) -> Write {
        Write::ip(self.layout(), net, value.as_ref())
    }

    /// Runs guarded writes, then raises the version key.
    async fn apply(&self, writes: &[Write], version: u64) -> Result<()> {
        Ok(self.writer.apply(writes, version).await?)
    }

    async fn publish(&self, message: PolicyCacheInvalidated) -> Result<()> {
        Ok(self.writer.publish(&message).await?)
    }

    /// The guarded write that stores a compiled entry row.
    fn row_write(&self, kind: EntryKind, row: &EntryRow, version: u64) -> Option<Write> {
        let compiled = Some(row.compiled(kind, version));
        match kind {
            EntryKind::Email => Some(self.email_write(&row.matched_value(), compiled)),
            EntryKind::Domain => Some(self.domain_write(&row.matched_value(), compiled)),
            EntryKind::Ip => row.network.map(|net| self.ip_write(&net, compiled)),
        }
    }

    /// Reads every matchable entry (of `company`, when given) in the snapshot `tx` through a
    /// cursor, [`FETCH_ROWS`] at a time, and sends each batch compiled to `batches`. Records the
    /// names of the keys (and IP table fields) it compiled in `live`.
    async fn compile_all(
        &self,
        tx: &mut sqlx::PgConnection,
        company: Option<Uuid>,
        version: u64,
        batches: tokio::sync::mpsc::Sender<Vec<Write>>,
        live: &mut Live,
    ) -> Result<u64> {
        // A cursor is planned for its first rows unless told otherwise; the rebuild reads all.
        sqlx::query("SET LOCAL cursor_tuple_fraction = 1.0")
            .execute(&mut *tx)
            .await?;
        let filter = match company {
            // A uuid's text form is hex and dashes only, so it can be spelled as a literal.
            Some(id) => format!("e.company_id = '{id}'::uuid"),
            None => "TRUE".to_owned(),
        };
        let mut written = 0u64;
        for kind in [EntryKind::Email, EntryKind::Domain, EntryKind::Ip] {
            let cursor = format!("rebuild_{}", kind.table());
            let declare = format!(
                "DECLARE {cursor} NO SCROLL CURSOR FOR {} WHERE {} AND {filter}",
                select_sql(kind),
                matchable_sql(kind)
            );
            sqlx::query(&declare)
                .persistent(false)
                .execute(&mut *tx)
                .await?;
            let fetch = format!("FETCH {FETCH_ROWS} FROM {cursor}");
            loop {
                let rows: Vec<EntryRow> = sqlx::query_as(&fetch)
                    .persistent(false)
                    .fetch_all(&mut *tx)
                    .await?;
                if rows.is_empty() {
                    break;
                }
                let writes: Vec<Write> = rows
                    .iter()
                    .filter_map(|row| self.row_write(kind, row, version))
                    .collect();
                for write in &writes {
                    live.record(write);
                }
                written += writes.len() as u64;
                if batches.send(writes).await.is_err() {
                    // The writer stopped on an error, which it reports.
                    return Ok(written);
                }
            }
            let close = format!("CLOSE {cursor}");
            sqlx::query(&close)
                .persistent(false)
                .execute(&mut *tx)
                .await?;
        }
        Ok(written)
    }

    /// Restores Redis from Postgres: every matchable entry (of `company`, when given) is written
    /// and keys that Postgres no longer backs are removed.
    ///
    /// The entries are streamed from one REPEATABLE READ snapshot and written while the next
    /// batch is read, so memory stays flat and Postgres and Redis work at the same time.
    pub async fn rebuild(
        &self,
        pool: &PgPool,
        company: Option<(Uuid, String)>,
    ) -> Result<RebuildStats> {
        let started = Instant::now();
        let (mut tx, version) = begin_snapshot(pool).await?;
        let mut live = Live::default();
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<Vec<Write>>(QUEUED_BATCHES);
        let read = self.compile_all(
            &mut tx,
            company.as_ref().map(|c| c.0),
            version,
            sender,
            &mut live,
        );
        let write = async {
            while let Some(batch) = receiver.recv().await {
                if let Err(error) = self.writer.write_all(&batch, version).await {
                    // Dropping the receiver stops the reader at its next batch.
                    receiver.close();
                    return Err(error);
                }
            }
            Ok(())
        };
        let (read, write) = tokio::join!(read, write);
        write?;
        let keys_written = read?;
        tx.commit().await?;
        self.writer.raise_version(version).await?;

        // Stale keys: present in Redis, absent from the snapshot (and, for a company rebuild,
        // compiled for that company).
        let company_id = company.as_ref().map(|c| c.1.as_str());
        let stale = self.writer.stale_writes(&live, company_id).await?;
        let keys_removed = stale.len() as u64;
        self.apply(&stale, version).await?;
        self.publish(PolicyCacheInvalidated {
            version,
            occur_time: Some(timestamp(chrono::Utc::now())),
            company_id: company_id.unwrap_or_default().to_owned(),
            email_addresses: Vec::new(),
            domain_names: Vec::new(),
            ip_table_changed: true,
            full_rebuild: true,
        })
        .await?;
        if company.is_none() {
            self.dirty.store(false, Ordering::SeqCst);
        }
        Ok(RebuildStats {
            keys_written,
            keys_removed,
            version,
            duration: started.elapsed(),
        })
    }

    /// Whether Redis misses changes: dirty, its version key is missing (flushed or replaced), or
    /// it is still behind the Postgres version seen one check earlier. Comparing with the
    /// *previous* check ignores the milliseconds in which a just-committed write is still being
    /// recompiled, which would otherwise trigger needless full rebuilds on a busy system.
    async fn needs_rebuild(
        &self,
        pool: &PgPool,
        previous_db_version: &mut Option<u64>,
    ) -> Result<bool> {
        let db_version = crate::store::current_version(pool).await?;
        let seen_before = previous_db_version.replace(db_version);
        if self.is_dirty() {
            return Ok(true);
        }
        let in_redis = self.reader.version().await?;
        Ok(match (in_redis, seen_before) {
            (None, _) => true,
            (Some(redis), Some(before)) => redis < before,
            (Some(_), None) => false,
        })
    }

    /// Checks every `interval` whether Redis needs a rebuild (after an outage or a flush) and
    /// runs it. Ends when `stop` resolves.
    pub async fn repair_loop(
        self,
        pool: PgPool,
        interval: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        let mut previous_db_version = None;
        loop {
            match self.needs_rebuild(&pool, &mut previous_db_version).await {
                Ok(true) => match self.rebuild(&pool, None).await {
                    Ok(stats) => tracing::info!(
                        keys_written = stats.keys_written,
                        keys_removed = stats.keys_removed,
                        version = stats.version,
                        "sender cache rebuilt"
                    ),
                    Err(error) => {
                        self.dirty.store(true, Ordering::SeqCst);
                        tracing::warn!(%error, "sender cache rebuild failed; will retry");
                    }
                },
                Ok(false) => {}
                // Redis (or Postgres) unreachable: writes meanwhile mark the cache dirty
                // themselves, so the next successful check rebuilds.
                Err(error) => tracing::debug!(%error, "sender cache check failed; will retry"),
            }
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// Resolves a sender from Redis with the reader ingest uses (`email2sms-sender-index`), so
    /// the tests compare what ingest would find with `ResolveSender`.
    pub async fn resolve_from_redis(
        &self,
        from: &email2sms_domain::EmailAddress,
        client_ip: IpAddr,
    ) -> Result<Option<pb::CompiledSender>> {
        let resolved = self.reader.resolve(from, client_ip).await?;
        Ok(resolved.sender.map(Arc::unwrap_or_clone))
    }
}
