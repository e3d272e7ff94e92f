package mysql_test

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/go-mysql-org/go-mysql/client"
)

// TestBadCommands sends malformed and unknown commands after login: each
// gets an answer (an ERR packet, except where the database itself accepts
// the command) and the same session keeps working.
func TestBadCommands(t *testing.T) {
	p, db, _ := setup(t)
	gm, err := client.Connect(fmt.Sprintf("%s:%d", p.Host, p.Port), p.ClientUser, p.ClientPassword, db,
		func(c *client.Conn) error { return c.SetCollation("utf8mb4_general_ci") })
	if err != nil {
		t.Fatal(err)
	}
	defer gm.Close()
	exec := func(id uint32) []byte {
		b := []byte{0x17}
		b = binary.LittleEndian.AppendUint32(b, id)
		return binary.LittleEndian.AppendUint32(append(b, 0), 1)
	}
	for _, c := range []struct {
		name    string
		payload []byte
		ok      bool // the database answers OK/EOF
	}{
		{"unknown command", []byte{0x99, 1, 2, 3}, false},
		{"EXECUTE of an unknown statement", exec(12345), false},
		{"truncated EXECUTE", []byte{0x17, 1}, false},
		{"truncated FETCH", []byte{0x1c, 1, 0}, false},
		{"FETCH of an unknown statement", append(binary.LittleEndian.AppendUint32([]byte{0x1c}, 777), 1, 0, 0, 0), false},
		{"RESET of an unknown statement", binary.LittleEndian.AppendUint32([]byte{0x1a}, 4242), false},
		{"truncated SET_OPTION", []byte{0x1b}, true}, // MariaDB answers EOF
		{"INIT_DB of a missing database", append([]byte{0x02}, "no_such_db_here"...), false},
		{"empty COM_QUERY", []byte{0x03}, false},
	} {
		gm.ResetSequence()
		if err := gm.WritePacket(append(make([]byte, 4), c.payload...)); err != nil {
			t.Fatalf("%s: write: %v", c.name, err)
		}
		pkt, err := gm.ReadPacket()
		if err != nil {
			t.Fatalf("%s: no answer: %v", c.name, err)
		}
		switch {
		case c.ok && (pkt[0] == 0x00 || pkt[0] == 0xfe):
		case !c.ok && pkt[0] == 0xff:
			t.Logf("%s: ERR %d %s", c.name, binary.LittleEndian.Uint16(pkt[1:]), pkt[9:])
		default:
			t.Fatalf("%s: unexpected answer %x", c.name, pkt)
		}
		r, err := gm.Execute("SELECT 41 + 1")
		if err != nil {
			t.Fatalf("after %s: %v", c.name, err)
		}
		if v, _ := r.GetInt(0, 0); v != 42 {
			t.Fatalf("after %s: %d", c.name, v)
		}
	}
	// COM_STMT_CLOSE has no response, even for an unknown id.
	gm.ResetSequence()
	if err := gm.WritePacket(append(make([]byte, 4), binary.LittleEndian.AppendUint32([]byte{0x19}, 999)...)); err != nil {
		t.Fatal(err)
	}
	if r, err := gm.Execute("SELECT 7"); err != nil {
		t.Fatalf("after CLOSE of an unknown statement: %v", err)
	} else if v, _ := r.GetInt(0, 0); v != 7 {
		t.Fatalf("after CLOSE of an unknown statement: %d", v)
	}
}
