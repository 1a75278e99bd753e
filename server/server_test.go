package server

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"hearth/config"
	"hearth/httputil"
)

// startTestHTTP serves a Hearth HTTP face on 127.0.0.1 with one extra test route
// that decodes a JSON body.
func startTestHTTP(t *testing.T) string {
	t.Helper()
	cfg := config.Default()
	cfg.Listen.Client = "127.0.0.1:0"
	cfg.Listen.Federation = ""
	cfg.Limits.MaxRequestBodyBytes = 2048
	h := NewHTTP(cfg, prometheus.NewRegistry())
	h.Routers.Client.HandleFunc("/v3/test/echo", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Name string `json:"name"`
		}
		if err := httputil.DecodeJSON(r, &body); err != nil {
			httputil.RespondError(w, r, err)
			return
		}
		httputil.RespondJSON(w, 200, map[string]string{"name": body.Name})
	}).Methods(http.MethodPost)
	h.Routers.Client.HandleFunc("/v3/test/panic", func(w http.ResponseWriter, r *http.Request) {
		panic("boom")
	}).Methods(http.MethodGet)
	ls, err := h.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Shutdown(context.Background()) })
	return "http://" + ls.Client.String()
}

func do(t *testing.T, method, url, body string) (int, http.Header, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return resp.StatusCode, resp.Header, m
}

func TestErrorsAndRouting(t *testing.T) {
	base := startTestHTTP(t)
	cases := []struct {
		name, method, path, body string
		status                   int
		errcode                  string
	}{
		{"unknown path", "GET", "/_matrix/client/v3/nothing/here", "", 404, "M_UNRECOGNIZED"},
		{"unknown prefix", "GET", "/nowhere", "", 404, "M_UNRECOGNIZED"},
		{"unknown federation path", "GET", "/_matrix/federation/v1/nothing", "", 404, "M_UNRECOGNIZED"},
		{"wrong method", "DELETE", "/_matrix/client/v3/test/echo", "", 405, "M_UNRECOGNIZED"},
		{"wrong method on well-known", "POST", "/.well-known/matrix/client", "", 405, "M_UNRECOGNIZED"},
		{"wrong method on last route", "POST", "/_matrix/client/v3/test/panic", "", 405, "M_UNRECOGNIZED"},
		{"not json", "POST", "/_matrix/client/v3/test/echo", "{nope", 400, "M_NOT_JSON"},
		{"empty body", "POST", "/_matrix/client/v3/test/echo", "", 400, "M_NOT_JSON"},
		{"wrong type", "POST", "/_matrix/client/v3/test/echo", `{"name": 5}`, 400, "M_BAD_JSON"},
		{"too large", "POST", "/_matrix/client/v3/test/echo", `{"name":"` + strings.Repeat("a", 4096) + `"}`, 413, "M_TOO_LARGE"},
		{"panic", "GET", "/_matrix/client/v3/test/panic", "", 500, "M_UNKNOWN"},
		{"ok", "POST", "/_matrix/client/v3/test/echo", `{"name":"x"}`, 200, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, hdr, body := do(t, c.method, base+c.path, c.body)
			if status != c.status {
				t.Fatalf("status = %d, want %d (body %v)", status, c.status, body)
			}
			if hdr.Get("Content-Type") != "application/json" {
				t.Errorf("Content-Type = %q", hdr.Get("Content-Type"))
			}
			if hdr.Get("Access-Control-Allow-Origin") != "*" {
				t.Errorf("missing CORS header on %s", c.name)
			}
			if c.errcode != "" {
				if body["errcode"] != c.errcode || body["error"] == "" || body["error"] == nil {
					t.Fatalf("body = %v, want errcode %s and an error message", body, c.errcode)
				}
			}
		})
	}
}

func TestBodyLimitWithoutContentLength(t *testing.T) {
	base := startTestHTTP(t)
	// A chunked body (no Content-Length) over the limit is cut off while reading.
	pr, pw := io.Pipe()
	go func() {
		pw.Write([]byte(`{"name":"` + strings.Repeat("a", 5000) + `"}`))
		pw.Close()
	}()
	req, _ := http.NewRequest("POST", base+"/_matrix/client/v3/test/echo", pr)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Fatalf("status = %d, want 413", resp.StatusCode)
	}
}

func TestCORSPreflight(t *testing.T) {
	base := startTestHTTP(t)
	for _, path := range []string{"/_matrix/client/versions", "/_matrix/client/v3/anything"} {
		req, _ := http.NewRequest("OPTIONS", base+path, nil)
		req.Header.Set("Origin", "https://app.element.io")
		req.Header.Set("Access-Control-Request-Method", "POST")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Fatalf("%s: preflight status %d", path, resp.StatusCode)
		}
		h := resp.Header
		if h.Get("Access-Control-Allow-Origin") != "*" ||
			!strings.Contains(h.Get("Access-Control-Allow-Methods"), "PUT") ||
			!strings.Contains(h.Get("Access-Control-Allow-Headers"), "Authorization") {
			t.Fatalf("%s: CORS headers missing: %v", path, h)
		}
	}
}

func TestMetricsHistogram(t *testing.T) {
	base := startTestHTTP(t)
	do(t, "GET", base+"/.well-known/matrix/client", "")
	do(t, "GET", base+"/_matrix/client/v3/nothing", "")
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(b)
	for _, want := range []string{
		`hearth_http_request_duration_seconds_bucket{method="GET",route="/.well-known/matrix/client",le="0.001"}`,
		`hearth_http_request_duration_seconds_count{method="GET",route="/.well-known/matrix/client"} 1`,
		`hearth_http_requests_total{code="200",method="GET",route="/.well-known/matrix/client"} 1`,
		`hearth_http_requests_total{code="404",method="GET",route="unmatched"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func TestWellKnown(t *testing.T) {
	base := startTestHTTP(t)
	status, _, body := do(t, "GET", base+"/.well-known/matrix/client", "")
	hs, _ := body["m.homeserver"].(map[string]any)
	if status != 200 || hs["base_url"] != "http://localhost:8008" {
		t.Fatalf("client well-known: %d %v", status, body)
	}
	status, _, body = do(t, "GET", base+"/.well-known/matrix/server", "")
	if status != 200 || body["m.server"] != "localhost:8008" {
		t.Fatalf("server well-known: %d %v", status, body)
	}
}

// TestFederationPathsOnClientListener checks that the client listener serves the
// federation prefixes even when federation has its own listener (reverse proxies
// send federation there; Complement checks 405s on it).
func TestFederationPathsOnClientListener(t *testing.T) {
	cfg := config.Default()
	cfg.Listen.Client = "127.0.0.1:0"
	cfg.Listen.Federation = "127.0.0.1:0"
	h := NewHTTP(cfg, prometheus.NewRegistry())
	h.Routers.Federation.HandleFunc("/v1/version", func(w http.ResponseWriter, r *http.Request) {
		httputil.RespondJSON(w, 200, map[string]string{"ok": "yes"})
	}).Methods(http.MethodGet)
	ls, err := h.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Shutdown(context.Background()) })
	for _, base := range []string{"http://" + ls.Client.String(), "http://" + ls.Federation.String()} {
		for _, c := range []struct {
			method, path string
			status       int
		}{
			{"GET", "/_matrix/federation/v1/version", 200},
			{"PUT", "/_matrix/federation/v1/version", 405},
			{"GET", "/_matrix/federation/v1/unknown", 404},
			{"GET", "/_matrix/key/v2/unknown", 404},
		} {
			if status, _, body := do(t, c.method, base+c.path, ""); status != c.status {
				t.Errorf("%s %s%s = %d (%v), want %d", c.method, base, c.path, status, body, c.status)
			}
		}
	}
}
