-- What a support person needs from a check beyond its outcome: why it ran, the name queried, the
-- CNAMEs followed and the state it moved the challenge between (GetStatus shows all of it).
-- REFUSED gets an outcome of its own: it is temporary (usually our resolver's configuration), and
-- folding it into 'error' would hide that from support.

ALTER TABLE checks
    ADD COLUMN trigger      text   NOT NULL DEFAULT 'scheduled'
                                   CHECK (trigger IN ('created', 'scheduled', 'on_demand')),
    ADD COLUMN queried_name text   NOT NULL DEFAULT '',
    ADD COLUMN cname_chain  text[] NOT NULL DEFAULT '{}',
    ADD COLUMN state_before text   CHECK (state_before IN ('pending', 'verified', 'failed', 'revoked')),
    ADD COLUMN state_after  text   CHECK (state_after IN ('pending', 'verified', 'failed', 'revoked'));

ALTER TABLE checks DROP CONSTRAINT checks_outcome_check;
ALTER TABLE checks ADD CONSTRAINT checks_outcome_check CHECK (outcome IN (
    'found', 'not_found', 'wrong_value', 'nxdomain', 'nodata', 'servfail', 'timeout', 'refused', 'error'));

ALTER TABLE checks DROP CONSTRAINT checks_temporary_matches_outcome;
ALTER TABLE checks ADD CONSTRAINT checks_temporary_matches_outcome CHECK (
    CASE
        WHEN outcome IN ('servfail', 'timeout', 'refused') THEN temporary
        WHEN outcome IN ('found', 'not_found', 'wrong_value', 'nxdomain', 'nodata') THEN NOT temporary
        ELSE true
    END
);

COMMENT ON COLUMN checks.cname_chain IS
    'CNAME targets followed from queried_name, in order; empty when the name is not an alias.';
