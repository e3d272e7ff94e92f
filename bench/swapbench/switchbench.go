//go:build linux

package main

import (
	"context"
	"fmt"
	"time"
)

// drainTimeout bounds the wait for one rotation's drain: the proxy's drain_deadline (60 s) plus
// the adoption and some slack.
const drainTimeout = 90 * time.Second

// switchResult is part 1: every rotation over the idle sessions.
type switchResult struct {
	k         int
	rotations []rotation
}

// runSwitch opens the idle sessions, checks them, then rotates r times, waiting for each drain
// and checking every session after it. The sessions are closed before it returns.
func (b *bench) runSwitch(ctx context.Context) (*switchResult, error) {
	cfg, err := sessionConfig(b.cs.Addr, b.cs.Local)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	sessions, err := openSessions(ctx, cfg, b.o.k)
	if err != nil {
		return nil, err
	}
	defer closeSessions(sessions)
	b.logf("  %d sessions open in %v", len(sessions), time.Since(start).Round(time.Millisecond))
	if err := checkSessions(ctx, sessions, b.rot.current.User, "before"); err != nil {
		return nil, fmt.Errorf("before the first rotation: %w", err)
	}
	st, err := b.admin.status(ctx)
	if err != nil {
		return nil, err
	}
	if st.Sessions.Total != len(sessions) {
		return nil, fmt.Errorf("credswap reports %d sessions, want %d", st.Sessions.Total, len(sessions))
	}

	res := &switchResult{k: len(sessions)}
	for i := 1; i <= b.o.r; i++ {
		r, err := b.rotate(ctx, drainTimeout)
		if err != nil {
			return nil, fmt.Errorf("rotation %d: %w", i, err)
		}
		res.rotations = append(res.rotations, r)
		b.logf("  rotation %d: generation %d (%s), drain complete %v after the file was replaced; results %v",
			i, r.gen, r.user, r.seen.Sub(r.wrote).Round(time.Millisecond), r.st.Drain.Results)
		if r.st.Sessions.Total != len(sessions) {
			return nil, fmt.Errorf("rotation %d: credswap reports %d sessions after the drain, want %d", i, r.st.Sessions.Total, len(sessions))
		}
		if err := checkSessions(ctx, sessions, r.user, fmt.Sprintf("rotation-%d", i)); err != nil {
			return nil, fmt.Errorf("after rotation %d: %w", i, err)
		}
	}
	b.logf("  every session works after every rotation")
	return res, nil
}
