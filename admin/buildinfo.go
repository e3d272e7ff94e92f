package admin

import "github.com/prometheus/client_golang/prometheus"

// BuildInfo identifies the running binary. cmd/proxy fills it from the
// values stamped with -ldflags at build time, or from the Go build
// information when none were stamped.
type BuildInfo struct {
	// Version is the release (v1.2.3) or, for an unstamped build, the
	// module version or "devel" with the VCS revision appended.
	Version string `json:"version"`
	// Commit is the VCS revision the binary was built from.
	Commit string `json:"commit"`
	// Date is when the binary was built (or, unstamped, the commit's time),
	// RFC 3339.
	Date string `json:"date"`
	// GoVersion is the Go release that compiled the binary (runtime.Version).
	GoVersion string `json:"goversion"`
}

// NewBuildInfoCollector returns the collector of credswap_build_info, a
// gauge that is always 1 and carries b in its labels version, commit, date
// and goversion, for joining other series with the version that produced
// them.
func NewBuildInfoCollector(b BuildInfo) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "credswap_build_info",
		Help: "Always 1; the labels identify the running credswap binary.",
		ConstLabels: prometheus.Labels{
			"version": b.Version, "commit": b.Commit, "date": b.Date, "goversion": b.GoVersion,
		},
	})
	g.Set(1)
	return g
}
