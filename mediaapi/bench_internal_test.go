package mediaapi

import (
	"bytes"
	"image"
	"image/jpeg"
	"runtime"
	"testing"
	"time"
)

// BenchmarkThumbnail12MP: the whole thumbnailing of a 4000×3000 JPEG photo, as
// done after upload: header probe, decode, the five standard sizes, encoding.
// peak-heap-MB is the live heap's peak above the starting point.
func BenchmarkThumbnail12MP(b *testing.B) {
	img := image.NewYCbCr(image.Rect(0, 0, 4000, 3000), image.YCbCrSubsampleRatio420)
	for y := 0; y < 3000; y++ {
		for x := 0; x < 4000; x++ {
			img.Y[y*img.YStride+x] = uint8((x/16 + y/16 + (x*y)%13) % 256)
		}
	}
	for i := range img.Cb {
		img.Cb[i], img.Cr[i] = uint8(i%251), uint8(i%241)
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 85}); err != nil {
		b.Fatal(err)
	}
	data := buf.Bytes()
	img = nil
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base, peak := ms.HeapInuse, ms.HeapInuse
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				runtime.ReadMemStats(&ms)
				peak = max(peak, ms.HeapInuse)
			}
		}
	}()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		info, err := probeImage(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			b.Fatal(err)
		}
		src, err := decodeImage(bytes.NewReader(data), info)
		if err != nil {
			b.Fatal(err)
		}
		for _, t := range renderThumbnails(src, info, standardThumbnails) {
			if _, _, err := encodeThumbnail(t, isPhoto(src)); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	close(stop)
	<-done
	b.ReportMetric(float64(peak-base)/(1<<20), "peak-heap-MB")
	b.ReportMetric(float64(len(data))/(1<<20), "jpeg-MB")
}
