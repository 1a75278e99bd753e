package appservice

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"maunium.net/go/mautrix/id"
)

// newHTTPClient is the client for requests to application services. They are
// configured by the operator and usually on localhost or a private network, so
// unlike federation the SSRF deny list does not apply; every request carries
// its own deadline (Options).
func newHTTPClient() *http.Client {
	t := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 0, // bounded by the request context
	}
	return &http.Client{Transport: t}
}

// maxResponseBytes caps how much of a service's answer is read.
const maxResponseBytes = 64 << 10

// StatusError is a service's answer with a status other than 2xx.
type StatusError struct {
	Status int
	// Body is the start of the response body.
	Body string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("application service answered %d: %.200s", e.Status, e.Body)
}

// do sends one request to as with its hs_token (Application Service API,
// "Authorisation": the Authorization header) and returns the body of a 2xx
// answer, or a *StatusError, or the transport error.
func (s *Service) do(ctx context.Context, as *AppService, method, path string, body []byte, timeout time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, as.URL+path, rd)
	if err != nil {
		return nil, fmt.Errorf("building request to application service %s: %w", as.ID, err)
	}
	req.Header.Set("Authorization", "Bearer "+as.HSToken)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return nil, fmt.Errorf("reading answer of application service %s: %w", as.ID, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, &StatusError{Status: resp.StatusCode, Body: string(b)}
	}
	return b, nil
}

// sendTransaction PUTs one transaction (Application Service API, PUT
// /_matrix/app/v1/transactions/{txnId}).
func (s *Service) sendTransaction(ctx context.Context, as *AppService, txnID int64, body []byte) error {
	_, err := s.do(ctx, as, http.MethodPut, "/_matrix/app/v1/transactions/"+strconv.FormatInt(txnID, 10), body, s.opts.TransactionTimeout)
	return err
}

// QueryUser asks the services whose user namespace holds userID whether it
// exists (GET /_matrix/app/v1/users/{userId}); a service that says yes should
// have registered the user by the time it answers. It reports whether one did.
func (s *Service) QueryUser(ctx context.Context, userID id.UserID) bool {
	for _, as := range s.All() {
		if as.URL == "" || !as.UserInNamespace(userID) {
			continue
		}
		_, err := s.do(ctx, as, http.MethodGet, "/_matrix/app/v1/users/"+url.PathEscape(string(userID)), nil, s.opts.QueryTimeout)
		if err == nil {
			return true
		}
		logQueryErr(ctx, as, "user", string(userID), err)
	}
	return false
}

// QueryAlias asks the services whose alias namespace holds alias whether it
// exists (GET /_matrix/app/v1/rooms/{roomAlias}); a service that says yes has
// created the room and the alias by the time it answers. It reports whether one
// did.
func (s *Service) QueryAlias(ctx context.Context, alias id.RoomAlias) bool {
	for _, as := range s.All() {
		if as.URL == "" || !as.AliasInNamespace(alias) {
			continue
		}
		_, err := s.do(ctx, as, http.MethodGet, "/_matrix/app/v1/rooms/"+url.PathEscape(string(alias)), nil, s.opts.QueryTimeout)
		if err == nil {
			return true
		}
		logQueryErr(ctx, as, "alias", string(alias), err)
	}
	return false
}

func logQueryErr(ctx context.Context, as *AppService, kind, what string, err error) {
	var se *StatusError
	if errors.As(err, &se) && se.Status == http.StatusNotFound {
		return // the service does not know it: the ordinary "no"
	}
	slog.WarnContext(ctx, "querying application service", "appservice", as.ID, kind, what, "err", err)
}

// ErrNoURL is Ping's answer for a service registered with url: null.
var ErrNoURL = errors.New("application service has no URL")

// Ping calls POST /_matrix/app/v1/ping on the service with the transaction ID
// the service chose, and returns how long the round trip took. A non-2xx
// answer is a *StatusError; anything else is a connection failure.
func (s *Service) Ping(ctx context.Context, as *AppService, txnID *string) (time.Duration, error) {
	if as.URL == "" {
		return 0, ErrNoURL
	}
	body := []byte(`{}`)
	if txnID != nil {
		var err error
		if body, err = json.Marshal(map[string]string{"transaction_id": *txnID}); err != nil {
			return 0, err
		}
	}
	start := time.Now()
	_, err := s.do(ctx, as, http.MethodPost, "/_matrix/app/v1/ping", body, s.opts.QueryTimeout)
	return time.Since(start), err
}
