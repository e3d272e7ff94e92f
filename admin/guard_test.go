package admin_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/credswap/credswap/admin"
	"github.com/credswap/credswap/config"
	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
	"github.com/credswap/credswap/rotate"
)

// rawResponse is what the admin API answered to a raw request.
type rawResponse struct {
	Status int
	Body   string
	Code   string // the JSON error code, if any
}

// raw sends request text (lines joined with CRLF, the blank line and body
// appended) over a new TCP connection to addr, exactly as written, and
// reads the answer.
func raw(t *testing.T, addr string, lines []string, body string) rawResponse {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	req := strings.Join(lines, "\r\n") + "\r\n"
	if body != "" {
		req += fmt.Sprintf("Content-Length: %d\r\n", len(body))
	}
	req += "Connection: close\r\n\r\n" + body
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer to %q: %v", lines[0], err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e admin.ErrorResponse
	json.Unmarshal(b, &e)
	return rawResponse{Status: resp.StatusCode, Body: string(b), Code: e.Code}
}

// adminHostPort is host:port of the proxy's admin API.
func adminHostPort(p *proxytest.Proxy) string { return strings.TrimPrefix(p.AdminURL, "http://") }

// withSingleUserRotation configures a rotation the test user runs on its
// own password, so that POST .../rotate has something to start.
func withSingleUserRotation(t *testing.T) proxytest.Option {
	journal := filepath.Join(t.TempDir(), "rotation.json")
	return func(c *config.Config) {
		c.Backends[0].Rotation = config.Rotation{
			Strategy: "single-user",
			Password: config.PasswordPolicy{Length: 24, Alphabet: "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"},
			Schedule: config.Schedule{Interval: config.Duration(time.Hour)},
			Publish:  config.Publish{To: "file"},
			Journal:  journal,
		}
		c.Backends[0].DrainDeadline = config.Duration(10 * time.Second)
	}
}

// TestAdminRefusesWebPages shows each request a web page could make to an
// admin API without a token refused: a cross-origin POST with a
// CORS-"simple" content type to drain, refresh and rotate; a DNS-rebinding
// Host on /v1; a POST without a JSON content type or the X-Credswap
// header. The CLI's requests, probes and scrapes keep working.
func TestAdminRefusesWebPages(t *testing.T) {
	pg := testenv.PG(t)
	user, pass := pg.CreateUser(t, "guard")
	p := proxytest.Start(t, pg, user, pass, withSingleUserRotation(t))
	addr := adminHostPort(p)
	_, port, _ := net.SplitHostPort(addr)
	host := "Host: " + addr

	// Cross-origin, as a page on another site submits a form or calls
	// fetch(..., {mode: "no-cors"}): refused before anything runs.
	for _, action := range []string{"drain", "refresh", "rotate"} {
		for _, origin := range []string{"http://evil.example", "null", "http://localhost:8080", "http://127.0.0.1:" + port + ".evil.example"} {
			r := raw(t, addr, []string{"POST /v1/backends/pg/" + action + " HTTP/1.1", host,
				"Origin: " + origin, "Content-Type: text/plain"}, "x")
			if r.Status != http.StatusForbidden || r.Code != "cross_origin" {
				t.Fatalf("%s from Origin %s: %d %s", action, origin, r.Status, r.Body)
			}
		}
	}
	// Even with the marker header, another origin is refused.
	if r := raw(t, addr, []string{"POST /v1/backends/pg/drain HTTP/1.1", host, "Origin: http://evil.example", "X-Credswap: 1"}, ""); r.Status != http.StatusForbidden {
		t.Fatalf("drain from another origin with the marker: %d %s", r.Status, r.Body)
	}
	if st := p.App.Rotator("pg").Status(); st.Running != nil || st.Last != nil {
		t.Fatalf("a refused request started a rotation: %+v", st)
	}
	if p.Backend().Store.Current().N != 1 {
		t.Fatal("a refused request changed the credential generation")
	}

	// DNS rebinding: the page's own name in Host, no Origin on a
	// same-origin GET. Refused on /v1.
	for _, h := range []string{"evil.example", "evil.example:" + port, "0.0.0.0:" + port, "192.0.2.77:" + port, "localhost.evil.example"} {
		r := raw(t, addr, []string{"GET /v1/status HTTP/1.1", "Host: " + h}, "")
		if r.Status != http.StatusMisdirectedRequest || r.Code != "host_not_allowed" || !strings.Contains(r.Body, "admin.allowed_hosts") {
			t.Fatalf("GET /v1/status with Host %s: %d %s", h, r.Status, r.Body)
		}
	}
	// Loopback names and addresses, in any case and with a final dot.
	for _, h := range []string{addr, "localhost:" + port, "LOCALHOST.:" + port, "127.0.0.1", "127.1.2.3:" + port, "[::1]:" + port} {
		if r := raw(t, addr, []string{"GET /v1/status HTTP/1.1", "Host: " + h}, ""); r.Status != http.StatusOK {
			t.Fatalf("GET /v1/status with Host %s: %d %s", h, r.Status, r.Body)
		}
	}
	// Probes and scrapes answer any Host (they carry no secret), but not
	// another origin.
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if r := raw(t, addr, []string{"GET " + path + " HTTP/1.1", "Host: pod-7.orders.svc:" + port}, ""); r.Status != http.StatusOK {
			t.Fatalf("GET %s with a service name as Host: %d %s", path, r.Status, r.Body)
		}
		if r := raw(t, addr, []string{"GET " + path + " HTTP/1.1", host, "Origin: http://evil.example"}, ""); r.Status != http.StatusForbidden {
			t.Fatalf("GET %s from another origin: %d %s", path, r.Status, r.Body)
		}
	}

	// A POST needs Content-Type: application/json or X-Credswap.
	for _, h := range [][]string{{}, {"Content-Type: text/plain"}, {"Content-Type: application/x-www-form-urlencoded"}, {"Content-Type: multipart/form-data; boundary=x"}} {
		r := raw(t, addr, append([]string{"POST /v1/backends/pg/drain HTTP/1.1", host}, h...), "")
		if r.Status != http.StatusUnsupportedMediaType || r.Code != "unsupported_media_type" {
			t.Fatalf("drain with %v: %d %s", h, r.Status, r.Body)
		}
	}
	for _, h := range [][]string{{"Content-Type: application/json"}, {"Content-Type: Application/JSON; charset=utf-8"}, {"X-Credswap: 1"},
		{"X-Credswap: 1", "Origin: http://" + addr}} {
		r := raw(t, addr, append([]string{"POST /v1/backends/pg/drain HTTP/1.1", host}, h...), "")
		if r.Status != http.StatusOK {
			t.Fatalf("drain with %v: %d %s", h, r.Status, r.Body)
		}
	}
	// PUT too.
	if r := raw(t, addr, []string{"PUT /v1/backends/pg/schedule HTTP/1.1", host, "Content-Type: text/plain"}, `{"enabled": false}`); r.Status != http.StatusUnsupportedMediaType {
		t.Fatalf("PUT schedule as text/plain: %d %s", r.Status, r.Body)
	}
	if r := raw(t, addr, []string{"PUT /v1/backends/pg/schedule HTTP/1.1", host, "Content-Type: application/json"}, `{"enabled": false}`); r.Status != http.StatusOK {
		t.Fatalf("PUT schedule as JSON: %d %s", r.Status, r.Body)
	}

	// The normal path: a rotation with ?wait=1 runs to its end.
	var rec rotate.Record
	if code := p.AdminDo(t, http.MethodPost, "/v1/backends/pg/rotate?wait=1", &rec); code != http.StatusOK || rec.State != rotate.StateSucceeded {
		t.Fatalf("rotate?wait=1: %d %+v", code, rec)
	}

	// Every refusal is an audit line.
	logs := p.Logs.String()
	for _, code := range []string{"cross_origin", "host_not_allowed", "unsupported_media_type"} {
		if !strings.Contains(logs, `"msg":"admin call refused"`) || !strings.Contains(logs, `"code":"`+code+`"`) {
			t.Fatalf("no audit line for a %s refusal", code)
		}
	}
	if !strings.Contains(logs, `"msg":"admin call","audit":true,"method":"POST","path":"/v1/backends/pg/rotate","status":200`) {
		t.Fatal("no audit line for the rotation call")
	}
}

// TestAdminHostOffLoopback: with admin.listen on every address (which
// needs a token), a Host naming the address the request arrived on works,
// as kubelet probes and Prometheus send it (Host: <pod IP>:port), and so
// do admin.allowed_hosts; another address or name is refused on /v1.
func TestAdminHostOffLoopback(t *testing.T) {
	ip := nonLoopbackIPv4(t)
	pg := testenv.PG(t)
	user, pass := pg.CreateUser(t, "guard")
	tokenFile := filepath.Join(t.TempDir(), "token")
	token := proxytest.Random(16)
	os.WriteFile(tokenFile, []byte(token+"\n"), 0o600)
	p := proxytest.Start(t, pg, user, pass, func(c *config.Config) {
		c.Admin.Listen = "0.0.0.0:0"
		c.Admin.TokenFile = tokenFile
		c.Admin.AllowedHosts = []string{"credswap.orders.svc"}
	})
	_, port, _ := net.SplitHostPort(adminHostPort(p))
	addr := net.JoinHostPort(ip, port)
	auth := "Authorization: Bearer " + token
	other := "198.51.100.7" // an address that is not this host's
	if ip == other {
		other = "198.51.100.8"
	}
	for h, want := range map[string]int{
		addr:                               http.StatusOK,
		"credswap.orders.svc:" + port:      http.StatusOK,
		"CREDSWAP.ORDERS.SVC":              http.StatusOK,
		other + ":" + port:                 http.StatusMisdirectedRequest,
		"orders.svc:" + port:               http.StatusMisdirectedRequest,
		"0.0.0.0:" + port:                  http.StatusMisdirectedRequest,
		"evil.example:" + port:             http.StatusMisdirectedRequest,
		"credswap.orders.svc.evil.example": http.StatusMisdirectedRequest,
	} {
		if r := raw(t, addr, []string{"GET /v1/status HTTP/1.1", "Host: " + h, auth}, ""); r.Status != want {
			t.Fatalf("GET /v1/status over %s with Host %s: %d, want %d: %s", ip, h, r.Status, want, r.Body)
		}
	}
	// The probe and the scrape by pod IP.
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if r := raw(t, addr, []string{"GET " + path + " HTTP/1.1", "Host: " + addr}, ""); r.Status != http.StatusOK {
			t.Fatalf("GET %s with Host %s: %d", path, addr, r.Status)
		}
	}
	// The token is still needed, and its absence is an audit line.
	if r := raw(t, addr, []string{"GET /v1/status HTTP/1.1", "Host: " + addr}, ""); r.Status != http.StatusUnauthorized {
		t.Fatalf("GET /v1/status without the token: %d", r.Status)
	}
	proxytest.Eventually(t, 5*time.Second, "the audit line of the refused token", func() bool {
		return strings.Contains(p.Logs.String(), `"code":"unauthorized"`)
	})
	if strings.Contains(p.Logs.String(), token) {
		t.Fatal("the admin token appears in the log")
	}
}

// nonLoopbackIPv4 returns an IPv4 address of this host that is not
// loopback, or skips the test.
func nonLoopbackIPv4(t *testing.T) string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Skipf("interface addresses: %v", err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			return n.IP.String()
		}
	}
	t.Skip("this host has no non-loopback IPv4 address")
	return ""
}

// TestAdminConnectionCap: past admin.max_connections, a connection waits
// until another closes.
func TestAdminConnectionCap(t *testing.T) {
	pg := testenv.PG(t)
	user, pass := pg.CreateUser(t, "guard")
	p := proxytest.Start(t, pg, user, pass, func(c *config.Config) { c.Admin.MaxConnections = 2 })
	addr := adminHostPort(p)
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	done := make(chan int, 1)
	go func() {
		resp, err := http.Get(p.AdminURL + "/healthz")
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	// A negative check needs a bound: half a second without an answer.
	select {
	case code := <-done:
		t.Fatalf("a third connection was served while two were open: %d", code)
	case <-time.After(500 * time.Millisecond):
	}
	held[0].Close()
	select {
	case code := <-done:
		if code != http.StatusOK {
			t.Fatalf("the waiting request: %d", code)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the waiting connection was not served after another closed")
	}
}
