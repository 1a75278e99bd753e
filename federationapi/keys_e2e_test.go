package federationapi_test

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/signutil"
	"maunium.net/go/mautrix/id"

	"hearth/config"
	"hearth/internal/testserver"
)

// getJSON fetches url over the test CA's TLS and decodes the body.
func getJSON(t *testing.T, method, url, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := testserver.FederationClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func TestServerKeysAndNotary(t *testing.T) {
	forEachDB(t, func(t *testing.T, start starter) {
		a, b := start(), start()
		ctx := context.Background()
		aName, bName := a.Config().ServerName, b.Config().ServerName

		// GET /_matrix/key/v2/server: self-signed with the server's key, valid for
		// a while, with old_verify_keys.
		status, raw := getJSON(t, http.MethodGet, a.FederationURL+"/_matrix/key/v2/server", "")
		if status != 200 {
			t.Fatalf("key/v2/server: %d %s", status, raw)
		}
		var skr federation.ServerKeyResponse
		if err := json.Unmarshal(raw, &skr); err != nil {
			t.Fatal(err)
		}
		pub := base64.RawStdEncoding.EncodeToString(a.Key.Public())
		if skr.ServerName != aName || skr.VerifyKeys[id.KeyID(a.Key.ID)].Key != id.SigningKey(pub) || skr.OldVerifyKeys == nil {
			t.Fatalf("key response = %s", raw)
		}
		if err := skr.VerifySelfSignature(); err != nil {
			t.Fatalf("self-signature: %v", err)
		}
		if until := time.Until(skr.ValidUntilTS.Time); until < time.Hour || until > 8*24*time.Hour {
			t.Fatalf("valid_until_ts in %v", until)
		}

		// B's key ring fetches A's key directly and caches it in the database.
		k, _, err := b.Federation.KeyRing().GetKeyFunc()(aName, id.KeyID(a.Key.ID), time.Now())
		if err != nil || k != id.SigningKey(pub) {
			t.Fatalf("B fetched A's key: %q, %v", k, err)
		}
		var n int
		if err := b.DB.QueryRow(ctx, `SELECT COUNT(*) FROM federation_server_keys WHERE server_name = $1`, aName).Scan(&n); err != nil || n != 1 {
			t.Fatalf("cached keys of A on B: %d, %v", n, err)
		}

		// B as a notary: it serves A's keys with its own signature added, for GET
		// and POST, and its own keys too.
		for _, tc := range []struct{ method, path, body string }{
			{http.MethodGet, "/_matrix/key/v2/query/" + aName, ""},
			{http.MethodPost, "/_matrix/key/v2/query", `{"server_keys":{"` + aName + `":{}}}`},
		} {
			status, raw := getJSON(t, tc.method, b.FederationURL+tc.path, tc.body)
			if status != 200 {
				t.Fatalf("%s %s: %d %s", tc.method, tc.path, status, raw)
			}
			var resp struct {
				ServerKeys []json.RawMessage `json:"server_keys"`
			}
			if err := json.Unmarshal(raw, &resp); err != nil || len(resp.ServerKeys) != 1 {
				t.Fatalf("%s: %s", tc.path, raw)
			}
			if err := signutil.VerifyJSON(aName, id.KeyID(a.Key.ID), id.SigningKey(pub), resp.ServerKeys[0]); err != nil {
				t.Fatalf("A's signature: %v", err)
			}
			bPub := id.SigningKey(base64.RawStdEncoding.EncodeToString(b.Key.Public()))
			if err := signutil.VerifyJSON(bName, id.KeyID(b.Key.ID), bPub, resp.ServerKeys[0]); err != nil {
				t.Fatalf("notary signature: %v", err)
			}
		}
		status, raw = getJSON(t, http.MethodPost, b.FederationURL+"/_matrix/key/v2/query", `{"server_keys":{"`+bName+`":{},"unreachable.invalid":{}}}`)
		if status != 200 || !strings.Contains(string(raw), bName) || strings.Contains(string(raw), "unreachable.invalid") {
			t.Fatalf("notary own + unreachable: %d %s", status, raw)
		}
		if status, raw := getJSON(t, http.MethodPost, b.FederationURL+"/_matrix/key/v2/query", `{"server_keys":`); status != 400 {
			t.Fatalf("bad JSON: %d %s", status, raw)
		}
	})
}

func TestKeyRingUsesNotaryWhenServerIsDown(t *testing.T) {
	forEachDB(t, func(t *testing.T, start starter) {
		a, notary := start(), start()
		aName := a.Config().ServerName
		// The notary learns A's keys while A is up.
		if _, _, err := notary.Federation.KeyRing().GetKeyFunc()(aName, id.KeyID(a.Key.ID), time.Now()); err != nil {
			t.Fatal(err)
		}
		aKeyID := id.KeyID(a.Key.ID)
		aPub := id.SigningKey(base64.RawStdEncoding.EncodeToString(a.Key.Public()))
		a.Stop()
		c := start(func(cfg *config.Config) {
			cfg.Federation.KeyNotaries = []config.KeyNotary{{ServerName: notary.Config().ServerName,
				VerifyKeys: map[string]string{notary.Key.ID: base64.RawStdEncoding.EncodeToString(notary.Key.Public())}}}
		})
		k, _, err := c.Federation.KeyRing().GetKeyFunc()(aName, aKeyID, time.Now())
		if err != nil || k != aPub {
			t.Fatalf("key through the notary: %q, %v", k, err)
		}
		// A notary whose signature does not verify is not believed.
		d := start(func(cfg *config.Config) {
			_, wrong, _ := ed25519.GenerateKey(nil)
			cfg.Federation.KeyNotaries = []config.KeyNotary{{ServerName: notary.Config().ServerName,
				VerifyKeys: map[string]string{notary.Key.ID: base64.RawStdEncoding.EncodeToString(wrong.Public().(ed25519.PublicKey))}}}
		})
		if k, _, err := d.Federation.KeyRing().GetKeyFunc()(aName, aKeyID, time.Now()); err == nil {
			t.Fatalf("a notary with the wrong key was believed: %q", k)
		}
	})
}
