-- The saga's tables on PostgreSQL: orders and their read models, the transactional outbox,
-- the embedded transport's deliveries, the inbox, step state and dead letters.

CREATE TABLE orders (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    customer_id TEXT NOT NULL,
    status TEXT NOT NULL,
    cancel_reason TEXT,
    total_cents BIGINT NOT NULL,
    items TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE INDEX orders_by_status ON orders (status, seq);

CREATE TABLE idempotency_keys (
    key TEXT PRIMARY KEY,
    body_hash TEXT NOT NULL,
    order_id TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE outbox (
    seq BIGSERIAL PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    order_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    step TEXT NOT NULL,
    step_version TEXT NOT NULL,
    occurred_at_ms BIGINT NOT NULL,
    relayed_at_ms BIGINT
);
CREATE INDEX outbox_unrelayed ON outbox (seq) WHERE relayed_at_ms IS NULL;
CREATE INDEX outbox_by_order ON outbox (order_id, seq);

CREATE TABLE deliveries (
    id BIGSERIAL PRIMARY KEY,
    consumer TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    due_at_ms BIGINT NOT NULL,
    last_error TEXT,
    UNIQUE (consumer, event_id)
);
CREATE INDEX deliveries_due ON deliveries (consumer, due_at_ms, id);

CREATE TABLE inbox (
    consumer TEXT NOT NULL,
    event_id TEXT NOT NULL,
    step_version TEXT NOT NULL,
    handled_at_ms BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);

CREATE TABLE step_state (
    step TEXT NOT NULL,
    key TEXT NOT NULL,
    value BYTEA NOT NULL,
    PRIMARY KEY (step, key)
);

CREATE TABLE dead_letters (
    id TEXT PRIMARY KEY,
    consumer TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event TEXT NOT NULL,
    error TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    dead_lettered_at_ms BIGINT NOT NULL
);

CREATE TABLE stock (
    sku TEXT PRIMARY KEY,
    available BIGINT NOT NULL,
    reserved BIGINT NOT NULL,
    sold BIGINT NOT NULL,
    seq BIGINT NOT NULL
);
