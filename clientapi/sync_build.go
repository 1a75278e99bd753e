package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"hearth/clientapi/accounts"
	"hearth/clientapi/syncstream"
	"hearth/roomserver"
	"hearth/roomserver/events"
)

// The /sync response (Client-Server API, GET /sync), in the spec's shape: every
// section present, empty when there is nothing to say.

type syncResponse struct {
	NextBatch        string         `json:"next_batch"`
	AccountData      eventBatch     `json:"account_data"`
	Presence         eventBatch     `json:"presence"`
	Rooms            syncRooms      `json:"rooms"`
	ToDevice         eventBatch     `json:"to_device"`
	DeviceLists      deviceLists    `json:"device_lists"`
	OneTimeKeysCount map[string]int `json:"device_one_time_keys_count"`
	FallbackKeyTypes []string       `json:"device_unused_fallback_key_types"`
}

// eventBatch is {"events": [...]}, never null.
type eventBatch struct {
	Events []json.RawMessage
}

func (b eventBatch) MarshalJSON() ([]byte, error) {
	out := make([]byte, 0, 16+jsonSize(b.Events))
	out = append(out, `{"events":`...)
	out = appendRawArray(out, b.Events)
	return append(out, '}'), nil
}

func jsonSize(evs []json.RawMessage) int {
	n := 2
	for _, e := range evs {
		n += len(e) + 1
	}
	return n
}

func appendRawArray(dst []byte, evs []json.RawMessage) []byte {
	dst = append(dst, '[')
	for i, e := range evs {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, e...)
	}
	return append(dst, ']')
}

type deviceLists struct {
	Changed []id.UserID `json:"changed"`
	Left    []id.UserID `json:"left"`
}

type syncRooms struct {
	Join   map[id.RoomID]*joinedRoom  `json:"join"`
	Invite map[id.RoomID]*invitedRoom `json:"invite,omitempty"`
	Knock  map[id.RoomID]*knockedRoom `json:"knock"`
	Leave  map[id.RoomID]*leftRoom    `json:"leave"`
}

type joinedRoom struct {
	Summary                   *roomSummary           `json:"summary,omitempty"`
	State                     *eventBatch            `json:"state,omitempty"`
	StateAfter                *eventBatch            `json:"state_after,omitempty"`
	UnstableStateAfter        *eventBatch            `json:"org.matrix.msc4222.state_after,omitempty"`
	Timeline                  timelineBatch          `json:"timeline"`
	Ephemeral                 eventBatch             `json:"ephemeral"`
	AccountData               eventBatch             `json:"account_data"`
	UnreadNotifications       notifCounts            `json:"unread_notifications"`
	UnreadThreadNotifications map[string]notifCounts `json:"unread_thread_notifications,omitempty"`
}

type leftRoom struct {
	State              *eventBatch   `json:"state,omitempty"`
	StateAfter         *eventBatch   `json:"state_after,omitempty"`
	UnstableStateAfter *eventBatch   `json:"org.matrix.msc4222.state_after,omitempty"`
	Timeline           timelineBatch `json:"timeline"`
	AccountData        eventBatch    `json:"account_data"`
}

type invitedRoom struct {
	InviteState eventBatch `json:"invite_state"`
}

type knockedRoom struct {
	KnockState eventBatch `json:"knock_state"`
}

type timelineBatch struct {
	Events    []json.RawMessage
	Limited   bool
	PrevBatch string
}

func (t timelineBatch) MarshalJSON() ([]byte, error) {
	out := make([]byte, 0, 64+jsonSize(t.Events))
	out = append(out, `{"events":`...)
	out = appendRawArray(out, t.Events)
	out = append(out, `,"limited":`...)
	out = strconv.AppendBool(out, t.Limited)
	if t.PrevBatch != "" {
		out = append(out, `,"prev_batch":`...)
		out = appendJSONString(out, t.PrevBatch)
	}
	return append(out, '}'), nil
}

type roomSummary struct {
	Heroes  []id.UserID `json:"m.heroes,omitempty"`
	Joined  int         `json:"m.joined_member_count"`
	Invited int         `json:"m.invited_member_count"`
}

type notifCounts struct {
	Highlight int `json:"highlight_count"`
	Notif     int `json:"notification_count"`
}

func newSyncResponse() *syncResponse {
	return &syncResponse{
		Rooms: syncRooms{
			Join: map[id.RoomID]*joinedRoom{}, Invite: map[id.RoomID]*invitedRoom{},
			Knock: map[id.RoomID]*knockedRoom{}, Leave: map[id.RoomID]*leftRoom{},
		},
		DeviceLists:      deviceLists{Changed: []id.UserID{}, Left: []id.UserID{}},
		OneTimeKeysCount: map[string]int{},
		FallbackKeyTypes: []string{},
	}
}

// syncBuilder assembles one response.
type syncBuilder struct {
	s          *Syncer
	a          *API
	ctx        context.Context
	dev        *Device
	f          *syncFilter
	since      syncstream.Token
	initial    bool
	fullState  bool
	stateAfter bool
	// stateAfterUnstable: state_after goes under MSC4222's unstable name.
	stateAfterUnstable bool

	to      syncstream.Token
	ignored map[id.UserID]struct{}
	invites *inviteFilter // MSC4155: invites it hides are left out
	lk      lazyKey
	roomAD  map[id.RoomID][]json.RawMessage
	// forgotten: the rooms the user forgot, loaded for the first left room.
	forgotten map[id.RoomID]struct{}
	// memberNews and newRooms collect, in an incremental sync, the users
	// whose join, invite or knock the response carries and the rooms the user
	// joined since the token: the presence section then covers them.
	memberNews map[id.UserID]struct{}
	newRooms   []id.RoomID
	// dbRooms: rooms with events after since, read from the store when since
	// predates the in-memory timelines.
	dbRooms map[id.RoomID]int64
	resp    *syncResponse
	news    bool
}

// build assembles everything but the E2EE parts; b.news says whether there
// is anything for the user.
func (b *syncBuilder) build() error {
	s, ctx := b.s, b.ctx
	user := b.dev.UserID
	b.resp = newSyncResponse()
	ev, err := s.eventPosition(ctx)
	if err != nil {
		return err
	}
	var msBuf [16]syncstream.Membership
	ms := s.members.Rooms(user, msBuf[:0])
	maxPos := int64(0)
	for _, m := range ms {
		maxPos = max(maxPos, m.Pos)
	}
	if maxPos > ev {
		// A membership change is being announced (the index is updated just
		// before its position is done): wait for it to complete.
		if ev = max(ev, s.announced.WaitFor(maxPos, time.Second)); ev < maxPos {
			slog.Warn("sync: membership change not announced in time", "user", user, "pos", maxPos, "at", ev)
		}
	}
	s.counts.waitFor(s.counts.queued(), 2*time.Second)
	ud, err := s.userData.get(ctx, b.a, b.dev.Localpart)
	if err != nil {
		return err
	}
	b.ignored, b.invites = ud.ignored, ud.invites
	b.to = syncstream.Token{
		Events: ev, AccountData: ud.pos, Receipts: s.receipts.current(), Typing: s.typing.Current(), Presence: s.presence.current(),
		Invites: s.invitePos.Load(),
	}
	if ds := s.deviceStreams(); ds != nil {
		b.to.E2EE = ds.Position()
	}
	// A token ahead of the server (a restored database) counts as current.
	b.since.Events = min(b.since.Events, b.to.Events)
	b.since.AccountData = min(b.since.AccountData, b.to.AccountData)
	b.since.Receipts = min(b.since.Receipts, b.to.Receipts)
	b.since.Presence = min(b.since.Presence, b.to.Presence)
	b.since.E2EE = min(b.since.E2EE, b.to.E2EE)
	if b.since.Invites > b.to.Invites {
		b.since.Invites = 0 // from before a restart: show the pending invites again
	}

	if err := b.accountData(); err != nil {
		return err
	}
	if !b.initial && b.since.Events < s.timelines.Start() && b.since.Events < b.to.Events {
		if b.dbRooms, err = s.rs.RoomsWithEvents(ctx, b.since.Events, b.to.Events); err != nil {
			return err
		}
	}
	for _, m := range ms {
		if err := b.room(m); err != nil {
			return fmt.Errorf("syncing room %s: %w", m.RoomID, err)
		}
	}
	if err := b.remoteInviteRooms(); err != nil {
		return err
	}
	if err := b.remoteKnockRooms(); err != nil {
		return err
	}
	if err := b.remoteLeaveRooms(); err != nil {
		return err
	}
	if err := b.presence(); err != nil {
		return err
	}
	return nil
}

// token is the response's next_batch.
func (b *syncBuilder) token() string { return b.to.String() }

// accountData fills global account data and collects room account data.
func (b *syncBuilder) accountData() error {
	if !b.initial && b.since.AccountData >= b.to.AccountData {
		return nil
	}
	entries, err := b.a.AccountDataSince(b.ctx, b.dev.Localpart, b.since.AccountData)
	if err != nil {
		return err
	}
	pushRulesSent := false
	for _, e := range entries {
		b.to.AccountData = max(b.to.AccountData, e.StreamPos)
		raw := accountDataEvent(e)
		if e.RoomID == "" {
			pushRulesSent = pushRulesSent || e.Type == accounts.PushRulesType
			if b.f.accountData.matchType(e.Type) {
				b.resp.AccountData.Events = append(b.resp.AccountData.Events, raw)
				b.news = true
			}
			continue
		}
		rid := id.RoomID(e.RoomID)
		if !b.f.roomAccountData.rooms.match(rid) || !b.f.roomAccountData.matchType(e.Type) {
			continue
		}
		if b.roomAD == nil {
			b.roomAD = map[id.RoomID][]json.RawMessage{}
		}
		b.roomAD[rid] = append(b.roomAD[rid], raw)
	}
	if b.initial && !pushRulesSent && b.f.accountData.matchType(accounts.PushRulesType) {
		// A user who never changed their push rules has no m.push_rules
		// entry; an initial sync still brings the rules in force
		// (Client-Server API, "Push Rules": clients learn them from /sync).
		rs, err := b.a.pushRuleset(b.ctx, b.dev.Localpart)
		if err != nil {
			return err
		}
		content, err := json.Marshal(map[string]any{"global": rs})
		if err != nil {
			return fmt.Errorf("encoding push rules: %w", err)
		}
		b.resp.AccountData.Events = append(b.resp.AccountData.Events,
			accountDataEvent(accounts.AccountDataEntry{Type: accounts.PushRulesType, Content: content}))
		b.news = true
	}
	return nil
}

func accountDataEvent(e accounts.AccountDataEntry) json.RawMessage {
	out := make([]byte, 0, 24+len(e.Type)+len(e.Content))
	out = append(out, `{"type":`...)
	out = appendJSONString(out, e.Type)
	out = append(out, `,"content":`...)
	if len(e.Content) == 0 {
		out = append(out, `{}`...)
	} else {
		out = append(out, e.Content...)
	}
	return append(out, '}')
}

// room adds a room's section, if it has one in this response.
func (b *syncBuilder) room(m syncstream.Membership) error {
	if !b.f.rooms.match(m.RoomID) {
		return nil
	}
	if m.Pos > b.to.Events {
		// The membership change is not part of this response yet.
		return nil
	}
	changed := b.initial || m.Pos > b.since.Events
	switch m.Membership {
	case "join":
		newlyJoined := b.initial || m.JoinedPos > b.since.Events
		return b.joinedRoom(m, newlyJoined)
	case "invite":
		if changed {
			return b.strippedRoom(m, false)
		}
	case "knock":
		if changed {
			return b.strippedRoom(m, true)
		}
	case "leave", "ban":
		if !b.initial && changed {
			return b.leftRoom(m)
		}
		if b.initial || b.fullState {
			if !b.f.includeLeave {
				// Without include_leave, a room the user was banned or kicked
				// from is still listed, so clients learn why it is gone (as
				// Synapse does); a room the user left themselves is not.
				ev, err := b.s.rs.Event(b.ctx, m.EventID)
				if err != nil || m.Membership == "leave" && ev.Sender() == b.dev.UserID {
					return nil
				}
			}
			// Forgotten rooms are not listed again (POST /forget).
			if b.forgotten == nil {
				f, err := b.a.forgottenRoomIDs(b.ctx, b.dev.UserID)
				if err != nil {
					return err
				}
				b.forgotten = f
			}
			if _, forgot := b.forgotten[m.RoomID]; forgot {
				return nil
			}
			return b.leftRoom(m)
		}
	}
	return nil
}

// roomHasEvents reports whether a room had events in (since, to].
func (b *syncBuilder) roomHasEvents(roomID id.RoomID) bool {
	if b.dbRooms != nil || b.since.Events < b.s.timelines.Start() {
		return b.dbRooms[roomID] > b.since.Events
	}
	return b.s.timelines.Latest(roomID) > b.since.Events
}

// joinedRoom adds a joined room's section: full (initial sync, newly joined,
// full_state) or incremental.
func (b *syncBuilder) joinedRoom(m syncstream.Membership, newlyJoined bool) error {
	s, ctx := b.s, b.ctx
	roomID := m.RoomID
	full := newlyJoined || b.fullState
	sinceTyping := b.since.Typing
	sinceReceipts := b.since.Receipts
	if newlyJoined {
		sinceTyping, sinceReceipts = 0, 0
	}
	hasEvents := newlyJoined || b.roomHasEvents(roomID)
	typingUsers, typingChanged := s.typing.Changed(roomID, sinceTyping)
	receiptsChanged, err := s.receipts.changed(ctx, roomID, sinceReceipts, b.to.Receipts)
	if err != nil {
		return err
	}
	if !full && !hasEvents && !typingChanged && !receiptsChanged && len(b.roomAD[roomID]) == 0 {
		return nil
	}
	jr := &joinedRoom{}
	var tl []*roomserver.StoredEvent
	limited := false
	if hasEvents {
		tlSince := b.since.Events
		if newlyJoined {
			tlSince = 0
		}
		if tl, limited, err = b.timeline(roomID, tlSince, b.to.Events, roomserver.TopoPos{}); err != nil {
			return err
		}
	}
	if newlyJoined && !b.initial {
		// A room joined since the last sync: its history before the timeline
		// is the client's to paginate, so the timeline is limited whatever it
		// holds (as Synapse does for a newly joined room).
		limited = true
		b.newRooms = append(b.newRooms, roomID)
	}
	summary := full || limited || hasMemberEvent(tl)
	var heroes []id.UserID
	if summary {
		joined, invited, err := s.rs.MemberCounts(ctx, roomID)
		if err != nil {
			return err
		}
		// Heroes are needed only by rooms without a name or canonical alias
		// (and, lazy-loading, their member events are then sent too).
		named, err := b.roomNamed(roomID)
		if err != nil {
			return err
		}
		if !named {
			if heroes, err = s.rs.Heroes(ctx, roomID, b.dev.UserID, 5); err != nil {
				return err
			}
		}
		jr.Summary = &roomSummary{Heroes: heroes, Joined: joined, Invited: invited}
	}
	state, err := b.state(roomID, full, limited, tl, b.to.Events, false, heroes, newlyJoined)
	if err != nil {
		return err
	}
	if err := b.fillTimeline(&jr.Timeline, roomID, tl, limited, full, hasEvents && !newlyJoined && b.since.Events > 0); err != nil {
		return err
	}
	b.noteMembers(tl)
	b.setState(&jr.State, &jr.StateAfter, &jr.UnstableStateAfter, state)
	// Ephemeral events.
	if b.f.ephemeral.rooms.match(roomID) {
		if typingChanged && b.f.ephemeral.matchType("m.typing") {
			users := slices.DeleteFunc(typingUsers, func(u id.UserID) bool { _, ign := b.ignored[u]; return ign })
			if len(users) > 0 || !newlyJoined {
				jr.Ephemeral.Events = append(jr.Ephemeral.Events, typingEvent(users))
			}
		}
		if receiptsChanged && b.f.ephemeral.matchType("m.receipt") {
			rev, err := s.receipts.event(ctx, roomID, sinceReceipts, b.to.Receipts, b.dev.UserID, b.ignored)
			if err != nil {
				return err
			}
			if rev != nil {
				jr.Ephemeral.Events = append(jr.Ephemeral.Events, rev)
			}
		}
	}
	jr.AccountData.Events = b.roomAD[roomID]
	if !full && len(jr.Timeline.Events) == 0 && len(jr.Ephemeral.Events) == 0 && len(jr.AccountData.Events) == 0 && len(state) == 0 {
		return nil
	}
	main, threads := s.counts.get(b.dev.UserID, roomID, b.f.threadCounts)
	jr.UnreadNotifications = notifCounts{Highlight: main.highlight, Notif: main.notif}
	if len(threads) > 0 {
		jr.UnreadThreadNotifications = make(map[string]notifCounts, len(threads))
		for t, c := range threads {
			jr.UnreadThreadNotifications[t] = notifCounts{Highlight: c.highlight, Notif: c.notif}
		}
	}
	b.resp.Rooms.Join[roomID] = jr
	b.news = true
	return nil
}

// roomNamed reports whether a room has a non-empty name or canonical alias.
func (b *syncBuilder) roomNamed(roomID id.RoomID) (bool, error) {
	evs, err := b.s.rs.CurrentStateEvents(b.ctx, roomID, nameKeys)
	if err != nil {
		return false, err
	}
	return contentString(evs[0], "name") != "" || contentString(evs[1], "alias") != "", nil
}

var nameKeys = []pdu.StateKey{{Type: "m.room.name"}, {Type: "m.room.canonical_alias"}}

func hasMemberEvent(evs []*roomserver.StoredEvent) bool {
	for _, e := range evs {
		if e.Type() == "m.room.member" {
			return true
		}
	}
	return false
}

func typingEvent(users []id.UserID) json.RawMessage {
	b := make([]byte, 0, 48+len(users)*32)
	b = append(b, `{"type":"m.typing","content":{"user_ids":[`...)
	for i, u := range users {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, string(u))
	}
	return append(b, `]}}`...)
}

// setState puts state events in "state", or in "state_after" when the client
// asked for use_state_after (in "org.matrix.msc4222.state_after" when it asked
// with MSC4222's unstable parameter).
func (b *syncBuilder) setState(state, stateAfter, unstable **eventBatch, evs []json.RawMessage) {
	switch {
	case b.stateAfterUnstable:
		*unstable = &eventBatch{Events: evs}
	case b.stateAfter:
		*stateAfter = &eventBatch{Events: evs}
	default:
		*state = &eventBatch{Events: evs}
	}
}

// leftRoom adds the section of a room the user left or was banned from: the
// timeline up to their leave event.
func (b *syncBuilder) leftRoom(m syncstream.Membership) error {
	roomID := m.RoomID
	lr := &leftRoom{}
	var tl []*roomserver.StoredEvent
	limited := false
	var err error
	if m.Pos > 0 {
		tlSince := b.since.Events
		var top roomserver.TopoPos
		if b.initial {
			// The history up to the leave event, in topological order.
			tlSince = 0
			leave, err := b.s.rs.Event(b.ctx, m.EventID)
			if err != nil {
				return err
			}
			top = roomserver.TopoPos{Depth: leave.Depth(), Stream: m.Pos + 1}
		}
		if tl, limited, err = b.timeline(roomID, tlSince, m.Pos, top); err != nil {
			return err
		}
	}
	upTo := m.Pos
	var state []json.RawMessage
	if m.Pos > 0 {
		if state, err = b.state(roomID, b.initial || b.fullState, limited, tl, upTo, true, nil, false); err != nil {
			return err
		}
	}
	if err := b.fillTimeline(&lr.Timeline, roomID, tl, limited, b.initial || b.fullState, !b.initial && b.since.Events > 0); err != nil {
		return err
	}
	b.setState(&lr.State, &lr.StateAfter, &lr.UnstableStateAfter, state)
	lr.AccountData.Events = b.roomAD[roomID]
	b.resp.Rooms.Leave[roomID] = lr
	b.news = true
	return nil
}

// strippedKeys are the state events an invite or knock shows of the room
// (Client-Server API, "Stripped state").
var strippedKeys = []pdu.StateKey{
	{Type: "m.room.create"}, {Type: "m.room.name"}, {Type: "m.room.avatar"}, {Type: "m.room.topic"},
	{Type: "m.room.join_rules"}, {Type: "m.room.canonical_alias"}, {Type: "m.room.encryption"},
}

// strippedRoom adds an invite (or knock) section with the room's stripped
// state. Invites from ignored users are not sent ("Ignoring Users").
func (b *syncBuilder) strippedRoom(m syncstream.Membership, knock bool) error {
	ctx := b.ctx
	member, err := b.s.rs.Event(ctx, m.EventID)
	if err != nil {
		return nil // the member event is gone (an outlier invite not kept): nothing to show
	}
	if _, ign := b.ignored[member.Sender()]; (ign || b.invites.hides(member.Sender())) && !knock {
		return nil
	}
	var evs []json.RawMessage
	cur, err := b.s.rs.CurrentStateEvents(ctx, m.RoomID, strippedKeys)
	if err == nil {
		for _, e := range cur {
			if e != nil {
				evs = append(evs, inviteStateEvent(e.Event))
			}
		}
	} else {
		// A room known only through the invite: the state the inviting server
		// sent along (unsigned.invite_room_state / knock_room_state).
		key := "invite_room_state"
		if knock {
			key = "knock_room_state"
		}
		for _, x := range gjson.GetBytes(member.Unsigned(), key).Array() {
			if x.IsObject() {
				evs = append(evs, strippedRaw(x))
			}
		}
	}
	evs = append(evs, strippedEvent(member.Event))
	if knock {
		b.resp.Rooms.Knock[m.RoomID] = &knockedRoom{KnockState: eventBatch{Events: evs}}
	} else {
		b.resp.Rooms.Invite[m.RoomID] = &invitedRoom{InviteState: eventBatch{Events: evs}}
	}
	b.news = true
	return nil
}

// strippedEvent writes an event as a stripped state event: content, sender,
// state_key and type only.
func strippedEvent(e *events.Event) json.RawMessage {
	out := make([]byte, 0, 64+len(e.Content()))
	out = append(out, `{"content":`...)
	out = append(out, e.Content()...)
	out = append(out, `,"sender":`...)
	out = appendJSONString(out, string(e.Sender()))
	out = append(out, `,"state_key":`...)
	sk := ""
	if e.StateKey() != nil {
		sk = *e.StateKey()
	}
	out = appendJSONString(out, sk)
	out = append(out, `,"type":`...)
	out = appendJSONString(out, e.Type())
	return append(out, '}')
}

// strippedRaw keeps the stripped state fields of a JSON object.
func strippedRaw(x gjson.Result) json.RawMessage {
	if x.Get("type").Str == "m.room.create" && x.Get("origin_server_ts").Exists() {
		return json.RawMessage(x.Raw) // a full create event (MSC4311): kept whole
	}
	out := []byte(`{}`)
	for _, k := range []string{"content", "sender", "state_key", "type"} {
		if v := x.Get(k); v.Exists() {
			out, _ = sjson.SetRawBytes(out, k, []byte(v.Raw))
		}
	}
	return out
}

// maxTimelineRounds bounds the store reads one room's timeline takes when
// filters or history visibility drop many events.
const maxTimelineRounds = 8

// timelinePass reports whether the timeline filter (and the user's ignore
// list) lets an event through.
func (b *syncBuilder) timelinePass(e *events.Event) bool {
	m := &b.f.timeline
	if !m.match(e.Type(), e.Sender()) {
		return false
	}
	if _, ign := b.ignored[e.Sender()]; ign && !e.IsState() {
		return false
	}
	if m.containsURL != nil && (gjson.GetBytes(e.Content(), "url").Type == gjson.String) != *m.containsURL {
		return false
	}
	return true
}

// timeline returns the newest events of a room in (since, upTo] the user may
// see and the timeline filter passes, at most the filter's limit, oldest
// first, and whether older ones were left out.
//
// An incremental timeline (since > 0) follows the stream order and stops at
// a gap: an event whose prev events are not events of the room's timeline
// (history get_missing_events could not fill) starts a new stretch, and what
// came before it is left out, the timeline marked limited so the client
// paginates (Synapse's timeline_gaps). A historical timeline (since 0: an
// initial sync, a newly joined room) follows the room's topological order,
// like /messages, up to top when it is set (a left room's leave event).
func (b *syncBuilder) timeline(roomID id.RoomID, since, upTo int64, top roomserver.TopoPos) ([]*roomserver.StoredEvent, bool, error) {
	if !b.f.timeline.rooms.match(roomID) || since >= upTo {
		return nil, false, nil
	}
	var out []*roomserver.StoredEvent // newest first
	var more bool
	var err error
	if since <= 0 {
		out, more, err = b.historicalTimeline(roomID, upTo, top)
	} else {
		out, more, err = b.incrementalTimeline(roomID, since, upTo)
	}
	if err != nil {
		return nil, false, err
	}
	limit := b.f.timelineLimit
	limited := more || len(out) > limit
	if len(out) > limit {
		out = out[:limit]
	}
	slices.Reverse(out)
	return out, limited, nil
}

// cachedTimeline scans the in-memory timeline of a room in (since, upTo],
// newest first, keeping the entries up to the one where want events pass
// the filter. whole reports that the scan saw every event of the range and
// fewer than want passed.
func (b *syncBuilder) cachedTimeline(roomID id.RoomID, since, upTo int64, want int, buf []syncstream.TimelineEntry) (entries []syncstream.TimelineEntry, stopped, whole bool) {
	n := 0
	complete := b.s.timelines.Scan(roomID, since, upTo, func(e syncstream.TimelineEntry) bool {
		buf = append(buf, e)
		if b.timelinePass(e.Event) {
			n++
		}
		return n < want
	})
	stopped = n >= want
	return buf, stopped, complete && !stopped
}

// loadVisible loads the events of entries that pass the filter and keeps those
// the user may see, newest first as given.
func (b *syncBuilder) loadVisible(entries []syncstream.TimelineEntry) ([]*roomserver.StoredEvent, error) {
	ids := make([]id.EventID, 0, len(entries))
	for _, e := range entries {
		if b.timelinePass(e.Event) {
			ids = append(ids, e.Event.ID())
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	evs, err := b.s.rs.Events(b.ctx, ids)
	if err != nil {
		return nil, err
	}
	byID := make(map[id.EventID]*roomserver.StoredEvent, len(evs))
	for _, e := range evs {
		byID[e.ID()] = e
	}
	kept := make([]*roomserver.StoredEvent, 0, len(ids))
	for _, x := range ids {
		if e := byID[x]; e != nil {
			kept = append(kept, e)
		}
	}
	return b.a.VisibleEvents(b.ctx, b.dev.UserID, kept)
}

// visiblePage keeps the events of a store page that pass the filter and that
// the user may see, in the page's order.
func (b *syncBuilder) visiblePage(page []*roomserver.StoredEvent) ([]*roomserver.StoredEvent, error) {
	kept := page[:0:0]
	for _, e := range page {
		if b.timelinePass(e.Event) {
			kept = append(kept, e)
		}
	}
	if len(kept) == 0 {
		return nil, nil
	}
	return b.a.VisibleEvents(b.ctx, b.dev.UserID, kept)
}

// incrementalTimeline is timeline for since > 0: up to limit+1 events, newest
// first, from the cache and then the store, stopping at a gap.
func (b *syncBuilder) incrementalTimeline(roomID id.RoomID, since, upTo int64) ([]*roomserver.StoredEvent, bool, error) {
	want := b.f.timelineLimit + 1
	var buf [32]syncstream.TimelineEntry
	entries, _, whole := b.cachedTimeline(roomID, since, upTo, want, buf[:0])
	// Where does the newest gap lie among the scanned events?
	gapAt := -1
	var unknown []int
	for i, e := range entries {
		if e.Link == syncstream.Gap {
			gapAt = i
			break
		}
		if e.Link == syncstream.LinkUnknown {
			unknown = append(unknown, i)
		}
	}
	if len(unknown) > 0 {
		evs := make([]*events.Event, len(entries))
		for i, e := range entries {
			evs[i] = e.Event
		}
		gaps, err := b.gapsAmong(evs, unknown)
		if err != nil {
			return nil, false, err
		}
		for k, i := range unknown {
			l := syncstream.Linked
			if gaps[k] {
				l = syncstream.Gap
				if gapAt < 0 || i < gapAt {
					gapAt = i
				}
			}
			b.s.timelines.SetLink(roomID, entries[i].Pos, l)
		}
	}
	if gapAt >= 0 {
		entries = entries[:gapAt+1]
	}
	out, err := b.loadVisible(entries)
	if err != nil {
		return nil, false, err
	}
	if gapAt >= 0 {
		return out, true, nil
	}
	if len(out) >= want || whole {
		return out, false, nil
	}
	// Older events of the range come from the store.
	before := upTo
	if len(entries) > 0 {
		before = entries[len(entries)-1].Pos - 1
	}
	batch := max(want*2, 20)
	for round := 0; len(out) < want; round++ {
		if round == maxTimelineRounds {
			return out, true, nil
		}
		page, err := b.s.rs.RoomTimeline(b.ctx, roomID, since, before, batch) // oldest first
		if err != nil {
			return nil, false, err
		}
		if len(page) == 0 {
			break
		}
		before = page[0].StreamPos - 1
		slices.Reverse(page)
		evs := make([]*events.Event, len(page))
		all := make([]int, len(page))
		for i, e := range page {
			evs[i], all[i] = e.Event, i
		}
		gaps, err := b.gapsAmong(evs, all)
		if err != nil {
			return nil, false, err
		}
		gap := slices.Index(gaps, true)
		if gap >= 0 {
			page = page[:gap+1]
		}
		vis, err := b.visiblePage(page)
		if err != nil {
			return nil, false, err
		}
		out = append(out, vis...)
		if gap >= 0 {
			return out, true, nil
		}
		if len(page) < batch {
			break
		}
	}
	return out, false, nil
}

// gapsAmong tells, for the events evs[i] of a room for i in check, whether
// each starts a gap: it has a prev event that is neither among evs nor a
// timeline event the store has (an outlier, or unknown). The store is asked
// once for all of them.
func (b *syncBuilder) gapsAmong(evs []*events.Event, check []int) ([]bool, error) {
	in := make(map[id.EventID]struct{}, len(evs))
	for _, e := range evs {
		in[e.ID()] = struct{}{}
	}
	var ask []id.EventID
	for _, i := range check {
		for _, p := range evs[i].PrevEventIDs() {
			if _, ok := in[p]; !ok {
				ask = append(ask, p)
			}
		}
	}
	known := map[id.EventID]struct{}{}
	if len(ask) > 0 {
		stored, err := b.s.rs.Events(b.ctx, ask)
		if err != nil {
			return nil, err
		}
		for _, e := range stored {
			// Backfilled events (negative positions) are not part of the
			// stream /sync follows.
			if !e.Outlier && e.StreamPos > 0 {
				known[e.ID()] = struct{}{}
			}
		}
	}
	out := make([]bool, len(check))
	for k, i := range check {
		for _, p := range evs[i].PrevEventIDs() {
			_, inRange := in[p]
			_, ok := known[p]
			if !inRange && !ok {
				out[k] = true
				break
			}
		}
	}
	return out, nil
}

// historicalTimeline is timeline for since 0: up to limit+1 events, newest
// first in topological order, from the cache when the room's recent events
// arrived in topological order and hold enough, else from the store.
func (b *syncBuilder) historicalTimeline(roomID id.RoomID, upTo int64, top roomserver.TopoPos) ([]*roomserver.StoredEvent, bool, error) {
	want := b.f.timelineLimit + 1
	if top == (roomserver.TopoPos{}) && !b.s.timelines.Disordered(roomID) {
		var buf [32]syncstream.TimelineEntry
		entries, stopped, whole := b.cachedTimeline(roomID, 0, upTo, want, buf[:0])
		if stopped || whole {
			out, err := b.loadVisible(entries)
			if err != nil {
				return nil, false, err
			}
			if len(out) >= want || whole {
				return out, false, nil
			}
		}
	}
	var out []*roomserver.StoredEvent
	cursor := top
	batch := max(want*2, 20)
	for round := 0; len(out) < want; round++ {
		if round == maxTimelineRounds {
			return out, true, nil
		}
		page, err := b.s.rs.RoomTimelineTopo(b.ctx, roomID, upTo, cursor, batch) // newest first
		if err != nil {
			return nil, false, err
		}
		if len(page) == 0 {
			break
		}
		last := page[len(page)-1]
		cursor = roomserver.TopoPos{Depth: last.Depth(), Stream: last.StreamPos}
		vis, err := b.visiblePage(page)
		if err != nil {
			return nil, false, err
		}
		out = append(out, vis...)
		if len(page) < batch {
			break
		}
	}
	return out, false, nil
}

// fillTimeline writes a timeline batch: its events in client format and, as
// prev_batch, the place just before the first of them, which /messages
// accepts as from. Bundled aggregations are added to full and limited
// timelines; an unlimited incremental timeline holds every event since the
// previous sync, so the children of its events are in it too.
//
// An incremental timeline (stream order) gets a stream token: /messages pages
// back from it through the events that came before the timeline's first in
// the stream, in topological order (as Synapse), so that events that arrived
// late with a low depth (a healed network partition) are neither skipped nor
// repeated. A historical timeline (topological order) gets the topological
// place of its first event, unless it holds the whole room (see below).
func (b *syncBuilder) fillTimeline(t *timelineBatch, roomID id.RoomID, tl []*roomserver.StoredEvent, limited, full, incremental bool) error {
	t.Limited = limited
	if len(tl) == 0 {
		if limited {
			// Everything in range was filtered out: paginate from the end.
			t.PrevBatch = syncstream.Token{Events: b.to.Events}.String()
		}
		return nil
	}
	evs, err := b.formatEvents(tl, full || limited)
	if err != nil {
		return err
	}
	t.Events = evs
	switch {
	case incremental && tl[0].StreamPos > 0:
		t.PrevBatch = syncstream.Token{Events: tl[0].StreamPos - 1}.String()
	case !limited && tl[0].Type() == "m.room.create":
		// The whole room: nothing comes before the create event, and prev_batch
		// is the sync point, the stream position of the newest event here (as
		// Synapse and Dendrite answer). GET /members?at=prev_batch then gives
		// the members as of this sync, not the empty room before its creation.
		t.PrevBatch = syncstream.Token{Events: maxStreamPos(tl)}.String()
	default:
		t.PrevBatch = syncstream.TopoToken{Depth: tl[0].Depth(), Stream: tl[0].StreamPos}.String()
	}
	b.recordMembers(roomID, tl)
	return nil
}

// maxStreamPos is the highest stream position among evs.
func maxStreamPos(evs []*roomserver.StoredEvent) int64 {
	var m int64
	for _, e := range evs {
		m = max(m, e.StreamPos)
	}
	return m
}

// formatEvents writes events for the syncing device in the filter's format.
func (b *syncBuilder) formatEvents(evs []*roomserver.StoredEvent, bundle bool) ([]json.RawMessage, error) {
	var out []json.RawMessage
	if b.f.federation {
		out = make([]json.RawMessage, len(evs))
		for i, e := range evs {
			ev := e.Event
			if e.RedactedBy != "" {
				ev = ev.Redacted()
			}
			out[i] = ev.JSON()
		}
	} else {
		var err error
		out, err = b.a.ClientEvents(b.ctx, b.dev.UserID, b.dev.DeviceID, evs, EventFormat{OmitRoomID: true, Bundle: bundle})
		if err != nil {
			return nil, err
		}
	}
	if len(b.f.eventFields) > 0 {
		for i := range out {
			out[i] = projectEventFields(out[i], b.f.eventFields)
		}
	}
	return out, nil
}

// projectEventFields keeps only the given dot-separated fields of an event
// (Filter.event_fields; "\." escapes a dot in a field name).
func projectEventFields(raw []byte, fields []string) []byte {
	out := []byte(`{}`)
	for _, f := range fields {
		p := gjsonPath(f)
		v := gjson.GetBytes(raw, p)
		if !v.Exists() {
			continue
		}
		if o, err := sjson.SetRawBytes(out, p, []byte(v.Raw)); err == nil {
			out = o
		}
	}
	return out
}

// gjsonPath escapes gjson's metacharacters other than the dot separators (and
// the spec's "\." escapes, which gjson shares).
func gjsonPath(f string) string {
	b := make([]byte, 0, len(f)+4)
	for i := 0; i < len(f); i++ {
		c := f[i]
		switch c {
		case '\\':
			if i+1 < len(f) {
				b = append(b, c, f[i+1])
				i++
				continue
			}
			b = append(b, '\\', '\\')
			continue
		case '*', '?', '#', '@', '|', '!', '=', '<', '>', '%':
			b = append(b, '\\')
		}
		b = append(b, c)
	}
	return string(b)
}

// recordMembers notes the member events of a timeline as sent to the device.
func (b *syncBuilder) recordMembers(roomID id.RoomID, tl []*roomserver.StoredEvent) {
	if !b.f.lazyMembers {
		return
	}
	sent := map[id.UserID]id.EventID{}
	for _, e := range tl {
		if e.Type() == "m.room.member" && e.StateKey() != nil {
			sent[id.UserID(*e.StateKey())] = e.ID()
		}
	}
	b.s.lazy.record(b.lk, roomID, sent)
}

// snapshotAt is the room's state snapshot after its newest event at or below
// stream position pos (0, the empty state, when there is none).
func (b *syncBuilder) snapshotAt(roomID id.RoomID, pos int64) (int64, error) {
	e, err := b.s.rs.LatestEventAtStream(b.ctx, roomID, pos)
	if err != nil || e == nil {
		return 0, err
	}
	return e.StateAfter, nil
}

// state computes a room's state section (Client-Server API, GET /sync).
//
// Without use_state_after ("state"): the full state at the start of the
// timeline (full), else the state that changed between since and the start
// of the timeline, which is nothing unless the timeline is limited. State that
// changed by the end of the range through events the timeline does not hold
// (filtered out, or a merge of forks the start of the timeline does not see)
// is sent too, at its value at the end, unless the timeline has that event:
// otherwise the client would never learn it (as Synapse, issue 16928).
//
// With use_state_after ("state_after"): the full state at the end of the
// range, or what changed between since and the end, timeline events included,
// since clients then take state only from this section.
//
// Lazy-loading sends only the member events of the timeline's senders (and of
// the heroes, and of the user when the state is full), leaving out those this
// device already has, except that member changes inside a gap are always
// sent. left says upTo is the position of the user's leave from the room.
func (b *syncBuilder) state(roomID id.RoomID, full, limited bool, tl []*roomserver.StoredEvent, upTo int64, left bool, heroes []id.UserID, ownMember bool) ([]json.RawMessage, error) {
	rs := b.s.rs
	sm := &b.f.state
	if !sm.rooms.match(roomID) {
		return nil, nil
	}
	lazy := b.f.lazyMembers
	if !full && !limited && !b.stateAfter && (!lazy || len(tl) == 0) {
		return nil, nil
	}
	var ref, end int64
	var err error
	switch {
	case b.stateAfter || len(tl) == 0:
		if end, err = b.endSnapshot(roomID, upTo, left); err != nil {
			return nil, err
		}
		ref = end
		if b.stateAfter && end == 0 && len(tl) > 0 {
			ref = tl[len(tl)-1].StateAfter
		}
	default:
		ref = tl[0].StateBefore
	}
	// The member events lazy-loading needs.
	var needed map[id.UserID]struct{}
	if lazy {
		needed = map[id.UserID]struct{}{}
		for _, e := range tl {
			needed[e.Sender()] = struct{}{}
		}
		for _, h := range heroes {
			needed[h] = struct{}{}
		}
		if full || ownMember {
			needed[b.dev.UserID] = struct{}{}
		}
	}
	keepType := func(k pdu.StateKey) bool {
		if len(sm.types) > 0 || len(sm.notTypes) > 0 {
			if !sm.match(k.Type, "") {
				return false
			}
		}
		return true
	}
	deltaMode := !full && (limited || b.stateAfter)
	keep := keepType
	if full && lazy {
		keep = func(k pdu.StateKey) bool {
			if !keepType(k) {
				return false
			}
			if k.Type == "m.room.member" {
				_, ok := needed[id.UserID(k.StateKey)]
				return ok
			}
			return true
		}
	}
	var entries []roomserver.StateEntry
	if full {
		entries, err = rs.SnapshotEntries(b.ctx, ref, keep)
	} else if deltaMode {
		var from int64
		if from, err = b.snapshotAt(roomID, b.since.Events); err != nil {
			return nil, err
		}
		// Member changes in the gap are sent even when lazy-loading.
		entries, err = rs.StateDelta(b.ctx, from, ref, keepType)
	}
	if err != nil {
		return nil, err
	}
	var inTimeline map[id.EventID]struct{}
	if !b.stateAfter && len(tl) > 0 {
		inTimeline = make(map[id.EventID]struct{}, len(tl))
		for _, e := range tl {
			inTimeline[e.ID()] = struct{}{}
		}
	}
	if !b.stateAfter && len(tl) > 0 && (full || limited) {
		// State the end of the range has that the timeline does not bring.
		if end, err = b.endSnapshot(roomID, upTo, left); err != nil {
			return nil, err
		}
		if end != 0 && end != ref {
			changed, err := rs.StateDelta(b.ctx, ref, end, keep)
			if err != nil {
				return nil, err
			}
			entries = overrideState(entries, changed, inTimeline)
		}
	}
	inState := make(map[id.EventID]struct{}, len(entries))
	for _, e := range entries {
		inState[e.Event.ID()] = struct{}{}
	}
	if lazy && !full && len(needed) > 0 {
		// Senders' member events from the reference state, unless sent before.
		keys := make([]pdu.StateKey, 0, len(needed))
		for u := range needed {
			keys = append(keys, pdu.StateKey{Type: "m.room.member", StateKey: string(u)})
		}
		if keepType(keys[0]) {
			rows, err := rs.SnapshotStateEvents(b.ctx, []int64{ref}, keys)
			if err != nil {
				return nil, err
			}
			for i, e := range rows[ref] {
				if e == nil {
					continue
				}
				if _, dup := inState[e.ID()]; dup {
					continue
				}
				inState[e.ID()] = struct{}{}
				entries = append(entries, roomserver.StateEntry{Key: keys[i], Event: e})
			}
		}
	}
	sent := map[id.UserID]id.EventID{}
	evs := make([]*roomserver.StoredEvent, 0, len(entries))
	for _, e := range entries {
		ev := e.Event
		if !sm.match(ev.Type(), ev.Sender()) {
			continue
		}
		if _, dup := inTimeline[ev.ID()]; dup {
			continue
		}
		if lazy && ev.Type() == "m.room.member" {
			u := id.UserID(e.Key.StateKey)
			gapChange := deltaMode
			if !gapChange && !b.f.redundantMembers && !(ownMember && u == b.dev.UserID) && b.s.lazy.sent(b.lk, roomID, u, ev.ID()) {
				continue
			}
			sent[u] = ev.ID()
		}
		evs = append(evs, ev)
	}
	sortStateByStream(evs)
	if sm.limit > 0 && len(evs) > sm.limit {
		evs = evs[len(evs)-sm.limit:]
	}
	if lazy {
		b.s.lazy.record(b.lk, roomID, sent)
	}
	if !left {
		b.noteMembers(evs)
	}
	if len(evs) == 0 {
		return nil, nil
	}
	return b.formatEvents(evs, false)
}

// endSnapshot is the state snapshot at the end of a room's part of the
// response: after the user's leave event for a room they left, else the
// room's current state, unless the room has events past upTo (then the state
// after its newest event at or below upTo).
func (b *syncBuilder) endSnapshot(roomID id.RoomID, upTo int64, left bool) (int64, error) {
	if !left && b.s.timelines.Latest(roomID) <= upTo {
		nid, err := b.s.rs.CurrentSnapshot(b.ctx, roomID)
		if err == nil {
			return nid, nil
		}
		if !errors.Is(err, roomserver.ErrRoomNotFound) {
			return 0, err
		}
	}
	return b.snapshotAt(roomID, upTo)
}

// overrideState puts into entries the changed state entries that the timeline
// does not hold, in place of the entries they replace.
func overrideState(entries, changed []roomserver.StateEntry, inTimeline map[id.EventID]struct{}) []roomserver.StateEntry {
	if len(changed) == 0 {
		return entries
	}
	at := make(map[pdu.StateKey]int, len(entries))
	for i, e := range entries {
		at[e.Key] = i
	}
	for _, c := range changed {
		if _, ok := inTimeline[c.Event.ID()]; ok {
			continue
		}
		if i, ok := at[c.Key]; ok {
			entries[i] = c
			continue
		}
		at[c.Key] = len(entries)
		entries = append(entries, c)
	}
	return entries
}

// sortStateByStream orders state events by stream position, for stable responses.
func sortStateByStream(evs []*roomserver.StoredEvent) {
	slices.SortFunc(evs, func(x, y *roomserver.StoredEvent) int {
		switch {
		case x.StreamPos < y.StreamPos:
			return -1
		case x.StreamPos > y.StreamPos:
			return 1
		}
		return 0
	})
}

// presence fills the presence section: users sharing a room with the syncing
// user (and the user), whose presence changed since the token, or all of them
// on an initial sync. An incremental sync also brings the presence of the
// members of rooms the user joined since, and of users whose join, invite or
// knock it carries, changed or not: the client has not seen it (as Synapse).
func (b *syncBuilder) presence() error {
	s, ctx := b.s, b.ctx
	if !b.f.presence.matchType("m.presence") {
		return nil
	}
	var users []id.UserID
	var extra map[id.UserID]struct{}
	var err error
	if b.initial {
		users, err = s.presenceAudience(ctx, b.dev.UserID)
	} else {
		if b.since.Presence < b.to.Presence {
			users, err = s.presence.changedSince(ctx, b.since.Presence, b.to.Presence)
		}
		if err == nil {
			extra, err = b.newMembers()
		}
	}
	if err != nil {
		return err
	}
	if len(extra) > 0 {
		listed := make(map[id.UserID]struct{}, len(users))
		for _, u := range users {
			listed[u] = struct{}{}
		}
		for u := range extra {
			if _, dup := listed[u]; !dup {
				users = append(users, u)
			}
		}
	}
	if len(users) == 0 {
		return nil
	}
	now := nowMS()
	for _, u := range users {
		if !b.f.presence.match("m.presence", u) {
			continue
		}
		if _, ign := b.ignored[u]; ign {
			continue
		}
		_, isNew := extra[u]
		if !b.initial && !isNew && u != b.dev.UserID {
			share, err := s.shareRoom(ctx, b.dev.UserID, u)
			if err != nil {
				return err
			}
			if !share {
				continue
			}
		}
		st, err := s.presence.get(ctx, u)
		if err != nil {
			return err
		}
		if st.pos == 0 && (b.initial || isNew) {
			continue // never set: nothing to say
		}
		b.resp.Presence.Events = append(b.resp.Presence.Events, appendPresenceEvent(nil, u, st, now))
		b.news = true
	}
	return nil
}

// noteMembers remembers, for the presence section of an incremental sync, the
// users whose join, invite or knock is in a joined room's part of the
// response.
func (b *syncBuilder) noteMembers(evs []*roomserver.StoredEvent) {
	if b.initial {
		return
	}
	for _, e := range evs {
		if e.Type() != "m.room.member" || e.StateKey() == nil {
			continue
		}
		switch gjson.GetBytes(e.Content(), "membership").Str {
		case "join", "invite", "knock":
			if b.memberNews == nil {
				b.memberNews = map[id.UserID]struct{}{}
			}
			b.memberNews[id.UserID(*e.StateKey())] = struct{}{}
		}
	}
}

// newMembers returns the users an incremental sync brings the presence of
// whatever their presence stream says: those noted by noteMembers, and the
// members with a presence of the rooms the user joined since the token.
func (b *syncBuilder) newMembers() (map[id.UserID]struct{}, error) {
	out := b.memberNews
	for _, roomID := range b.newRooms {
		us, err := b.s.presenceInRoom(b.ctx, roomID)
		if err != nil {
			return nil, err
		}
		for _, u := range us {
			if out == nil {
				out = map[id.UserID]struct{}{}
			}
			out[u] = struct{}{}
		}
	}
	delete(out, b.dev.UserID) // the user's own presence comes when it changes
	return out, nil
}

// presenceInRoom lists the joined members of a room who have a presence.
func (s *Syncer) presenceInRoom(ctx context.Context, roomID id.RoomID) ([]id.UserID, error) {
	rows, err := s.db.Query(ctx, `SELECT p.user_id FROM presence p JOIN current_state c ON c.state_key = p.user_id
		JOIN rooms r ON r.room_nid = c.room_nid
		WHERE r.room_id = $1 AND c.event_type = 'm.room.member' AND c.membership = 'join'`, string(roomID))
	if err != nil {
		return nil, fmt.Errorf("listing presence of %s: %w", roomID, err)
	}
	defer rows.Close()
	var out []id.UserID
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return nil, fmt.Errorf("listing presence of %s: %w", roomID, err)
		}
		out = append(out, id.UserID(u))
	}
	return out, rows.Err()
}

// presenceAudience lists the user and the users sharing a room with them who
// have a presence.
func (s *Syncer) presenceAudience(ctx context.Context, user id.UserID) ([]id.UserID, error) {
	rows, err := s.db.Query(ctx, `SELECT p.user_id FROM presence p WHERE p.user_id = $1 OR p.user_id IN (
		SELECT o.state_key FROM current_state me JOIN current_state o ON o.room_nid = me.room_nid
		WHERE me.event_type = 'm.room.member' AND me.state_key = $1 AND me.membership = 'join'
		AND o.event_type = 'm.room.member' AND o.membership = 'join')`, string(user))
	if err != nil {
		return nil, fmt.Errorf("listing presence audience: %w", err)
	}
	defer rows.Close()
	var out []id.UserID
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return nil, fmt.Errorf("listing presence audience: %w", err)
		}
		out = append(out, id.UserID(u))
	}
	return out, rows.Err()
}
