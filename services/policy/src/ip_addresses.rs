//! IP address entries: mail from a network (at most /24 or /48, see [`crate::tenancy`]). Get,
//! List, Delete and the ends of Create and Update are [`crate::entry_crud`]'s, shared with the
//! other kinds; what is the IP kind's own is that a network is unique across companies (an
//! overlap with another company's is refused without saying whose) and its description.

use email2sms_proto::policy::v1 as pb;
use prost::Message;
use uuid::Uuid;

use crate::PolicyApi;
use crate::entries::{EntryKind, EntryRow};
use crate::entry_crud::{commit_entry, replayed};
use crate::entry_lists::{EntryFilters, list_entries};
use crate::error::{Error, Result};
use crate::model::{
    cidr_text, parse_id, parse_network, parse_opt_id, parse_request_id, update_paths,
};
use crate::store::{self, Idempotency, request_hash};
use crate::tenancy::{self, ConflictKind};

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
        if let Some(row) = replayed(&mut tx, EntryKind::Ip, &company, idempotency.as_ref()).await? {
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
        let row = commit_entry(tx, EntryKind::Ip, &company, id, idempotency.as_ref()).await?;
        Ok(pb::CreateIpAddressResponse {
            ip_address: Some(row.to_ip()),
        })
    }

    pub(crate) async fn get_ip_address(
        &self,
        request: pb::GetIpAddressRequest,
    ) -> Result<pb::GetIpAddressResponse> {
        let (_, row) = self
            .get_entry(
                EntryKind::Ip,
                &request.company_id,
                "ip_address_id",
                &request.ip_address_id,
            )
            .await?;
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
            self,
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
            return Err(Error::NotFound(EntryKind::Ip.what()));
        }
        let row = commit_entry(tx, EntryKind::Ip, &company, id, None).await?;
        Ok(pb::UpdateIpAddressResponse {
            ip_address: Some(row.to_ip()),
        })
    }

    pub(crate) async fn delete_ip_address(
        &self,
        request: pb::DeleteIpAddressRequest,
    ) -> Result<pb::DeleteIpAddressResponse> {
        self.delete_entry(
            EntryKind::Ip,
            &request.company_id,
            "ip_address_id",
            &request.ip_address_id,
        )
        .await?;
        Ok(pb::DeleteIpAddressResponse {})
    }
}
