//! Email address, IP address and domain entries: the sources that may send.

use email2sms_proto::policy::v1 as pb;
use email2sms_proto::verification::v1::VerificationState;
use ipnet::IpNet;
use prost::Message;
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use crate::PolicyApi;
use crate::cache::Keys;
use crate::companies::like_escape;
use crate::entries::{EntryKind, EntryRow, ready_sql, select_sql, visible_sql};
use crate::error::{Error, Result};
use crate::model::{
    cidr_text, page_size, parse_id, parse_network, parse_opt_id, parse_request_id, update_paths,
    verification_state_text,
};
use crate::paging;
use crate::store::{self, Idempotency, request_hash};
use crate::tenancy::{self, ConflictKind};

/// Filters of the three List RPCs, applied over the aliases of [`select_sql`].
#[derive(Debug, Default)]
struct EntryFilters {
    policy: Option<Uuid>,
    forwarding_user: Option<Uuid>,
    ready: Option<bool>,
    import: Option<Uuid>,
    query: String,
    state: Option<&'static str>,
    contains_ip: Option<std::net::IpAddr>,
}

impl EntryFilters {
    /// The filters all three List RPCs share; the kind-specific ones are set on the result.
    fn common(
        security_policy_id: &str,
        forwarding_user_id: &str,
        ready: Option<bool>,
    ) -> Result<EntryFilters> {
        Ok(EntryFilters {
            policy: parse_opt_id("security_policy_id", security_policy_id)?,
            forwarding_user: parse_opt_id("forwarding_user_id", forwarding_user_id)?,
            ready,
            ..EntryFilters::default()
        })
    }

    fn fingerprint(&self) -> String {
        format!("{self:?}")
    }
}

/// The sort expression of each entry kind's list (and page token key).
fn sort_sql(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::Email => "e.address",
        EntryKind::Domain => "e.name",
        EntryKind::Ip => "e.network",
    }
}

/// One page of a company's entries of `kind`, each presented by `present`, and the next page
/// token: the one List path of emails, IP addresses and domains.
async fn list_entries<T>(
    pool: &sqlx::PgPool,
    kind: EntryKind,
    company_id: &str,
    filters: EntryFilters,
    page_size_requested: i32,
    page_token: &str,
    present: fn(&EntryRow) -> T,
) -> Result<(Vec<T>, String)> {
    let limit = page_size(page_size_requested, "page_size")?;
    let fingerprint = filters.fingerprint();
    let after = paging::decode(page_token, &fingerprint)?;
    let mut conn = pool.acquire().await?;
    let company = store::company(&mut conn, company_id).await?;
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(select_sql(kind));
    q.push(" WHERE e.company_id = ").push_bind(company.id);
    q.push(" AND ").push(visible_sql(kind));
    if let Some(policy) = filters.policy {
        q.push(" AND e.policy_id = ").push_bind(policy);
    }
    if let Some(user) = filters.forwarding_user {
        q.push(" AND e.forwarding_user_id = ").push_bind(user);
    }
    if let Some(ready) = filters.ready {
        q.push(if ready { " AND " } else { " AND NOT " })
            .push(ready_sql(kind));
    }
    if let Some(import) = filters.import {
        q.push(" AND e.import_id = ").push_bind(import);
    }
    if !filters.query.is_empty() {
        q.push(" AND ")
            .push(sort_sql(kind))
            .push(" ILIKE ")
            .push_bind(format!("%{}%", like_escape(&filters.query.to_lowercase())));
    }
    if let Some(state) = filters.state {
        q.push(" AND e.state = ").push_bind(state);
    }
    if let Some(ip) = filters.contains_ip {
        q.push(" AND e.network >>= ")
            .push_bind(IpNet::from(ip))
            .push("::inet");
    }
    if let Some(after) = &after {
        q.push(" AND (").push(sort_sql(kind)).push(", e.id) > (");
        q.push_bind(after.key.clone());
        q.push(if kind == EntryKind::Ip {
            "::cidr, "
        } else {
            ", "
        });
        q.push_bind(after.id).push(")");
    }
    q.push(" ORDER BY ")
        .push(sort_sql(kind))
        .push(", e.id LIMIT ")
        .push_bind(limit + 1);
    let rows: Vec<EntryRow> = q.build_query_as().fetch_all(&mut *conn).await?;
    let (rows, next_page_token) =
        paging::finish(rows, limit, &fingerprint, |r| (r.matched_value(), r.id));
    Ok((rows.iter().map(present).collect(), next_page_token))
}

fn parse_address(field: &str, value: &str) -> Result<String> {
    if value.trim().is_empty() {
        return Err(Error::required(field));
    }
    email2sms_domain::EmailAddress::parse(value.trim())
        .map(|a| a.as_str().to_owned())
        .map_err(|e| Error::invalid(field, e.code(), e.to_string()))
}

fn check_description(description: &str) -> Result<String> {
    let description = description.trim();
    if description.chars().count() > 500 {
        return Err(Error::invalid(
            "ip_address.description",
            "TOO_LONG",
            "description is at most 500 characters",
        ));
    }
    Ok(description.to_owned())
}

impl PolicyApi {
    // ----- email addresses ---------------------------------------------------------------

    pub(crate) async fn create_email_address(
        &self,
        request: pb::CreateEmailAddressRequest,
    ) -> Result<pb::CreateEmailAddressResponse> {
        let request_id = parse_request_id(&request.request_id)?;
        let hash = request_hash(&request.encode_to_vec());
        let entry = request
            .email_address
            .ok_or_else(|| Error::required("email_address"))?;
        let policy = parse_id(
            "email_address.security_policy_id",
            &entry.security_policy_id,
        )?;
        let address = parse_address("email_address.email_address", &entry.email_address)?;
        let user = parse_opt_id(
            "email_address.forwarding_user_id",
            &entry.forwarding_user_id,
        )?;

        let mut tx = self.begin_write().await?;
        let company = store::company(&mut tx, &request.company_id).await?;
        let idempotency = request_id.map(|request_id| Idempotency {
            method: "CreateEmailAddress",
            request_id,
            hash,
        });
        if let Some(key) = &idempotency
            && let Some(id) = key.existing(&mut tx, company.id).await?
        {
            let row =
                store::entry(&mut tx, EntryKind::Email, company.id, id, "email address").await?;
            return Ok(pb::CreateEmailAddressResponse {
                email_address: Some(row.to_email()),
            });
        }
        self.tenancy.check_budget(&mut tx, &company).await?;
        // Another company's enabled entry, or its verified domain (all of whose mail is its
        // own): the neutral refusal, recorded against the budget. A disabled entry claims no
        // address, but one at another company's verified domain would show as blocked and so
        // tell whose domain is verified: refused as well.
        let held = if entry.disabled {
            tenancy::domain_verified_elsewhere(&mut tx, company.id, &address).await?
        } else {
            tenancy::email_held_elsewhere(&mut tx, company.id, &address).await?
        };
        if held {
            let error =
                tenancy::refuse(&mut tx, &company, ConflictKind::EmailAddress, &address).await?;
            return tx.refuse(error).await;
        }
        // One row per (company, address): a deleted address is revived rather than duplicated,
        // which keeps imports idempotent. A live row of this company is ALREADY_EXISTS.
        let id: Option<Uuid> = sqlx::query_scalar(
            "INSERT INTO email_addresses (company_id, policy_id, address, forwarding_user_id, disabled)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (company_id, address) DO UPDATE
                SET policy_id = EXCLUDED.policy_id,
                    forwarding_user_id = EXCLUDED.forwarding_user_id,
                    disabled = EXCLUDED.disabled,
                    import_id = NULL, deleted_at = NULL,
                    created_at = now(), updated_at = now()
                WHERE email_addresses.deleted_at IS NOT NULL
             RETURNING id",
        )
        .bind(company.id)
        .bind(policy)
        .bind(&address)
        .bind(user)
        .bind(entry.disabled)
        .fetch_optional(&mut *tx)
        .await?;
        let id = id.ok_or_else(|| {
            Error::AlreadyExists("this email address is already registered in this company".into())
        })?;
        if let Some(key) = &idempotency {
            key.store(&mut tx, company.id, id).await?;
        }
        tx.bump_version().await?;
        let row = store::entry(&mut tx, EntryKind::Email, company.id, id, "email address").await?;
        let mut keys = Keys::for_company(&company.public_id);
        keys.add_row(EntryKind::Email, &row);
        tx.commit(&keys).await?;
        Ok(pb::CreateEmailAddressResponse {
            email_address: Some(row.to_email()),
        })
    }

    pub(crate) async fn get_email_address(
        &self,
        request: pb::GetEmailAddressRequest,
    ) -> Result<pb::GetEmailAddressResponse> {
        let id = parse_id("email_address_id", &request.email_address_id)?;
        let mut conn = self.pool.acquire().await?;
        let company = store::company(&mut conn, &request.company_id).await?;
        let row =
            store::entry(&mut conn, EntryKind::Email, company.id, id, "email address").await?;
        Ok(pb::GetEmailAddressResponse {
            email_address: Some(row.to_email()),
        })
    }

    pub(crate) async fn list_email_addresses(
        &self,
        request: pb::ListEmailAddressesRequest,
    ) -> Result<pb::ListEmailAddressesResponse> {
        let common = EntryFilters::common(
            &request.security_policy_id,
            &request.forwarding_user_id,
            request.ready,
        )?;
        let filters = EntryFilters {
            import: parse_opt_id("import_id", &request.import_id)?,
            query: request.query.clone(),
            ..common
        };
        let (email_addresses, next_page_token) = list_entries(
            &self.pool,
            EntryKind::Email,
            &request.company_id,
            filters,
            request.page_size,
            &request.page_token,
            EntryRow::to_email,
        )
        .await?;
        Ok(pb::ListEmailAddressesResponse {
            email_addresses,
            next_page_token,
        })
    }

    pub(crate) async fn update_email_address(
        &self,
        request: pb::UpdateEmailAddressRequest,
    ) -> Result<pb::UpdateEmailAddressResponse> {
        let paths = update_paths(
            request.update_mask.as_ref(),
            &["forwarding_user_id", "security_policy_id", "disabled"],
        )?;
        let entry = request
            .email_address
            .ok_or_else(|| Error::required("email_address"))?;
        let id = parse_id("email_address.email_address_id", &entry.email_address_id)?;
        let set = |p: &str| paths.contains(&p);
        let user = parse_opt_id(
            "email_address.forwarding_user_id",
            &entry.forwarding_user_id,
        )?;
        let policy = if set("security_policy_id") {
            Some(parse_id(
                "email_address.security_policy_id",
                &entry.security_policy_id,
            )?)
        } else {
            None
        };
        let mut tx = self.begin_write().await?;
        let company = store::company(&mut tx, &request.company_id).await?;
        if set("disabled") && !entry.disabled {
            // Enabling claims the address again: the same check, and budget, as a create.
            let address: Option<String> = sqlx::query_scalar(
                "SELECT address FROM email_addresses
                  WHERE company_id = $1 AND id = $2 AND deleted_at IS NULL AND disabled",
            )
            .bind(company.id)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(address) = address {
                self.tenancy.check_budget(&mut tx, &company).await?;
                if tenancy::email_held_elsewhere(&mut tx, company.id, &address).await? {
                    let error =
                        tenancy::refuse(&mut tx, &company, ConflictKind::EmailAddress, &address)
                            .await?;
                    return tx.refuse(error).await;
                }
            }
        }
        let updated = sqlx::query(
            "UPDATE email_addresses SET
                forwarding_user_id = CASE WHEN $3 THEN $4 ELSE forwarding_user_id END,
                policy_id = coalesce($5, policy_id),
                disabled = CASE WHEN $6 THEN $7 ELSE disabled END,
                updated_at = now()
             WHERE company_id = $1 AND id = $2 AND deleted_at IS NULL",
        )
        .bind(company.id)
        .bind(id)
        .bind(set("forwarding_user_id"))
        .bind(user)
        .bind(policy)
        .bind(set("disabled"))
        .bind(entry.disabled)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(Error::NotFound("email address"));
        }
        tx.bump_version().await?;
        let row = store::entry(&mut tx, EntryKind::Email, company.id, id, "email address").await?;
        let mut keys = Keys::for_company(&company.public_id);
        keys.add_row(EntryKind::Email, &row);
        tx.commit(&keys).await?;
        Ok(pb::UpdateEmailAddressResponse {
            email_address: Some(row.to_email()),
        })
    }

    pub(crate) async fn delete_email_address(
        &self,
        request: pb::DeleteEmailAddressRequest,
    ) -> Result<pb::DeleteEmailAddressResponse> {
        let id = parse_id("email_address_id", &request.email_address_id)?;
        let mut tx = self.begin_write().await?;
        let company = store::company(&mut tx, &request.company_id).await?;
        // Soft delete: the row stays so that re-adding (or re-importing) revives it.
        let address: Option<String> = sqlx::query_scalar(
            "UPDATE email_addresses SET deleted_at = now(), updated_at = now()
             WHERE company_id = $1 AND id = $2 AND deleted_at IS NULL RETURNING address",
        )
        .bind(company.id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let address = address.ok_or(Error::NotFound("email address"))?;
        let mut keys = Keys::for_company(&company.public_id);
        keys.add(EntryKind::Email, Some(&address), None);
        tx.commit(&keys).await?;
        Ok(pb::DeleteEmailAddressResponse {})
    }

    // ----- IP addresses ------------------------------------------------------------------

    pub(crate) async fn create_ip_address(
        &self,
        request: pb::CreateIpAddressRequest,
    ) -> Result<pb::CreateIpAddressResponse> {
        let request_id = parse_request_id(&request.request_id)?;
        let hash = request_hash(&request.encode_to_vec());
        let entry = request
            .ip_address
            .ok_or_else(|| Error::required("ip_address"))?;
        let policy = parse_id("ip_address.security_policy_id", &entry.security_policy_id)?;
        let network = parse_network("ip_address.ip_range", entry.ip_range.trim())?;
        self.tenancy
            .check_network("ip_address.ip_range", &network)?;
        let user = parse_opt_id("ip_address.forwarding_user_id", &entry.forwarding_user_id)?;
        let description = check_description(&entry.description)?;

        let mut tx = self.begin_write().await?;
        let company = store::company(&mut tx, &request.company_id).await?;
        let idempotency = request_id.map(|request_id| Idempotency {
            method: "CreateIpAddress",
            request_id,
            hash,
        });
        if let Some(key) = &idempotency
            && let Some(id) = key.existing(&mut tx, company.id).await?
        {
            let row = store::entry(&mut tx, EntryKind::Ip, company.id, id, "IP address").await?;
            return Ok(pb::CreateIpAddressResponse {
                ip_address: Some(row.to_ip()),
            });
        }
        self.tenancy.check_budget(&mut tx, &company).await?;
        // The network is unique across companies; say which case it is without naming anyone.
        let own: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM ip_addresses WHERE company_id = $1 AND network = $2::cidr)",
        )
        .bind(company.id)
        .bind(network)
        .fetch_one(&mut *tx)
        .await?;
        if own {
            return Err(Error::AlreadyExists(format!(
                "{} is already registered in this company",
                cidr_text(&network)
            )));
        }
        // Equal to or overlapping another company's: the neutral refusal, whichever it is.
        if tenancy::network_held_elsewhere(&mut tx, company.id, network).await? {
            let error = tenancy::refuse(
                &mut tx,
                &company,
                ConflictKind::IpAddress,
                &cidr_text(&network),
            )
            .await?;
            return tx.refuse(error).await;
        }
        let id: Uuid = sqlx::query_scalar(
            "INSERT INTO ip_addresses (company_id, policy_id, network, forwarding_user_id, description)
             VALUES ($1, $2, $3::cidr, $4, $5) RETURNING id",
        )
        .bind(company.id)
        .bind(policy)
        .bind(network)
        .bind(user)
        .bind(&description)
        .fetch_one(&mut *tx)
        .await?;
        if let Some(key) = &idempotency {
            key.store(&mut tx, company.id, id).await?;
        }
        tx.bump_version().await?;
        let row = store::entry(&mut tx, EntryKind::Ip, company.id, id, "IP address").await?;
        let mut keys = Keys::for_company(&company.public_id);
        keys.add_row(EntryKind::Ip, &row);
        tx.commit(&keys).await?;
        Ok(pb::CreateIpAddressResponse {
            ip_address: Some(row.to_ip()),
        })
    }

    pub(crate) async fn get_ip_address(
        &self,
        request: pb::GetIpAddressRequest,
    ) -> Result<pb::GetIpAddressResponse> {
        let id = parse_id("ip_address_id", &request.ip_address_id)?;
        let mut conn = self.pool.acquire().await?;
        let company = store::company(&mut conn, &request.company_id).await?;
        let row = store::entry(&mut conn, EntryKind::Ip, company.id, id, "IP address").await?;
        Ok(pb::GetIpAddressResponse {
            ip_address: Some(row.to_ip()),
        })
    }

    pub(crate) async fn list_ip_addresses(
        &self,
        request: pb::ListIpAddressesRequest,
    ) -> Result<pb::ListIpAddressesResponse> {
        let contains_ip = if request.contains_ip.is_empty() {
            None
        } else {
            Some(
                request
                    .contains_ip
                    .trim()
                    .parse::<std::net::IpAddr>()
                    .map(email2sms_domain::canonical_ip)
                    .map_err(|_| {
                        Error::invalid(
                            "contains_ip",
                            "INVALID_IP",
                            "contains_ip must be one IP address, e.g. 203.0.113.7",
                        )
                    })?,
            )
        };
        let filters = EntryFilters {
            contains_ip,
            ..EntryFilters::common(
                &request.security_policy_id,
                &request.forwarding_user_id,
                request.ready,
            )?
        };
        let (ip_addresses, next_page_token) = list_entries(
            &self.pool,
            EntryKind::Ip,
            &request.company_id,
            filters,
            request.page_size,
            &request.page_token,
            EntryRow::to_ip,
        )
        .await?;
        Ok(pb::ListIpAddressesResponse {
            ip_addresses,
            next_page_token,
        })
    }

    pub(crate) async fn update_ip_address(
        &self,
        request: pb::UpdateIpAddressRequest,
    ) -> Result<pb::UpdateIpAddressResponse> {
        let paths = update_paths(
            request.update_mask.as_ref(),
            &["forwarding_user_id", "description"],
        )?;
        let entry = request
            .ip_address
            .ok_or_else(|| Error::required("ip_address"))?;
        let id = parse_id("ip_address.ip_address_id", &entry.ip_address_id)?;
        let user = parse_opt_id("ip_address.forwarding_user_id", &entry.forwarding_user_id)?;
        let description = check_description(&entry.description)?;
        let set = |p: &str| paths.contains(&p);
        let mut tx = self.begin_write().await?;
        let company = store::company(&mut tx, &request.company_id).await?;
        let updated = sqlx::query(
            "UPDATE ip_addresses SET
                forwarding_user_id = CASE WHEN $3 THEN $4 ELSE forwarding_user_id END,
                description = CASE WHEN $5 THEN $6 ELSE description END,
                updated_at = now()
             WHERE company_id = $1 AND id = $2",
        )
        .bind(company.id)
        .bind(id)
        .bind(set("forwarding_user_id"))
        .bind(user)
        .bind(set("description"))
        .bind(&description)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(Error::NotFound("IP address"));
        }
        tx.bump_version().await?;
        let row = store::entry(&mut tx, EntryKind::Ip, company.id, id, "IP address").await?;
        let mut keys = Keys::for_company(&company.public_id);
        keys.add_row(EntryKind::Ip, &row);
        tx.commit(&keys).await?;
        Ok(pb::UpdateIpAddressResponse {
            ip_address: Some(row.to_ip()),
        })
    }

    pub(crate) async fn delete_ip_address(
        &self,
        request: pb::DeleteIpAddressRequest,
    ) -> Result<pb::DeleteIpAddressResponse> {
        let id = parse_id("ip_address_id", &request.ip_address_id)?;
        let mut tx = self.begin_write().await?;
        let company = store::company(&mut tx, &request.company_id).await?;
        let network: Option<IpNet> = sqlx::query_scalar(
            "DELETE FROM ip_addresses WHERE company_id = $1 AND id = $2 RETURNING network",
        )
        .bind(company.id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let network = network.ok_or(Error::NotFound("IP address"))?;
        let mut keys = Keys::for_company(&company.public_id);
        keys.add(EntryKind::Ip, None, Some(network));
        tx.commit(&keys).await?;
        Ok(pb::DeleteIpAddressResponse {})
    }

    // ----- domains -----------------------------------------------------------------------

    pub(crate) async fn get_domain(
        &self,
        request: pb::GetDomainRequest,
    ) -> Result<pb::GetDomainResponse> {
        let id = parse_id("domain_id", &request.domain_id)?;
        let mut conn = self.pool.acquire().await?;
        let company = store::company(&mut conn, &request.company_id).await?;
        let row = store::entry(&mut conn, EntryKind::Domain, company.id, id, "domain").await?;
        drop(conn);
        // The checks live in the verification service: asked only when requested.
        let recent_checks = if request.include_recent_checks {
            self.recent_checks(&company, &row.matched_value()).await?
        } else {
            Vec::new()
        };
        Ok(pb::GetDomainResponse {
            domain: Some(row.to_domain()),
            recent_checks,
        })
    }

    pub(crate) async fn list_domains(
        &self,
        request: pb::ListDomainsRequest,
    ) -> Result<pb::ListDomainsResponse> {
        let state = VerificationState::try_from(request.verification_state).map_err(|_| {
            Error::invalid(
                "verification_state",
                "UNKNOWN_ENUM",
                "unknown verification_state",
            )
        })?;
        let filters = EntryFilters {
            state: verification_state_text(state),
            query: request.query.clone(),
            ..EntryFilters::common(
                &request.security_policy_id,
                &request.forwarding_user_id,
                request.ready,
            )?
        };
        let (domains, next_page_token) = list_entries(
            &self.pool,
            EntryKind::Domain,
            &request.company_id,
            filters,
            request.page_size,
            &request.page_token,
            EntryRow::to_domain,
        )
        .await?;
        Ok(pb::ListDomainsResponse {
            domains,
            next_page_token,
        })
    }

    pub(crate) async fn allocate_domain(
        &self,
        request: pb::AllocateDomainRequest,
    ) -> Result<pb::AllocateDomainResponse> {
        let id = parse_id("domain_id", &request.domain_id)?;
        let user = parse_opt_id("forwarding_user_id", &request.forwarding_user_id)?;
        let mut tx = self.begin_write().await?;
        let company = store::company(&mut tx, &request.company_id).await?;
        let updated = sqlx::query(
            "UPDATE domains SET forwarding_user_id = $3, updated_at = now()
             WHERE company_id = $1 AND id = $2",
        )
        .bind(company.id)
        .bind(id)
        .bind(user)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(Error::NotFound("domain"));
        }
        tx.bump_version().await?;
        let row = store::entry(&mut tx, EntryKind::Domain, company.id, id, "domain").await?;
        let mut keys = Keys::for_company(&company.public_id);
        keys.add_row(EntryKind::Domain, &row);
        tx.commit(&keys).await?;
        Ok(pb::AllocateDomainResponse {
            domain: Some(row.to_domain()),
        })
    }

    pub(crate) async fn delete_domain(
        &self,
        request: pb::DeleteDomainRequest,
    ) -> Result<pb::DeleteDomainResponse> {
        let id = parse_id("domain_id", &request.domain_id)?;
        let mut tx = self.begin_write().await?;
        let company = store::company(&mut tx, &request.company_id).await?;
        let name: Option<String> = sqlx::query_scalar(
            "DELETE FROM domains WHERE company_id = $1 AND id = $2 RETURNING name",
        )
        .bind(company.id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let name = name.ok_or(Error::NotFound("domain"))?;
        // Bumped before the addresses are read, so that they are read under the version lock.
        tx.bump_version().await?;
        let mut keys = Keys::for_company(&company.public_id);
        keys.add(EntryKind::Domain, Some(&name), None);
        // A verified domain gone unblocks other companies' addresses at it.
        store::add_emails_at_domains(&mut tx, &mut keys).await?;
        tx.commit(&keys).await?;
        self.drop_challenge(&company, &name).await;
        Ok(pb::DeleteDomainResponse {})
    }
}
