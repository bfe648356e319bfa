//! Domain entries, every RPC of them: Get, List, Allocate and Delete (with
//! [`crate::entry_crud`]'s shared steps), and those that need the verification service:
//! CreateDomain (asks for a challenge), VerifyDomain (CheckNow), RotateDomainToken, the challenge
//! drop on delete and the recent checks of GetDomain. Calls go one way, policy → verification;
//! state changes come back as events ([`crate::events`]) and as the answers of these calls,
//! mirrored through the same [`apply_challenge`] so that neither can roll the other back.

use std::time::Duration;

use email2sms_proto::policy::v1 as pb;
use email2sms_proto::tonic::service::interceptor::InterceptedService;
use email2sms_proto::tonic::transport::{Channel, Endpoint};
use email2sms_proto::verification::v1 as vpb;
use email2sms_proto::verification::v1::VerificationState;
use email2sms_proto::verification::v1::verification_service_client::VerificationServiceClient;
use email2sms_runtime::auth::BearerToken;
use prost::Message;
use uuid::Uuid;

use crate::PolicyApi;
use crate::entries::{EntryKind, EntryRow};
use crate::entry_crud::{Removed, commit_entry, remove_entry, replayed};
use crate::entry_lists::{EntryFilters, list_entries};
use crate::error::{Error, Result};
use crate::events::{ChallengeUpdate, apply_challenge};
use crate::model::{parse_id, parse_opt_id, parse_request_id, verification_state_text};
use crate::store::{self, CompanyRef, Idempotency, request_hash};
use crate::tenancy::{self, ConflictKind};

/// How long one verification call may take. CheckNow runs a DNS lookup, so it gets more.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// The verification service's client, authenticated with this service's token.
#[derive(Debug, Clone)]
pub struct VerificationClient {
    inner: VerificationServiceClient<InterceptedService<Channel, BearerToken>>,
}

impl VerificationClient {
    /// A client of `url` that connects on first use, so that a verification service that is
    /// down at start only affects the RPCs that need it.
    pub fn new(url: &str, token: Option<&str>) -> Result<VerificationClient, String> {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(2));
        let token = BearerToken::new(token).map_err(|e| e.to_string())?;
        Ok(VerificationClient {
            inner: VerificationServiceClient::with_interceptor(endpoint.connect_lazy(), token),
        })
    }

    fn request<T>(message: T, timeout: Duration) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(timeout);
        request
    }
}

impl PolicyApi {
    pub(crate) async fn get_domain(
        &self,
        request: pb::GetDomainRequest,
    ) -> Result<pb::GetDomainResponse> {
        let (company, row) = self
            .get_entry(
                EntryKind::Domain,
                &request.company_id,
                "domain_id",
                &request.domain_id,
            )
            .await?;
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
            self,
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
            return Err(Error::NotFound(EntryKind::Domain.what()));
        }
        let row = commit_entry(tx, EntryKind::Domain, &company, id, None).await?;
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
        let Removed { mut keys, key } =
            remove_entry(&mut tx, EntryKind::Domain, &company, id).await?;
        let name = key.unwrap_or_default();
        // Bumped before the addresses are read, so that they are read under the version lock.
        tx.bump_version().await?;
        // A verified domain gone unblocks other companies' addresses at it.
        store::add_emails_at_domains(&mut tx, &mut keys).await?;
        tx.commit(&keys).await?;
        self.drop_challenge(&company, &name).await;
        Ok(pb::DeleteDomainResponse {})
    }

    fn verification(&self) -> Result<VerificationClient> {
        self.verification.clone().ok_or(Error::Unimplemented(
            "the verification service is not configured for this server",
        ))
    }

    pub(crate) async fn create_domain(
        &self,
        request: pb::CreateDomainRequest,
    ) -> Result<pb::CreateDomainResponse> {
        let request_id = parse_request_id(&request.request_id)?;
        let hash = request_hash(&request.encode_to_vec());
        let policy = parse_id("security_policy_id", &request.security_policy_id)?;
        let user = parse_opt_id("forwarding_user_id", &request.forwarding_user_id)?;
        if request.domain_name.trim().is_empty() {
            return Err(Error::required("domain_name"));
        }
        let name = email2sms_domain::DomainName::parse(request.domain_name.trim())
            .map_err(|e| Error::invalid("domain_name", e.code(), e.to_string()))?;
        let idempotency = request_id.map(|request_id| Idempotency {
            method: "CreateDomain",
            request_id,
            hash,
        });

        // Before asking for a challenge, refuse what would fail anyway, without holding a
        // transaction open across the call.
        let company = {
            let mut tx = self.begin_write().await?;
            let company = store::company(&mut tx, &request.company_id).await?;
            if let Some(row) =
                replayed(&mut tx, EntryKind::Domain, &company, idempotency.as_ref()).await?
            {
                return Ok(pb::CreateDomainResponse {
                    domain: Some(row.to_domain()),
                });
            }
            let kind: Option<String> = sqlx::query_scalar(
                "SELECT sent_from FROM security_policies WHERE company_id = $1 AND id = $2",
            )
            .bind(company.id)
            .bind(policy)
            .fetch_optional(&mut *tx)
            .await?;
            if kind.as_deref() != Some("domain") {
                return Err(Error::invalid(
                    "security_policy_id",
                    "NOT_FOUND_IN_COMPANY",
                    "no Domains security policy with this id exists in this company",
                ));
            }
            self.tenancy.check_budget(&mut tx, &company).await?;
            let (own, verified_elsewhere): (bool, bool) = sqlx::query_as(
                "SELECT bool_or(company_id = $1) IS TRUE,
                        bool_or(company_id <> $1 AND state = 'verified') IS TRUE
                   FROM domains WHERE name = $2",
            )
            .bind(company.id)
            .bind(name.as_str())
            .fetch_one(&mut *tx)
            .await?;
            if own {
                return Err(Error::AlreadyExists(
                    "this domain is already registered in this company".into(),
                ));
            }
            if verified_elsewhere {
                let error =
                    tenancy::refuse(&mut tx, &company, ConflictKind::Domain, name.as_str()).await?;
                return tx.refuse(error).await;
            }
            company
        };

        // Idempotent on the verification side: a retry gets the same token.
        let mut client = self.verification()?;
        let challenge = client
            .inner
            .create_challenge(VerificationClient::request(
                vpb::CreateChallengeRequest {
                    company_id: company.public_id.clone(),
                    domain_name: name.as_str().to_owned(),
                },
                CALL_TIMEOUT,
            ))
            .await
            .map_err(Error::Verification)?
            .into_inner()
            .challenge
            .ok_or_else(|| Error::Internal("CreateChallenge answered no challenge".into()))?;
        let update = ChallengeUpdate::from_challenge(&challenge)?;

        let mut tx = self.begin_write().await?;
        if let Some(row) =
            replayed(&mut tx, EntryKind::Domain, &company, idempotency.as_ref()).await?
        {
            return Ok(pb::CreateDomainResponse {
                domain: Some(row.to_domain()),
            });
        }
        let id: Uuid = sqlx::query_scalar(
            "INSERT INTO domains (company_id, policy_id, name, forwarding_user_id)
             VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(company.id)
        .bind(policy)
        .bind(name.as_str())
        .bind(user)
        .fetch_one(&mut *tx)
        .await?;
        apply_challenge(&mut tx, company.id, name.as_str(), &update).await?;
        if let Some(key) = &idempotency {
            key.store(&mut tx, company.id, id).await?;
        }
        tx.bump_version().await?;
        let row = store::entry(&mut tx, EntryKind::Domain, company.id, id, "domain").await?;
        tx.commit_domain(&company, name.as_str(), true).await?;
        Ok(pb::CreateDomainResponse {
            domain: Some(row.to_domain()),
        })
    }

    /// The domain's company and name, for the verification calls.
    async fn domain_name_of(
        &self,
        company_id: &str,
        domain_id: &str,
    ) -> Result<(CompanyRef, String, Uuid)> {
        let id = parse_id("domain_id", domain_id)?;
        let mut conn = self.pool.acquire().await?;
        let company = store::company(&mut conn, company_id).await?;
        let name: String =
            sqlx::query_scalar("SELECT name FROM domains WHERE company_id = $1 AND id = $2")
                .bind(company.id)
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?
                .ok_or(Error::NotFound("domain"))?;
        Ok((company, name, id))
    }

    /// Mirrors `challenge` into the domain entry, recompiles and returns the entry.
    async fn mirror(
        &self,
        company: &CompanyRef,
        name: &str,
        id: Uuid,
        challenge: &vpb::Challenge,
    ) -> Result<pb::Domain> {
        let update = ChallengeUpdate::from_challenge(challenge)?;
        let mut tx = self.begin_write().await?;
        let (outcome, _) = apply_challenge(&mut tx, company.id, name, &update).await?;
        let applied = outcome == crate::events::EventOutcome::Applied;
        if applied {
            tx.bump_version().await?;
        }
        let row = store::entry(&mut tx, EntryKind::Domain, company.id, id, "domain").await?;
        tx.commit_domain(company, name, applied).await?;
        Ok(row.to_domain())
    }

    pub(crate) async fn verify_domain(
        &self,
        request: pb::VerifyDomainRequest,
    ) -> Result<pb::VerifyDomainResponse> {
        let (company, name, id) = self
            .domain_name_of(&request.company_id, &request.domain_id)
            .await?;
        let mut client = self.verification()?;
        let answer = client
            .inner
            .check_now(VerificationClient::request(
                vpb::CheckNowRequest {
                    company_id: company.public_id.clone(),
                    domain_name: name.clone(),
                },
                CHECK_TIMEOUT,
            ))
            .await
            .map_err(Error::Verification)?
            .into_inner();
        let challenge = answer
            .challenge
            .ok_or_else(|| Error::Internal("CheckNow answered no challenge".into()))?;
        let domain = self.mirror(&company, &name, id, &challenge).await?;
        Ok(pb::VerifyDomainResponse {
            domain: Some(domain),
            check: answer.check,
        })
    }

    pub(crate) async fn rotate_domain_token(
        &self,
        request: pb::RotateDomainTokenRequest,
    ) -> Result<pb::RotateDomainTokenResponse> {
        let (company, name, id) = self
            .domain_name_of(&request.company_id, &request.domain_id)
            .await?;
        let mut client = self.verification()?;
        let challenge = client
            .inner
            .rotate_challenge(VerificationClient::request(
                vpb::RotateChallengeRequest {
                    company_id: company.public_id.clone(),
                    domain_name: name.clone(),
                },
                CALL_TIMEOUT,
            ))
            .await
            .map_err(Error::Verification)?
            .into_inner()
            .challenge
            .ok_or_else(|| Error::Internal("RotateChallenge answered no challenge".into()))?;
        Ok(pb::RotateDomainTokenResponse {
            domain: Some(self.mirror(&company, &name, id, &challenge).await?),
        })
    }

    /// The recent DNS checks of a domain, newest first, from the verification service.
    pub(crate) async fn recent_checks(
        &self,
        company: &CompanyRef,
        name: &str,
    ) -> Result<Vec<vpb::Check>> {
        let mut client = self.verification()?;
        Ok(client
            .inner
            .get_status(VerificationClient::request(
                vpb::GetStatusRequest {
                    company_id: company.public_id.clone(),
                    domain_name: name.to_owned(),
                    check_history_limit: 10,
                },
                CALL_TIMEOUT,
            ))
            .await
            .map_err(Error::Verification)?
            .into_inner()
            .recent_checks)
    }

    /// Drops the challenge of a deleted domain so that verification stops polling it. Best
    /// effort: the entry is already gone, and events for it are ignored as unknown.
    pub(crate) async fn drop_challenge(&self, company: &CompanyRef, name: &str) {
        let Ok(mut client) = self.verification() else {
            return;
        };
        if let Err(status) = client
            .inner
            .delete_challenge(VerificationClient::request(
                vpb::DeleteChallengeRequest {
                    company_id: company.public_id.clone(),
                    domain_name: name.to_owned(),
                },
                CALL_TIMEOUT,
            ))
            .await
        {
            tracing::warn!(domain = name, status = ?status, "could not drop the verification challenge of a deleted domain");
        }
    }
}
