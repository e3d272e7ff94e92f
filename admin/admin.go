package admin

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"golang.org/x/net/netutil"

	"github.com/credswap/credswap/internal/logging"
	"github.com/credswap/credswap/proxy"
	"github.com/credswap/credswap/rotate"
)

// Options configures the admin API.
type Options struct {
	// Backends are served by name.
	Backends []*proxy.Backend
	// Rotators are the backends with rotation configured, by name.
	Rotators map[string]*rotate.Rotator
	// TokenFile holds the bearer token required on /v1/*; empty disables
	// the check. It is read on every request, so it can be rotated in place.
	TokenFile string
	// AllowedHosts are host names or addresses that the Host header of a
	// /v1/* request may name besides localhost, loopback addresses, the
	// listen address and the address the connection arrived on
	// (admin.allowed_hosts).
	AllowedHosts []string
	// MaxConns caps open connections (0: DefaultMaxConns); further ones
	// wait in the listen backlog until one closes.
	MaxConns int
	// Gatherer serves /metrics.
	Gatherer prometheus.Gatherer
	// Version is reported in /v1/status.
	Version string
	Logger  *zap.Logger
}

// Server is the admin HTTP API (docs/admin-api.md).
type Server struct {
	opts    Options
	byName  map[string]*proxy.Backend
	started time.Time
	srv     *http.Server
	ln      net.Listener
	// listenHost is the host of the listen address, normalized; "" when
	// it is unspecified (0.0.0.0, [::], none).
	listenHost string
	// allowed holds Options.AllowedHosts, normalized.
	allowed map[string]bool
}

// New returns a Server; call Listen and Serve.
func New(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = DefaultMaxConns
	}
	s := &Server{opts: opts, byName: make(map[string]*proxy.Backend), started: time.Now(), allowed: map[string]bool{}}
	for _, b := range opts.Backends {
		s.byName[b.Name()] = b
	}
	for _, h := range opts.AllowedHosts {
		s.allowed[normalizeHost(h)] = true
	}
	s.srv = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          zap.NewStdLog(opts.Logger),
	}
	return s
}

// Handler returns the API's routes behind the checks against requests
// from web pages (guard).
func (s *Server) Handler() http.Handler { return s.guard(s.routes()) }

// routes returns the API's routes.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	gatherer := s.opts.Gatherer
	if gatherer == nil {
		gatherer = prometheus.NewRegistry()
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	mux.Handle("GET /v1/status", s.auth(s.status))
	mux.Handle("POST /v1/backends/{name}/refresh", s.auth(s.refresh))
	mux.Handle("POST /v1/backends/{name}/drain", s.auth(s.drain))
	mux.Handle("POST /v1/backends/{name}/rotate", s.auth(s.rotate))
	mux.Handle("PUT /v1/backends/{name}/schedule", s.auth(s.schedule))
	mux.Handle("GET /v1/rotations/{id}", s.auth(s.rotation))
	mux.Handle("/v1/", s.auth(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such endpoint: "+r.Method+" "+r.URL.Path)
	}))
	return mux
}

// Listen opens the admin listener, capped at Options.MaxConns open
// connections. Requests may name addr's host in their Host header.
func (s *Server) Listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	if host, _, err := net.SplitHostPort(addr); err == nil {
		if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err != nil || !ip.IsUnspecified() {
			s.listenHost = normalizeHost(host)
		}
	}
	s.ln = netutil.LimitListener(ln, s.opts.MaxConns)
	return nil
}

// Addr returns the listener's address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve serves until Shutdown; it returns nil after Shutdown.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Shutdown stops the server, waiting for requests in flight until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }

// auth enforces the bearer token on /v1/* when one is configured.
func (s *Server) auth(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.opts.TokenFile != "" {
			b, err := os.ReadFile(s.opts.TokenFile)
			if err != nil {
				s.opts.Logger.Error("reading admin token file", zap.Error(err))
				writeError(w, http.StatusInternalServerError, "token_unavailable", "the admin token file cannot be read")
				return
			}
			want := strings.TrimSpace(string(b))
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || want == "" || subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="credswap"`)
				writeError(w, http.StatusUnauthorized, "unauthorized", "a valid bearer token is required")
				return
			}
		}
		next(w, r)
	})
}

// readyResponse is the body of /readyz. /readyz needs no token, so it
// carries states only, never error text: the credential source's error
// names users, addresses and the database's message, and /v1/status
// (behind the token) has it.
type readyResponse struct {
	Ready    bool                `json:"ready"`
	Backends map[string][]string `json:"not_ready,omitempty"`
	// Degraded lists backends that serve with their current credential
	// while its source fails; they are ready.
	Degraded map[string][]string `json:"degraded,omitempty"`
}

// degradedState is the one reason /readyz gives for a degraded backend.
const degradedState = "credential source failing (details in /v1/status)"

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	resp := readyResponse{Ready: true}
	for _, b := range s.opts.Backends {
		// Ready's reasons are fixed texts ("credential not verified by a
		// test login"); Degraded's hold the source's error.
		if ok, reasons := b.Ready(); !ok {
			resp.Ready = false
			if resp.Backends == nil {
				resp.Backends = map[string][]string{}
			}
			resp.Backends[b.Name()] = reasons
		}
		if d := b.Degraded(); len(d) > 0 {
			if resp.Degraded == nil {
				resp.Degraded = map[string][]string{}
			}
			resp.Degraded[b.Name()] = []string{degradedState}
		}
	}
	code := http.StatusOK
	if !resp.Ready {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, resp)
}

// StatusResponse is the body of GET /v1/status.
type StatusResponse struct {
	Version   string          `json:"version"`
	StartedAt time.Time       `json:"started_at"`
	Backends  []BackendStatus `json:"backends"`
}

// BackendStatus is a backend's status with its rotation, if configured.
type BackendStatus struct {
	proxy.BackendStatus
	Rotation *rotate.Status `json:"rotation,omitempty"`
}

func (s *Server) status(w http.ResponseWriter, _ *http.Request) {
	resp := StatusResponse{Version: s.opts.Version, StartedAt: s.started, Backends: []BackendStatus{}}
	for _, b := range s.opts.Backends {
		bs := BackendStatus{BackendStatus: b.Status()}
		if r := s.opts.Rotators[b.Name()]; r != nil {
			st := r.Status()
			bs.Rotation = &st
		}
		resp.Backends = append(resp.Backends, bs)
	}
	writeJSON(w, http.StatusOK, resp)
}

// rotator finds the rotator of the backend in the path.
func (s *Server) rotator(w http.ResponseWriter, r *http.Request) *rotate.Rotator {
	b := s.backend(w, r)
	if b == nil {
		return nil
	}
	rot := s.opts.Rotators[b.Name()]
	if rot == nil {
		writeError(w, http.StatusNotFound, "rotation_not_configured", "backend "+strconvQuote(b.Name())+" has no rotation block")
	}
	return rot
}

func (s *Server) rotate(w http.ResponseWriter, r *http.Request) {
	rot := s.rotator(w, r)
	if rot == nil {
		return
	}
	wait := r.URL.Query().Get("wait") == "1" || r.URL.Query().Get("wait") == "true"
	if wait {
		allowFor(w, 0) // as long as the rotation takes
	}
	trigger := "api"
	if t := r.Header.Get("X-Credswap-Trigger"); t == "cli" {
		trigger = t
	}
	rec, err := rot.Rotate(r.Context(), trigger, wait)
	switch {
	case errors.Is(err, rotate.ErrBusy):
		writeJSON(w, http.StatusConflict, map[string]string{"error": err.Error(), "code": "rotation_running", "id": rec.ID})
	case err != nil:
		writeError(w, http.StatusInternalServerError, "rotation_not_started", err.Error())
	case wait:
		writeJSON(w, http.StatusOK, rec)
	default:
		writeJSON(w, http.StatusAccepted, rec)
	}
}

func (s *Server) rotation(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	for _, rot := range s.opts.Rotators {
		if rec, err := rot.Get(id); err == nil {
			writeJSON(w, http.StatusOK, rec)
			return
		}
	}
	writeError(w, http.StatusNotFound, "unknown_rotation", "no rotation "+strconvQuote(id))
}

// ScheduleRequest is the body of PUT /v1/backends/{name}/schedule.
type ScheduleRequest struct {
	Enabled  bool   `json:"enabled"`
	Interval string `json:"interval,omitempty"`
}

func (s *Server) schedule(w http.ResponseWriter, r *http.Request) {
	rot := s.rotator(w, r)
	if rot == nil {
		return
	}
	var req ScheduleRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", "body must be {\"enabled\": bool, \"interval\": \"24h\"}")
		return
	}
	var interval time.Duration
	if req.Interval != "" {
		d, err := time.ParseDuration(req.Interval)
		if err != nil || d <= 0 {
			writeError(w, http.StatusBadRequest, "bad_request", "interval must be a positive Go duration such as 24h")
			return
		}
		interval = d
	}
	writeJSON(w, http.StatusOK, rot.SetSchedule(req.Enabled, interval))
}

// RefreshResponse is the body of POST /v1/backends/{name}/refresh.
type RefreshResponse struct {
	Backend    string `json:"backend"`
	Adopted    bool   `json:"adopted"`
	Generation uint64 `json:"generation"`
	Username   string `json:"username,omitempty"`
}

func (s *Server) refresh(w http.ResponseWriter, r *http.Request) {
	b := s.backend(w, r)
	if b == nil {
		return
	}
	const limit = 30 * time.Second
	allowFor(w, limit+10*time.Second)
	ctx, cancel := context.WithTimeout(r.Context(), limit)
	defer cancel()
	adopted, err := b.Store.Refresh(ctx)
	if err != nil {
		writeError(w, http.StatusBadGateway, "refresh_failed", err.Error())
		return
	}
	resp := RefreshResponse{Backend: b.Name(), Adopted: adopted}
	if cur := b.Store.Current(); cur != nil {
		resp.Generation = cur.N
		resp.Username = cur.Cred.Username
	}
	s.opts.Logger.Info("admin refresh", logging.Audit(), zap.String("backend", b.Name()), zap.Bool("adopted", adopted))
	writeJSON(w, http.StatusOK, resp)
}

// DrainResponse is the body of POST /v1/backends/{name}/drain.
type DrainResponse struct {
	Backend    string         `json:"backend"`
	Generation uint64         `json:"generation"`
	Results    map[string]int `json:"results"`
	Pending    int            `json:"pending"`
}

func (s *Server) drain(w http.ResponseWriter, r *http.Request) {
	b := s.backend(w, r)
	if b == nil {
		return
	}
	const limit = 60 * time.Second
	allowFor(w, limit+10*time.Second)
	ctx, cancel := context.WithTimeout(r.Context(), limit)
	defer cancel()
	results := b.Drain(ctx)
	resp := DrainResponse{Backend: b.Name(), Results: results}
	if cur := b.Store.Current(); cur != nil {
		resp.Generation = cur.N
		resp.Pending = len(b.Sessions.Behind(cur.N))
	}
	s.opts.Logger.Info("admin drain", logging.Audit(), zap.String("backend", b.Name()), zap.Any("results", results))
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) backend(w http.ResponseWriter, r *http.Request) *proxy.Backend {
	name := r.PathValue("name")
	b, ok := s.byName[name]
	if !ok {
		writeError(w, http.StatusNotFound, "unknown_backend", "no backend named "+strconvQuote(name))
		return nil
	}
	return b
}

// ErrorResponse is the body of every error.
type ErrorResponse struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, ErrorResponse{Error: msg, Code: code})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func strconvQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
