package clientapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"hearth/config"
	"hearth/internal/testserver"
)

// forEachServer runs fn against a fresh real server on each database, with
// cheap password hashing.
func forEachServer(t *testing.T, fn func(t *testing.T, s *testserver.Server), opts ...testserver.Option) {
	t.Helper()
	testserver.ForEachDB(t, func(t *testing.T, s *testserver.Server) {
		s.ClientAPI.Accounts().SetBcryptCost(bcrypt.MinCost)
		fn(t, s)
	}, opts...)
}

func closedRegistration(c *config.Config) { c.Registration.Open = false }
func allowGuests(c *config.Config)        { c.Registration.AllowGuests = true }

// api is a raw HTTP client for one user (token may be empty).
type api struct {
	t     *testing.T
	base  string
	token string
}

func newAPI(t *testing.T, s *testserver.Server, token string) *api {
	return &api{t: t, base: s.URL, token: token}
}

// resp is a decoded response.
type resp struct {
	status int
	body   map[string]any
	raw    []byte
	header http.Header
}

func (r resp) errcode() string { s, _ := r.body["errcode"].(string); return s }

func (r resp) str(key string) string { s, _ := r.body[key].(string); return s }

func (r resp) String() string { return fmt.Sprintf("%d %s", r.status, r.raw) }

// do sends a request. path is relative to the server; body may be nil, a string
// (sent as is) or any value (JSON-encoded).
func (a *api) do(method, path string, body any) resp {
	a.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		enc, err := json.Marshal(b)
		if err != nil {
			a.t.Fatal(err)
		}
		rd = bytes.NewReader(enc)
	}
	req, err := http.NewRequest(method, a.base+path, rd)
	if err != nil {
		a.t.Fatal(err)
	}
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hr, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer hr.Body.Close()
	raw, _ := io.ReadAll(hr.Body)
	r := resp{status: hr.StatusCode, raw: raw, header: hr.Header}
	if len(raw) > 0 && raw[0] == '{' {
		if err := json.Unmarshal(raw, &r.body); err != nil {
			a.t.Fatalf("%s %s: response not JSON: %s", method, path, raw)
		}
	}
	return r
}

// expect asserts a status and, when errcode is not "", the errcode.
func (r resp) expect(t *testing.T, status int, errcode string) resp {
	t.Helper()
	if r.status != status || (errcode != "" && r.errcode() != errcode) {
		t.Fatalf("got %s; want %d %s", r, status, errcode)
	}
	return r
}

const v3 = "/_matrix/client/v3"

// user is a registered test user.
type user struct {
	id       id.UserID
	password string
	token    string
	device   string
	api      *api
	cli      *mautrix.Client
}

// registerUser registers through the dummy UIA flow with mautrix's client.
func registerUser(t *testing.T, s *testserver.Server, name string) *user {
	t.Helper()
	cli, err := mautrix.NewClient(s.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	pw := "pw-" + name
	r, err := cli.RegisterDummy(context.Background(), &mautrix.ReqRegister[any]{Username: name, Password: pw, InitialDeviceDisplayName: "test device"})
	if err != nil {
		t.Fatalf("registering %s: %v", name, err)
	}
	cli.SetCredentials(r.UserID, r.AccessToken)
	cli.DeviceID = r.DeviceID
	return &user{id: r.UserID, password: pw, token: r.AccessToken, device: string(r.DeviceID), api: newAPI(t, s, r.AccessToken), cli: cli}
}

// login logs a user in again, returning the new token's api.
func login(t *testing.T, s *testserver.Server, localpart, password string) (resp, *api) {
	t.Helper()
	r := newAPI(t, s, "").do("POST", v3+"/login", map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": localpart}, "password": password,
	})
	return r, newAPI(t, s, r.str("access_token"))
}

// passwordAuth is an m.login.password auth dict.
func passwordAuth(u *user, session string) map[string]any {
	return map[string]any{
		"type": "m.login.password", "session": session, "password": u.password,
		"identifier": map[string]any{"type": "m.id.user", "user": string(u.id)},
	}
}

// uia drives a UIA-protected request: the first attempt must be a 401 with the
// password flow, then body+auth completes it.
func uia(t *testing.T, a *api, method, path string, body map[string]any, u *user) resp {
	t.Helper()
	first := a.do(method, path, body).expect(t, http.StatusUnauthorized, "")
	flows, _ := json.Marshal(first.body["flows"])
	if string(flows) != `[{"stages":["m.login.password"]}]` {
		t.Fatalf("flows = %s", flows)
	}
	sess := first.str("session")
	if sess == "" {
		t.Fatalf("no session: %s", first)
	}
	withAuth := map[string]any{}
	for k, v := range body {
		withAuth[k] = v
	}
	withAuth["auth"] = passwordAuth(u, sess)
	return a.do(method, path, withAuth)
}

func esc(s string) string { return url.PathEscape(s) }
