-- What the CSV import contract (proto/email2sms/policy/v1/import.proto) needs beyond the initial
-- schema: the uploaded file name, the Messenger user each previewed row resolved to (so that the
-- commit applies exactly what the admin saw, even if usernames change in between), and the
-- MALFORMED_ROW verdict.

ALTER TABLE imports ADD COLUMN file_name text NOT NULL DEFAULT ''
    CHECK (char_length(file_name) <= 500);

ALTER TABLE import_rows ADD COLUMN messenger_user_id uuid;
ALTER TABLE import_rows DROP CONSTRAINT import_rows_status_check;
ALTER TABLE import_rows ADD CONSTRAINT import_rows_status_check CHECK (status IN (
    'ok', 'invalid_email', 'unknown_user', 'inactive_user', 'duplicate_in_file',
    'already_registered', 'registered_to_other_company', 'malformed_row'));
-- An OK row always names the user its entry will forward through.
ALTER TABLE import_rows ADD CONSTRAINT import_rows_ok_has_user
    CHECK (status <> 'ok' OR messenger_user_id IS NOT NULL);
