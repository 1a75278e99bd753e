package federationapi

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"go.mau.fi/util/jsontime"
	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/federation/signutil"
	"maunium.net/go/mautrix/id"

	"hearth/config"
)

// Key ring timing.
const (
	// maxKeyValidity caps valid_until_ts (Server-Server API, keys definition: "the
	// lesser of this field and 7 days into the future").
	maxKeyValidity = 7 * 24 * time.Hour
	// keyRefetchInterval is the least time between two fetches of one server's keys.
	keyRefetchInterval = 30 * time.Second
	// keyFetchTimeout bounds one fetch (direct or through notaries).
	keyFetchTimeout = 20 * time.Second
)

// ErrKeyNotFound is returned when a server's key cannot be found anywhere.
var ErrKeyNotFound = errors.New("signing key not found")

// KeyRing finds other servers' signing keys: from memory, from the database, from
// the server itself (GET /_matrix/key/v2/server), then through the configured
// notaries (POST /_matrix/key/v2/query), caching what it learns with its validity.
type KeyRing struct {
	serverName string
	key        *config.SigningKey
	client     *federation.Client
	store      *store
	notaries   []config.KeyNotary
	now        func() time.Time

	mu       sync.Mutex
	servers  map[string]*serverKeyCache
	inflight map[string]chan struct{}
}

type serverKeyCache struct {
	keys       map[id.KeyID]keyEntry
	loaded     bool      // from the database
	lastFetch  time.Time // last network fetch attempt
	failures   int       // consecutive failed fetches
	retryAfter time.Time
}

// keyEntry is a known key: current keys carry valid_until; old keys the time they
// expired (and are valid for events before it).
type keyEntry struct {
	key        id.SigningKey
	validUntil time.Time
	old        bool
}

func newKeyRing(serverName string, key *config.SigningKey, client *federation.Client, st *store, notaries []config.KeyNotary) *KeyRing {
	return &KeyRing{
		serverName: serverName, key: key, client: client, store: st, notaries: notaries, now: time.Now,
		servers: make(map[string]*serverKeyCache), inflight: make(map[string]chan struct{}),
	}
}

// GetKeyFunc adapts the key ring to the signature checks and auth rules, which have
// no context: each lookup gets its own timeout.
func (k *KeyRing) GetKeyFunc() pdu.GetKeyFunc {
	return func(serverName string, keyID id.KeyID, minValidUntil time.Time) (id.SigningKey, time.Time, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*keyFetchTimeout)
		defer cancel()
		e, err := k.Key(ctx, serverName, keyID, minValidUntil)
		if err != nil {
			return "", time.Time{}, err
		}
		return e.key, e.validUntil, nil
	}
}

// Key returns the key serverName published as keyID. When the known copy is valid
// until before minValidUntil, the server (then the notaries) is asked again, at
// most every keyRefetchInterval; if that yields nothing better, the known copy is
// returned with its validity, for the caller to judge.
func (k *KeyRing) Key(ctx context.Context, serverName string, keyID id.KeyID, minValidUntil time.Time) (keyEntry, error) {
	if serverName == k.serverName {
		if string(keyID) == k.key.ID {
			return keyEntry{key: id.SigningKey(base64.RawStdEncoding.EncodeToString(k.key.Public())), validUntil: k.now().Add(maxKeyValidity)}, nil
		}
		return keyEntry{}, fmt.Errorf("%w: %s has no key %s", ErrKeyNotFound, serverName, keyID)
	}
	e, ok, err := k.cached(ctx, serverName, keyID)
	if err != nil {
		return keyEntry{}, err
	}
	if ok && (!e.validUntil.Before(minValidUntil) || e.old) {
		return e, nil
	}
	if err := k.fetch(ctx, serverName, keyID, minValidUntil, true); err != nil {
		slog.Debug("fetching server keys failed", "server", serverName, "key_id", keyID, "err", err)
	}
	if e2, ok2, err := k.cached(ctx, serverName, keyID); err != nil {
		return keyEntry{}, err
	} else if ok2 {
		return e2, nil
	}
	return keyEntry{}, fmt.Errorf("%w: %s %s", ErrKeyNotFound, serverName, keyID)
}

// cached looks a key up in memory, loading the server's keys from the database once.
func (k *KeyRing) cached(ctx context.Context, serverName string, keyID id.KeyID) (keyEntry, bool, error) {
	k.mu.Lock()
	c := k.servers[serverName]
	if c != nil && c.loaded {
		e, ok := c.keys[keyID]
		k.mu.Unlock()
		return e, ok, nil
	}
	k.mu.Unlock()
	rows, err := k.store.serverKeys(ctx, serverName)
	if err != nil {
		return keyEntry{}, false, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	c = k.cacheOf(serverName)
	if !c.loaded {
		for _, r := range rows {
			c.keys[id.KeyID(r.keyID)] = entryOf(r)
		}
		c.loaded = true
	}
	e, ok := c.keys[keyID]
	return e, ok, nil
}

func entryOf(r storedKey) keyEntry {
	if r.expiredTS > 0 {
		return keyEntry{key: id.SigningKey(r.publicKey), validUntil: time.UnixMilli(r.expiredTS), old: true}
	}
	return keyEntry{key: id.SigningKey(r.publicKey), validUntil: time.UnixMilli(r.validUntilTS)}
}

// cacheOf returns the cache entry of a server; k.mu must be held.
func (k *KeyRing) cacheOf(serverName string) *serverKeyCache {
	c := k.servers[serverName]
	if c == nil {
		c = &serverKeyCache{keys: make(map[id.KeyID]keyEntry)}
		k.servers[serverName] = c
	}
	return c
}

// refreshDirect fetches a server's keys from the server itself (for the notary
// endpoint), with the same rate limits as other fetches.
func (k *KeyRing) refreshDirect(ctx context.Context, serverName string) error {
	return k.fetch(ctx, serverName, "", time.Time{}, false)
}

// fetch asks the server, then (viaNotaries) the notaries, for its keys, unless a
// fetch for it happened too recently or is in progress (then it waits for that one).
func (k *KeyRing) fetch(ctx context.Context, serverName string, keyID id.KeyID, minValidUntil time.Time, viaNotaries bool) error {
	k.mu.Lock()
	if ch, busy := k.inflight[serverName]; busy {
		k.mu.Unlock()
		select {
		case <-ch:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	c := k.cacheOf(serverName)
	now := k.now()
	if now.Sub(c.lastFetch) < keyRefetchInterval || now.Before(c.retryAfter) {
		k.mu.Unlock()
		return fmt.Errorf("keys of %s were fetched recently", serverName)
	}
	c.lastFetch = now
	ch := make(chan struct{})
	k.inflight[serverName] = ch
	k.mu.Unlock()
	defer func() {
		k.mu.Lock()
		delete(k.inflight, serverName)
		k.mu.Unlock()
		close(ch)
	}()

	fctx, cancel := context.WithTimeout(ctx, keyFetchTimeout)
	defer cancel()
	errDirect := k.fetchDirect(fctx, serverName)
	if errDirect == nil && !viaNotaries {
		k.noteFetch(serverName, nil)
		return nil
	}
	if errDirect == nil {
		if e, ok, _ := k.cached(ctx, serverName, keyID); ok && (!e.validUntil.Before(minValidUntil) || e.old) {
			k.noteFetch(serverName, nil)
			return nil
		}
	}
	var errs []error
	if errDirect != nil {
		errs = append(errs, errDirect)
	}
	for _, n := range k.notaries {
		if !viaNotaries {
			break
		}
		if n.ServerName == serverName {
			continue
		}
		nctx, cancel := context.WithTimeout(ctx, keyFetchTimeout)
		err := k.fetchFromNotary(nctx, n, serverName, keyID, minValidUntil)
		cancel()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if _, ok, _ := k.cached(ctx, serverName, keyID); ok {
			break
		}
	}
	err := errors.Join(errs...)
	if errDirect == nil {
		err = nil // the server answered; it just has no such (valid) key
	}
	k.noteFetch(serverName, err)
	return err
}

// noteFetch records the outcome of a fetch for back-off: 10s, doubling, at most 10
// minutes after consecutive failures.
func (k *KeyRing) noteFetch(serverName string, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	c := k.cacheOf(serverName)
	if err == nil {
		c.failures, c.retryAfter = 0, time.Time{}
		return
	}
	c.failures++
	c.retryAfter = k.now().Add(min(10*time.Second<<min(c.failures-1, 6), 10*time.Minute))
}

// resetBackoff forgets failed fetches of a server (it just proved it is up).
func (k *KeyRing) resetBackoff(serverName string) {
	k.mu.Lock()
	if c := k.servers[serverName]; c != nil && c.failures > 0 {
		c.failures, c.retryAfter, c.lastFetch = 0, time.Time{}, time.Time{}
	}
	k.mu.Unlock()
}

// fetchDirect gets GET /_matrix/key/v2/server from the server itself.
func (k *KeyRing) fetchDirect(ctx context.Context, serverName string) error {
	resp, err := k.client.ServerKeys(ctx, serverName)
	if err != nil {
		return fmt.Errorf("fetching keys of %s: %w", serverName, err)
	}
	if resp == nil {
		return fmt.Errorf("fetching keys of %s: empty response", serverName)
	}
	return k.accept(ctx, serverName, resp, "", nil)
}

// fetchFromNotary asks a notary for the server's keys.
func (k *KeyRing) fetchFromNotary(ctx context.Context, n config.KeyNotary, serverName string, keyID id.KeyID, minValidUntil time.Time) error {
	notaryKeys, err := k.notaryKeys(ctx, n)
	if err != nil {
		return err
	}
	criteria := federation.QueryKeysCriteria{MinimumValidUntilTS: jsontime.UM(minValidUntil)}
	resp, err := k.client.QueryKeys(ctx, n.ServerName, &federation.ReqQueryKeys{
		ServerKeys: map[string]map[id.KeyID]federation.QueryKeysCriteria{serverName: {keyID: criteria}},
	})
	if err != nil {
		return fmt.Errorf("querying notary %s for %s: %w", n.ServerName, serverName, err)
	}
	if resp == nil {
		return fmt.Errorf("querying notary %s for %s: empty response", n.ServerName, serverName)
	}
	var errs []error
	for _, skr := range resp.ServerKeys {
		if skr == nil || skr.ServerName != serverName {
			continue
		}
		if err := k.accept(ctx, serverName, skr, n.ServerName, notaryKeys); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// notaryKeys returns the keys a notary's signatures are checked with: the
// configured ones, else the notary's current keys fetched from it.
func (k *KeyRing) notaryKeys(ctx context.Context, n config.KeyNotary) (map[id.KeyID]id.SigningKey, error) {
	out := make(map[id.KeyID]id.SigningKey, len(n.VerifyKeys))
	for kid, pub := range n.VerifyKeys {
		out[id.KeyID(kid)] = id.SigningKey(strings.TrimRight(pub, "="))
	}
	if len(out) > 0 {
		return out, nil
	}
	valid := func() map[id.KeyID]id.SigningKey {
		k.mu.Lock()
		defer k.mu.Unlock()
		for kid, e := range k.cacheOf(n.ServerName).keys {
			if !e.old && e.validUntil.After(k.now()) {
				out[kid] = e.key
			}
		}
		return out
	}
	if _, _, err := k.cached(ctx, n.ServerName, ""); err != nil {
		return nil, err
	}
	if len(valid()) > 0 {
		return out, nil
	}
	if err := k.fetchDirect(ctx, n.ServerName); err != nil {
		return nil, fmt.Errorf("fetching keys of notary %s: %w", n.ServerName, err)
	}
	if len(valid()) == 0 {
		return nil, fmt.Errorf("no valid keys for notary %s", n.ServerName)
	}
	return out, nil
}

// accept checks a key response of serverName — every verify key must have signed
// it, and, when it came through a notary, one of the notary's keys too — and
// stores its keys.
func (k *KeyRing) accept(ctx context.Context, serverName string, skr *federation.ServerKeyResponse, notary string, notaryKeys map[id.KeyID]id.SigningKey) error {
	if skr.ServerName != serverName {
		return fmt.Errorf("key response for %s names %q", serverName, skr.ServerName)
	}
	if len(skr.VerifyKeys) == 0 {
		return fmt.Errorf("key response of %s has no verify_keys", serverName)
	}
	raw := json.RawMessage(skr.Raw)
	for kid, vk := range skr.VerifyKeys {
		if !validKey(kid, vk.Key) {
			return fmt.Errorf("key response of %s: bad key %s", serverName, kid)
		}
		if err := signutil.VerifyJSON(serverName, kid, vk.Key, raw); err != nil {
			return fmt.Errorf("key response of %s: self-signature of %s: %w", serverName, kid, err)
		}
	}
	if notary != "" {
		ok := false
		for kid, pub := range notaryKeys {
			if signutil.VerifyJSON(notary, kid, pub, raw) == nil {
				ok = true
				break
			}
		}
		if !ok {
			return fmt.Errorf("key response of %s from notary %s lacks a valid notary signature", serverName, notary)
		}
	}
	now := k.now()
	validUntil := skr.ValidUntilTS.Time
	if cap := now.Add(maxKeyValidity); validUntil.After(cap) {
		validUntil = cap
	}
	rows := make([]storedKey, 0, len(skr.VerifyKeys)+len(skr.OldVerifyKeys))
	for kid, vk := range skr.VerifyKeys {
		rows = append(rows, storedKey{keyID: string(kid), publicKey: string(vk.Key), validUntilTS: validUntil.UnixMilli(), fetchedTS: now.UnixMilli()})
	}
	for kid, ok := range skr.OldVerifyKeys {
		if _, current := skr.VerifyKeys[kid]; current || !validKey(kid, ok.Key) || ok.ExpiredTS.IsZero() {
			continue
		}
		ts := ok.ExpiredTS.UnixMilli()
		rows = append(rows, storedKey{keyID: string(kid), publicKey: string(ok.Key), validUntilTS: ts, expiredTS: ts, fetchedTS: now.UnixMilli()})
	}
	// The stored response keeps the origin's signatures only; the notary endpoint
	// adds its own when serving it.
	stripped, err := withoutForeignSignatures(raw, serverName)
	if err != nil {
		return fmt.Errorf("key response of %s: %w", serverName, err)
	}
	if err := k.store.saveServerKeys(ctx, serverName, rows, stripped, skr.ValidUntilTS.UnixMilli(), now.UnixMilli()); err != nil {
		return err
	}
	k.mu.Lock()
	c := k.cacheOf(serverName)
	for _, r := range rows {
		c.keys[id.KeyID(r.keyID)] = entryOf(r)
	}
	k.mu.Unlock()
	return nil
}

// validKey checks a key ID ("ed25519:" and a version) and a 32-byte key. The spec
// limits versions to [a-zA-Z0-9_], but servers have published others (such as
// "-" from URL-safe base64), so any printable ASCII without spaces is accepted.
func validKey(kid id.KeyID, key id.SigningKey) bool {
	ver, ok := strings.CutPrefix(string(kid), "ed25519:")
	if !ok || ver == "" || len(ver) > 255 {
		return false
	}
	for i := 0; i < len(ver); i++ {
		if c := ver[i]; c <= ' ' || c > '~' {
			return false
		}
	}
	b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(string(key), "="))
	return err == nil && len(b) == ed25519.PublicKeySize
}
