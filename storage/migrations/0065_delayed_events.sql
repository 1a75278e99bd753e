-- Delayed events (MSC4140): events a client scheduled to be sent later, kept
-- across restarts. send_ts is running_since + delay_ms; finalised_ts is NULL
-- while the event is scheduled and set once it was sent or cancelled (outcome
-- 'send' or 'cancel', reason 'action', 'delay' or 'error'). Finalised rows are
-- kept a few days so retried requests get the same answer. txn_key is the
-- scope and transaction ID of a PUT /send (NULL for state events), for
-- idempotent retries.
CREATE TABLE delayed_events (
	delay_id TEXT PRIMARY KEY,
	user_id TEXT NOT NULL,
	device_id TEXT NOT NULL,
	txn_key TEXT,
	room_id TEXT NOT NULL,
	event_type TEXT NOT NULL,
	state_key TEXT,
	content BLOB NOT NULL, -- sqlite
	content BYTEA NOT NULL, -- postgres
	delay_ms BIGINT NOT NULL,
	running_since BIGINT NOT NULL,
	send_ts BIGINT NOT NULL,
	finalised_ts BIGINT,
	outcome TEXT,
	reason TEXT,
	event_id TEXT,
	error TEXT
);
CREATE UNIQUE INDEX delayed_events_txn ON delayed_events (user_id, device_id, txn_key);
CREATE INDEX delayed_events_due ON delayed_events (send_ts) WHERE finalised_ts IS NULL;
CREATE INDEX delayed_events_user ON delayed_events (user_id, send_ts) WHERE finalised_ts IS NULL;
CREATE INDEX delayed_events_state ON delayed_events (room_id, event_type, state_key) WHERE finalised_ts IS NULL AND state_key IS NOT NULL;
CREATE INDEX delayed_events_finalised ON delayed_events (finalised_ts) WHERE finalised_ts IS NOT NULL;
