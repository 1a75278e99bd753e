package stateres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/federation/eventauth"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

func TestMain(m *testing.M) {
	// The test rooms use synthetic event IDs rather than reference hashes;
	// eventauth must take them as they are.
	pdu.UseInternalMetaForGetEventID = true
	os.Exit(m.Run())
}

const (
	alice   = id.UserID("@alice:example.org")
	bob     = id.UserID("@bob:example.org")
	charlie = id.UserID("@charlie:example.org")
	dave    = id.UserID("@dave:example.org")
	evelyn  = id.UserID("@evelyn:example.org")
)

var (
	keyJoinRules = pdu.StateKey{Type: "m.room.join_rules"}
	keyTopic     = pdu.StateKey{Type: "m.room.topic"}
)

func memberKey(u id.UserID) pdu.StateKey {
	return pdu.StateKey{Type: "m.room.member", StateKey: string(u)}
}

func errNoKeys(string, id.KeyID, time.Time) (id.SigningKey, time.Time, error) {
	return "", time.Time{}, errors.New("no signing keys in these tests")
}

// testRoom is an in-memory room: its events, the precomputed auth chain of
// each, and the Provider and AuthFunc that resolutions use.
type testRoom struct {
	tb       testing.TB
	rv       id.RoomVersion
	roomID   id.RoomID
	createID id.EventID
	events   map[id.EventID]*pdu.PDU
	chains   map[id.EventID][]id.EventID
	ts       int64
	creators []id.UserID
}

// branch is one line of the room's DAG: the state after its last event.
type branch struct {
	room  *testRoom
	state StateMap
	prev  []id.EventID
	depth int64
}

// newTestRoom creates a room of version rv created by alice, with the extra
// create content given, and returns the branch holding the create event.
func newTestRoom(tb testing.TB, rv id.RoomVersion, extraCreate map[string]any) (*testRoom, *branch) {
	tb.Helper()
	r := &testRoom{
		tb:     tb,
		rv:     rv,
		roomID: "!room:example.org",
		events: make(map[id.EventID]*pdu.PDU),
		chains: make(map[id.EventID][]id.EventID),
		ts:     1000,
	}
	content := map[string]any{"room_version": string(rv)}
	if rv.CreatorInContent() {
		content["creator"] = alice
	}
	maps.Copy(content, extraCreate)
	if rv.RoomIDIsCreateEventID() {
		// A synthetic create event ID of the length eventauth expects.
		r.createID = id.EventID("$CREATE" + strings.Repeat("x", 37))
		r.roomID = id.RoomID("!" + string(r.createID)[1:])
		r.creators = []id.UserID{alice}
		if extra, ok := extraCreate["additional_creators"].([]id.UserID); ok {
			r.creators = append(r.creators, extra...)
		}
	}
	b := &branch{room: r, state: StateMap{}}
	b.state1("CREATE", "m.room.create", "", alice, content)
	return r, b
}

// eventID turns a short test name into the event's ID.
func (r *testRoom) eventID(name string) id.EventID {
	if name == "CREATE" && r.createID != "" {
		return r.createID
	}
	return id.EventID("$" + name)
}

// ids maps test names to event IDs.
func (r *testRoom) ids(names ...string) []id.EventID {
	out := make([]id.EventID, len(names))
	for i, n := range names {
		out[i] = r.eventID(n)
	}
	return out
}

// plContent builds power levels content, leaving out room creators where the
// room version forbids listing them.
func (r *testRoom) plContent(users map[id.UserID]int, extra map[string]any) map[string]any {
	u := make(map[id.UserID]int, len(users))
	for k, v := range users {
		if !slices.Contains(r.creators, k) {
			u[k] = v
		}
	}
	c := map[string]any{"users": u}
	maps.Copy(c, extra)
	return c
}

func (b *branch) fork() *branch {
	return &branch{room: b.room, state: maps.Clone(b.state), prev: slices.Clone(b.prev), depth: b.depth}
}

// state1 sends a state event that must be allowed.
func (b *branch) state1(name, typ, stateKey string, sender id.UserID, content any) id.EventID {
	b.room.tb.Helper()
	eid, err := b.send(name, typ, &stateKey, sender, content)
	if err != nil {
		b.room.tb.Fatalf("test event %s was rejected: %v", name, err)
	}
	return eid
}

// member sends a membership event that must be allowed.
func (b *branch) member(name string, sender, target id.UserID, membership string) id.EventID {
	b.room.tb.Helper()
	return b.state1(name, "m.room.member", string(target), sender, map[string]any{"membership": membership})
}

// message sends a message event that must be allowed.
func (b *branch) message(name string, sender id.UserID) id.EventID {
	b.room.tb.Helper()
	eid, err := b.send(name, "m.room.message", nil, sender, map[string]any{"body": name})
	if err != nil {
		b.room.tb.Fatalf("test event %s was rejected: %v", name, err)
	}
	return eid
}

// send creates an event on the branch with auth events selected from the
// branch's state, checks it with eventauth against those auth events and, if
// it is allowed, applies it. A rejected event is stored as rejected and the
// branch is left unchanged.
func (b *branch) send(name, typ string, stateKey *string, sender id.UserID, content any) (id.EventID, error) {
	r := b.room
	raw, err := json.Marshal(content)
	if err != nil {
		r.tb.Fatalf("marshalling content of %s: %v", name, err)
	}
	r.ts++
	evt := &pdu.PDU{
		Type:           typ,
		StateKey:       stateKey,
		Sender:         sender,
		Content:        raw,
		RoomID:         r.roomID,
		PrevEvents:     slices.Clone(b.prev),
		Depth:          b.depth + 1,
		OriginServerTS: r.ts,
		AuthEvents:     []id.EventID{},
	}
	if evt.PrevEvents == nil {
		evt.PrevEvents = []id.EventID{}
	}
	eid := r.eventID(name)
	if _, dup := r.events[eid]; dup {
		r.tb.Fatalf("duplicate test event %s", name)
	}
	evt.InternalMeta.EventID = eid
	if typ == "m.room.create" && r.rv.RoomIDIsCreateEventID() {
		evt.RoomID = ""
	}
	for _, k := range evt.AuthEventSelection(r.rv) {
		if v, ok := b.state[k]; ok {
			evt.AuthEvents = append(evt.AuthEvents, v)
		}
	}
	authErr := authorizeSafely(r.rv, evt, nil, r.getEvents)
	r.events[eid] = evt
	if authErr != nil {
		evt.InternalMeta.Rejected = true
		return eid, authErr
	}
	chain := make(map[id.EventID]struct{})
	auth := evt.AuthEvents
	if r.createID != "" && eid != r.createID {
		auth = append(slices.Clone(auth), r.createID)
	}
	for _, a := range auth {
		chain[a] = struct{}{}
		for _, c := range r.chains[a] {
			chain[c] = struct{}{}
		}
	}
	r.chains[eid] = slices.Sorted(maps.Keys(chain))
	if stateKey != nil {
		b.state[pdu.StateKey{Type: typ, StateKey: *stateKey}] = eid
	}
	b.prev = []id.EventID{eid}
	b.depth++
	return eid, nil
}

// merge joins branches: the new branch's state is the resolution of theirs.
func (r *testRoom) merge(bs ...*branch) *branch {
	r.tb.Helper()
	out := &branch{room: r}
	states := make([]StateMap, len(bs))
	for i, b := range bs {
		states[i] = b.state
		out.prev = append(out.prev, b.prev...)
		out.depth = max(out.depth, b.depth)
	}
	out.state = r.resolve(states...)
	return out
}

// resolve resolves states, failing the test on error.
func (r *testRoom) resolve(states ...StateMap) StateMap {
	r.tb.Helper()
	res, err := Resolve(context.Background(), r.roomID, r.rv, states, r, r.authorise)
	if err != nil {
		r.tb.Fatalf("Resolve: %v", err)
	}
	return res
}

func (r *testRoom) getEvents(ids []id.EventID) ([]*pdu.PDU, error) {
	out := make([]*pdu.PDU, len(ids))
	for i, eid := range ids {
		out[i] = r.events[eid]
	}
	return out, nil
}

// authorizeSafely runs eventauth.Authorize, turning a panic into an error:
// mautrix v0.32.0 dereferences nil when a power levels event removes a user
// whose level equals the sender's (rule 10.9 rejects such an event).
func authorizeSafely(rv id.RoomVersion, evt *pdu.PDU, authEvents []*pdu.PDU, getEvents eventauth.GetEventsFunc) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("eventauth panicked: %v", p)
		}
	}()
	return eventauth.Authorize(rv, evt, authEvents, getEvents, errNoKeys)
}

// authorise is the AuthFunc of the tests: mautrix's eventauth with the
// precomputed auth events.
func (r *testRoom) authorise(rv id.RoomVersion, evt *pdu.PDU, authEvents []*pdu.PDU) error {
	return eventauth.Authorize(rv, evt, authEvents, r.getEvents, errNoKeys)
}

// Events implements Provider.
func (r *testRoom) Events(_ context.Context, ids []id.EventID) ([]*pdu.PDU, error) {
	out := make([]*pdu.PDU, 0, len(ids))
	for _, eid := range ids {
		if evt, ok := r.events[eid]; ok {
			out = append(out, evt)
		}
	}
	return out, nil
}

// AuthChain implements Provider from the precomputed chains.
func (r *testRoom) AuthChain(_ context.Context, ids []id.EventID) (map[id.EventID]struct{}, error) {
	out := make(map[id.EventID]struct{}, len(ids)+16)
	for _, eid := range ids {
		for _, a := range r.chains[eid] {
			out[a] = struct{}{}
		}
	}
	return out, nil
}

// describe renders a state map with test names, sorted, for failure output.
func (r *testRoom) describe(s StateMap) string {
	lines := make([]string, 0, len(s))
	for k, v := range s {
		name := strings.TrimPrefix(string(v), "$")
		if v == r.createID {
			name = "CREATE"
		}
		lines = append(lines, fmt.Sprintf("%s/%s=%s", k.Type, k.StateKey, name))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}
