package mysql

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/server"
	"go.uber.org/zap"

	"github.com/credswap/credswap/creds"
	"github.com/credswap/credswap/internal/logging"
	"github.com/credswap/credswap/proxy"
	"github.com/credswap/credswap/proxy/internal/relaybuf"
)

// defaultVersion is announced to clients before the proxy has seen the
// database's own greeting (the database was unreachable since start).
const defaultVersion = "5.5.5-10.11.0-MariaDB-credswap"

// Options configures a Handler.
type Options struct {
	// Backend is the protocol-neutral runtime (store, pool, sessions).
	Backend *proxy.Backend
	// Dialer logs in to the database.
	Dialer *Dialer
	// Users are the local logins.
	Users *Users
	// ClientTLS enables TLS towards clients; nil offers none.
	ClientTLS *tls.Config
	// TLSRequired refuses clients that do not use TLS.
	TLSRequired bool
	// HandshakeTimeout bounds TLS and authentication.
	HandshakeTimeout time.Duration
	// MaxMessageSize bounds any packet a client sends.
	MaxMessageSize int
	// MaxIdle mirrors the pool limit (used to skip resets when full).
	MaxIdle int
	// LocalInfile lets clients use LOAD DATA LOCAL INFILE; otherwise
	// LOCAL_FILES is negotiated on neither leg and the database refuses it.
	LocalInfile bool
	Logger      *zap.Logger
}

// Handler serves MySQL clients on one listener: it implements
// proxy.Handler. go-mysql's server package runs the connection phase
// (TLS, authentication); the proxy then takes over the raw connection.
type Handler struct {
	b                *proxy.Backend
	dialer           *Dialer
	users            atomic.Pointer[Users]
	srv              *server.Server
	tlsEnabled       bool
	tlsRequired      bool
	localInfile      bool
	handshakeTimeout time.Duration
	maxPayload       int // largest logical packet a client may send; 0: unlimited
	maxIdle          int
	log              *zap.Logger
	bufs             relaybuf.Pool
	nextID           atomic.Uint64

	// connMu guards the proxy-minted connection ids.
	connMu   sync.Mutex
	nextConn uint32
	conns    map[uint32]*session // nil value: reserved by a connection still logging in

	// addrMu guards localAddrs, the listener addresses clients connected
	// to: go-mysql caches caching_sha2_password logins per user@address.
	addrMu     sync.Mutex
	localAddrs map[string]struct{}

	// faultHook is nil except in tests (SetFaultHook).
	faultHook atomic.Pointer[func(point string)]
}

var _ proxy.Handler = (*Handler)(nil)

// SetFaultHook installs f, called at named points on the goroutine doing
// the work: "command" before each client command is relayed, "capture"
// and "replay" in every switch, "watch" when the watcher of an idle
// session sees its backend connection end. Tests use it to make one
// session panic and check that only that session is affected; nothing
// else sets it. nil removes it.
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

// NewHandler returns a Handler. Options.Backend, Dialer and Users are required.
func NewHandler(opts Options) (*Handler, error) {
	if opts.Backend == nil || opts.Dialer == nil || opts.Users == nil {
		return nil, errors.New("mysql: Backend, Dialer and Users are required")
	}
	if opts.TLSRequired && opts.ClientTLS == nil {
		return nil, errors.New("mysql: TLSRequired without ClientTLS")
	}
	h := &Handler{
		b:                opts.Backend,
		dialer:           opts.Dialer,
		tlsEnabled:       opts.ClientTLS != nil,
		tlsRequired:      opts.TLSRequired,
		localInfile:      opts.LocalInfile,
		handshakeTimeout: opts.HandshakeTimeout,
		maxPayload:       opts.MaxMessageSize,
		maxIdle:          opts.MaxIdle,
		log:              opts.Logger,
		conns:            make(map[uint32]*session),
		localAddrs:       make(map[string]struct{}),
	}
	if h.log == nil {
		h.log = zap.NewNop()
	}
	if h.handshakeTimeout <= 0 {
		h.handshakeTimeout = 10 * time.Second
	}
	var b [4]byte
	rand.Read(b[:])
	// Proxy ids live above 2^30, away from the database's small thread ids,
	// and below 2^31 for clients that store them signed.
	h.nextConn = 1<<30 + binary.LittleEndian.Uint32(b[:])%(1<<28)

	// caching_sha2_password's full authentication over plaintext encrypts
	// the password with the server's RSA key: the certificate's key if it
	// is RSA, otherwise one made for this handler.
	var rsaKey *rsa.PrivateKey
	var tlsCfg *tls.Config
	if opts.ClientTLS != nil {
		tlsCfg = opts.ClientTLS.Clone()
		if len(tlsCfg.Certificates) == 0 {
			return nil, errors.New("mysql: ClientTLS has no certificate")
		}
		rsaKey, _ = tlsCfg.Certificates[0].PrivateKey.(*rsa.PrivateKey)
	}
	if rsaKey == nil {
		var err error
		if rsaKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			return nil, fmt.Errorf("mysql: generating the RSA key for caching_sha2_password: %w", err)
		}
	}
	h.srv = server.NewServerWithAuth(defaultVersion, collationUTF8MB4GeneralCI, AuthCachingSHA2, rsaKey, tlsCfg,
		&server.DefaultAuthenticationProvider{})
	h.users.Store(opts.Users)
	return h, nil
}

// SetUsers replaces the local logins (configuration reload); sessions
// already authenticated are not affected. go-mysql's caching_sha2_password
// cache, which would let a changed password's old value in, is cleared for
// every user.
func (h *Handler) SetUsers(u *Users) {
	old := h.users.Swap(u)
	names := append(old.names(), u.names()...)
	h.addrMu.Lock()
	defer h.addrMu.Unlock()
	for addr := range h.localAddrs {
		for _, n := range names {
			h.srv.InvalidateCache(n, addr)
		}
	}
}

// advertised returns the capabilities the greeting offers.
func (h *Handler) advertised(info *serverInfo) uint32 {
	caps := proxyCaps
	if info == nil {
		caps &^= capDeprecateEOF | capQueryAttributes
	} else {
		caps &^= (capDeprecateEOF | capQueryAttributes) &^ info.caps
	}
	if h.tlsEnabled {
		caps |= capSSL
	}
	if h.localInfile {
		caps |= capLocalFiles
	}
	return caps
}

// mintConnID reserves a proxy connection id.
func (h *Handler) mintConnID() uint32 {
	h.connMu.Lock()
	defer h.connMu.Unlock()
	for {
		h.nextConn++
		if h.nextConn >= 1<<31 {
			h.nextConn = 1 << 30
		}
		if _, taken := h.conns[h.nextConn]; !taken {
			h.conns[h.nextConn] = nil
			return h.nextConn
		}
	}
}

func (h *Handler) freeConnID(id uint32) {
	h.connMu.Lock()
	delete(h.conns, id)
	h.connMu.Unlock()
}

// sessionByConnID returns the session with proxy connection id id.
func (h *Handler) sessionByConnID(id uint32) *session {
	h.connMu.Lock()
	defer h.connMu.Unlock()
	return h.conns[id]
}

// dial logs in a new backend connection and counts it.
func (h *Handler) dial(ctx context.Context, gen *creds.Generation, p dialParams, key string) (*serverConn, error) {
	sc, err := h.dialer.dial(ctx, gen, p)
	if err != nil {
		return nil, err
	}
	sc.key = key
	sc.conns = &h.b.Conns
	h.b.Conns.Opened(gen.N)
	return sc, nil
}

// ServeConn implements proxy.Handler.
func (h *Handler) ServeConn(ctx context.Context, conn net.Conn) {
	defer conn.Close()
	log := h.log.With(zap.String("client", conn.RemoteAddr().String()))
	deadline := time.Now().Add(h.handshakeTimeout)
	// Until it authenticates, the connection holds a handshake turn, not a
	// session slot (OnAuthSuccess takes that): connections that never log
	// in cannot lock out those that do.
	hs, err := h.b.EnterHandshake(conn, deadline)
	if err != nil {
		// A MySQL server past max_connections sends ERR 1040 in place of
		// its greeting.
		e := proxy.Errorf(proxy.CodeTooManyClients, err, "Too many connections")
		h.b.CountClientError(e.Code)
		log.Info("client refused", zap.String("code", e.Code.String()), zap.Error(err))
		conn.SetWriteDeadline(time.Now().Add(time.Second))
		conn.Write(appendErr(nil, 0, errorFor(e)))
		return
	}
	defer hs.Done()
	h.addrMu.Lock()
	if len(h.localAddrs) < 64 {
		h.localAddrs[conn.LocalAddr().String()] = struct{}{}
	}
	h.addrMu.Unlock()

	connID := h.mintConnID()
	info := h.dialer.serverInfo()
	g := greeting{version: defaultVersion, connID: connID, caps: h.advertised(info),
		collation: collationUTF8MB4GeneralCI, status: statusAutocommit}
	if info != nil {
		g.version, g.collation, g.status = info.version, info.collation, info.status
	}
	hc := &handshakeConn{Conn: conn, greeting: g}
	lg := &login{h: h, ctx: ctx, hc: hc, hs: hs, deadline: deadline, users: h.users.Load(), log: log}
	// The client slot OnAuthSuccess takes, until a session takes it over.
	defer func() {
		if lg.admitted {
			h.b.Release()
		}
	}()
	conn.SetDeadline(deadline)
	sc, err := h.srv.NewCustomizedConn(hc, lg, lg)
	if err != nil {
		h.freeConnID(connID)
		if lg.be != nil {
			lg.be.Close()
		}
		if hs.Evicted() {
			log.Debug("handshake closed to make room for a newer connection", zap.Error(err))
		} else if !lg.reported {
			log.Debug("client connection ended during the handshake", zap.Error(err))
		}
		return
	}
	conn.SetDeadline(time.Time{})
	hc.done.Store(true)
	client := sc.Conn.Conn
	if client == net.Conn(hc) {
		client = conn // plaintext: relay on the TCP connection itself
	}
	s := h.newSession(client, connID, sc.GetUser(), lg)
	lg.admitted = false // finish releases it
	s.log().Debug("session started", zap.Uint64("generation", lg.be.gen), zap.Uint32("connection_id", connID),
		zap.Uint32("backend_thread", lg.be.thread))
	s.run(ctx)
}

// login is one connection's go-mysql AuthenticationHandler and Handler:
// it answers credential lookups from the local users, takes the database
// from the handshake, and logs in to the backend before go-mysql sends the
// client its OK, so that a backend failure reaches the client as an ERR.
// Only the connection's handshake goroutine uses it.
type login struct {
	h        *Handler
	ctx      context.Context
	hc       *handshakeConn
	hs       *proxy.Handshake
	deadline time.Time // the handshake's
	users    *Users
	log      *zap.Logger
	db       string
	params   dialParams
	key      string
	be       *serverConn
	reported bool // the failure was logged
	admitted bool // holds a client slot (Backend.Admit)
}

var (
	_ server.AuthenticationHandler = (*login)(nil)
	_ server.Handler               = (*login)(nil)
)

// GetCredential implements server.AuthenticationHandler. Unknown users get
// a decoy, so that they fail like a wrong password.
func (l *login) GetCredential(username string) (server.Credential, bool, error) {
	if l.h.tlsRequired && !l.hc.tls {
		return server.Credential{}, false, goMyError(errorFor(proxy.Errorf(proxy.CodeTLSRequired, nil,
			"Connections using insecure transport are prohibited: this proxy requires TLS (connect with --ssl or tls=true)")))
	}
	l.h.b.ThrottleLogin(l.hc.Conn, username, l.deadline)
	pw, plugin := l.users.credential(username)
	return server.Credential{Passwords: []string{pw}, AuthPluginName: plugin}, true, nil
}

// OnAuthFailure implements server.AuthenticationHandler: it counts and logs
// the failure and makes sure the client sees only a sanitized error.
func (l *login) OnAuthFailure(c *server.Conn, err error) {
	l.reported = true
	log := l.log.With(zap.String("user", c.GetUser()))
	if l.hs.Evicted() {
		log.Debug("handshake closed to make room for a newer connection", zap.Error(err))
		l.hc.swallow.Store(true)
		return
	}
	var me *gomysql.MyError
	if errors.As(err, &me) {
		code := proxy.CodeProtocolViolation
		switch me.Code {
		case erAccessDenied:
			code = proxy.CodeClientAuthFailed
			l.h.b.CountClientAuthFailure()
			l.h.b.LoginFailed(l.hc.Conn, c.GetUser())
		case erSecureTransportReq:
			code = proxy.CodeTLSRequired
		}
		l.h.b.CountClientError(code)
		fields := []zap.Field{zap.String("code", code.String()), zap.Uint16("mysql_error", me.Code)}
		if code == proxy.CodeClientAuthFailed {
			fields = append(fields, logging.Audit()) // never sampled away
		}
		log.Info("client refused", fields...)
		return // go-mysql sends it as it is: a *MyError built by the proxy or go-mysql's standard text
	}
	// Anything else would reach the client with go-mysql's internal text:
	// send a generic error instead and drop go-mysql's.
	defer l.hc.swallow.Store(true)
	// go-mysql wraps read errors as text: the connection's own read error
	// tells a timeout or a client that left (neither is an authentication
	// failure) from a bad handshake.
	cause := err
	if l.hc.readErr != nil {
		cause = l.hc.readErr
	}
	if clientLeft(cause) {
		if l.hc.read > 0 { // not a port probe: it had started to log in
			l.h.b.CountClientError(proxy.CodeClientDisconnected)
		}
		log.Debug("client left during the handshake", zap.Error(err))
		return
	}
	e := proxy.Errorf(proxy.CodeProtocolViolation, err, "Bad handshake")
	code, state := uint16(erHandshake), "08S01"
	switch {
	case isTimeout(cause):
		e = proxy.Errorf(proxy.CodeHandshakeTimeout, err, "Bad handshake: timed out")
	case errors.Is(err, rsa.ErrDecryption):
		// libmariadb-based clients (the mariadb CLI, sysbench) answer
		// caching_sha2_password's full authentication on plaintext TCP with
		// the password in clear instead of RSA-encrypting it.
		e = proxy.Errorf(proxy.CodeClientAuthFailed, err, "Access denied for user '%s': caching_sha2_password needs "+
			"the password RSA-encrypted on a plaintext connection and this client did not encrypt it "+
			"(connect with TLS, or give this user auth: mysql_native_password)", c.GetUser())
		code, state = errorCode(e.Code)
		l.h.b.CountClientAuthFailure()
	}
	l.h.b.CountClientError(e.Code)
	fields := []zap.Field{zap.String("code", e.Code.String()), zap.Error(err)}
	if e.Code == proxy.CodeClientAuthFailed {
		fields = append(fields, logging.Audit()) // never sampled away
	}
	log.Info("client refused", fields...)
	me2 := &myError{Code: code, State: state, Message: e.Msg}
	pkt := appendErr(make([]byte, 0, 64), 0, me2)
	l.hc.Conn.SetWriteDeadline(time.Now().Add(time.Second)) // the handshake's may have passed (a timeout)
	c.WritePacket(append(make([]byte, 4, 4+len(pkt)-4), pkt[4:]...))
}

// OnAuthSuccess implements server.AuthenticationHandler: it logs in to the
// backend with the current credential, mirroring the client's database,
// collation, capabilities and connection attributes.
func (l *login) OnAuthSuccess(c *server.Conn) error {
	h := l.h
	l.hs.Done()
	if !h.b.Admit() {
		l.reported = true
		e := proxy.Errorf(proxy.CodeTooManyClients, nil, "Too many connections")
		h.b.CountClientError(e.Code)
		l.log.Info("client refused", zap.String("user", c.GetUser()), zap.String("code", e.Code.String()))
		return goMyError(errorFor(e))
	}
	l.admitted = true
	caps := c.Capability() & l.hc.greeting.caps
	l.params = dialParams{database: l.db, collation: c.Charset(), caps: caps, attrs: c.Attributes()}
	l.key = poolKey(l.params)
	// The handshake timeout covers authentication; waiting for a backend
	// connection is bounded by connect_timeout instead.
	l.hc.Conn.SetDeadline(time.Now().Add(h.b.ConnectTimeout() + 5*time.Second))
	ctx, cancel := context.WithTimeout(l.ctx, h.b.ConnectTimeout())
	defer cancel()
	pc, err := h.b.Connect(ctx, l.key, func(ctx context.Context, gen *creds.Generation) (proxy.PooledConn, error) {
		return h.dial(ctx, gen, l.params, l.key)
	})
	if err != nil {
		l.reported = true
		log := l.log.With(zap.String("user", c.GetUser()), zap.String("database", l.db))
		var dbErr *gomysql.MyError
		if errors.Is(err, proxy.ErrPermanent) && errors.As(err, &dbErr) {
			// The database refused this client's request (unknown
			// database, no access to it): pass its error on as a direct
			// connection would.
			h.b.CountClientError(proxy.CodeBackendUnavailable)
			log.Info("database refused the session", zap.Uint16("mysql_error", dbErr.Code), zap.String("message", dbErr.Message))
			return &gomysql.MyError{Code: dbErr.Code, State: dbErr.State, Message: dbErr.Message}
		}
		msg := "Can't connect to the database server through the proxy"
		if errors.Is(err, creds.ErrRejected) {
			msg += ": the database rejected the proxy's credential"
		}
		e := proxy.Errorf(proxy.CodeBackendUnavailable, err, "%s", msg)
		h.b.CountClientError(e.Code)
		log.Info("client refused", zap.String("code", e.Code.String()), zap.Error(e))
		return goMyError(errorFor(e))
	}
	l.be = pc.(*serverConn)
	c.SetStatus(l.be.status)
	l.hc.Conn.SetDeadline(time.Now().Add(h.handshakeTimeout))
	return nil
}

// UseDB implements server.Handler; go-mysql calls it with the database
// named in the handshake.
func (l *login) UseDB(db string) error {
	l.db = db
	return nil
}

var errNotServed = errors.New("mysql: commands are relayed, not served by go-mysql")

// HandleQuery implements server.Handler; never called.
func (l *login) HandleQuery(string) (*gomysql.Result, error) { return nil, errNotServed }

// HandleFieldList implements server.Handler; never called.
func (l *login) HandleFieldList(string, string) ([]*gomysql.Field, error) { return nil, errNotServed }

// HandleStmtPrepare implements server.Handler; never called.
func (l *login) HandleStmtPrepare(string) (int, int, any, error) { return 0, 0, nil, errNotServed }

// HandleStmtExecute implements server.Handler; never called.
func (l *login) HandleStmtExecute(any, string, []any) (*gomysql.Result, error) {
	return nil, errNotServed
}

// HandleStmtClose implements server.Handler; never called.
func (l *login) HandleStmtClose(any) error { return errNotServed }

// HandleOtherCommand implements server.Handler; never called.
func (l *login) HandleOtherCommand(byte, []byte) error { return errNotServed }

// poolKey identifies backend connections interchangeable for a client:
// database, collation, mirrored capabilities and connection attributes
// (except _pid, which would keep a new process of the same program from
// reusing anything).
func poolKey(p dialParams) string {
	keys := make([]string, 0, len(p.attrs))
	for k := range p.attrs {
		if k != "_pid" {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var b strings.Builder
	b.WriteString(p.database)
	b.WriteByte(0)
	b.WriteString(strconv.Itoa(int(p.collation)))
	b.WriteByte(0)
	b.WriteString(strconv.FormatUint(uint64(p.caps&mirrored), 16))
	for _, k := range keys {
		b.WriteByte(0)
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(p.attrs[k])
	}
	return b.String()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
