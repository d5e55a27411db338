-- The redrive checks orders of every status, once after each change: `redrives = -1`
-- marks an ended order found complete since its last change.
CREATE INDEX orders_to_check ON orders (updated_at_ms) WHERE redrives >= 0;
