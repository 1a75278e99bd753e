-- Knocks local users made on rooms this server is not in (send_knock), with the
-- state the room's server sent back (knock_room_state), shown in /sync until
-- the user is let in, or the knock is retracted or superseded.
CREATE TABLE federation_knocks (
	event_id TEXT PRIMARY KEY,
	room_id TEXT NOT NULL,
	room_version TEXT NOT NULL,
	knocker TEXT NOT NULL,
	server TEXT NOT NULL, -- the resident server that took the knock
	event_json BLOB NOT NULL, -- sqlite
	event_json BYTEA NOT NULL, -- postgres
	knock_room_state BLOB NOT NULL, -- sqlite
	knock_room_state BYTEA NOT NULL, -- postgres
	sent_ts BIGINT NOT NULL
);
CREATE INDEX federation_knocks_knocker ON federation_knocks (knocker, room_id);
