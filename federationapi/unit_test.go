package federationapi

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/signutil"
	"maunium.net/go/mautrix/id"

	"hearth/config"
	"hearth/roomserver/events"
)

func TestParseXMatrix(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    xMatrix
		wantErr bool
	}{
		{in: `X-Matrix origin="a.org",destination="b.org",key="ed25519:k1",sig="ABC"`,
			want: xMatrix{origin: "a.org", destination: "b.org", key: "ed25519:k1", sig: "ABC"}},
		// Scheme and names are case-insensitive; spaces around commas; unquoted
		// values with colons; unknown parameters ignored; order free.
		{in: `x-matrix  Sig=ABC , KEY=ed25519:k1,origin=a.org:8448 ,extra="x"`,
			want: xMatrix{origin: "a.org:8448", key: "ed25519:k1", sig: "ABC"}},
		// Backslash escapes in quoted values.
		{in: `X-Matrix origin="a\"b",key="k",sig="s"`, want: xMatrix{origin: `a"b`, key: "k", sig: "s"}},
		{in: `Bearer abc`, wantErr: true},
		{in: `X-Matrix origin="unterminated`, wantErr: true},
		{in: `X-Matrix origin="a" key="b"`, wantErr: true},
		{in: `X-Matrix =x`, wantErr: true},
		{in: `X-Matrix`, wantErr: true},
	} {
		got, err := parseXMatrix(tc.in)
		if (err != nil) != tc.wantErr || !tc.wantErr && got != tc.want {
			t.Errorf("parseXMatrix(%q) = %+v, %v; want %+v (error %v)", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

// TestSignedRequestMatchesMautrix checks that what this server verifies is what
// mautrix's client signs.
func TestSignedRequestMatchesMautrix(t *testing.T) {
	key, err := config.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	var captured *http.Request
	var body []byte
	hc := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		captured = r
		if r.Body != nil {
			body, _ = io.ReadAll(r.Body)
		}
		return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader(`{"pdus":{}}`)), Header: http.Header{}}, nil
	})}
	c := newMautrixClient("origin.example", key, hc)
	c.AllowServer = nil
	_, err = c.GetMissingEvents(context.Background(), &federation.ReqGetMissingEvents{ServerName: "dest.example", RoomID: "!r:x", EarliestEvents: []id.EventID{"$a"}, LatestEvents: []id.EventID{"$b"}, Limit: 5})
	if err != nil {
		t.Fatal(err)
	}
	x, err := parseXMatrix(captured.Header.Get("Authorization"))
	if err != nil {
		t.Fatal(err)
	}
	if x.origin != "origin.example" || x.destination != "dest.example" || x.key != key.ID {
		t.Fatalf("header = %+v", x)
	}
	msg, err := signedRequestJSON(captured.Method, captured.URL.RequestURI(), x.origin, "dest.example", body)
	if err != nil {
		t.Fatal(err)
	}
	sig, _ := base64.RawStdEncoding.DecodeString(x.sig)
	if !ed25519.Verify(key.Public(), msg, sig) {
		t.Fatalf("signature does not verify over %s", msg)
	}
	if msg2, _ := signedRequestJSON(captured.Method, captured.URL.RequestURI(), x.origin, "other.example", body); ed25519.Verify(key.Public(), msg2, sig) {
		t.Fatal("signature verified for another destination")
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestSignJSON(t *testing.T) {
	key, _ := config.GenerateSigningKey()
	other, _ := config.GenerateSigningKey()
	pub := func(k *config.SigningKey) id.SigningKey {
		return id.SigningKey(base64.RawStdEncoding.EncodeToString(k.Public()))
	}
	obj := []byte(`{"server_name":"a.org","valid_until_ts":1,"unsigned":{"x":1},"verify_keys":{}}`)
	signed, err := signJSON(obj, "a.org", key)
	if err != nil {
		t.Fatal(err)
	}
	twice, err := signJSON(signed, "notary.org", other)
	if err != nil {
		t.Fatal(err)
	}
	if err := signutil.VerifyJSON("a.org", id.KeyID(key.ID), pub(key), json.RawMessage(twice)); err != nil {
		t.Fatalf("first signature: %v", err)
	}
	if err := signutil.VerifyJSON("notary.org", id.KeyID(other.ID), pub(other), json.RawMessage(twice)); err != nil {
		t.Fatalf("second signature: %v", err)
	}
	stripped, err := withoutForeignSignatures(twice, "a.org")
	if err != nil || strings.Contains(string(stripped), "notary.org") || signutil.VerifyJSON("a.org", id.KeyID(key.ID), pub(key), json.RawMessage(stripped)) != nil {
		t.Fatalf("stripped = %s, %v", stripped, err)
	}
	if _, err := signJSON([]byte(`[1]`), "a.org", key); err == nil {
		t.Fatal("signed a non-object")
	}
}

func TestValidKey(t *testing.T) {
	good := id.SigningKey(base64.RawStdEncoding.EncodeToString(make([]byte, 32)))
	for _, tc := range []struct {
		kid  id.KeyID
		key  id.SigningKey
		want bool
	}{
		{"ed25519:abc_1", good, true},
		{"ed25519:a-b", good, true},
		{"ed25519:", good, false},
		{"curve25519:abc", good, false},
		{"ed25519:a b", good, false},
		{"ed25519:abc", "short", false},
		{"ed25519:abc", good + "==", true},
	} {
		if got := validKey(tc.kid, tc.key); got != tc.want {
			t.Errorf("validKey(%q, %q) = %v", tc.kid, tc.key, got)
		}
	}
}

func TestNetGuard(t *testing.T) {
	deny := config.Default().Federation
	g, err := newNetGuard(&deny)
	if err != nil {
		t.Fatal(err)
	}
	allow := deny
	allow.AllowedCIDRs = []string{"127.0.0.0/8"}
	ga, err := newNetGuard(&allow)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		addr        string
		def, withLo bool
	}{
		{"8.8.8.8", true, true},
		{"2001:4860:4860::8888", true, true},
		{"127.0.0.1", false, true},
		{"::ffff:127.0.0.1", false, true},
		{"10.1.2.3", false, false},
		{"192.168.1.1", false, false},
		{"169.254.169.254", false, false},
		{"::1", false, false},
		{"fe80::1", false, false},
		{"fd00::1", false, false},
		{"100.64.0.1", false, false},
		{"0.0.0.0", false, false},
	} {
		ip := netip.MustParseAddr(tc.addr)
		if got := g.permitted(ip); got != tc.def {
			t.Errorf("default: %s permitted = %v", tc.addr, got)
		}
		if got := ga.permitted(ip); got != tc.withLo {
			t.Errorf("with 127/8 allowed: %s permitted = %v", tc.addr, got)
		}
	}
	if err := g.control("tcp4", "127.0.0.1:8448", nil); !errors.Is(err, ErrAddressDenied) {
		t.Errorf("control = %v", err)
	}
	if err := g.control("udp", "8.8.8.8:53", nil); err == nil {
		t.Error("udp allowed")
	}
	// A real dial to a denied address fails before connecting.
	d := &net.Dialer{Control: g.control, Timeout: time.Second}
	if _, err := d.Dial("tcp", "127.0.0.1:1"); !errors.Is(err, ErrAddressDenied) {
		t.Errorf("dial = %v", err)
	}
}

func TestACL(t *testing.T) {
	acl := parseACL([]byte(`{"allow":["*"],"deny":["evil.org","*.evil.org","b?d.net"],"allow_ip_literals":false}`))
	for server, want := range map[string]bool{
		"good.org": true, "good.org:8448": true, "evil.org": false, "sub.evil.org": false, "EVIL.ORG": false,
		"bad.net": false, "baad.net": true, "1.2.3.4": false, "[::1]:8448": false, "notevil.org": true,
	} {
		if got := acl.allows(server); got != want {
			t.Errorf("allows(%s) = %v, want %v", server, got, want)
		}
	}
	if parseACL([]byte(`{}`)).allows("good.org") {
		t.Error("an empty allow list allowed a server")
	}
	if !parseACL([]byte(`{"allow":["*"]}`)).allows("1.2.3.4") {
		t.Error("IP literals are allowed by default")
	}
	if parseACL([]byte(`{"allow":"*"}`)).allows("good.org") {
		t.Error("malformed ACL content allowed a server")
	}
	for _, tc := range []struct {
		glob, s string
		want    bool
	}{
		{"*", "", true}, {"a*c", "abbbc", true}, {"a*c", "abbb", false}, {"*.a.b", "x.a.b", true},
		{"?", "", false}, {"a?c", "abc", true}, {"**x", "yyx", true}, {"a*b*c", "aXbYc", true}, {"a*b*c", "aXcYb", false},
	} {
		if got := globMatch(tc.glob, tc.s); got != tc.want {
			t.Errorf("globMatch(%q, %q) = %v", tc.glob, tc.s, got)
		}
	}
}

func TestCacheTTL(t *testing.T) {
	for _, tc := range []struct {
		cc, age string
		want    time.Duration
	}{
		{"", "", 24 * time.Hour},
		{"max-age=7200", "", 2 * time.Hour},
		{"public, max-age=7200", "3600", time.Hour},
		{"max-age=10", "", wellKnownMinTTL},
		{"max-age=9999999", "", wellKnownMaxTTL},
		{"no-store", "", wellKnownMinTTL},
		{"max-age=abc", "", 24 * time.Hour},
	} {
		h := http.Header{}
		if tc.cc != "" {
			h.Set("Cache-Control", tc.cc)
		}
		if tc.age != "" {
			h.Set("Age", tc.age)
		}
		if got := cacheTTL(h); got != tc.want {
			t.Errorf("cacheTTL(%q, age %q) = %v, want %v", tc.cc, tc.age, got, tc.want)
		}
	}
}

// fakeDiscovery answers .well-known and SRV lookups from tables and counts them.
type fakeDiscovery struct {
	wellKnown map[string]wkAnswer   // host → answer (absent: network error)
	srv       map[string][]*net.SRV // "service/host" → records
	wkCalls   int
}

func (f *fakeDiscovery) resolver() *resolver {
	r := newResolver(&http.Client{Transport: roundTripFunc(func(req *http.Request) (*http.Response, error) {
		f.wkCalls++
		a, ok := f.wellKnown[req.URL.Host]
		if !ok {
			return nil, errors.New("connection refused")
		}
		h := http.Header{}
		if a.cacheControl != "" {
			h.Set("Cache-Control", a.cacheControl)
		}
		return &http.Response{StatusCode: a.status, Header: h, Body: io.NopCloser(strings.NewReader(a.body))}, nil
	})})
	r.lookupSRV = func(_ context.Context, service, _, name string) (string, []*net.SRV, error) {
		if recs, ok := f.srv[service+"/"+name]; ok {
			return "", recs, nil
		}
		return "", nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
	}
	return r
}

// wkAnswer is a canned .well-known response.
type wkAnswer struct {
	status             int
	body, cacheControl string
}

func wk(status int, body string, cacheControl string) wkAnswer {
	return wkAnswer{status: status, body: body, cacheControl: cacheControl}
}

func TestServerDiscovery(t *testing.T) {
	for _, tc := range []struct {
		name       string
		server     string
		wellKnown  map[string]wkAnswer
		srv        map[string][]*net.SRV
		wantHost   string
		wantAddrs  []string
		wantWKCall bool
	}{
		{name: "IP literal", server: "1.2.3.4", wantHost: "1.2.3.4", wantAddrs: []string{"1.2.3.4:8448"}},
		{name: "IP literal with port", server: "1.2.3.4:99", wantHost: "1.2.3.4:99", wantAddrs: []string{"1.2.3.4:99"}},
		{name: "IPv6 literal", server: "[::1]", wantHost: "[::1]", wantAddrs: []string{"[::1]:8448"}},
		{name: "host with port", server: "a.org:1234", wantHost: "a.org:1234", wantAddrs: []string{"a.org:1234"}},
		{name: "well-known with port", server: "a.org", wantWKCall: true,
			wellKnown: map[string]wkAnswer{"a.org": wk(200, `{"m.server":"b.org:443"}`, "")},
			wantHost:  "b.org:443", wantAddrs: []string{"b.org:443"}},
		{name: "well-known IP literal", server: "a.org", wantWKCall: true,
			wellKnown: map[string]wkAnswer{"a.org": wk(200, `{"m.server":"5.6.7.8"}`, "")},
			wantHost:  "5.6.7.8", wantAddrs: []string{"5.6.7.8:8448"}},
		{name: "well-known then SRV of the delegated host", server: "a.org", wantWKCall: true,
			wellKnown: map[string]wkAnswer{"a.org": wk(200, `{"m.server":"b.org"}`, "")},
			srv:       map[string][]*net.SRV{"matrix-fed/b.org": {{Target: "c.org.", Port: 9000}}, "matrix-fed/a.org": {{Target: "wrong.", Port: 1}}},
			wantHost:  "b.org", wantAddrs: []string{"c.org:9000"}},
		{name: "well-known then deprecated SRV", server: "a.org", wantWKCall: true,
			wellKnown: map[string]wkAnswer{"a.org": wk(200, `{"m.server":"b.org"}`, "")},
			srv:       map[string][]*net.SRV{"matrix/b.org": {{Target: "d.org", Port: 9001}}},
			wantHost:  "b.org", wantAddrs: []string{"d.org:9001"}},
		{name: "well-known, no SRV", server: "a.org", wantWKCall: true,
			wellKnown: map[string]wkAnswer{"a.org": wk(200, `{"m.server":"b.org"}`, "")},
			wantHost:  "b.org", wantAddrs: []string{"b.org:8448"}},
		{name: "no well-known, SRV", server: "a.org", wantWKCall: true,
			wellKnown: map[string]wkAnswer{"a.org": wk(404, `{}`, "")},
			srv:       map[string][]*net.SRV{"matrix-fed/a.org": {{Target: "e.org.", Port: 8449}, {Target: "f.org.", Port: 8450}}},
			wantHost:  "a.org", wantAddrs: []string{"e.org:8449", "f.org:8450"}},
		{name: "invalid well-known body", server: "a.org", wantWKCall: true,
			wellKnown: map[string]wkAnswer{"a.org": wk(200, `{"m.server":42}`, "")},
			wantHost:  "a.org", wantAddrs: []string{"a.org:8448"}},
		{name: "well-known unreachable", server: "a.org", wantWKCall: true,
			wantHost: "a.org", wantAddrs: []string{"a.org:8448"}},
		{name: "SRV target '.' means none", server: "a.org", wantWKCall: true,
			srv:      map[string][]*net.SRV{"matrix-fed/a.org": {{Target: ".", Port: 0}}},
			wantHost: "a.org", wantAddrs: []string{"a.org:8448"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeDiscovery{wellKnown: tc.wellKnown, srv: tc.srv}
			res, err := f.resolver().resolve(context.Background(), tc.server)
			if err != nil {
				t.Fatal(err)
			}
			if res.hostHeader != tc.wantHost || strings.Join(res.addrs, ",") != strings.Join(tc.wantAddrs, ",") {
				t.Fatalf("resolved %s to host %q addrs %v; want %q %v", tc.server, res.hostHeader, res.addrs, tc.wantHost, tc.wantAddrs)
			}
			if (f.wkCalls > 0) != tc.wantWKCall {
				t.Fatalf(".well-known calls = %d", f.wkCalls)
			}
		})
	}
	if _, err := (&fakeDiscovery{}).resolver().resolve(context.Background(), "bad name!"); err == nil {
		t.Error("resolved an invalid server name")
	}
}

func TestWellKnownCaching(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	f := &fakeDiscovery{wellKnown: map[string]wkAnswer{"a.org": wk(200, `{"m.server":"b.org:1"}`, "max-age=3600")}}
	r := f.resolver()
	r.now = func() time.Time { return now }
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if _, err := r.resolve(ctx, "a.org"); err != nil {
			t.Fatal(err)
		}
	}
	if f.wkCalls != 1 {
		t.Fatalf(".well-known fetched %d times within its max-age", f.wkCalls)
	}
	now = now.Add(61 * time.Minute)
	if _, err := r.resolve(ctx, "a.org"); err != nil || f.wkCalls != 2 {
		t.Fatalf("after max-age: calls %d, %v", f.wkCalls, err)
	}
	// Transient failures are cached with a growing back-off.
	g := &fakeDiscovery{}
	r2 := g.resolver()
	r2.now = func() time.Time { return now }
	_, _ = r2.resolve(ctx, "down.org")
	first := r2.wellKnown["down.org"].expires.Sub(now)
	r2.mu.Lock()
	delete(r2.resolved, "down.org")
	r2.wellKnown["down.org"].expires = now
	r2.mu.Unlock()
	_, _ = r2.resolve(ctx, "down.org")
	second := r2.wellKnown["down.org"].expires.Sub(now)
	if first != wellKnownErrorTTL || second != 2*wellKnownErrorTTL || g.wkCalls != 2 {
		t.Fatalf("error back-off: %v then %v (%d calls)", first, second, g.wkCalls)
	}
}

func TestSortByAuth(t *testing.T) {
	key, _ := config.GenerateSigningKey()
	prevs := func(typ string) []id.EventID {
		if typ == "m.room.create" {
			return nil
		}
		return []id.EventID{"$aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}
	}
	build := func(typ string, sk *string, auth []id.EventID, depth int64) *events.Event {
		content := `{"membership":"join"}`
		if typ == "m.room.create" {
			content = `{"room_version":"10","creator":"@a:x.org"}`
		}
		ev, err := events.Build("10", events.ProtoEvent{Type: typ, StateKey: sk, Sender: "@a:x.org", RoomID: "!r:x.org",
			Content: []byte(content), AuthEvents: auth, PrevEvents: prevs(typ), Depth: depth},
			"x.org", id.KeyID(key.ID), key.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	empty := ""
	create := build("m.room.create", &empty, nil, 1)
	member := build("m.room.member", strPtr("@a:x.org"), []id.EventID{create.ID()}, 2)
	pl := build("m.room.power_levels", &empty, []id.EventID{create.ID(), member.ID()}, 3)
	// Depths that lie must not matter.
	jr := build("m.room.join_rules", &empty, []id.EventID{create.ID(), member.ID(), pl.ID()}, 0)
	got := sortByAuth([]*events.Event{jr, pl, member, create})
	pos := map[id.EventID]int{}
	for i, e := range got {
		pos[e.ID()] = i
	}
	if len(got) != 4 || pos[create.ID()] > pos[member.ID()] || pos[member.ID()] > pos[pl.ID()] || pos[pl.ID()] > pos[jr.ID()] {
		t.Fatalf("order: %v", got)
	}
}

func strPtr(s string) *string { return &s }

func TestEmptyObjectSignedWithoutContent(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	msg, err := signedRequestJSON("POST", "/_matrix/federation/v1/user/keys/query", "b.test", "a.test", nil)
	if err != nil {
		t.Fatal(err)
	}
	sig := ed25519.Sign(priv, msg)
	for body, want := range map[string]bool{`{}`: true, ` { } `: true, `{"device_keys":{}}`: false, ``: false, `[]`: false} {
		if got := emptyObjectSignedWithoutContent(pub, sig, "POST", "/_matrix/federation/v1/user/keys/query", "b.test", "a.test", []byte(body)); got != want {
			t.Errorf("body %q: accepted = %v, want %v", body, got, want)
		}
	}
	// The signature must still cover the URI.
	if emptyObjectSignedWithoutContent(pub, sig, "POST", "/_matrix/federation/v1/user/keys/claim", "b.test", "a.test", []byte(`{}`)) {
		t.Error("signature over another URI accepted")
	}
}

// TestTransportSetsContentType checks that outbound requests with a JSON body say
// so: Synapse and Complement answer 400 M_NOT_JSON without the header.
func TestTransportSetsContentType(t *testing.T) {
	got := make(chan string, 4)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Method + " " + r.Header.Get("Content-Type")
		_, _ = w.Write([]byte(`{}`))
	}))
	defer srv.Close()
	_, hc, err := newTransport(&config.Federation{SkipVerify: true, AllowedCIDRs: []string{"127.0.0.0/8"}}, func(s string) string { return s })
	if err != nil {
		t.Fatal(err)
	}
	host := strings.TrimPrefix(srv.URL, "https://")
	for _, tc := range []struct {
		method string
		body   io.Reader
		want   string
	}{
		{http.MethodPut, strings.NewReader(`{"pdus":[]}`), "PUT application/json"},
		{http.MethodGet, nil, "GET "},
	} {
		req, _ := http.NewRequest(tc.method, "matrix-federation://"+host+"/_matrix/federation/v1/x", tc.body)
		res, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if g := <-got; g != tc.want {
			t.Errorf("server saw %q, want %q", g, tc.want)
		}
	}
}
