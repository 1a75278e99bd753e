-- /sync's own data (clientapi sync, ephemeral and user directory): read
-- receipts, presence, per-user notification rows and the user directory.

-- The current receipt of each (room, type, user, thread); thread_id is '' for an
-- unthreaded receipt. stream_pos orders receipt changes for /sync; event_pos is the
-- stream position of the event the receipt points at ("up to" comparisons).
CREATE TABLE receipts (
	room_id TEXT NOT NULL,
	receipt_type TEXT NOT NULL,
	user_id TEXT NOT NULL,
	thread_id TEXT NOT NULL,
	event_id TEXT NOT NULL,
	event_pos BIGINT NOT NULL,
	ts BIGINT NOT NULL,
	stream_pos BIGINT NOT NULL,
	PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
);
CREATE INDEX receipts_stream ON receipts (stream_pos);

-- The presence of local users; stream_pos orders changes for /sync.
CREATE TABLE presence (
	user_id TEXT PRIMARY KEY,
	state TEXT NOT NULL,
	status_msg TEXT,
	last_active_ts BIGINT NOT NULL,
	stream_pos BIGINT NOT NULL
);

-- One row per unread notification of a local user: the events their push rules
-- say notify them, written as events arrive and deleted when a read receipt (or
-- an event of their own) passes them. thread_id is '' for the main timeline.
CREATE TABLE sync_notifications (
	user_id TEXT NOT NULL,
	room_id TEXT NOT NULL,
	stream_pos BIGINT NOT NULL,
	thread_id TEXT NOT NULL,
	highlight BOOLEAN NOT NULL,
	PRIMARY KEY (user_id, room_id, stream_pos)
);

-- The user directory: the latest profile seen for each user in a room's member
-- events (search_text is the lower-cased user ID and display name).
CREATE TABLE user_directory (
	user_id TEXT PRIMARY KEY,
	display_name TEXT,
	avatar_url TEXT,
	search_text TEXT NOT NULL
);

-- Rooms whose joined members are visible to everyone in the directory: public
-- join rules or world-readable history.
CREATE TABLE user_directory_rooms (
	room_id TEXT PRIMARY KEY,
	is_public BOOLEAN NOT NULL,
	world_readable BOOLEAN NOT NULL
);

-- Set once the directory was filled from the rooms that existed before it.
CREATE TABLE user_directory_meta (
	populated_up_to BIGINT NOT NULL
);
