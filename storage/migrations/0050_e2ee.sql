-- End-to-end encryption (clientapi/e2ee): device keys, one-time and fallback keys,
-- cross-signing keys and signatures, to-device messages, device-list change
-- tracking, server-side key backup and dehydrated devices. The server only stores
-- and routes public keys and ciphertext.

-- e2ee_stream is the single E2EE stream position. Writers take the next positions
-- with UPDATE … RETURNING inside their transaction: the row lock makes positions
-- commit in the order they were taken, so a reader that sees position N has every
-- write at or below N. /sync carries it in its tokens.
CREATE TABLE e2ee_stream (
	id INTEGER PRIMARY KEY CHECK (id = 0),
	pos BIGINT NOT NULL
);
INSERT INTO e2ee_stream (id, pos) VALUES (0, 0);

-- device_keys holds each device's identity keys as uploaded (without "unsigned");
-- cross-signing signatures on them live in key_signatures and are merged on read.
CREATE TABLE device_keys (
	user_id TEXT NOT NULL,
	device_id TEXT NOT NULL,
	key_json TEXT NOT NULL,
	-- ed25519 is the device's signing key, kept apart for signature checks.
	ed25519 TEXT NOT NULL,
	PRIMARY KEY (user_id, device_id)
);

-- one_time_keys are claimed lowest otk_nid first: keys are given out in upload order.
CREATE TABLE one_time_keys (
	otk_nid INTEGER PRIMARY KEY AUTOINCREMENT, -- sqlite
	otk_nid BIGSERIAL PRIMARY KEY, -- postgres
	user_id TEXT NOT NULL,
	device_id TEXT NOT NULL,
	algorithm TEXT NOT NULL,
	key_id TEXT NOT NULL,
	key_json TEXT NOT NULL,
	UNIQUE (user_id, device_id, algorithm, key_id)
);
CREATE INDEX one_time_keys_claim ON one_time_keys (user_id, device_id, algorithm, otk_nid);

-- fallback_keys: at most one per device and algorithm; "used" once claimed.
CREATE TABLE fallback_keys (
	user_id TEXT NOT NULL,
	device_id TEXT NOT NULL,
	algorithm TEXT NOT NULL,
	key_id TEXT NOT NULL,
	key_json TEXT NOT NULL,
	used BOOLEAN NOT NULL DEFAULT FALSE,
	PRIMARY KEY (user_id, device_id, algorithm)
);

-- device_list_positions is each user's latest device-list change (device keys
-- added or removed, cross-signing keys or signatures changed) on the E2EE stream.
CREATE TABLE device_list_positions (
	user_id TEXT PRIMARY KEY,
	pos BIGINT NOT NULL
);
CREATE INDEX device_list_positions_pos ON device_list_positions (pos);

-- cross_signing_keys: key_type is master, self_signing or user_signing;
-- public_key is the unpadded-base64 ed25519 key (also its key ID).
CREATE TABLE cross_signing_keys (
	user_id TEXT NOT NULL,
	key_type TEXT NOT NULL,
	public_key TEXT NOT NULL,
	key_json TEXT NOT NULL,
	PRIMARY KEY (user_id, key_type)
);

-- key_signatures are signatures uploaded through /keys/signatures/upload: on a
-- device (target_key_id = device ID) or a master key (target_key_id = public key).
CREATE TABLE key_signatures (
	target_user_id TEXT NOT NULL,
	target_key_id TEXT NOT NULL,
	signer_user_id TEXT NOT NULL,
	signer_key_id TEXT NOT NULL,
	signature TEXT NOT NULL,
	PRIMARY KEY (target_user_id, target_key_id, signer_user_id, signer_key_id)
);
CREATE INDEX key_signatures_signer ON key_signatures (signer_user_id, signer_key_id);

-- to_device_messages wait in a device's inbox until /sync is called with a since
-- token at or past their position.
CREATE TABLE to_device_messages (
	pos BIGINT PRIMARY KEY,
	user_id TEXT NOT NULL,
	device_id TEXT NOT NULL,
	sender TEXT NOT NULL,
	event_type TEXT NOT NULL,
	content TEXT NOT NULL
);
CREATE INDEX to_device_inbox ON to_device_messages (user_id, device_id, pos);

-- to_device_txns makes /sendToDevice idempotent per sending device and txnId.
CREATE TABLE to_device_txns (
	user_id TEXT NOT NULL,
	device_id TEXT NOT NULL,
	txn_id TEXT NOT NULL,
	created_ts BIGINT NOT NULL,
	PRIMARY KEY (user_id, device_id, txn_id)
);

-- key_backup_versions: keys are written only to a user's newest undeleted version.
-- etag changes whenever the stored keys change; key_count is kept in step.
CREATE TABLE key_backup_versions (
	user_id TEXT NOT NULL,
	version BIGINT NOT NULL,
	algorithm TEXT NOT NULL,
	auth_data TEXT NOT NULL,
	etag BIGINT NOT NULL DEFAULT 0,
	key_count BIGINT NOT NULL DEFAULT 0,
	deleted BOOLEAN NOT NULL DEFAULT FALSE,
	PRIMARY KEY (user_id, version)
);

CREATE TABLE key_backup_sessions (
	user_id TEXT NOT NULL,
	version BIGINT NOT NULL,
	room_id TEXT NOT NULL,
	session_id TEXT NOT NULL,
	first_message_index BIGINT NOT NULL,
	forwarded_count BIGINT NOT NULL,
	is_verified BOOLEAN NOT NULL,
	session_data TEXT NOT NULL,
	PRIMARY KEY (user_id, version, room_id, session_id)
);

-- dehydrated_devices (MSC3814): at most one per user. The device has keys and an
-- inbox like any other, but no access token.
CREATE TABLE dehydrated_devices (
	user_id TEXT PRIMARY KEY,
	device_id TEXT NOT NULL,
	device_data TEXT NOT NULL,
	display_name TEXT,
	created_ts BIGINT NOT NULL
);
