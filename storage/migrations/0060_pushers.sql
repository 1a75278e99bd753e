-- Pushers (Client-Server API, "Push Notifications", POST /pushers/set): where a
-- user's notifications are sent. A pusher belongs to the device whose access
-- token created it and goes with that device (logout, device deletion, password
-- change with logout_devices). (app_id, pushkey) is unique per user.
CREATE TABLE pushers (
	localpart TEXT NOT NULL,
	app_id TEXT NOT NULL,
	pushkey TEXT NOT NULL,
	device_id TEXT NOT NULL,
	kind TEXT NOT NULL,
	app_display_name TEXT NOT NULL,
	device_display_name TEXT NOT NULL,
	profile_tag TEXT NOT NULL DEFAULT '',
	lang TEXT NOT NULL,
	-- The data object as given (a JSON object; url is where http pushers post).
	data TEXT NOT NULL,
	-- When the pushkey was last set (ms), sent to gateways as pushkey_ts (s).
	pushkey_ts BIGINT NOT NULL,
	PRIMARY KEY (localpart, app_id, pushkey)
);
CREATE INDEX pushers_device ON pushers (localpart, device_id);
CREATE INDEX pushers_key ON pushers (app_id, pushkey);
