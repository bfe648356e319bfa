-- Columns and rules the gRPC contract (proto/email2sms/policy/v1) needs that the initial schema
-- did not model. Added, never edited into the first migration, so existing databases upgrade.

-- Company.suspended: a suspended company keeps its data but none of its entries routes mail.
ALTER TABLE companies ADD COLUMN suspended boolean NOT NULL DEFAULT false;

-- CompanyLimits.max_sms_parts = 0 means "no company limit: ingest's platform maximum applies".
ALTER TABLE companies DROP CONSTRAINT companies_max_sms_parts_check;
ALTER TABLE companies ADD CONSTRAINT companies_max_sms_parts_check
    CHECK (max_sms_parts BETWEEN 0 AND 255);

-- SecurityPolicy.display_name is optional and not unique in the contract ("Optional; not
-- unique"): two policies may share a name, and a policy may have none.
DROP INDEX security_policies_company_name_key;
ALTER TABLE security_policies DROP CONSTRAINT security_policies_name_check;
ALTER TABLE security_policies ADD CONSTRAINT security_policies_name_check
    CHECK (char_length(name) <= 200);
ALTER TABLE security_policies ALTER COLUMN name SET DEFAULT '';

-- TextMode.BODY_OR_SUBJECT is the contract's default.
ALTER TABLE security_policies DROP CONSTRAINT security_policies_text_mode_check;
ALTER TABLE security_policies ADD CONSTRAINT security_policies_text_mode_check
    CHECK (text_mode IN ('body', 'subject', 'subject_and_body', 'body_or_subject'));
ALTER TABLE security_policies ALTER COLUMN text_mode SET DEFAULT 'body_or_subject';

-- EmailAddress.disabled: "a disabled address does not claim the address: another company may
-- register it", so the cross-company rule covers only enabled, not deleted rows. Same index name,
-- so conflicts keep mapping to the same rule.
ALTER TABLE email_addresses ADD COLUMN disabled boolean NOT NULL DEFAULT false;
DROP INDEX email_addresses_active_address_key;
CREATE UNIQUE INDEX email_addresses_active_address_key
    ON email_addresses (address) WHERE deleted_at IS NULL AND NOT disabled;

-- IpAddress.description: free text for the admin.
ALTER TABLE ip_addresses ADD COLUMN description text NOT NULL DEFAULT ''
    CHECK (char_length(description) <= 500);

-- DomainVerification.txt_record_value and last_check_time, mirrored from verification events.
ALTER TABLE domains ADD COLUMN txt_record_value text;
ALTER TABLE domains ADD COLUMN last_checked_at timestamptz;
CREATE INDEX domains_name_idx ON domains (name);
