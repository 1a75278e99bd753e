package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/gorilla/mux"
	"maunium.net/go/mautrix/id"

	"hearth/httputil"
	"hearth/roomserver"
)

// Spaces (Client-Server API, "Spaces"): GET /hierarchy walks a space's
// m.space.child links breadth first and lists the rooms the user could see
// (joined or invited, world-readable, or open to joining or knocking). Rooms
// this server is not in are described by their servers through
// RemoteHierarchy (federation).

// RemoteHierarchy asks other servers for the hierarchy of a space this server
// is not in (Server-Server API, GET /hierarchy). It is implemented by
// federation; without it, rooms on other servers are left out of the walk.
type RemoteHierarchy interface {
	RemoteHierarchy(ctx context.Context, roomID id.RoomID, via []string, suggestedOnly bool) (*roomserver.SpaceHierarchy, error)
}

const (
	defaultHierarchyLimit = 50
	maxHierarchyLimit     = 100
	// maxHierarchyDepth is the depth walked when the client sets none.
	maxHierarchyDepth = 50
	// maxHierarchySkip bounds the rooms a pagination token skips (the walk is
	// redone for each page).
	maxHierarchySkip = 10_000
	// maxRemoteHierarchyCalls bounds the federation requests of one page.
	maxRemoteHierarchyCalls = 20
)

func (a *API) registerHierarchyRoutes(r *mux.Router) {
	if a.opts.Roomserver == nil {
		return
	}
	handle(r, v1Only, "/rooms/{roomId}/hierarchy", a.authed(a.getHierarchy, 0), http.MethodGet)
}

// hierarchyToken is the pagination token: the rooms already returned and the
// walk's parameters, which may not change between pages.
type hierarchyToken struct {
	skip          int
	suggestedOnly bool
	maxDepth      int
}

func (t hierarchyToken) String() string {
	return fmt.Sprintf("h%d_%t_%d", t.skip, t.suggestedOnly, t.maxDepth)
}

func parseHierarchyToken(s string) (hierarchyToken, error) {
	bad := httputil.InvalidParam("Unknown pagination token %q", s)
	rest, ok := strings.CutPrefix(s, "h")
	if !ok {
		return hierarchyToken{}, bad
	}
	parts := strings.Split(rest, "_")
	if len(parts) != 3 {
		return hierarchyToken{}, bad
	}
	skip, err1 := strconv.Atoi(parts[0])
	sugg, err2 := strconv.ParseBool(parts[1])
	depth, err3 := strconv.Atoi(parts[2])
	if err1 != nil || err2 != nil || err3 != nil || skip < 0 || skip > maxHierarchySkip || depth < 0 || depth > maxHierarchyDepth {
		return hierarchyToken{}, bad
	}
	return hierarchyToken{skip: skip, suggestedOnly: sugg, maxDepth: depth}, nil
}

// hierarchyEntry is a room waiting to be visited.
type hierarchyEntry struct {
	roomID id.RoomID
	depth  int
	via    []string
}

// hierarchyWalk is the state of one page of the walk.
type hierarchyWalk struct {
	a             *API
	user          id.UserID
	suggestedOnly bool
	// remote holds summaries other servers gave (children of remote spaces),
	// and inaccessible the rooms they said no one could see.
	remote       map[id.RoomID]*roomserver.RoomSummary
	inaccessible map[id.RoomID]bool
	remoteCalls  int
	joined       map[id.RoomID]bool // the user's joined rooms, loaded on demand
}

// GET /_matrix/client/v1/rooms/{roomId}/hierarchy
func (a *API) getHierarchy(w http.ResponseWriter, r *http.Request, d *Device) error {
	ctx := r.Context()
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	suggested := false
	switch q.Get("suggested_only") {
	case "", "false":
	case "true":
		suggested = true
	default:
		return httputil.InvalidParam("suggested_only must be true or false")
	}
	limit := defaultHierarchyLimit
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			return httputil.InvalidParam("limit must be an integer greater than zero")
		}
		limit = min(n, maxHierarchyLimit)
	}
	maxDepth := maxHierarchyDepth
	if s := q.Get("max_depth"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return httputil.InvalidParam("max_depth must be a non-negative integer")
		}
		maxDepth = min(n, maxHierarchyDepth)
	}
	tok := hierarchyToken{suggestedOnly: suggested, maxDepth: maxDepth}
	if s := q.Get("from"); s != "" {
		from, err := parseHierarchyToken(s)
		if err != nil {
			return err
		}
		if from.suggestedOnly != suggested || from.maxDepth != maxDepth {
			return httputil.InvalidParam("suggested_only and max_depth cannot change on paginated requests")
		}
		tok.skip = from.skip
	}

	walk := &hierarchyWalk{a: a, user: d.UserID, suggestedOnly: suggested,
		remote: map[id.RoomID]*roomserver.RoomSummary{}, inaccessible: map[id.RoomID]bool{}}
	var rootVia []string
	if _, server, ok := strings.Cut(string(roomID), ":"); ok {
		rootVia = []string{server}
	}
	queue := []hierarchyEntry{{roomID: roomID, via: rootVia}}
	seen := map[id.RoomID]bool{}
	rooms := make([]*roomserver.RoomSummary, 0, limit)
	visible := 0
	for len(queue) > 0 && len(rooms) < limit {
		e := queue[0]
		queue = queue[1:]
		if seen[e.roomID] {
			continue
		}
		seen[e.roomID] = true
		s, ok, err := walk.room(ctx, e)
		if err != nil {
			return err
		}
		if !ok {
			if e.roomID == roomID {
				return httputil.Forbidden("You cannot view room %s", roomID)
			}
			continue
		}
		if visible++; visible > tok.skip {
			c := *s
			c.AllowedRoomIDs = nil // federation only
			rooms = append(rooms, &c)
		}
		if e.depth >= maxDepth {
			continue
		}
		for _, c := range roomserver.SpaceChildren(s.ChildrenState) {
			if (suggested && !c.Suggested) || seen[c.RoomID] {
				continue
			}
			queue = append(queue, hierarchyEntry{roomID: c.RoomID, depth: e.depth + 1, via: c.Via})
		}
	}
	resp := struct {
		Rooms     []*roomserver.RoomSummary `json:"rooms"`
		NextBatch string                    `json:"next_batch,omitempty"`
	}{Rooms: rooms}
	for _, e := range queue {
		if !seen[e.roomID] && tok.skip+len(rooms) < maxHierarchySkip {
			next := tok
			next.skip += len(rooms)
			resp.NextBatch = next.String()
			break
		}
	}
	httputil.RespondJSON(w, http.StatusOK, resp)
	return nil
}

// room returns the summary of a room in the walk and whether the user may see
// it. Rooms this server is in are read locally; others come from the remote
// answers so far or from the servers in via.
func (w *hierarchyWalk) room(ctx context.Context, e hierarchyEntry) (*roomserver.RoomSummary, bool, error) {
	rs := w.a.opts.Roomserver
	local, err := rs.ServerJoined(ctx, e.roomID, "", w.a.cfg.ServerName)
	if err != nil && !errors.Is(err, roomserver.ErrRoomNotFound) {
		return nil, false, internalErr(err)
	}
	if local {
		s, err := rs.RoomSummary(ctx, e.roomID)
		if err != nil {
			return nil, false, roomErr(err)
		}
		m, _, err := rs.Membership(ctx, e.roomID, w.user)
		if err != nil {
			return nil, false, roomErr(err)
		}
		ok, err := w.userMaySee(ctx, s, m)
		return s, ok, err
	}
	if w.inaccessible[e.roomID] {
		return nil, false, nil
	}
	s := w.remote[e.roomID]
	if s == nil {
		s = w.fetch(ctx, e)
		if s == nil {
			return nil, false, nil
		}
	}
	// This server's own view of the user's membership, if it has one (an
	// invite or a knock the user made).
	m := ""
	if mm, _, err := rs.Membership(ctx, e.roomID, w.user); err == nil {
		m = mm
	}
	ok, err := w.userMaySee(ctx, s, m)
	return s, ok, err
}

// fetch asks the servers of a remote room for its hierarchy and remembers
// what they said about its children. It returns nil when no server answered.
func (w *hierarchyWalk) fetch(ctx context.Context, e hierarchyEntry) *roomserver.RoomSummary {
	rh := w.a.opts.RemoteHierarchy
	if rh == nil || len(e.via) == 0 || w.remoteCalls >= maxRemoteHierarchyCalls {
		return nil
	}
	w.remoteCalls++
	h, err := rh.RemoteHierarchy(ctx, e.roomID, e.via, w.suggestedOnly)
	if err != nil || h == nil || h.Room == nil || h.Room.RoomID != e.roomID {
		slog.DebugContext(ctx, "remote space hierarchy unavailable", "room_id", e.roomID, "err", err)
		w.inaccessible[e.roomID] = true
		return nil
	}
	for _, c := range h.Children {
		if c != nil && c.RoomID != "" {
			if _, known := w.remote[c.RoomID]; !known {
				w.remote[c.RoomID] = c
			}
		}
	}
	for _, rid := range h.InaccessibleChildren {
		w.inaccessible[rid] = true
	}
	if h.Room.ChildrenState == nil {
		h.Room.ChildrenState = []json.RawMessage{}
	}
	w.remote[e.roomID] = h.Room
	return h.Room
}

// userMaySee reports whether the user could peek into or join a room
// (Client-Server API, GET /hierarchy: rooms the user "can see"): they are
// joined or invited, the room is world-readable, its join rule is public or
// allows knocking, or it is restricted to rooms the user is in.
func (w *hierarchyWalk) userMaySee(ctx context.Context, s *roomserver.RoomSummary, membership string) (bool, error) {
	switch membership {
	case "join", "invite", "knock":
		return true, nil
	case "ban":
		return false, nil
	}
	if s.WorldReadable {
		return true, nil
	}
	switch s.JoinRule {
	case "public", "knock", "knock_restricted":
		return true, nil
	case "restricted":
		if w.joined == nil {
			rooms, err := w.a.opts.Roomserver.RoomsForUser(ctx, w.user, "join")
			if err != nil {
				return false, internalErr(err)
			}
			w.joined = make(map[id.RoomID]bool, len(rooms))
			for _, r := range rooms {
				w.joined[r] = true
			}
		}
		for _, r := range s.AllowedRoomIDs {
			if w.joined[r] {
				return true, nil
			}
		}
	}
	return false, nil
}
