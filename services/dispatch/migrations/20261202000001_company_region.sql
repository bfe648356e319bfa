-- The company's default region ingest read the recipient with (SmsJob.company_region), so that
-- ListMessages can read a national number the way ingest did. NULL for jobs recorded before this
-- column, or for a company without a region.
ALTER TABLE sms_jobs ADD COLUMN company_region text;
-- ListMessages reads a company's region from its newest job that has one, on every search for a
-- national number: this index finds it without reading the company's other jobs.
CREATE INDEX sms_jobs_company_region_idx ON sms_jobs (company_id, created_at DESC)
    WHERE company_region IS NOT NULL;
