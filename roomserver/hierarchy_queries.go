package roomserver

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"
)

// RoomSummary describes a room for the space hierarchy (Client-Server API,
// "Spaces", GET /hierarchy; Server-Server API, "Spaces"): the spec's
// SpaceHierarchyRoomsChunk. ChildrenState holds the room's m.space.child events
// in stripped form with origin_server_ts.
type RoomSummary struct {
	RoomSummaryFields
	ChildrenState []json.RawMessage `json:"children_state"`
}

// RoomSummaryFields is the spec's RoomSummary object (a PublicRoomsChunk with
// room_type, allowed_room_ids, encryption and room_version), shared by the
// space hierarchy and GET /room_summary. AllowedRoomIDs is set for restricted
// rooms (federation only: the asking server filters by it).
type RoomSummaryFields struct {
	RoomID           id.RoomID   `json:"room_id"`
	Name             string      `json:"name,omitempty"`
	Topic            string      `json:"topic,omitempty"`
	AvatarURL        string      `json:"avatar_url,omitempty"`
	CanonicalAlias   string      `json:"canonical_alias,omitempty"`
	NumJoinedMembers int         `json:"num_joined_members"`
	WorldReadable    bool        `json:"world_readable"`
	GuestCanJoin     bool        `json:"guest_can_join"`
	JoinRule         string      `json:"join_rule,omitempty"`
	RoomType         string      `json:"room_type,omitempty"`
	RoomVersion      string      `json:"room_version,omitempty"`
	Encryption       string      `json:"encryption,omitempty"`
	AllowedRoomIDs   []id.RoomID `json:"allowed_room_ids,omitempty"`
}

// SpaceHierarchy is the answer of GET /_matrix/federation/v1/hierarchy
// (Server-Server API, "Spaces"): the space, the children the asking server
// could peek or join, and the children it could not.
type SpaceHierarchy struct {
	Room                 *RoomSummary   `json:"room"`
	Children             []*RoomSummary `json:"children"`
	InaccessibleChildren []id.RoomID    `json:"inaccessible_children"`
}

// SpaceChild is one valid m.space.child link of a space.
type SpaceChild struct {
	RoomID    id.RoomID
	Via       []string
	Order     string
	Suggested bool
	TS        int64
	// Raw is the entry of children_state the link was read from.
	Raw json.RawMessage
}

// RoomSummary returns the summary of a room this server knows, from its current
// state. ErrRoomNotFound if the room is unknown.
func (r *Roomserver) RoomSummary(ctx context.Context, roomID id.RoomID) (*RoomSummary, error) {
	v, err := r.RoomVersion(ctx, roomID)
	if err != nil {
		return nil, err
	}
	state, err := r.CurrentState(ctx, roomID)
	if err != nil {
		return nil, fmt.Errorf("loading the state of %s: %w", roomID, err)
	}
	s := &RoomSummary{RoomSummaryFields: RoomSummaryFields{RoomID: roomID, RoomVersion: string(v.ID), JoinRule: "invite"}, ChildrenState: []json.RawMessage{}}
	for _, se := range state {
		e := se.Event
		if e == nil {
			continue
		}
		c := e.Content()
		switch se.Key.Type {
		case "m.room.create":
			s.RoomType = gjson.GetBytes(c, "type").Str
		case "m.room.name":
			if se.Key.StateKey == "" {
				s.Name = gjson.GetBytes(c, "name").Str
			}
		case "m.room.topic":
			if se.Key.StateKey == "" {
				s.Topic = gjson.GetBytes(c, "topic").Str
			}
		case "m.room.avatar":
			if se.Key.StateKey == "" {
				s.AvatarURL = gjson.GetBytes(c, "url").Str
			}
		case "m.room.canonical_alias":
			if se.Key.StateKey == "" {
				s.CanonicalAlias = gjson.GetBytes(c, "alias").Str
			}
		case "m.room.history_visibility":
			if se.Key.StateKey == "" {
				s.WorldReadable = gjson.GetBytes(c, "history_visibility").Str == "world_readable"
			}
		case "m.room.guest_access":
			if se.Key.StateKey == "" {
				s.GuestCanJoin = gjson.GetBytes(c, "guest_access").Str == "can_join"
			}
		case "m.room.encryption":
			if se.Key.StateKey == "" {
				s.Encryption = gjson.GetBytes(c, "algorithm").Str
			}
		case "m.room.join_rules":
			if se.Key.StateKey != "" {
				continue
			}
			if jr := gjson.GetBytes(c, "join_rule"); jr.Type == gjson.String {
				s.JoinRule = jr.Str
			}
			if s.JoinRule == "restricted" || s.JoinRule == "knock_restricted" {
				for _, al := range gjson.GetBytes(c, "allow").Array() {
					if al.Get("type").Str == "m.room_membership" {
						if rid := al.Get("room_id").Str; rid != "" {
							s.AllowedRoomIDs = append(s.AllowedRoomIDs, id.RoomID(rid))
						}
					}
				}
			}
		case "m.room.member":
			if gjson.GetBytes(c, "membership").Str == "join" {
				s.NumJoinedMembers++
			}
		case "m.space.child":
			// A child with no via is not a child (Client-Server API,
			// "m.space.child": "content without a valid via is ignored").
			if len(gjson.GetBytes(c, "via").Array()) == 0 {
				continue
			}
			s.ChildrenState = append(s.ChildrenState, strippedWithTS(e.Type(), se.Key.StateKey, string(e.Sender()), c, e.OriginServerTS()))
		}
	}
	return s, nil
}

// strippedWithTS builds a stripped state event with origin_server_ts, as the
// hierarchy's children_state holds.
func strippedWithTS(evType, stateKey, sender string, content []byte, ts int64) json.RawMessage {
	b, err := json.Marshal(struct {
		Type           string          `json:"type"`
		StateKey       string          `json:"state_key"`
		Sender         string          `json:"sender"`
		Content        json.RawMessage `json:"content"`
		OriginServerTS int64           `json:"origin_server_ts"`
	}{evType, stateKey, sender, json.RawMessage(content), ts})
	if err != nil {
		return json.RawMessage(`{}`)
	}
	return b
}

// validOrder reports whether an m.space.child order is usable: at most 50
// characters, each in 0x20–0x7E (Client-Server API, "Ordering of children
// within a space").
func validOrder(s string) bool {
	if len(s) > 50 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7E {
			return false
		}
	}
	return true
}

// SpaceChildren parses children_state into the valid children of a space, in
// the spec's order: children with an order first, by order; then by the
// m.space.child event's origin_server_ts; then by room ID. Malformed entries
// (not m.space.child, bad room ID, no via) are left out.
func SpaceChildren(childrenState []json.RawMessage) []SpaceChild {
	out := make([]SpaceChild, 0, len(childrenState))
	for _, raw := range childrenState {
		x := gjson.ParseBytes(raw)
		if !x.IsObject() || x.Get("type").Str != "m.space.child" {
			continue
		}
		rid := x.Get("state_key").Str
		if len(rid) < 2 || rid[0] != '!' || len(rid) > 255 {
			continue
		}
		c := SpaceChild{RoomID: id.RoomID(rid), TS: x.Get("origin_server_ts").Int(), Raw: raw}
		for _, v := range x.Get("content.via").Array() {
			if v.Type == gjson.String && v.Str != "" && len(v.Str) <= 255 {
				c.Via = append(c.Via, v.Str)
			}
		}
		if len(c.Via) == 0 {
			continue
		}
		if o := x.Get("content.order"); o.Type == gjson.String && validOrder(o.Str) {
			c.Order = o.Str
		}
		c.Suggested = x.Get("content.suggested").Type == gjson.True
		out = append(out, c)
	}
	slices.SortStableFunc(out, func(a, b SpaceChild) int {
		switch {
		case a.Order != "" && b.Order == "":
			return -1
		case a.Order == "" && b.Order != "":
			return 1
		}
		return cmp.Or(cmp.Compare(a.Order, b.Order), cmp.Compare(a.TS, b.TS), cmp.Compare(a.RoomID, b.RoomID))
	})
	return out
}

// OrderedChildrenState returns the valid links of childrenState in
// SpaceChildren's order, one per child room, only the suggested ones when
// suggestedOnly: a space's children_state as GET /hierarchy lists it (Synapse
// lists them in the order its walk visits the children). Never nil.
func OrderedChildrenState(childrenState []json.RawMessage, suggestedOnly bool) []json.RawMessage {
	out := make([]json.RawMessage, 0, len(childrenState))
	var seen map[id.RoomID]bool
	for _, c := range SpaceChildren(childrenState) {
		if suggestedOnly && !c.Suggested {
			continue
		}
		if seen == nil {
			seen = make(map[id.RoomID]bool, len(childrenState))
		}
		if !seen[c.RoomID] {
			seen[c.RoomID] = true
			out = append(out, c.Raw)
		}
	}
	return out
}
