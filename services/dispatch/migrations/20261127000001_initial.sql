-- Dispatch service: SMS jobs, their state history and delivery receipts.
--
-- Applied by sqlx on a connection whose search_path is only `dispatch`: every name below is
-- unqualified on purpose. Company and user ids come from the job payload (policy owns them), so they
-- carry no foreign keys.
--
-- Conventions (the same in every service): enums are `text` with a CHECK of lower-case snake_case
-- values; entities have uuid keys, append-only logs bigint identities; times are `timestamptz`;
-- `updated_at` is set by the application (no triggers).

CREATE TABLE sms_jobs (
    job_id                  uuid        PRIMARY KEY,
    company_id              uuid        NOT NULL,
    forwarding_user_id      uuid        NOT NULL,
    sender_id               text        CHECK (char_length(sender_id) BETWEEN 1 AND 20),
    sender_email            text,
    email_message_id        text,
    recipient               text        NOT NULL CHECK (recipient ~ '^\+[1-9][0-9]{5,14}$'),
    text                    text        NOT NULL,
    encoding                text        NOT NULL CHECK (encoding IN ('gsm7', 'ucs2')),
    segments                integer     NOT NULL CHECK (segments BETWEEN 1 AND 255),
    state                   text        NOT NULL DEFAULT 'queued' CHECK (state IN (
                                            'queued', 'submitting', 'submitted', 'delivered',
                                            'failed', 'expired', 'needs_review')),
    attempts                integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    connector               text,
    provider_message_id     text        CHECK (char_length(provider_message_id) BETWEEN 1 AND 128),
    error_code              text,
    last_error              text,
    valid_until             timestamptz,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    submitted_at            timestamptz,
    final_at                timestamptz,
    CONSTRAINT sms_jobs_submitted_has_time
        CHECK (state NOT IN ('submitted', 'delivered') OR submitted_at IS NOT NULL),
    CONSTRAINT sms_jobs_final_has_time
        CHECK (state NOT IN ('delivered', 'failed', 'expired') OR final_at IS NOT NULL),
    CONSTRAINT sms_jobs_provider_id_has_connector
        CHECK (provider_message_id IS NULL OR connector IS NOT NULL)
);
CREATE UNIQUE INDEX sms_jobs_connector_provider_id_key
    ON sms_jobs (connector, provider_message_id) WHERE provider_message_id IS NOT NULL;
CREATE INDEX sms_jobs_company_created_idx ON sms_jobs (company_id, created_at DESC, job_id DESC);
CREATE INDEX sms_jobs_company_recipient_created_idx
    ON sms_jobs (company_id, recipient, created_at DESC, job_id DESC);
CREATE INDEX sms_jobs_submitting_idx ON sms_jobs (updated_at) WHERE state = 'submitting';
CREATE INDEX sms_jobs_open_valid_until_idx ON sms_jobs (valid_until)
    WHERE state IN ('queued', 'submitting') AND valid_until IS NOT NULL;

COMMENT ON TABLE sms_jobs IS
    'One row per SMS job (one recipient). The primary key is the job id minted by ingest: it is the idempotency key that makes a redelivered job a no-op once submitted or final.';
COMMENT ON COLUMN sms_jobs.state IS
    'queued -> submitting -> submitted -> delivered | failed | expired. A job found in submitting after a crash may or may not have reached the SMSC, so it goes to needs_review instead of being resent blindly.';
COMMENT ON COLUMN sms_jobs.provider_message_id IS
    'Normalised id of the first (or only) submitted part, for display and lookups; every part, including the first, is in sms_job_parts, which is what receipts are matched against.';
COMMENT ON COLUMN sms_jobs.valid_until IS
    'After this the job is not sent any more (expired), however many retries are left.';
COMMENT ON COLUMN sms_jobs.attempts IS
    'Submit attempts (transient failures retried through the delay queues); throttling waits do not count.';

CREATE TABLE sms_job_parts (
    job_id              uuid        NOT NULL REFERENCES sms_jobs (job_id) ON DELETE CASCADE,
    part_number         integer     NOT NULL CHECK (part_number BETWEEN 1 AND 255),
    connector           text        NOT NULL,
    provider_message_id text        NOT NULL CHECK (char_length(provider_message_id) BETWEEN 1 AND 128),
    submitted_at        timestamptz NOT NULL DEFAULT now(),
    receipt_status      text        CHECK (receipt_status IN (
                                        'enroute', 'delivered', 'expired', 'deleted', 'undeliverable',
                                        'accepted', 'unknown', 'rejected', 'skipped')),
    receipt_error_code  text,
    receipt_at          timestamptz,
    PRIMARY KEY (job_id, part_number),
    CONSTRAINT sms_job_parts_connector_provider_id_key UNIQUE (connector, provider_message_id)
);
COMMENT ON TABLE sms_job_parts IS
    'A long message split with UDH is one submit_sm per part, each with its own message id and its own delivery receipt; the job''s state aggregates its parts.';

CREATE TABLE sms_job_events (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      uuid        NOT NULL REFERENCES sms_jobs (job_id) ON DELETE CASCADE,
    from_state  text        CHECK (from_state IN (
                                'queued', 'submitting', 'submitted', 'delivered',
                                'failed', 'expired', 'needs_review')),
    to_state    text        NOT NULL CHECK (to_state IN (
                                'queued', 'submitting', 'submitted', 'delivered',
                                'failed', 'expired', 'needs_review')),
    at          timestamptz NOT NULL DEFAULT now(),
    attempt     integer     CHECK (attempt >= 0),
    detail      text        NOT NULL DEFAULT ''
);
CREATE INDEX sms_job_events_job_idx ON sms_job_events (job_id, id);
COMMENT ON COLUMN sms_job_events.from_state IS 'NULL for the event that created the job.';

CREATE TABLE unmatched_delivery_receipts (
    id                  bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    connector           text        NOT NULL,
    provider_message_id text        NOT NULL CHECK (char_length(provider_message_id) BETWEEN 1 AND 128),
    status              text        NOT NULL CHECK (status IN (
                                        'enroute', 'delivered', 'expired', 'deleted', 'undeliverable',
                                        'accepted', 'unknown', 'rejected', 'skipped')),
    error_code          text,
    done_at             timestamptz,
    received_at         timestamptz NOT NULL DEFAULT now(),
    raw                 text        NOT NULL DEFAULT ''
);
CREATE INDEX unmatched_delivery_receipts_lookup_idx
    ON unmatched_delivery_receipts (connector, provider_message_id);
CREATE INDEX unmatched_delivery_receipts_received_idx ON unmatched_delivery_receipts (received_at);
COMMENT ON TABLE unmatched_delivery_receipts IS
    'Receipts that arrived before the submit response (and so the part''s message id) was recorded. Recording a part applies and deletes its waiting receipts; both paths must serialise on the id (e.g. pg_advisory_xact_lock(hashtext(connector || '' '' || provider_message_id))) or a receipt can slip between them. Old rows expire by received_at.';
COMMENT ON COLUMN unmatched_delivery_receipts.raw IS
    'The receipt as received (deliver_sm short message text or HTTP body), for support.';

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
    'sms.status.changed events, written in the same transaction as the state change. Publishing is at-least-once: message_id goes out as the AMQP message-id so consumers can drop duplicates.';
