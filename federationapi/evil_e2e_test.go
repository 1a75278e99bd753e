package federationapi_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"hearth/config"
	"hearth/internal/testca"
	"hearth/internal/testserver"
	"hearth/roomserver"
	"hearth/roomserver/events"
)

// evilServer is a remote server under the test's control: it publishes its keys,
// accepts whatever is sent to it, and sends hand-made PDUs.
type evilServer struct {
	name   string
	key    *config.SigningKey
	client *federation.Client

	mu     sync.Mutex
	routes map[string]http.HandlerFunc // by path prefix, see handle
	hits   map[string]int              // requests per routed prefix
}

// handle routes requests whose path starts with prefix to h (the longest
// matching prefix wins); unrouted paths get 404.
func (e *evilServer) handle(prefix string, h http.HandlerFunc) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.routes[prefix] = h
}

// hitCount is how many requests reached the route of prefix.
func (e *evilServer) hitCount(prefix string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.hits[prefix]
}

// route finds the handler of a path and counts the request.
func (e *evilServer) route(path string) http.HandlerFunc {
	e.mu.Lock()
	defer e.mu.Unlock()
	best := ""
	for p := range e.routes {
		if strings.HasPrefix(path, p) && len(p) > len(best) {
			best = p
		}
	}
	if best == "" {
		return nil
	}
	e.hits[best]++
	return e.routes[best]
}

func startEvilServer(t *testing.T) *evilServer {
	t.Helper()
	ca, err := testca.Shared()
	if err != nil {
		t.Fatal(err)
	}
	key, err := config.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	e := &evilServer{key: key, routes: map[string]http.HandlerFunc{}, hits: map[string]int{}}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.URL.Path == "/_matrix/key/v2/server":
			fk := &federation.SigningKey{ID: id.KeyID(key.ID), Priv: key.PrivateKey,
				Pub: id.SigningKey(base64.RawStdEncoding.EncodeToString(key.Public()))}
			_ = json.NewEncoder(w).Encode(fk.GenerateKeyResponse(e.name, nil))
		case strings.HasPrefix(r.URL.Path, "/_matrix/federation/v1/send/"):
			_, _ = w.Write([]byte(`{"pdus":{}}`))
		default:
			if h := e.route(r.URL.Path); h != nil {
				h(w, r)
				return
			}
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"errcode":"M_NOT_FOUND","error":"nothing here"}`))
		}
	}))
	if srv.TLS, err = ca.ServerTLS("127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	e.name = strings.TrimPrefix(srv.URL, "https://")
	e.client = fakeServerClient(t, e.name, key, nil)
	return e
}

// build makes an event as the evil server, on top of s's view of the room.
func (e *evilServer) build(t *testing.T, s *testserver.Server, roomID id.RoomID, sender id.UserID, evType string, stateKey *string, content any) *events.Event {
	t.Helper()
	proto, v, err := s.Roomserver.EventTemplate(context.Background(), roomID, roomserver.SendRequest{Type: evType, StateKey: stateKey, Sender: sender, Content: mustJSON(content)})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := events.Build(v.ID, *proto, e.name, id.KeyID(e.key.ID), e.key.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// send sends PDUs in one transaction and returns the per-PDU errors.
func (e *evilServer) send(t *testing.T, dest string, txnID string, pdus ...json.RawMessage) map[id.EventID]string {
	t.Helper()
	resp, err := e.client.SendTransaction(context.Background(), &federation.ReqSendTransaction{
		Destination: dest, TxnID: txnID, Origin: e.name, PDUs: pdus,
	})
	if err != nil {
		t.Fatalf("sending transaction: %v", err)
	}
	out := map[id.EventID]string{}
	for eid, r := range resp.PDUs {
		out[eid] = r.Error
	}
	return out
}

func TestEvilServerForgeries(t *testing.T) {
	forEachDB(t, func(t *testing.T, start starter) {
		a := start()
		ctx := context.Background()
		aName := a.Config().ServerName
		alice := register(t, a, "alice")
		r := createRoom(t, a, "10", alice, "public")
		evil := startEvilServer(t)
		mallory := id.UserID("@mallory:" + evil.name)

		// Mallory joins the normal way.
		mj, err := evil.client.MakeJoin(ctx, &federation.ReqMakeJoin{RoomID: r.id, UserID: mallory, Via: aName, SupportedVersions: []id.RoomVersion{"10"}})
		if err != nil {
			t.Fatalf("make_join: %v", err)
		}
		join := evil.build(t, a, r.id, mallory, "m.room.member", sk(string(mallory)), map[string]any{"membership": "join"})
		if gjson.GetBytes(mj.Event, "content.membership").Str != "join" {
			t.Fatalf("make_join template: %s", mj.Event)
		}
		if _, err := evil.client.SendJoin(ctx, &federation.ReqSendJoin{RoomID: r.id, EventID: join.ID(), Event: join.JSON(), Via: aName}); err != nil {
			t.Fatalf("send_join: %v", err)
		}
		if m := membership(t, a, r.id, mallory); m != "join" {
			t.Fatalf("mallory's membership = %s", m)
		}

		// 1. A valid message is accepted (the control).
		ok := evil.build(t, a, r.id, mallory, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "hi"})
		// 2. Bad signature: a signed field altered after signing.
		badSig, _ := sjson.SetBytes(evil.build(t, a, r.id, mallory, "m.room.message", nil, map[string]any{"body": "forged"}).JSON(), "origin_server_ts", time.Now().UnixMilli()+1)
		// 3. A message in alice's name, signed by the evil server only.
		impostorJSON, _ := sjson.SetBytes(evil.build(t, a, r.id, mallory, "m.room.message", nil, map[string]any{"body": "I am alice"}).JSON(), "sender", string(alice))
		impostor, err := events.Parse("10", impostorJSON)
		if err != nil {
			t.Fatal(err)
		}
		// 4. Bad content hash: the content altered after signing.
		badHash, _ := sjson.SetBytes(evil.build(t, a, r.id, mallory, "m.room.message", nil, map[string]any{"body": "original"}).JSON(), "content.body", "tampered")
		// 5. Failing auth: mallory (power 0) makes herself admin.
		coup := evil.build(t, a, r.id, mallory, "m.room.power_levels", sk(""), map[string]any{"users": map[string]any{string(mallory): 100}})
		results := evil.send(t, aName, "t1", ok.JSON(), badSig, impostorJSON, badHash, coup.JSON())

		firstResults := len(results)
		if e, has := results[ok.ID()]; !has || e != "" || !hasEvent(a, ok.ID()) {
			t.Fatalf("valid message: result %q (present %v)", e, has)
		}
		badSigEv, err := events.Parse("10", badSig)
		if err != nil {
			t.Fatal(err)
		}
		for name, eid := range map[string]id.EventID{"bad signature": badSigEv.ID(), "impostor": impostor.ID()} {
			if results[eid] == "" {
				t.Errorf("%s: accepted (results %v)", name, results)
			}
			if _, err := a.Roomserver.Event(ctx, eid); err == nil {
				t.Errorf("%s: stored", name)
			}
		}
		// A content hash mismatch means the event is used redacted: the tampered body
		// is never stored nor shown.
		badHashEv, err := events.Parse("10", badHash)
		if err != nil {
			t.Fatal(err)
		}
		if stored, err := a.Roomserver.Event(ctx, badHashEv.ID()); err != nil || gjson.GetBytes(stored.Content(), "body").Exists() {
			t.Fatalf("bad hash: %v, content %s", err, storedContent(stored))
		}
		// Rejection is not an error of the transaction (Synapse reports none
		// either): the event is stored as rejected and has no effect.
		if e, has := results[coup.ID()]; !has || e != "" {
			t.Errorf("power grab: result %q (present %v)", e, has)
		}
		if stored, err := a.Roomserver.Event(ctx, coup.ID()); err != nil || !stored.Rejected {
			t.Fatalf("power grab: stored %+v, %v", stored, err)
		}
		if pl, _ := a.Roomserver.CurrentStateEvent(ctx, r.id, "m.room.power_levels", ""); pl.ID() == coup.ID() {
			t.Fatal("the power grab took effect")
		}

		// 6. Ban evasion: mallory is banned, then sends a message built on the state
		// from before the ban. It passes the auth rules at its place in the DAG but
		// not against the current state: it is soft-failed.
		preBan := evil.build(t, a, r.id, mallory, "m.room.message", nil, map[string]any{"body": "evading the ban"})
		r.state(alice, "m.room.member", string(mallory), map[string]any{"membership": "ban"})
		results = evil.send(t, aName, "t2", preBan.JSON())
		if e := results[preBan.ID()]; e != "" {
			t.Fatalf("soft-failed event reported as an error: %q", e)
		}
		stored, err := a.Roomserver.Event(ctx, preBan.ID())
		if err != nil || !stored.SoftFailed {
			t.Fatalf("ban evasion: %+v, %v", stored, err)
		}
		// A banned user's new events are rejected outright.
		after := evil.build(t, a, r.id, mallory, "m.room.message", nil, map[string]any{"body": "after the ban"})
		evil.send(t, aName, "t3", after.JSON())
		if stored, err := a.Roomserver.Event(ctx, after.ID()); err != nil || !stored.Rejected {
			t.Fatalf("a message of a banned user: stored %+v, %v", stored, err)
		}

		// None of the forgeries reaches clients.
		msgs, _, err := a.Roomserver.Messages(ctx, r.id, roomserver.TopoPos{}, roomserver.Backward, 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			switch m.ID() {
			case badSigEv.ID(), impostor.ID(), coup.ID(), preBan.ID(), after.ID():
				t.Errorf("forged event %s is visible to clients", m.ID())
			}
			if strings.Contains(string(m.Content()), "tampered") || strings.Contains(string(m.Content()), "forged") {
				t.Errorf("forged content visible: %s", m.Content())
			}
		}

		// The same transaction ID again is answered from the record, not processed.
		if again := evil.send(t, aName, "t1"); len(again) != firstResults || firstResults != 5 {
			t.Fatalf("replayed transaction answered with %d results, first time %d", len(again), firstResults)
		}
	})
}

func storedContent(e *roomserver.StoredEvent) string {
	if e == nil {
		return "<nil>"
	}
	return string(e.Content())
}
