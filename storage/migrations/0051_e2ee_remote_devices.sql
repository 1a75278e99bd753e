-- Remote users' device lists (Server-Server API, "Device Management"): a cache of
-- the devices and cross-signing keys of users on other servers, kept current by
-- m.device_list_update and m.signing_key_update EDUs and refreshed from
-- GET /_matrix/federation/v1/user/devices/{userId} ("resync") when an update
-- cannot be applied. /keys/query answers from an entry only while it is fresh.

-- remote_device_lists has one row per remote user whose list was fetched or is
-- being fetched.
CREATE TABLE remote_device_lists (
	user_id TEXT PRIMARY KEY,
	-- stream_id is the origin's stream_id the cached list is at.
	stream_id BIGINT NOT NULL DEFAULT 0,
	-- stale: an update was missed or a membership change may have hidden one;
	-- the entry is not used until a resync replaces it.
	stale BOOLEAN NOT NULL DEFAULT TRUE,
	-- gen counts the times the entry was marked stale: a resync that began
	-- before the latest mark does not make it fresh.
	gen BIGINT NOT NULL DEFAULT 0,
	master_key TEXT,
	self_signing_key TEXT,
	updated_ts BIGINT NOT NULL
);

-- remote_devices are the cached devices; key_json (without "unsigned") is NULL
-- for a device that has no identity keys.
CREATE TABLE remote_devices (
	user_id TEXT NOT NULL,
	device_id TEXT NOT NULL,
	key_json TEXT,
	display_name TEXT,
	PRIMARY KEY (user_id, device_id)
);
