-- Hardening for many writers and long-running deployments:
-- * step state carries a version, checked at commit (optimistic concurrency);
-- * the embedded transport's subscriptions are durable, so events for a step that is
--   not loaded wait for it instead of being dropped;
-- * deliveries are claimed by one host at a time, for a lease;
-- * orders remember when a stalled one was last redriven;
-- * indexes for the retention job.

ALTER TABLE step_state ADD version BIGINT NOT NULL CONSTRAINT step_state_version_default DEFAULT 0;

CREATE TABLE subscriptions (
    consumer NVARCHAR(450) NOT NULL,
    pattern NVARCHAR(450) NOT NULL,
    PRIMARY KEY (consumer, pattern)
);

ALTER TABLE deliveries ADD claimed_by NVARCHAR(450) NULL;
ALTER TABLE deliveries ADD claimed_until_ms BIGINT NULL;

ALTER TABLE orders ADD redrives BIGINT NOT NULL CONSTRAINT orders_redrives_default DEFAULT 0;
ALTER TABLE orders ADD next_redrive_at_ms BIGINT NULL;
CREATE INDEX orders_pending_progress ON orders (updated_at_ms) WHERE status = 'pending';

CREATE INDEX inbox_by_age ON inbox (handled_at_ms);
CREATE INDEX outbox_by_age ON outbox (occurred_at_ms);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at_ms);

CREATE TABLE leases (
    name NVARCHAR(450) PRIMARY KEY,
    holder NVARCHAR(450) NOT NULL,
    until_ms BIGINT NOT NULL
);
