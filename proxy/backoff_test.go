package proxy

import (
	"errors"
	"testing"
	"time"
)

func TestSwitchRetryBacksOffAndResets(t *testing.T) {
	var r SwitchRetry
	now := time.Unix(1000, 0)
	if !r.Ready(now, 1) || r.Failure() != nil {
		t.Fatal("the zero value is not ready")
	}
	err := &SwitchError{Stage: StageReplay, Err: errors.New("permission denied to set role")}
	var waits []time.Duration
	for range 10 {
		r.Record(now, 1, SwitchFailed, err)
		f := r.Failure()
		waits = append(waits, f.RetryAt.Sub(now))
		if r.Ready(now, 1) || !r.Ready(f.RetryAt, 1) {
			t.Fatalf("ready before or not at RetryAt %v", f.RetryAt)
		}
		now = f.RetryAt
	}
	want := []time.Duration{100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000, 10000}
	for i, w := range want {
		if waits[i] != w*time.Millisecond {
			t.Fatalf("waits %v, want %v ms", waits, want)
		}
	}
	f := r.Failure()
	if f.Stage != StageReplay || f.Failures != 10 || f.Error != "replay: permission denied to set role" || f.Since != time.Unix(1000, 0) {
		t.Fatalf("failure %+v", f)
	}
	if !r.Ready(now, 2) {
		t.Fatal("a newer generation waits out the backoff of an older one")
	}
	r.Record(now, 1, SwitchBusy, nil) // a busy session keeps its backoff
	if r.Failure() == nil {
		t.Fatal("busy cleared the backoff")
	}
	r.Record(now, 1, SwitchFailed, errors.New("boom"))
	if f := r.Failure(); f.Stage != StageInternal {
		t.Fatalf("an untyped error is stage %q", f.Stage)
	}
	r.Record(now, 1, SwitchPinned, nil)
	if r.Failure() != nil || !r.Ready(now, 1) {
		t.Fatal("a pinned result did not clear the backoff")
	}
}
