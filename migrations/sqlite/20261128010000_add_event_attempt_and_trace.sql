-- Each event remembers the attempt of the call that emitted it (order timelines show
-- it) and, when tracing is on, the W3C traceparent of that call, which the relay
-- carries to the broker so one order is one trace across hosts and steps.

ALTER TABLE outbox ADD COLUMN attempt INTEGER;
ALTER TABLE outbox ADD COLUMN trace TEXT;
