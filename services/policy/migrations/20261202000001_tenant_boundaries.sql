-- Tenant boundaries (issue 10).

-- An email address entry matches no mail while another company has its domain verified
-- (entries.rs, `matchable_sql`), so a change of a domain's state recompiles every entry at that
-- domain, of every company: this index finds them without reading every address.
CREATE INDEX email_addresses_domain_idx
    ON email_addresses (split_part(address, '@', 2)) WHERE deleted_at IS NULL;
COMMENT ON INDEX email_addresses_domain_idx IS
    'Entries by domain (the part after the one @ the address check allows): what a domain verification change affects.';

-- Every refusal of a value another company holds, for the platform operator, and the count the
-- per-company conflict budget is measured in (tenancy.rs).
CREATE TABLE conflict_refusals (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    company_id  uuid        NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    kind        text        NOT NULL
                            CHECK (kind IN ('email_address', 'ip_address', 'domain', 'import_row')),
    value       text        NOT NULL CHECK (char_length(value) <= 300),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX conflict_refusals_company_time_idx ON conflict_refusals (company_id, created_at);
COMMENT ON TABLE conflict_refusals IS
    'Requests refused because another company holds the value (never which company). The id is the reference the refusal message quotes; rows in the last EMAIL2SMS_POLICY_CONFLICT_WINDOW count against EMAIL2SMS_POLICY_CONFLICT_BUDGET.';
