package postgres

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/zap"

	"github.com/credswap/credswap/creds"
	"github.com/credswap/credswap/internal/logging"
	"github.com/credswap/credswap/proxy"
	"github.com/credswap/credswap/proxy/internal/relaybuf"
)

// Protocol codes of startup-phase packets
// (https://www.postgresql.org/docs/current/protocol-message-formats.html).
const (
	codeSSLRequest    = 80877103
	codeGSSENCRequest = 80877104
	codeCancelRequest = 80877102
	protocolMajor3    = 3
)

// tlsRecordHandshake is the first byte of a TLS ClientHello: a client using
// direct TLS (sslnegotiation=direct, PostgreSQL 17) starts with it instead
// of an SSLRequest.
const tlsRecordHandshake = 0x16

// Options configures a Handler.
type Options struct {
	// Backend is the protocol-neutral runtime (store, pool, sessions).
	Backend *proxy.Backend
	// Dialer logs in to the database.
	Dialer *Dialer
	// Users are the local logins.
	Users *Users
	// ClientTLS enables TLS towards clients; nil answers SSLRequest with 'N'.
	ClientTLS *tls.Config
	// TLSRequired refuses clients that do not use TLS.
	TLSRequired bool
	// HandshakeTimeout bounds TLS, startup and authentication.
	HandshakeTimeout time.Duration
	// MaxMessageSize bounds any message a client sends.
	MaxMessageSize int
	// MaxIdle mirrors the pool limit (used to skip resets when full).
	MaxIdle int
	// Loops relays plaintext sessions in epoll loops; nil relays every
	// session with two goroutines.
	Loops  *Loops
	Logger *zap.Logger
}

// Handler serves PostgreSQL clients on one listener: it implements
// proxy.Handler.
type Handler struct {
	b                *proxy.Backend
	dialer           *Dialer
	users            atomic.Pointer[Users]
	clientTLS        *tls.Config
	tlsRequired      bool
	cbData           []byte
	handshakeTimeout time.Duration
	maxBody          int
	maxIdle          int
	log              *zap.Logger
	bufs             relaybuf.Pool
	loops            *Loops
	nextID           atomic.Uint64

	cancelMu sync.Mutex
	cancels  map[uint32]*session

	// faultHook is nil except in tests (SetFaultHook).
	faultHook atomic.Pointer[func(point string)]
}

// SetFaultHook installs f, called at named points of every switch
// ("capture", "replay") on the goroutine doing it. Tests use it to make a
// switch fail or panic and check that only that session is affected;
// nothing else sets it. nil removes it.
func (h *Handler) SetFaultHook(f func(point string)) {
	if f == nil {
		h.faultHook.Store(nil)
		return
	}
	h.faultHook.Store(&f)
}

// fault calls the fault hook, if any.
func (h *Handler) fault(point string) {
	if f := h.faultHook.Load(); f != nil {
		(*f)(point)
	}
}

var _ proxy.Handler = (*Handler)(nil)

// NewHandler returns a Handler. Options.Backend, Dialer and Users are required.
func NewHandler(opts Options) (*Handler, error) {
	if opts.Backend == nil || opts.Dialer == nil || opts.Users == nil {
		return nil, errors.New("postgres: Backend, Dialer and Users are required")
	}
	h := &Handler{
		b:                opts.Backend,
		dialer:           opts.Dialer,
		tlsRequired:      opts.TLSRequired,
		handshakeTimeout: opts.HandshakeTimeout,
		maxBody:          opts.MaxMessageSize - 4,
		maxIdle:          opts.MaxIdle,
		loops:            opts.Loops,
		log:              opts.Logger,
		cancels:          make(map[uint32]*session),
	}
	if h.log == nil {
		h.log = zap.NewNop()
	}
	if h.handshakeTimeout <= 0 {
		h.handshakeTimeout = 10 * time.Second
	}
	if opts.MaxMessageSize <= 0 {
		h.maxBody = 0
	}
	if opts.ClientTLS != nil {
		cfg := opts.ClientTLS.Clone()
		if len(cfg.Certificates) == 0 {
			return nil, errors.New("postgres: ClientTLS has no certificate")
		}
		leaf := cfg.Certificates[0].Leaf
		if leaf == nil {
			var err error
			if leaf, err = x509.ParseCertificate(cfg.Certificates[0].Certificate[0]); err != nil {
				return nil, fmt.Errorf("postgres: parsing client TLS certificate: %w", err)
			}
		}
		h.cbData = serverEndPoint(leaf)
		h.clientTLS = cfg
	} else if opts.TLSRequired {
		return nil, errors.New("postgres: TLSRequired without ClientTLS")
	}
	h.users.Store(opts.Users)
	return h, nil
}

// SetUsers replaces the local logins (configuration reload); sessions
// already authenticated are not affected.
func (h *Handler) SetUsers(u *Users) { h.users.Store(u) }

// dial logs in a new backend connection and counts it.
func (h *Handler) dial(ctx context.Context, gen *creds.Generation, database string, params map[string]string, key string) (*serverConn, error) {
	sc, err := h.dialer.dial(ctx, gen, database, params)
	if err != nil {
		return nil, err
	}
	sc.key = key
	if tc, ok := sc.conn.(*net.TCPConn); ok && h.loops != nil {
		fc, err := detachTCP(tc)
		if err != nil {
			sc.conn.Close()
			return nil, err
		}
		sc.conn = fc
	}
	sc.conns = &h.b.Conns
	h.b.Conns.Opened(gen.N)
	return sc, nil
}

// startup is what the client asked for in its StartupMessage.
type startup struct {
	conn     net.Conn // the client connection, TLS-wrapped if negotiated
	tls      bool
	user     string
	database string
	params   map[string]string // forwarded to the backend
}

// ServeConn implements proxy.Handler.
func (h *Handler) ServeConn(ctx context.Context, conn net.Conn) {
	defer conn.Close()
	log := h.log.With(zap.String("client", conn.RemoteAddr().String()))
	deadline := time.Now().Add(h.handshakeTimeout)
	conn.SetDeadline(deadline)
	// Until it authenticates, the connection holds a handshake turn, not a
	// session slot: connections that never log in cannot lock out those
	// that do.
	hs, err := h.b.EnterHandshake(conn, deadline)
	if err != nil {
		// As PostgreSQL does when it cannot start a backend: the error is
		// sent before the startup packet is read.
		h.reject(conn, log, proxy.Errorf(proxy.CodeTooManyClients, err, "sorry, too many connections are logging in"))
		return
	}
	defer hs.Done()
	st, err := h.readStartup(conn)
	if err != nil {
		switch {
		case hs.Evicted():
			log.Debug("handshake closed to make room for a newer connection", zap.Error(err))
		case st != nil: // the client speaks the protocol: tell it why
			h.reject(st.conn, log, err)
		case !errors.Is(err, io.EOF):
			log.Debug("closing connection before startup", zap.Error(err))
		}
		return
	}
	if st == nil { // CancelRequest handled
		return
	}
	conn = st.conn
	log = log.With(zap.String("user", st.user), zap.String("database", st.database))
	if h.tlsRequired && !st.tls {
		h.reject(conn, log, proxy.Errorf(proxy.CodeTLSRequired, nil, "this proxy requires TLS (connect with sslmode=require or stronger)"))
		return
	}

	h.b.ThrottleLogin(conn, st.user, deadline)
	ac := &authConn{rw: conn, user: st.user, tls: st.tls, cbData: h.cbData}
	if !st.tls {
		ac.cbData = nil
	}
	final, perr := authenticate(ac, h.users.Load())
	if perr != nil {
		switch {
		case hs.Evicted():
			log.Debug("handshake closed to make room for a newer connection", zap.Error(perr.Err))
			return
		case perr.Code == proxy.CodeClientAuthFailed:
			h.b.CountClientAuthFailure()
			h.b.LoginFailed(conn, st.user)
		case perr.Code == proxy.CodeClientDisconnected: // nobody left to tell
			h.b.CountClientError(perr.Code)
			log.Debug("client left during authentication", zap.Error(perr.Err))
			return
		}
		h.reject(conn, log, perr)
		return
	}
	hs.Done()
	conn.SetDeadline(time.Time{})
	if !h.b.Admit() {
		h.reject(conn, log, proxy.Errorf(proxy.CodeTooManyClients, nil, "sorry, too many clients already"))
		return
	}
	// The slot belongs to the connection until a session takes it over
	// (a session relayed by a loop outlives this goroutine).
	owned := true
	defer func() {
		if owned {
			h.b.Release()
		}
	}()

	key := poolKey(st.database, st.params)
	cctx, cancel := context.WithTimeout(ctx, h.b.ConnectTimeout())
	pc, err := h.b.Connect(cctx, key, func(ctx context.Context, gen *creds.Generation) (proxy.PooledConn, error) {
		return h.dial(ctx, gen, st.database, st.params, key)
	})
	cancel()
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && errors.Is(err, proxy.ErrPermanent) {
		// The database refused this client's request (unknown database,
		// no CONNECT privilege, bad startup option): pass its error on as
		// a direct connection would.
		h.b.CountClientError(proxy.CodeBackendUnavailable)
		log.Info("database refused the session", zap.String("sqlstate", pgErr.Code), zap.String("message", pgErr.Message))
		conn.SetWriteDeadline(time.Now().Add(time.Second))
		conn.Write(appendMsg(nil, &pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL",
			Code: pgErr.Code, Message: pgErr.Message, Detail: pgErr.Detail, Hint: pgErr.Hint}))
		return
	}
	if err != nil {
		msg := "could not connect to the database server"
		if errors.Is(err, creds.ErrRejected) {
			msg = "could not connect to the database server: the database rejected the proxy's credential"
		}
		h.reject(conn, log, proxy.Errorf(proxy.CodeBackendUnavailable, err, "%s", msg))
		return
	}
	be := pc.(*serverConn)

	s := h.newSession(conn, st, be)
	owned = false // finish releases it
	out := append(final, appendMsg(nil, &pgproto3.AuthenticationOk{})...)
	for k, v := range be.params {
		out = appendMsg(out, &pgproto3.ParameterStatus{Name: k, Value: v})
	}
	var secret [4]byte
	binary.BigEndian.PutUint32(secret[:], s.cancelSecret())
	out = appendMsg(out, &pgproto3.BackendKeyData{ProcessID: s.cancelPID, SecretKey: secret[:]})
	out = appendMsg(out, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	if _, err := conn.Write(out); err != nil {
		s.releaseSlot()
		be.Close()
		return
	}
	s.log().Debug("session started", zap.Uint64("generation", be.gen))
	if tc, ok := conn.(*net.TCPConn); ok && h.loops != nil && be.forLoop() {
		fc, err := detachTCP(tc)
		if err != nil {
			s.finish(false, err)
			return
		}
		s.client = fc
		s.startLoop(h.loops.pick())
		return
	}
	if err := be.forGoroutines(); err != nil {
		s.finish(false, err)
		return
	}
	s.run(ctx)
}

// reject sends a FATAL error to a client that has not logged in, and counts it.
func (h *Handler) reject(conn net.Conn, log *zap.Logger, err error) {
	pe := proxy.AsError(err)
	h.b.CountClientError(pe.Code)
	fields := []zap.Field{zap.String("code", pe.Code.String()), zap.Error(pe)}
	if pe.Code == proxy.CodeClientAuthFailed {
		fields = append(fields, logging.Audit()) // never sampled away
	}
	log.Info("client refused", fields...)
	conn.SetWriteDeadline(time.Now().Add(time.Second))
	conn.Write(appendFatal(nil, pe))
}

// readStartup negotiates encryption and reads the StartupMessage. It
// returns (nil, nil) after serving a CancelRequest, and a non-nil startup
// with an error when the client should be told why it is refused.
func (h *Handler) readStartup(conn net.Conn) (*startup, error) {
	st := &startup{conn: conn}
	var first [1]byte
	if _, err := io.ReadFull(conn, first[:]); err != nil {
		return nil, err
	}
	prefix := first[:]
	if first[0] == tlsRecordHandshake {
		if h.clientTLS == nil {
			return nil, errors.New("direct TLS connection but no TLS certificate is configured")
		}
		cfg := h.clientTLS.Clone()
		cfg.NextProtos = []string{"postgresql"} // required for direct TLS
		tc := tls.Server(&prefixConn{Conn: conn, prefix: prefix}, cfg)
		if err := tc.Handshake(); err != nil {
			return nil, fmt.Errorf("direct TLS handshake: %w", err)
		}
		if tc.ConnectionState().NegotiatedProtocol != "postgresql" {
			return nil, errors.New("direct TLS without the postgresql ALPN protocol")
		}
		st.conn, st.tls, prefix = tc, true, nil
	}
	for range 3 {
		body, err := readStartupPacket(st.conn, prefix)
		prefix = nil
		if err != nil {
			return nil, err
		}
		code := binary.BigEndian.Uint32(body)
		switch code {
		case codeSSLRequest:
			if st.tls {
				return nil, errors.New("SSLRequest on an encrypted connection")
			}
			if h.clientTLS == nil {
				if _, err := st.conn.Write([]byte{'N'}); err != nil {
					return nil, err
				}
				continue
			}
			if _, err := st.conn.Write([]byte{'S'}); err != nil {
				return nil, err
			}
			tc := tls.Server(st.conn, h.clientTLS)
			if err := tc.Handshake(); err != nil {
				return nil, fmt.Errorf("TLS handshake: %w", err)
			}
			st.conn, st.tls = tc, true
		case codeGSSENCRequest:
			if _, err := st.conn.Write([]byte{'N'}); err != nil {
				return nil, err
			}
		case codeCancelRequest:
			var cr pgproto3.CancelRequest
			if err := cr.Decode(body); err != nil {
				return nil, err
			}
			h.cancelRequest(cr.ProcessID, cr.SecretKey)
			return nil, nil
		default:
			if code>>16 != protocolMajor3 {
				return st, proxy.Errorf(proxy.CodeFeatureNotSupported, nil,
					"unsupported frontend protocol %d.%d: server supports 3.0", code>>16, code&0xffff)
			}
			return st, h.parseStartup(st, code, body[4:])
		}
	}
	return nil, errors.New("too many startup negotiation packets")
}

// parseStartup reads the parameters of a StartupMessage and answers a newer
// minor protocol version or _pq_ options with NegotiateProtocolVersion.
func (h *Handler) parseStartup(st *startup, code uint32, b []byte) error {
	params := map[string]string{}
	var unknown []string
	for len(b) > 0 && b[0] != 0 {
		k, rest, ok1 := cutNul(b)
		v, rest2, ok2 := cutNul(rest)
		if !ok1 || !ok2 {
			return proxy.Errorf(proxy.CodeProtocolViolation, nil, "invalid startup packet layout")
		}
		b = rest2
		if strings.HasPrefix(k, "_pq_.") {
			unknown = append(unknown, k)
			continue
		}
		params[k] = v
	}
	if code&0xffff > 0 || len(unknown) > 0 {
		msg := &pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: 0, UnrecognizedOptions: unknown}
		if _, err := st.conn.Write(appendMsg(nil, msg)); err != nil {
			return err
		}
	}
	st.user = params["user"]
	if st.user == "" {
		return proxy.Errorf(proxy.CodeClientAuthFailed, nil, "no PostgreSQL user name specified in startup packet")
	}
	st.database = params["database"]
	if st.database == "" {
		st.database = st.user
	}
	if r, ok := params["replication"]; ok && r != "false" && r != "off" && r != "0" && r != "no" {
		return proxy.Errorf(proxy.CodeFeatureNotSupported, nil, "replication connections are not supported by this proxy")
	}
	delete(params, "user")
	delete(params, "database")
	delete(params, "replication")
	st.params = params
	return nil
}

func cutNul(b []byte) (string, []byte, bool) {
	for i, c := range b {
		if c == 0 {
			return string(b[:i]), b[i+1:], true
		}
	}
	return "", nil, false
}

// poolKey identifies backend connections interchangeable for a client.
func poolKey(database string, params map[string]string) string {
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	b.WriteString(database)
	for _, k := range keys {
		b.WriteByte(0)
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(params[k])
	}
	return b.String()
}

// newSession creates a session for an authenticated client with a
// proxy-minted cancel key; it joins the backend's registry once its relay
// runs (see session.run and session.startLoop).
func (h *Handler) newSession(conn net.Conn, st *startup, be *serverConn) *session {
	id := h.nextID.Add(1)
	s := &session{
		h:           h,
		id:          id,
		client:      conn,
		clientAddr:  conn.RemoteAddr().String(),
		crd:         relaybuf.NewReader(conn, &h.bufs),
		user:        st.user,
		database:    st.database,
		params:      st.params,
		key:         be.key,
		connectedAt: time.Now(),
		be:          be,
		paused:      make(chan struct{}, 1),
		resume:      make(chan *serverConn, 1),
		g2done:      make(chan struct{}),
		holdCh:      make(chan struct{}, 1),
	}
	s.gucSink = s.addCustomSetting
	s.txStatus.Store('I')
	s.gen.Store(be.gen)
	s.target.Store(&cancelTarget{pid: be.pid, secret: be.secret})
	h.cancelMu.Lock()
	for {
		var b [8]byte
		rand.Read(b[:])
		pid := minCancelPID + binary.BigEndian.Uint32(b[:4])%(1<<31-minCancelPID)
		if _, taken := h.cancels[pid]; !taken {
			s.cancelPID = pid
			s.secret = binary.BigEndian.Uint32(b[4:])
			h.cancels[pid] = s
			break
		}
	}
	h.cancelMu.Unlock()
	return s
}

// minCancelPID is the lowest process ID the proxy mints for BackendKeyData.
// Minted IDs are positive int4 values, as a real PostgreSQL's are (clients
// pass them to pg_cancel_backend(int)), and above Linux's largest process
// ID (2^22), so that one passed to pg_terminate_backend on the database
// can never name another client's backend process.
const minCancelPID = 1<<22 + 1

func (s *session) cancelSecret() uint32 { return s.secret }

// unregister forgets the session and its cancel key.
func (h *Handler) unregister(s *session) {
	h.cancelMu.Lock()
	if h.cancels[s.cancelPID] == s {
		delete(h.cancels, s.cancelPID)
	}
	h.cancelMu.Unlock()
	h.b.Sessions.Remove(s)
}

// cancelRequest forwards a client's CancelRequest for a proxy key to the
// session's current backend process, with that process's own key.
func (h *Handler) cancelRequest(pid uint32, secret []byte) {
	h.cancelMu.Lock()
	s := h.cancels[pid]
	h.cancelMu.Unlock()
	if s == nil || len(secret) != 4 {
		return
	}
	var want [4]byte
	binary.BigEndian.PutUint32(want[:], s.secret)
	if subtle.ConstantTimeCompare(secret, want[:]) != 1 {
		return
	}
	t := s.target.Load()
	if err := h.dialer.cancel(context.Background(), t.pid, t.secret); err != nil {
		s.log().Warn("forwarding cancel request failed", zap.Error(err))
	}
}

// prefixConn replays bytes already read before the connection's own.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
