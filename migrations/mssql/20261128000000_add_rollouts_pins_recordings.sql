-- Versions as first-class:
-- * a step's slot may carry a rollout (canary with a percentage, or shadow);
-- * pins: the version that handled an order's first event, per step, so its later
--   events (a refund) run on the same code;
-- * version overrides: a dead letter replayed on a chosen version;
-- * recordings: every dead letter's last attempt, and sampled successful calls.

ALTER TABLE plugin_slots ADD rollout_mode NVARCHAR(20) NULL;
ALTER TABLE plugin_slots ADD rollout_digest NVARCHAR(100) NULL;
ALTER TABLE plugin_slots ADD rollout_percent BIGINT NULL;
ALTER TABLE plugin_slots ADD rollout_started_at_ms BIGINT NULL;

CREATE TABLE pins (
    step NVARCHAR(450) NOT NULL,
    order_id NVARCHAR(450) NOT NULL,
    digest NVARCHAR(100) NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (step, order_id)
);
CREATE INDEX pins_by_age ON pins (created_at_ms);

CREATE TABLE version_overrides (
    consumer NVARCHAR(450) NOT NULL,
    event_id NVARCHAR(450) NOT NULL,
    digest NVARCHAR(100) NOT NULL,
    PRIMARY KEY (consumer, event_id)
);

ALTER TABLE dead_letters ADD recording NVARCHAR(MAX) NULL;

CREATE TABLE recordings (
    id NVARCHAR(100) PRIMARY KEY,
    step NVARCHAR(450) NOT NULL,
    event_id NVARCHAR(450) NOT NULL,
    version NVARCHAR(100) NOT NULL,
    outcome NVARCHAR(100) NOT NULL,
    recorded_at_ms BIGINT NOT NULL,
    recording NVARCHAR(MAX) NOT NULL
);
CREATE INDEX recordings_by_step ON recordings (step, recorded_at_ms);
