package mediaapi

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the media repository's Prometheus series.
type metrics struct {
	uploads       prometheus.Counter
	uploadBytes   prometheus.Counter
	remoteFetches *prometheus.CounterVec
	thumbnailTime prometheus.Histogram
	previews      *prometheus.CounterVec
}

func newMetrics(reg *prometheus.Registry) (*metrics, error) {
	m := &metrics{
		uploads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hearth_media_uploads_total", Help: "Media uploads stored.",
		}),
		uploadBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hearth_media_upload_bytes_total", Help: "Bytes of media uploads stored.",
		}),
		remoteFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hearth_media_remote_fetches_total", Help: "Fetches of remote media, by result.",
		}, []string{"result"}),
		thumbnailTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "hearth_media_thumbnail_seconds",
			Help:    "Time to decode an image and render its thumbnails.",
			Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
		}),
		previews: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hearth_media_url_previews_total", Help: "URL preview requests, by result.",
		}, []string{"result"}),
	}
	for _, c := range []prometheus.Collector{m.uploads, m.uploadBytes, m.remoteFetches, m.thumbnailTime, m.previews} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering media metrics: %w", err)
		}
	}
	return m, nil
}
