// Package appservice is Hearth's side of the Application Service API: the
// registered services and their namespaces, the per-service transaction sender
// that pushes the events a service is interested in to
// PUT {url}/_matrix/app/v1/transactions/{txnId}, and the user and room alias
// queries. The client API uses it to let services act as their users
// (identity assertion, registration, ?ts=). Operator guide: docs/appservices.md.
package appservice

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"maunium.net/go/mautrix/id"

	"hearth/clientapi/accounts"
	"hearth/config"
	"hearth/roomserver"
	"hearth/storage"
)

// AppService is one registered application service.
type AppService struct {
	config.AppService
	sender id.UserID
	server string
}

// Sender is the service's own user, @sender_localpart:server_name.
func (as *AppService) Sender() id.UserID { return as.sender }

// IsInterestedInUser reports whether userID is the service's sender or in its
// user namespace (local users only: Application Service API, "Registration").
func (as *AppService) IsInterestedInUser(userID id.UserID) bool {
	return userID == as.sender || as.UserInNamespace(userID)
}

// UserInNamespace reports whether userID is a local user matching one of the
// service's user namespaces, exclusive or not.
func (as *AppService) UserInNamespace(userID id.UserID) bool {
	return userID.Homeserver() == as.server && matchAny(as.Users, string(userID)) != nil
}

// IsExclusiveUser reports whether the service claims userID exclusively: its
// sender, or a local user matching an exclusive user namespace.
func (as *AppService) IsExclusiveUser(userID id.UserID) bool {
	if userID == as.sender {
		return true
	}
	if userID.Homeserver() != as.server {
		return false
	}
	ns := matchAny(as.Users, string(userID))
	return ns != nil && ns.Exclusive
}

// AliasInNamespace reports whether alias matches one of the alias namespaces.
func (as *AppService) AliasInNamespace(alias id.RoomAlias) bool {
	return matchAny(as.Aliases, string(alias)) != nil
}

// IsExclusiveAlias reports whether the service claims alias exclusively.
func (as *AppService) IsExclusiveAlias(alias id.RoomAlias) bool {
	ns := matchAny(as.Aliases, string(alias))
	return ns != nil && ns.Exclusive
}

// RoomInNamespace reports whether roomID matches one of the room namespaces.
func (as *AppService) RoomInNamespace(roomID id.RoomID) bool {
	return matchAny(as.Rooms, string(roomID)) != nil
}

// AllowsAddr reports whether the as_token may be used from addr (Synapse's
// ip_range_whitelist; no list allows every address).
func (as *AppService) AllowsAddr(addr netip.Addr) bool {
	if len(as.IPRanges) == 0 {
		return true
	}
	addr = addr.Unmap()
	for _, p := range as.IPRanges {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// matchAny returns the first namespace s matches (Synapse takes the first too,
// so an earlier non-exclusive entry wins over a later exclusive one).
func matchAny(list []config.Namespace, s string) *config.Namespace {
	for i := range list {
		if list[i].Matches(s) {
			return &list[i]
		}
	}
	return nil
}

// Rooms is what the sender needs of the room engine.
type Rooms interface {
	AddListener(l roomserver.Listener)
	StreamPosition() int64
	EventsSince(ctx context.Context, from, to int64, limit int) ([]*roomserver.StoredEvent, error)
	Events(ctx context.Context, ids []id.EventID) ([]*roomserver.StoredEvent, error)
	Members(ctx context.Context, roomID id.RoomID, membership string) ([]id.UserID, error)
	ReplacedStateEvents(ctx context.Context, evs []*roomserver.StoredEvent) (map[int64]*roomserver.StoredEvent, error)
}

var _ Rooms = (*roomserver.Roomserver)(nil)

// RoomAliases lists the local aliases of a room (the client API's directory):
// a service is interested in every event of a room with an alias in its alias
// namespace.
type RoomAliases interface {
	LocalAliasesOfRoom(ctx context.Context, roomID id.RoomID) ([]id.RoomAlias, error)
}

// Options tune the service; zero values take the defaults.
type Options struct {
	// MinBackoff and MaxBackoff bound the exponential wait between attempts to
	// deliver a transaction to a service that is down (defaults 2s and 5m).
	MinBackoff, MaxBackoff time.Duration
	// TransactionTimeout bounds one PUT of a transaction (default 60s), and
	// QueryTimeout one user or alias query (default 10s, as a client waits).
	TransactionTimeout, QueryTimeout time.Duration
}

// Default timing of the sender and queries.
const (
	DefaultMinBackoff         = 2 * time.Second
	DefaultMaxBackoff         = 5 * time.Minute
	DefaultTransactionTimeout = 60 * time.Second
	DefaultQueryTimeout       = 10 * time.Second
)

// Service is the set of registered application services and their senders.
// A nil *Service has no application services.
type Service struct {
	db       *storage.DB
	rooms    Rooms
	accounts *accounts.Store
	opts     Options
	client   *http.Client

	list    []*AppService
	byToken map[[32]byte]*AppService
	byID    map[string]*AppService

	mu      sync.Mutex
	started bool
	workers []*worker
	stop    chan struct{}
	wg      sync.WaitGroup
}

// New builds the application services registered in cfg.AppServices. Nothing is
// sent before Start.
func New(cfg *config.Config, db *storage.DB, rooms Rooms, opts Options) (*Service, error) {
	if cfg == nil || db == nil || rooms == nil {
		return nil, errors.New("appservice: config, database and room engine are required")
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = DefaultMinBackoff
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(DefaultMaxBackoff, opts.MinBackoff)
	}
	if opts.TransactionTimeout <= 0 {
		opts.TransactionTimeout = DefaultTransactionTimeout
	}
	if opts.QueryTimeout <= 0 {
		opts.QueryTimeout = DefaultQueryTimeout
	}
	s := &Service{
		db: db, rooms: rooms, opts: opts,
		accounts: accounts.NewStore(db, cfg.ServerName),
		client:   newHTTPClient(),
		byToken:  make(map[[32]byte]*AppService, len(cfg.AppServices)),
		byID:     make(map[string]*AppService, len(cfg.AppServices)),
	}
	for _, c := range cfg.AppServices {
		as := &AppService{AppService: c, sender: id.NewUserID(c.SenderLocalpart, cfg.ServerName), server: cfg.ServerName}
		tok := sha256.Sum256([]byte(c.ASToken))
		if _, dup := s.byToken[tok]; dup {
			return nil, fmt.Errorf("application services: as_token of %q is not unique", c.ID)
		}
		if _, dup := s.byID[c.ID]; dup {
			return nil, fmt.Errorf("application services: id %q is not unique", c.ID)
		}
		s.byToken[tok], s.byID[c.ID] = as, as
		s.list = append(s.list, as)
	}
	return s, nil
}

// All returns the registered services.
func (s *Service) All() []*AppService {
	if s == nil {
		return nil
	}
	return s.list
}

// ByToken returns the service whose as_token is tok, or nil. Tokens are compared
// by their SHA-256, so the lookup's timing says nothing about the token.
func (s *Service) ByToken(tok string) *AppService {
	if s == nil || len(s.list) == 0 {
		return nil
	}
	return s.byToken[sha256.Sum256([]byte(tok))]
}

// ByID returns the service with the given id, or nil.
func (s *Service) ByID(asID string) *AppService {
	if s == nil {
		return nil
	}
	return s.byID[asID]
}

// ExclusiveUserOwner returns a service that claims userID exclusively, or nil.
func (s *Service) ExclusiveUserOwner(userID id.UserID) *AppService {
	for _, as := range s.All() {
		if as.IsExclusiveUser(userID) {
			return as
		}
	}
	return nil
}

// ExclusiveAliasOwner returns a service that claims alias exclusively, or nil.
func (s *Service) ExclusiveAliasOwner(alias id.RoomAlias) *AppService {
	for _, as := range s.All() {
		if as.IsExclusiveAlias(alias) {
			return as
		}
	}
	return nil
}

// Start creates the services' sender users where missing and starts one
// transaction sender per service that has a URL. aliases may be nil (then alias
// namespaces do not make rooms interesting).
func (s *Service) Start(ctx context.Context, aliases RoomAliases) error {
	if s == nil || len(s.list) == 0 {
		return nil
	}
	for _, as := range s.list {
		if err := s.ensureSender(ctx, as); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("appservice: already started")
	}
	s.started = true
	s.stop = make(chan struct{})
	for _, as := range s.list {
		if as.URL == "" {
			slog.InfoContext(ctx, "application service has no URL; nothing will be pushed to it", "appservice", as.ID)
			continue
		}
		w, err := s.newWorker(ctx, as, aliases)
		if err != nil {
			s.stop = nil
			return err
		}
		s.workers = append(s.workers, w)
	}
	workers := s.workers
	s.rooms.AddListener(func(roomserver.OutputEvent) {
		for _, w := range workers {
			w.poke()
		}
	})
	for _, w := range workers {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			w.run(s.stop)
		}()
	}
	slog.InfoContext(ctx, "application services started", "count", len(s.list), "senders", len(workers))
	return nil
}

// Stop stops the senders and waits for them. Queued transactions stay in the
// database and are sent after the next start.
func (s *Service) Stop() {
	if s == nil {
		return
	}
	s.mu.Lock()
	stop := s.stop
	s.stop = nil
	s.mu.Unlock()
	if stop == nil {
		return
	}
	close(stop)
	s.wg.Wait()
}

// ensureSender creates the service's sender account (no password) unless it
// exists, so that profile, account data and the rest work for it as for any
// user (Dendrite does the same; Synapse treats the sender as a phantom user).
func (s *Service) ensureSender(ctx context.Context, as *AppService) error {
	ok, err := s.accounts.Exists(ctx, as.SenderLocalpart)
	if err != nil {
		return fmt.Errorf("checking sender of application service %s: %w", as.ID, err)
	}
	if ok {
		return nil
	}
	err = s.accounts.CreateAccount(ctx, accounts.NewAccount{Localpart: as.SenderLocalpart})
	if errors.Is(err, accounts.ErrInvalidUsername) {
		// Synapse accepts localparts Hearth will not create accounts for (upper
		// case); the sender then acts without an account, as in Synapse.
		slog.WarnContext(ctx, "application service sender has no account: its localpart is not allowed for new accounts",
			"appservice", as.ID, "sender", as.sender, "err", err)
		return nil
	}
	if err != nil && !errors.Is(err, accounts.ErrUserInUse) {
		return fmt.Errorf("creating sender %s of application service %s: %w", as.sender, as.ID, err)
	}
	return nil
}
