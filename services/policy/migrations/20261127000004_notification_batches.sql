-- Notification batches and the per-address details the API reports, plus what the sender log needs
-- to retry an admin alert without ever sending it twice.

-- One row per SendNotification request (or commit with notify): the unit GetNotification,
-- ListNotificationResults and RetryNotification name. (company_id, request_id) is unique so that a
-- repeated request finds the first batch instead of making a second one.
CREATE TABLE notification_batches (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    company_id      uuid        NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    request_id      text        NOT NULL CHECK (char_length(request_id) BETWEEN 1 AND 200),
    import_id       uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz,
    CONSTRAINT notification_batches_request_key UNIQUE (company_id, request_id)
);

ALTER TABLE notifications
    ADD COLUMN batch_id         uuid REFERENCES notification_batches (id) ON DELETE CASCADE,
    ADD COLUMN email_address_id uuid,
    ADD COLUMN retryable        boolean NOT NULL DEFAULT false;
CREATE INDEX notifications_batch_idx ON notifications (batch_id, email_address);

-- 'sending' marks a row claimed by one sender (so two concurrent retries cannot both send it);
-- 'skipped' is an address not sent on purpose (its entry was deleted or disabled meanwhile).
ALTER TABLE notifications DROP CONSTRAINT notifications_status_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_status_check
    CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'skipped'));

ALTER TABLE sender_log
    ADD COLUMN reverse_dns_name         text NOT NULL DEFAULT '',
    ADD COLUMN admin_notify_error       text,
    -- A lease: whoever sets it (the consumer on first sight, or the retry loop) is the only one
    -- sending the alert until it expires, so the alert is never sent twice concurrently.
    ADD COLUMN admin_notify_claimed_until timestamptz;
