package clientapi

import (
	"context"
	"fmt"
	"strings"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"hearth/roomserver"
	"hearth/roomserver/events"
	"hearth/storage"
)

// The search index (event_search, migration 0061) holds the searchable text
// of room events (Client-Server API, "Server Side Search", room_events: the
// keys content.body of m.room.message, content.name of m.room.name, and
// content.topic of m.room.topic with the text/plain body of its m.topic).
//
// It is filled like the relations index, by an eventIndexer
// (eventindexer.go): the work an event brings is a document, or a redaction
// that removes one.
//
// On Postgres the text is stored as an English tsvector with a GIN index; on
// SQLite in an FTS4 table whose docid is the event's stream position.

// searchIndexer keeps event_search up to date.
type searchIndexer = eventIndexer[searchDoc]

// searchDoc is one row of the index.
type searchDoc struct {
	pos     int64
	eventID id.EventID
	roomID  id.RoomID
	sender  id.UserID
	key     string
	text    string
}

// Search keys (the spec's enum for room_events.keys).
const (
	searchKeyBody  = "content.body"
	searchKeyName  = "content.name"
	searchKeyTopic = "content.topic"
)

// newSearchIndexer starts the search index.
func newSearchIndexer(db *storage.DB, rs *roomserver.Roomserver) *searchIndexer {
	pg := db.Dialect == storage.Postgres
	return newEventIndexer(db, rs, indexKind[searchDoc]{
		name:          "search",
		positionTable: "search_position",
		rowOf:         searchDocOf,
		eventID:       func(d *searchDoc) id.EventID { return d.eventID },
		insert: func(ctx context.Context, tx *storage.Tx, d *searchDoc) error {
			return insertSearchDoc(ctx, tx, pg, d)
		},
		remove: func(ctx context.Context, tx *storage.Tx, redacted id.EventID) error {
			return deleteSearchDoc(ctx, tx, pg, redacted)
		},
		retryEach: true,
	})
}

// searchDocOf returns the document an event adds to the index, or nil.
func searchDocOf(ev *events.Event, pos int64) *searchDoc {
	key, text := searchTextOf(ev)
	if text == "" {
		return nil
	}
	return &searchDoc{pos: pos, eventID: ev.ID(), roomID: ev.RoomID(), sender: ev.Sender(), key: key, text: text}
}

// searchTextOf returns the searchable key and text of an event ("" when it has
// none). The text is valid UTF-8 without NUL bytes, which Postgres refuses.
func searchTextOf(ev *events.Event) (key, text string) {
	c := ev.Content()
	switch ev.Type() {
	case "m.room.message":
		if ev.IsState() {
			return "", ""
		}
		key, text = searchKeyBody, gjson.GetBytes(c, "body").Str
	case "m.room.name":
		if ev.StateKey() == nil || *ev.StateKey() != "" {
			return "", ""
		}
		key, text = searchKeyName, gjson.GetBytes(c, "name").Str
	case "m.room.topic":
		if ev.StateKey() == nil || *ev.StateKey() != "" {
			return "", ""
		}
		// content.topic "as well as the body of the text/plain
		// representation in content['m.topic']" (Client-Server API,
		// "room_events").
		key, text = searchKeyTopic, gjson.GetBytes(c, "topic").Str
		for _, r := range gjson.GetBytes(c, `m\.topic.m\.text`).Array() {
			mt := r.Get("mimetype").Str
			if (mt == "" || mt == "text/plain") && r.Get("body").Type == gjson.String {
				if b := r.Get("body").Str; b != "" && b != text {
					text = strings.TrimSpace(text + "\n" + b)
				}
				break
			}
		}
	default:
		return "", ""
	}
	if strings.IndexByte(text, 0) >= 0 {
		text = strings.ReplaceAll(text, "\x00", " ")
	}
	return key, strings.ToValidUTF8(text, "\uFFFD")
}

func insertSearchDoc(ctx context.Context, tx *storage.Tx, pg bool, d *searchDoc) error {
	if pg {
		if _, err := tx.Exec(ctx, `INSERT INTO event_search (stream_pos, event_id, room_id, sender, vector, search_key)
			VALUES ($1, $2, $3, $4, to_tsvector('english', $5), $6) ON CONFLICT DO NOTHING`,
			d.pos, string(d.eventID), string(d.roomID), string(d.sender), d.text, d.key); err != nil {
			return fmt.Errorf("indexing %s for search: %w", d.eventID, err)
		}
		return nil
	}
	res, err := tx.Exec(ctx, `INSERT INTO event_search (stream_pos, event_id, room_id, sender, search_key)
		VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`,
		d.pos, string(d.eventID), string(d.roomID), string(d.sender), d.key)
	if err != nil {
		return fmt.Errorf("indexing %s for search: %w", d.eventID, err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return err // already indexed (a re-read after a restart)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO event_search_text (docid, value) VALUES ($1, $2)`, d.pos, d.text); err != nil {
		return fmt.Errorf("indexing %s for search: %w", d.eventID, err)
	}
	return nil
}

// deleteSearchDoc removes a redacted event from the index.
func deleteSearchDoc(ctx context.Context, tx *storage.Tx, pg bool, eventID id.EventID) error {
	if !pg {
		if _, err := tx.Exec(ctx, `DELETE FROM event_search_text WHERE docid IN (SELECT stream_pos FROM event_search WHERE event_id = $1)`, string(eventID)); err != nil {
			return fmt.Errorf("removing %s from the search index: %w", eventID, err)
		}
	}
	if _, err := tx.Exec(ctx, `DELETE FROM event_search WHERE event_id = $1`, string(eventID)); err != nil {
		return fmt.Errorf("removing %s from the search index: %w", eventID, err)
	}
	return nil
}
