package mediaapi_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image/color"
	"image/png"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mau.fi/util/exhttp"
	"maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"hearth/config"
	"hearth/internal/testserver"
	"hearth/mediaapi"
	"hearth/storage/storagetest"
)

// fedNet carries federation requests between test servers over plain HTTP: each
// server name maps to the listener serving its federation API. Connections are
// dialled through the calling server's DialFederation, so its address filter
// (federation.allowed_cidrs/denied_cidrs) applies as in production.
type fedNet struct {
	mu    sync.Mutex
	addrs map[string]string
	keys  map[string]*config.SigningKey
}

func newFedNet() *fedNet {
	return &fedNet{addrs: map[string]string{}, keys: map[string]*config.SigningKey{}}
}

func (n *fedNet) add(name, addr string, key *config.SigningKey) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.addrs[name], n.keys[name] = addr, key
}

func (n *fedNet) remove(name string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.addrs, name)
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// transport is the federation transport of a server whose connections go through
// dial.
func (n *fedNet) transport(dial func(ctx context.Context, network, addr string) (net.Conn, error)) http.RoundTripper {
	tr := &http.Transport{DialContext: dial, DisableKeepAlives: true}
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		name := req.URL.Host
		n.mu.Lock()
		addr, key := n.addrs[name], n.keys[name]
		n.mu.Unlock()
		if addr == "" {
			return nil, fmt.Errorf("no route to test server %s", name)
		}
		if req.URL.Path == "/_matrix/key/v2/server" && key != nil {
			// The key server belongs to federationapi; until it is wired in,
			// answer for the test server with its real key.
			return keyResponse(req, name, key)
		}
		out := req.Clone(req.Context())
		out.URL.Scheme, out.URL.Host, out.Host = "http", addr, name
		return tr.RoundTrip(out)
	})
}

func fedKey(k *config.SigningKey) *federation.SigningKey {
	return &federation.SigningKey{
		ID:   id.KeyID(k.ID),
		Pub:  id.SigningKey(base64.RawStdEncoding.EncodeToString(k.Public())),
		Priv: k.PrivateKey,
	}
}

func keyResponse(req *http.Request, name string, k *config.SigningKey) (*http.Response, error) {
	b, err := json.Marshal(fedKey(k).GenerateKeyResponse(name, nil))
	if err != nil {
		return nil, err
	}
	return &http.Response{
		StatusCode: 200, Status: "200 OK", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {"application/json"}},
		Body:          io.NopCloser(bytes.NewReader(b)),
		ContentLength: int64(len(b)),
		Request:       req,
	}, nil
}

// client is a signing federation client acting as server name with key.
func (n *fedNet) client(name string, key *config.SigningKey, s *testserver.Server) *federation.Client {
	c := federation.NewClient(name, fedKey(key), nil, exhttp.ClientSettings{})
	c.HTTP.Transport = n.transport(s.Media.DialFederation)
	return c
}

// join starts a server called name on the network. Federation is served on its
// (plain HTTP) client listener.
func (n *fedNet) join(t *testing.T, name, dsn string, opts ...testserver.Option) *testserver.Server {
	t.Helper()
	s := startServer(t, dsn, append([]testserver.Option{func(c *config.Config) {
		c.ServerName = name
		c.Listen.Federation = ""
	}}, opts...)...)
	n.add(name, s.Listeners.Client.String(), s.Key)
	s.Media.SetFederationTransport(n.transport(s.Media.DialFederation))
	s.Media.SetRequestVerifier(mediaapi.NewServerAuthVerifier(name, n.client(name, s.Key, s), federation.NewInMemoryCache()))
	return s
}

func allowLoopback(c *config.Config) { c.Federation.AllowedCIDRs = []string{"127.0.0.0/8"} }

// denyLoopback restores the production default: loopback addresses refused.
func denyLoopback(c *config.Config) { c.Federation.AllowedCIDRs = nil }

// nDSNs returns, per database kind, n fresh databases.
func nDSNs(t *testing.T, n int) map[string][]string {
	out := map[string][]string{}
	for range n {
		for k, v := range storagetest.DSNs(t) {
			out[k] = append(out[k], v)
		}
	}
	return out
}

// TestFederatedMedia: a user on server B downloads (and thumbnails) media
// uploaded on server A through B; B caches it; A's federation endpoints answer
// multipart/mixed and only to signed requests; B falls back to the legacy
// endpoint for servers without the federation one; remote size limits hold; a
// server that may not reach loopback addresses refuses to.
func TestFederatedMedia(t *testing.T) {
	for kind, dsns := range nDSNs(t, 3) {
		t.Run(kind, func(t *testing.T) {
			fn := newFedNet()
			a := fn.join(t, "a.test", dsns[0], allowLoopback)
			b := fn.join(t, "b.test", dsns[1], allowLoopback, mediaOpt(func(m *config.Media) { m.RemoteMaxBytes = 1 << 20 }))
			c := fn.join(t, "c.test", dsns[2], denyLoopback)
			alice, bob, carol := register(t, a, "alice"), register(t, b, "bob"), register(t, c, "carol")

			img := photo(t, 800, 600)
			_, id := alice.upload(img, "image/jpeg", "kids.jpg")
			got := bob.do("GET", clientMedia+"/download/a.test/"+id, nil).expect(t, 200, "")
			if !bytes.Equal(got.body, img) {
				t.Fatal("media fetched through B differs from what was uploaded on A")
			}
			if got.header.Get("Content-Type") != "image/jpeg" || got.header.Get("Content-Disposition") != "inline; filename=kids.jpg" {
				t.Errorf("remote media served as %q, %q", got.header.Get("Content-Type"), got.header.Get("Content-Disposition"))
			}
			th := bob.do("GET", clientMedia+"/thumbnail/a.test/"+id+"?width=96&height=96&method=crop", nil).expect(t, 200, "")
			if bnd := decodeThumb(t, th).Bounds(); bnd.Dx() != 96 || bnd.Dy() != 96 {
				t.Errorf("remote thumbnail %v", bnd)
			}
			bob.do("GET", clientMedia+"/download/a.test/doesNotExist", nil).expect(t, 404, "M_NOT_FOUND")

			// A's federation endpoint, asked directly as B.
			fromB := fn.client("b.test", b.Key, b)
			for _, path := range []federation.URLPath{{"v1", "media", "download", id}, {"v1", "media", "thumbnail", id}} {
				params := federation.RequestParams{ServerName: "a.test", Method: "GET", Path: path, Authenticate: true, DontReadBody: true}
				if path[2] == "thumbnail" {
					params.Query = map[string][]string{"width": {"32"}, "height": {"32"}, "method": {"crop"}}
				}
				_, hr, err := fromB.MakeFullRequest(context.Background(), params)
				if err != nil {
					t.Fatalf("%v: %v", path, err)
				}
				meta, part, ct := readMultipart(t, hr)
				if string(meta) != "{}" {
					t.Errorf("%v: metadata part %q", path, meta)
				}
				if path[2] == "download" && (!bytes.Equal(part, img) || ct != "image/jpeg") {
					t.Errorf("download part: %d bytes of %s", len(part), ct)
				}
				if path[2] == "thumbnail" && ct != "image/jpeg" {
					t.Errorf("thumbnail part: %s", ct)
				}
			}
			// Unsigned, or signed with a key that is not B's: 401.
			anon(t, a).do("GET", "/_matrix/federation/v1/media/download/"+id, nil).expect(t, 401, "M_UNAUTHORIZED")
			forger, _ := config.GenerateSigningKey()
			forged := fn.client("b.test", forger, b)
			_, _, err := forged.MakeFullRequest(context.Background(), federation.RequestParams{
				ServerName: "a.test", Method: "GET", Path: federation.URLPath{"v1", "media", "download", id}, Authenticate: true,
			})
			if err == nil || !strings.Contains(err.Error(), "M_UNAUTHORIZED") {
				t.Errorf("forged signature: %v, want M_UNAUTHORIZED", err)
			}

			// Over B's remote_max_bytes: 502 M_TOO_LARGE.
			_, bigID := alice.upload(randomBytes(1<<20+1), "application/octet-stream", "")
			bob.do("GET", clientMedia+"/download/a.test/"+bigID, nil).expect(t, 502, "M_TOO_LARGE")

			// C may not connect to loopback addresses, where A lives.
			carol.do("GET", clientMedia+"/download/a.test/"+id, nil).expect(t, 502, "")

			// A server that only has the legacy endpoint.
			var legacyQuery string
			legacy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch {
				case strings.HasPrefix(r.URL.Path, "/_matrix/federation/"):
					w.WriteHeader(404)
					_, _ = io.WriteString(w, `{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}`)
				case r.URL.Path == "/_matrix/media/v3/download/legacy.test/old":
					legacyQuery = r.URL.RawQuery
					w.Header().Set("Content-Type", "text/plain")
					w.Header().Set("Content-Disposition", `attachment; filename="old.txt"`)
					_, _ = io.WriteString(w, "legacy bytes")
				default:
					w.WriteHeader(404)
					_, _ = io.WriteString(w, `{"errcode":"M_NOT_FOUND","error":"nope"}`)
				}
			}))
			defer legacy.Close()
			fn.add("legacy.test", legacy.Listener.Addr().String(), nil)
			old := bob.do("GET", clientMedia+"/download/legacy.test/old", nil).expect(t, 200, "")
			if string(old.body) != "legacy bytes" || old.header.Get("Content-Disposition") != "inline; filename=old.txt" {
				t.Fatalf("legacy fallback: %s %q", old, old.header.Get("Content-Disposition"))
			}
			if !strings.Contains(legacyQuery, "allow_remote=false") {
				t.Errorf("legacy request query %q lacks allow_remote=false", legacyQuery)
			}

			// A server whose federation media path answers 400 without a Matrix
			// error (as Complement's mock server does): the legacy endpoint is
			// tried, and media without a file name comes through.
			odd := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch {
				case strings.HasPrefix(r.URL.Path, "/_matrix/federation/v1/media/"):
					w.WriteHeader(400)
					_, _ = io.WriteString(w, "complement: Invalid Origin")
				case r.URL.Path == "/_matrix/media/v3/download/odd.test/PlainTextFile":
					w.Header().Set("Content-Type", "text/plain")
					_, _ = io.WriteString(w, "Hello from the other side")
				default:
					w.WriteHeader(404)
					_, _ = io.WriteString(w, `{"errcode":"M_NOT_FOUND","error":"nope"}`)
				}
			}))
			defer odd.Close()
			fn.add("odd.test", odd.Listener.Addr().String(), nil)
			plain := bob.do("GET", clientMedia+"/download/odd.test/PlainTextFile", nil).expect(t, 200, "")
			if string(plain.body) != "Hello from the other side" || !strings.HasPrefix(plain.header.Get("Content-Type"), "text/plain") {
				t.Fatalf("fallback after a bare 400: %s %q", plain, plain.header.Get("Content-Type"))
			}

			// Once cached, B serves A's media even when A is gone.
			fn.remove("a.test")
			if again := bob.do("GET", clientMedia+"/download/a.test/"+id, nil).expect(t, 200, ""); !bytes.Equal(again.body, img) {
				t.Fatal("cached remote media differs")
			}
			bob.do("GET", clientMedia+"/thumbnail/a.test/"+id+"?width=320&height=240", nil).expect(t, 200, "")
		})
	}
}

// TestFederatedMediaOverTLS: the same download between two servers named
// 127.0.0.1:<port>, with nothing replaced: server discovery, TLS to the federation
// listener (trusting the test CA through federation.ca_file), X-Matrix signing, and
// verification with keys fetched from the origin's key server.
func TestFederatedMediaOverTLS(t *testing.T) {
	for kind, dsns := range nDSNs(t, 2) {
		t.Run(kind, func(t *testing.T) {
			a := startServer(t, dsns[0], testserver.Federated)
			b := startServer(t, dsns[1], testserver.Federated)
			alice, bob := register(t, a, "alice"), register(t, b, "bob")
			img := photo(t, 640, 480)
			server, id := alice.upload(img, "image/jpeg", "garden.jpg")
			if server != a.Hearth.Config.ServerName {
				t.Fatalf("uploaded to %s, server is %s", server, a.Hearth.Config.ServerName)
			}
			got := bob.do("GET", clientMedia+"/download/"+server+"/"+id, nil).expect(t, 200, "")
			if !bytes.Equal(got.body, img) {
				t.Fatal("media fetched over TLS federation differs")
			}
			th := bob.do("GET", clientMedia+"/thumbnail/"+server+"/"+id+"?width=32&height=32&method=crop", nil).expect(t, 200, "")
			if bnd := decodeThumb(t, th).Bounds(); bnd.Dx() != 32 || bnd.Dy() != 32 {
				t.Errorf("thumbnail %v", bnd)
			}
		})
	}
}

// readMultipart checks a federation media answer and returns its parts.
func readMultipart(t *testing.T, hr *http.Response) (meta, data []byte, contentType string) {
	t.Helper()
	defer hr.Body.Close()
	mt, params, err := mime.ParseMediaType(hr.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" {
		t.Fatalf("Content-Type %q", hr.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(hr.Body, params["boundary"])
	p1, err := mr.NextPart()
	if err != nil || p1.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("first part: %v %v", err, p1)
	}
	meta, _ = io.ReadAll(p1)
	p2, err := mr.NextPart()
	if err != nil {
		t.Fatal(err)
	}
	data, _ = io.ReadAll(p2)
	if _, err := mr.NextPart(); err != io.EOF {
		t.Fatalf("more than two parts: %v", err)
	}
	return meta, data, p2.Header.Get("Content-Type")
}

// TestPreviewURL: previews refuse loopback addresses by default (checked on the
// host and on every dialled address, redirects included), and where allowed give
// the OpenGraph data with the image re-hosted, cached, within size and time limits.
func TestPreviewURL(t *testing.T) {
	var mu sync.Mutex
	hits := map[string]int{}
	var pngBuf bytes.Buffer
	_ = png.Encode(&pngBuf, solid(64, 32, color.RGBA{10, 200, 10, 255}))
	site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits[r.URL.Path]++
		mu.Unlock()
		switch r.URL.Path {
		case "/page":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			_, _ = io.WriteString(w, `<!doctype html><html><head><title>ignored</title>
				<meta property="og:title" content="Family BBQ">
				<meta property="og:description" content="Photos from Sunday">
				<meta property="og:image" content="/img.png"></head><body>hi</body></html>`)
		case "/img.png":
			w.Header().Set("Content-Type", "image/png")
			_, _ = w.Write(pngBuf.Bytes())
		case "/redirect":
			http.Redirect(w, r, "http://10.255.255.1/", http.StatusFound)
		case "/big":
			// A long page: its head is read, the rest is not.
			w.Header().Set("Content-Type", "text/html")
			_, _ = io.WriteString(w, `<html><head><meta property="og:title" content="Big page"></head><body>`)
			_, _ = w.Write(bytes.Repeat([]byte("x"), 10000))
		case "/late":
			// The tags come after the size limit: not seen.
			w.Header().Set("Content-Type", "text/html")
			_, _ = io.WriteString(w, "<html><head><!-- "+strings.Repeat("x", 5000)+` --><meta property="og:title" content="Too late"></head>`)
		case "/bigimg.png":
			w.Header().Set("Content-Type", "image/png")
			_, _ = w.Write(bytes.Repeat([]byte("x"), 10000))
		case "/slow":
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		default:
			http.NotFound(w, r)
		}
	}))
	defer site.Close()
	_, port, _ := strings.Cut(site.Listener.Addr().String(), ":")
	preview := func(u string) string { return clientMedia + "/preview_url?url=" + u }

	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		alice := register(t, s, "alice")
		for _, u := range []string{site.URL + "/page", "http://localhost:" + port + "/page", "http://[::1]:" + port + "/", "http://0.0.0.0:" + port + "/"} {
			alice.do("GET", preview(u), nil).expect(t, 403, "M_FORBIDDEN")
		}
		mu.Lock()
		defer mu.Unlock()
		if len(hits) != 0 {
			t.Fatalf("the site was contacted: %v", hits)
		}
	})

	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		mu.Lock()
		clear(hits)
		mu.Unlock()
		alice := register(t, s, "alice")
		og := alice.do("GET", preview(site.URL+"/page"), nil).expect(t, 200, "").json()
		if og["og:title"] != "Family BBQ" || og["og:description"] != "Photos from Sunday" {
			t.Fatalf("preview %v", og)
		}
		img, _ := og["og:image"].(string)
		if !strings.HasPrefix(img, "mxc://hs.test/") || og["matrix:image:size"] != float64(pngBuf.Len()) ||
			og["og:image:width"] != float64(64) || og["og:image:height"] != float64(32) || og["og:image:type"] != "image/png" {
			t.Fatalf("preview image %v", og)
		}
		_, imgID := splitMXC(t, img)
		if got := alice.do("GET", clientMedia+"/download/hs.test/"+imgID, nil); !bytes.Equal(got.body, pngBuf.Bytes()) {
			t.Fatal("re-hosted preview image differs")
		}
		// Cached: the page is not fetched again, on any alias.
		alice.do("GET", preview(site.URL+"/page"), nil).expect(t, 200, "")
		alice.do("GET", "/_matrix/media/v3/preview_url?url="+site.URL+"/page", nil).expect(t, 200, "")
		mu.Lock()
		if hits["/page"] != 1 {
			t.Errorf("page fetched %d times", hits["/page"])
		}
		mu.Unlock()

		direct := alice.do("GET", preview(site.URL+"/img.png"), nil).expect(t, 200, "").json()
		if d, _ := direct["og:image"].(string); !strings.HasPrefix(d, "mxc://") {
			t.Errorf("image URL preview %v", direct)
		}
		// The redirect target is dialled through the filter too.
		alice.do("GET", preview(site.URL+"/redirect"), nil).expect(t, 403, "M_FORBIDDEN")
		if got := alice.do("GET", preview(site.URL+"/big"), nil).expect(t, 200, "").json(); got["og:title"] != "Big page" {
			t.Errorf("big page preview %v", got)
		}
		if got := alice.do("GET", preview(site.URL+"/late"), nil).expect(t, 200, "").json(); len(got) != 0 {
			t.Errorf("tags past the size limit were read: %v", got)
		}
		alice.do("GET", preview(site.URL+"/bigimg.png"), nil).expect(t, 502, "M_TOO_LARGE")
		alice.do("GET", preview(site.URL+"/slow"), nil).expect(t, 504, "")
		alice.do("GET", preview(site.URL+"/missing"), nil).expect(t, 502, "")
	}, mediaOpt(func(m *config.Media) {
		m.URLPreview.AllowedCIDRs = []string{"127.0.0.0/8"}
		m.URLPreview.MaxBytes = 4096
		m.RemoteTimeoutSeconds = 1
	}))

	forEachServer(t, func(t *testing.T, s *testserver.Server) {
		register(t, s, "alice").do("GET", preview(site.URL+"/page"), nil).expect(t, 404, "M_UNRECOGNIZED")
	}, mediaOpt(func(m *config.Media) { m.URLPreview.Enabled = false }))
}
