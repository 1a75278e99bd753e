package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"hearth/clientapi"
	"hearth/config"
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

	if h.ClientAPI, err = clientapi.New(cfg, db, clientapi.Options{}); err != nil {
		db.Close()
		return nil, fmt.Errorf("starting client API: %w", err)
	}
	h.ClientAPI.Register(h.HTTP.Routers)

	if h.Listeners, err = h.HTTP.Start(); err != nil {
		db.Close()
		return nil, err
	}
	return h, nil
}

// Stop shuts the listeners down gracefully, then closes the database.
func (h *Hearth) Stop(ctx context.Context) error {
	return errors.Join(h.HTTP.Shutdown(ctx), h.DB.Close())
}
