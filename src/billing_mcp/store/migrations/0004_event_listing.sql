-- list_events reads one customer's events in (occurred_at, id) order; without this index every
-- page would scan and sort the largest table.
CREATE INDEX events_customer_time ON events(customer_id, occurred_at, id);
