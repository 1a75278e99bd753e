-- The room engine's one event store (roomserver).

CREATE TABLE rooms (
	room_nid INTEGER PRIMARY KEY AUTOINCREMENT, -- sqlite
	room_nid BIGSERIAL PRIMARY KEY, -- postgres
	room_id TEXT NOT NULL UNIQUE,
	room_version TEXT NOT NULL,
	-- State snapshot of the room's current state (0 before the create event).
	current_snapshot_nid BIGINT NOT NULL DEFAULT 0,
	created_ts BIGINT NOT NULL
);

-- (type, state_key) pairs, interned so snapshots store small integers.
CREATE TABLE state_keys (
	state_key_nid INTEGER PRIMARY KEY AUTOINCREMENT, -- sqlite
	state_key_nid BIGSERIAL PRIMARY KEY, -- postgres
	event_type TEXT NOT NULL,
	state_key TEXT NOT NULL,
	UNIQUE (event_type, state_key)
);

-- Every event of every room, stored once. json is the federation form of the event.
-- stream_pos orders events as /sync and the federation sender see them (NULL for
-- outliers); (depth, stream_pos) is the topological order /messages pages through.
CREATE TABLE events (
	event_nid INTEGER PRIMARY KEY AUTOINCREMENT, -- sqlite
	event_nid BIGSERIAL PRIMARY KEY, -- postgres
	event_id TEXT NOT NULL UNIQUE,
	room_nid BIGINT NOT NULL REFERENCES rooms(room_nid),
	event_type TEXT NOT NULL,
	state_key TEXT,
	sender TEXT NOT NULL,
	depth BIGINT NOT NULL,
	origin_server_ts BIGINT NOT NULL,
	stream_pos BIGINT UNIQUE,
	is_outlier BOOLEAN NOT NULL DEFAULT FALSE,
	is_rejected BOOLEAN NOT NULL DEFAULT FALSE,
	is_soft_failed BOOLEAN NOT NULL DEFAULT FALSE,
	-- State before and after the event (snapshot ids; 0 when unknown, e.g. outliers).
	state_before_nid BIGINT NOT NULL DEFAULT 0,
	state_after_nid BIGINT NOT NULL DEFAULT 0,
	redacted_by TEXT,
	json BLOB NOT NULL -- sqlite
	json BYTEA NOT NULL -- postgres
);
CREATE INDEX events_room_topo ON events (room_nid, depth, stream_pos);
CREATE INDEX events_room_stream ON events (room_nid, stream_pos);

-- The auth_events edges of every event, for auth chains.
CREATE TABLE event_auth_edges (
	event_nid BIGINT NOT NULL,
	auth_event_nid BIGINT NOT NULL,
	PRIMARY KEY (event_nid, auth_event_nid)
);

-- The prev_events edges, for backfill and missing-event walks.
CREATE TABLE event_prev_edges (
	event_nid BIGINT NOT NULL,
	prev_event_id TEXT NOT NULL,
	PRIMARY KEY (event_nid, prev_event_id)
);
CREATE INDEX event_prev_edges_prev ON event_prev_edges (prev_event_id);

-- State snapshots are deltas on a parent snapshot: entries list the (type, state_key)
-- pairs whose event differs from the parent (event_nid 0 removes the pair). A snapshot
-- with no parent is complete. Chains are kept short by writing a complete snapshot
-- every so often, so the state at any event is a bounded walk, and no state is copied
-- per event.
CREATE TABLE state_snapshots (
	snapshot_nid INTEGER PRIMARY KEY AUTOINCREMENT, -- sqlite
	snapshot_nid BIGSERIAL PRIMARY KEY, -- postgres
	room_nid BIGINT NOT NULL,
	parent_nid BIGINT NOT NULL DEFAULT 0,
	chain_len INTEGER NOT NULL DEFAULT 0,
	entry_count INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE state_snapshot_entries (
	snapshot_nid BIGINT NOT NULL,
	state_key_nid BIGINT NOT NULL,
	event_nid BIGINT NOT NULL,
	PRIMARY KEY (snapshot_nid, state_key_nid)
);

-- The room's current state, materialised for fast queries (members, rooms of a user).
CREATE TABLE current_state (
	room_nid BIGINT NOT NULL,
	event_type TEXT NOT NULL,
	state_key TEXT NOT NULL,
	event_nid BIGINT NOT NULL,
	membership TEXT,
	PRIMARY KEY (room_nid, event_type, state_key)
);
CREATE INDEX current_state_members ON current_state (state_key, event_type, membership);

CREATE TABLE forward_extremities (
	room_nid BIGINT NOT NULL,
	event_nid BIGINT NOT NULL,
	PRIMARY KEY (room_nid, event_nid)
);
