-- Durable timers: events a step asked for later (`emit.delay-ms`), written in the commit
-- that asked for them and moved to the outbox, once, when due by the store's clock.
CREATE TABLE timers (
    event_id NVARCHAR(450) NOT NULL PRIMARY KEY,
    kind NVARCHAR(450) NOT NULL,
    order_id NVARCHAR(450) NOT NULL,
    payload NVARCHAR(MAX) NOT NULL,
    step NVARCHAR(450) NOT NULL,
    step_version NVARCHAR(450) NOT NULL,
    occurred_at_ms BIGINT NOT NULL,
    attempt BIGINT NULL,
    trace NVARCHAR(200) NULL,
    due_at_ms BIGINT NOT NULL
);
CREATE INDEX timers_due ON timers (due_at_ms);
CREATE INDEX timers_by_order ON timers (order_id);
