-- Media repository (mediaapi). File contents live on disk, named by their SHA-256
-- (docs/media.md); these tables say which mxc:// URIs point at which contents.

-- media is every piece of content known by mxc:// URI: local uploads (server_name
-- is this server's) and cached remote media. sha256 is NULL while an asynchronous
-- upload (POST /_matrix/media/v1/create) still awaits its content; expires_ts is
-- when such a pending upload lapses (0 once content has arrived).
CREATE TABLE media (
	server_name TEXT NOT NULL,
	media_id TEXT NOT NULL,
	sha256 TEXT,
	size_bytes BIGINT NOT NULL DEFAULT 0,
	content_type TEXT NOT NULL DEFAULT '',
	upload_name TEXT NOT NULL DEFAULT '',
	-- user_id is the uploader of local media; '' for remote media and previews.
	user_id TEXT NOT NULL DEFAULT '',
	created_ts BIGINT NOT NULL,
	expires_ts BIGINT NOT NULL DEFAULT 0,
	quarantined BOOLEAN NOT NULL DEFAULT FALSE,
	PRIMARY KEY (server_name, media_id)
);
CREATE INDEX media_sha256 ON media (sha256);
CREATE INDEX media_pending ON media (user_id, expires_ts) WHERE sha256 IS NULL;

-- media_thumbnails are the thumbnails made of a piece of media, keyed by the size
-- and method they were made for (req_*); width and height are the image's own.
CREATE TABLE media_thumbnails (
	server_name TEXT NOT NULL,
	media_id TEXT NOT NULL,
	req_width INTEGER NOT NULL,
	req_height INTEGER NOT NULL,
	method TEXT NOT NULL,
	width INTEGER NOT NULL,
	height INTEGER NOT NULL,
	content_type TEXT NOT NULL,
	sha256 TEXT NOT NULL,
	size_bytes BIGINT NOT NULL,
	created_ts BIGINT NOT NULL,
	PRIMARY KEY (server_name, media_id, req_width, req_height, method),
	FOREIGN KEY (server_name, media_id) REFERENCES media (server_name, media_id) ON DELETE CASCADE
);
CREATE INDEX media_thumbnails_sha256 ON media_thumbnails (sha256);

-- media_url_previews caches preview_url answers (the OpenGraph JSON object).
CREATE TABLE media_url_previews (
	url TEXT PRIMARY KEY,
	og TEXT NOT NULL,
	created_ts BIGINT NOT NULL,
	expires_ts BIGINT NOT NULL
);
