package federationapi

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"hearth/clientapi/e2ee"
)

// Device lists across servers (Server-Server API, "Device Management"), the
// parts beyond answering and sending single updates (e2ee.go): a local user who
// joins a room tells the servers there that did not yet track their devices,
// and remote users' cached device lists are fetched again ("resynced") from GET
// /user/devices/{userId} when an update cannot be applied or a client asks for
// keys of a user whose list is not cached.

// Bounds of resyncs.
const (
	// maxResyncWorkers bounds the resyncs under way at once.
	maxResyncWorkers = 4
	// maxResyncQueue bounds the users waiting for a resync; more are dropped
	// (their keys are then asked of their servers on each query).
	maxResyncQueue = 10_000
	// resyncTimeout bounds one resync.
	resyncTimeout = 30 * time.Second
	// resyncCooldown is how long a user whose resync failed is not retried.
	resyncCooldown = 30 * time.Second
)

// deviceListResyncer queues resyncs and runs them on a few workers, one at a
// time per user.
type deviceListResyncer struct {
	mu      sync.Mutex
	queue   []id.UserID
	state   map[id.UserID]resyncState
	failed  map[id.UserID]time.Time
	workers int
}

// resyncState is a user's place in the resyncer.
type resyncState uint8

const (
	resyncQueued resyncState = iota + 1
	resyncRunning
	// resyncAgain: running, and asked for again meanwhile (the list fetched
	// may predate what prompted the new request).
	resyncAgain
)

// ResyncDeviceLists asks for remote users' device lists to be fetched again
// from their servers, in the background. Users already waiting are not queued
// twice, and a user whose last resync failed is not retried for a while. It
// implements clientapi.DeviceListResyncer.
func (a *API) ResyncDeviceLists(users []id.UserID) {
	if a.keys == nil {
		return
	}
	r := &a.devLists
	now := time.Now()
	r.mu.Lock()
	if r.state == nil {
		r.state, r.failed = map[id.UserID]resyncState{}, map[id.UserID]time.Time{}
	}
	for _, u := range users {
		if _, server, err := u.ParseAndValidateRelaxed(); err != nil || server == a.serverName {
			continue
		}
		switch r.state[u] {
		case resyncRunning:
			r.state[u] = resyncAgain
			continue
		case resyncQueued, resyncAgain:
			continue
		}
		if t, ok := r.failed[u]; ok && now.Sub(t) < resyncCooldown {
			continue
		}
		if len(r.queue) >= maxResyncQueue {
			break
		}
		r.state[u] = resyncQueued
		r.queue = append(r.queue, u)
	}
	start := min(len(r.queue), maxResyncWorkers-r.workers)
	r.workers += max(start, 0)
	r.mu.Unlock()
	for range start {
		if !a.goBackground(a.resyncWorker) {
			r.mu.Lock()
			r.workers--
			r.mu.Unlock()
		}
	}
}

// resyncWorker runs queued resyncs until the queue is empty.
func (a *API) resyncWorker(base context.Context) {
	r := &a.devLists
	for {
		r.mu.Lock()
		if len(r.queue) == 0 || base.Err() != nil {
			r.workers--
			r.mu.Unlock()
			return
		}
		u := r.queue[0]
		r.queue[0] = ""
		r.queue = r.queue[1:]
		r.state[u] = resyncRunning
		r.mu.Unlock()

		ctx, cancel := context.WithTimeout(base, resyncTimeout)
		err := a.resyncDeviceList(ctx, u)
		cancel()
		if err != nil && base.Err() == nil {
			slog.Info("fetching a remote device list failed", "user", u, "err", err)
		}

		r.mu.Lock()
		again := r.state[u] == resyncAgain
		if err != nil {
			if len(r.failed) >= maxResyncQueue {
				clear(r.failed)
			}
			r.failed[u] = time.Now()
		} else {
			delete(r.failed, u)
		}
		if again && len(r.queue) < maxResyncQueue {
			r.state[u] = resyncQueued
			r.queue = append(r.queue, u)
		} else {
			delete(r.state, u)
		}
		r.mu.Unlock()
	}
}

// userDevicesResponse is the answer of GET /user/devices/{userId}.
type userDevicesResponse struct {
	UserID   id.UserID `json:"user_id"`
	StreamID int64     `json:"stream_id"`
	Devices  []struct {
		DeviceID    id.DeviceID     `json:"device_id"`
		Keys        json.RawMessage `json:"keys"`
		DisplayName string          `json:"device_display_name"`
	} `json:"devices"`
	MasterKey      json.RawMessage `json:"master_key"`
	SelfSigningKey json.RawMessage `json:"self_signing_key"`
}

// resyncDeviceList fetches a remote user's device list from their server and
// stores it in the cache.
func (a *API) resyncDeviceList(ctx context.Context, userID id.UserID) error {
	gen, err := a.keys.BeginRemoteResync(ctx, userID)
	if err != nil {
		return err
	}
	var resp userDevicesResponse
	if err := a.client.MakeRequest(ctx, userID.Homeserver(), true, http.MethodGet,
		federation.URLPath{"v1", "user", "devices", string(userID)}, nil, &resp); err != nil {
		return fmt.Errorf("fetching devices of %s: %w", userID, err)
	}
	if resp.UserID != userID {
		return fmt.Errorf("devices of %s: the answer is about %q", userID, resp.UserID)
	}
	l := &e2ee.DeviceList{UserID: userID, StreamID: resp.StreamID, MasterKey: resp.MasterKey, SelfSigningKey: resp.SelfSigningKey,
		Devices: make([]e2ee.DeviceInfo, len(resp.Devices))}
	for i, d := range resp.Devices {
		l.Devices[i] = e2ee.DeviceInfo{DeviceID: d.DeviceID, DisplayName: d.DisplayName, Keys: d.Keys}
	}
	stored, err := a.keys.StoreRemoteDeviceList(ctx, l, gen)
	if err != nil {
		return err
	}
	if !stored {
		slog.Debug("remote device list changed while fetched", "user", userID)
	}
	return nil
}

// onLocalJoin tells the servers in a room a local user joined, that shared no
// other room with the user, about the user's devices (in the background).
func (a *API) onLocalJoin(j e2ee.LocalJoin) {
	a.goBackground(func(base context.Context) {
		ctx, cancel := context.WithTimeout(base, deviceUpdateTimeout)
		defer cancel()
		if err := a.sendDeviceListsOnJoin(ctx, j); err != nil && base.Err() == nil {
			slog.Warn("sending device lists after a join", "user", j.UserID, "room_id", j.RoomID, "err", err)
		}
	})
}

// sendDeviceListsOnJoin sends an m.device_list_update for each of the user's
// devices, and their cross-signing keys, to the servers in the room that do not
// share another room with the user (Server-Server API, "Device Management":
// updates are sent when the user joins a room with servers not already
// receiving updates for their device list). prev_id is empty: those servers
// know nothing of the list, and fetch it whole.
func (a *API) sendDeviceListsOnJoin(ctx context.Context, j e2ee.LocalJoin) error {
	inRoom, err := a.serversInRoom(ctx, j.RoomID)
	if err != nil {
		return err
	}
	known, err := a.serversSharingRoomsExcept(ctx, j.UserID, j.RoomID)
	if err != nil {
		return err
	}
	skip := make(map[string]struct{}, len(known)+1)
	skip[a.serverName] = struct{}{}
	for _, s := range known {
		skip[s] = struct{}{}
	}
	var dests []string
	for _, s := range inRoom {
		if _, ok := skip[s]; !ok {
			dests = append(dests, s)
		}
	}
	if len(dests) == 0 {
		return nil
	}
	l, err := a.keys.LocalDeviceList(ctx, j.UserID, nil)
	if err != nil {
		return fmt.Errorf("loading devices of %s: %w", j.UserID, err)
	}
	for _, d := range l.Devices {
		u := e2ee.RemoteDeviceUpdate{UserID: j.UserID, DeviceID: d.DeviceID, DisplayName: d.DisplayName,
			StreamID: l.StreamID, PrevID: []int64{}, Keys: d.Keys}
		if err := a.SendEDU(ctx, dests, eduDeviceList, u); err != nil {
			return err
		}
	}
	return a.sendSigningKeyUpdate(ctx, dests, l)
}

// goBackground runs fn in a goroutine that belongs to the sender: Stop waits
// for it, and base ends with it. It reports false, without running fn, once the
// sender has stopped.
func (a *API) goBackground(fn func(base context.Context)) bool {
	s := a.sender
	s.mu.Lock()
	base := s.ctx
	if base == nil {
		base = context.Background() // not started yet: the work is still done
	} else if base.Err() != nil {
		s.mu.Unlock()
		return false
	}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		fn(base)
	}()
	return true
}
