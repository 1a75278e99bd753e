// Package e2ee stores and routes what end-to-end encryption needs from a
// homeserver (Client-Server API, "End-to-End Encryption"): device identity keys,
// one-time and fallback keys, cross-signing keys and signatures, to-device
// messages, device-list change tracking, server-side key backups and dehydrated
// devices (MSC3814). It never sees plaintext.
//
// Almost everything here is about local users. The client API's handlers call
// it for local users and a federation collaborator for remote ones; the
// federation API calls the same exported methods (QueryLocalKeys,
// ClaimLocalKeys, DeliverToDevice, LocalDeviceList) to answer remote servers,
// Subscribe and OnLocalJoin to learn of device-list changes to send out, and
// the remote device-list cache's (remotedevices.go) to keep remote users'
// devices, which /keys/query then answers from.
package e2ee

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	"maunium.net/go/mautrix/id"

	"hearth/roomserver"
	"hearth/storage"
)

// Rooms is what device-list tracking needs from the room engine.
type Rooms interface {
	// UsersSharingRoom returns those of candidates joined to a room userID is
	// joined to.
	UsersSharingRoom(ctx context.Context, userID id.UserID, candidates []id.UserID) ([]id.UserID, error)
	// MembershipChangesSince lists membership changes in (from, to] of the room
	// stream, in rooms where userID has a membership.
	MembershipChangesSince(ctx context.Context, userID id.UserID, from, to int64) ([]roomserver.MembershipChange, error)
	// Members lists the users with the given membership of a room.
	Members(ctx context.Context, roomID id.RoomID, membership string) ([]id.UserID, error)
	// Events loads events by ID (unknown ones are left out).
	Events(ctx context.Context, ids []id.EventID) ([]*roomserver.StoredEvent, error)
	// AddListener registers a function called after each new room event.
	AddListener(l roomserver.Listener)
}

var _ Rooms = (*roomserver.Roomserver)(nil)

// ChangeKind says what a Change is about.
type ChangeKind uint8

const (
	// ToDeviceChange: new to-device messages wait for Users.
	ToDeviceChange ChangeKind = iota + 1
	// DeviceListChange: User's device list (device keys, cross-signing keys or
	// signatures) changed; Devices lists the devices concerned, if known.
	DeviceListChange
)

// Change is told to subscribers after a commit that affects /sync or remote
// servers. Subscribers are called synchronously and must be quick.
type Change struct {
	Kind ChangeKind
	// Pos is the E2EE stream position of the change.
	Pos int64
	// Users are the recipients of to-device messages (ToDeviceChange).
	Users []id.UserID
	// User is the user whose device list changed (DeviceListChange). It is a
	// remote user after RemoteDeviceListChanged: only local users' changes are
	// for sending to other servers.
	User id.UserID
	// Devices are the devices added, updated or deleted (DeviceListChange);
	// empty when only cross-signing keys or signatures changed.
	Devices []id.DeviceID
	// Deleted is set when Devices were deleted.
	Deleted bool
	// PrevPos is User's previous device-list position (0 if none): the prev_id
	// of a federation m.device_list_update.
	PrevPos int64
}

// Service is the end-to-end encryption store and logic.
type Service struct {
	db         *storage.DB
	serverName string
	rooms      Rooms

	// pos is the highest committed E2EE stream position.
	pos atomic.Int64

	subsMu sync.RWMutex
	subs   []func(Change)
	joinFn []func(LocalJoin)

	// watch follows membership changes for the remote device-list cache.
	watch roomWatch
}

// New creates the service over db for the local server serverName. rooms may be
// nil (device lists then ignore room membership).
func New(ctx context.Context, db *storage.DB, serverName string, rooms Rooms) (*Service, error) {
	if db == nil || serverName == "" {
		return nil, errors.New("e2ee: database and server name are required")
	}
	s := &Service{db: db, serverName: serverName, rooms: rooms}
	var pos int64
	if err := db.QueryRow(ctx, `SELECT pos FROM e2ee_stream WHERE id = 0`).Scan(&pos); err != nil {
		return nil, fmt.Errorf("reading E2EE stream position: %w", err)
	}
	s.pos.Store(pos)
	if rooms != nil {
		rooms.AddListener(s.onRoomEvent)
	}
	return s, nil
}

// ServerName is the local server's name.
func (s *Service) ServerName() string { return s.serverName }

// IsLocal reports whether userID belongs to this server.
func (s *Service) IsLocal(userID id.UserID) bool {
	return userID.Homeserver() == s.serverName
}

// Position is the current E2EE stream position: every change at or below it is
// committed.
func (s *Service) Position() int64 { return s.pos.Load() }

// Subscribe registers fn to be told about every change after it commits.
func (s *Service) Subscribe(fn func(Change)) {
	s.subsMu.Lock()
	s.subs = append(s.subs, fn)
	s.subsMu.Unlock()
}

// committed records that positions up to pos are committed and tells the
// subscribers about changes.
func (s *Service) committed(pos int64, changes ...Change) {
	for {
		cur := s.pos.Load()
		if pos <= cur || s.pos.CompareAndSwap(cur, pos) {
			break
		}
	}
	if len(changes) == 0 {
		return
	}
	s.subsMu.RLock()
	subs := s.subs
	s.subsMu.RUnlock()
	for _, c := range changes {
		for _, fn := range subs {
			fn(c)
		}
	}
}

// takePositions reserves n consecutive stream positions inside tx and returns the
// last; the first is last-n+1. The row lock it takes is held until tx ends, so
// positions commit in order.
func takePositions(ctx context.Context, tx *storage.Tx, n int) (int64, error) {
	var last int64
	if err := tx.QueryRow(ctx, `UPDATE e2ee_stream SET pos = pos + $1 WHERE id = 0 RETURNING pos`, n).Scan(&last); err != nil {
		return 0, fmt.Errorf("advancing E2EE stream: %w", err)
	}
	return last, nil
}

// markDeviceListChanged gives userID's device list a new stream position inside
// tx, returning the change to announce once tx commits.
func markDeviceListChanged(ctx context.Context, tx *storage.Tx, userID id.UserID, devices []id.DeviceID, deleted bool) (Change, error) {
	pos, err := takePositions(ctx, tx, 1)
	if err != nil {
		return Change{}, err
	}
	var prev int64
	err = tx.QueryRow(ctx, `SELECT pos FROM device_list_positions WHERE user_id = $1`, string(userID)).Scan(&prev)
	if err != nil && !isNoRows(err) {
		return Change{}, fmt.Errorf("reading device-list position of %s: %w", userID, err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO device_list_positions (user_id, pos) VALUES ($1, $2)
		ON CONFLICT (user_id) DO UPDATE SET pos = excluded.pos`, string(userID), pos); err != nil {
		return Change{}, fmt.Errorf("recording device-list change of %s: %w", userID, err)
	}
	return Change{Kind: DeviceListChange, Pos: pos, User: userID, Devices: devices, Deleted: deleted, PrevPos: prev}, nil
}

// localpart is the localpart of a user ID ("" if malformed).
func localpart(userID id.UserID) string {
	s := string(userID)
	if len(s) < 2 || s[0] != '@' {
		return ""
	}
	lp, _, _ := strings.Cut(s[1:], ":")
	return lp
}

func logErr(ctx context.Context, msg string, err error, args ...any) {
	if err != nil {
		slog.ErrorContext(ctx, msg, append(args, "err", err)...)
	}
}

// txNotes collects, during a transaction, the stream positions it took and the
// changes to announce once it commits.
type txNotes struct {
	pos     int64
	changes []Change
}

// take reserves n stream positions, returning the first.
func (n *txNotes) take(ctx context.Context, tx *storage.Tx, k int) (int64, error) {
	last, err := takePositions(ctx, tx, k)
	if err != nil {
		return 0, err
	}
	n.pos = max(n.pos, last)
	return last - int64(k) + 1, nil
}

// deviceListChanged records a device-list change of userID.
func (n *txNotes) deviceListChanged(ctx context.Context, tx *storage.Tx, userID id.UserID, devices []id.DeviceID, deleted bool) error {
	c, err := markDeviceListChanged(ctx, tx, userID, devices, deleted)
	if err != nil {
		return err
	}
	n.pos = max(n.pos, c.Pos)
	n.changes = append(n.changes, c)
	return nil
}

// withTx runs fn in a write transaction and, once it commits, publishes the
// positions it took and announces its changes.
func (s *Service) withTx(ctx context.Context, fn func(tx *storage.Tx, n *txNotes) error) error {
	var n txNotes
	if err := s.db.WithTx(ctx, func(tx *storage.Tx) error { return fn(tx, &n) }); err != nil {
		return err
	}
	if n.pos > 0 {
		s.committed(n.pos, n.changes...)
	}
	return nil
}
