-- The fleet's plugin registry and its hosts, in the store every host shares:
-- component versions by digest (kept for rollback and pinning), the serving and previous
-- version of each step with a generation for compare-and-set, the history of changes,
-- and each live host's heartbeat with the versions it serves.

CREATE TABLE plugin_versions (
    digest TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    subscribes TEXT NOT NULL,
    bytes BLOB NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX plugin_versions_by_name ON plugin_versions (name);

CREATE TABLE plugin_slots (
    name TEXT PRIMARY KEY,
    current_digest TEXT NOT NULL,
    previous_digest TEXT,
    generation BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

CREATE TABLE plugin_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    action TEXT NOT NULL,
    digest TEXT NOT NULL,
    reason TEXT NOT NULL,
    host_id TEXT NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX plugin_history_by_name ON plugin_history (name, id);

CREATE TABLE hosts (
    host_id TEXT PRIMARY KEY,
    http_addr TEXT NOT NULL,
    started_at_ms BIGINT NOT NULL,
    seen_at_ms BIGINT NOT NULL,
    steps TEXT NOT NULL
);
