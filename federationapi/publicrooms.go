package federationapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"

	"hearth/httputil"
)

// PublicRoomsProvider lists this server's published rooms (Server-Server API,
// "Public Room Directory"). The client API implements it.
type PublicRoomsProvider interface {
	// PublicRooms answers a request body of POST /publicRooms (the client-server
	// and server-server APIs share its shape) with the response body.
	PublicRooms(ctx context.Context, request []byte) ([]byte, error)
}

// maxPublicRoomsBody bounds a POST /publicRooms body.
const maxPublicRoomsBody = 64 << 10

// RegisterPublicRooms serves GET and POST /_matrix/federation/v1/publicRooms
// from p (components created after the federation API register it themselves).
func (a *API) RegisterPublicRooms(r httputil.Routers, p PublicRoomsProvider) {
	pr := publicRoomsHandler{p}
	r.Federation.HandleFunc("/v1/publicRooms", a.authed(pr.get)).Methods(http.MethodGet)
	r.Federation.HandleFunc("/v1/publicRooms", a.authed(pr.post)).Methods(http.MethodPost)
}

type publicRoomsHandler struct{ p PublicRoomsProvider }

// GET /_matrix/federation/v1/publicRooms?limit=&since=&include_all_networks=&third_party_instance_id=
func (h publicRoomsHandler) get(w http.ResponseWriter, r *http.Request, origin string) error {
	q := r.URL.Query()
	req := map[string]any{}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return httputil.InvalidParam("limit must be a non-negative integer")
		}
		req["limit"] = n
	}
	if s := q.Get("since"); s != "" {
		req["since"] = s
	}
	if s := q.Get("include_all_networks"); s != "" {
		req["include_all_networks"] = s == "true"
	}
	if s := q.Get("third_party_instance_id"); s != "" {
		req["third_party_instance_id"] = s
	}
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	return h.answer(w, r, body)
}

// POST /_matrix/federation/v1/publicRooms
func (h publicRoomsHandler) post(w http.ResponseWriter, r *http.Request, origin string) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxPublicRoomsBody+1))
	if err != nil {
		return httputil.BadJSON("Could not read request body")
	}
	if len(body) > maxPublicRoomsBody {
		return httputil.TooLarge("Request body too large")
	}
	if !json.Valid(body) {
		return httputil.NotJSON("Request body is not valid JSON")
	}
	return h.answer(w, r, body)
}

func (h publicRoomsHandler) answer(w http.ResponseWriter, r *http.Request, body []byte) error {
	resp, err := h.p.PublicRooms(r.Context(), body)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(resp) // a failed write means the peer has gone
	return nil
}
