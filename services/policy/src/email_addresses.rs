//! Email address entries: mail "Sent From" one address. Get, List, Delete and the ends of Create
//! and Update are [`crate::entry_crud`]'s, shared with the other kinds; what is the email kind's
//! own is the address rule, the revival of a deleted address, and the claim an enabled entry
//! makes on its address (checked against other companies on create and on enabling).

use email2sms_proto::policy::v1 as pb;
use prost::Message;
use uuid::Uuid;

use crate::PolicyApi;
use crate::entries::{EntryKind, EntryRow};
use crate::entry_crud::{commit_entry, replayed};
use crate::entry_lists::{EntryFilters, list_entries};
use crate::error::{Error, Result};
use crate::model::{parse_id, parse_opt_id, parse_request_id, update_paths};
use crate::store::{self, Idempotency, request_hash};
use crate::tenancy::{self, ConflictKind};

fn parse_address(field: &str, value: &str) -> Result<String> {
    if value.trim().is_empty() {
        return Err(Error::required(field));
    }
    email2sms_domain::EmailAddress::parse(value.trim())
        .map(|a| a.as_str().to_owned())
        .map_err(|e| Error::invalid(field, e.code(), e.to_string()))
}

impl PolicyApi {
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
        if let Some(row) =
            replayed(&mut tx, EntryKind::Email, &company, idempotency.as_ref()).await?
        {
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
        let row = commit_entry(tx, EntryKind::Email, &company, id, idempotency.as_ref()).await?;
        Ok(pb::CreateEmailAddressResponse {
            email_address: Some(row.to_email()),
        })
    }

    pub(crate) async fn get_email_address(
        &self,
        request: pb::GetEmailAddressRequest,
    ) -> Result<pb::GetEmailAddressResponse> {
        let (_, row) = self
            .get_entry(
                EntryKind::Email,
                &request.company_id,
                "email_address_id",
                &request.email_address_id,
            )
            .await?;
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
            self,
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
            return Err(Error::NotFound(EntryKind::Email.what()));
        }
        let row = commit_entry(tx, EntryKind::Email, &company, id, None).await?;
        Ok(pb::UpdateEmailAddressResponse {
            email_address: Some(row.to_email()),
        })
    }

    pub(crate) async fn delete_email_address(
        &self,
        request: pb::DeleteEmailAddressRequest,
    ) -> Result<pb::DeleteEmailAddressResponse> {
        self.delete_entry(
            EntryKind::Email,
            &request.company_id,
            "email_address_id",
            &request.email_address_id,
        )
        .await?;
        Ok(pb::DeleteEmailAddressResponse {})
    }
}
