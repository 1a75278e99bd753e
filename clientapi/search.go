package clientapi

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/gorilla/mux"
	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"hearth/httputil"
	"hearth/roomserver"
	"hearth/storage"
)

// Server-side search (Client-Server API, "Server Side Search"): POST /search
// over the room_events category, answered from the full-text index kept by
// searchIndexer (search_index.go).
//
// The rooms searched are those the user has been in (joined, left or banned),
// narrowed by the filter; a room named in filter.rooms brings its
// predecessors (m.room.create's predecessor, transitively), so a search of an
// upgraded room also finds what was said before the upgrade. Every hit then
// goes through the same history visibility as /messages: a user who left a
// room finds only what they could see while in it.
//
// Results are ordered by rank (the default: Postgres's ts_rank_cd, or a
// BM25-style score from SQLite's matchinfo) or by recency (stream order,
// newest first). next_batch is a keyset position in that order, so paging is
// stable while new events arrive; groups (room_id, sender) come with next_batch tokens
// that continue the search within the group.

// searchAPI serves POST /search with its index.
type searchAPI struct {
	a     *API
	index *searchIndexer
}

func (a *API) registerSearchRoutes(r *mux.Router) {
	if a.opts.Roomserver == nil {
		return
	}
	s := &searchAPI{a: a, index: newSearchIndexer(a.db, a.opts.Roomserver)}
	handle(r, v3R0, "/search", a.authed(s.search, 0), http.MethodPost)
}

// Bounds of one search request.
const (
	defaultSearchLimit = 10
	maxSearchLimit     = 100
	defaultContextSize = 5
	maxContextSize     = 100
	// maxSearchScan bounds the index hits one page examines (hits the user
	// may not see are skipped); a page that reaches it ends early with a
	// next_batch.
	maxSearchScan = 2000
	// maxRankCandidates bounds the hits ranked per request: the newest ones.
	maxRankCandidates = 5000
	// maxPredecessors bounds the predecessor chain followed per room.
	maxPredecessors = 20
)

// searchRequest is the body of POST /search.
type searchRequest struct {
	SearchCategories *struct {
		RoomEvents *roomEventsCriteria `json:"room_events"`
	} `json:"search_categories"`
}

// roomEventsCriteria is the room_events category of a search.
type roomEventsCriteria struct {
	SearchTerm   *string          `json:"search_term"`
	Keys         []string         `json:"keys"`
	Filter       *RoomEventFilter `json:"filter"`
	OrderBy      string           `json:"order_by"`
	EventContext *struct {
		BeforeLimit    *int `json:"before_limit"`
		AfterLimit     *int `json:"after_limit"`
		IncludeProfile bool `json:"include_profile"`
	} `json:"event_context"`
	IncludeState bool `json:"include_state"`
	Groupings    *struct {
		GroupBy []struct {
			Key string `json:"key"`
		} `json:"group_by"`
	} `json:"groupings"`
}

// searchBatch is a next_batch token: the position of the last hit a page
// examined, in the request's order, and the group it continues, if any.
type searchBatch struct {
	Order string  `json:"o"`
	Pos   int64   `json:"p"`
	Rank  float64 `json:"r,omitempty"`
	Group string  `json:"g,omitempty"`
	Value string  `json:"v,omitempty"`
}

func (b searchBatch) String() string {
	raw, _ := json.Marshal(b)
	return base64.RawURLEncoding.EncodeToString(raw)
}

func parseSearchBatch(s, order string) (searchBatch, error) {
	bad := httputil.InvalidParam("Unknown next_batch token")
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(raw) > 1024 {
		return searchBatch{}, bad
	}
	var b searchBatch
	if json.Unmarshal(raw, &b) != nil || b.Order != order || b.Pos <= 0 || math.IsNaN(b.Rank) || math.IsInf(b.Rank, 0) {
		return searchBatch{}, bad
	}
	switch b.Group {
	case "":
	case "room_id":
		if !validRoomID(b.Value) {
			return searchBatch{}, bad
		}
	case "sender":
		if len(b.Value) < 2 || b.Value[0] != '@' || len(b.Value) > 255 {
			return searchBatch{}, bad
		}
	default:
		return searchBatch{}, bad
	}
	return b, nil
}

// searchHit is an index hit: an event's stream position and its rank.
type searchHit struct {
	pos  int64
	rank float64
}

// searchResult is a hit the user may see.
type searchResult struct {
	ev   *roomserver.StoredEvent
	rank float64
}

// searchPlan is a search reduced to what the index is asked.
type searchPlan struct {
	query   searchQuery
	rooms   []searchRoom
	keys    []string
	senders []string // nil: any
	exclude []string // senders left out
	order   string
	limit   int
	filter  *RoomEventFilter // types and contains_url, checked per event
}

// POST /_matrix/client/v3/search
func (s *searchAPI) search(w http.ResponseWriter, r *http.Request, d *Device) error {
	ctx := r.Context()
	body, err := readBody(r)
	if err != nil {
		return err
	}
	var req searchRequest
	if err := unmarshalObject(body, &req); err != nil {
		return err
	}
	if req.SearchCategories == nil {
		return httputil.BadJSON("search_categories is required")
	}
	crit := req.SearchCategories.RoomEvents
	if crit == nil {
		writeJSON(w, []byte(`{"search_categories":{}}`))
		return nil
	}
	plan, groups, err := s.plan(crit)
	if err != nil {
		return err
	}
	var from *searchBatch
	if nb := r.URL.Query().Get("next_batch"); nb != "" {
		b, err := parseSearchBatch(nb, plan.order)
		if err != nil {
			return err
		}
		from = &b
		// A sender group's token continues within that sender's events (a
		// room group's narrows the rooms, below).
		if b.Group == "sender" {
			if plan.senders != nil && !slices.Contains(plan.senders, b.Value) {
				plan.senders = []string{}
			} else {
				plan.senders = []string{b.Value}
			}
		}
	}
	if plan.rooms, err = s.rooms(ctx, d.UserID, crit.Filter, from); err != nil {
		return err
	}
	if err := s.index.wait(ctx); err != nil {
		return err
	}
	count, err := s.count(ctx, plan)
	if err != nil {
		return internalErr(err)
	}
	results, next, err := s.page(ctx, d, plan, from)
	if err != nil {
		return err
	}
	return s.respond(ctx, w, d, crit, plan, groups, from, count, results, next)
}

// plan validates the criteria and turns them into a searchPlan and the
// requested groupings.
func (s *searchAPI) plan(crit *roomEventsCriteria) (*searchPlan, []string, error) {
	if crit.SearchTerm == nil {
		return nil, nil, httputil.BadJSON("room_events.search_term is required")
	}
	p := &searchPlan{query: parseSearchQuery(*crit.SearchTerm), order: cmp.Or(crit.OrderBy, "rank"), limit: defaultSearchLimit}
	if p.order != "rank" && p.order != "recent" {
		return nil, nil, httputil.InvalidParam("order_by must be rank or recent")
	}
	if crit.Keys == nil {
		p.keys = []string{searchKeyBody, searchKeyName, searchKeyTopic}
	}
	for _, k := range crit.Keys {
		switch k {
		case searchKeyBody, searchKeyName, searchKeyTopic:
			if !slices.Contains(p.keys, k) {
				p.keys = append(p.keys, k)
			}
		default:
			return nil, nil, httputil.InvalidParam("Unknown search key %q", k)
		}
	}
	if f := crit.Filter; f != nil {
		if err := f.validate("filter"); err != nil {
			return nil, nil, err
		}
		if f.Limit != nil {
			p.limit = min(*f.Limit, maxSearchLimit)
		}
		p.senders, p.exclude = f.Senders, f.NotSenders
		if f.Types != nil || f.NotTypes != nil || f.ContainsURL != nil {
			p.filter = &RoomEventFilter{EventFilter: EventFilter{Types: f.Types, NotTypes: f.NotTypes}, ContainsURL: f.ContainsURL}
		}
	}
	if c := crit.EventContext; c != nil {
		if c.BeforeLimit != nil && *c.BeforeLimit < 0 || c.AfterLimit != nil && *c.AfterLimit < 0 {
			return nil, nil, httputil.InvalidParam("event_context limits must not be negative")
		}
	}
	var groups []string
	if g := crit.Groupings; g != nil {
		for _, k := range g.GroupBy {
			if k.Key != "room_id" && k.Key != "sender" {
				return nil, nil, httputil.InvalidParam("Unknown group key %q", k.Key)
			}
			if !slices.Contains(groups, k.Key) {
				groups = append(groups, k.Key)
			}
		}
	}
	return p, groups, nil
}

// rooms lists the rooms to search: those the user has been in, narrowed by
// the filter (whose rooms bring their predecessors) and by a room group's
// next_batch.
func (s *searchAPI) rooms(ctx context.Context, userID id.UserID, f *RoomEventFilter, from *searchBatch) ([]searchRoom, error) {
	rs := s.a.opts.Roomserver
	ms, err := rs.MembershipsOf(ctx, userID)
	if err != nil {
		return nil, internalErr(err)
	}
	var wanted map[id.RoomID]bool
	if f != nil && f.Rooms != nil {
		wanted = make(map[id.RoomID]bool, len(f.Rooms))
		for _, r := range f.Rooms {
			room := id.RoomID(r)
			for range maxPredecessors {
				if wanted[room] {
					break
				}
				wanted[room] = true
				if room = s.predecessor(ctx, room); room == "" {
					break
				}
			}
		}
	}
	out := make([]searchRoom, 0, len(ms))
	for _, m := range ms {
		switch {
		case m.Membership != "join" && m.Membership != "leave" && m.Membership != "ban":
		case wanted != nil && !wanted[m.RoomID]:
		case f != nil && containsString(f.NotRooms, string(m.RoomID)):
		case from != nil && from.Group == "room_id" && string(m.RoomID) != from.Value:
		default:
			out = append(out, searchRoom{id: m.RoomID, bounded: m.Membership != "join", until: m.StreamPos})
		}
	}
	return out, nil
}

// predecessor is the room a room replaced (Client-Server API, "Room
// Upgrades": m.room.create's predecessor), or "".
func (s *searchAPI) predecessor(ctx context.Context, roomID id.RoomID) id.RoomID {
	ev, err := s.a.opts.Roomserver.CurrentStateEvent(ctx, roomID, "m.room.create", "")
	if err != nil || ev == nil {
		return ""
	}
	if p := gjson.GetBytes(ev.Content(), "predecessor.room_id").Str; validRoomID(p) {
		return id.RoomID(p)
	}
	return ""
}

// searchRoom is a room to search. A room the user is no longer in is searched
// only up to their leave, ban or invite rejection (until, a stream position):
// neither its results nor the count may tell anything about what was said
// after it (the count would otherwise be an oracle for the words of messages
// the user may not read).
type searchRoom struct {
	id      id.RoomID
	bounded bool
	until   int64
}

// searchSQL is the FROM and WHERE of an index query, with the rank and
// position columns.
type searchSQL struct {
	from, where, rank, pos string
	args                   []any
}

// sql builds the index query of a plan for the database's dialect.
func (s *searchAPI) sql(p *searchPlan) searchSQL {
	var q searchSQL
	arg := func(v any) string {
		q.args = append(q.args, v)
		return "$" + strconv.Itoa(len(q.args))
	}
	var where strings.Builder
	if s.a.db.Dialect == storage.Postgres {
		q.from = `event_search, to_tsquery('english', ` + arg(p.query.tsquery()) + `) AS query`
		q.rank = `ts_rank_cd(event_search.vector, query)::float8`
		q.pos = `event_search.stream_pos`
		where.WriteString(`event_search.vector @@ query`)
	} else {
		// CROSS JOIN keeps the full-text table as the outer loop: probed by
		// docid for each row of event_search instead, FTS4 would evaluate
		// the whole query once per row. Ordering and ranges are on docid,
		// which FTS4 serves from its doclists in either direction.
		q.from = `event_search_text CROSS JOIN event_search ON event_search.stream_pos = event_search_text.docid`
		q.rank = `matchinfo(event_search_text, 'pcxl')`
		q.pos = `event_search_text.docid`
		where.WriteString(`event_search_text MATCH ` + arg(p.query.fts4()))
	}
	in := func(col string, not bool, vals []string) {
		where.WriteString(` AND ` + col)
		if not {
			where.WriteString(` NOT`)
		}
		where.WriteString(` IN (`)
		for i, v := range vals {
			if i > 0 {
				where.WriteByte(',')
			}
			where.WriteString(arg(v))
		}
		where.WriteByte(')')
	}
	var joined []string
	var left []searchRoom
	for _, r := range p.rooms {
		if r.bounded {
			left = append(left, r)
		} else {
			joined = append(joined, string(r.id))
		}
	}
	switch {
	case len(left) == 0:
		in(`event_search.room_id`, false, joined)
	default:
		// (room_id IN (joined…) OR (room_id = left AND pos <= until) OR …)
		where.WriteString(` AND (`)
		for i, r := range left {
			if i > 0 {
				where.WriteString(` OR `)
			}
			where.WriteString(`(event_search.room_id = ` + arg(string(r.id)) + ` AND event_search.stream_pos <= ` + arg(r.until) + `)`)
		}
		if len(joined) > 0 {
			where.WriteString(` OR event_search.room_id IN (`)
			for i, v := range joined {
				if i > 0 {
					where.WriteByte(',')
				}
				where.WriteString(arg(v))
			}
			where.WriteByte(')')
		}
		where.WriteByte(')')
	}
	if len(p.keys) < 3 {
		in(`event_search.search_key`, false, p.keys)
	}
	if p.senders != nil {
		in(`event_search.sender`, false, p.senders)
	}
	if len(p.exclude) > 0 {
		in(`event_search.sender`, true, p.exclude)
	}
	q.where = where.String()
	return q
}

// searchable reports whether the plan can match anything at all.
func (p *searchPlan) searchable() bool {
	return !p.query.empty() && len(p.rooms) > 0 && len(p.keys) > 0 && (p.senders == nil || len(p.senders) > 0)
}

// count is the number of index hits: the spec's "approximate count" (hits
// the user may not see, or that the event filter's types drop, are counted).
func (s *searchAPI) count(ctx context.Context, p *searchPlan) (int64, error) {
	if !p.searchable() {
		return 0, nil
	}
	q := s.sql(p)
	var n int64
	if err := s.a.db.QueryRow(ctx, `SELECT COUNT(*) FROM `+q.from+` WHERE `+q.where, q.args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting search results: %w", err)
	}
	return n, nil
}

// hits reads index hits, newest first: below pos when pos > 0, at most limit.
func (s *searchAPI) hits(ctx context.Context, p *searchPlan, pos int64, limit int) ([]searchHit, error) {
	q := s.sql(p)
	where := q.where
	if pos > 0 {
		q.args = append(q.args, pos)
		where += ` AND ` + q.pos + ` < $` + strconv.Itoa(len(q.args))
	}
	q.args = append(q.args, limit)
	rows, err := s.a.db.Query(ctx, `SELECT `+q.pos+`, `+q.rank+` FROM `+q.from+` WHERE `+where+
		` ORDER BY `+q.pos+` DESC LIMIT $`+strconv.Itoa(len(q.args)), q.args...)
	if err != nil {
		return nil, fmt.Errorf("searching: %w", err)
	}
	defer rows.Close()
	out := make([]searchHit, 0, min(limit, 256))
	pg := s.a.db.Dialect == storage.Postgres
	for rows.Next() {
		var h searchHit
		if pg {
			if err := rows.Scan(&h.pos, &h.rank); err != nil {
				return nil, fmt.Errorf("searching: %w", err)
			}
		} else {
			var info []byte
			if err := rows.Scan(&h.pos, &info); err != nil {
				return nil, fmt.Errorf("searching: %w", err)
			}
			h.rank = fts4Rank(info)
		}
		out = append(out, h)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("searching: %w", err)
	}
	return out, nil
}

// BM25 parameters of the SQLite rank. The average length is fixed (a
// typical chat message, in tokens) so that an event's rank does not change as
// the index grows and rank-ordered next_batch tokens stay valid.
const (
	bm25K1     = 1.2
	bm25B      = 0.75
	bm25AvgLen = 12.0
)

// fts4Rank scores a hit from FTS4's matchinfo 'pcxl': p phrases, c columns,
// then 3·p·c numbers (hits in this row, in all rows, rows with a hit), then
// c column lengths in tokens; all native-endian 32-bit integers. The score is
// BM25's term-frequency part summed over the phrases.
func fts4Rank(info []byte) float64 {
	n := len(info) / 4
	u := func(i int) float64 { return float64(binary.NativeEndian.Uint32(info[4*i:])) }
	if n < 2 {
		return 0
	}
	p, c := int(u(0)), int(u(1))
	if p <= 0 || c <= 0 || 2+3*p*c+c > n {
		return 0
	}
	dl := u(2 + 3*p*c)
	norm := bm25K1 * (1 - bm25B + bm25B*dl/bm25AvgLen)
	score := 0.0
	for i := range p {
		if tf := u(2 + 3*i*c); tf > 0 {
			score += tf * (bm25K1 + 1) / (tf + norm)
		}
	}
	return score
}

// page finds up to limit results after from in the plan's order, and the
// token of the next page (nil when the hits ran out).
func (s *searchAPI) page(ctx context.Context, d *Device, p *searchPlan, from *searchBatch) ([]searchResult, *searchBatch, error) {
	if !p.searchable() {
		return nil, nil, nil
	}
	if p.order == "recent" {
		return s.pageRecent(ctx, d, p, from)
	}
	return s.pageRank(ctx, d, p, from)
}

// pageRecent pages newest first, reading the index in batches until the
// page is full.
func (s *searchAPI) pageRecent(ctx context.Context, d *Device, p *searchPlan, from *searchBatch) ([]searchResult, *searchBatch, error) {
	var pos int64
	if from != nil {
		pos = from.Pos
	}
	batch := min(max(2*p.limit, 20), 500)
	var out []searchResult
	for scanned := 0; scanned < maxSearchScan; {
		hits, err := s.hits(ctx, p, pos, batch)
		if err != nil {
			return nil, nil, internalErr(err)
		}
		taken, last, err := s.take(ctx, d, p, hits, &out)
		if err != nil {
			return nil, nil, err
		}
		scanned += taken
		if taken > 0 {
			pos = last.pos
		}
		if len(out) == p.limit {
			return out, &searchBatch{Order: "recent", Pos: pos}, nil
		}
		if len(hits) < batch {
			return out, nil, nil
		}
	}
	return out, &searchBatch{Order: "recent", Pos: pos}, nil
}

// pageRank pages by rank: the newest maxRankCandidates hits are ranked, and
// the page continues after the token's (rank, position).
func (s *searchAPI) pageRank(ctx context.Context, d *Device, p *searchPlan, from *searchBatch) ([]searchResult, *searchBatch, error) {
	hits, err := s.hits(ctx, p, 0, maxRankCandidates)
	if err != nil {
		return nil, nil, internalErr(err)
	}
	slices.SortFunc(hits, func(a, b searchHit) int {
		return cmp.Or(cmp.Compare(b.rank, a.rank), cmp.Compare(b.pos, a.pos))
	})
	if from != nil {
		i, _ := slices.BinarySearchFunc(hits, *from, func(h searchHit, t searchBatch) int {
			return cmp.Or(cmp.Compare(t.Rank, h.rank), cmp.Compare(t.Pos, h.pos))
		})
		// hits[i] is the token's own hit (or the first after it).
		if i < len(hits) && hits[i].rank == from.Rank && hits[i].pos == from.Pos {
			i++
		}
		hits = hits[i:]
	}
	batch := min(max(2*p.limit, 20), 500)
	var out []searchResult
	var last searchHit
	for scanned := 0; len(hits) > 0 && scanned < maxSearchScan; {
		chunk := hits[:min(batch, len(hits))]
		taken, l, err := s.take(ctx, d, p, chunk, &out)
		if err != nil {
			return nil, nil, err
		}
		scanned += taken
		hits = hits[taken:]
		if taken > 0 {
			last = l
		}
		if len(out) == p.limit {
			break
		}
	}
	if len(hits) == 0 && len(out) < p.limit {
		return out, nil, nil
	}
	return out, &searchBatch{Order: "rank", Pos: last.pos, Rank: last.rank}, nil
}

// take loads the events of hits, in order, appending those the user may see
// to out until it holds p.limit. It returns how many hits it went through and
// the last of them.
func (s *searchAPI) take(ctx context.Context, d *Device, p *searchPlan, hits []searchHit, out *[]searchResult) (int, searchHit, error) {
	if len(hits) == 0 {
		return 0, searchHit{}, nil
	}
	positions := make([]int64, len(hits))
	for i, h := range hits {
		positions[i] = h.pos
	}
	evs, err := s.a.opts.Roomserver.EventsAtPositions(ctx, positions)
	if err != nil {
		return 0, searchHit{}, internalErr(err)
	}
	// Redacted events are not results, even if the index has not caught up.
	keep := evs[:0]
	for _, e := range evs {
		if e.RedactedBy == "" && matchEvent(p.filter, e) {
			keep = append(keep, e)
		}
	}
	visible, err := s.a.visibleToDevice(ctx, d, keep)
	if err != nil {
		return 0, searchHit{}, internalErr(err)
	}
	byPos := make(map[int64]*roomserver.StoredEvent, len(visible))
	for _, e := range visible {
		byPos[e.StreamPos] = e
	}
	taken := 0
	for _, h := range hits {
		if len(*out) == p.limit {
			break
		}
		taken++
		if e := byPos[h.pos]; e != nil {
			*out = append(*out, searchResult{ev: e, rank: h.rank})
		}
	}
	if taken == 0 {
		return 0, searchHit{}, nil
	}
	return taken, hits[taken-1], nil
}

// searchContext is the event_context of one result.
type searchContext struct {
	before, after []*roomserver.StoredEvent
	start, end    roomserver.TopoPos
	profiles      map[id.UserID]*roomserver.StoredEvent
}

// context pages around a result as GET /context does, without the search's
// filter (Synapse's behaviour).
func (s *searchAPI) context(ctx context.Context, d *Device, e *roomserver.StoredEvent, nBefore, nAfter int, profiles bool) (*searchContext, error) {
	a := s.a
	roomID := e.RoomID()
	c := &searchContext{}
	var err error
	if c.before, c.start, _, err = a.paginate(ctx, d, roomID, eventPos(e), true, roomserver.Backward, nBefore, nil, roomserver.TopoPos{}, false); err != nil {
		return nil, err
	}
	var stop roomserver.TopoPos
	stopGiven := false
	if cutoff, err := a.historyAccess(ctx, roomID, d.UserID); err == nil && cutoff != nil {
		stop, stopGiven = gapAfter(cutoff), true
	}
	if c.after, c.end, _, err = a.paginate(ctx, d, roomID, gapAfter(e), true, roomserver.Forward, nAfter, nil, stop, stopGiven); err != nil {
		return nil, err
	}
	if !profiles {
		return c, nil
	}
	// The senders' member events in the state after the last event shown
	// ("the historic profile information").
	last := e
	if len(c.after) > 0 {
		last = c.after[len(c.after)-1]
	}
	var senders []id.UserID
	var keys []pdu.StateKey
	for _, ev := range slices.Concat(c.before, []*roomserver.StoredEvent{e}, c.after) {
		if !slices.Contains(senders, ev.Sender()) {
			senders = append(senders, ev.Sender())
			keys = append(keys, memberKey(ev.Sender()))
		}
	}
	states, err := a.opts.Roomserver.SnapshotStateEvents(ctx, []int64{last.StateAfter}, keys)
	if err != nil {
		return nil, internalErr(err)
	}
	c.profiles = make(map[id.UserID]*roomserver.StoredEvent, len(senders))
	for i, u := range senders {
		if m := states[last.StateAfter][i]; m != nil {
			c.profiles[u] = m
		}
	}
	return c, nil
}

// respond writes the answer: count, highlights, results (with context),
// next_batch, groups and state.
func (s *searchAPI) respond(ctx context.Context, w http.ResponseWriter, d *Device, crit *roomEventsCriteria, p *searchPlan,
	groups []string, from *searchBatch, count int64, results []searchResult, next *searchBatch) error {
	a := s.a
	var contexts []*searchContext
	all := make([]*roomserver.StoredEvent, 0, len(results))
	for _, r := range results {
		all = append(all, r.ev)
	}
	if ec := crit.EventContext; ec != nil {
		nBefore := min(ptrValue(ec.BeforeLimit, defaultContextSize), maxContextSize)
		nAfter := min(ptrValue(ec.AfterLimit, defaultContextSize), maxContextSize)
		contexts = make([]*searchContext, len(results))
		for i, r := range results {
			c, err := s.context(ctx, d, r.ev, nBefore, nAfter, ec.IncludeProfile)
			if err != nil {
				return err
			}
			contexts[i] = c
			all = append(append(all, c.before...), c.after...)
		}
	}
	wr, err := a.newEventWriter(ctx, viewerOf(d), all, EventFormat{Bundle: true})
	if err != nil {
		return internalErr(err)
	}
	b := make([]byte, 0, 1024+len(all)*700)
	b = append(b, `{"search_categories":{"room_events":{"count":`...)
	b = strconv.AppendInt(b, count, 10)
	b = append(b, `,"highlights":`...)
	hl, _ := json.Marshal(p.query.highlights())
	b = append(b, hl...)
	b = append(b, `,"results":[`...)
	for i, r := range results {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"rank":`...)
		b = appendJSONFloat(b, r.rank)
		b = append(b, `,"result":`...)
		b = wr.append(b, r.ev)
		if contexts != nil {
			b = appendSearchContext(b, wr, contexts[i])
		}
		b = append(b, '}')
	}
	b = append(b, ']')
	if next != nil {
		n := *next
		if from != nil {
			n.Group, n.Value = from.Group, from.Value
		}
		b = append(b, `,"next_batch":`...)
		b = appendJSONString(b, n.String())
	}
	if len(groups) > 0 {
		b = appendSearchGroups(b, groups, results, next)
	}
	if crit.IncludeState {
		if b, err = s.appendState(ctx, b, d, results); err != nil {
			return err
		}
	}
	writeJSON(w, append(b, `}}}`...))
	return nil
}

func ptrValue(p *int, def int) int {
	if p == nil {
		return def
	}
	return *p
}

// appendJSONFloat writes a rank (0 for the impossible NaN and infinities).
func appendJSONFloat(dst []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		f = 0
	}
	return strconv.AppendFloat(dst, f, 'g', -1, 64)
}

func appendSearchContext(b []byte, wr *eventWriter, c *searchContext) []byte {
	b = append(b, `,"context":{"events_before":`...)
	b = wr.appendArray(b, c.before)
	b = append(b, `,"events_after":`...)
	b = wr.appendArray(b, c.after)
	b = append(b, `,"start":`...)
	b = appendJSONString(b, gapToken(c.start))
	b = append(b, `,"end":`...)
	b = appendJSONString(b, gapToken(c.end))
	if c.profiles != nil {
		b = append(b, `,"profile_info":{`...)
		users := make([]id.UserID, 0, len(c.profiles))
		for u := range c.profiles {
			users = append(users, u)
		}
		slices.Sort(users)
		for i, u := range users {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, string(u))
			b = append(b, ':', '{')
			content := c.profiles[u].Content()
			sep := false
			for _, k := range [...]string{"displayname", "avatar_url"} {
				if v := gjson.GetBytes(content, k); v.Type == gjson.String {
					if sep {
						b = append(b, ',')
					}
					b = appendJSONString(b, k)
					b = append(b, ':')
					b = appendJSONString(b, v.Str)
					sep = true
				}
			}
			b = append(b, '}')
		}
		b = append(b, '}')
	}
	return append(b, '}')
}

// appendSearchGroups writes groups: for each key, the results per value in
// order of first appearance, each group with a next_batch continuing the
// search within it when the page has one.
func appendSearchGroups(b []byte, keys []string, results []searchResult, next *searchBatch) []byte {
	b = append(b, `,"groups":{`...)
	for ki, key := range keys {
		if ki > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, key)
		b = append(b, ':', '{')
		var order []string
		members := map[string][]id.EventID{}
		for _, r := range results {
			v := string(r.ev.RoomID())
			if key == "sender" {
				v = string(r.ev.Sender())
			}
			if _, ok := members[v]; !ok {
				order = append(order, v)
			}
			members[v] = append(members[v], r.ev.ID())
		}
		for i, v := range order {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, v)
			b = append(b, `:{"order":`...)
			b = strconv.AppendInt(b, int64(i+1), 10)
			b = append(b, `,"results":[`...)
			for j, e := range members[v] {
				if j > 0 {
					b = append(b, ',')
				}
				b = appendJSONString(b, string(e))
			}
			b = append(b, ']')
			if next != nil {
				g := *next
				g.Group, g.Value = key, v
				b = append(b, `,"next_batch":`...)
				b = appendJSONString(b, g.String())
			}
			b = append(b, '}')
		}
		b = append(b, '}')
	}
	return append(b, '}')
}

// appendState writes the state of each room in the results, as far as the
// user may see it (the current state, or the state when they left).
func (s *searchAPI) appendState(ctx context.Context, b []byte, d *Device, results []searchResult) ([]byte, error) {
	var rooms []id.RoomID
	for _, r := range results {
		if !slices.Contains(rooms, r.ev.RoomID()) {
			rooms = append(rooms, r.ev.RoomID())
		}
	}
	b = append(b, `,"state":{`...)
	for i, room := range rooms {
		state, err := s.a.stateFor(ctx, room, d.UserID)
		if err != nil {
			return nil, err
		}
		evs := make([]*roomserver.StoredEvent, len(state))
		for j, st := range state {
			evs[j] = st.Event
		}
		sw, err := s.a.newEventWriter(ctx, viewerOf(d), evs, EventFormat{})
		if err != nil {
			return nil, internalErr(err)
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, string(room))
		b = append(b, ':')
		b = sw.appendArray(b, evs)
	}
	return append(b, '}'), nil
}
