package clientapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/gorilla/mux"

	"hearth/clientapi/accounts"
	"hearth/httputil"
)

// registerFilterRoutes serves filters (Client-Server API, "Filtering").
func (a *API) registerFilterRoutes(r *mux.Router) {
	handle(r, v3R0, "/user/{userId}/filter", a.authed(a.postFilter, allowGuests), http.MethodPost)
	handle(r, v3R0, "/user/{userId}/filter/{filterId}", a.authed(a.getFilter, allowGuests), http.MethodGet)
}

// Filter is a sync filter (the spec's Filter schema). A nil list means the
// list was absent (everything passes); an empty list means nothing passes.
type Filter struct {
	EventFields []string     `json:"event_fields,omitempty"`
	EventFormat string       `json:"event_format,omitempty"`
	Presence    *EventFilter `json:"presence,omitempty"`
	AccountData *EventFilter `json:"account_data,omitempty"`
	Room        *RoomFilter  `json:"room,omitempty"`
}

// EventFilter is the spec's EventFilter.
type EventFilter struct {
	Limit      *int     `json:"limit,omitempty"`
	NotSenders []string `json:"not_senders,omitempty"`
	NotTypes   []string `json:"not_types,omitempty"`
	Senders    []string `json:"senders,omitempty"`
	Types      []string `json:"types,omitempty"`
}

// RoomEventFilter is the spec's RoomEventFilter.
type RoomEventFilter struct {
	EventFilter
	UnreadThreadNotifications bool     `json:"unread_thread_notifications,omitempty"`
	LazyLoadMembers           bool     `json:"lazy_load_members,omitempty"`
	IncludeRedundantMembers   bool     `json:"include_redundant_members,omitempty"`
	NotRooms                  []string `json:"not_rooms,omitempty"`
	Rooms                     []string `json:"rooms,omitempty"`
	ContainsURL               *bool    `json:"contains_url,omitempty"`
	// RelTypes and NotRelTypes keep or drop events by the rel_type of their
	// own m.relates_to (MSC3874, unstable names; applied by /messages).
	RelTypes    []string `json:"org.matrix.msc3874.rel_types,omitempty"`
	NotRelTypes []string `json:"org.matrix.msc3874.not_rel_types,omitempty"`
}

// RoomFilter is the spec's RoomFilter.
type RoomFilter struct {
	NotRooms     []string         `json:"not_rooms,omitempty"`
	Rooms        []string         `json:"rooms,omitempty"`
	Ephemeral    *RoomEventFilter `json:"ephemeral,omitempty"`
	IncludeLeave bool             `json:"include_leave,omitempty"`
	State        *RoomEventFilter `json:"state,omitempty"`
	Timeline     *RoomEventFilter `json:"timeline,omitempty"`
	AccountData  *RoomEventFilter `json:"account_data,omitempty"`
}

// ParseFilter decodes and validates a filter against the spec's schema: wrong
// types give M_BAD_JSON / M_NOT_JSON, values outside it M_BAD_JSON (room IDs
// must start with '!', senders with '@', limits not be negative, event_format be
// client or federation).
func ParseFilter(b []byte) (*Filter, error) {
	var f Filter
	if err := unmarshalObject(b, &f); err != nil {
		return nil, err
	}
	if err := f.validate(); err != nil {
		return nil, err
	}
	return &f, nil
}

func (f *Filter) validate() error {
	switch f.EventFormat {
	case "", "client", "federation":
	default:
		return httputil.BadJSON("event_format must be client or federation")
	}
	for _, p := range f.EventFields {
		if p == "" {
			return httputil.BadJSON("event_fields entries must not be empty")
		}
	}
	if err := f.Presence.validate("presence"); err != nil {
		return err
	}
	if err := f.AccountData.validate("account_data"); err != nil {
		return err
	}
	if r := f.Room; r != nil {
		if err := checkIDs("room.rooms", r.Rooms, '!'); err != nil {
			return err
		}
		if err := checkIDs("room.not_rooms", r.NotRooms, '!'); err != nil {
			return err
		}
		for name, ref := range map[string]*RoomEventFilter{"room.ephemeral": r.Ephemeral, "room.state": r.State, "room.timeline": r.Timeline, "room.account_data": r.AccountData} {
			if err := ref.validate(name); err != nil {
				return err
			}
		}
	}
	return nil
}

func (f *EventFilter) validate(name string) error {
	if f == nil {
		return nil
	}
	// The spec asks for a limit greater than 0, but clients send 0 to get
	// rooms without their timelines (Synapse accepts any number); only a
	// negative limit is refused.
	if f.Limit != nil && *f.Limit < 0 {
		return httputil.BadJSON("%s.limit must not be negative", name)
	}
	if err := checkIDs(name+".senders", f.Senders, '@'); err != nil {
		return err
	}
	return checkIDs(name+".not_senders", f.NotSenders, '@')
}

func (f *RoomEventFilter) validate(name string) error {
	if f == nil {
		return nil
	}
	if err := f.EventFilter.validate(name); err != nil {
		return err
	}
	if err := checkIDs(name+".rooms", f.Rooms, '!'); err != nil {
		return err
	}
	return checkIDs(name+".not_rooms", f.NotRooms, '!')
}

func checkIDs(name string, ids []string, sigil byte) error {
	for _, s := range ids {
		if len(s) < 2 || s[0] != sigil || len(s) > 255 {
			return httputil.BadJSON("%s: %q is not a valid %s", name, s, map[byte]string{'!': "room ID", '@': "user ID"}[sigil])
		}
	}
	return nil
}

// POST /user/{userId}/filter
func (a *API) postFilter(w http.ResponseWriter, r *http.Request, d *Device) error {
	if err := ownUserParam(r, d); err != nil {
		return err
	}
	body, err := readBody(r)
	if err != nil {
		return err
	}
	if _, err := ParseFilter(body); err != nil {
		return err
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, body); err != nil {
		return httputil.NotJSON("Request body is not valid JSON")
	}
	fid, err := a.accounts.PutFilter(r.Context(), d.Localpart, compact.Bytes())
	if err != nil {
		return internalErr(err)
	}
	httputil.RespondJSON(w, http.StatusOK, map[string]string{"filter_id": fid})
	return nil
}

// GET /user/{userId}/filter/{filterId}
func (a *API) getFilter(w http.ResponseWriter, r *http.Request, d *Device) error {
	if err := ownUserParam(r, d); err != nil {
		return err
	}
	content, err := a.accounts.Filter(r.Context(), d.Localpart, mux.Vars(r)["filterId"])
	if errors.Is(err, accounts.ErrNotFound) {
		return httputil.NotFound("Unknown filter")
	}
	if err != nil {
		return internalErr(err)
	}
	httputil.WriteJSONBytes(w, http.StatusOK, content)
	return nil
}

// LoadFilter resolves /sync's filter parameter: a stored filter ID of the user,
// or an inline filter (JSON starting with '{').
func (a *API) LoadFilter(ctx context.Context, localpart, param string) (*Filter, error) {
	if strings.HasPrefix(strings.TrimSpace(param), "{") {
		return ParseFilter([]byte(param))
	}
	content, err := a.accounts.Filter(ctx, localpart, param)
	if errors.Is(err, accounts.ErrNotFound) {
		return nil, httputil.NotFound("Unknown filter %q", param)
	}
	if err != nil {
		return nil, internalErr(err)
	}
	return ParseFilter(content)
}
