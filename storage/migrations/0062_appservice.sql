-- Application services (appservice/): how far each service's transaction
-- sender has read the event stream, and the transactions built but not yet
-- acknowledged by the service. A transaction is stored, with the new stream
-- position, before it is first sent, so its ID and events never change across
-- retries or restarts (Application Service API, "Pushing events").
CREATE TABLE appservice_streams (
	as_id TEXT PRIMARY KEY,
	-- Every event up to this stream position is in a transaction (or was of no
	-- interest to the service).
	stream_pos BIGINT NOT NULL,
	last_txn_id BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE appservice_txns (
	as_id TEXT NOT NULL,
	txn_id BIGINT NOT NULL,
	-- JSON array of the event IDs, in stream order.
	event_ids TEXT NOT NULL,
	created_ts BIGINT NOT NULL,
	PRIMARY KEY (as_id, txn_id)
);
