package proxy

import (
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

const namespace = "credswap"

// Metrics holds the Prometheus metrics of every backend. Event counters are
// incremented where events happen; gauges are read from the backends when
// scraped, so the hot path never touches a metric.
type Metrics struct {
	clientAuthFailures  *prometheus.CounterVec
	clientErrors        *prometheus.CounterVec
	switches            *prometheus.CounterVec
	backendAuthFailures *prometheus.CounterVec
	switchSeconds       *prometheus.HistogramVec
	sessionPanics       *prometheus.CounterVec
	handshakesEvicted   *prometheus.CounterVec
	loginDelays         *prometheus.CounterVec

	mu       sync.Mutex
	backends []*Backend
}

// NewMetrics creates the metrics and registers them with reg; a nil reg
// leaves them unregistered (tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		clientAuthFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "client_auth_failures_total",
			Help: "Client logins refused because of a wrong local user or password.",
		}, []string{"backend"}),
		clientErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "client_errors_total",
			Help: "Errors the proxy itself reported to clients, by code.",
		}, []string{"backend", "code"}),
		switches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "session_switches_total",
			Help: "Attempts to move a live session to a newer credential generation, by result.",
		}, []string{"backend", "result"}),
		backendAuthFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "backend_auth_failures_total",
			Help: "Backend logins the database refused because of the credential.",
		}, []string{"backend"}),
		switchSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "session_switch_duration_seconds",
			Help:    "Time a completed switch took: capturing the session's state, replaying it on a new connection, retiring the old one.",
			Buckets: []float64{.00025, .0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"backend"}),
		sessionPanics: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "session_panics_total",
			Help: "Panics recovered in goroutines working for a session; each ended only that session (the log has the stack).",
		}, []string{"backend"}),
		handshakesEvicted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "handshakes_evicted_total",
			Help: "Client connections closed before they authenticated to make room for a newer one (limits.max_handshakes, limits.max_handshakes_per_source).",
		}, []string{"backend"}),
		loginDelays: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "login_delays_total",
			Help: "Client login attempts made to wait after repeated failures, by what the delay was keyed on (source address or user name).",
		}, []string{"backend", "scope"}),
	}
	if reg != nil {
		reg.MustRegister(m.clientAuthFailures, m.clientErrors, m.switches, m.backendAuthFailures, m.switchSeconds,
			m.sessionPanics, m.handshakesEvicted, m.loginDelays, (*collector)(m))
	}
	return m
}

// backendMetrics are the counters of one backend with the label bound.
type backendMetrics struct {
	clientAuthFailures  prometheus.Counter
	clientErrors        *prometheus.CounterVec
	switches            *prometheus.CounterVec
	backendAuthFailures prometheus.Counter
	switchSeconds       prometheus.Observer
	sessionPanics       prometheus.Counter
	handshakesEvicted   prometheus.Counter
	loginDelays         *prometheus.CounterVec
}

func (m *Metrics) forBackend(name string) *backendMetrics {
	l := prometheus.Labels{"backend": name}
	bm := &backendMetrics{
		clientAuthFailures:  m.clientAuthFailures.With(l),
		clientErrors:        m.clientErrors.MustCurryWith(l),
		switches:            m.switches.MustCurryWith(l),
		backendAuthFailures: m.backendAuthFailures.With(l),
		switchSeconds:       m.switchSeconds.With(l),
		sessionPanics:       m.sessionPanics.With(l),
		handshakesEvicted:   m.handshakesEvicted.With(l),
		loginDelays:         m.loginDelays.MustCurryWith(l),
	}
	for _, s := range []ThrottleScope{ThrottleSource, ThrottleUser} {
		bm.loginDelays.WithLabelValues(string(s))
	}
	// Every code starts at 0, so its series exists before the first error:
	// increase() then counts the first one, and dashboards and alerts find
	// the series.
	for code := range Code(len(codeNames)) {
		bm.clientErrors.WithLabelValues(code.String())
	}
	return bm
}

func (m *Metrics) track(b *Backend) {
	m.mu.Lock()
	m.backends = append(m.backends, b)
	m.mu.Unlock()
}

// collector reports the gauges computed from backend state at scrape time.
type collector Metrics

var (
	descClientSessions = prometheus.NewDesc(namespace+"_client_sessions",
		"Authenticated client sessions.", []string{"backend"}, nil)
	descBackendConns = prometheus.NewDesc(namespace+"_backend_connections",
		"Open backend connections (in use or idle) by credential generation.", []string{"backend", "generation"}, nil)
	descIdleConns = prometheus.NewDesc(namespace+"_backend_idle_connections",
		"Backend connections idle in the pool.", []string{"backend"}, nil)
	descGeneration = prometheus.NewDesc(namespace+"_credential_generation",
		"Generation number of the adopted backend credential.", []string{"backend"}, nil)
	descExpiry = prometheus.NewDesc(namespace+"_credential_expiry_timestamp_seconds",
		"When the adopted backend credential expires (Unix time); absent when it does not expire.", []string{"backend"}, nil)
	descPinned = prometheus.NewDesc(namespace+"_pinned_sessions",
		"Sessions that cannot move to a newer credential, by reason.", []string{"backend", "reason"}, nil)
	descSwitchFailing = prometheus.NewDesc(namespace+"_switch_failing_sessions",
		"Sessions whose last switch attempts failed and that wait before the next, by the stage that failed (capture, connect, replay, internal).",
		[]string{"backend", "stage"}, nil)
	descAdoptFailures = prometheus.NewDesc(namespace+"_credential_adoption_failures_total",
		"Failed reads of the credential source and failed test logins with a changed credential.", []string{"backend"}, nil)
	descAdoptFailing = prometheus.NewDesc(namespace+"_credential_adoption_failing",
		"1 while a changed credential cannot be adopted (see /v1/status for why), else 0.", []string{"backend"}, nil)
	descVerified = prometheus.NewDesc(namespace+"_credential_verified",
		"1 when the adopted credential passed a test login, else 0.", []string{"backend"}, nil)
	descDrainPending = prometheus.NewDesc(namespace+"_drain_pending_sessions",
		"Sessions still on a credential generation older than the one they are being moved to.", []string{"backend"}, nil)
	descHandshakes = prometheus.NewDesc(namespace+"_client_handshakes",
		"Client connections that have not authenticated yet (they hold no session slot).", []string{"backend"}, nil)
	descDrainOverdue = prometheus.NewDesc(namespace+"_drain_overdue",
		"1 while a drain is incomplete past its drain_deadline (sessions kept on a replaced credential), else 0.", []string{"backend"}, nil)
)

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descClientSessions, descBackendConns, descIdleConns, descGeneration,
		descExpiry, descPinned, descSwitchFailing, descAdoptFailures, descAdoptFailing, descVerified,
		descDrainPending, descDrainOverdue, descHandshakes} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	backends := append([]*Backend(nil), c.backends...)
	c.mu.Unlock()
	for _, b := range backends {
		name := b.Name()
		sessions := b.Sessions.Snapshot()
		ch <- prometheus.MustNewConstMetric(descClientSessions, prometheus.GaugeValue, float64(len(sessions)), name)
		ch <- prometheus.MustNewConstMetric(descHandshakes, prometheus.GaugeValue, float64(b.handshakes.Len()), name)
		pinned := map[string]int{}
		failing := map[string]int{}
		behind := 0
		for _, s := range sessions {
			info := s.Info()
			if info.PinReason != "" {
				pinned[info.PinReason]++
			}
			if b.Behind(info.Generation) {
				behind++
			}
			if f := info.SwitchFailure; f != nil {
				failing[f.Stage]++
			}
		}
		ch <- prometheus.MustNewConstMetric(descDrainPending, prometheus.GaugeValue, float64(behind), name)
		ch <- prometheus.MustNewConstMetric(descDrainOverdue, prometheus.GaugeValue, boolGauge(b.DrainOverdue()), name)
		for reason, n := range pinned {
			ch <- prometheus.MustNewConstMetric(descPinned, prometheus.GaugeValue, float64(n), name, reason)
		}
		for _, stage := range []string{StageCapture, StageConnect, StageReplay, StageInternal} {
			ch <- prometheus.MustNewConstMetric(descSwitchFailing, prometheus.GaugeValue, float64(failing[stage]), name, stage)
		}
		for gen, n := range b.Conns.Snapshot() {
			ch <- prometheus.MustNewConstMetric(descBackendConns, prometheus.GaugeValue, float64(n), name, strconv.FormatUint(gen, 10))
		}
		ch <- prometheus.MustNewConstMetric(descIdleConns, prometheus.GaugeValue, float64(b.Pool.Len()), name)
		st := b.Store.Status()
		if st.Current != nil {
			ch <- prometheus.MustNewConstMetric(descGeneration, prometheus.GaugeValue, float64(st.Current.Generation), name)
			if !st.Current.Expiry.IsZero() {
				ch <- prometheus.MustNewConstMetric(descExpiry, prometheus.GaugeValue, float64(st.Current.Expiry.Unix()), name)
			}
			ch <- prometheus.MustNewConstMetric(descVerified, prometheus.GaugeValue, boolGauge(st.Current.Verified), name)
		}
		ch <- prometheus.MustNewConstMetric(descAdoptFailures, prometheus.CounterValue, float64(st.AdoptionFailures), name)
		ch <- prometheus.MustNewConstMetric(descAdoptFailing, prometheus.GaugeValue, boolGauge(st.Failing), name)
	}
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
