-- The outbox holds one row per writing transaction instead of one per event (the shape
-- libs/queue's relay reads): a transaction that records hundreds of state changes wrote hundreds
-- of rows, each with its index entries, its lock and its delete, which at dispatch's rate was the
-- largest share of the database's work. Events keep their order inside a row; rows go out in id
-- order, one relay at a time. Rows not yet published are carried over; published ones were
-- already deleted (published_at is gone with them).

ALTER TABLE outbox RENAME TO outbox_per_event;
-- So the new table's key and identity get the usual names.
ALTER TABLE outbox_per_event RENAME CONSTRAINT outbox_pkey TO outbox_per_event_pkey;
ALTER SEQUENCE outbox_id_seq RENAME TO outbox_per_event_id_seq;

CREATE TABLE outbox (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_ids     uuid[]      NOT NULL,
    routing_keys    text[]      NOT NULL,
    payloads        bytea[]     NOT NULL,
    event_count     integer     NOT NULL CHECK (event_count >= 1),
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempts        integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error      text,
    CONSTRAINT outbox_arrays_have_event_count_elements CHECK (
        cardinality(message_ids) = event_count
        AND cardinality(routing_keys) = event_count
        AND cardinality(payloads) = event_count)
);
COMMENT ON TABLE outbox IS
    'Events written in the same transaction as the change (one row per transaction, parallel arrays), published later with confirms and deleted once every event of the row is confirmed. Publishing is at-least-once: each message_ids element goes out as its event''s AMQP message-id so consumers can drop duplicates.';

-- One line per waiting event, for support and tests: what is waiting, in publishing order.
CREATE VIEW outbox_events AS
SELECT o.id AS outbox_id, e.position, e.message_id, e.routing_key, e.payload, o.created_at,
       o.attempts, o.last_error
FROM outbox AS o,
     unnest(o.message_ids, o.routing_keys, o.payloads) WITH ORDINALITY
         AS e(message_id, routing_key, payload, position);

INSERT INTO outbox (message_ids, routing_keys, payloads, event_count, created_at, attempts,
                    last_error)
SELECT ARRAY[message_id], ARRAY[routing_key], ARRAY[payload], 1, created_at, attempts, last_error
FROM outbox_per_event
WHERE published_at IS NULL
ORDER BY id;

DROP TABLE outbox_per_event;
