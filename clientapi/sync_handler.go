package clientapi

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"hearth/clientapi/syncstream"
	"hearth/httputil"
)

// maxSyncTimeout caps how long one /sync request waits.
const maxSyncTimeout = 5 * time.Minute

// registerSyncRoutes attaches the Syncer (when the API has one) and serves
// /sync, the ephemeral endpoints and the user directory.
func (a *API) registerSyncRoutes(r *mux.Router) {
	s := a.opts.Sync
	if s == nil {
		return
	}
	s.attach(a)
	handle(r, v3R0, "/sync", a.authed(a.getSync, allowGuests), http.MethodGet)
	a.registerEphemeralRoutes(r)
	a.registerUserDirectoryRoutes(r)
	r.Use(s.watchAccountData)
}

// syncParams are the query parameters of GET /sync.
type syncParams struct {
	since      syncstream.Token
	initial    bool
	timeout    time.Duration
	fullState  bool
	stateAfter bool
	// stateAfterUnstable: asked for with MSC4222's unstable parameter.
	stateAfterUnstable bool
	setPresence        string
	filter             string
}

// msc4222Param is the unstable name of use_state_after (MSC4222).
const msc4222Param = "org.matrix.msc4222.use_state_after"

// parseSyncParams validates the query: garbage is M_INVALID_PARAM.
func parseSyncParams(r *http.Request) (*syncParams, error) {
	q := r.URL.Query()
	p := &syncParams{initial: true, filter: q.Get("filter")}
	if s := q.Get("since"); s != "" {
		t, err := syncstream.ParseToken(s)
		if err != nil {
			return nil, httputil.InvalidParam("Invalid since token")
		}
		p.since, p.initial = t, false
	}
	if s := q.Get("timeout"); s != "" {
		ms, err := strconv.ParseInt(s, 10, 64)
		if err != nil || ms < 0 {
			return nil, httputil.InvalidParam("timeout must be a non-negative integer")
		}
		p.timeout = time.Duration(min(ms, maxSyncTimeout.Milliseconds())) * time.Millisecond
	}
	var err error
	if p.fullState, err = syncBoolParam(q.Get("full_state"), "full_state"); err != nil {
		return nil, err
	}
	if p.stateAfter, err = syncBoolParam(q.Get("use_state_after"), "use_state_after"); err != nil {
		return nil, err
	}
	if !p.stateAfter {
		// MSC4222's unstable name, answered under its unstable key.
		if p.stateAfterUnstable, err = syncBoolParam(q.Get(msc4222Param), msc4222Param); err != nil {
			return nil, err
		}
		p.stateAfter = p.stateAfterUnstable
	}
	switch sp := q.Get("set_presence"); sp {
	case "", presenceOnline, presenceOffline, presenceUnavailable:
		p.setPresence = sp
	default:
		return nil, httputil.InvalidParam("set_presence must be online, offline or unavailable")
	}
	if len(p.filter) > 64*1024 {
		return nil, httputil.InvalidParam("filter is too long")
	}
	return p, nil
}

func syncBoolParam(s, name string) (bool, error) {
	switch s {
	case "", "false":
		return false, nil
	case "true":
		return true, nil
	}
	return false, httputil.InvalidParam("%s must be true or false", name)
}

// GET /sync
func (a *API) getSync(w http.ResponseWriter, r *http.Request, d *Device) error {
	s, err := a.syncer()
	if err != nil {
		return err
	}
	p, err := parseSyncParams(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	f, err := s.syncFilterFor(ctx, d.Localpart, p.filter)
	if err != nil {
		return err
	}
	if err := s.loadUser(ctx, d.UserID); err != nil {
		return internalErr(err)
	}
	s.counts.ensureLoaded(d.UserID)
	if err := s.presence.touch(ctx, d.UserID, p.setPresence, func() { s.wakePresence(d.UserID) }); err != nil {
		return internalErr(err)
	}
	lk := lazyKey{d.UserID, d.DeviceID}
	if p.initial && f.lazyMembers {
		s.lazy.reset(lk)
	}
	waiter := s.notifier.Listen(d.UserID)
	defer waiter.Stop()
	deadline := time.Now().Add(p.timeout)
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		b := &syncBuilder{
			s: s, a: a, ctx: ctx, dev: d, f: f, since: p.since, initial: p.initial,
			fullState: p.fullState, stateAfter: p.stateAfter, stateAfterUnstable: p.stateAfterUnstable, lk: lk,
		}
		if err := b.build(); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return internalErr(err)
		}
		last := p.initial || p.fullState || p.timeout == 0 || !time.Now().Before(deadline) || s.closed.Load()
		news := b.news
		if ds := s.deviceStreams(); ds != nil && (news || last || b.to.E2EE > b.since.E2EE) {
			next, e2eeNews, err := s.deviceSync(ctx, d, b.since, b.to, p.initial, b.resp)
			if err != nil {
				return internalErr(err)
			}
			b.to.E2EE = next
			news = news || e2eeNews
		}
		if news || last {
			b.resp.NextBatch = b.token()
			body, err := json.Marshal(b.resp)
			if err != nil {
				return internalErr(err)
			}
			httputil.WriteJSONBytes(w, http.StatusOK, body)
			return nil
		}
		if timer == nil {
			timer = time.NewTimer(time.Until(deadline))
		}
		select {
		case <-waiter.C():
			waiter.Rearm()
		case <-timer.C:
			// One last look, then answer whatever there is.
			p.timeout = 0
		case <-ctx.Done():
			return nil
		}
	}
}

// watchAccountData wakes a user's syncs after a successful write of their
// account data through the account-data, tag, push-rule or ignore endpoints,
// which are served elsewhere in the client API.
func (s *Syncer) watchAccountData(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet || r.Method == http.MethodHead || r.Method == http.MethodOptions || !accountDataPath(r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		sw := &adStatusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r)
		if sw.status != http.StatusOK {
			return
		}
		if d, err := s.api.Authenticate(r); err == nil {
			s.accountDataChanged(d.UserID)
		}
	})
}

// accountDataPath reports whether a client API path writes account data.
func accountDataPath(p string) bool {
	return strings.Contains(p, "/account_data/") || strings.Contains(p, "/tags/") || strings.Contains(p, "/pushrules/")
}

// adStatusWriter records the status code of a response.
type adStatusWriter struct {
	http.ResponseWriter
	status int
}

func (w *adStatusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *adStatusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
