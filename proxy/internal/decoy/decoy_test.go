package decoy

import (
	"bytes"
	"testing"
)

func TestBytes(t *testing.T) {
	a := Bytes("l", "alice", 100)
	if len(a) != 100 {
		t.Fatalf("len %d, want 100", len(a))
	}
	if !bytes.Equal(a, Bytes("l", "alice", 100)) {
		t.Fatal("not stable for the same label and name")
	}
	if !bytes.Equal(a[:16], Bytes("l", "alice", 16)) {
		t.Fatal("a shorter value is not a prefix of a longer one")
	}
	for _, other := range [][2]string{{"l", "bob"}, {"m", "alice"}, {"l\x00alice", ""}, {"", "l\x00alice"}} {
		if bytes.Equal(a[:32], Bytes(other[0], other[1], 32)) {
			t.Errorf("label %q name %q gives the bytes of label l name alice", other[0], other[1])
		}
	}
}

func TestPick(t *testing.T) {
	const n, names = 3, 3000
	var count [n]int
	for i := range names {
		name := string(rune('a'+i%26)) + string(rune('a'+i/26%26)) + string(rune('a'+i/676))
		k := Pick("l", name, n)
		if k < 0 || k >= n {
			t.Fatalf("Pick = %d, out of [0, %d)", k, n)
		}
		if k != Pick("l", name, n) {
			t.Fatal("not stable")
		}
		count[k]++
	}
	// Each alternative is expected names/n = 1000 times; 800 is more than
	// 7 standard deviations away.
	for k, c := range count {
		if c < 800 {
			t.Errorf("alternative %d picked %d times of %d: %v", k, c, names, count)
		}
	}
	if Pick("l", "x", 1) != 0 {
		t.Fatal("Pick with one alternative")
	}
}
