-- The HMAC key of page tokens (libs/runtime/src/page_token.rs): one row, the same for every
-- replica and kept across restarts, so a token issued by one replica is honoured by the next.
-- 32 bytes: SHA-256 of three gen_random_uuid()s (366 bits from pg_strong_random, built in since
-- Postgres 13), so no pgcrypto extension (gen_random_bytes) is needed. Replacing the row (with a
-- rolling restart) invalidates every token in circulation, which clients survive by starting again.
CREATE TABLE page_token_key (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    key bytea NOT NULL CHECK (length(key) >= 32)
);
INSERT INTO page_token_key (key)
VALUES (sha256(uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid())
               || uuid_send(gen_random_uuid())));
