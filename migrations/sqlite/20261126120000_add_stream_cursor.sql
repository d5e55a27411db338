-- The outbox has two cursors: the transport's (relayed_at_ms) and the event stream's
-- (streamed_at_ms). Each relay marks its own, so one being down never holds up the other.

ALTER TABLE outbox ADD COLUMN streamed_at_ms INTEGER;
CREATE INDEX outbox_unstreamed ON outbox (seq) WHERE streamed_at_ms IS NULL;
