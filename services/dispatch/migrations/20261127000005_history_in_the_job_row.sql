-- A job's state history moves into its own row, and the row is updated in place.
--
-- Each SMS changed state three or four times, and each change wrote a sms_job_events row with two
-- index entries, and a new sms_jobs row version with an entry in each of its four indexes. Now a
-- change appends to sms_jobs.history, and with no indexed column changing (the provider id index
-- is gone: sms_job_parts holds every part's id under its own unique key, and receipts are matched
-- there) and room left on the page (fillfactor), PostgreSQL makes it a heap-only update with no
-- index entry at all.

DROP INDEX sms_jobs_connector_provider_id_key;
ALTER TABLE sms_jobs SET (fillfactor = 70);

-- Only the shape is checked: a CHECK is re-read from its stored form by every statement that
-- writes the table, and a JSON path test of the states cost a tenth of the database's time here.
-- The states in it are JobState values written by dispatch alone.
ALTER TABLE sms_jobs
    ADD COLUMN history jsonb NOT NULL DEFAULT '[]'
        CONSTRAINT sms_jobs_history_is_an_array CHECK (jsonb_typeof(history) = 'array');
COMMENT ON COLUMN sms_jobs.history IS
    'Every state change, oldest first: objects {from_state, to_state, at, attempt, detail}; from_state is null for the reception. Read it through the sms_job_history view.';

UPDATE sms_jobs AS j
SET history = e.history
FROM (SELECT job_id,
             jsonb_agg(jsonb_build_object('from_state', from_state, 'to_state', to_state,
                                          'at', at, 'attempt', attempt, 'detail', detail)
                       ORDER BY id) AS history
      FROM sms_job_events
      GROUP BY job_id) AS e
WHERE e.job_id = j.job_id;

DROP TABLE sms_job_events;

CREATE VIEW sms_job_history AS
SELECT j.job_id, e.position, e.change ->> 'from_state' AS from_state,
       e.change ->> 'to_state' AS to_state, (e.change ->> 'at')::timestamptz AS at,
       (e.change ->> 'attempt')::integer AS attempt, e.change ->> 'detail' AS detail
FROM sms_jobs AS j, jsonb_array_elements(j.history) WITH ORDINALITY AS e(change, position);
COMMENT ON VIEW sms_job_history IS 'sms_jobs.history, a line per state change.';
