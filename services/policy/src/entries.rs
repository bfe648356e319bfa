//! Sender entries (domains, email addresses, IP addresses) as one row shape.
//!
//! Every read of an entry (Get, List, ResolveSender, the cache compiler) goes through
//! [`select_sql`], which joins the entry with its policy, company and *effective* forwarding user
//! (the entry's own, else the policy default). Readiness is computed from that row on every read,
//! never stored, so deactivating a user or suspending a company changes every affected entry at
//! once; [`ready_sql`] is the same rule as SQL for the `ready` list filter.

use chrono::{DateTime, Utc};
use email2sms_proto::policy::v1 as pb;
use ipnet::IpNet;
use uuid::Uuid;

use crate::model::{
    cidr_text, id_text, opt_timestamp, over_limit_enum, security_type_enum, text_mode_enum,
    timestamp, verification_state_enum,
};

/// Whether another company has verified the domain of the email entry `e`: the entry then
/// matches no mail (see [`matchable_sql`]). One literal, shared by every statement that needs it.
macro_rules! blocked_by_domain_sql {
    () => {
        "EXISTS (SELECT 1 FROM domains d WHERE d.name = split_part(e.address, '@', 2) \
         AND d.state = 'verified' AND d.company_id <> e.company_id)"
    };
}

/// Which table an entry lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Domain,
    Email,
    Ip,
}

impl EntryKind {
    pub fn table(self) -> &'static str {
        match self {
            EntryKind::Domain => "domains",
            EntryKind::Email => "email_addresses",
            EntryKind::Ip => "ip_addresses",
        }
    }

    /// The entry's name in answers: NOT_FOUND "email address".
    pub fn what(self) -> &'static str {
        match self {
            EntryKind::Domain => "domain",
            EntryKind::Email => "email address",
            EntryKind::Ip => "IP address",
        }
    }

    pub fn match_kind(self) -> pb::MatchKind {
        match self {
            EntryKind::Domain => pb::MatchKind::Domain,
            EntryKind::Email => pb::MatchKind::EmailAddress,
            EntryKind::Ip => pb::MatchKind::IpAddress,
        }
    }
}

/// One entry with everything needed to present it, judge its readiness and compile it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EntryRow {
    pub id: Uuid,
    pub company_uuid: Uuid,
    pub company_public_id: String,
    pub policy_id: Uuid,
    /// The address (email) or name (domain); NULL for IP entries.
    pub key: Option<String>,
    /// The network of an IP entry; NULL otherwise.
    pub network: Option<IpNet>,
    pub forwarding_user_id: Option<Uuid>,
    pub effective_user_id: Option<Uuid>,
    pub user_external_id: Option<String>,
    pub user_sender_id: Option<String>,
    pub user_username: Option<String>,
    pub user_active: Option<bool>,
    pub suspended: bool,
    pub disabled: bool,
    pub domain_state: Option<String>,
    pub security_type: String,
    pub allowed_networks: Vec<IpNet>,
    pub text_mode: String,
    pub default_region: String,
    pub max_sms_parts: i32,
    pub over_limit: String,
    pub allowed_destination_regions: Vec<String>,
    pub international_sms_per_day: i32,
    pub keep_typography: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub import_id: Option<Uuid>,
    pub description: Option<String>,
    pub state_reason: Option<String>,
    pub token: Option<String>,
    pub txt_record_value: Option<String>,
    pub verified_at: Option<DateTime<Utc>>,
    pub last_checked_at: Option<DateTime<Utc>>,
    /// Email entries: another company has the address's domain verified.
    pub blocked_by_domain: bool,
}

/// `SELECT … FROM <entry table> e JOIN …` with the columns of [`EntryRow`]; callers append a
/// `WHERE` (use [`visible_sql`]) and an `ORDER BY`.
pub fn select_sql(kind: EntryKind) -> String {
    let (key, network, disabled, state, blocked, extras) = match kind {
        EntryKind::Email => (
            "e.address",
            "NULL::cidr",
            "e.disabled",
            "NULL::text",
            blocked_by_domain_sql!(),
            "e.import_id, NULL::text AS description, NULL::text AS state_reason, \
             NULL::text AS token, NULL::text AS txt_record_value, \
             NULL::timestamptz AS verified_at, NULL::timestamptz AS last_checked_at",
        ),
        EntryKind::Domain => (
            "e.name",
            "NULL::cidr",
            "false",
            "e.state",
            "false",
            "NULL::uuid AS import_id, NULL::text AS description, e.state_reason, e.token, \
             e.txt_record_value, e.verified_at, e.last_checked_at",
        ),
        EntryKind::Ip => (
            "NULL::text",
            "e.network",
            "false",
            "NULL::text",
            "false",
            "NULL::uuid AS import_id, e.description, NULL::text AS state_reason, \
             NULL::text AS token, NULL::text AS txt_record_value, \
             NULL::timestamptz AS verified_at, NULL::timestamptz AS last_checked_at",
        ),
    };
    format!(
        "SELECT e.id, e.company_id AS company_uuid, \
                coalesce(c.external_id, c.id::text) AS company_public_id, e.policy_id, \
                {key} AS key, {network} AS network, e.forwarding_user_id, \
                u.id AS effective_user_id, u.external_id AS user_external_id, \
                u.sender_id AS user_sender_id, u.username AS user_username, u.active AS user_active, \
                c.suspended, \
                {disabled} AS disabled, {state} AS domain_state, p.security_type, \
                p.allowed_networks, p.text_mode, c.default_region, c.max_sms_parts, c.over_limit, \
                c.allowed_destination_regions, c.international_sms_per_day, c.keep_typography, \
                e.created_at, e.updated_at, {extras}, {blocked} AS blocked_by_domain \
         FROM {table} e \
         JOIN security_policies p ON p.id = e.policy_id \
         JOIN companies c ON c.id = e.company_id \
         LEFT JOIN messenger_users u ON u.company_id = e.company_id \
              AND u.id = coalesce(e.forwarding_user_id, p.default_forwarding_user_id) ",
        table = kind.table(),
    )
}

/// Rows that exist from the API's point of view (email deletion is soft).
pub fn visible_sql(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::Email => "e.deleted_at IS NULL",
        EntryKind::Domain | EntryKind::Ip => "TRUE",
    }
}

/// Rows that can match mail at all, ready or not. A pending domain may exist for several
/// companies and a disabled address does not claim the address, so neither can match; an email
/// address at a domain another company has verified is that company's mail, so it cannot match
/// either (whatever let the row in: ResolveSender and the compiler both read this). Every other
/// entry can, and when it is not ready it still wins over less specific entries so that ingest
/// refuses with the reason instead of routing the mail elsewhere.
pub fn matchable_sql(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::Email => concat!(
            "e.deleted_at IS NULL AND NOT e.disabled AND NOT ",
            blocked_by_domain_sql!()
        ),
        EntryKind::Domain => "e.state = 'verified'",
        EntryKind::Ip => "TRUE",
    }
}

/// [`EntryRow::readiness`] as a SQL predicate over the aliases of [`select_sql`].
pub fn ready_sql(kind: EntryKind) -> String {
    let (state, disabled) = match kind {
        EntryKind::Domain => ("e.state = 'verified'", "false"),
        EntryKind::Email => (concat!("NOT ", blocked_by_domain_sql!()), "e.disabled"),
        EntryKind::Ip => ("TRUE", "false"),
    };
    format!(
        "(u.id IS NOT NULL AND u.active AND {state} AND NOT c.suspended AND NOT {disabled} \
          AND (p.security_type <> 'by_ip_addresses' OR cardinality(p.allowed_networks) > 0))"
    )
}

impl EntryRow {
    /// What the admin sees the entry as: the address, the domain or the CIDR.
    pub fn matched_value(&self) -> String {
        match (&self.key, &self.network) {
            (Some(key), _) => key.clone(),
            (None, Some(net)) => cidr_text(net),
            (None, None) => String::new(),
        }
    }

    /// Whether the entry routes mail now; BLOCKED_BY_VERIFIED_DOMAIN first (the entry matches
    /// nothing at all), then the first reason in the order of the enum.
    pub fn readiness(&self, kind: EntryKind) -> pb::Readiness {
        use pb::NotReadyReason as R;
        let label = self.matched_value();
        let (code, reason) = if kind == EntryKind::Email && self.blocked_by_domain {
            let domain = label.rsplit_once('@').map_or("", |(_, d)| d);
            (
                R::BlockedByVerifiedDomain,
                format!(
                    "another company has verified {domain}, so mail from {label} follows that company's rules and this entry matches no mail: delete it, or verify {domain} for your company if the domain is yours"
                ),
            )
        } else if self.effective_user_id.is_none() {
            (
                R::NoForwardingUser,
                format!(
                    "no forwarding user: allocate {label} to a Messenger user, or set a default forwarding user on its security policy"
                ),
            )
        } else if self.user_active == Some(false) {
            (
                R::ForwardingUserInactive,
                format!(
                    "the forwarding user of {label} is disabled on the Messenger platform: pick another user or re-activate this one"
                ),
            )
        } else if kind == EntryKind::Domain && self.domain_state.as_deref() != Some("verified") {
            (
                R::DomainNotVerified,
                format!("{label} is not verified: publish the TXT record and press Verify"),
            )
        } else if self.suspended {
            (
                R::CompanySuspended,
                "the company is suspended on the Messenger platform".to_owned(),
            )
        } else if self.disabled {
            (
                R::EntryDisabled,
                format!("{label} is disabled: enable it to let it send"),
            )
        } else if self.security_type == "by_ip_addresses" && self.allowed_networks.is_empty() {
            (
                R::NoAllowedIpRanges,
                "the security policy is \"By IP Addresses\" but lists no IP or CIDR: add the mail server's address to the policy".to_owned(),
            )
        } else {
            return pb::Readiness {
                ready: true,
                reason_code: R::Unspecified as i32,
                reason: String::new(),
                effective_forwarding_user_id: id_text(self.effective_user_id),
            };
        };
        pb::Readiness {
            ready: false,
            reason_code: code as i32,
            reason,
            effective_forwarding_user_id: id_text(self.effective_user_id),
        }
    }

    /// The flattened value ingest decides with; also the value stored in Redis.
    pub fn compiled(&self, kind: EntryKind, version: u64) -> pb::CompiledSender {
        let security_type = security_type_enum(&self.security_type);
        pb::CompiledSender {
            match_kind: kind.match_kind() as i32,
            entry_id: self.id.to_string(),
            matched_value: self.matched_value(),
            company_id: self.company_public_id.clone(),
            security_policy_id: self.policy_id.to_string(),
            security_type: security_type as i32,
            allowed_ip_ranges: if security_type == pb::SecurityType::ByIpAddresses {
                self.allowed_networks.iter().map(cidr_text).collect()
            } else {
                Vec::new()
            },
            forwarding_user_id: id_text(self.effective_user_id),
            forwarding_user_external_id: self.user_external_id.clone().unwrap_or_default(),
            sender_id: self.user_sender_id.clone().unwrap_or_default(),
            forwarding_username: self.user_username.clone().unwrap_or_default(),
            default_region: self.default_region.clone(),
            limits: Some(pb::CompanyLimits {
                max_sms_parts: u32::try_from(self.max_sms_parts).unwrap_or(0),
                over_limit_behavior: over_limit_enum(&self.over_limit) as i32,
                allowed_destination_regions: self.allowed_destination_regions.clone(),
                international_sms_per_day: Some(
                    u32::try_from(self.international_sms_per_day).unwrap_or(0),
                ),
                keep_typography: Some(self.keep_typography),
            }),
            text_mode: text_mode_enum(&self.text_mode) as i32,
            readiness: Some(self.readiness(kind)),
            version,
        }
    }

    pub fn to_email(&self) -> pb::EmailAddress {
        pb::EmailAddress {
            email_address_id: self.id.to_string(),
            company_id: self.company_public_id.clone(),
            security_policy_id: self.policy_id.to_string(),
            email_address: self.matched_value(),
            forwarding_user_id: id_text(self.forwarding_user_id),
            disabled: self.disabled,
            readiness: Some(self.readiness(EntryKind::Email)),
            source: if self.import_id.is_some() {
                pb::EntrySource::Import as i32
            } else {
                pb::EntrySource::Manual as i32
            },
            import_id: id_text(self.import_id),
            // Notifications arrive with a later issue; nothing has been sent yet.
            last_notify_time: None,
            create_time: Some(timestamp(self.created_at)),
            update_time: Some(timestamp(self.updated_at)),
        }
    }

    pub fn to_ip(&self) -> pb::IpAddress {
        pb::IpAddress {
            ip_address_id: self.id.to_string(),
            company_id: self.company_public_id.clone(),
            security_policy_id: self.policy_id.to_string(),
            ip_range: self.matched_value(),
            description: self.description.clone().unwrap_or_default(),
            forwarding_user_id: id_text(self.forwarding_user_id),
            readiness: Some(self.readiness(EntryKind::Ip)),
            create_time: Some(timestamp(self.created_at)),
            update_time: Some(timestamp(self.updated_at)),
        }
    }

    pub fn to_domain(&self) -> pb::Domain {
        let name = self.matched_value();
        let unicode = email2sms_domain::DomainName::parse(&name)
            .map(|d| d.to_unicode())
            .unwrap_or_else(|_| name.clone());
        pb::Domain {
            domain_id: self.id.to_string(),
            company_id: self.company_public_id.clone(),
            security_policy_id: self.policy_id.to_string(),
            domain_name: name.clone(),
            unicode_domain_name: unicode,
            forwarding_user_id: id_text(self.forwarding_user_id),
            verification: Some(pb::DomainVerification {
                token: self.token.clone().unwrap_or_default(),
                txt_record_name: name,
                txt_record_value: self.txt_record_value.clone().unwrap_or_else(|| {
                    self.token
                        .as_ref()
                        .map(|t| format!("{}{t}", email2sms_domain::TXT_RECORD_PREFIX))
                        .unwrap_or_default()
                }),
                state: verification_state_enum(self.domain_state.as_deref().unwrap_or_default())
                    as i32,
                state_reason: self.state_reason.clone().unwrap_or_default(),
                verify_time: opt_timestamp(self.verified_at),
                last_check_time: opt_timestamp(self.last_checked_at),
            }),
            readiness: Some(self.readiness(EntryKind::Domain)),
            create_time: Some(timestamp(self.created_at)),
            update_time: Some(timestamp(self.updated_at)),
        }
    }
}
