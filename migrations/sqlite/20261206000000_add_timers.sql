-- Durable timers: events a step asked for later (`emit.delay-ms`), written in the commit
-- that asked for them and moved to the outbox, once, when due by the store's clock.
CREATE TABLE timers (
    event_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    order_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    step TEXT NOT NULL,
    step_version TEXT NOT NULL,
    occurred_at_ms INTEGER NOT NULL,
    attempt INTEGER,
    trace TEXT,
    due_at_ms INTEGER NOT NULL
);
CREATE INDEX timers_due ON timers (due_at_ms);
CREATE INDEX timers_by_order ON timers (order_id);
