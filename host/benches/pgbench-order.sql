-- One order's writes in wasaga, as plain statements for pgbench: the six transactions
-- (place, relay, inventory, payment, host, analytics) with the rows wasaga writes.
\set n random(1, 2000000000)
BEGIN;
INSERT INTO orders (id, customer_id, status, total_cents, items, created_at_ms, updated_at_ms)
  VALUES ('o-' || :client_id || '-' || :n, 'c', 'pending', 100, '[{"sku":"SKU-1","quantity":1,"unit_price_cents":100}]', 0, 0) ON CONFLICT DO NOTHING;
INSERT INTO outbox (event_id, kind, order_id, payload, step, step_version, occurred_at_ms)
  VALUES (gen_random_uuid()::text, 'order.placed', 'o-' || :client_id || '-' || :n, '{}', 'host', '1', 0);
END;
BEGIN;
INSERT INTO deliveries (consumer, event_id, event, due_at_ms)
  VALUES ('inventory', gen_random_uuid()::text, '{}', 0), ('analytics', gen_random_uuid()::text, '{}', 0)
  ON CONFLICT (consumer, event_id) DO NOTHING;
UPDATE outbox SET relayed_at_ms = 1 WHERE seq = (SELECT max(seq) FROM outbox);
END;
SELECT value FROM step_state WHERE step = 'inventory' AND key = 'sku/SKU-1';
BEGIN;
INSERT INTO inbox (consumer, event_id, step_version, handled_at_ms) VALUES ('inventory', gen_random_uuid()::text, '1', 0);
INSERT INTO step_state (step, key, value) VALUES ('inventory', 'sku/SKU-1', '\x00'), ('inventory', 'order/o-' || :client_id || '-' || :n, '\x00')
  ON CONFLICT (step, key) DO UPDATE SET value = excluded.value;
INSERT INTO outbox (event_id, kind, order_id, payload, step, step_version, occurred_at_ms)
  VALUES (gen_random_uuid()::text, 'stock.reserved', 'o-' || :client_id || '-' || :n, '{}', 'inventory', '1', 0);
DELETE FROM deliveries WHERE id = (SELECT min(id) FROM deliveries);
END;
SELECT value FROM step_state WHERE step = 'payment' AND key = 'payment/o-' || :client_id || '-' || :n;
BEGIN;
INSERT INTO inbox (consumer, event_id, step_version, handled_at_ms) VALUES ('payment', gen_random_uuid()::text, '1', 0);
INSERT INTO step_state (step, key, value) VALUES ('payment', 'payment/o-' || :client_id || '-' || :n, '\x00')
  ON CONFLICT (step, key) DO UPDATE SET value = excluded.value;
INSERT INTO outbox (event_id, kind, order_id, payload, step, step_version, occurred_at_ms)
  VALUES (gen_random_uuid()::text, 'payment.captured', 'o-' || :client_id || '-' || :n, '{}', 'payment', '1', 0);
DELETE FROM deliveries WHERE id = (SELECT min(id) FROM deliveries);
END;
BEGIN;
INSERT INTO inbox (consumer, event_id, step_version, handled_at_ms) VALUES ('host', gen_random_uuid()::text, '1', 0);
UPDATE orders SET status = 'completed', updated_at_ms = 1 WHERE id = 'o-' || :client_id || '-' || :n AND status IN ('pending');
INSERT INTO outbox (event_id, kind, order_id, payload, step, step_version, occurred_at_ms)
  VALUES (gen_random_uuid()::text, 'order.completed', 'o-' || :client_id || '-' || :n, '{}', 'host', '1', 0);
INSERT INTO stock (sku, available, reserved, sold, seq) VALUES ('SKU-1', 1, 0, 0, :n)
  ON CONFLICT (sku) DO UPDATE SET available = excluded.available, seq = excluded.seq WHERE stock.seq < excluded.seq;
DELETE FROM deliveries WHERE id = (SELECT min(id) FROM deliveries);
END;
BEGIN;
INSERT INTO inbox (consumer, event_id, step_version, handled_at_ms) VALUES ('analytics', gen_random_uuid()::text, '1', 0);
INSERT INTO step_state (step, key, value) VALUES ('analytics', 'totals', '\x00')
  ON CONFLICT (step, key) DO UPDATE SET value = excluded.value;
DELETE FROM deliveries WHERE id = (SELECT min(id) FROM deliveries);
END;
