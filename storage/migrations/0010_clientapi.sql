-- Client API, part 1: refresh tokens, login tokens, profiles, account data,
-- filters, push rules, registration tokens and user-interactive auth sessions.

-- account_data_pos is the user's account-data stream position: bumped (under the
-- account row's lock) by every account-data write, so /sync can ask for "changes
-- since N" per user without gaps.
ALTER TABLE accounts ADD COLUMN account_data_pos BIGINT NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN user_type TEXT NOT NULL DEFAULT '';

-- An access token made by /refresh keeps the hash of the refresh token it
-- replaced (prev_refresh_hash) until it is first used; that use revokes the old
-- refresh token (Client-Server API, "Refreshing access tokens").
ALTER TABLE access_tokens ADD COLUMN refresh_hash BYTEA;
ALTER TABLE access_tokens ADD COLUMN prev_refresh_hash BYTEA;
CREATE INDEX access_tokens_refresh ON access_tokens (refresh_hash);

CREATE TABLE refresh_tokens (
	token_hash BYTEA PRIMARY KEY,
	localpart TEXT NOT NULL,
	device_id TEXT NOT NULL,
	created_ts BIGINT NOT NULL,
	-- next_hash is the refresh token issued when this one was last used; this one
	-- stays valid until the next one (or its access token) is used.
	next_hash BYTEA,
	FOREIGN KEY (localpart, device_id) REFERENCES devices(localpart, device_id) ON DELETE CASCADE
);
CREATE INDEX refresh_tokens_device ON refresh_tokens (localpart, device_id);

-- Single-use tokens for m.login.token, made by /login/get_token.
CREATE TABLE login_tokens (
	token_hash BYTEA PRIMARY KEY,
	localpart TEXT NOT NULL REFERENCES accounts(localpart),
	expires_ts BIGINT NOT NULL
);

CREATE TABLE profiles (
	localpart TEXT PRIMARY KEY REFERENCES accounts(localpart),
	displayname TEXT,
	avatar_url TEXT,
	-- Every other profile field (m.tz and custom keys), as a JSON object.
	fields TEXT NOT NULL DEFAULT '{}'
);

-- Global account data has room_id ''. stream_pos is the owner's account_data_pos
-- at the time of the write.
CREATE TABLE account_data (
	localpart TEXT NOT NULL,
	room_id TEXT NOT NULL,
	type TEXT NOT NULL,
	content TEXT NOT NULL,
	stream_pos BIGINT NOT NULL,
	PRIMARY KEY (localpart, room_id, type)
);
CREATE INDEX account_data_stream ON account_data (localpart, stream_pos);

CREATE TABLE filters (
	localpart TEXT NOT NULL,
	filter_id BIGINT NOT NULL,
	content TEXT NOT NULL,
	content_hash BYTEA NOT NULL,
	PRIMARY KEY (localpart, filter_id)
);
CREATE INDEX filters_hash ON filters (localpart, content_hash);

-- The user's own push rules and their changes to server-default rules, as one
-- JSON document (see hearth/clientapi/pushrules.UserRules).
CREATE TABLE push_rules (
	localpart TEXT PRIMARY KEY,
	content TEXT NOT NULL
);

-- Registration tokens (m.login.registration_token), managed through Synapse's
-- admin API. NULL uses_allowed / expiry_time mean unlimited.
CREATE TABLE registration_tokens (
	token TEXT PRIMARY KEY,
	uses_allowed BIGINT,
	pending BIGINT NOT NULL DEFAULT 0,
	completed BIGINT NOT NULL DEFAULT 0,
	expiry_time BIGINT
);

-- User-interactive authentication sessions. operation binds a session to the
-- request it was started for; localpart is '' for registration.
CREATE TABLE uia_sessions (
	session_id TEXT PRIMARY KEY,
	operation TEXT NOT NULL,
	localpart TEXT NOT NULL,
	created_ts BIGINT NOT NULL,
	completed TEXT NOT NULL DEFAULT '[]',
	-- The registration token this session holds a pending use of.
	registration_token TEXT
);
CREATE INDEX uia_sessions_created ON uia_sessions (created_ts);
