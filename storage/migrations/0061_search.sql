-- Server-side search (POST /search, Client-Server API "Server Side Search"):
-- a full-text index of the searchable keys of room events (content.body of
-- m.room.message, content.name of m.room.name, content.topic of m.room.topic),
-- one row per event keyed by its stream position, filled from the room
-- engine's event stream by the search indexer (clientapi/search_index.go).
-- Redacted events are removed.
CREATE TABLE event_search (
	stream_pos BIGINT PRIMARY KEY,
	event_id TEXT NOT NULL UNIQUE,
	room_id TEXT NOT NULL,
	sender TEXT NOT NULL,
	-- Postgres: the text as an English tsvector, searched through a GIN index.
	vector TSVECTOR NOT NULL, -- postgres
	-- search_key is the key the text came from (content.body, content.name or content.topic).
	search_key TEXT NOT NULL
);
CREATE INDEX event_search_room ON event_search (room_id, stream_pos);
CREATE INDEX event_search_vector ON event_search USING GIN (vector); -- postgres

-- SQLite: the text in an FTS4 table whose docid is the stream position. FTS4
-- is compiled into mattn/go-sqlite3 by default; FTS5 would need a build tag
-- on every build and test command.
CREATE VIRTUAL TABLE event_search_text USING fts4 (value, tokenize=unicode61); -- sqlite

-- How far the search indexer has read the event stream (a lower bound: it
-- re-reads from here after a restart; re-reading is harmless).
CREATE TABLE search_position (
	id INTEGER PRIMARY KEY,
	stream_pos BIGINT NOT NULL
);
