package postgres

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"io"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/credswap/credswap/config"
)

// BenchmarkWrongPassword measures the proxy's side of a failed login by a
// configured user with a wrong password and by an unknown user imitating
// one, alternately so that both see the same load: the two must cost the
// same. The client's messages are made by hand (a SCRAM proof of random
// bytes, which the server checks as it would a real one), so that only
// the server's work and the in-memory pipe are timed. It reports
// known-ns/op and unknown-ns/op.
//
// go1.26.8 linux/amd64, 2 shared cores of an Oxide Virtual Turin-like
// CPU, five runs of go test -run '^$' -bench 'BenchmarkWrongPassword$'
// -benchtime 10000x -count 5 ./proxy/postgres (known / unknown, µs):
//
//	scram-sha-256  52.0/53.4  52.0/52.6  65.3/66.2  66.8/61.7  64.7/68.8
//	md5            35.6/38.5  35.2/35.4  34.4/36.2  51.7/49.8  45.2/49.8
//
// The two differ by less than the noise between runs, either way.
func BenchmarkWrongPassword(b *testing.B) {
	for _, auth := range []string{AuthSCRAM, AuthMD5} {
		b.Run(auth, func(b *testing.B) {
			users, err := LoadUsers([]config.Client{{User: "app", Password: "app-secret", Auth: auth}})
			if err != nil {
				b.Fatal(err)
			}
			var spent [2]time.Duration
			for i := 0; b.Loop(); i++ {
				for k := range 2 {
					unknown := (i+k)%2 == 1 // alternate which goes first
					user := "app"
					if unknown {
						user = "ghost"
					}
					start := time.Now()
					wrongLogin(b, users, user)
					if unknown {
						spent[1] += time.Since(start)
					} else {
						spent[0] += time.Since(start)
					}
				}
			}
			b.ReportMetric(float64(spent[0].Nanoseconds())/float64(b.N), "known-ns/op")
			b.ReportMetric(float64(spent[1].Nanoseconds())/float64(b.N), "unknown-ns/op")
		})
	}
}

// wrongLogin runs one login as user with a wrong password over a pipe.
func wrongLogin(b *testing.B, users *Users, user string) {
	server, client := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, perr := authenticate(&authConn{rw: server, user: user}, users); perr == nil {
			b.Error("a wrong password was accepted")
		}
		server.Close()
	}()
	wrongClient(b, client)
	<-done
	client.Close()
}

// wrongClient answers the proxy's authentication request with a wrong
// password: a SCRAM exchange with a random proof, or a random md5 response.
func wrongClient(b *testing.B, conn net.Conn) {
	fe := pgproto3.NewFrontend(conn, conn)
	msg, err := fe.Receive()
	if err != nil {
		b.Fatal(err)
	}
	switch msg.(type) {
	case *pgproto3.AuthenticationMD5Password:
		fe.Send(&pgproto3.PasswordMessage{Password: "md5" + base64.StdEncoding.EncodeToString(random(16))})
		if err := fe.Flush(); err != nil {
			b.Fatal(err)
		}
	case *pgproto3.AuthenticationSASL:
		fe.Send(&pgproto3.SASLInitialResponse{AuthMechanism: mechSCRAM,
			Data: []byte("n,,n=,r=" + base64.StdEncoding.EncodeToString(random(18)))})
		if err := fe.Flush(); err != nil {
			b.Fatal(err)
		}
		msg, err := fe.Receive()
		if err != nil {
			b.Fatal(err)
		}
		cont, ok := msg.(*pgproto3.AuthenticationSASLContinue)
		if !ok {
			b.Fatalf("got %T, want AuthenticationSASLContinue", msg)
		}
		nonce, _, _ := bytes.Cut(cont.Data, []byte(","))
		fe.Send(&pgproto3.SASLResponse{Data: []byte("c=biws," + string(nonce) + ",p=" + base64.StdEncoding.EncodeToString(random(32)))})
		if err := fe.Flush(); err != nil {
			b.Fatal(err)
		}
	default:
		b.Fatalf("unexpected %T", msg)
	}
	io.Copy(io.Discard, conn) // until the server side closes
}

func random(n int) []byte {
	p := make([]byte, n)
	rand.Read(p)
	return p
}
