package federationapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"

	"github.com/gorilla/mux"
	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"hearth/httputil"
	"hearth/roomserver"
)

// maxHierarchyChildren bounds the children one federation answer describes.
const maxHierarchyChildren = 500

// GET /_matrix/federation/v1/hierarchy/{roomId}?suggested_only=
func (a *API) getHierarchy(w http.ResponseWriter, r *http.Request, origin string) error {
	ctx := r.Context()
	roomID := id.RoomID(mux.Vars(r)["roomId"])
	if len(roomID) < 2 || roomID[0] != '!' || len(roomID) > 255 {
		return httputil.InvalidParam("Invalid room ID %q", roomID)
	}
	suggestedOnly, err := parseBoolParam(r.URL.Query().Get("suggested_only"))
	if err != nil {
		return err
	}
	if err := a.checkACL(ctx, roomID, origin); err != nil {
		return err
	}
	root, ok, err := a.summaryFor(ctx, roomID, origin)
	if err != nil {
		return err
	}
	if root == nil || !ok {
		// The spec's 404: unknown here, or origin could not peek or join it.
		return httputil.NotFound("Room %s is unknown or not accessible", roomID)
	}
	// Only a space has children ("If the room is not a space-room, this
	// should be empty"); with suggested_only only its suggested ones, which
	// is also all its children_state shows (as Synapse answers).
	if root.RoomType == "m.space" {
		root.ChildrenState = roomserver.OrderedChildrenState(root.ChildrenState, suggestedOnly)
	} else {
		root.ChildrenState = []json.RawMessage{}
	}
	resp := roomserver.SpaceHierarchy{Room: root, Children: []*roomserver.RoomSummary{}, InaccessibleChildren: []id.RoomID{}}
	for _, c := range roomserver.SpaceChildren(root.ChildrenState) {
		if len(resp.Children)+len(resp.InaccessibleChildren) >= maxHierarchyChildren {
			break
		}
		s, ok, err := a.summaryFor(ctx, c.RoomID, origin)
		if err != nil {
			return err
		}
		switch {
		case s == nil:
			// Rooms this server cannot describe are left out.
		case ok:
			// A child's own children are the asking server's next request.
			s.ChildrenState = []json.RawMessage{}
			resp.Children = append(resp.Children, s)
		default:
			resp.InaccessibleChildren = append(resp.InaccessibleChildren, c.RoomID)
		}
	}
	httputil.RespondJSON(w, http.StatusOK, resp)
	return nil
}

// summaryFor returns the summary of a room this server is in (nil if it is not)
// and whether origin could peek or join it (Server-Server API, GET /hierarchy:
// "the space-room's children the requesting server could feasibly
// peek/join"): the room is world-readable, its join rule lets anyone join or
// knock, origin is in the room, or the room is restricted and origin is in
// one of its allowed rooms as far as this server knows (the asking server then
// filters its users by allowed_room_ids). A restricted room whose allowed
// rooms this server is not in is not shown: it cannot tell who is in them.
func (a *API) summaryFor(ctx context.Context, roomID id.RoomID, origin string) (*roomserver.RoomSummary, bool, error) {
	joined, err := a.rs.ServerJoined(ctx, roomID, "", a.serverName)
	if err != nil {
		if errors.Is(err, roomserver.ErrRoomNotFound) {
			return nil, false, nil
		}
		return nil, false, err
	}
	if !joined {
		return nil, false, nil // this server's view of the room is not current
	}
	s, err := a.rs.RoomSummary(ctx, roomID)
	if errors.Is(err, roomserver.ErrRoomNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	if allowed, err := a.aclAllows(ctx, roomID, origin); err != nil || !allowed {
		return s, false, err
	}
	switch {
	case s.WorldReadable:
		return s, true, nil
	case s.JoinRule == "public", s.JoinRule == "knock", s.JoinRule == "knock_restricted":
		return s, true, nil
	}
	in, err := a.rs.ServerJoined(ctx, roomID, "", origin)
	if err != nil || in {
		return s, in, err
	}
	if s.JoinRule == "restricted" {
		for _, allowed := range s.AllowedRoomIDs {
			in, err := a.rs.ServerJoined(ctx, allowed, "", origin)
			if errors.Is(err, roomserver.ErrRoomNotFound) {
				continue
			}
			if err != nil || in {
				return s, in, err
			}
		}
	}
	return s, false, nil
}

// parseBoolParam parses a boolean query parameter ("" is false).
func parseBoolParam(s string) (bool, error) {
	switch s {
	case "", "false":
		return false, nil
	case "true":
		return true, nil
	}
	return false, httputil.InvalidParam("Invalid boolean %q", s)
}

// RemoteHierarchy asks the given servers, in turn, for the space hierarchy of
// roomID (GET /_matrix/federation/v1/hierarchy) and returns the first answer.
// Errors with a Matrix error code come back as *httputil.Error.
func (a *API) RemoteHierarchy(ctx context.Context, roomID id.RoomID, via []string, suggestedOnly bool) (*roomserver.SpaceHierarchy, error) {
	var candidates []string
	for _, s := range via {
		if s != a.serverName && s != "" && !slices.Contains(candidates, s) {
			candidates = append(candidates, s)
		}
	}
	if len(candidates) == 0 {
		return nil, ErrNoServers
	}
	q := url.Values{"suggested_only": {strconv.FormatBool(suggestedOnly)}}
	var errs []error
	for _, server := range candidates {
		var resp roomserver.SpaceHierarchy
		_, _, err := a.client.MakeFullRequest(ctx, federation.RequestParams{
			ServerName: server, Method: http.MethodGet, Authenticate: true,
			Path: federation.URLPath{"v1", "hierarchy", roomID}, Query: q, ResponseJSON: &resp,
		})
		if err == nil && (resp.Room == nil || resp.Room.RoomID != roomID) {
			err = fmt.Errorf("hierarchy of %s from %s: the answer describes another room", roomID, server)
		}
		if err == nil {
			return &resp, nil
		}
		errs = append(errs, remoteError(fmt.Sprintf("hierarchy of %s from %s", roomID, server), err))
		if ctx.Err() != nil {
			break
		}
	}
	for _, err := range errs {
		var me *httputil.Error
		if errors.As(err, &me) {
			return nil, err
		}
	}
	return nil, errors.Join(errs...)
}
