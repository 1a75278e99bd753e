-- Out-of-band leaves: a local user's leave from a room this server is not in
-- (an invite rejected through make_leave/send_leave or locally, an invite the
-- inviter rescinded, a knock retracted), kept so that /sync can show the user
-- the room in its leave section. One row per user and room: the newest leave.
CREATE TABLE federation_remote_leaves (
	event_id TEXT PRIMARY KEY,
	room_id TEXT NOT NULL,
	room_version TEXT NOT NULL,
	user_id TEXT NOT NULL,
	event_json BLOB NOT NULL, -- sqlite
	event_json BYTEA NOT NULL, -- postgres
	left_ts BIGINT NOT NULL
);
CREATE INDEX federation_remote_leaves_user ON federation_remote_leaves (user_id, room_id);
