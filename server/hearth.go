package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"maunium.net/go/mautrix/id"

	"hearth/appservice"
	"hearth/clientapi"
	"hearth/clientapi/accounts"
	"hearth/clientapi/e2ee"
	"hearth/config"
	"hearth/federationapi"
	"hearth/mediaapi"
	"hearth/roomserver"
	"hearth/storage"
)

// Hearth is a running homeserver: its database, components and listeners.
type Hearth struct {
	Config    *config.Config
	DB        *storage.DB
	Key       *config.SigningKey
	HTTP      *HTTP
	Registry  *prometheus.Registry
	Listeners Listeners
	// ClientAPI is the client-server API component.
	ClientAPI *clientapi.API
	// Roomserver is the room engine and event store.
	Roomserver *roomserver.Roomserver
	// Keys is the end-to-end encryption module (device keys, to-device
	// messages, cross-signing, key backup).
	Keys *e2ee.Service
	// Media is the media repository.
	Media *mediaapi.API
	// Federation is the server-server API (nil when federation.enabled is off).
	Federation *federationapi.API
	// Sync is the /sync machinery (notifier, in-memory indexes, ephemeral
	// streams) the client API serves /sync with.
	Sync *clientapi.Syncer
	// AppServices are the registered application services and their
	// transaction senders (docs/appservices.md).
	AppServices *appservice.Service
}

// Start opens the database, builds every component and starts listening.
func Start(ctx context.Context, cfg *config.Config) (*Hearth, error) {
	key, err := config.ReadSigningKey(cfg.Resolve(cfg.SigningKeyPath))
	if err != nil {
		return nil, err
	}
	db, err := storage.Open(ctx, cfg.DatabaseDSN())
	if err != nil {
		return nil, fmt.Errorf("opening database: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	h := &Hearth{Config: cfg, DB: db, Key: key, Registry: reg}
	h.HTTP = NewHTTP(cfg, reg)

	if h.Roomserver, err = roomserver.New(ctx, db, cfg.ServerName, key); err != nil {
		db.Close()
		return nil, fmt.Errorf("starting room engine: %w", err)
	}

	if h.Keys, err = e2ee.New(ctx, db, cfg.ServerName, h.Roomserver); err != nil {
		db.Close()
		return nil, fmt.Errorf("starting E2EE module: %w", err)
	}

	// Federation: the server-server API, and the client API's way to other servers.
	var (
		remoteJoiner  clientapi.RemoteJoiner
		remoteInviter clientapi.RemoteInviter
		remoteAliases clientapi.RemoteAliasResolver
		backfiller    clientapi.Backfiller
		timestamps    clientapi.RemoteTimestamps
		// End-to-end encryption across servers.
		remoteKeys     clientapi.RemoteKeys
		remoteToDevice clientapi.RemoteToDevice
		// Spaces on other servers (GET /hierarchy).
		remoteHierarchy clientapi.RemoteHierarchy
		remoteKnocker   clientapi.RemoteKnocker
		// Rejecting invites from rooms this server is not in; remote profiles.
		remoteRejecter clientapi.RemoteInviteRejecter
		remoteProfiles clientapi.RemoteProfiles
	)
	if cfg.Federation.Enabled {
		profiles := federationProfiles{accounts.NewStore(db, cfg.ServerName)}
		fedOpts := federationapi.Options{Profiles: profiles, Invites: clientapi.NewInvitePermissions(profiles.store)}
		if h.Federation, err = federationapi.New(cfg, db, key, h.Roomserver, fedOpts); err != nil {
			db.Close()
			return nil, fmt.Errorf("starting federation API: %w", err)
		}
		h.Federation.Register(h.HTTP.Routers)
		remoteJoiner, remoteInviter, remoteAliases = h.Federation, h.Federation, h.Federation
		backfiller, timestamps = h.Federation, h.Federation
		remoteHierarchy, remoteKnocker = h.Federation, h.Federation
		remoteRejecter, remoteProfiles = h.Federation, h.Federation
		// Key queries, claims, to-device messages and device lists across servers.
		h.Federation.EnableE2EE(h.HTTP.Routers, h.Keys)
		remoteKeys, remoteToDevice = h.Federation, h.Federation
	}
	if cfg.Listen.Federation != "" {
		if h.HTTP.FederationTLS, err = federationapi.ListenerTLSConfig(cfg); err != nil {
			db.Close()
			return nil, err
		}
	}

	if h.Sync, err = clientapi.NewSyncer(ctx, db, h.Roomserver, clientapi.SyncOptions{}); err != nil {
		db.Close()
		return nil, fmt.Errorf("starting sync: %w", err)
	}
	if h.Federation != nil {
		// Invites from other servers to rooms this server is not in.
		h.Sync.SetRemoteInvites(federationInvites{h.Federation})
		h.Federation.OnInvite(func(inv federationapi.Invite) { h.Sync.RemoteInvitesChanged(inv.Invitee) })
		// Leaves from rooms this server is not in (rejected or rescinded
		// invites, retracted knocks) show in the leave section.
		h.Federation.OnRemoteLeave(func(l federationapi.RemoteLeave) { h.Sync.RemoteLeft(l.UserID, l.EventID) })
		// Typing notifications and read receipts across servers.
		h.Federation.EnableEphemeral(h.Sync)
		h.Sync.SetEphemeralHooks(federationEphemeralHooks(h.Federation))
		// Presence across servers (m.presence EDUs).
		h.Federation.EnablePresence(federationPresence{h.Sync})
		h.Sync.SetPresenceHook(func(ctx context.Context, updates []clientapi.PresenceUpdate) {
			fu := make([]federationapi.PresenceUpdate, len(updates))
			for i, u := range updates {
				fu[i] = federationapi.PresenceUpdate(u)
			}
			if err := h.Federation.SendPresence(ctx, fu); err != nil {
				slog.WarnContext(ctx, "sending presence to other servers", "err", err)
			}
		})
	}
	// Application services: registrations (the client API authenticates their
	// as_tokens) and one transaction sender each, started below.
	if len(cfg.AppServiceConfigFiles) > 0 && cfg.AppServices == nil {
		if err := cfg.LoadAppServices(); err != nil {
			db.Close()
			return nil, err
		}
	}
	if h.AppServices, err = appservice.New(cfg, db, h.Roomserver, appservice.Options{}); err != nil {
		db.Close()
		return nil, fmt.Errorf("loading application services: %w", err)
	}
	roomMembership := clientapi.NewRoomMembership(h.Roomserver)
	if h.ClientAPI, err = clientapi.New(cfg, db, clientapi.Options{Keys: h.Keys, DeviceKeys: h.Keys, AppServices: h.AppServices,
		Roomserver: h.Roomserver, Membership: roomMembership, Rooms: roomMembership,
		RemoteJoiner: remoteJoiner, RemoteInviter: remoteInviter, RemoteAliases: remoteAliases,
		Backfiller: backfiller, RemoteTimestamps: timestamps, RemoteHierarchy: remoteHierarchy, RemoteKnocker: remoteKnocker,
		RemoteInviteRejecter: remoteRejecter, RemoteProfiles: remoteProfiles,
		RemoteKeys: remoteKeys, RemoteToDevice: remoteToDevice,
		Sync: h.Sync}); err != nil {
		db.Close()
		return nil, fmt.Errorf("starting client API: %w", err)
	}
	h.ClientAPI.Register(h.HTTP.Routers)
	// Register starts background work (delayed events); a failed start stops it.
	started := false
	defer func() {
		if !started {
			h.ClientAPI.Close()
		}
	}()
	if h.Federation != nil {
		// Other servers resolve this server's aliases (GET /query/directory).
		h.Federation.SetDirectory(federationDirectory{h.ClientAPI})
		h.Federation.RegisterPublicRooms(h.HTTP.Routers, h.ClientAPI)
	}

	mediaAuth := func(r *http.Request) (mediaapi.Requester, error) {
		d, err := h.ClientAPI.Authenticate(r)
		if err != nil {
			return mediaapi.Requester{}, err
		}
		return mediaapi.Requester{UserID: d.UserID, IsGuest: d.IsGuest}, nil
	}
	if h.Media, err = mediaapi.New(cfg, db, key, mediaAuth, reg); err != nil {
		db.Close()
		return nil, fmt.Errorf("starting media repository: %w", err)
	}
	h.Media.Register(h.HTTP.Routers)
	// Before the listeners: a service's first stream position is "now", and no
	// request may send an event before it is taken.
	if err := h.AppServices.Start(ctx, h.ClientAPI); err != nil {
		h.Media.Close()
		db.Close()
		return nil, fmt.Errorf("starting application services: %w", err)
	}

	if h.Listeners, err = h.HTTP.Start(); err != nil {
		h.AppServices.Stop()
		h.Media.Close()
		db.Close()
		return nil, err
	}
	if h.Federation != nil {
		if err := h.Federation.Start(ctx); err != nil {
			_ = h.HTTP.Shutdown(ctx)
			h.AppServices.Stop()
			h.Media.Close()
			db.Close()
			return nil, fmt.Errorf("starting federation sender: %w", err)
		}
	}
	started = true
	return h, nil
}

// Stop shuts the listeners down gracefully, then closes the database.
func (h *Hearth) Stop(ctx context.Context) error {
	if h.Sync != nil {
		h.Sync.Close() // answers waiting /sync requests at once
	}
	if h.ClientAPI != nil {
		h.ClientAPI.Close() // delayed events, push delivery
	}
	err := h.HTTP.Shutdown(ctx)
	if h.Federation != nil {
		h.Federation.Stop()
	}
	h.AppServices.Stop() // queued transactions stay in the database
	if h.Media != nil {
		err = errors.Join(err, h.Media.Close())
	}
	return errors.Join(err, h.DB.Close())
}

// federationProfiles answers the federation API's profile queries from the
// account store.
type federationProfiles struct{ store *accounts.Store }

// LocalProfile implements federationapi.ProfileProvider.
func (p federationProfiles) LocalProfile(ctx context.Context, userID id.UserID) (map[string]json.RawMessage, error) {
	prof, err := p.store.Profile(ctx, userID.Localpart())
	if errors.Is(err, accounts.ErrNotFound) {
		return nil, federationapi.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return prof.Object(), nil
}

// federationDirectory answers the federation API's alias queries from the
// client API's alias table.
type federationDirectory struct{ c *clientapi.API }

// ResolveLocalAlias implements federationapi.DirectoryProvider.
func (d federationDirectory) ResolveLocalAlias(ctx context.Context, alias id.RoomAlias) (id.RoomID, error) {
	rid, err := d.c.LocalAliasRoom(ctx, alias)
	if errors.Is(err, clientapi.ErrAliasNotFound) {
		return "", federationapi.ErrNotFound
	}
	return rid, err
}

// federationInvites hands the federation API's pending invites to /sync.
type federationInvites struct{ f *federationapi.API }

// PendingInvites implements clientapi.RemoteInvites.
func (fi federationInvites) PendingInvites(ctx context.Context, userID id.UserID) ([]clientapi.RemoteInvite, error) {
	invs, err := fi.f.PendingInvites(ctx, userID)
	if err != nil {
		return nil, err
	}
	out := make([]clientapi.RemoteInvite, len(invs))
	for i, inv := range invs {
		out[i] = clientapi.RemoteInvite{RoomID: inv.RoomID, EventID: inv.EventID, Sender: inv.Sender, Event: inv.Event, InviteRoomState: inv.InviteRoomState}
	}
	return out, nil
}

// PendingKnocks implements clientapi.RemoteKnocks: local users' knocks on rooms
// of other servers, for /sync.
func (fi federationInvites) PendingKnocks(ctx context.Context, userID id.UserID) ([]clientapi.RemoteKnock, error) {
	ks, err := fi.f.PendingKnocks(ctx, userID)
	if err != nil {
		return nil, err
	}
	out := make([]clientapi.RemoteKnock, len(ks))
	for i, k := range ks {
		out[i] = clientapi.RemoteKnock{RoomID: k.RoomID, EventID: k.EventID, Event: k.Event, KnockRoomState: k.KnockRoomState}
	}
	return out, nil
}

// RemoteLeaves implements clientapi.RemoteLeaves: local users' leaves from
// rooms of other servers this server is not in, for /sync.
func (fi federationInvites) RemoteLeaves(ctx context.Context, userID id.UserID) ([]clientapi.RemoteLeave, error) {
	ls, err := fi.f.RemoteLeaves(ctx, userID)
	if err != nil {
		return nil, err
	}
	out := make([]clientapi.RemoteLeave, len(ls))
	for i, l := range ls {
		out[i] = clientapi.RemoteLeave{RoomID: l.RoomID, RoomVersion: l.RoomVersion, EventID: l.EventID, Event: l.Event}
	}
	return out, nil
}

// federationEphemeralHooks sends local users' typing and read receipts to the
// other servers in the room.
func federationEphemeralHooks(f *federationapi.API) clientapi.EphemeralHooks {
	return clientapi.EphemeralHooks{
		Typing: func(ctx context.Context, roomID id.RoomID, userID id.UserID, typing bool) {
			if err := f.SendTyping(ctx, roomID, userID, typing); err != nil {
				slog.WarnContext(ctx, "sending typing notification to other servers", "room_id", roomID, "err", err)
			}
		},
		Receipt: func(ctx context.Context, roomID id.RoomID, userID id.UserID, eventID id.EventID, thread string, ts int64) {
			if err := f.SendReceipt(ctx, roomID, userID, eventID, thread, ts); err != nil {
				slog.WarnContext(ctx, "sending read receipt to other servers", "room_id", roomID, "err", err)
			}
		},
	}
}

// federationPresence hands remote users' presence from m.presence EDUs to /sync.
type federationPresence struct{ s *clientapi.Syncer }

// PutRemotePresence implements federationapi.PresenceSink.
func (p federationPresence) PutRemotePresence(ctx context.Context, u federationapi.PresenceUpdate) error {
	return p.s.PutRemotePresence(ctx, clientapi.PresenceUpdate(u))
}
