package clientapi

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gorilla/mux"
	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"hearth/httputil"
	"hearth/roomserver/events"
	"hearth/storage"
)

// The user directory (Client-Server API, "User directory"): profiles seen in
// member events, and which rooms make their members visible to everyone
// (public join rules or world-readable history). The notification worker
// keeps both tables current from the event stream; a one-off pass fills them
// from the rooms that existed before.

// registerUserDirectoryRoutes serves /user_directory/search.
func (a *API) registerUserDirectoryRoutes(r *mux.Router) {
	handle(r, v3R0, "/user_directory/search", a.authed(a.searchUserDirectory, 0), http.MethodPost)
}

// dirProfile is the profile a member event carries.
type dirProfile struct {
	displayName, avatarURL *string
}

func dirProfileOf(content []byte) dirProfile {
	var p dirProfile
	if v := gjson.GetBytes(content, "displayname"); v.Type == gjson.String && v.Str != "" {
		p.displayName = &v.Str
	}
	if v := gjson.GetBytes(content, "avatar_url"); v.Type == gjson.String && v.Str != "" {
		p.avatarURL = &v.Str
	}
	return p
}

// dirRoomFlags are a room's directory flags; nil fields are unchanged.
type dirRoomFlags struct {
	public, worldReadable *bool
}

// roomDirectoryFlags records the effect of a join rules or history
// visibility event.
func (s *Syncer) roomDirectoryFlags(ev *events.Event, w *countWrites) {
	if w.dirRoom == nil {
		w.dirRoom = map[id.RoomID]dirRoomFlags{}
	}
	f := w.dirRoom[ev.RoomID()]
	switch ev.Type() {
	case "m.room.join_rules":
		v := gjson.GetBytes(ev.Content(), "join_rule").Str == "public"
		f.public = &v
	case "m.room.history_visibility":
		v := gjson.GetBytes(ev.Content(), "history_visibility").Str == "world_readable"
		f.worldReadable = &v
	}
	w.dirRoom[ev.RoomID()] = f
}

// searchText is what a search term is matched against.
func searchText(userID id.UserID, p dirProfile) string {
	t := strings.ToLower(string(userID))
	if p.displayName != nil {
		t += " " + strings.ToLower(*p.displayName)
	}
	return t
}

// writeDirectory writes directory changes inside tx. A local user is listed
// under their global profile, never under a name or avatar they use in one room
// only (which the members of other rooms must not learn; Synapse does the
// same): p, taken from a member event, is used for remote users.
func (s *Syncer) writeDirectory(ctx context.Context, tx *storage.Tx, users map[id.UserID]dirProfile, rooms map[id.RoomID]dirRoomFlags) error {
	for u, p := range users {
		if s.isLocal(u) {
			lp, _, _ := u.Parse()
			var dn, av sql.NullString
			err := tx.QueryRow(ctx, `SELECT displayname, avatar_url FROM profiles WHERE localpart = $1`, lp).Scan(&dn, &av)
			switch {
			case err == nil:
				p = dirProfile{}
				if dn.Valid && dn.String != "" {
					p.displayName = &dn.String
				}
				if av.Valid && av.String != "" {
					p.avatarURL = &av.String
				}
			case !errors.Is(err, sql.ErrNoRows):
				return fmt.Errorf("reading profile of %s for the user directory: %w", u, err)
			}
		}
		if _, err := tx.Exec(ctx, `INSERT INTO user_directory (user_id, display_name, avatar_url, search_text) VALUES ($1, $2, $3, $4)
			ON CONFLICT (user_id) DO UPDATE SET display_name = excluded.display_name, avatar_url = excluded.avatar_url, search_text = excluded.search_text`,
			string(u), p.displayName, p.avatarURL, searchText(u, p)); err != nil {
			return fmt.Errorf("updating user directory: %w", err)
		}
	}
	for r, f := range rooms {
		pub, wr := false, false
		if f.public != nil {
			pub = *f.public
		}
		if f.worldReadable != nil {
			wr = *f.worldReadable
		}
		q := `INSERT INTO user_directory_rooms (room_id, is_public, world_readable) VALUES ($1, $2, $3) ON CONFLICT (room_id) DO UPDATE SET `
		switch {
		case f.public != nil && f.worldReadable != nil:
			q += `is_public = excluded.is_public, world_readable = excluded.world_readable`
		case f.public != nil:
			q += `is_public = excluded.is_public`
		case f.worldReadable != nil:
			q += `world_readable = excluded.world_readable`
		default:
			continue
		}
		if _, err := tx.Exec(ctx, q, string(r), pub, wr); err != nil {
			return fmt.Errorf("updating user directory rooms: %w", err)
		}
	}
	return nil
}

// populateUserDirectory fills the directory once from the rooms' current
// state (rooms that existed before the directory did).
func (s *Syncer) populateUserDirectory() {
	ctx := context.Background()
	var n int
	if err := s.db.QueryRow(ctx, `SELECT COUNT(*) FROM user_directory_meta`).Scan(&n); err != nil || n > 0 {
		logSyncErr("reading user directory state", err)
		return
	}
	start := time.Now()
	upTo := s.rs.StreamPosition()
	rows, err := s.db.Query(ctx, `SELECT r.room_id, c.event_type, c.state_key, e.json FROM current_state c
		JOIN rooms r ON r.room_nid = c.room_nid JOIN events e ON e.event_nid = c.event_nid
		WHERE (c.event_type = 'm.room.member' AND c.membership = 'join') OR c.event_type IN ('m.room.join_rules', 'm.room.history_visibility')`)
	if err != nil {
		logSyncErr("filling the user directory", err)
		return
	}
	users := map[id.UserID]dirProfile{}
	rooms := map[id.RoomID]dirRoomFlags{}
	for rows.Next() {
		var rid, typ, sk string
		var raw []byte
		if err := rows.Scan(&rid, &typ, &sk, &raw); err != nil {
			rows.Close()
			logSyncErr("filling the user directory", err)
			return
		}
		content := []byte(gjson.GetBytes(raw, "content").Raw)
		f := rooms[id.RoomID(rid)]
		switch typ {
		case "m.room.member":
			users[id.UserID(sk)] = dirProfileOf(content)
		case "m.room.join_rules":
			v := gjson.GetBytes(content, "join_rule").Str == "public"
			f.public = &v
			rooms[id.RoomID(rid)] = f
		case "m.room.history_visibility":
			v := gjson.GetBytes(content, "history_visibility").Str == "world_readable"
			f.worldReadable = &v
			rooms[id.RoomID(rid)] = f
		}
	}
	rows.Close()
	err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
		if err := s.writeDirectory(ctx, tx, users, rooms); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO user_directory_meta (populated_up_to) VALUES ($1)`, upTo)
		return err
	})
	if err != nil {
		logSyncErr("filling the user directory", err)
		return
	}
	if len(users) > 0 {
		slog.Info("user directory filled", "users", len(users), "rooms", len(rooms), "took", time.Since(start))
	}
}

// maxDirectoryLimit caps the results of one search.
const maxDirectoryLimit = 100

// POST /user_directory/search
func (a *API) searchUserDirectory(w http.ResponseWriter, r *http.Request, d *Device) error {
	var req struct {
		SearchTerm *string `json:"search_term"`
		Limit      *int    `json:"limit"`
	}
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.SearchTerm == nil {
		return httputil.MissingParam("search_term is required")
	}
	limit := 10
	if req.Limit != nil {
		if *req.Limit < 0 {
			return httputil.InvalidParam("limit must not be negative")
		}
		limit = min(*req.Limit, maxDirectoryLimit)
	}
	term := strings.ToLower(strings.TrimSpace(*req.SearchTerm))
	if !utf8.ValidString(term) || len(term) > 1000 {
		return httputil.InvalidParam("search_term is not valid")
	}
	type result struct {
		UserID      string  `json:"user_id"`
		DisplayName *string `json:"display_name,omitempty"`
		AvatarURL   *string `json:"avatar_url,omitempty"`
	}
	out := struct {
		Results []result `json:"results"`
		Limited bool     `json:"limited"`
	}{Results: []result{}}
	if limit == 0 || term == "" {
		httputil.RespondJSON(w, http.StatusOK, out)
		return nil
	}
	esc := escapeLikeTerm(term)
	// Other users sharing a room with the requester, or users joined to a room
	// whose members anyone may see (so requesters find themselves only
	// through such a room, as in Synapse). Prefix matches of the user ID's
	// localpart or a word of the display name rank first, then users with a
	// display name.
	rows, err := a.db.Query(r.Context(), `SELECT d.user_id, d.display_name, d.avatar_url FROM user_directory d
		WHERE d.search_text LIKE $1 ESCAPE '\' AND (
			(d.user_id <> $2 AND EXISTS (SELECT 1 FROM current_state me JOIN current_state o ON o.room_nid = me.room_nid
				WHERE me.event_type = 'm.room.member' AND me.state_key = $2 AND me.membership = 'join'
				AND o.event_type = 'm.room.member' AND o.state_key = d.user_id AND o.membership = 'join'))
			OR EXISTS (SELECT 1 FROM current_state o JOIN rooms rm ON rm.room_nid = o.room_nid
				JOIN user_directory_rooms ur ON ur.room_id = rm.room_id
				WHERE o.event_type = 'm.room.member' AND o.state_key = d.user_id AND o.membership = 'join'
				AND (ur.is_public OR ur.world_readable)))
		ORDER BY CASE WHEN d.search_text LIKE $3 ESCAPE '\' OR d.search_text LIKE $4 ESCAPE '\' THEN 0 ELSE 1 END,
			CASE WHEN d.display_name IS NULL THEN 1 ELSE 0 END, d.user_id
		LIMIT $5`,
		"%"+esc+"%", string(d.UserID), "@"+esc+"%", "% "+esc+"%", limit+1)
	if err != nil {
		return internalErr(fmt.Errorf("searching the user directory: %w", err))
	}
	defer rows.Close()
	for rows.Next() {
		var res result
		if err := rows.Scan(&res.UserID, &res.DisplayName, &res.AvatarURL); err != nil {
			return internalErr(fmt.Errorf("searching the user directory: %w", err))
		}
		out.Results = append(out.Results, res)
	}
	if err := rows.Err(); err != nil {
		return internalErr(fmt.Errorf("searching the user directory: %w", err))
	}
	if len(out.Results) > limit {
		out.Results, out.Limited = out.Results[:limit], true
	}
	httputil.RespondJSON(w, http.StatusOK, out)
	return nil
}

// escapeLikeTerm escapes LIKE metacharacters with a backslash.
func escapeLikeTerm(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}
