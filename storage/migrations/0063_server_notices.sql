-- Server notices (Synapse's admin API POST /_synapse/admin/v1/send_server_notice):
-- the one private room each local user shares with the server notices user.
-- A user who left it is invited back to the same room by the next notice.
CREATE TABLE server_notice_rooms (
	user_id TEXT PRIMARY KEY,
	room_id TEXT NOT NULL,
	created_ts BIGINT NOT NULL
);
