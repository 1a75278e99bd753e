package clientapi

import (
	"cmp"
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
// m.space.child links depth first and lists the rooms the user could see
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
	handle(r, v1Only, "/room_summary/{roomIdOrAlias}", a.public(a.getRoomSummary), http.MethodGet)
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
	maxDepth      int
	// remote holds summaries other servers gave (children of remote spaces),
	// and inaccessible the rooms they said no one could see.
	remote       map[id.RoomID]*roomserver.RoomSummary
	inaccessible map[id.RoomID]bool
	remoteCalls  int
	fetched      map[id.RoomID]bool // remote rooms asked about directly
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

	walk := &hierarchyWalk{a: a, user: d.UserID, suggestedOnly: suggested, maxDepth: maxDepth,
		remote: map[id.RoomID]*roomserver.RoomSummary{}, inaccessible: map[id.RoomID]bool{}, fetched: map[id.RoomID]bool{}}
	// The walk is depth first ("Paginates over the space tree in a depth-first
	// manner"): a stack whose top is the next room, children pushed in reverse
	// so that they are visited in the space's order. Each page redoes the walk
	// and skips the rooms earlier pages returned.
	stack := []hierarchyEntry{{roomID: roomID, via: serverOfRoomID(roomID)}}
	seen := map[id.RoomID]bool{}
	rooms := make([]*roomserver.RoomSummary, 0, limit)
	visible := 0
	for len(stack) > 0 && len(rooms) < limit {
		e := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
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
		children := walk.children(s)
		if visible++; visible > tok.skip {
			c := *s
			c.AllowedRoomIDs = nil // federation only
			c.ChildrenState = make([]json.RawMessage, len(children))
			for i, ch := range children {
				c.ChildrenState[i] = ch.Raw
			}
			rooms = append(rooms, &c)
		}
		if e.depth >= maxDepth {
			continue
		}
		for i := len(children) - 1; i >= 0; i-- {
			if c := children[i]; !seen[c.RoomID] {
				stack = append(stack, hierarchyEntry{roomID: c.RoomID, depth: e.depth + 1, via: c.Via})
			}
		}
	}
	resp := struct {
		Rooms     []*roomserver.RoomSummary `json:"rooms"`
		NextBatch string                    `json:"next_batch,omitempty"`
	}{Rooms: rooms}
	for _, e := range stack {
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

// serverOfRoomID is the server part of a room ID as a one-element via list
// (nil when the ID has none, as in room version 12).
func serverOfRoomID(roomID id.RoomID) []string {
	if _, server, ok := strings.Cut(string(roomID), ":"); ok && server != "" {
		return []string{server}
	}
	return nil
}

// children lists the links of a room the walk follows, in the space's order:
// only a space has children ("If the room is not a space-room, this should be
// empty"), and with suggested_only only its suggested children (which is also
// all that its children_state shows, as Synapse does).
func (w *hierarchyWalk) children(s *roomserver.RoomSummary) []roomserver.SpaceChild {
	if s.RoomType != "m.space" {
		return nil
	}
	all := roomserver.SpaceChildren(s.ChildrenState)
	out := all[:0]
	var seen map[id.RoomID]bool
	for _, c := range all {
		if w.suggestedOnly && !c.Suggested {
			continue
		}
		if seen == nil {
			seen = make(map[id.RoomID]bool, len(all))
		}
		if !seen[c.RoomID] { // a remote answer may repeat a link
			seen[c.RoomID] = true
			out = append(out, c)
		}
	}
	return out
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
	// A child described in its parent's answer comes without its own
	// children: a space whose children the walk will follow is asked for
	// again, falling back to the parent's description.
	if s == nil || (s.RoomType == "m.space" && e.depth < w.maxDepth && !w.fetched[e.roomID]) {
		if f := w.fetch(ctx, e, s != nil); f != nil {
			s = f
		}
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
// what they said about its children. It returns nil when no server answered;
// the room is then inaccessible unless a parent's answer described it.
func (w *hierarchyWalk) fetch(ctx context.Context, e hierarchyEntry, described bool) *roomserver.RoomSummary {
	rh := w.a.opts.RemoteHierarchy
	if rh == nil || len(e.via) == 0 || w.remoteCalls >= maxRemoteHierarchyCalls {
		return nil
	}
	w.remoteCalls++
	w.fetched[e.roomID] = true
	h, err := rh.RemoteHierarchy(ctx, e.roomID, e.via, w.suggestedOnly)
	if err != nil || h == nil || h.Room == nil || h.Room.RoomID != e.roomID {
		slog.DebugContext(ctx, "remote space hierarchy unavailable", "room_id", e.roomID, "err", err)
		if !described {
			w.inaccessible[e.roomID] = true
		}
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

// roomSummaryResponse is the answer of GET /room_summary (Client-Server API,
// "Room Summaries"): a space hierarchy's room entry without children_state,
// with allowed_room_ids for restricted rooms and the requester's membership.
type roomSummaryResponse struct {
	roomserver.RoomSummaryFields
	Membership string `json:"membership,omitempty"`
}

// maxSummaryVia bounds the via servers a room summary request may name.
const maxSummaryVia = 20

// GET /_matrix/client/v1/room_summary/{roomIdOrAlias}?via=
//
// Authentication is optional: without it only rooms anyone may peek or join
// (public, knock or knock_restricted join rule, or world-readable) are
// described, as the spec allows. Rooms this server is not in are asked about
// over federation (GET /hierarchy) through via, or the servers the alias
// resolved to, or the room ID's server. Rooms the requester may not see are a
// 404, as for unknown rooms, so the answer does not reveal that they exist.
func (a *API) getRoomSummary(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	rs := a.opts.Roomserver
	var d *Device
	if _, ok := accessToken(r); ok {
		dev, err := a.authenticate(r)
		if err != nil {
			return err
		}
		d = dev
	}
	via := r.URL.Query()["via"]
	if len(via) > maxSummaryVia {
		return httputil.InvalidParam("At most %d via servers may be given", maxSummaryVia)
	}
	for _, v := range via {
		if !id.ValidateServerName(v) {
			return httputil.InvalidParam("Invalid server name %q in via", v)
		}
	}
	roomID, aliasServers, err := a.summaryTarget(ctx, mux.Vars(r)["roomIdOrAlias"])
	if err != nil {
		return err
	}
	local, err := rs.ServerJoined(ctx, roomID, "", a.cfg.ServerName)
	if err != nil && !errors.Is(err, roomserver.ErrRoomNotFound) {
		return internalErr(err)
	}
	membership := ""
	if d != nil {
		if m, _, err := rs.Membership(ctx, roomID, d.UserID); err == nil {
			membership = m
		}
	}
	var s *roomserver.RoomSummary
	if local {
		if s, err = rs.RoomSummary(ctx, roomID); err != nil {
			return roomErr(err)
		}
	} else {
		servers := append(append(via, aliasServers...), serverOfRoomID(roomID)...)
		if a.opts.RemoteHierarchy != nil && len(servers) > 0 {
			h, err := a.opts.RemoteHierarchy.RemoteHierarchy(ctx, roomID, servers, true)
			if err != nil {
				slog.DebugContext(ctx, "remote room summary unavailable", "room_id", roomID, "err", err)
			} else {
				s = h.Room
			}
		}
	}
	notFound := httputil.NotFound("Room %s not found or not accessible", roomID)
	if s == nil {
		return notFound
	}
	var ok bool
	if d == nil {
		ok = s.WorldReadable || s.JoinRule == "public" || s.JoinRule == "knock" || s.JoinRule == "knock_restricted"
	} else {
		walk := &hierarchyWalk{a: a, user: d.UserID}
		if ok, err = walk.userMaySee(ctx, s, membership); err != nil {
			return err
		}
	}
	if !ok {
		return notFound
	}
	resp := roomSummaryResponse{RoomSummaryFields: s.RoomSummaryFields}
	resp.RoomID = roomID
	if s.JoinRule != "restricted" && s.JoinRule != "knock_restricted" {
		resp.AllowedRoomIDs = nil
	}
	if d != nil {
		// "The membership state of the user": leave when they have none.
		resp.Membership = cmp.Or(membership, "leave")
	}
	httputil.RespondJSON(w, http.StatusOK, resp)
	return nil
}

// summaryTarget resolves the {roomIdOrAlias} of a room summary request, with
// the servers a remote alias named.
func (a *API) summaryTarget(ctx context.Context, target string) (id.RoomID, []string, error) {
	switch {
	case validRoomID(target):
		return id.RoomID(target), nil, nil
	case strings.HasPrefix(target, "#"):
		alias, err := parseAlias(target)
		if err != nil {
			return "", nil, err
		}
		if aliasServer(alias) == a.cfg.ServerName {
			rid, err := a.resolveLocalAlias(ctx, alias)
			return rid, nil, err
		}
		if a.opts.RemoteAliases == nil {
			return "", nil, httputil.NotFound("Room alias %s not found", alias)
		}
		rid, servers, err := a.opts.RemoteAliases.ResolveRemoteAlias(ctx, alias)
		if err != nil {
			var me *httputil.Error
			if errors.As(err, &me) {
				return "", nil, err
			}
			return "", nil, httputil.NotFound("Room alias %s could not be resolved", alias)
		}
		return rid, servers, nil
	}
	return "", nil, httputil.InvalidParam("%q is neither a room ID nor a room alias", target)
}
