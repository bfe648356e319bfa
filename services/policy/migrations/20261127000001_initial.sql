-- Policy service: the system of record for Email2SMS Security.
--
-- Applied by sqlx on a connection whose search_path is only `policy`: every name below is
-- unqualified on purpose, and nothing here refers to another service's schema.
--
-- Conventions (the same in every service):
--   * enums are `text` with a CHECK listing lower-case snake_case values;
--   * entity keys are `uuid DEFAULT gen_random_uuid()`, append-only logs use bigint identities;
--   * all times are `timestamptz`; `updated_at` is set by the application on every UPDATE
--     (there are no triggers);
--   * tenant isolation: every company-owned row carries `company_id`, and every reference from one
--     company-owned row to another is a composite foreign key on (company_id, id), so the database
--     itself refuses a forwarding user or a policy of another company.

-- ---------------------------------------------------------------------------------------------
-- Companies and their Messenger users
-- ---------------------------------------------------------------------------------------------

CREATE TABLE companies (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    external_id     text        UNIQUE CHECK (char_length(external_id) BETWEEN 1 AND 200),
    name            text        NOT NULL CHECK (char_length(btrim(name)) BETWEEN 1 AND 200),
    admin_emails    text[]      NOT NULL DEFAULT '{}',
    default_region  text        NOT NULL CHECK (default_region ~ '^[A-Z]{2}$'),
    max_sms_parts   integer     NOT NULL DEFAULT 10 CHECK (max_sms_parts BETWEEN 1 AND 255),
    over_limit      text        NOT NULL DEFAULT 'truncate'
                                CHECK (over_limit IN ('truncate', 'reject')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT companies_admin_emails_normalised CHECK (
        array_position(admin_emails, NULL) IS NULL
        AND lower(admin_emails::text) = admin_emails::text
        AND cardinality(admin_emails) <= 50
    )
);
COMMENT ON COLUMN companies.external_id IS
    'The Messenger platform''s own id for the company, when it is not our uuid: the key UpsertCompany can match on.';
COMMENT ON COLUMN companies.admin_emails IS
    'Normalised (lower-case) addresses that receive the new-sender-IP and other admin notices.';
COMMENT ON COLUMN companies.default_region IS
    'ISO 3166-1 alpha-2 region used to turn national numbers (021 123 4567) into E.164.';
COMMENT ON COLUMN companies.max_sms_parts IS
    '255 is the ceiling of the 8-bit concatenation UDH part counter.';
COMMENT ON COLUMN companies.over_limit IS
    'What ingest does when a mail needs more than max_sms_parts segments: truncate the text or reject the mail.';

CREATE TABLE messenger_users (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id      uuid        NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    external_id     text        NOT NULL CHECK (char_length(external_id) BETWEEN 1 AND 200),
    username        text        NOT NULL CHECK (char_length(btrim(username)) BETWEEN 1 AND 200),
    display_name    text        NOT NULL DEFAULT '',
    sender_id       text        CHECK (char_length(sender_id) BETWEEN 1 AND 20),
    active          boolean     NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT messenger_users_company_external_key UNIQUE (company_id, external_id),
    -- Target of every composite foreign key that names a forwarding user: it is what makes
    -- "the forwarding user belongs to the same company as the entry" a database invariant.
    CONSTRAINT messenger_users_company_id_key UNIQUE (company_id, id)
);
CREATE UNIQUE INDEX messenger_users_company_username_key
    ON messenger_users (company_id, lower(username));
COMMENT ON TABLE messenger_users IS
    'Directory synced from the Messenger platform. Users are deactivated, not deleted: a user that is a forwarding user cannot be deleted (foreign keys), and an inactive one makes its entries "not ready".';
COMMENT ON INDEX messenger_users_company_username_key IS
    'CSV imports name users by username, case-insensitively; two users differing only in case would make that ambiguous.';
COMMENT ON COLUMN messenger_users.sender_id IS
    'SMS source address (alphanumeric up to 11 or numeric); NULL means the platform default. 20 is the SMPP source_addr limit.';

-- ---------------------------------------------------------------------------------------------
-- Security policies
-- ---------------------------------------------------------------------------------------------

CREATE TABLE security_policies (
    id                          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id                  uuid        NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    name                        text        NOT NULL CHECK (char_length(btrim(name)) BETWEEN 1 AND 200),
    sent_from                   text        NOT NULL
                                            CHECK (sent_from IN ('domain', 'email_address', 'ip_address')),
    security_type               text        NOT NULL
                                            CHECK (security_type IN ('via_spf', 'by_google_mail', 'by_outlook', 'by_ip_addresses')),
    allowed_networks            cidr[]      NOT NULL DEFAULT '{}',
    default_forwarding_user_id  uuid,
    text_mode                   text        NOT NULL DEFAULT 'body'
                                            CHECK (text_mode IN ('body', 'subject', 'subject_and_body')),
    version                     bigint      NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT security_policies_company_id_key UNIQUE (company_id, id),
    -- Entries reference (company_id, id, sent_from) so that a domain can only hang under a
    -- Domains policy, and a policy's kind cannot change while it has entries.
    CONSTRAINT security_policies_company_id_kind_key UNIQUE (company_id, id, sent_from),
    CONSTRAINT security_policies_default_forwarding_user_fk
        FOREIGN KEY (company_id, default_forwarding_user_id)
        REFERENCES messenger_users (company_id, id),
    CONSTRAINT security_policies_allowed_networks_valid CHECK (
        array_position(allowed_networks, NULL) IS NULL
        AND cardinality(allowed_networks) <= 1000
        AND (security_type <> 'by_ip_addresses' OR cardinality(allowed_networks) >= 1)
    )
);
CREATE UNIQUE INDEX security_policies_company_name_key
    ON security_policies (company_id, lower(name));
COMMENT ON COLUMN security_policies.allowed_networks IS
    'Client IPs/CIDRs that pass the "By IP Addresses" security type; required (non-empty) for that type and ignored by the others.';
COMMENT ON COLUMN security_policies.version IS
    'Incremented by every update: the etag for optimistic concurrency on UpdateSecurityPolicy.';
COMMENT ON COLUMN security_policies.text_mode IS
    'Which part of the mail becomes the SMS text.';

-- ---------------------------------------------------------------------------------------------
-- Sender entries: domains, email addresses, IP addresses
-- ---------------------------------------------------------------------------------------------

CREATE TABLE domains (
    id                          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id                  uuid        NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    policy_id                   uuid        NOT NULL,
    sent_from                   text        NOT NULL DEFAULT 'domain' CHECK (sent_from = 'domain'),
    name                        text        NOT NULL,
    forwarding_user_id          uuid,
    state                       text        NOT NULL DEFAULT 'pending'
                                            CHECK (state IN ('pending', 'verified', 'failed', 'revoked')),
    state_reason                text        NOT NULL DEFAULT '',
    token                       text        CHECK (token ~ '^[0-9a-f]{32}$'),
    verification_challenge_id   uuid,
    verification_revision       bigint      NOT NULL DEFAULT 0,
    verified_at                 timestamptz,
    state_changed_at            timestamptz NOT NULL DEFAULT now(),
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT domains_company_name_key UNIQUE (company_id, name),
    CONSTRAINT domains_name_valid CHECK (
        name = lower(name)
        AND char_length(name) <= 253
        AND name ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$'
    ),
    CONSTRAINT domains_verified_has_time CHECK (state <> 'verified' OR verified_at IS NOT NULL),
    -- A domain is only ever verified by publishing its token; without one nothing was proven.
    CONSTRAINT domains_verified_has_token CHECK (state <> 'verified' OR token IS NOT NULL),
    CONSTRAINT domains_policy_fk
        FOREIGN KEY (company_id, policy_id, sent_from)
        REFERENCES security_policies (company_id, id, sent_from),
    CONSTRAINT domains_forwarding_user_fk
        FOREIGN KEY (company_id, forwarding_user_id)
        REFERENCES messenger_users (company_id, id)
);
-- A verified domain routes mail for exactly one company; the same name may be pending for several.
CREATE UNIQUE INDEX domains_verified_name_key ON domains (name) WHERE state = 'verified';
CREATE INDEX domains_policy_idx ON domains (policy_id);
CREATE INDEX domains_forwarding_user_idx ON domains (forwarding_user_id) WHERE forwarding_user_id IS NOT NULL;
COMMENT ON TABLE domains IS
    'Exact-domain entries (sales.example.com is its own row). State mirrors the verification service''s challenge, updated from domain.verification.changed events.';
COMMENT ON COLUMN domains.name IS
    'Lower-case ASCII (IDNA A-labels), no trailing dot: the form the domain library produces and ingest looks up.';
COMMENT ON COLUMN domains.sent_from IS
    'Always ''domain''; exists only so the composite foreign key can require a Domains policy.';
COMMENT ON COLUMN domains.forwarding_user_id IS
    'NULL until allocated: the entry matches no mail until it has an (active) forwarding user.';
COMMENT ON COLUMN domains.token IS
    'Copy of the challenge token from the verification service (32 lower-case hex); NULL only until the challenge exists.';
COMMENT ON COLUMN domains.verification_revision IS
    'Revision of the last verification event applied; older or repeated events (revision <= this) are ignored, so out-of-order delivery cannot roll the state back.';
COMMENT ON INDEX domains_verified_name_key IS
    'A verified domain belongs to one company. When ownership moves, the old owner''s row must leave ''verified'' before (or in the same transaction as) the new owner''s row enters it.';

CREATE TABLE email_addresses (
    id                  uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id          uuid        NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    policy_id           uuid        NOT NULL,
    sent_from           text        NOT NULL DEFAULT 'email_address' CHECK (sent_from = 'email_address'),
    address             text        NOT NULL,
    forwarding_user_id  uuid,
    import_id           uuid,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    deleted_at          timestamptz,
    CONSTRAINT email_addresses_company_address_key UNIQUE (company_id, address),
    CONSTRAINT email_addresses_address_valid CHECK (
        address = lower(address)
        AND char_length(address) <= 254
        AND address ~ '^[^@[:space:]]+@[^@[:space:]]+$'
    ),
    CONSTRAINT email_addresses_policy_fk
        FOREIGN KEY (company_id, policy_id, sent_from)
        REFERENCES security_policies (company_id, id, sent_from),
    CONSTRAINT email_addresses_forwarding_user_fk
        FOREIGN KEY (company_id, forwarding_user_id)
        REFERENCES messenger_users (company_id, id)
);
-- An active (not deleted) email address routes mail for exactly one company.
CREATE UNIQUE INDEX email_addresses_active_address_key
    ON email_addresses (address) WHERE deleted_at IS NULL;
CREATE INDEX email_addresses_policy_idx ON email_addresses (policy_id);
CREATE INDEX email_addresses_forwarding_user_idx
    ON email_addresses (forwarding_user_id) WHERE forwarding_user_id IS NOT NULL;
COMMENT ON TABLE email_addresses IS
    'Exact sender addresses. Deletion is soft (deleted_at) and there is one row per (company, address): re-adding a deleted address revives the row, which keeps CSV commits idempotent.';
COMMENT ON COLUMN email_addresses.address IS
    'Normalised by the domain library (lower-case local part, IDNA domain); compared exactly.';
COMMENT ON COLUMN email_addresses.deleted_at IS
    'NULL = active. Only active rows take part in cross-company uniqueness, so a deleted address can be registered by another company.';
COMMENT ON COLUMN email_addresses.import_id IS
    'The CSV import that created or revived the row, if any (no foreign key: imports expire and are purged).';

CREATE TABLE ip_addresses (
    id                  uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id          uuid        NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    policy_id           uuid        NOT NULL,
    sent_from           text        NOT NULL DEFAULT 'ip_address' CHECK (sent_from = 'ip_address'),
    network             cidr        NOT NULL,
    forwarding_user_id  uuid,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ip_addresses_network_key UNIQUE (network),
    CONSTRAINT ip_addresses_no_v4_mapped CHECK (
        family(network) = 4 OR NOT (network <<= '::ffff:0.0.0.0/96'::cidr)
    ),
    CONSTRAINT ip_addresses_policy_fk
        FOREIGN KEY (company_id, policy_id, sent_from)
        REFERENCES security_policies (company_id, id, sent_from),
    CONSTRAINT ip_addresses_forwarding_user_fk
        FOREIGN KEY (company_id, forwarding_user_id)
        REFERENCES messenger_users (company_id, id)
);
CREATE INDEX ip_addresses_company_idx ON ip_addresses (company_id, network);
CREATE INDEX ip_addresses_policy_idx ON ip_addresses (policy_id);
CREATE INDEX ip_addresses_forwarding_user_idx
    ON ip_addresses (forwarding_user_id) WHERE forwarding_user_id IS NOT NULL;
COMMENT ON TABLE ip_addresses IS
    'Mail-server IPs/CIDRs; ingest picks the longest prefix containing the client IP. Overlaps are allowed inside one company, never across companies.';
COMMENT ON COLUMN ip_addresses.network IS
    '`cidr` refuses host bits (10.0.0.1/8). IPv4-mapped IPv6 is refused: store 1.2.3.4, not ::ffff:1.2.3.4, or the v4 lookups would miss it.';

-- The cross-company overlap rule needs `company_id WITH <>` in a GiST exclusion constraint, which
-- needs btree_gist's uuid operator class. The extension is database-wide and lives in exactly one
-- schema; this migration runs with search_path = policy only, so the operator class must be
-- schema-qualified with wherever the extension actually is (public when we create it here, or
-- wherever an operator installed it before). Looking that up beats hard-coding `public.`.
DO $$
DECLARE
    ext_schema text;
BEGIN
    SELECT n.nspname INTO ext_schema
      FROM pg_catalog.pg_extension e
      JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
     WHERE e.extname = 'btree_gist';

    IF ext_schema IS NULL THEN
        IF EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = 'public') THEN
            ext_schema := 'public';
        ELSE
            ext_schema := current_schema();
        END IF;
        EXECUTE format('CREATE EXTENSION IF NOT EXISTS btree_gist WITH SCHEMA %I', ext_schema);
    END IF;

    EXECUTE format(
        'ALTER TABLE ip_addresses ADD CONSTRAINT ip_addresses_no_cross_company_overlap '
        'EXCLUDE USING gist (network pg_catalog.inet_ops WITH OPERATOR(pg_catalog.&&), '
        'company_id %I.gist_uuid_ops WITH OPERATOR(pg_catalog.<>))',
        ext_schema);
END
$$;
COMMENT ON CONSTRAINT ip_addresses_no_cross_company_overlap ON ip_addresses IS
    'An IP routes to one company only: no network of one company may overlap a network of another.';

-- ---------------------------------------------------------------------------------------------
-- CSV imports
-- ---------------------------------------------------------------------------------------------

CREATE TABLE imports (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id      uuid        NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    policy_id       uuid        NOT NULL,
    sent_from       text        NOT NULL DEFAULT 'email_address' CHECK (sent_from = 'email_address'),
    status          text        NOT NULL DEFAULT 'previewed' CHECK (status IN ('previewed', 'committed')),
    notify          boolean     NOT NULL DEFAULT false,
    total_rows      integer     NOT NULL DEFAULT 0 CHECK (total_rows >= 0),
    ok_rows         integer     NOT NULL DEFAULT 0 CHECK (ok_rows >= 0 AND ok_rows <= total_rows),
    created_rows    integer     CHECK (created_rows >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    committed_at    timestamptz,
    expires_at      timestamptz NOT NULL DEFAULT now() + interval '1 day',
    CONSTRAINT imports_committed_has_time CHECK ((status = 'committed') = (committed_at IS NOT NULL)),
    CONSTRAINT imports_company_id_key UNIQUE (company_id, id),
    CONSTRAINT imports_policy_fk
        FOREIGN KEY (company_id, policy_id, sent_from)
        REFERENCES security_policies (company_id, id, sent_from)
        ON DELETE CASCADE
);
CREATE INDEX imports_company_created_idx ON imports (company_id, created_at DESC);
CREATE INDEX imports_expires_idx ON imports (expires_at) WHERE status = 'previewed';
COMMENT ON TABLE imports IS
    'A previewed CSV: commit applies exactly the rows stored here with status ok, in one transaction; a second commit of a committed import creates nothing.';
COMMENT ON COLUMN imports.sent_from IS
    'Always ''email_address'': imports can only target an Email Addresses policy (enforced by the composite foreign key).';

CREATE TABLE import_rows (
    import_id           uuid        NOT NULL REFERENCES imports (id) ON DELETE CASCADE,
    line_number         integer     NOT NULL CHECK (line_number >= 1),
    raw_email           text        NOT NULL,
    username            text        NOT NULL,
    normalised_email    text        CHECK (normalised_email = lower(normalised_email)),
    status              text        NOT NULL CHECK (status IN (
                                        'ok', 'invalid_email', 'unknown_user', 'inactive_user',
                                        'duplicate_in_file', 'already_registered',
                                        'registered_to_other_company')),
    message             text        NOT NULL DEFAULT '',
    PRIMARY KEY (import_id, line_number),
    CONSTRAINT import_rows_ok_is_normalised CHECK (status <> 'ok' OR normalised_email IS NOT NULL)
);
COMMENT ON COLUMN import_rows.line_number IS
    'Physical line in the uploaded file (the header is line 1), so an admin can find the row in their spreadsheet.';
COMMENT ON COLUMN import_rows.message IS
    'Human-readable problem for non-ok rows; never names another company.';

-- ---------------------------------------------------------------------------------------------
-- Notifications ("your address is authorised to send SMS by email")
-- ---------------------------------------------------------------------------------------------

CREATE TABLE notifications (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id      uuid        NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    request_id      text        NOT NULL CHECK (char_length(request_id) BETWEEN 1 AND 200),
    import_id       uuid,
    email_address   text        NOT NULL CHECK (email_address = lower(email_address)),
    status          text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    error           text,
    attempts        integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    last_attempt_at timestamptz,
    sent_at         timestamptz,
    CONSTRAINT notifications_once_per_request UNIQUE (company_id, request_id, email_address),
    CONSTRAINT notifications_sent_has_time CHECK ((status = 'sent') = (sent_at IS NOT NULL)),
    CONSTRAINT notifications_import_fk
        FOREIGN KEY (company_id, import_id) REFERENCES imports (company_id, id) ON DELETE SET NULL (import_id)
);
CREATE INDEX notifications_unsent_idx ON notifications (company_id, request_id) WHERE status <> 'sent';
COMMENT ON CONSTRAINT notifications_once_per_request ON notifications IS
    'Nothing is sent twice for the same request: a retry of a request only re-sends its pending/failed rows.';
COMMENT ON COLUMN notifications.request_id IS
    'The client request_id of SendNotification, or the import id for a commit with notify.';

-- ---------------------------------------------------------------------------------------------
-- Sender log: every mail-server IP seen per company
-- ---------------------------------------------------------------------------------------------

CREATE TABLE sender_log (
    id                      uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id              uuid        NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    ip                      inet        NOT NULL CHECK (masklen(ip) = CASE family(ip) WHEN 4 THEN 32 ELSE 128 END),
    first_seen              timestamptz NOT NULL DEFAULT now(),
    last_seen               timestamptz NOT NULL DEFAULT now(),
    sample_envelope_sender  text        NOT NULL DEFAULT '',
    sample_from             text        NOT NULL DEFAULT '',
    sample_helo             text        NOT NULL DEFAULT '',
    seen_count              bigint      NOT NULL DEFAULT 1 CHECK (seen_count >= 1),
    admin_notified_at       timestamptz,
    CONSTRAINT sender_log_company_ip_key UNIQUE (company_id, ip),
    CONSTRAINT sender_log_seen_order CHECK (last_seen >= first_seen)
);
CREATE INDEX sender_log_company_last_seen_idx ON sender_log (company_id, last_seen DESC, id);
CREATE INDEX sender_log_unnotified_idx ON sender_log (first_seen) WHERE admin_notified_at IS NULL;
COMMENT ON CONSTRAINT sender_log_company_ip_key ON sender_log IS
    'The "one admin email per new IP" rule rests on this: INSERT ... ON CONFLICT (company_id, ip) DO UPDATE ... RETURNING (xmax = 0) tells exactly one of any number of concurrent reports that the IP is new. Set last_seen = greatest(sender_log.last_seen, now()): now() is the transaction start, which can be earlier than the winning insert''s first_seen.';
COMMENT ON COLUMN sender_log.admin_notified_at IS
    'Set once the new-IP email went out; rows left NULL (send failed) are retried, never re-sent once set.';

-- ---------------------------------------------------------------------------------------------
-- Idempotent creates, compiled-cache version, outbox
-- ---------------------------------------------------------------------------------------------

CREATE TABLE idempotency_keys (
    company_id      uuid        NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    method          text        NOT NULL CHECK (char_length(method) BETWEEN 1 AND 100),
    request_id      text        NOT NULL CHECK (char_length(request_id) BETWEEN 1 AND 200),
    resource_id     uuid        NOT NULL,
    request_hash    bytea,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (company_id, method, request_id)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
COMMENT ON TABLE idempotency_keys IS
    'AIP request_id for Create* calls: a retried create returns resource_id instead of creating again. Insert it in the same transaction as the resource.';
COMMENT ON COLUMN idempotency_keys.request_hash IS
    'Digest of the request; the same request_id with a different body is refused rather than answered with the old resource.';

CREATE TABLE cache_version (
    singleton   boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    version     bigint      NOT NULL DEFAULT 0 CHECK (version >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO cache_version (singleton, version) VALUES (true, 0);
COMMENT ON TABLE cache_version IS
    'Version of the compiled policies in Redis. A row (not a sequence) so that bumping it inside the writing transaction orders versions in commit order: UPDATE cache_version SET version = version + 1, updated_at = now() RETURNING version.';

CREATE TABLE outbox (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id      uuid        NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    routing_key     text        NOT NULL CHECK (char_length(routing_key) BETWEEN 1 AND 255),
    payload         bytea       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    published_at    timestamptz,
    attempts        integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error      text
);
CREATE INDEX outbox_unpublished_idx ON outbox (id) WHERE published_at IS NULL;
COMMENT ON TABLE outbox IS
    'Events written in the same transaction as the change, published later with confirms. Publishing is at-least-once: message_id goes out as the AMQP message-id so consumers can drop duplicates.';
