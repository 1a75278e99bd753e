package syncstream

import (
	"crypto/ed25519"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"hearth/roomserver/events"
)

func TestTokenRoundTrip(t *testing.T) {
	for _, tok := range []Token{
		{},
		{Events: 1},
		{Events: 72594, AccountData: 4483, Receipts: 1934, Typing: 7, E2EE: 99, Presence: 12, Invites: 3},
		{Events: 1 << 50, Presence: 1 << 40},
	} {
		s := tok.String()
		got, err := ParseToken(s)
		if err != nil || got != tok {
			t.Errorf("ParseToken(%q) = %+v, %v; want %+v", s, got, err, tok)
		}
	}
}

func TestParseToken(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Token
		ok   bool
	}{
		{"s1", Token{Events: 1}, true},
		{"s1_2_3", Token{Events: 1, AccountData: 2, Receipts: 3}, true},
		{"s0_0_0_0_0_0", Token{}, true},
		{"", Token{}, false},
		{"s", Token{}, false},
		{"x1_2", Token{}, false},
		{"t1_2", Token{}, false},
		{"s1__2", Token{}, false},
		{"s1_", Token{}, false},
		{"s_1", Token{}, false},
		{"s-1", Token{}, false},
		{"s+1", Token{}, false},
		{"s01", Token{}, false},
		{"s1_2_3_4_5_6_7", Token{1, 2, 3, 4, 5, 6, 7}, true},
		{"s1_2_3_4_5_6_7_8", Token{}, false},
		{"s1234567890123456789", Token{}, false},
		{"s1 ", Token{}, false},
		{"s1\x00", Token{}, false},
		{"sé", Token{}, false},
	} {
		got, err := ParseToken(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseToken(%q) = %+v, %v; want %+v ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func FuzzParseToken(f *testing.F) {
	f.Add("s1_2_3_4_5_6")
	f.Add("t5_6")
	f.Fuzz(func(t *testing.T, s string) {
		if tok, err := ParseToken(s); err == nil {
			if again, err := ParseToken(tok.String()); err != nil || again != tok {
				t.Fatalf("%q parsed to %+v, which does not round-trip", s, tok)
			}
		}
		if tt, err := ParseTopoToken(s); err == nil {
			if again, err := ParseTopoToken(tt.String()); err != nil || again != tt {
				t.Fatalf("%q parsed to %+v, which does not round-trip", s, tt)
			}
		}
	})
}

func TestTopoToken(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"t1_2", true}, {"t0_0", true}, {"t12_345", true},
		{"t1", false}, {"t_1", false}, {"t1_", false}, {"s1_2", false}, {"t1_2_3", false}, {"t-1_2", false},
	} {
		got, err := ParseTopoToken(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseTopoToken(%q) = %+v, %v", tc.in, got, err)
		}
		if err == nil && got.String() != tc.in {
			t.Errorf("round trip of %q gave %q", tc.in, got.String())
		}
	}
}

func TestTracker(t *testing.T) {
	tr := NewTracker(10)
	a, b, c := tr.Allocate(), tr.Allocate(), tr.Allocate()
	if a != 11 || b != 12 || c != 13 {
		t.Fatalf("allocated %d %d %d", a, b, c)
	}
	for _, step := range []struct {
		finish int64
		want   int64
	}{{12, 10}, {13, 10}, {11, 13}} {
		if got := tr.Finish(step.finish); got != step.want {
			t.Fatalf("after finishing %d: current %d, want %d", step.finish, got, step.want)
		}
	}
}

func TestAnnounced(t *testing.T) {
	a := NewAnnounced(5)
	if a.Claim(5) || a.Claim(3) {
		t.Fatal("claimed a position at or below the start")
	}
	if !a.Claim(7) || a.Claim(7) {
		t.Fatal("claim of 7 not exclusive")
	}
	a.Done(7)
	if a.Current() != 5 {
		t.Fatalf("current %d with 6 missing", a.Current())
	}
	if g := a.Gaps(8); !slices.Equal(g, []int64{6, 8}) {
		t.Fatalf("gaps = %v", g)
	}
	if !a.Claim(8) {
		t.Fatal("claim 8")
	}
	a.Resolve([]int64{6, 8}) // 8 is claimed: resolving must not finish it
	if a.Current() != 7 {
		t.Fatalf("current %d, want 7 (8 claimed, not done)", a.Current())
	}
	done := make(chan int64)
	go func() { done <- a.WaitFor(8, 5*time.Second) }()
	time.Sleep(5 * time.Millisecond)
	a.Done(8)
	if got := <-done; got != 8 {
		t.Fatalf("WaitFor returned %d", got)
	}
	if got := a.WaitFor(100, 10*time.Millisecond); got != 8 {
		t.Fatalf("WaitFor timeout returned %d", got)
	}
}

func TestNotifier(t *testing.T) {
	n := NewNotifier()
	alice, bob := id.UserID("@alice:hs"), id.UserID("@bob:hs")
	w := n.Listen(alice)
	defer w.Stop()
	n.Wake(bob)
	select {
	case <-w.C():
		t.Fatal("woken by another user's news")
	default:
	}
	n.WakeUsers([]id.UserID{bob, alice})
	select {
	case <-w.C():
	case <-time.After(time.Second):
		t.Fatal("not woken")
	}
	w.Rearm()
	select {
	case <-w.C():
		t.Fatal("rearmed waiter fired without news")
	default:
	}
	if !n.Waiting(alice) || n.Waiting(bob) {
		t.Fatal("Waiting is wrong")
	}
	n.Close()
	select {
	case <-w.C():
	case <-time.After(time.Second):
		t.Fatal("Close did not wake")
	}
	w2 := n.Listen(bob)
	select {
	case <-w2.C():
	default:
		t.Fatal("listening after Close must return at once")
	}
	w2.Stop()
}

func TestMemberships(t *testing.T) {
	m := NewMemberships()
	u := id.UserID("@u:hs")
	r1, r2 := id.RoomID("!a:hs"), id.RoomID("!b:hs")
	m.Apply(u, Membership{RoomID: r1, Membership: "join", Pos: 1}) // not indexed: ignored
	if !m.BeginLoad(u) {
		t.Fatal("first load not started")
	}
	// Changes during the load are replayed over the loaded state.
	m.Apply(u, Membership{RoomID: r2, Membership: "join", Pos: 12})
	m.Apply(u, Membership{RoomID: r1, Membership: "leave", Pos: 11})
	m.FinishLoad(u, []Membership{{RoomID: r1, Membership: "join", Pos: 5}, {RoomID: r2, Membership: "invite", Pos: 8}})
	if m.BeginLoad(u) {
		t.Fatal("loaded twice")
	}
	got := map[id.RoomID]Membership{}
	for _, ms := range m.Rooms(u, nil) {
		got[ms.RoomID] = ms
	}
	if got[r1].Membership != "leave" || got[r2].Membership != "join" || got[r2].JoinedPos != 12 {
		t.Fatalf("memberships = %+v", got)
	}
	if j := m.JoinedUsers(r2, nil); !slices.Equal(j, []id.UserID{u}) {
		t.Fatalf("joined users of r2 = %v", j)
	}
	if j := m.JoinedUsers(r1, nil); len(j) != 0 {
		t.Fatalf("joined users of r1 = %v", j)
	}
	// A profile change keeps the join position; an older event is ignored.
	m.Apply(u, Membership{RoomID: r2, Membership: "join", Pos: 20})
	m.Apply(u, Membership{RoomID: r2, Membership: "leave", Pos: 15})
	if ms, _ := m.Membership(u, r2); ms.Pos != 20 || ms.JoinedPos != 12 {
		t.Fatalf("after profile change: %+v", ms)
	}
	v := id.UserID("@v:hs")
	m.BeginLoad(v)
	m.FinishLoad(v, []Membership{{RoomID: r2, Membership: "join", Pos: 3}})
	if !m.ShareRoom(u, v) || m.ShareRoom(u, "@nobody:hs") {
		t.Fatal("ShareRoom is wrong")
	}
}

func TestMembershipsConcurrentLoad(t *testing.T) {
	m := NewMemberships()
	u := id.UserID("@u:hs")
	var wg sync.WaitGroup
	loads := make(chan bool, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if m.BeginLoad(u) {
				time.Sleep(time.Millisecond)
				m.FinishLoad(u, nil)
				loads <- true
			}
		}()
	}
	wg.Wait()
	close(loads)
	n := 0
	for range loads {
		n++
	}
	if n != 1 || !m.Loaded(u) {
		t.Fatalf("%d loads", n)
	}
}

func TestTimelines(t *testing.T) {
	tl := NewTimelines(100, 3)
	r := id.RoomID("!r:hs")
	if tl.Latest(r) != 100 {
		t.Fatal("latest of an unknown room")
	}
	scan := func(since, upTo int64) ([]int64, bool) {
		var out []int64
		complete := tl.Scan(r, since, upTo, func(e TimelineEntry) bool { out = append(out, e.Pos); return true })
		return out, complete
	}
	if got, complete := scan(100, 200); len(got) != 0 || !complete {
		t.Fatalf("empty room scan = %v %v", got, complete)
	}
	if _, complete := scan(50, 200); complete {
		t.Fatal("scan from before the start claimed completeness")
	}
	for _, p := range []int64{101, 103, 107, 110} {
		tl.Append(r, p, nil)
	}
	for _, tc := range []struct {
		since, upTo int64
		want        []int64
		complete    bool
	}{
		{100, 200, nil, true}, // positions without events
	} {
		got, complete := scan(tc.since, tc.upTo)
		if !slices.Equal(got, tc.want) || complete != tc.complete {
			t.Errorf("scan(%d,%d) = %v %v", tc.since, tc.upTo, got, complete)
		}
	}
	if tl.Latest(r) != 110 {
		t.Fatalf("latest = %d", tl.Latest(r))
	}
}

func TestTimelinesRing(t *testing.T) {
	tl := NewTimelines(0, 3)
	r := id.RoomID("!r:hs")
	ev := func(p int64) {
		tl.Append(r, p, testEvent(t, p))
	}
	for p := int64(1); p <= 5; p++ {
		ev(p)
	}
	for _, tc := range []struct {
		since, upTo int64
		want        []int64
		complete    bool
	}{
		{0, 5, []int64{5, 4, 3}, false},
		{2, 5, []int64{5, 4, 3}, true},
		{3, 4, []int64{4}, true},
		{5, 9, nil, true},
	} {
		var got []int64
		complete := tl.Scan(r, tc.since, tc.upTo, func(e TimelineEntry) bool { got = append(got, e.Pos); return true })
		if !slices.Equal(got, tc.want) || complete != tc.complete {
			t.Errorf("scan(%d,%d) = %v %v; want %v %v", tc.since, tc.upTo, got, complete, tc.want, tc.complete)
		}
	}
	// Stopping early counts as complete.
	if !tl.Scan(r, 0, 5, func(TimelineEntry) bool { return false }) {
		t.Error("stopped scan not complete")
	}
	// An out-of-order append resets the room to start after the newest.
	ev(4)
	if complete := tl.Scan(r, 3, 9, func(TimelineEntry) bool { return true }); complete {
		t.Error("scan after reset claims completeness")
	}
}

func TestTyping(t *testing.T) {
	var mu sync.Mutex
	changes := map[id.RoomID]int{}
	ty := NewTyping(func(r id.RoomID) { mu.Lock(); changes[r]++; mu.Unlock() })
	defer ty.Close()
	r := id.RoomID("!r:hs")
	a, b := id.UserID("@a:hs"), id.UserID("@b:hs")
	ty.Set(r, b, true, time.Minute)
	ty.Set(r, a, true, 30*time.Millisecond)
	ty.Set(r, a, true, 30*time.Millisecond) // refresh: no change
	if users, ok := ty.Changed(r, 0); !ok || !slices.Equal(users, []id.UserID{a, b}) {
		t.Fatalf("typing = %v %v", users, ok)
	}
	pos := ty.Current()
	if _, ok := ty.Changed(r, pos); ok {
		t.Fatal("changed since the current position")
	}
	if pos != 2 {
		t.Fatalf("position %d after two changes", pos)
	}
	deadline := time.Now().Add(2 * time.Second)
	for ty.Current() == pos && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if users, ok := ty.Changed(r, pos); !ok || !slices.Equal(users, []id.UserID{b}) {
		t.Fatalf("after expiry: %v %v", users, ok)
	}
	ty.Set(r, b, false, 0)
	if users, ok := ty.Changed(r, pos+1); !ok || len(users) != 0 {
		t.Fatalf("after stop: %v %v", users, ok)
	}
	// A token from before a restart (ahead of the stream) sees everything.
	ty.Set(r, a, true, time.Minute)
	if users, ok := ty.Changed(r, 1000); !ok || !slices.Equal(users, []id.UserID{a}) {
		t.Fatalf("stale token: %v %v", users, ok)
	}
	mu.Lock()
	defer mu.Unlock()
	if changes[r] != 5 {
		t.Fatalf("%d change callbacks, want 5", changes[r])
	}
}

func BenchmarkNotifierWake(b *testing.B) {
	n := NewNotifier()
	users := make([]id.UserID, 50)
	for i := range users {
		users[i] = id.UserID(fmt.Sprintf("@u%d:hs", i))
	}
	ws := make([]*Waiter, 10)
	for i := range ws {
		ws[i] = n.Listen(users[i])
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		n.WakeUsers(users)
		for _, w := range ws {
			w.Rearm()
		}
	}
}

// missingEventID is a well-formed event ID no test event has.
const missingEventID = id.EventID("$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")

// testKey signs the events of these tests.
var testKey = ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))

// testEvent builds a message of the given depth citing prevs.
func testEvent(t *testing.T, depth int64, prevs ...id.EventID) *events.Event {
	t.Helper()
	ev, err := events.Build("10", events.ProtoEvent{
		Type: "m.room.message", Sender: "@a:hs", RoomID: "!r:hs", Content: []byte(fmt.Sprintf(`{"body":"%d"}`, depth)),
		PrevEvents: prevs, AuthEvents: []id.EventID{missingEventID}, Depth: depth,
	}, "hs", "ed25519:a", testKey)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// TestTimelinesLinks checks what the cache tells of an event's place in the
// room's history: linked to cached events, unknown (ask the store) when a
// prev event is not cached, what SetLink recorded, and out-of-order depths.
func TestTimelinesLinks(t *testing.T) {
	tl := NewTimelines(0, 4)
	r := id.RoomID("!r:hs")
	e1 := testEvent(t, 1)
	e2 := testEvent(t, 2, e1.ID())
	e3 := testEvent(t, 3, missingEventID)
	e4 := testEvent(t, 4, e3.ID(), e2.ID())
	e5 := testEvent(t, 2, e1.ID()) // a late event from a fork
	for i, e := range []*events.Event{e1, e2, e3, e4} {
		tl.Append(r, int64(i+1), e)
	}
	links := func() map[int64]Link {
		out := map[int64]Link{}
		tl.Scan(r, 0, 99, func(e TimelineEntry) bool { out[e.Pos] = e.Link; return true })
		return out
	}
	// e1 cites nothing (like a create event).
	want := map[int64]Link{1: Linked, 2: Linked, 3: LinkUnknown, 4: Linked}
	if got := links(); !maps.Equal(got, want) {
		t.Fatalf("links = %v, want %v", got, want)
	}
	if tl.Disordered(r) {
		t.Fatal("disordered before a late event")
	}
	tl.SetLink(r, 3, Gap)
	tl.SetLink(r, 9, Gap) // not cached: ignored
	want[3] = Gap
	if got := links(); !maps.Equal(got, want) {
		t.Fatalf("links after SetLink = %v, want %v", got, want)
	}
	tl.Append(r, 5, e5)
	if !tl.Disordered(r) {
		t.Fatal("a late event of smaller depth did not mark the room disordered")
	}
	tl.Append(r, 6, testEvent(t, 5, e1.ID(), e4.ID())) // e1 dropped out of the ring of 4
	if got := links(); got[5] != Linked || got[6] != LinkUnknown {
		t.Fatalf("events citing a cached and an evicted event: %v", got)
	}
}
