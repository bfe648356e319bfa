//! Who may send: the compiled sender lookups, read in-process cache → Redis → the policy
//! service's `ResolveSender`, in that order, so one slow or dead dependency never stops mail that
//! another one can decide.
//!
//! The Redis side is `email2sms-sender-index`, the library the policy service writes it with: its
//! key layout, value encoding and resolution order ([`email2sms_sender_index::resolve`]); this
//! module only puts the in-process cache in front of its reader and the policy service behind it.
//! DESIGN.md asks the policy service on a Redis miss too: that is done when Redis has no
//! `P policy:version` (never built or flushed); with compiled data present a miss is final, so
//! unknown senders cannot turn every spam message into a Postgres query.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use email2sms_domain::{DomainName, EmailAddress};
use email2sms_proto::policy::v1::sender_resolution_service_client::SenderResolutionServiceClient;
use email2sms_proto::policy::v1::{CompiledSender, ResolveSenderRequest};
use email2sms_proto::tonic::service::interceptor::InterceptedService;
use email2sms_proto::tonic::transport::{Channel, Endpoint};
use email2sms_runtime::auth::BearerToken;
use email2sms_sender_index::{IpTable, KeyLayout, Lookups, Reader};
use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::error::IngestError;

/// Which lookup answered, for the Diagnose evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Memory,
    Redis,
    PolicyService,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Memory => "in-process cache",
            Source::Redis => "Redis",
            Source::PolicyService => "the policy service (ResolveSender)",
        }
    }
}

/// The answer of a lookup: the matched entry (ready or not), or none.
#[derive(Debug, Clone)]
pub struct Resolution {
    pub sender: Option<Arc<CompiledSender>>,
    pub source: Source,
    /// The keys tried, in order, for Diagnose.
    pub tried: Vec<String>,
}

#[derive(Clone)]
enum Cached {
    Entry(Option<Arc<CompiledSender>>),
    IpTable(Arc<IpTable>),
}

type ResolverClient = SenderResolutionServiceClient<InterceptedService<Channel, BearerToken>>;

/// The lookup chain. Cheap to clone.
#[derive(Clone)]
pub struct PolicyLookup {
    cache: moka::future::Cache<String, Cached>,
    reader: Reader,
    resolver: ResolverClient,
}

impl std::fmt::Debug for PolicyLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyLookup")
            .field("prefix", &self.prefix())
            .finish_non_exhaustive()
    }
}

impl PolicyLookup {
    /// Connects lazily to both Redis and the policy service, so either being down at start does
    /// not stop ingest: each lookup tries again.
    pub fn new(
        redis_url: &str,
        prefix: &str,
        policy_url: &str,
        token: Option<&str>,
        ttl: Duration,
    ) -> Result<PolicyLookup, IngestError> {
        let client =
            redis::Client::open(redis_url).map_err(|e| IngestError::setup("REDIS_URL", e))?;
        let config = ConnectionManagerConfig::new()
            // A Redis that does not answer quickly is treated as down: the policy service answers
            // instead, well inside the relay's patience.
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(0);
        let redis = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| IngestError::setup("REDIS_URL", e))?;
        let endpoint = Endpoint::from_shared(policy_url.to_owned())
            .map_err(|e| IngestError::setup("EMAIL2SMS_POLICY_URL", e))?
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(5));
        let token =
            BearerToken::new(token).map_err(|e| IngestError::setup("EMAIL2SMS_API_TOKEN", e))?;
        Ok(PolicyLookup {
            cache: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build(),
            reader: Reader::new(redis, KeyLayout::new(prefix)),
            resolver: SenderResolutionServiceClient::with_interceptor(
                endpoint.connect_lazy(),
                token,
            ),
        })
    }

    pub fn prefix(&self) -> &str {
        self.reader.layout().prefix()
    }

    /// A Redis connection for ingest's own keys (dedupe, sender log).
    pub fn redis(&self) -> ConnectionManager {
        self.reader.connection()
    }

    /// Drops everything cached in this process (the policy service announced a change).
    pub fn invalidate_all(&self) {
        self.cache.invalidate_all();
    }

    /// Resolves `from` (normalised address) sent from `ip`: email entry, then the exact verified
    /// domain, then the longest IP prefix. Not-ready entries are returned, not skipped, so the
    /// refusal can say why.
    pub async fn resolve(
        &self,
        from: &EmailAddress,
        ip: IpAddr,
    ) -> Result<Resolution, IngestError> {
        match self.ask_redis(from, ip).await {
            Ok(Some(resolution)) => Ok(resolution),
            Ok(None) => {
                self.ask_policy_service(from, ip, "Redis holds no compiled sender rules".into())
                    .await
            }
            Err(error) => {
                tracing::warn!(%error, "Redis cannot answer the sender lookup; asking the policy service");
                self.ask_policy_service(from, ip, error.to_string()).await
            }
        }
    }

    /// `Ok(None)`: Redis answered but holds no compiled data at all (flushed, replaced, or not
    /// built yet), so its miss proves nothing and the policy service must decide. Damaged data
    /// (an undecodable value, a domain key holding another domain's entry) is an error too: the
    /// policy service answers from Postgres instead.
    async fn ask_redis(
        &self,
        from: &EmailAddress,
        ip: IpAddr,
    ) -> Result<Option<Resolution>, email2sms_sender_index::Error> {
        let memo = Memoised {
            lookup: self,
            all_memory: AtomicBool::new(true),
        };
        let found = email2sms_sender_index::resolve(&memo, self.reader.layout(), from, ip).await?;
        if found.sender.is_none() && !self.compiled_data_present().await? {
            return Ok(None);
        }
        Ok(Some(Resolution {
            sender: found.sender,
            source: source(memo.all_memory.load(Ordering::Relaxed)),
            tried: found.tried,
        }))
    }

    /// Whether the policy service has compiled into this Redis (`P policy:version` exists). A miss
    /// is authoritative only then; otherwise every unknown sender would be refused while Redis is
    /// being rebuilt. Checked only on a full miss, and cached like the entries, so spam from
    /// unknown senders costs one Redis read per TTL rather than a Postgres query each.
    async fn compiled_data_present(&self) -> Result<bool, email2sms_sender_index::Error> {
        if let Some(Cached::Entry(marker)) = self.cache.get("version").await {
            return Ok(marker.is_some());
        }
        let present = self.reader.has_compiled_data().await?;
        // A present version is remembered as a non-empty marker; absence is not cached, so the
        // first rebuild is noticed at once.
        if present {
            self.cache
                .insert(
                    "version".to_owned(),
                    Cached::Entry(Some(Arc::new(CompiledSender::default()))),
                )
                .await;
        }
        Ok(present)
    }

    async fn ask_policy_service(
        &self,
        from: &EmailAddress,
        ip: IpAddr,
        redis_problem: String,
    ) -> Result<Resolution, IngestError> {
        let mut client = self.resolver.clone();
        let response = client
            .resolve_sender(ResolveSenderRequest {
                from_address: from.as_str().to_owned(),
                client_ip: ip.to_string(),
            })
            .await
            .map_err(|grpc| IngestError::PolicyUnavailable {
                redis: redis_problem.clone(),
                grpc,
            })?;
        Ok(Resolution {
            sender: response.into_inner().sender.map(Arc::new),
            source: Source::PolicyService,
            tried: vec![format!(
                "Redis could not decide ({redis_problem}); asked ResolveSender for {from} from {ip}"
            )],
        })
    }

    /// Follows the invalidation channel for as long as the process runs, reconnecting after
    /// failures. Any message clears the whole in-process cache: entries live for seconds anyway,
    /// and a full clear cannot miss a key the message format might add later.
    pub async fn follow_invalidations(self, redis_url: String) {
        let channel = self.reader.layout().invalidations();
        loop {
            match subscribe(&redis_url, &channel).await {
                Ok(mut pubsub) => {
                    // Whatever changed while we were not listening is unknown: start clean.
                    self.invalidate_all();
                    let mut messages = pubsub.on_message();
                    while messages.next().await.is_some() {
                        self.invalidate_all();
                    }
                    tracing::warn!("lost the Redis invalidation channel; reconnecting");
                }
                Err(error) => {
                    tracing::debug!(%error, "cannot subscribe to the Redis invalidation channel");
                }
            }
            // While unsubscribed, the short TTL bounds how stale an answer can be.
            self.invalidate_all();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

async fn subscribe(url: &str, channel: &str) -> redis::RedisResult<redis::aio::PubSub> {
    let client = redis::Client::open(url)?;
    let mut pubsub = tokio::time::timeout(Duration::from_secs(2), client.get_async_pubsub())
        .await
        .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "connect timed out")))??;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

/// The reader behind the in-process cache: each lookup answers from memory when it can, else from
/// Redis, remembering the answer (a miss too) for the TTL.
struct Memoised<'a> {
    lookup: &'a PolicyLookup,
    /// Stays true while every lookup was answered from memory.
    all_memory: AtomicBool,
}

impl Memoised<'_> {
    async fn entry<F>(
        &self,
        key: String,
        read: F,
    ) -> Result<Option<Arc<CompiledSender>>, email2sms_sender_index::Error>
    where
        F: Future<Output = Result<Option<CompiledSender>, email2sms_sender_index::Error>>,
    {
        if let Some(Cached::Entry(entry)) = self.lookup.cache.get(&key).await {
            return Ok(entry);
        }
        self.all_memory.store(false, Ordering::Relaxed);
        let entry = read.await?.map(Arc::new);
        self.lookup
            .cache
            .insert(key, Cached::Entry(entry.clone()))
            .await;
        Ok(entry)
    }
}

impl Lookups for Memoised<'_> {
    type Error = email2sms_sender_index::Error;

    async fn email(
        &self,
        address: &EmailAddress,
    ) -> Result<Option<Arc<CompiledSender>>, Self::Error> {
        self.entry(
            format!("email:{address}"),
            self.lookup.reader.email(address),
        )
        .await
    }

    async fn domain(
        &self,
        domain: &DomainName,
    ) -> Result<Option<Arc<CompiledSender>>, Self::Error> {
        self.entry(
            format!("domain:{domain}"),
            self.lookup.reader.domain(domain),
        )
        .await
    }

    async fn ip_table(&self) -> Result<Arc<IpTable>, Self::Error> {
        if let Some(Cached::IpTable(table)) = self.lookup.cache.get("ip").await {
            return Ok(table);
        }
        self.all_memory.store(false, Ordering::Relaxed);
        let table = Arc::new(self.lookup.reader.ip_table().await?);
        self.lookup
            .cache
            .insert("ip".to_owned(), Cached::IpTable(table.clone()))
            .await;
        Ok(table)
    }
}

fn source(all_memory: bool) -> Source {
    if all_memory {
        Source::Memory
    } else {
        Source::Redis
    }
}
