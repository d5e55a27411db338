-- Versions as first-class:
-- * a step's slot may carry a rollout (canary with a percentage, or shadow);
-- * pins: the version that handled an order's first event, per step, so its later
--   events (a refund) run on the same code;
-- * version overrides: a dead letter replayed on a chosen version;
-- * recordings: every dead letter's last attempt, and sampled successful calls.

ALTER TABLE plugin_slots ADD COLUMN rollout_mode TEXT;
ALTER TABLE plugin_slots ADD COLUMN rollout_digest TEXT;
ALTER TABLE plugin_slots ADD COLUMN rollout_percent BIGINT;
ALTER TABLE plugin_slots ADD COLUMN rollout_started_at_ms BIGINT;

CREATE TABLE pins (
    step TEXT NOT NULL,
    order_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (step, order_id)
);
CREATE INDEX pins_by_age ON pins (created_at_ms);

CREATE TABLE version_overrides (
    consumer TEXT NOT NULL,
    event_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);

ALTER TABLE dead_letters ADD COLUMN recording TEXT;

CREATE TABLE recordings (
    id TEXT PRIMARY KEY,
    step TEXT NOT NULL,
    event_id TEXT NOT NULL,
    version TEXT NOT NULL,
    outcome TEXT NOT NULL,
    recorded_at_ms BIGINT NOT NULL,
    recording TEXT NOT NULL
);
CREATE INDEX recordings_by_step ON recordings (step, recorded_at_ms);
