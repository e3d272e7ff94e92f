package rotate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/credswap/credswap/creds"
)

// phase is one step of a rotation: it returns a detail for the record.
type phase struct {
	name string
	run  func(ctx context.Context) (string, error)
}

// phases returns the phases of the configured strategy.
func (r *Rotator) phases() []phase {
	return []phase{
		{PhasePrepare, r.prepare},
		{PhaseApply, r.apply},
		{PhaseVerify, r.verify},
		{PhasePublish, r.publish},
		{PhaseDrain, r.drain},
		{PhaseRetire, r.retire},
		{PhaseVerifyRetired, r.verifyRetired},
	}
}

// execute runs every phase not yet done. The running record and pending
// state are set.
func (r *Rotator) execute(ctx context.Context, _ []string) {
	total := r.o.DrainDeadline + r.o.Config.Grace.D() + r.o.Config.FleetDeadline.D() + 5*time.Minute
	ctx, cancel := context.WithTimeout(ctx, total)
	defer cancel()
	for _, p := range r.phases() {
		r.mu.Lock()
		skip := r.running.done(p.name)
		r.mu.Unlock()
		if skip {
			continue
		}
		r.begin(p.name)
		start := time.Now()
		detail, err := p.run(ctx)
		if err != nil && r.stopping() {
			// The proxy is stopping: the journal keeps the rotation as
			// running, and the next start resumes it.
			r.log.Warn("rotation interrupted by shutdown; it resumes at the next start", zap.String("phase", p.name))
			r.abandon()
			return
		}
		r.end(p.name, detail, err, time.Since(start))
		if err != nil {
			r.failed(ctx, p.name, err)
			return
		}
		if r.o.AfterPhase != nil {
			r.o.AfterPhase(p.name)
		}
	}
	r.finish(StateSucceeded, "")
}

// resume continues an interrupted rotation or rolls it back.
func (r *Rotator) resume(ctx context.Context) {
	r.mu.Lock()
	rec, pend := r.running, r.pend
	applied, published := rec.done(PhaseApply), rec.done(PhasePublish)
	r.mu.Unlock()
	if pend != nil && !applied && pend.NewPassword != "" {
		// The crash may have come after the database took the change but
		// before the journal recorded it: find out.
		vctx, cancel := context.WithTimeout(ctx, time.Minute)
		err := r.o.DB.Verify(vctx, creds.Credential{Username: pend.NewUsername, Password: pend.NewPassword})
		cancel()
		if err == nil {
			r.begin(PhaseApply)
			r.end(PhaseApply, "applied before the restart", nil, 0)
			applied = true
		}
	}
	switch {
	case pend == nil || !applied:
		// Nothing was changed in the database (or the journal lost the
		// secret): there is nothing to undo.
		r.finish(StateRolledBack, "interrupted before the database was changed; nothing to undo")
	case !published:
		vctx, cancel := context.WithTimeout(ctx, time.Minute)
		err := r.o.DB.Verify(vctx, creds.Credential{Username: pend.NewUsername, Password: pend.NewPassword})
		cancel()
		if err != nil {
			r.failed(ctx, PhaseVerify, fmt.Errorf("after a restart the new credential does not work: %w", err))
			return
		}
		r.execute(ctx, nil)
	default:
		r.execute(ctx, nil)
	}
}

// stopping reports whether Stop was called.
func (r *Rotator) stopping() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ctx != nil && r.ctx.Err() != nil
}

// abandon forgets the running rotation in memory only; the journal still
// shows the phase that was interrupted as started, not done.
func (r *Rotator) abandon() {
	r.mu.Lock()
	r.running, r.pend = nil, nil
	done := r.done
	r.done = nil
	r.mu.Unlock()
	if done != nil {
		close(done)
	}
}

func (r *Rotator) begin(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.running.Phases = append(r.running.Phases, PhaseRecord{Name: name, StartedAt: time.Now().UTC()})
	r.saveLocked()
}

func (r *Rotator) end(name, detail string, err error, took time.Duration) {
	r.mu.Lock()
	p := &r.running.Phases[len(r.running.Phases)-1]
	p.EndedAt = time.Now().UTC()
	p.Detail = detail
	p.Outcome = "ok"
	if err != nil {
		p.Outcome, p.Error = "failed", err.Error()
	}
	if detail == "skipped" {
		p.Outcome, p.Detail = "skipped", ""
	}
	outcome := p.Outcome
	r.saveLocked()
	id, trigger := r.running.ID, r.running.Trigger
	r.mu.Unlock()
	fields := []zap.Field{zap.String("rotation", id), zap.String("trigger", trigger), zap.String("phase", name),
		zap.String("outcome", outcome), zap.Duration("took", took)}
	if detail != "" && detail != "skipped" {
		fields = append(fields, zap.String("detail", detail))
	}
	if err != nil {
		r.log.Warn("rotation phase", append(fields, zap.Error(err))...)
		return
	}
	r.log.Info("rotation phase", fields...)
}

func (r *Rotator) saveLocked() {
	r.j.data.Current = r.running
	r.j.data.Pending = r.pend
	if err := r.j.save(); err != nil {
		r.log.Error("writing the rotation journal failed", zap.Error(err))
	}
}

// failed handles a failed phase: before the new credential is published
// the change is rolled back; afterwards it is live and the rotation is
// recorded as failed.
func (r *Rotator) failed(ctx context.Context, phaseName string, cause error) {
	r.mu.Lock()
	published := r.running.done(PhasePublish)
	r.mu.Unlock()
	if published {
		r.finish(StateFailed, fmt.Sprintf("%s: %v", phaseName, cause))
		return
	}
	r.begin(PhaseRollback)
	start := time.Now()
	detail, err := r.rollback(ctx)
	r.end(PhaseRollback, detail, err, time.Since(start))
	if err != nil {
		r.finish(StateFailed, fmt.Sprintf("%s: %v; rollback failed: %v", phaseName, cause, err))
		return
	}
	r.finish(StateRolledBack, fmt.Sprintf("%s: %v", phaseName, cause))
}

func (r *Rotator) finish(state, msg string) {
	r.mu.Lock()
	rec := r.running
	rec.State, rec.Error, rec.EndedAt = state, msg, time.Now().UTC()
	r.j.data.Current = rec
	r.j.finish()
	if err := r.j.save(); err != nil {
		r.log.Error("writing the rotation journal failed", zap.Error(err))
	}
	r.running, r.pend = nil, nil
	done := r.done
	r.done = nil
	r.mu.Unlock()
	if done != nil {
		close(done)
	}
	r.o.Metrics.rotations.WithLabelValues(rec.Backend, rec.Strategy, state).Inc()
	fields := []zap.Field{zap.String("rotation", rec.ID), zap.String("state", state), zap.String("from_user", rec.FromUser),
		zap.String("to_user", rec.ToUser), zap.Duration("took", rec.EndedAt.Sub(rec.StartedAt))}
	if state == StateSucceeded {
		r.log.Info("rotation finished", fields...)
	} else {
		r.log.Error("rotation did not complete", append(fields, zap.String("error", msg))...)
	}
}

// admin returns the credential administrative statements run as.
func (r *Rotator) admin(ctx context.Context) (creds.Credential, error) {
	if r.o.Admin == nil {
		if cur := r.o.Backend.Store.Current(); cur != nil {
			return cur.Cred, nil
		}
		return creds.Credential{}, errors.New("no current credential")
	}
	c, err := r.o.Admin.Fetch(ctx)
	if err != nil {
		return creds.Credential{}, fmt.Errorf("reading the admin credential: %w", err)
	}
	return c, nil
}

// current is the credential in use when the rotation began.
func (r *Rotator) current() (creds.Credential, error) {
	cur := r.o.Backend.Store.Current()
	if cur == nil {
		return creds.Credential{}, errors.New("the backend has no credential")
	}
	return cur.Cred, nil
}
