-- Client API, part 2 (rooms and messages): aliases, the published room
-- directory, transaction IDs of sent events, forgotten rooms, reports, and the
-- relations index behind /relations, /threads and bundled aggregations.

-- Room aliases this server holds (#localpart:this.server → room).
CREATE TABLE room_aliases (
	alias TEXT PRIMARY KEY,
	room_id TEXT NOT NULL,
	creator TEXT NOT NULL,
	created_ts BIGINT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);

-- Rooms published in this server's room directory (/publicRooms).
CREATE TABLE room_directory (
	room_id TEXT PRIMARY KEY,
	published_ts BIGINT NOT NULL
);

-- Transaction IDs of events sent by a device, so a retried request (even after a
-- restart) answers with the event it already sent. scope names the endpoint and
-- path ("send", room, type), as transaction IDs are scoped per device and path.
CREATE TABLE room_txns (
	user_id TEXT NOT NULL,
	device_id TEXT NOT NULL,
	scope TEXT NOT NULL,
	txn_id TEXT NOT NULL,
	event_id TEXT NOT NULL,
	created_ts BIGINT NOT NULL,
	PRIMARY KEY (user_id, device_id, scope, txn_id)
);
CREATE INDEX room_txns_event ON room_txns (event_id);

-- Rooms a user has forgotten (POST /rooms/{roomId}/forget); a new membership
-- clears the mark.
CREATE TABLE room_forgotten (
	user_id TEXT NOT NULL,
	room_id TEXT NOT NULL,
	forgotten_ts BIGINT NOT NULL,
	PRIMARY KEY (user_id, room_id)
);

-- Reports of events, rooms and users, for the server admins to read.
CREATE TABLE content_reports (
	report_id INTEGER PRIMARY KEY AUTOINCREMENT, -- sqlite
	report_id BIGSERIAL PRIMARY KEY, -- postgres
	reporter TEXT NOT NULL,
	room_id TEXT NOT NULL DEFAULT '',
	event_id TEXT NOT NULL DEFAULT '',
	user_id TEXT NOT NULL DEFAULT '',
	reason TEXT NOT NULL DEFAULT '',
	score BIGINT,
	received_ts BIGINT NOT NULL
);

-- Relations between events (content."m.relates_to" with a rel_type), one row per
-- child event, filled from the room engine's event stream by the relations
-- indexer. Redacted children are removed (a redaction breaks the relation).
CREATE TABLE event_relations (
	event_id TEXT PRIMARY KEY,
	room_id TEXT NOT NULL,
	relates_to TEXT NOT NULL,
	rel_type TEXT NOT NULL,
	event_type TEXT NOT NULL,
	sender TEXT NOT NULL,
	-- aggregation_key is the key of an m.annotation ('' otherwise).
	aggregation_key TEXT NOT NULL DEFAULT '',
	depth BIGINT NOT NULL,
	stream_pos BIGINT NOT NULL,
	origin_server_ts BIGINT NOT NULL
);
CREATE INDEX event_relations_parent ON event_relations (relates_to, depth, stream_pos);

-- Thread roots of each room with their newest thread event, for /threads.
CREATE TABLE room_threads (
	room_id TEXT NOT NULL,
	root_event_id TEXT NOT NULL,
	latest_event_id TEXT NOT NULL,
	latest_depth BIGINT NOT NULL,
	latest_stream BIGINT NOT NULL,
	PRIMARY KEY (room_id, root_event_id)
);
CREATE INDEX room_threads_latest ON room_threads (room_id, latest_depth, latest_stream);

-- How far the relations indexer has read the event stream (a lower bound: it
-- re-reads from here after a restart; re-reading is harmless).
CREATE TABLE relations_position (
	id INTEGER PRIMARY KEY,
	stream_pos BIGINT NOT NULL
);

-- A user's member events in a room, for history visibility ("joined at any
-- point after the event") and for the cut-off of users who left. On the room
-- engine's table; the query lives in roomserver/client_queries.go.
CREATE INDEX events_room_members ON events (room_nid, state_key) WHERE event_type = 'm.room.member';
