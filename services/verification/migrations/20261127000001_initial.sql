-- Verification service: DNS TXT challenges that prove (and keep proving) domain ownership.
--
-- Applied by sqlx on a connection whose search_path is only `verification`: every name below is
-- unqualified on purpose. Companies live in the policy service, so company_id carries no foreign key.
--
-- Conventions (the same in every service): enums are `text` with a CHECK of lower-case snake_case
-- values; entities have `uuid DEFAULT gen_random_uuid()` keys, append-only logs bigint identities;
-- times are `timestamptz`; `updated_at` is set by the application (no triggers).

CREATE TABLE challenges (
    id                      uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id              uuid        NOT NULL,
    domain                  text        NOT NULL,
    token                   text        NOT NULL CHECK (token ~ '^[0-9a-f]{32}$'),
    state                   text        NOT NULL DEFAULT 'pending'
                                        CHECK (state IN ('pending', 'verified', 'failed', 'revoked')),
    reason                  text        NOT NULL DEFAULT '',
    revision                bigint      NOT NULL DEFAULT 1 CHECK (revision >= 1),
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    pending_since           timestamptz NOT NULL DEFAULT now(),
    token_rotated_at        timestamptz,
    state_changed_at        timestamptz NOT NULL DEFAULT now(),
    verified_at             timestamptz,
    last_checked_at         timestamptz,
    next_check_at           timestamptz DEFAULT now(),
    consecutive_failures    integer     NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
    missing_since           timestamptz,
    lease_owner             text,
    lease_until             timestamptz,
    CONSTRAINT challenges_company_domain_key UNIQUE (company_id, domain),
    CONSTRAINT challenges_domain_valid CHECK (
        domain = lower(domain)
        AND char_length(domain) <= 253
        AND domain ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$'
    ),
    CONSTRAINT challenges_verified_has_time CHECK (state <> 'verified' OR verified_at IS NOT NULL),
    CONSTRAINT challenges_lease_complete CHECK ((lease_owner IS NULL) = (lease_until IS NULL))
);
-- The first company to verify wins: a second one cannot become verified while the first still is.
CREATE UNIQUE INDEX challenges_verified_domain_key ON challenges (domain) WHERE state = 'verified';
-- The scheduler's work queue: due pending and verified challenges.
CREATE INDEX challenges_due_idx ON challenges (next_check_at)
    WHERE state IN ('pending', 'verified') AND next_check_at IS NOT NULL;
CREATE INDEX challenges_domain_idx ON challenges (domain);

COMMENT ON TABLE challenges IS
    'One challenge per (company, domain). The same domain may be pending for several companies (each with its own token); at most one is verified.';
COMMENT ON COLUMN challenges.token IS
    '32 lower-case hex characters from a CSPRNG; published as a TXT record at the domain itself. Changes only through RotateChallenge.';
COMMENT ON COLUMN challenges.revision IS
    'Incremented on every state or token change and carried in domain.verification.changed, so consumers can discard stale or duplicate events.';
COMMENT ON COLUMN challenges.pending_since IS
    'Start of the current pending period (creation, rotation or re-check of a failed challenge); the give-up deadline (7 days by default) counts from here.';
COMMENT ON COLUMN challenges.next_check_at IS
    'When the scheduler should check next (back-off for pending, daily for verified); NULL = not scheduled (failed, revoked).';
COMMENT ON COLUMN challenges.consecutive_failures IS
    'Checks in a row that did not find the token (temporary DNS failures do not count): part of the revocation rule.';
COMMENT ON COLUMN challenges.missing_since IS
    'First failed check of a verified challenge since the token was last seen; revocation needs now() - missing_since past the grace period (72 h default) and several consecutive failures. Cleared when the token is found again.';
COMMENT ON COLUMN challenges.lease_owner IS
    'Replica that claimed this challenge (SELECT ... FOR UPDATE SKIP LOCKED, then set a lease) so that two replicas never check the same domain in one round; an expired lease_until may be taken over.';

CREATE TABLE checks (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    challenge_id    uuid        NOT NULL REFERENCES challenges (id) ON DELETE CASCADE,
    checked_at      timestamptz NOT NULL DEFAULT now(),
    outcome         text        NOT NULL CHECK (outcome IN (
                                    'found', 'not_found', 'wrong_value', 'nxdomain', 'nodata',
                                    'servfail', 'timeout', 'error')),
    temporary       boolean     NOT NULL,
    detail          text        NOT NULL DEFAULT '',
    values_found    text[]      NOT NULL DEFAULT '{}',
    nameserver      text,
    duration_ms     integer     CHECK (duration_ms >= 0),
    CONSTRAINT checks_temporary_matches_outcome CHECK (
        CASE
            WHEN outcome IN ('servfail', 'timeout') THEN temporary
            WHEN outcome IN ('found', 'not_found', 'wrong_value', 'nxdomain', 'nodata') THEN NOT temporary
            ELSE true
        END
    )
);
CREATE INDEX checks_challenge_idx ON checks (challenge_id, checked_at DESC, id DESC);
CREATE INDEX checks_checked_at_idx ON checks (checked_at);
COMMENT ON TABLE checks IS
    'History of DNS checks, shown by GetStatus so support can tell a customer exactly what DNS returned. Prune by checked_at.';
COMMENT ON COLUMN checks.temporary IS
    'SERVFAIL and timeouts are temporary: the challenge keeps its state and is retried. NXDOMAIN/NODATA/wrong value are definite answers.';
COMMENT ON COLUMN checks.values_found IS
    'The TXT values found at the name (multi-string records already joined), for messages such as "found other TXT records: ...".';

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
    'domain.verification.changed events, written in the same transaction as the state change so a crash between commit and publish loses nothing. Publishing is at-least-once: message_id goes out as the AMQP message-id so consumers can drop duplicates.';
