-- Local user accounts, devices and access tokens (clientapi).
CREATE TABLE accounts (
	localpart TEXT PRIMARY KEY,
	password_hash TEXT NOT NULL DEFAULT '',
	is_admin BOOLEAN NOT NULL DEFAULT FALSE,
	is_guest BOOLEAN NOT NULL DEFAULT FALSE,
	deactivated BOOLEAN NOT NULL DEFAULT FALSE,
	created_ts BIGINT NOT NULL
);

CREATE TABLE devices (
	localpart TEXT NOT NULL REFERENCES accounts(localpart),
	device_id TEXT NOT NULL,
	display_name TEXT,
	created_ts BIGINT NOT NULL,
	last_seen_ts BIGINT NOT NULL DEFAULT 0,
	last_seen_ip TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (localpart, device_id)
);

-- Access tokens are stored as SHA-256 hashes, never in the clear.
CREATE TABLE access_tokens (
	token_hash BYTEA PRIMARY KEY,
	localpart TEXT NOT NULL,
	device_id TEXT NOT NULL,
	created_ts BIGINT NOT NULL,
	expires_ts BIGINT NOT NULL DEFAULT 0,
	FOREIGN KEY (localpart, device_id) REFERENCES devices(localpart, device_id) ON DELETE CASCADE
);
CREATE INDEX access_tokens_device ON access_tokens (localpart, device_id);
