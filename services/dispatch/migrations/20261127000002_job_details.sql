-- What the status API shows beyond the first migration: the truncation flag, the kind of the last
-- failure, the email the SMS came from, ingest's creation time, and the per-job sequence of
-- sms.status.changed events (consumers drop events older than the last one they applied).

ALTER TABLE sms_jobs
    ADD COLUMN truncated        boolean     NOT NULL DEFAULT false,
    ADD COLUMN failure_kind     text        CHECK (failure_kind IN ('transient', 'permanent', 'throttled')),
    ADD COLUMN origin           bytea,
    ADD COLUMN job_created_at   timestamptz,
    ADD COLUMN status_sequence  bigint      NOT NULL DEFAULT 0 CHECK (status_sequence >= 0);

COMMENT ON COLUMN sms_jobs.origin IS
    'The email the SMS came from: protobuf email2sms.queue.v1.EmailOrigin as ingest published it (shown by GetMessage, never queried).';
COMMENT ON COLUMN sms_jobs.job_created_at IS
    'When ingest created the job (SmsJob.create_time); created_at is when dispatch first recorded it.';
COMMENT ON COLUMN sms_jobs.status_sequence IS
    'Incremented by every state change; published as SmsStatusChanged.sequence.';
