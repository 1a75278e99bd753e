-- Federation (federationapi): other servers' signing keys, the outbound queues,
-- inbound transaction de-duplication and invites received for local users.

-- Signing keys of other servers as last fetched, directly or through a notary.
-- valid_until_ts is the lesser of the published valid_until_ts and fetch time + 7
-- days (Server-Server API, keys definition); old keys (expired_ts > 0) are valid
-- for events before expired_ts only.
CREATE TABLE federation_server_keys (
	server_name TEXT NOT NULL,
	key_id TEXT NOT NULL,
	public_key TEXT NOT NULL,
	valid_until_ts BIGINT NOT NULL,
	expired_ts BIGINT NOT NULL DEFAULT 0,
	fetched_ts BIGINT NOT NULL,
	PRIMARY KEY (server_name, key_id)
);

-- The last key response each server signed, which the notary endpoint serves again
-- (with its own signature added), also when the server is unreachable.
CREATE TABLE federation_key_responses (
	server_name TEXT PRIMARY KEY,
	response BLOB NOT NULL, -- sqlite
	response BYTEA NOT NULL, -- postgres
	valid_until_ts BIGINT NOT NULL,
	fetched_ts BIGINT NOT NULL
);

-- Outbound queues, one per destination, in queue_nid order. PDUs are referenced by
-- event ID (the event store has their JSON); EDUs are stored whole.
CREATE TABLE federation_queue_pdus (
	queue_nid INTEGER PRIMARY KEY AUTOINCREMENT, -- sqlite
	queue_nid BIGSERIAL PRIMARY KEY, -- postgres
	destination TEXT NOT NULL,
	event_id TEXT NOT NULL
);
CREATE INDEX federation_queue_pdus_dest ON federation_queue_pdus (destination, queue_nid);

CREATE TABLE federation_queue_edus (
	queue_nid INTEGER PRIMARY KEY AUTOINCREMENT, -- sqlite
	queue_nid BIGSERIAL PRIMARY KEY, -- postgres
	destination TEXT NOT NULL,
	edu BLOB NOT NULL -- sqlite
	edu BYTEA NOT NULL -- postgres
);
CREATE INDEX federation_queue_edus_dest ON federation_queue_edus (destination, queue_nid);

-- Destinations that failed: how often in a row, and when to try again.
CREATE TABLE federation_destinations (
	server_name TEXT PRIMARY KEY,
	failures INTEGER NOT NULL DEFAULT 0,
	retry_at_ts BIGINT NOT NULL DEFAULT 0
);

-- The event stream position up to which new events have been queued, so a restart
-- queues what was committed but not yet queued.
CREATE TABLE federation_sender_position (
	singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
	stream_pos BIGINT NOT NULL
);

-- Transactions received, with the response given, so a retried transaction is
-- answered without processing it again. Old rows are pruned.
CREATE TABLE federation_inbound_txns (
	origin TEXT NOT NULL,
	txn_id TEXT NOT NULL,
	received_ts BIGINT NOT NULL,
	response BLOB NOT NULL, -- sqlite
	response BYTEA NOT NULL, -- postgres
	PRIMARY KEY (origin, txn_id)
);
CREATE INDEX federation_inbound_txns_ts ON federation_inbound_txns (received_ts);

-- Invites to rooms this server is not in, received for local users over
-- /invite, with the stripped state the inviting server sent.
CREATE TABLE federation_invites (
	event_id TEXT PRIMARY KEY,
	room_id TEXT NOT NULL,
	room_version TEXT NOT NULL,
	invitee TEXT NOT NULL,
	event_json BLOB NOT NULL, -- sqlite
	event_json BYTEA NOT NULL, -- postgres
	invite_room_state BLOB NOT NULL, -- sqlite
	invite_room_state BYTEA NOT NULL, -- postgres
	received_ts BIGINT NOT NULL
);
CREATE INDEX federation_invites_invitee ON federation_invites (invitee, received_ts);
