package logging

import (
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestAuditEntriesAreNotSampled logs 300 entries with one message within
// a tick: unmarked ones are sampled as zap's production logger does (the
// first 100, then every 100th), marked ones, by field or by the logger's
// With fields, are all written.
func TestAuditEntriesAreNotSampled(t *testing.T) {
	obs, logs := observer.New(zapcore.DebugLevel)
	// An hour-long tick keeps every entry of this test in one tick.
	log := zap.New(NewSampledCore(obs, time.Hour, 100, 100))

	for range 300 {
		log.Info("client refused", zap.String("code", "client_auth_failed"), Audit())
	}
	if n := logs.FilterMessage("client refused").Len(); n != 300 {
		t.Fatalf("marked entries: %d written, want 300", n)
	}

	for range 300 {
		log.Info("noisy")
	}
	if n := logs.FilterMessage("noisy").Len(); n != 102 {
		t.Fatalf("unmarked entries: %d written, want 102 (100, then every 100th)", n)
	}

	audited := log.Named("rotate").With(zap.String("backend", "orders"), Audit())
	for range 300 {
		audited.Info("rotation phase")
	}
	got := logs.FilterMessage("rotation phase")
	if got.Len() != 300 {
		t.Fatalf("entries of a marked logger: %d written, want 300", got.Len())
	}
	if f := got.All()[0].ContextMap(); f["audit"] != true || f["backend"] != "orders" {
		t.Fatalf("fields of a marked logger's entry: %v", f)
	}

	// The sampler is shared: a logger derived without the mark samples
	// with the same counts.
	derived := log.With(zap.String("backend", "orders"))
	derived.Info("noisy")
	if n := logs.FilterMessage("noisy").Len(); n != 102 {
		t.Fatalf("a derived logger's entry past the first 100 was written: %d", n)
	}
	// A disabled level is still dropped.
	obsWarn, warnLogs := observer.New(zapcore.WarnLevel)
	zap.New(NewSampledCore(obsWarn, time.Hour, 100, 100)).Info("quiet", Audit())
	if warnLogs.Len() != 0 {
		t.Fatal("an info entry was written by a warn-level core")
	}
}
