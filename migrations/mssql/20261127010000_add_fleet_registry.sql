-- The fleet's plugin registry and its hosts, in the store every host shares:
-- component versions by digest (kept for rollback and pinning), the serving and previous
-- version of each step with a generation for compare-and-set, the history of changes,
-- and each live host's heartbeat with the versions it serves.

CREATE TABLE plugin_versions (
    digest NVARCHAR(100) PRIMARY KEY,
    name NVARCHAR(450) NOT NULL,
    version NVARCHAR(450) NOT NULL,
    subscribes NVARCHAR(MAX) NOT NULL,
    bytes VARBINARY(MAX) NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX plugin_versions_by_name ON plugin_versions (name);

CREATE TABLE plugin_slots (
    name NVARCHAR(450) PRIMARY KEY,
    current_digest NVARCHAR(100) NOT NULL,
    previous_digest NVARCHAR(100) NULL,
    generation BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

CREATE TABLE plugin_history (
    id BIGINT IDENTITY(1,1) PRIMARY KEY,
    name NVARCHAR(450) NOT NULL,
    action NVARCHAR(100) NOT NULL,
    digest NVARCHAR(100) NOT NULL,
    reason NVARCHAR(MAX) NOT NULL,
    host_id NVARCHAR(450) NOT NULL,
    at_ms BIGINT NOT NULL
);
CREATE INDEX plugin_history_by_name ON plugin_history (name, id);

CREATE TABLE hosts (
    host_id NVARCHAR(450) PRIMARY KEY,
    http_addr NVARCHAR(450) NOT NULL,
    started_at_ms BIGINT NOT NULL,
    seen_at_ms BIGINT NOT NULL,
    steps NVARCHAR(MAX) NOT NULL
);
