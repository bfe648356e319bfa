-- CompanyLimits.keep_typography: false (the default for every company, old and new) replaces
-- typographic punctuation by GSM-7 equivalents when that keeps an SMS in GSM-7.
ALTER TABLE companies ADD COLUMN keep_typography boolean NOT NULL DEFAULT false;
