package mysql

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"net"
	"testing"

	"github.com/credswap/credswap/proxy"
)

// greetingFor builds a handshake v10 as MySQL and MariaDB send it, with
// plugin as the initial authentication method ("" leaves PLUGIN_AUTH out).
func greetingFor(plugin string, caps uint32) []byte {
	caps |= capProtocol41 | capSecureConnection
	if plugin != "" {
		caps |= capPluginAuth
	}
	g := []byte{10}
	g = append(g, "10.11.19-MariaDB\x00"...)
	g = binary.LittleEndian.AppendUint32(g, 42)
	g = append(g, "abcdefgh"...)
	g = append(g, 0)
	g = binary.LittleEndian.AppendUint16(g, uint16(caps))
	g = append(g, 45)
	g = binary.LittleEndian.AppendUint16(g, 2)
	g = binary.LittleEndian.AppendUint16(g, uint16(caps>>16))
	g = append(g, 21)
	g = append(g, make([]byte, 10)...)
	g = append(g, "ijklmnopqrst\x00"...)
	if plugin != "" {
		g = append(g, plugin...)
		g = append(g, 0)
	}
	return g
}

func TestParseGreetingAuth(t *testing.T) {
	for _, tt := range []struct {
		name   string
		g      []byte
		plugin string
		ssl    bool
	}{
		{"native", greetingFor("mysql_native_password", 0), "mysql_native_password", false},
		{"caching_sha2 with SSL", greetingFor("caching_sha2_password", capSSL), "caching_sha2_password", true},
		{"no plugin", greetingFor("", 0), "", false},
	} {
		caps, plugin, ok := parseGreetingAuth(tt.g)
		if !ok || plugin != tt.plugin || (caps&capSSL != 0) != tt.ssl {
			t.Errorf("%s: caps %#x plugin %q ok %v; want plugin %q ssl %v", tt.name, caps, plugin, ok, tt.plugin, tt.ssl)
		}
	}
	for _, bad := range [][]byte{nil, {9}, {10, 'x'}, greetingFor("x", 0)[:20]} {
		if _, _, ok := parseGreetingAuth(bad); ok {
			t.Errorf("parseGreetingAuth(%q) ok", bad)
		}
	}
}

func keyPEM(t testing.TB, k *rsa.PublicKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// TestGuardCheck: which server packets a guarded login lets the client
// library see, packet by packet after the handshake response.
func TestGuardCheck(t *testing.T) {
	pinned, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	moreData := func(b ...byte) []byte { return append([]byte{0x01}, b...) }
	switchTo := func(plugin string) []byte { return append(append([]byte{0xfe}, plugin...), 0, 1, 2, 3) }
	ok := []byte{0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00}
	tests := []struct {
		name    string
		key     *rsa.PublicKey
		packets [][]byte // greeting, then the server's answers
		refused bool     // the last packet is refused
	}{
		{"native", nil, [][]byte{greetingFor(pluginNative, 0), ok}, false},
		{"caching_sha2 fast path", nil, [][]byte{greetingFor(pluginCachingSHA2, 0), moreData(3), ok}, false},
		{"switch to native", nil, [][]byte{greetingFor(pluginCachingSHA2, 0), switchTo(pluginNative), ok}, false},
		{"switch to ed25519", nil, [][]byte{greetingFor(pluginNative, 0), switchTo(pluginEd25519), ok}, false},
		{"refused login", nil, [][]byte{greetingFor(pluginNative, 0), {0xff, 0x15, 0x04}}, false},
		{"server error instead of a greeting", nil, [][]byte{{0xff, 0x10, 0x04}}, false},
		{"switch to clear_password", nil, [][]byte{greetingFor(pluginNative, 0), switchTo(pluginClear)}, true},
		{"clear_password greeting", nil, [][]byte{greetingFor(pluginClear, 0)}, true},
		{"old password switch", nil, [][]byte{greetingFor(pluginNative, 0), {0xfe}}, true},
		{"unknown method", nil, [][]byte{greetingFor(pluginNative, 0), switchTo("dialog")}, true},
		{"full authentication, no key", nil, [][]byte{greetingFor(pluginCachingSHA2, 0), moreData(4)}, true},
		{"full authentication, pinned key", &pinned.PublicKey,
			[][]byte{greetingFor(pluginCachingSHA2, 0), moreData(4), moreData(keyPEM(t, &pinned.PublicKey)...), ok}, false},
		{"full authentication, another key", &pinned.PublicKey,
			[][]byte{greetingFor(pluginCachingSHA2, 0), moreData(4), moreData(keyPEM(t, &other.PublicKey)...)}, true},
		{"sha256_password, no key", nil, [][]byte{greetingFor(pluginSHA256, 0), moreData(keyPEM(t, &other.PublicKey)...)}, true},
		{"sha256_password, pinned key", &pinned.PublicKey,
			[][]byte{greetingFor(pluginSHA256, 0), moreData(keyPEM(t, &pinned.PublicKey)...), ok}, false},
		{"more data for native", nil, [][]byte{greetingFor(pluginNative, 0), moreData(4)}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer b.Close()
			c := &guardConn{Conn: a, key: tt.key}
			var err error
			for i, p := range tt.packets {
				if err = c.check(p); err != nil {
					if i != len(tt.packets)-1 {
						t.Fatalf("packet %d refused: %v", i, err)
					}
					break
				}
				if c.state == guardResponse {
					c.state = guardAuth // the library answered the greeting
				}
			}
			if (err != nil) != tt.refused {
				t.Fatalf("refused = %v (%v), want %v", err != nil, err, tt.refused)
			}
			if tt.refused && (!errors.Is(err, proxy.ErrUpstreamAuthRefused) || !errors.Is(Refusal(c), proxy.ErrPermanent)) {
				t.Fatalf("refusal %v is not ErrUpstreamAuthRefused and ErrPermanent", err)
			}
			if !tt.refused && c.state != guardDone {
				t.Fatalf("state after the last packet = %d, want done", c.state)
			}
		})
	}
}

// TestGuardFailures: a server that does not speak the protocol, or lacks
// the TLS upstream_tls requires, ends the login with an error that is not
// a refusal (it may be retried).
func TestGuardFailures(t *testing.T) {
	for name, tt := range map[string]struct {
		tls      bool
		greeting []byte
	}{
		"not a greeting": {false, []byte{9, 1, 2}},
		"no TLS":         {true, greetingFor(pluginNative, 0)},
	} {
		a, b := net.Pipe()
		c := &guardConn{Conn: a}
		if tt.tls {
			c.tls = &tls.Config{}
		}
		err := c.check(tt.greeting)
		b.Close()
		if err == nil || errors.Is(err, proxy.ErrUpstreamAuthRefused) || errors.Is(err, proxy.ErrPermanent) || Refusal(c) != err {
			t.Errorf("%s: got %v, want a recorded error that is neither a refusal nor permanent", name, err)
		}
	}
}

// FuzzLoginGuard feeds arbitrary server packets to a guarded login: it
// must never panic, and a refusal must stick.
func FuzzLoginGuard(f *testing.F) {
	f.Add(greetingFor(pluginCachingSHA2, 0), []byte{0x01, 0x04}, []byte{0x01, 0x03}, false)
	f.Add(greetingFor(pluginNative, 0), []byte{0xfe, 'x', 0}, []byte{0x00}, true)
	key, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, greeting, p1, p2 []byte, pinned bool) {
		a, b := net.Pipe()
		defer b.Close()
		c := &guardConn{Conn: a}
		if pinned {
			c.key = &key.PublicKey
		}
		for _, p := range [][]byte{greeting, p1, p2} {
			if len(p) == 0 || c.state == guardDone {
				continue
			}
			if c.check(p) != nil {
				if Refusal(c) == nil {
					t.Fatal("refused without a recorded refusal")
				}
				return
			}
			if c.state == guardResponse {
				c.state = guardAuth
			}
		}
	})
}
