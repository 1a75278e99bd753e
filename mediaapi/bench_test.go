package mediaapi_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"

	"hearth/storage/storagetest"
)

// heapPeak samples the live heap while a benchmark runs and reports its peak
// above the starting point, in MB.
type heapPeak struct {
	base, peak uint64
	stop       chan struct{}
	wg         sync.WaitGroup
}

func startHeapPeak() *heapPeak {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	h := &heapPeak{base: ms.HeapInuse, peak: ms.HeapInuse, stop: make(chan struct{})}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-h.stop:
				return
			case <-t.C:
				runtime.ReadMemStats(&ms)
				h.peak = max(h.peak, ms.HeapInuse)
			}
		}
	}()
	return h
}

func (h *heapPeak) report(b *testing.B) {
	close(h.stop)
	h.wg.Wait()
	b.ReportMetric(float64(h.peak-h.base)/(1<<20), "peak-heap-MB")
}

const benchSize = 10 << 20

// BenchmarkUpload10MB: POST /_matrix/media/v3/upload of 10 MB through a real
// server (SQLite), streamed to disk with hashing and fsync.
func BenchmarkUpload10MB(b *testing.B) {
	s := startServer(b, storagetest.DSNs(b)["sqlite"])
	alice := register(b, s, "alice")
	data := randomBytes(benchSize)
	b.SetBytes(benchSize)
	b.ReportAllocs()
	h := startHeapPeak()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		copy(data, fmt.Sprint(i)) // distinct content each time: no deduplication
		req, _ := http.NewRequest("POST", s.URL+legacyMedia+"/upload", bytes.NewReader(data))
		req.Header.Set("Authorization", "Bearer "+alice.token)
		req.Header.Set("Content-Type", "application/octet-stream")
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			b.Fatalf("upload: %v %v", err, resp)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	b.StopTimer()
	h.report(b)
}

// BenchmarkDownload10MB: GET /_matrix/client/v1/media/download of 10 MB.
func BenchmarkDownload10MB(b *testing.B) {
	s := startServer(b, storagetest.DSNs(b)["sqlite"])
	alice := register(b, s, "alice")
	_, id := alice.upload(randomBytes(benchSize), "application/octet-stream", "")
	url := s.URL + clientMedia + "/download/hs.test/" + id
	b.SetBytes(benchSize)
	b.ReportAllocs()
	h := startHeapPeak()
	b.ResetTimer()
	for b.Loop() {
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("Authorization", "Bearer "+alice.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			b.Fatalf("download: %v %v", err, resp)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if n != benchSize {
			b.Fatalf("downloaded %d bytes", n)
		}
	}
	b.StopTimer()
	h.report(b)
}
