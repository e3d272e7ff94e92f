package mysql

import (
	"bytes"
	"testing"
)

// TestUnsolicitedErr: what a server sent before it closed an idle
// connection is forwarded only when it starts with a complete ERR packet,
// with the server's own sequence number (MySQL 8.0.24 sends 4031 with
// sequence 0).
func TestUnsolicitedErr(t *testing.T) {
	timeout := appendErr(nil, 0, &myError{Code: 4031, State: "HY000",
		Message: "The client was disconnected by the server because of inactivity."})
	for _, c := range []struct {
		name string
		got  []byte
		want []byte
	}{
		{"nothing", nil, nil},
		{"ERR packet", timeout, timeout},
		{"ERR packet and more", append(append([]byte(nil), timeout...), 1, 0, 0, 0, 0), timeout},
		{"partial ERR packet", timeout[:len(timeout)-1], nil},
		{"header only", timeout[:4], nil},
		{"OK packet", appendOK(nil, 0, 0, 0), nil},
		{"ERR without a code", []byte{1, 0, 0, 0, hdrERR}, nil},
	} {
		if got := unsolicitedErr(c.got); !bytes.Equal(got, c.want) {
			t.Errorf("%s: %x, want %x", c.name, got, c.want)
		}
	}
	if e := parseErr(unsolicitedErr(timeout)[4:]); e.Code != 4031 || timeout[3] != 0 {
		t.Fatalf("forwarded %+v with sequence %d", e, timeout[3])
	}
}
