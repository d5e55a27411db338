-- The saga's tables on SQL Server. Keyed text columns are NVARCHAR(450) (an index key
-- may be at most 900 bytes); documents are NVARCHAR(MAX); times are milliseconds.

CREATE TABLE orders (
    seq BIGINT IDENTITY(1, 1) PRIMARY KEY,
    id NVARCHAR(450) NOT NULL UNIQUE,
    customer_id NVARCHAR(450) NOT NULL,
    status NVARCHAR(32) NOT NULL,
    cancel_reason NVARCHAR(64) NULL,
    total_cents BIGINT NOT NULL,
    items NVARCHAR(MAX) NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE INDEX orders_by_status ON orders (status, seq);

CREATE TABLE idempotency_keys (
    [key] NVARCHAR(450) PRIMARY KEY,
    body_hash NVARCHAR(128) NOT NULL,
    order_id NVARCHAR(450) NOT NULL,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE outbox (
    seq BIGINT IDENTITY(1, 1) PRIMARY KEY,
    event_id NVARCHAR(450) NOT NULL UNIQUE,
    kind NVARCHAR(450) NOT NULL,
    order_id NVARCHAR(450) NOT NULL,
    payload NVARCHAR(MAX) NOT NULL,
    step NVARCHAR(450) NOT NULL,
    step_version NVARCHAR(450) NOT NULL,
    occurred_at_ms BIGINT NOT NULL,
    relayed_at_ms BIGINT NULL
);
CREATE INDEX outbox_unrelayed ON outbox (seq) WHERE relayed_at_ms IS NULL;
CREATE INDEX outbox_by_order ON outbox (order_id, seq);

CREATE TABLE deliveries (
    id BIGINT IDENTITY(1, 1) PRIMARY KEY,
    consumer NVARCHAR(450) NOT NULL,
    event_id NVARCHAR(450) NOT NULL,
    event NVARCHAR(MAX) NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    due_at_ms BIGINT NOT NULL,
    last_error NVARCHAR(MAX) NULL,
    CONSTRAINT deliveries_once UNIQUE (consumer, event_id)
);
CREATE INDEX deliveries_due ON deliveries (consumer, due_at_ms, id);

CREATE TABLE inbox (
    consumer NVARCHAR(450) NOT NULL,
    event_id NVARCHAR(450) NOT NULL,
    step_version NVARCHAR(450) NOT NULL,
    handled_at_ms BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);

CREATE TABLE step_state (
    step NVARCHAR(450) NOT NULL,
    [key] NVARCHAR(450) NOT NULL,
    value VARBINARY(MAX) NOT NULL,
    PRIMARY KEY (step, [key])
);

CREATE TABLE dead_letters (
    id NVARCHAR(450) PRIMARY KEY,
    consumer NVARCHAR(450) NOT NULL,
    event_id NVARCHAR(450) NOT NULL,
    event NVARCHAR(MAX) NOT NULL,
    error NVARCHAR(MAX) NOT NULL,
    attempts BIGINT NOT NULL,
    dead_lettered_at_ms BIGINT NOT NULL
);

CREATE TABLE stock (
    sku NVARCHAR(450) PRIMARY KEY,
    available BIGINT NOT NULL,
    reserved BIGINT NOT NULL,
    sold BIGINT NOT NULL,
    seq BIGINT NOT NULL
);
