-- Every job changes state three times or more in a few milliseconds, so each index on sms_jobs and
-- outbox is paid for several times per SMS. These had no reader:
--
-- * sms_jobs_submitting_idx and sms_jobs_open_valid_until_idx were meant for sweeps (stale
--   "submitting" jobs, queued jobs past their validity) that do not exist: a job is only ever
--   looked at again when the queue delivers it again, and that path reads it by its key.
-- * outbox_unpublished_idx: published rows are deleted now, so every row is unpublished and the
--   relay's oldest-first scan is the primary key's order.
DROP INDEX sms_jobs_submitting_idx;
DROP INDEX sms_jobs_open_valid_until_idx;
DROP INDEX outbox_unpublished_idx;
