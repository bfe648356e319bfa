-- The sender log counts accepted mail (ingest reports counts in batches), and a company's admins
-- get at most a budget of single new-server alerts per window; the rest go out in one digest.

-- A server first seen through an authenticated mail that was then refused (a bad recipient, no
-- forwarding user) has a row but no accepted mail yet.
ALTER TABLE sender_log DROP CONSTRAINT sender_log_seen_count_check;
ALTER TABLE sender_log ADD CONSTRAINT sender_log_seen_count_check CHECK (seen_count >= 0);
COMMENT ON COLUMN sender_log.seen_count IS
    'Accepted mails from this server: the sum of the accepted_messages of its sender.ip_seen reports.';

ALTER TABLE sender_log ADD COLUMN admin_notify_digest_since timestamptz;
COMMENT ON COLUMN sender_log.admin_notify_digest_since IS
    'Set when the company''s single-alert budget was spent as this server was first seen: its alert waits for the company''s digest, sent once the oldest such row has waited a whole budget window. NULL: a single alert.';

-- The budget check counts a company's single alerts of the last window.
CREATE INDEX sender_log_single_alerts_idx ON sender_log (company_id, admin_notified_at)
    WHERE admin_notify_digest_since IS NULL;
-- The retry loop finds the companies with a digest due.
CREATE INDEX sender_log_digest_due_idx ON sender_log (company_id, admin_notify_digest_since)
    WHERE admin_notified_at IS NULL AND admin_notify_digest_since IS NOT NULL;
