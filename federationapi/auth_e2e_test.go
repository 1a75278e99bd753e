package federationapi_test

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"hearth/config"
	"hearth/internal/testca"
	"hearth/internal/testserver"
)

// rewriteTransport sends mautrix's matrix-federation:// requests straight to the
// host over HTTPS (test servers are named by their address), optionally letting
// a test tamper with each request after it is signed.
type rewriteTransport struct {
	base   http.RoundTripper
	tamper func(*http.Request)
}

func (t *rewriteTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(req.Context())
	r.URL.Scheme = "https"
	if t.tamper != nil {
		t.tamper(r)
	}
	return t.base.RoundTrip(r)
}

// fakeServerClient is a federation client speaking as serverName with key, for
// tests that play a remote server.
func fakeServerClient(t *testing.T, serverName string, key *config.SigningKey, tamper func(*http.Request)) *federation.Client {
	t.Helper()
	ca, err := testca.Shared()
	if err != nil {
		t.Fatal(err)
	}
	return &federation.Client{
		HTTP:       &http.Client{Transport: &rewriteTransport{base: &http.Transport{TLSClientConfig: ca.ClientTLS()}, tamper: tamper}},
		ServerName: serverName,
		UserAgent:  "hearth-test",
		Key: &federation.SigningKey{ID: id.KeyID(key.ID), Priv: key.PrivateKey,
			Pub: id.SigningKey(base64.RawStdEncoding.EncodeToString(key.Public()))},
		ResponseSizeLimit: 64 << 20,
	}
}

func respErr(err error) (int, string) {
	var he mautrix.HTTPError
	if errors.As(err, &he) && he.Response != nil {
		code := ""
		if he.RespError != nil {
			code = he.RespError.ErrCode
		}
		return he.Response.StatusCode, code
	}
	return 0, ""
}

func TestRequestAuthentication(t *testing.T) {
	forEachDB(t, func(t *testing.T, start starter) {
		a, b := start(), start()
		ctx := context.Background()
		aName, bName := a.Config().ServerName, b.Config().ServerName
		alice := register(t, a, "alice")
		r := createRoom(t, a, "10", alice, "public")
		// A request to /version needs no signature.
		if v, err := fakeServerClient(t, bName, b.Key, nil).Version(ctx, aName); err != nil || v.Server.Name != "Hearth" {
			t.Fatalf("version: %+v, %v", v, err)
		}
		stateIDs := func(c *federation.Client) error {
			_, err := c.GetStateIDs(ctx, aName, r.id, r.message(alice, "hi").Event.ID())
			return err
		}
		// Correctly signed by B (whose key A fetches from B): B is not in the room.
		if status, code := respErr(stateIDs(fakeServerClient(t, bName, b.Key, nil))); status != 403 || code != "M_FORBIDDEN" {
			t.Fatalf("signed request from a server not in the room: %d %s", status, code)
		}
		otherKey, _ := config.GenerateSigningKey()
		for _, tc := range []struct {
			name   string
			origin string
			key    *config.SigningKey
			tamper func(*http.Request)
		}{
			{"no header", bName, b.Key, func(r *http.Request) { r.Header.Del("Authorization") }},
			{"not X-Matrix", bName, b.Key, func(r *http.Request) { r.Header.Set("Authorization", "Bearer abc") }},
			{"wrong destination", bName, b.Key, func(r *http.Request) {
				r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), aName, "other.example", 1))
			}},
			{"tampered path", bName, b.Key, func(r *http.Request) { r.URL.RawQuery += "&x=1" }},
			{"wrong key", bName, &config.SigningKey{ID: b.Key.ID, PrivateKey: otherKey.PrivateKey}, nil},
			{"unknown key ID", bName, otherKey, nil},
			{"unreachable origin", "127.0.0.1:1", b.Key, nil},
		} {
			err := stateIDs(fakeServerClient(t, tc.origin, tc.key, tc.tamper))
			if status, code := respErr(err); status != 401 || code != "M_UNAUTHORIZED" {
				t.Errorf("%s: %d %s (%v)", tc.name, status, code, err)
			}
		}
		// A signed PUT with a tampered body is refused too.
		c := fakeServerClient(t, bName, b.Key, func(r *http.Request) {
			r.Body = http.NoBody
			r.ContentLength = 0
		})
		_, err := c.SendTransaction(ctx, &federation.ReqSendTransaction{Destination: aName, TxnID: "t1", Origin: bName})
		if status, code := respErr(err); status != 401 || code != "M_UNAUTHORIZED" {
			t.Errorf("tampered body: %d %s (%v)", status, code, err)
		}
		// Once B is in the room, its signed requests are served.
		bob := register(t, b, "bob")
		if _, err := b.Federation.JoinRemoteRoom(ctx, string(r.id), bob, []string{aName}); err != nil {
			t.Fatalf("join: %v", err)
		}
		if err := stateIDs(fakeServerClient(t, bName, b.Key, nil)); err != nil {
			t.Fatalf("signed request from a server in the room: %v", err)
		}
	})
}

var _ = testserver.FederationClient
