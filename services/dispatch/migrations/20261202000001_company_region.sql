-- The company's default region ingest read the recipient with (SmsJob.company_region), so that
-- ListMessages can read a national number the way ingest did. NULL for jobs recorded before this
-- column, or for a company without a region.
ALTER TABLE sms_jobs ADD COLUMN company_region text;
