package main

import (
	"testing"
	"time"

	"github.com/credswap/credswap/rotate"
)

// TestFormatWaiting: the CLI names the user, the deadline, the counts and
// every holder of a rotation's fleet wait.
func TestFormatWaiting(t *testing.T) {
	w := &rotate.FleetWait{User: "orders_a", Deadline: time.Date(2026, 12, 8, 1, 2, 3, 0, time.UTC), Own: 1, Others: 7,
		Holders: []rotate.Holder{{Client: "10.0.0.7", Application: "pgbench", Sessions: 5}, {Client: "10.0.0.9", Sessions: 3}}}
	got := formatWaiting(w)
	want := "retire waits for other clients to leave orders_a until 2026-12-08T01:02:03Z: 7 sessions of others, 1 of this proxy (10.0.0.7 pgbench: 5, 10.0.0.9: 3)"
	if got != want {
		t.Fatalf("formatWaiting:\n got %s\nwant %s", got, want)
	}
}
