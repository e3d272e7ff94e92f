package admin

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"
)

// TestServerLimits: the admin server bounds how long a client may take
// to send its request and read the answer, how long a kept-alive
// connection may idle, and the header size.
func TestServerLimits(t *testing.T) {
	s := New(Options{})
	if s.srv.ReadHeaderTimeout != readHeaderTimeout || s.srv.ReadTimeout != readTimeout || s.srv.WriteTimeout != writeTimeout ||
		s.srv.IdleTimeout != idleTimeout || s.srv.MaxHeaderBytes != maxHeaderBytes || s.opts.MaxConns != DefaultMaxConns {
		t.Fatalf("server limits: %+v, max connections %d", s.srv, s.opts.MaxConns)
	}
}

// TestAllowFor: a handler that runs past WriteTimeout (rotate?wait=1, a
// long drain) still answers when it called allowFor; without it the
// client gets no answer.
func TestAllowFor(t *testing.T) {
	s := New(Options{})
	s.srv.ReadTimeout, s.srv.WriteTimeout = 100*time.Millisecond, 100*time.Millisecond
	mux := http.NewServeMux()
	// The handlers stand for work that outlasts the timeouts.
	mux.HandleFunc("/extended", func(w http.ResponseWriter, r *http.Request) {
		allowFor(w, 0)
		time.Sleep(300 * time.Millisecond)
		io.WriteString(w, "done")
	})
	mux.HandleFunc("/plain", func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(300 * time.Millisecond)
		io.WriteString(w, "done")
	})
	s.srv.Handler = s.guard(mux)
	if err := s.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	defer s.Shutdown(context.Background())
	base := "http://" + s.Addr().String()

	resp, err := http.Get(base + "/extended")
	if err != nil {
		t.Fatalf("a handler that called allowFor: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(b) != "done" {
		t.Fatalf("a handler that called allowFor: %d %q", resp.StatusCode, b)
	}
	if resp, err := http.Get(base + "/plain"); err == nil {
		resp.Body.Close()
		t.Fatalf("a handler past WriteTimeout answered: %d", resp.StatusCode)
	}
}
