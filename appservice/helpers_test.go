package appservice_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"hearth/config"
	"hearth/internal/testserver"
)

const v3 = "/_matrix/client/v3"

// Tokens and namespaces of the test application service.
const (
	asID    = "bridge"
	asToken = "as-token-bridge"
	hsToken = "hs-token-bridge"
	asBot   = "_bridge_bot"
)

// fakeAS is an application service on 127.0.0.1: it records the transactions
// it accepts and answers queries; it can be told to fail.
type fakeAS struct {
	t   *testing.T
	srv *httptest.Server

	mu       sync.Mutex
	txns     []fakeTxn
	attempts map[string]int              // txnId → PUTs seen
	failed   map[string][]map[string]any // txnId → events of a refused attempt
	badAuth  int                         // requests without the right hs_token
	failing  bool                        // answer 500 to transactions
	// onAlias answers GET /rooms/{alias}; nil: 404.
	onAlias func(alias string) int
	queries []string
}

type fakeTxn struct {
	ID     string
	Events []map[string]any
}

func newFakeAS(t *testing.T) *fakeAS {
	f := &fakeAS{t: t, attempts: map[string]int{}, failed: map[string][]map[string]any{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAS) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	if r.Header.Get("Authorization") != "Bearer "+hsToken {
		f.badAuth++
		f.mu.Unlock()
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `{"errcode":"M_FORBIDDEN"}`)
		return
	}
	f.mu.Unlock()
	switch {
	case r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/_matrix/app/v1/transactions/"):
		txnID := strings.TrimPrefix(r.URL.Path, "/_matrix/app/v1/transactions/")
		var body struct {
			Events []map[string]any `json:"events"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		f.attempts[txnID]++
		failing := f.failing
		if failing {
			f.failed[txnID] = body.Events
		} else {
			f.txns = append(f.txns, fakeTxn{ID: txnID, Events: body.Events})
		}
		f.mu.Unlock()
		if failing {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		io.WriteString(w, `{}`)
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/_matrix/app/v1/rooms/"):
		alias, _ := url.PathUnescape(strings.TrimPrefix(r.URL.EscapedPath(), "/_matrix/app/v1/rooms/"))
		f.mu.Lock()
		f.queries = append(f.queries, alias)
		h := f.onAlias
		f.mu.Unlock()
		status := http.StatusNotFound
		if h != nil {
			status = h(alias)
		}
		w.WriteHeader(status)
		io.WriteString(w, `{}`)
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/_matrix/app/v1/users/"):
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"errcode":"M_NOT_FOUND"}`)
	case r.Method == http.MethodPost && r.URL.Path == "/_matrix/app/v1/ping":
		io.WriteString(w, `{}`)
	default:
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"errcode":"M_UNRECOGNIZED"}`)
	}
}

func (f *fakeAS) setFailing(v bool) {
	f.mu.Lock()
	f.failing = v
	f.mu.Unlock()
}

// events returns every event delivered so far, in delivery order.
func (f *fakeAS) events() []map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []map[string]any
	for _, t := range f.txns {
		out = append(out, t.Events...)
	}
	return out
}

// waitFor polls until cond holds for the delivered events.
func (f *fakeAS) waitFor(what string, cond func(evs []map[string]any) bool) []map[string]any {
	f.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		evs := f.events()
		if cond(evs) {
			return evs
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("timed out waiting for %s; delivered: %s", what, mustJSON(evs))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// hasEvent reports whether evs holds the event with the given ID.
func hasEvent(evs []map[string]any, eventID string) bool {
	return indexOf(evs, eventID) >= 0
}

func indexOf(evs []map[string]any, eventID string) int {
	for i, e := range evs {
		if e["event_id"] == eventID {
			return i
		}
	}
	return -1
}

// registration is the test service's registration file; url may be "null".
func registration(url string) string {
	return fmt.Sprintf(`id: %s
url: %s
as_token: %s
hs_token: %s
sender_localpart: %s
rate_limited: false
namespaces:
  users:
    - exclusive: true
      regex: "@_bridge_.*:hs\\.test"
    - exclusive: false
      regex: "@shared_.*"
  aliases:
    - exclusive: true
      regex: "#_bridge_.*"
  rooms: []
`, asID, url, asToken, hsToken, asBot)
}

// withAppService registers the service at url (a registration file written to
// a temporary directory).
func withAppService(t *testing.T, url string) testserver.Option {
	dir := t.TempDir()
	p := filepath.Join(dir, "bridge.yaml")
	if err := os.WriteFile(p, []byte(registration(url)), 0o600); err != nil {
		t.Fatal(err)
	}
	return func(c *config.Config) { c.AppServiceConfigFiles = []string{p} }
}

// client is a raw HTTP client with one access token.
type client struct {
	t     *testing.T
	base  string
	token string
}

type resp struct {
	status int
	body   map[string]any
	raw    []byte
}

func (r resp) str(k string) string { s, _ := r.body[k].(string); return s }

func (c client) do(method, path string, body any) resp {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			c.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hr, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer hr.Body.Close()
	raw, _ := io.ReadAll(hr.Body)
	r := resp{status: hr.StatusCode, raw: raw}
	if len(raw) > 0 && raw[0] == '{' {
		if err := json.Unmarshal(raw, &r.body); err != nil {
			c.t.Fatalf("%s %s: not JSON: %s", method, path, raw)
		}
	}
	return r
}

// must does the request and requires the status (and errcode, when given).
func (c client) must(status int, errcode, method, path string, body any) resp {
	c.t.Helper()
	r := c.do(method, path, body)
	if r.status != status || (errcode != "" && r.str("errcode") != errcode) {
		c.t.Fatalf("%s %s: got %d %s; want %d %s", method, path, r.status, r.raw, status, errcode)
	}
	return r
}

// registerUser registers a normal user with the dummy flow.
func registerUser(t *testing.T, s *testserver.Server, name string) client {
	t.Helper()
	anon := client{t: t, base: s.URL}
	r := anon.must(http.StatusOK, "", "POST", v3+"/register", map[string]any{
		"username": name, "password": "pw-" + name, "auth": map[string]any{"type": "m.login.dummy"},
	})
	return client{t: t, base: s.URL, token: r.str("access_token")}
}

// as is the application service's client; as.as(userID) masquerades.
func asClient(t *testing.T, s *testserver.Server) client {
	return client{t: t, base: s.URL, token: asToken}
}

// q appends query parameters to a path.
func q(path string, kv ...string) string {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Set(kv[i], kv[i+1])
	}
	if strings.Contains(path, "?") {
		return path + "&" + v.Encode()
	}
	return path + "?" + v.Encode()
}

func esc(s string) string { return url.PathEscape(s) }

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
