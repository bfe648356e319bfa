-- Where a company's SMS may go: its own region plus the regions its admin added, and a daily cap
-- on SMS to other regions (ingest counts it in Redis, shared across replicas).
ALTER TABLE companies
    ADD COLUMN allowed_destination_regions text[] NOT NULL DEFAULT '{}'
        CONSTRAINT companies_destination_regions_normalised CHECK (
            array_position(allowed_destination_regions, NULL) IS NULL
            AND cardinality(allowed_destination_regions) <= 250
            AND array_to_string(allowed_destination_regions, ',') ~ '^([A-Z]{2}(,[A-Z]{2})*)?$'
        ),
    ADD COLUMN international_sms_per_day integer NOT NULL DEFAULT 100
        CHECK (international_sms_per_day >= 0);
COMMENT ON COLUMN companies.allowed_destination_regions IS
    'Regions besides default_region whose numbers may receive this company''s SMS; empty: its own region only.';
COMMENT ON COLUMN companies.international_sms_per_day IS
    'Most SMS per UTC day to numbers outside default_region (100, GOV.UK Notify''s default); 0: none.';
