-- A token served only by a wildcard record (`*.example.com TXT ...`) does not verify: a check that
-- finds a verification record also asks a random name under each parent of the names the answer
-- came through, and records what it asked and which wildcard served the token, so support can
-- show the customer exactly which record to change.

ALTER TABLE checks
    ADD COLUMN probed_names  text[] NOT NULL DEFAULT '{}',
    ADD COLUMN wildcard_name text   CHECK (wildcard_name LIKE '*.%');

ALTER TABLE checks DROP CONSTRAINT checks_outcome_check;
ALTER TABLE checks ADD CONSTRAINT checks_outcome_check CHECK (outcome IN (
    'found', 'not_found', 'wrong_value', 'nxdomain', 'nodata', 'servfail', 'timeout', 'refused',
    'error', 'wildcard', 'too_many_aliases'));

ALTER TABLE checks DROP CONSTRAINT checks_temporary_matches_outcome;
ALTER TABLE checks ADD CONSTRAINT checks_temporary_matches_outcome CHECK (
    CASE
        WHEN outcome IN ('servfail', 'timeout', 'refused') THEN temporary
        WHEN outcome IN ('found', 'not_found', 'wrong_value', 'nxdomain', 'nodata', 'wildcard',
                         'too_many_aliases') THEN NOT temporary
        ELSE true
    END
);
-- Only a wildcard outcome names the wildcard.
ALTER TABLE checks ADD CONSTRAINT checks_wildcard_name_only_for_wildcard
    CHECK ((outcome = 'wildcard') = (wildcard_name IS NOT NULL));

COMMENT ON COLUMN checks.probed_names IS
    'Random names asked after finding a verification record, one per parent domain of queried_name and of each CNAME target (at most 4): one that answers with the token shows a wildcard serves it.';
COMMENT ON COLUMN checks.wildcard_name IS
    'For a wildcard outcome, the wildcard record that served the token, e.g. *.example.com.';
