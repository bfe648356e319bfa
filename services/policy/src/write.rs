//! The one write path of everything the sender cache compiles: begin, apply, bump the compile
//! version, commit, recompile the changed keys (which announces the new version on the
//! invalidation channel, see [`Cache::recompile`]). Every RPC and event that changes an entry, a
//! policy, a messenger user or a company goes through [`PolicyWrite`], so the version is bumped in
//! the transaction that made the change and the cache is recompiled only after that commit.
//!
//! The version bump is also the writers' serialisation point: `cache_version` is one row, so its
//! `UPDATE` holds a row lock from the bump to the commit, and a second writer's bump waits for the
//! first writer's commit. Where a write reads the keys it must recompile from rows other writers
//! may be changing (other companies' addresses at a deleted domain, say), it bumps first with
//! [`PolicyWrite::bump_version`] and reads after: under READ COMMITTED the read then sees every
//! write that committed before it, and every later writer sees this one's commit when it
//! recompiles. A write that does not bump itself is bumped by [`PolicyWrite::commit`], just
//! before the commit, so no committed change can miss its bump.
//!
//! What [`PolicyWrite`] does not do, callers do in the open: an early `return` (an idempotent
//! retry, a NOT_FOUND) drops it, which rolls the transaction back without a bump.

use std::ops::{Deref, DerefMut};

use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::cache::{Cache, Keys};
use crate::entries::EntryKind;
use crate::error::{Error, Result};
use crate::store::{self, CompanyRef};

/// A write transaction of the policy data, finished by [`commit`](Self::commit) (or one of its
/// variants) or rolled back when dropped.
#[derive(Debug)]
pub(crate) struct PolicyWrite<'a> {
    tx: Transaction<'static, Postgres>,
    pool: &'a PgPool,
    cache: &'a Cache,
    /// The compile version this transaction bumped to, once it has.
    version: Option<u64>,
}

impl<'a> PolicyWrite<'a> {
    pub(crate) async fn begin(pool: &'a PgPool, cache: &'a Cache) -> Result<PolicyWrite<'a>> {
        Ok(PolicyWrite {
            tx: pool.begin().await?,
            pool,
            cache,
            version: None,
        })
    }

    /// Bumps the compile version now, taking the version lock, for a write that reads its keys
    /// under it (see the module comment). Bumping twice in one transaction is one bump.
    pub(crate) async fn bump_version(&mut self) -> Result<u64> {
        if let Some(version) = self.version {
            return Ok(version);
        }
        let version = store::bump_version(&mut self.tx).await?;
        self.version = Some(version);
        Ok(version)
    }

    /// Bumps the version unless the write already did, commits, and recompiles `keys`.
    pub(crate) async fn commit(self, keys: &Keys) -> Result<()> {
        self.commit_before_recompile().await?.recompile(keys).await;
        Ok(())
    }

    /// [`commit`](Self::commit) in two steps, for a caller that times the commit apart from the
    /// recompile (CommitImport logs both).
    pub(crate) async fn commit_before_recompile(mut self) -> Result<Committed<'a>> {
        self.bump_version().await?;
        self.tx.commit().await?;
        Ok(Committed {
            pool: self.pool,
            cache: self.cache,
        })
    }

    /// [`commit`](Self::commit) for a change of the domain `name` of `company`, whose email
    /// entries at it, of every company, are recompiled with it (they are blocked while another
    /// company has the domain verified). `changed` is false for an answer of the verification
    /// service that changed nothing (an older state): then there is no bump, but the domain is
    /// still recompiled from what is stored.
    ///
    /// The addresses are read after the commit, on a connection of their own, so a failure to
    /// read them cannot undo the committed change: the cache is marked for a full rebuild instead.
    pub(crate) async fn commit_domain(
        mut self,
        company: &CompanyRef,
        name: &str,
        changed: bool,
    ) -> Result<()> {
        if changed {
            self.bump_version().await?;
        }
        self.tx.commit().await?;
        recompile_domain_name(self.pool, self.cache, company, name).await;
        Ok(())
    }

    /// Commits what the write recorded of a refused request (the conflict refusals of
    /// [`crate::tenancy::refuse`], which must outlive it) without a bump, since nothing the cache
    /// compiles changed, and answers `error`.
    pub(crate) async fn refuse<T>(self, error: Error) -> Result<T> {
        self.tx.commit().await?;
        Err(error)
    }

    /// Commits a write that changed nothing the cache compiles (a new security policy has no
    /// entries yet): no bump, no recompile.
    pub(crate) async fn commit_uncompiled(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }
}

/// A committed [`PolicyWrite`] whose keys are still to be recompiled.
#[must_use = "the committed change reaches the cache only through recompile"]
#[derive(Debug)]
pub(crate) struct Committed<'a> {
    pool: &'a PgPool,
    cache: &'a Cache,
}

impl Committed<'_> {
    pub(crate) async fn recompile(self, keys: &Keys) {
        self.cache.recompile(self.pool, keys).await;
    }
}

impl Deref for PolicyWrite<'_> {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl DerefMut for PolicyWrite<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}

/// Recompiles the domain and every company's email entries at it, read now.
async fn recompile_domain_name(pool: &PgPool, cache: &Cache, company: &CompanyRef, name: &str) {
    let mut keys = Keys::for_company(&company.public_id);
    keys.add(EntryKind::Domain, Some(name), None);
    let found = match pool.acquire().await {
        Ok(mut conn) => store::add_emails_at_domains(&mut conn, &mut keys).await,
        Err(error) => Err(error.into()),
    };
    if let Err(error) = found {
        // Without the addresses the repair loop's full rebuild has to catch up.
        tracing::warn!(%error, domain = name, "could not list the email entries at a changed domain; rebuilding the cache later");
        cache.mark_dirty();
    }
    cache.recompile(pool, &keys).await;
}

impl crate::PolicyApi {
    /// A [`PolicyWrite`] on this server's database and cache.
    pub(crate) async fn begin_write(&self) -> Result<PolicyWrite<'_>> {
        PolicyWrite::begin(&self.pool, &self.cache).await
    }
}
