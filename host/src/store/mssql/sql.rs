//! Every statement the SQL Server backend issues, in one place, so a test can parse each
//! with a T-SQL parser.
//!
//! No text parameter is ever NULL: an absent text travels as `N''`, turned back into NULL
//! by `NULLIF` in the statement (see `or_empty` in `mod.rs`). Upserts insert if absent
//! first, then update: the update always finds a committed row, with or without hints.

pub const INSERT_IDEMPOTENCY: &str = "INSERT INTO idempotency_keys ([key], body_hash, order_id, created_at_ms) \
    SELECT @P1, @P2, @P3, @P4 WHERE NOT EXISTS \
    (SELECT 1 FROM idempotency_keys WITH (UPDLOCK, HOLDLOCK) WHERE [key] = @P1)";
pub const SELECT_IDEMPOTENCY: &str = "SELECT order_id, body_hash FROM idempotency_keys WHERE [key] = @P1";
pub const INSERT_ORDER: &str = "INSERT INTO orders \
    (id, customer_id, status, total_cents, items, created_at_ms, updated_at_ms) \
    VALUES (@P1, @P2, 'pending', @P3, @P4, @P5, @P5)";
pub const INSERT_EVENT: &str = "INSERT INTO outbox \
    (event_id, kind, order_id, payload, step, step_version, occurred_at_ms, attempt, trace) \
    VALUES (@P1, @P2, @P3, @P4, @P5, @P6, @P7, @P8, NULLIF(@P9, N''))";
pub const SELECT_ORDER: &str = "SELECT seq, id, customer_id, status, cancel_reason, total_cents, items, \
    created_at_ms, updated_at_ms FROM orders WHERE id = @P1";
pub const SELECT_ORDERS: &str = "SELECT TOP (@P1) seq, id, customer_id, status, cancel_reason, total_cents, \
    items, created_at_ms, updated_at_ms FROM orders \
    WHERE (@P2 = N'' OR status = @P2) AND (@P3 IS NULL OR seq < @P3) ORDER BY seq DESC";
pub const SELECT_TIMELINES: &str = "SELECT order_id, event_id, kind, occurred_at_ms, step, step_version, attempt \
    FROM outbox WHERE order_id IN (SELECT value FROM OPENJSON(@P1)) ORDER BY seq";
/// A page of orders joined with their events: the order's nine columns, then the event's seven.
pub const SELECT_ORDER_PAGE: &str = "WITH page AS (SELECT TOP (@P1) seq, id, customer_id, status, cancel_reason, \
    total_cents, items, created_at_ms, updated_at_ms FROM orders \
    WHERE (@P2 = N'' OR status = @P2) AND (@P3 IS NULL OR seq < @P3) ORDER BY seq DESC) \
    SELECT page.seq, page.id, page.customer_id, page.status, page.cancel_reason, page.total_cents, page.items, \
    page.created_at_ms, page.updated_at_ms, e.order_id, e.event_id, e.kind, e.occurred_at_ms, e.step, e.step_version, \
    e.attempt FROM page LEFT JOIN outbox e ON e.order_id = page.id ORDER BY page.seq DESC, e.seq";
pub const UPDATE_ORDER_STATUS: &str = "UPDATE orders SET status = @P1, cancel_reason = NULLIF(@P2, N''), \
    updated_at_ms = @P3, redrives = 0, next_redrive_at_ms = NULL WHERE id = @P4 AND status IN (SELECT value FROM OPENJSON(@P5))";
pub const SELECT_STOCK: &str = "SELECT sku, available, reserved, sold, seq FROM stock WHERE sku = @P1";
pub const SELECT_UNRELAYED: &str = "SELECT TOP (@P1) seq, event_id, kind, order_id, payload, step, \
    step_version, occurred_at_ms, attempt, trace FROM outbox WITH (READPAST) WHERE relayed_at_ms IS NULL ORDER BY seq";
pub const MARK_RELAYED: &str = "UPDATE outbox SET relayed_at_ms = @P1 \
    WHERE seq IN (SELECT CAST(value AS BIGINT) FROM OPENJSON(@P2))";
pub const OUTBOX_LAG: &str = "SELECT COUNT_BIG(*), MIN(occurred_at_ms) FROM outbox WHERE relayed_at_ms IS NULL";
pub const SELECT_UNSTREAMED: &str = "SELECT TOP (@P1) seq, event_id, kind, order_id, payload, step, \
    step_version, occurred_at_ms, attempt, trace FROM outbox WITH (READPAST) WHERE streamed_at_ms IS NULL \
    ORDER BY seq";
pub const MARK_STREAMED: &str = "UPDATE outbox SET streamed_at_ms = @P1 \
    WHERE seq IN (SELECT CAST(value AS BIGINT) FROM OPENJSON(@P2))";
pub const STREAM_LAG: &str = "SELECT COUNT_BIG(*), MIN(occurred_at_ms) FROM outbox WHERE streamed_at_ms IS NULL";
pub const ENQUEUE: &str = "INSERT INTO deliveries (consumer, event_id, event, due_at_ms) \
    SELECT @P1, @P2, @P3, @P4 WHERE NOT EXISTS \
    (SELECT 1 FROM deliveries WITH (UPDLOCK, HOLDLOCK) WHERE consumer = @P1 AND event_id = @P2)";
pub const DELETE_DELIVERIES: &str =
    "DELETE FROM deliveries WHERE id IN (SELECT CAST(value AS BIGINT) FROM OPENJSON(@P1))";
/// Settles only what the holder still claims.
pub const SETTLE_DELIVERIES: &str = "DELETE FROM deliveries WHERE claimed_by = @P2 \
    AND id IN (SELECT CAST(value AS BIGINT) FROM OPENJSON(@P1))";
pub const SELECT_HANDLED: &str = "SELECT event_id FROM inbox WHERE consumer = @P1 \
    AND event_id IN (SELECT value FROM OPENJSON(@P2))";
pub const UPSERT_STOCK: &str = "INSERT INTO stock (sku, available, reserved, sold, seq) \
    SELECT @P1, @P2, @P3, @P4, @P5 WHERE NOT EXISTS (SELECT 1 FROM stock WITH (UPDLOCK, HOLDLOCK) WHERE sku = @P1); \
    UPDATE stock SET available = @P2, reserved = @P3, sold = @P4, seq = @P5 WHERE sku = @P1 AND seq < @P5";
pub const INSERT_DEAD_LETTER: &str = "INSERT INTO dead_letters \
    (id, consumer, event_id, event, error, attempts, dead_lettered_at_ms, recording) \
    VALUES (@P1, @P2, @P3, @P4, @P5, @P6, @P7, NULLIF(@P8, N''))";
pub const SELECT_DEAD_LETTERS: &str = "SELECT id, consumer, event_id, event, error, attempts, \
    dead_lettered_at_ms FROM dead_letters ORDER BY dead_lettered_at_ms, id";
pub const SELECT_DEAD_LETTER: &str = "SELECT id, consumer, event_id, event, error, attempts, \
    dead_lettered_at_ms FROM dead_letters WHERE id = @P1";
pub const TAKE_DEAD_LETTER: &str = "DELETE FROM dead_letters OUTPUT DELETED.id, DELETED.consumer, \
    DELETED.event_id, DELETED.event, DELETED.error, DELETED.attempts, DELETED.dead_lettered_at_ms \
    WHERE id = @P1";
pub const UNMARK_DEAD_LETTERED: &str = "DELETE FROM inbox WHERE consumer = @P1 AND event_id = @P2 \
    AND step_version LIKE 'dead-lettered:%'";
pub const ORDER_COUNTS: &str = "SELECT status, COUNT_BIG(*) FROM orders GROUP BY status";
pub const MIGRATIONS_TABLE_EXISTS: &str = "SELECT COUNT(*) FROM sys.tables WHERE name = '_wasaga_migrations'";
pub const CREATE_MIGRATIONS_TABLE: &str = "CREATE TABLE _wasaga_migrations \
    (version BIGINT PRIMARY KEY, description NVARCHAR(200) NOT NULL, applied_at_ms BIGINT NOT NULL)";
pub const APPLIED_MIGRATIONS: &str = "SELECT version FROM _wasaga_migrations";
pub const RECORD_MIGRATION: &str =
    "INSERT INTO _wasaga_migrations (version, description, applied_at_ms) VALUES (@P1, @P2, @P3)";
pub const SELECT_STATE: &str = "SELECT value, version FROM step_state WHERE step = @P1 AND [key] = @P2";
/// A racing insert of the same event is "already handled": a conflict, not an error.
pub const INSERT_INBOX: &str = "INSERT INTO inbox (consumer, event_id, step_version, handled_at_ms) \
    SELECT @P1, @P2, @P3, @P4 WHERE NOT EXISTS \
    (SELECT 1 FROM inbox WITH (UPDLOCK, HOLDLOCK) WHERE consumer = @P1 AND event_id = @P2)";
pub const LOCK_STATE_VERSIONS: &str = "SELECT [key], version FROM step_state WITH (UPDLOCK, HOLDLOCK) \
    WHERE step = @P1 AND [key] IN (SELECT value FROM OPENJSON(@P2))";
pub const INSERT_STATE_IF_ABSENT: &str = "INSERT INTO step_state (step, [key], value, version) \
    SELECT @P1, @P2, @P3, @P4 WHERE NOT EXISTS \
    (SELECT 1 FROM step_state WITH (UPDLOCK, HOLDLOCK) WHERE step = @P1 AND [key] = @P2)";
pub const UPSERT_STATE: &str = "INSERT INTO step_state (step, [key], value, version) SELECT @P1, @P2, @P3, @P4 \
    WHERE NOT EXISTS (SELECT 1 FROM step_state WITH (UPDLOCK, HOLDLOCK) WHERE step = @P1 AND [key] = @P2); \
    UPDATE step_state SET value = @P3, version = @P4 WHERE step = @P1 AND [key] = @P2";
pub const DELETE_STATE: &str = "DELETE FROM step_state WHERE step = @P1 AND [key] = @P2";
/// A write of a key the batch read: applies only if the key still has the version read.
pub const UPDATE_STATE_IF_VERSION: &str = "UPDATE step_state SET value = @P3, version = @P4 \
    WHERE step = @P1 AND [key] = @P2 AND version = @P5";
pub const DELETE_STATE_IF_VERSION: &str = "DELETE FROM step_state WHERE step = @P1 AND [key] = @P2 AND version = @P3";
pub const DELETE_SUBSCRIPTIONS: &str = "DELETE FROM subscriptions WHERE consumer = @P1";
pub const INSERT_SUBSCRIPTION: &str = "INSERT INTO subscriptions (consumer, pattern) SELECT @P1, @P2 \
    WHERE NOT EXISTS (SELECT 1 FROM subscriptions WITH (UPDLOCK, HOLDLOCK) WHERE consumer = @P1 AND pattern = @P2)";
pub const SELECT_SUBSCRIPTIONS: &str = "SELECT consumer, pattern FROM subscriptions ORDER BY consumer, pattern";
/// The store's clock, in milliseconds since the epoch: leases and claims compare it,
/// never a host's clock.
macro_rules! store_now {
    () => {
        "DATEDIFF_BIG(millisecond, '19700101', SYSUTCDATETIME())"
    };
}
/// Claims skip rows another host is claiming right now (READPAST) and rows it holds.
pub const CLAIM: &str = concat!(
    "UPDATE deliveries SET claimed_by = @P2, claimed_until_ms = ",
    store_now!(),
    " + @P3 \
    OUTPUT INSERTED.id, INSERTED.consumer, INSERTED.event_id, INSERTED.event, INSERTED.attempts, INSERTED.due_at_ms \
    WHERE id IN (SELECT TOP (@P5) id FROM deliveries WITH (UPDLOCK, READPAST, ROWLOCK) \
    WHERE consumer = @P1 AND due_at_ms <= @P4 AND (claimed_until_ms IS NULL OR claimed_until_ms <= ",
    store_now!(),
    ") ORDER BY due_at_ms, id)"
);
pub const RELEASE_CLAIMS: &str =
    "UPDATE deliveries SET claimed_by = NULL, claimed_until_ms = NULL WHERE claimed_by = @P1";
pub const RENEW_CLAIMS: &str =
    concat!("UPDATE deliveries SET claimed_until_ms = ", store_now!(), " + @P2 WHERE claimed_by = @P1");
pub const NEXT_DUE: &str = "SELECT MIN(CASE WHEN claimed_until_ms IS NOT NULL AND claimed_until_ms > due_at_ms \
    THEN claimed_until_ms ELSE due_at_ms END) FROM deliveries WHERE consumer = @P1";
pub const RETRY_DELIVERY: &str = "UPDATE deliveries SET attempts = attempts + @P1, due_at_ms = @P2, \
    last_error = @P3, claimed_by = NULL, claimed_until_ms = NULL WHERE id = @P4 AND claimed_by = @P5";
pub const REQUEUE: &str = "INSERT INTO deliveries (consumer, event_id, event, due_at_ms) \
    SELECT @P1, @P2, @P3, @P4 WHERE NOT EXISTS \
    (SELECT 1 FROM deliveries WITH (UPDLOCK, HOLDLOCK) WHERE consumer = @P1 AND event_id = @P2); \
    UPDATE deliveries SET attempts = 0, due_at_ms = @P4, last_error = NULL, claimed_by = NULL, \
    claimed_until_ms = NULL WHERE consumer = @P1 AND event_id = @P2";
pub const RENEW_LEASE: &str = concat!(
    "UPDATE leases SET holder = @P2, until_ms = ",
    store_now!(),
    " + @P3 WHERE name = @P1 AND (holder = @P2 OR until_ms < ",
    store_now!(),
    ")"
);
pub const INSERT_LEASE: &str = concat!(
    "INSERT INTO leases (name, holder, until_ms) SELECT @P1, @P2, ",
    store_now!(),
    " + @P3 WHERE NOT EXISTS (SELECT 1 FROM leases WITH (UPDLOCK, HOLDLOCK) WHERE name = @P1)"
);
pub const RELEASE_LEASE: &str = "DELETE FROM leases WHERE name = @P1 AND holder = @P2";
pub const INSERT_TIMER: &str = concat!(
    "INSERT INTO timers (event_id, kind, order_id, payload, step, step_version, occurred_at_ms, attempt, trace, \
     due_at_ms) VALUES (@P1, @P2, @P3, @P4, @P5, @P6, @P7, @P8, NULLIF(@P9, N''), ",
    store_now!(),
    " + @P10)"
);
pub const ANY_TIMER_DUE: &str = concat!("SELECT TOP (1) 1 FROM timers WHERE due_at_ms <= ", store_now!());
pub const FIRE_TIMERS: &str = concat!(
    "DELETE FROM timers OUTPUT DELETED.event_id, DELETED.kind, DELETED.order_id, DELETED.payload, DELETED.step, \
     DELETED.step_version, DELETED.occurred_at_ms, DELETED.attempt, DELETED.trace, DELETED.due_at_ms \
     WHERE event_id IN (SELECT TOP (@P1) event_id FROM timers WITH (UPDLOCK, READPAST) WHERE due_at_ms <= ",
    store_now!(),
    " ORDER BY due_at_ms)"
);
pub const SELECT_TIMERS: &str = "SELECT event_id, kind, order_id, step, due_at_ms FROM timers \
    WHERE order_id IN (SELECT value FROM OPENJSON(@P1)) ORDER BY due_at_ms, event_id";
pub const OVERDUE_ORDERS: &str = "SELECT TOP (@P2) id FROM orders WHERE status = 'pending' \
    AND created_at_ms <= @P1 ORDER BY created_at_ms";
pub const STALLED_ORDERS: &str = "UPDATE orders SET redrives = redrives + 1, \
    next_redrive_at_ms = @P1 + @P2 * (redrives + 1) OUTPUT INSERTED.id, INSERTED.status, INSERTED.updated_at_ms \
    WHERE id IN (SELECT TOP (@P3) id FROM orders WHERE redrives >= 0 AND updated_at_ms <= @P1 - @P2 \
    AND updated_at_ms >= @P4 AND COALESCE(next_redrive_at_ms, 0) <= @P1 ORDER BY updated_at_ms)";
pub const EVENTS_OF_ORDERS: &str = "SELECT event_id, kind, order_id, payload, step, step_version, occurred_at_ms, \
    attempt, trace FROM outbox WHERE relayed_at_ms IS NOT NULL AND occurred_at_ms >= @P2 \
    AND order_id IN (SELECT value FROM OPENJSON(@P1)) ORDER BY seq";
pub const MARK_CHECKED: &str = "UPDATE orders SET redrives = -1 FROM orders \
    JOIN OPENJSON(@P1) WITH (id NVARCHAR(450) '$.id', updated_at_ms BIGINT '$.updated_at_ms') AS c \
    ON orders.id = c.id AND orders.updated_at_ms = c.updated_at_ms";
pub const PRUNE_INBOX: &str = "DELETE FROM inbox WHERE handled_at_ms < @P1 \
    AND step_version NOT LIKE 'dead-lettered:%' AND event_id IN (SELECT TOP (@P2) event_id FROM inbox \
    WHERE handled_at_ms < @P1 AND step_version NOT LIKE 'dead-lettered:%')";
pub const PRUNE_OUTBOX: &str = "DELETE FROM outbox WHERE seq IN (SELECT TOP (@P2) seq FROM outbox \
    WHERE occurred_at_ms < @P1 AND relayed_at_ms IS NOT NULL AND (@P3 = 0 OR streamed_at_ms IS NOT NULL))";
pub const PRUNE_IDEMPOTENCY: &str = "DELETE FROM idempotency_keys WHERE [key] IN (SELECT TOP (@P2) [key] \
    FROM idempotency_keys WHERE created_at_ms < @P1)";
pub const INSERT_VERSION: &str = "INSERT INTO plugin_versions \
    (digest, name, version, subscribes, bytes, created_at_ms) SELECT @P1, @P2, @P3, @P4, @P5, @P6 \
    WHERE NOT EXISTS (SELECT 1 FROM plugin_versions WITH (UPDLOCK, HOLDLOCK) WHERE digest = @P1)";
pub const SELECT_VERSION: &str = "SELECT digest, name, version, subscribes, bytes, created_at_ms \
    FROM plugin_versions WHERE digest = @P1";
pub const SELECT_VERSION_DIGESTS: &str = "SELECT digest FROM plugin_versions WHERE name = @P1 ORDER BY created_at_ms";
pub const SELECT_SLOTS: &str = "SELECT name, current_digest, previous_digest, generation, updated_at_ms, \
    rollout_mode, rollout_digest, rollout_percent, rollout_started_at_ms FROM plugin_slots ORDER BY name";
pub const INSERT_SLOT: &str = "INSERT INTO plugin_slots \
    (name, current_digest, previous_digest, generation, updated_at_ms, rollout_mode, rollout_digest, \
    rollout_percent, rollout_started_at_ms) SELECT @P1, @P2, NULLIF(@P3, N''), @P4, @P5, NULLIF(@P6, N''), \
    NULLIF(@P7, N''), @P8, @P9 \
    WHERE NOT EXISTS (SELECT 1 FROM plugin_slots WITH (UPDLOCK, HOLDLOCK) WHERE name = @P1)";
pub const UPDATE_SLOT: &str = "UPDATE plugin_slots SET current_digest = @P2, previous_digest = NULLIF(@P3, N''), \
    generation = @P4, updated_at_ms = @P5, rollout_mode = NULLIF(@P6, N''), rollout_digest = NULLIF(@P7, N''), \
    rollout_percent = @P8, rollout_started_at_ms = @P9 WHERE name = @P1 AND generation = @P10";
pub const INSERT_PIN: &str = "INSERT INTO pins (step, order_id, digest, created_at_ms) \
    SELECT @P1, @P2, @P3, @P4 WHERE NOT EXISTS \
    (SELECT 1 FROM pins WITH (UPDLOCK, HOLDLOCK) WHERE step = @P1 AND order_id = @P2)";
pub const SELECT_PINS: &str = "SELECT order_id, digest FROM pins WHERE step = @P1 \
    AND order_id IN (SELECT value FROM OPENJSON(@P2))";
pub const DELETE_OVERRIDES: &str = "DELETE FROM version_overrides WHERE consumer = @P1 \
    AND event_id IN (SELECT value FROM OPENJSON(@P2))";
pub const SELECT_OVERRIDES: &str = "SELECT event_id, digest FROM version_overrides WHERE consumer = @P1 \
    AND event_id IN (SELECT value FROM OPENJSON(@P2))";
pub const SET_OVERRIDE: &str = "INSERT INTO version_overrides (consumer, event_id, digest) SELECT @P1, @P2, @P3 \
    WHERE NOT EXISTS (SELECT 1 FROM version_overrides WITH (UPDLOCK, HOLDLOCK) WHERE consumer = @P1 AND event_id = @P2); \
    UPDATE version_overrides SET digest = @P3 WHERE consumer = @P1 AND event_id = @P2";
pub const INSERT_RECORDING: &str = "INSERT INTO recordings \
    (id, step, event_id, version, outcome, recorded_at_ms, recording) VALUES (@P1, @P2, @P3, @P4, @P5, @P6, @P7)";
pub const SELECT_RECORDINGS: &str = "SELECT TOP (@P2) id, step, event_id, version, outcome, recorded_at_ms, \
    recording FROM recordings WHERE step = @P1 ORDER BY recorded_at_ms DESC";
pub const SELECT_DEAD_LETTER_RECORDING: &str = "SELECT recording FROM dead_letters WHERE id = @P1";
pub const PRUNE_PINS: &str = "DELETE FROM pins WHERE created_at_ms < @P1 AND order_id IN \
    (SELECT TOP (@P2) order_id FROM pins WHERE created_at_ms < @P1)";
pub const PRUNE_RECORDINGS: &str = "DELETE FROM recordings WHERE id IN \
    (SELECT TOP (@P2) id FROM recordings WHERE recorded_at_ms < @P1)";
/// A step's per-order state (`<prefix><order id>`) of orders finished before @P3.
pub const PRUNE_ORDER_STATE: &str = "DELETE FROM step_state WHERE step = @P1 AND [key] IN \
    (SELECT TOP (@P4) s.[key] FROM step_state s JOIN orders o ON o.id = SUBSTRING(s.[key], @P5, 4000) \
    WHERE s.step = @P1 AND s.[key] LIKE @P2 ESCAPE '\\' AND o.status IN ('completed', 'cancelled') \
    AND o.updated_at_ms < @P3)";
/// Versions kept before @P1 that no slot, pin, override or recording names.
pub const PRUNE_VERSIONS: &str = "DELETE FROM plugin_versions WHERE digest IN (SELECT TOP (@P2) v.digest \
    FROM plugin_versions v WHERE v.created_at_ms < @P1 \
    AND NOT EXISTS (SELECT 1 FROM plugin_slots s \
        WHERE v.digest IN (s.current_digest, s.previous_digest, s.rollout_digest)) \
    AND NOT EXISTS (SELECT 1 FROM pins p WHERE p.digest = v.digest) \
    AND NOT EXISTS (SELECT 1 FROM version_overrides o WHERE o.digest = v.digest) \
    AND NOT EXISTS (SELECT 1 FROM recordings r WHERE r.version = v.digest))";
pub const PRUNE_HOSTS: &str = "DELETE FROM hosts WHERE seen_at_ms < @P1";
pub const PRUNE_LEASES: &str = "DELETE FROM leases WHERE until_ms < @P1";
pub const INSERT_HISTORY: &str = "INSERT INTO plugin_history (name, action, digest, reason, host_id, at_ms) \
    VALUES (@P1, @P2, @P3, @P4, @P5, @P6)";
pub const SELECT_HISTORY: &str = "SELECT TOP (@P2) name, action, digest, reason, host_id, at_ms \
    FROM plugin_history WHERE name = @P1 ORDER BY id DESC";
pub const HEARTBEAT: &str = "INSERT INTO hosts (host_id, http_addr, started_at_ms, seen_at_ms, steps) \
    SELECT @P1, @P2, @P3, @P4, @P5 WHERE NOT EXISTS (SELECT 1 FROM hosts WITH (UPDLOCK, HOLDLOCK) WHERE host_id = @P1); \
    UPDATE hosts SET http_addr = @P2, started_at_ms = @P3, seen_at_ms = @P4, steps = @P5 WHERE host_id = @P1";
pub const SELECT_HOSTS: &str = "SELECT host_id, http_addr, started_at_ms, seen_at_ms, steps FROM hosts \
    WHERE seen_at_ms >= @P1 ORDER BY host_id";
pub const DELETE_HOST: &str = "DELETE FROM hosts WHERE host_id = @P1";

/// Every statement, for the parse test.
#[cfg(test)]
pub const ALL: &[&str] = &[
    INSERT_IDEMPOTENCY,
    SELECT_IDEMPOTENCY,
    INSERT_ORDER,
    INSERT_EVENT,
    SELECT_ORDER,
    SELECT_ORDERS,
    SELECT_TIMELINES,
    SELECT_ORDER_PAGE,
    UPDATE_ORDER_STATUS,
    SELECT_STOCK,
    SELECT_UNRELAYED,
    MARK_RELAYED,
    OUTBOX_LAG,
    SELECT_UNSTREAMED,
    MARK_STREAMED,
    STREAM_LAG,
    ENQUEUE,
    DELETE_DELIVERIES,
    SELECT_HANDLED,
    UPSERT_STOCK,
    INSERT_DEAD_LETTER,
    SELECT_DEAD_LETTERS,
    SELECT_DEAD_LETTER,
    TAKE_DEAD_LETTER,
    UNMARK_DEAD_LETTERED,
    ORDER_COUNTS,
    MIGRATIONS_TABLE_EXISTS,
    CREATE_MIGRATIONS_TABLE,
    APPLIED_MIGRATIONS,
    RECORD_MIGRATION,
    SELECT_STATE,
    INSERT_INBOX,
    LOCK_STATE_VERSIONS,
    INSERT_STATE_IF_ABSENT,
    UPSERT_STATE,
    DELETE_STATE,
    UPDATE_STATE_IF_VERSION,
    DELETE_STATE_IF_VERSION,
    DELETE_SUBSCRIPTIONS,
    INSERT_SUBSCRIPTION,
    SELECT_SUBSCRIPTIONS,
    CLAIM,
    RELEASE_CLAIMS,
    RENEW_CLAIMS,
    SETTLE_DELIVERIES,
    NEXT_DUE,
    RETRY_DELIVERY,
    REQUEUE,
    RENEW_LEASE,
    INSERT_LEASE,
    RELEASE_LEASE,
    STALLED_ORDERS,
    OVERDUE_ORDERS,
    INSERT_TIMER,
    ANY_TIMER_DUE,
    FIRE_TIMERS,
    SELECT_TIMERS,
    EVENTS_OF_ORDERS,
    MARK_CHECKED,
    PRUNE_INBOX,
    PRUNE_OUTBOX,
    PRUNE_IDEMPOTENCY,
    INSERT_VERSION,
    SELECT_VERSION,
    SELECT_VERSION_DIGESTS,
    SELECT_SLOTS,
    INSERT_SLOT,
    UPDATE_SLOT,
    INSERT_HISTORY,
    SELECT_HISTORY,
    HEARTBEAT,
    SELECT_HOSTS,
    DELETE_HOST,
    INSERT_PIN,
    SELECT_PINS,
    DELETE_OVERRIDES,
    SELECT_OVERRIDES,
    SET_OVERRIDE,
    INSERT_RECORDING,
    SELECT_RECORDINGS,
    SELECT_DEAD_LETTER_RECORDING,
    PRUNE_PINS,
    PRUNE_RECORDINGS,
    PRUNE_ORDER_STATE,
    PRUNE_VERSIONS,
    PRUNE_HOSTS,
    PRUNE_LEASES,
    "SELECT 1",
];
