package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/gorilla/mux"
	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"hearth/httputil"
	"hearth/roomserver"
	"hearth/storage"
)

// Room aliases and the published room directory (Client-Server API, "Room
// aliases", "Published room directory").

// RemoteAliasResolver resolves a room alias of another server (Server-Server
// API, GET /query/directory). It is implemented by federation.
type RemoteAliasResolver interface {
	ResolveRemoteAlias(ctx context.Context, alias id.RoomAlias) (id.RoomID, []string, error)
}

func (a *API) registerDirectoryRoutes(r *mux.Router) {
	handle(r, v3R0, "/directory/room/{roomAlias:.+}", a.public(a.getAlias), http.MethodGet)
	handle(r, v3R0, "/directory/room/{roomAlias:.+}", a.authed(a.putAlias, 0), http.MethodPut)
	handle(r, v3R0, "/directory/room/{roomAlias:.+}", a.authed(a.deleteAlias, 0), http.MethodDelete)
	handle(r, v3R0, "/rooms/{roomId}/aliases", a.authed(a.roomAliases, allowGuests), http.MethodGet)
	handle(r, v3R0, "/directory/list/room/{roomId}", a.public(a.getVisibility), http.MethodGet)
	handle(r, v3R0, "/directory/list/room/{roomId}", a.authed(a.putVisibility, 0), http.MethodPut)
	handle(r, v3R0, "/publicRooms", a.public(a.getPublicRooms), http.MethodGet)
	handle(r, v3R0, "/publicRooms", a.authed(a.postPublicRooms, allowGuests), http.MethodPost)
}

// parseAlias checks a room alias against the grammar (Appendices, "Room
// aliases"): "#", a localpart without ":" or NUL, ":", a server name; at most 255
// bytes in all.
func parseAlias(s string) (id.RoomAlias, error) {
	if len(s) > 255 || len(s) < 4 || s[0] != '#' || !utf8.ValidString(s) {
		return "", httputil.InvalidParam("Invalid room alias %q", s)
	}
	i := strings.IndexByte(s, ':')
	if i < 2 || strings.IndexByte(s[:i], 0) >= 0 || !id.ValidateServerName(s[i+1:]) {
		return "", httputil.InvalidParam("Invalid room alias %q", s)
	}
	return id.RoomAlias(s), nil
}

// aliasServer is the server part of a valid alias.
func aliasServer(a id.RoomAlias) string {
	_, server, _ := strings.Cut(string(a), ":")
	return server
}

// localAlias makes an alias of this server from a localpart (room_alias_name).
func (a *API) localAlias(localpart string) (id.RoomAlias, error) {
	if localpart == "" || strings.ContainsAny(localpart, ":# \t\n\r\x00") {
		return "", httputil.InvalidParam("Invalid room alias localpart %q", localpart)
	}
	return parseAlias("#" + localpart + ":" + a.cfg.ServerName)
}

// aliasRoom returns the room a local alias points to ("" if none).
func (a *API) aliasRoom(ctx context.Context, alias id.RoomAlias) (id.RoomID, error) {
	var rid string
	err := a.db.QueryRow(ctx, `SELECT room_id FROM room_aliases WHERE alias = $1`, string(alias)).Scan(&rid)
	if isNoRows(err) {
		return "", nil
	}
	return id.RoomID(rid), err
}

// ErrAliasNotFound is LocalAliasRoom's answer for an alias this server does not
// hold.
var ErrAliasNotFound = errors.New("room alias not found")

// LocalAliasRoom returns the room a local alias points to, or ErrAliasNotFound.
// The federation API answers GET /query/directory with it.
func (a *API) LocalAliasRoom(ctx context.Context, alias id.RoomAlias) (id.RoomID, error) {
	rid, err := a.aliasRoom(ctx, alias)
	if err != nil {
		return "", fmt.Errorf("resolving alias %s: %w", alias, err)
	}
	if rid == "" {
		return "", ErrAliasNotFound
	}
	return rid, nil
}

// resolveLocalAlias returns a local alias's room or 404.
func (a *API) resolveLocalAlias(ctx context.Context, alias id.RoomAlias) (id.RoomID, error) {
	rid, err := a.aliasRoom(ctx, alias)
	if err == nil && rid == "" && a.queryAppServiceAlias(ctx, alias) {
		// An application service knew the alias and has just created it
		// (Application Service API, "Querying").
		rid, err = a.aliasRoom(ctx, alias)
	}
	if err != nil {
		return "", internalErr(err)
	}
	if rid == "" {
		return "", httputil.NotFound("Room alias %s not found", alias)
	}
	return rid, nil
}

// createAlias maps a local alias to a room (409 M_UNKNOWN if taken… the spec's
// answer for PUT /directory/room; createRoom turns it into M_ROOM_IN_USE).
func (a *API) createAlias(ctx context.Context, alias id.RoomAlias, roomID id.RoomID, creator id.UserID) error {
	_, err := a.db.Exec(ctx, `INSERT INTO room_aliases (alias, room_id, creator, created_ts) VALUES ($1, $2, $3, $4)`,
		string(alias), string(roomID), string(creator), nowMS())
	if storage.IsUniqueViolation(err) {
		return httputil.RoomInUse("The room alias %s is already taken", alias)
	}
	if err != nil {
		return internalErr(err)
	}
	return nil
}

// roomServers lists the servers of the room's joined members, this one first
// (the servers to join through).
func (a *API) roomServers(ctx context.Context, roomID id.RoomID) []string {
	joined, err := a.opts.Roomserver.Members(ctx, roomID, "join")
	if err != nil {
		return []string{a.cfg.ServerName}
	}
	out := []string{a.cfg.ServerName}
	for _, u := range joined {
		if s := u.Homeserver(); !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// GET /directory/room/{roomAlias}
func (a *API) getAlias(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	alias, err := parseAlias(mux.Vars(r)["roomAlias"])
	if err != nil {
		return err
	}
	if aliasServer(alias) != a.cfg.ServerName {
		if a.opts.RemoteAliases == nil {
			return errFederationUnavailable("Resolving a room alias of another server")
		}
		rid, servers, err := a.opts.RemoteAliases.ResolveRemoteAlias(ctx, alias)
		if err != nil {
			var me *httputil.Error
			if errors.As(err, &me) {
				return me
			}
			return httputil.NotFound("Room alias %s not found", alias)
		}
		httputil.RespondJSON(w, http.StatusOK, map[string]any{"room_id": rid, "servers": servers})
		return nil
	}
	rid, err := a.resolveLocalAlias(ctx, alias)
	if err != nil {
		return err
	}
	httputil.RespondJSON(w, http.StatusOK, map[string]any{"room_id": rid, "servers": a.roomServers(ctx, rid)})
	return nil
}

// PUT /directory/room/{roomAlias}
func (a *API) putAlias(w http.ResponseWriter, r *http.Request, d *Device) error {
	ctx := r.Context()
	alias, err := parseAlias(mux.Vars(r)["roomAlias"])
	if err != nil {
		return err
	}
	var body struct {
		RoomID string `json:"room_id"`
	}
	if err := decodeJSON(r, &body); err != nil {
		return err
	}
	if !validRoomID(body.RoomID) {
		return httputil.BadJSON("room_id must be a room ID")
	}
	if aliasServer(alias) != a.cfg.ServerName {
		return httputil.InvalidParam("This server can only hold aliases ending in :%s", a.cfg.ServerName)
	}
	roomID := id.RoomID(body.RoomID)
	if _, err := a.opts.Roomserver.RoomVersion(ctx, roomID); err != nil {
		return roomErr(err)
	}
	byService, err := a.checkAliasNamespace(d, alias)
	if err != nil {
		return err
	}
	if !d.IsAdmin && !byService {
		if err := a.requireJoined(ctx, roomID, d.UserID); err != nil {
			return err
		}
	}
	if err := a.createAlias(ctx, alias, roomID, d.UserID); err != nil {
		var me *httputil.Error
		if errors.As(err, &me) && me.ErrCode == "M_ROOM_IN_USE" {
			return &httputil.Error{Status: http.StatusConflict, ErrCode: "M_UNKNOWN", Message: me.Message}
		}
		return err
	}
	httputil.RespondJSON(w, http.StatusOK, struct{}{})
	return nil
}

// DELETE /directory/room/{roomAlias}: by the alias's creator, a server admin, or
// a room member allowed to change the canonical alias. An alias listed in the
// room's m.room.canonical_alias is taken out of it too, when the user may.
func (a *API) deleteAlias(w http.ResponseWriter, r *http.Request, d *Device) error {
	ctx := r.Context()
	alias, err := parseAlias(mux.Vars(r)["roomAlias"])
	if err != nil {
		return err
	}
	var roomID, creator string
	err = a.db.QueryRow(ctx, `SELECT room_id, creator FROM room_aliases WHERE alias = $1`, string(alias)).Scan(&roomID, &creator)
	if isNoRows(err) {
		return httputil.NotFound("Room alias %s not found", alias)
	}
	if err != nil {
		return internalErr(err)
	}
	byService, err := a.checkAliasNamespace(d, alias)
	if err != nil {
		return err
	}
	if creator != string(d.UserID) && !d.IsAdmin && !byService {
		allowed := false
		if m, _, err := a.opts.Roomserver.Membership(ctx, id.RoomID(roomID), d.UserID); err == nil && m == "join" {
			if pl, err := a.roomPower(ctx, id.RoomID(roomID)); err == nil {
				allowed = pl.userLevel(d.UserID) >= pl.stateEventLevel(keyCanonical.Type)
			}
		}
		if !allowed {
			return httputil.Forbidden("You may not remove this alias")
		}
	}
	if _, err := a.db.Exec(ctx, `DELETE FROM room_aliases WHERE alias = $1`, string(alias)); err != nil {
		return internalErr(err)
	}
	a.dropFromCanonicalAlias(ctx, id.RoomID(roomID), d.UserID, alias)
	httputil.RespondJSON(w, http.StatusOK, struct{}{})
	return nil
}

// dropFromCanonicalAlias removes alias from the room's m.room.canonical_alias,
// sent as user; failures (no power) are logged only, as the spec recommends.
func (a *API) dropFromCanonicalAlias(ctx context.Context, roomID id.RoomID, user id.UserID, alias id.RoomAlias) {
	cur, err := a.opts.Roomserver.CurrentStateEvents(ctx, roomID, []pdu.StateKey{keyCanonical})
	if err != nil || cur[0] == nil {
		return
	}
	var c map[string]json.RawMessage
	if json.Unmarshal(cur[0].Content(), &c) != nil {
		return
	}
	changed := false
	if gjson.GetBytes(cur[0].Content(), "alias").Str == string(alias) {
		delete(c, "alias")
		changed = true
	}
	var alts []string
	if raw, ok := c["alt_aliases"]; ok && json.Unmarshal(raw, &alts) == nil {
		kept := slices.DeleteFunc(slices.Clone(alts), func(s string) bool { return s == string(alias) })
		if len(kept) != len(alts) {
			b, _ := json.Marshal(kept)
			c["alt_aliases"] = b
			changed = true
		}
	}
	if !changed {
		return
	}
	b, _ := json.Marshal(c)
	empty := ""
	_, err = a.opts.Roomserver.SendEvent(ctx, roomID, roomserver.SendRequest{Type: keyCanonical.Type, StateKey: &empty, Sender: user, Content: b})
	logIfErr(ctx, "updating canonical alias after alias removal", err)
}

// checkCanonicalAlias validates a new m.room.canonical_alias content (PUT
// /rooms/{roomId}/state): aliases it adds must be valid (M_INVALID_PARAM) and
// point to this room (M_BAD_ALIAS). Aliases already in the state or being
// removed are not checked.
func (a *API) checkCanonicalAlias(ctx context.Context, roomID id.RoomID, content []byte) error {
	var c struct {
		Alias      *string  `json:"alias"`
		AltAliases []string `json:"alt_aliases"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return httputil.BadJSON("alias must be a string and alt_aliases a list of strings")
	}
	existing := map[string]bool{}
	if cur, err := a.opts.Roomserver.CurrentStateEvents(ctx, roomID, []pdu.StateKey{keyCanonical}); err == nil && cur[0] != nil {
		ec := gjson.ParseBytes(cur[0].Content())
		existing[ec.Get("alias").Str] = true
		for _, x := range ec.Get("alt_aliases").Array() {
			existing[x.Str] = true
		}
	}
	var added []string
	if c.Alias != nil && *c.Alias != "" {
		added = append(added, *c.Alias)
	}
	added = append(added, c.AltAliases...)
	for _, s := range added {
		if existing[s] {
			continue
		}
		alias, err := parseAlias(s)
		if err != nil {
			return err
		}
		var rid id.RoomID
		if aliasServer(alias) == a.cfg.ServerName {
			if rid, err = a.aliasRoom(ctx, alias); err != nil {
				return internalErr(err)
			}
		} else if a.opts.RemoteAliases != nil {
			rid, _, _ = a.opts.RemoteAliases.ResolveRemoteAlias(ctx, alias)
		}
		if rid != roomID {
			return &httputil.Error{Status: http.StatusBadRequest, ErrCode: "M_BAD_ALIAS", Message: "The alias " + s + " does not point to this room"}
		}
	}
	return nil
}

// GET /rooms/{roomId}/aliases
func (a *API) roomAliases(w http.ResponseWriter, r *http.Request, d *Device) error {
	ctx := r.Context()
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	cur, err := a.opts.Roomserver.CurrentStateEvents(ctx, roomID, []pdu.StateKey{memberKey(d.UserID), keyHistory})
	if err != nil && !errors.Is(err, roomserver.ErrRoomNotFound) {
		return internalErr(err)
	}
	if err != nil || (membershipOf(cur[0]) != "join" && historyVisibility(cur[1]) != "world_readable" && !d.IsAdmin) {
		return httputil.Forbidden("You are not in this room")
	}
	rows, err := a.db.Query(ctx, `SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias`, string(roomID))
	if err != nil {
		return internalErr(err)
	}
	aliases := []string{}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			rows.Close()
			return internalErr(err)
		}
		aliases = append(aliases, s)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return internalErr(err)
	}
	httputil.RespondJSON(w, http.StatusOK, map[string]any{"aliases": aliases})
	return nil
}

// setPublished adds a room to or removes it from the published directory.
func (a *API) setPublished(ctx context.Context, roomID id.RoomID, public bool) error {
	var err error
	if public {
		_, err = a.db.Exec(ctx, `INSERT INTO room_directory (room_id, published_ts) VALUES ($1, $2) ON CONFLICT DO NOTHING`, string(roomID), nowMS())
	} else {
		_, err = a.db.Exec(ctx, `DELETE FROM room_directory WHERE room_id = $1`, string(roomID))
	}
	if err != nil {
		return internalErr(err)
	}
	return nil
}

func (a *API) isPublished(ctx context.Context, roomID id.RoomID) (bool, error) {
	var one int
	err := a.db.QueryRow(ctx, `SELECT 1 FROM room_directory WHERE room_id = $1`, string(roomID)).Scan(&one)
	if isNoRows(err) {
		return false, nil
	}
	return err == nil, err
}

// GET /directory/list/room/{roomId}
func (a *API) getVisibility(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	if _, err := a.opts.Roomserver.RoomVersion(ctx, roomID); err != nil {
		return roomErr(err)
	}
	pub, err := a.isPublished(ctx, roomID)
	if err != nil {
		return internalErr(err)
	}
	vis := "private"
	if pub {
		vis = "public"
	}
	httputil.RespondJSON(w, http.StatusOK, map[string]string{"visibility": vis})
	return nil
}

// PUT /directory/list/room/{roomId}: by server admins and room members allowed
// to change the canonical alias.
func (a *API) putVisibility(w http.ResponseWriter, r *http.Request, d *Device) error {
	ctx := r.Context()
	roomID, err := roomIDParam(r)
	if err != nil {
		return err
	}
	var body struct {
		Visibility string `json:"visibility"`
	}
	if err := decodeOptionalJSON(r, &body); err != nil {
		return err
	}
	if body.Visibility != "" && body.Visibility != "public" && body.Visibility != "private" {
		return httputil.BadJSON("visibility must be public or private")
	}
	if _, err := a.opts.Roomserver.RoomVersion(ctx, roomID); err != nil {
		return roomErr(err)
	}
	if !d.IsAdmin {
		if err := a.requireJoined(ctx, roomID, d.UserID); err != nil {
			return err
		}
		pl, err := a.roomPower(ctx, roomID)
		if err != nil {
			return roomErr(err)
		}
		if pl.userLevel(d.UserID) < pl.stateEventLevel(keyCanonical.Type) {
			return httputil.Forbidden("You may not change whether this room is published")
		}
	}
	if err := a.setPublished(ctx, roomID, body.Visibility != "private"); err != nil {
		return err
	}
	httputil.RespondJSON(w, http.StatusOK, struct{}{})
	return nil
}

// publicRoomsRequest is the body of POST /publicRooms (and the query of GET).
type publicRoomsRequest struct {
	Limit  *int   `json:"limit"`
	Since  string `json:"since"`
	Filter *struct {
		GenericSearchTerm string    `json:"generic_search_term"`
		RoomTypes         []*string `json:"room_types"`
	} `json:"filter"`
	IncludeAllNetworks   bool   `json:"include_all_networks"`
	ThirdPartyInstanceID string `json:"third_party_instance_id"`
}

// publishedRoom is one entry of the directory (PublishedRoomsChunk).
type publishedRoom struct {
	RoomID           id.RoomID `json:"room_id"`
	NumJoinedMembers int       `json:"num_joined_members"`
	WorldReadable    bool      `json:"world_readable"`
	GuestCanJoin     bool      `json:"guest_can_join"`
	Name             string    `json:"name,omitempty"`
	Topic            string    `json:"topic,omitempty"`
	CanonicalAlias   string    `json:"canonical_alias,omitempty"`
	AvatarURL        string    `json:"avatar_url,omitempty"`
	JoinRule         string    `json:"join_rule,omitempty"`
	RoomType         string    `json:"room_type,omitempty"`
}

// GET /publicRooms
func (a *API) getPublicRooms(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	var req publicRoomsRequest
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return httputil.InvalidParam("limit must be a non-negative integer")
		}
		req.Limit = &n
	}
	req.Since = q.Get("since")
	return a.publicRooms(w, r, q.Get("server"), &req)
}

// POST /publicRooms
func (a *API) postPublicRooms(w http.ResponseWriter, r *http.Request, d *Device) error {
	var req publicRoomsRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	if req.Limit != nil && *req.Limit < 0 {
		return httputil.BadJSON("limit must not be negative")
	}
	return a.publicRooms(w, r, r.URL.Query().Get("server"), &req)
}

// maxPublicRoomsLimit caps one page of the directory.
const maxPublicRoomsLimit = 500

// publicRooms lists the directory: the published rooms, the most joined first,
// filtered, in pages whose since tokens are offsets ("o<n>").
func (a *API) publicRooms(w http.ResponseWriter, r *http.Request, server string, req *publicRoomsRequest) error {
	if server != "" && server != a.cfg.ServerName {
		return errFederationUnavailable("Listing another server's room directory")
	}
	resp, err := a.publicRoomsPage(r.Context(), req)
	if err != nil {
		return err
	}
	httputil.RespondJSON(w, http.StatusOK, resp)
	return nil
}

// PublicRooms answers a request body of POST /publicRooms with the response
// body: a page of this server's directory. The federation API serves other
// servers' directory requests (Server-Server API, "Public Room Directory") with it.
func (a *API) PublicRooms(ctx context.Context, request []byte) ([]byte, error) {
	var req publicRoomsRequest
	if len(request) > 0 {
		if err := json.Unmarshal(request, &req); err != nil {
			return nil, httputil.BadJSON("Bad /publicRooms request: %v", err)
		}
	}
	if req.Limit != nil && *req.Limit < 0 {
		return nil, httputil.BadJSON("limit must not be negative")
	}
	resp, err := a.publicRoomsPage(ctx, &req)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(resp)
	if err != nil {
		return nil, fmt.Errorf("encoding the room directory: %w", err)
	}
	return b, nil
}

// publicRoomsPage computes one page of the directory for req.
func (a *API) publicRoomsPage(ctx context.Context, req *publicRoomsRequest) (map[string]any, error) {
	if req.ThirdPartyInstanceID != "" {
		return nil, httputil.InvalidParam("Unknown third-party network")
	}
	offset := 0
	if req.Since != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(req.Since, "o"))
		if err != nil || n < 0 || !strings.HasPrefix(req.Since, "o") {
			return nil, httputil.InvalidParam("Unknown pagination token")
		}
		offset = n
	}
	limit := maxPublicRoomsLimit
	if req.Limit != nil && *req.Limit > 0 {
		limit = min(*req.Limit, maxPublicRoomsLimit)
	}
	rooms, err := a.publishedRooms(ctx)
	if err != nil {
		return nil, internalErr(err)
	}
	if f := req.Filter; f != nil {
		term := strings.ToLower(f.GenericSearchTerm)
		rooms = slices.DeleteFunc(rooms, func(p publishedRoom) bool {
			if term != "" && !strings.Contains(strings.ToLower(p.Name), term) && !strings.Contains(strings.ToLower(p.Topic), term) &&
				!strings.Contains(strings.ToLower(p.CanonicalAlias), term) && !strings.Contains(strings.ToLower(string(p.RoomID)), term) {
				return true
			}
			if f.RoomTypes != nil {
				for _, t := range f.RoomTypes {
					if (t == nil && p.RoomType == "") || (t != nil && *t == p.RoomType) {
						return false
					}
				}
				return true
			}
			return false
		})
	}
	total := len(rooms)
	page := rooms[min(offset, total):min(offset+limit, total)]
	resp := map[string]any{"chunk": page, "total_room_count_estimate": total}
	if offset+limit < total {
		resp["next_batch"] = "o" + strconv.Itoa(offset+limit)
	}
	if offset > 0 {
		resp["prev_batch"] = "o" + strconv.Itoa(max(0, offset-limit))
	}
	return resp, nil
}

// publishedRooms describes every published room, sorted.
func (a *API) publishedRooms(ctx context.Context) ([]publishedRoom, error) {
	rows, err := a.db.Query(ctx, `SELECT room_id FROM room_directory`)
	if err != nil {
		return nil, err
	}
	var ids []id.RoomID
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			rows.Close()
			return nil, err
		}
		ids = append(ids, id.RoomID(s))
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rs := a.opts.Roomserver
	counts, err := rs.JoinedMemberCounts(ctx, ids)
	if err != nil {
		return nil, err
	}
	keys := []pdu.StateKey{keyName, keyTopic, keyCanonical, keyAvatar, keyJoinRules, keyHistory, keyGuest, keyCreate}
	out := make([]publishedRoom, 0, len(ids))
	for _, rid := range ids {
		st, err := rs.CurrentStateEvents(ctx, rid, keys)
		if errors.Is(err, roomserver.ErrRoomNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		p := publishedRoom{
			RoomID:           rid,
			NumJoinedMembers: counts[rid],
			Name:             contentString(st[0], "name"),
			Topic:            contentString(st[1], "topic"),
			CanonicalAlias:   contentString(st[2], "alias"),
			AvatarURL:        contentString(st[3], "url"),
			JoinRule:         contentString(st[4], "join_rule"),
			WorldReadable:    historyVisibility(st[5]) == "world_readable",
			GuestCanJoin:     contentString(st[6], "guest_access") == "can_join",
			RoomType:         contentString(st[7], "type"),
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(x, y publishedRoom) int {
		if x.NumJoinedMembers != y.NumJoinedMembers {
			return y.NumJoinedMembers - x.NumJoinedMembers
		}
		return strings.Compare(string(x.RoomID), string(y.RoomID))
	})
	return out, nil
}
