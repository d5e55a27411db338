-- The outbox has two cursors: the transport's (relayed_at_ms) and the event stream's
-- (streamed_at_ms). Each relay marks its own, so one being down never holds up the other.
-- The index is created through EXEC: one batch cannot use a column it adds.

ALTER TABLE outbox ADD streamed_at_ms BIGINT NULL;
EXEC('CREATE INDEX outbox_unstreamed ON outbox (seq) WHERE streamed_at_ms IS NULL');
