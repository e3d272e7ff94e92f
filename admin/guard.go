package admin

import (
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/credswap/credswap/internal/logging"
)

// Timeouts and limits of the admin HTTP server. Handlers that run longer
// (drain, refresh, rotate?wait=1) move the deadlines themselves with
// allowFor.
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 30 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 60 * time.Second
	maxHeaderBytes    = 64 << 10
	// DefaultMaxConns is the connection cap when Options.MaxConns is 0.
	DefaultMaxConns = 64
)

// MarkerHeader is the header that, like Content-Type: application/json,
// lets a POST, PUT or DELETE through. A web page cannot send either to
// another site without the browser asking first (a CORS preflight), which
// this API never approves, so a page the operator visits cannot drive it.
const MarkerHeader = "X-Credswap"

// probePaths answer whatever the Host header says: they are read-only and
// carry no secret and no error text, and probes and scrapers reach them by
// pod IP, node name, service name or through a port-forward.
var probePaths = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true}

// guard refuses requests that a web page, rather than an operator or a
// program, may have made: a cross-origin Origin, a Host that is not this
// server (DNS rebinding; probe paths exempt), and a state-changing method
// without Content-Type: application/json or the X-Credswap header. Every
// refusal and every call under /v1/ that changes something or fails the
// token check is logged without sampling (logging.Audit).
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if origin, ok := s.crossOrigin(r); !ok {
			s.refuse(w, r, http.StatusForbidden, "cross_origin",
				"cross-origin request refused: the Origin "+strconvQuote(origin)+" is not this admin API", zap.String("origin", origin))
			return
		}
		if !probePaths[r.URL.Path] && !s.hostAllowed(r) {
			s.refuse(w, r, http.StatusMisdirectedRequest, "host_not_allowed",
				"the Host header "+strconvQuote(r.Host)+" does not name this admin API: use localhost, a loopback address, "+
					"the listen address or the address the request arrived on, or add the name to admin.allowed_hosts")
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead && !jsonOrMarked(r) {
			s.refuse(w, r, http.StatusUnsupportedMediaType, "unsupported_media_type",
				r.Method+" requests need Content-Type: application/json or the header "+MarkerHeader+": 1")
			return
		}
		if !strings.HasPrefix(r.URL.Path, "/v1/") {
			next.ServeHTTP(w, r)
			return
		}
		rw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rw, r)
		switch {
		case r.Method != http.MethodGet && r.Method != http.MethodHead:
			s.opts.Logger.Info("admin call", logging.Audit(), zap.String("method", r.Method), zap.String("path", r.URL.Path),
				zap.Int("status", rw.status), zap.String("remote", r.RemoteAddr), zap.String("trigger", r.Header.Get("X-Credswap-Trigger")))
		case rw.status == http.StatusUnauthorized:
			s.opts.Logger.Warn("admin call refused", logging.Audit(), zap.String("method", r.Method), zap.String("path", r.URL.Path),
				zap.Int("status", rw.status), zap.String("code", "unauthorized"), zap.String("remote", r.RemoteAddr))
		}
	})
}

// refuse answers a request the guard refuses, and logs it.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, status int, code, msg string, fields ...zap.Field) {
	s.opts.Logger.Warn("admin call refused", append([]zap.Field{logging.Audit(), zap.String("method", r.Method),
		zap.String("path", r.URL.Path), zap.Int("status", status), zap.String("code", code), zap.String("remote", r.RemoteAddr),
		zap.String("host", r.Host)}, fields...)...)
	writeError(w, status, code, msg)
}

// crossOrigin reports whether every Origin header of r names this server
// itself: scheme http, the same host and port as the Host header, and a
// host hostAllowed accepts. Only browsers send Origin, and no page is
// served here, so any other origin (including "null") is another site's.
// It returns the first refused origin.
func (s *Server) crossOrigin(r *http.Request) (string, bool) {
	for _, o := range r.Header.Values("Origin") {
		u, err := url.Parse(o)
		if err != nil || u.Scheme != "http" || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") ||
			!strings.EqualFold(u.Host, r.Host) || !s.isAllowedHost(u.Hostname(), r) {
			return o, false
		}
	}
	return "", true
}

// hostAllowed reports whether the Host header of r names this server.
// An absent Host (HTTP/1.0) names no other site and is accepted.
func (s *Server) hostAllowed(r *http.Request) bool {
	if r.Host == "" {
		return true
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return s.isAllowedHost(host, r)
}

// isAllowedHost reports whether host (without port) is localhost, a
// loopback address, the host of the listen address, the address the
// connection of r arrived on, or in admin.allowed_hosts.
func (s *Server) isAllowedHost(host string, r *http.Request) bool {
	host = normalizeHost(host)
	if host == "" {
		return false
	}
	if host == "localhost" || host == s.listenHost || s.allowed[host] {
		return true
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	ip = ip.Unmap()
	if ip.IsLoopback() {
		return true
	}
	// With admin.listen on 0.0.0.0 or [::], the server listens on every
	// address of the host (a pod IP, say): the one this connection arrived
	// on is one of them.
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok && !ip.IsUnspecified() {
		if ap, err := netip.ParseAddrPort(la.String()); err == nil && ap.Addr().Unmap().WithZone("") == ip.WithZone("") {
			return true
		}
	}
	return false
}

// normalizeHost lowercases a host name, drops IPv6 brackets and a final dot.
func normalizeHost(h string) string {
	h = strings.ToLower(strings.TrimSuffix(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"), "."))
	if ip, err := netip.ParseAddr(h); err == nil {
		return ip.Unmap().String()
	}
	return h
}

// jsonOrMarked reports whether r carries Content-Type: application/json or
// the X-Credswap header.
func jsonOrMarked(r *http.Request) bool {
	if r.Header.Get(MarkerHeader) != "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && mt == "application/json"
}

// statusWriter records the status a handler answered with.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// allowFor lets a handler run for d (0: without limit) by moving the
// connection's read and write deadlines, which the server's ReadTimeout and
// WriteTimeout set for every request.
func allowFor(w http.ResponseWriter, d time.Duration) {
	var t time.Time
	if d > 0 {
		t = time.Now().Add(d)
	}
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(t)
	rc.SetWriteDeadline(t)
}
