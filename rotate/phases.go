package rotate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/credswap/credswap/creds"
)

func (r *Rotator) strategy() string { return r.o.Config.Strategy }

func (r *Rotator) pending() *pending {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pend
}

// prepare picks the login to change and its new password.
func (r *Rotator) prepare(ctx context.Context) (string, error) {
	cur, err := r.current()
	if err != nil {
		return "", err
	}
	p := &pending{OldUsername: cur.Username, OldPassword: cur.Password, OldCanLogin: true}
	switch r.strategy() {
	case "alternating-users":
		users := r.o.Config.Users
		p.NewUsername = users[0]
		if cur.Username == users[0] {
			p.NewUsername = users[1]
		}
		admin, err := r.admin(ctx)
		if err != nil {
			return "", err
		}
		if p.OldCanLogin, err = r.o.DB.CanLogin(ctx, admin, p.NewUsername); err != nil {
			return "", fmt.Errorf("looking up %s: %w", p.NewUsername, err)
		}
	case "single-user", "vault-static":
		p.NewUsername = cur.Username
	case "dual-password":
		if _, ok := r.o.DB.(DualPassworder); !ok {
			return "", errors.New("dual-password needs MySQL or MariaDB")
		}
		p.NewUsername = cur.Username
	default:
		return "", fmt.Errorf("strategy %s is not available for this backend", r.strategy())
	}
	if r.strategy() != "vault-static" {
		pw, err := generatePassword(r.o.Config.Password.Length, r.o.Config.Password.Alphabet)
		if err != nil {
			return "", err
		}
		p.NewPassword = pw
	}
	if p.CASVersion, err = r.pub.prepare(ctx); err != nil {
		return "", fmt.Errorf("reading the published credential's version: %w", err)
	}
	r.mu.Lock()
	r.pend = p
	r.running.FromUser, r.running.ToUser = p.OldUsername, p.NewUsername
	r.mu.Unlock()
	return fmt.Sprintf("%s → %s", p.OldUsername, p.NewUsername), nil
}

// apply changes the login in the database.
func (r *Rotator) apply(ctx context.Context) (string, error) {
	p := r.pending()
	if r.strategy() == "vault-static" {
		if err := r.o.Vault.RotateStaticRole(ctx, r.o.Credential.Mount, r.o.Credential.StaticRole); err != nil {
			return "", fmt.Errorf("vault rotate-role: %w", err)
		}
		return "vault rotated " + r.o.Credential.StaticRole, nil
	}
	admin, err := r.admin(ctx)
	if err != nil {
		return "", err
	}
	if dp, ok := r.o.DB.(DualPassworder); ok && r.strategy() == "dual-password" {
		if err := dp.AddPassword(ctx, admin, p.NewUsername, p.OldPassword, p.NewPassword); err != nil {
			return "", fmt.Errorf("adding a second password for %s as %s: %w", p.NewUsername, admin.Username, err)
		}
		return "second password added for " + p.NewUsername + " (the current one stays valid)", nil
	}
	if err := r.o.DB.SetPassword(ctx, admin, p.NewUsername, p.NewPassword, r.strategy() == "alternating-users"); err != nil {
		return "", fmt.Errorf("setting the password of %s as %s: %w", p.NewUsername, admin.Username, err)
	}
	return "new password set for " + p.NewUsername, nil
}

// verify logs in with the new credential.
func (r *Rotator) verify(ctx context.Context) (string, error) {
	p := r.pending()
	if r.strategy() == "vault-static" {
		// Vault changed the password: adopting it includes a test login.
		if _, err := r.o.Backend.Store.Refresh(ctx); err != nil {
			return "", err
		}
		cur := r.o.Backend.Store.Current()
		if cur.Cred.Equal(creds.Credential{Username: p.OldUsername, Password: p.OldPassword}) {
			return "", errors.New("vault still returns the old password")
		}
		return fmt.Sprintf("generation %d verified", cur.N), nil
	}
	if err := r.o.DB.Verify(ctx, creds.Credential{Username: p.NewUsername, Password: p.NewPassword}); err != nil {
		return "", fmt.Errorf("test login as %s: %w", p.NewUsername, err)
	}
	return "test login as " + p.NewUsername + " succeeded", nil
}

// publish writes the new credential for every proxy.
func (r *Rotator) publish(ctx context.Context) (string, error) {
	if _, ok := r.pub.(nopPublisher); ok {
		return "skipped", nil
	}
	p := r.pending()
	if err := r.pub.publish(ctx, creds.Credential{Username: p.NewUsername, Password: p.NewPassword}, p.CASVersion); err != nil {
		return "", err
	}
	return "published to " + r.o.Config.Publish.To, nil
}

// drain waits until this proxy adopted the new credential and moved its
// sessions (or the drain deadline passed), then for the grace period.
func (r *Rotator) drain(ctx context.Context) (string, error) {
	p := r.pending()
	b := r.o.Backend
	want := creds.Credential{Username: p.NewUsername, Password: p.NewPassword}
	adoptBy := time.Now().Add(b.ConnectTimeout() + 30*time.Second)
	var gen uint64
	for {
		cur := b.Store.Current()
		if r.strategy() == "vault-static" {
			if !cur.Cred.Equal(creds.Credential{Username: p.OldUsername, Password: p.OldPassword}) {
				gen = cur.N
			}
		} else if cur.Cred.Equal(want) {
			gen = cur.N
		}
		if gen != 0 {
			break
		}
		if time.Now().After(adoptBy) {
			return "", errors.New("the proxy did not adopt the published credential (see the credential status)")
		}
		b.Store.Refresh(ctx)
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return "", err
		}
	}
	r.mu.Lock()
	r.running.Generation = gen
	r.mu.Unlock()
	deadline := time.Now().Add(r.o.DrainDeadline + 5*time.Second)
	outcome := "drained"
	for {
		st := b.Status().Drain
		if st.Generation >= gen && st.Complete {
			break
		}
		if st.Generation >= gen && !st.Deadline.IsZero() && time.Now().After(st.Deadline) {
			outcome = fmt.Sprintf("drain deadline passed with %d sessions left on older credentials", st.Pending)
			break
		}
		if time.Now().After(deadline) {
			outcome = "drain deadline passed"
			break
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return "", err
		}
	}
	if g := r.o.Config.Grace.D(); g > 0 {
		if err := sleep(ctx, g); err != nil {
			return "", err
		}
		outcome += fmt.Sprintf(", then %s grace for other proxies", g)
	}
	return fmt.Sprintf("generation %d adopted, %s", gen, outcome), nil
}

// retire locks the previous user (alternating-users) or discards the old
// password (dual-password).
func (r *Rotator) retire(ctx context.Context) (string, error) {
	if r.strategy() == "dual-password" {
		p := r.pending()
		admin, err := r.admin(ctx)
		if err != nil {
			return "", err
		}
		if err := r.o.DB.(DualPassworder).KeepOnly(ctx, admin, p.NewUsername, p.NewPassword); err != nil {
			return "", fmt.Errorf("discarding the old password of %s: %w", p.NewUsername, err)
		}
		return "old password of " + p.NewUsername + " discarded", nil
	}
	if r.strategy() != "alternating-users" {
		return "skipped", nil
	}
	p := r.pending()
	if p.OldUsername == p.NewUsername {
		return "skipped", nil
	}
	managed := false
	for _, u := range r.o.Config.Users {
		managed = managed || u == p.OldUsername
	}
	if !managed {
		return fmt.Sprintf("%s is not one of the rotation's users; left as it is", p.OldUsername), nil
	}
	admin, err := r.admin(ctx)
	if err != nil {
		return "", err
	}
	left, err := r.waitForFleet(ctx, admin, p.OldUsername)
	if err != nil {
		return "", err
	}
	// Whatever still uses the old user (this proxy's pinned sessions,
	// other proxies past the fleet deadline) keeps running: ending them is
	// the operator's decision, never the rotation's.
	if err := r.o.DB.Lock(ctx, admin, p.OldUsername, false); err != nil {
		return "", fmt.Errorf("locking %s: %w", p.OldUsername, err)
	}
	if r.o.Metrics != nil {
		r.o.Metrics.sessionsLeft.WithLabelValues(r.o.Backend.Name()).Set(float64(left.Others))
	}
	switch {
	case left.Others > 0:
		hosts := make([]string, 0, len(left.Holders))
		for _, h := range left.Holders {
			hosts = append(hosts, fmt.Sprintf("%s %d", h.Client, h.Sessions))
		}
		r.log.Warn("fleet deadline passed: old user locked with sessions of other clients still running",
			zap.String("user", p.OldUsername), zap.Int("sessions", left.Others), zap.Any("holders", left.Holders))
		return fmt.Sprintf("%s locked after the fleet deadline; %d sessions of other clients left running (%s)",
			p.OldUsername, left.Others, strings.Join(hosts, ", ")), nil
	case left.Own > 0:
		return fmt.Sprintf("%s locked; %d of this proxy's sessions that could not move left running", p.OldUsername, left.Own), nil
	}
	return p.OldUsername + " locked; no session was left on it", nil
}

// waitForFleet waits until the database shows no session of user except
// this proxy's own on older generations (pinned sessions it keeps), or
// until the fleet deadline. Other proxies reading the published
// credential late are still moving theirs; the database sees them all
// without any coordination. The running record shows who holds what
// while it waits.
func (r *Rotator) waitForFleet(ctx context.Context, admin creds.Credential, user string) (FleetWait, error) {
	b := r.o.Backend
	now := time.Now().UTC()
	w := FleetWait{User: user, Since: now, Deadline: now.Add(r.o.Config.FleetDeadline.D())}
	logged := false
	for {
		holders, err := r.o.DB.Sessions(ctx, admin, user)
		if err != nil {
			return w, fmt.Errorf("listing sessions of %s: %w", user, err)
		}
		cur := b.Store.Current().N
		own := 0
		for gen, n := range b.Conns.Snapshot() {
			if gen < cur {
				own += n
			}
		}
		total := 0
		for _, h := range holders {
			total += h.Sessions
		}
		w.Holders, w.Own, w.Others = holders, own, max(total-own, 0)
		r.mu.Lock()
		ww := w
		r.running.Waiting = &ww
		r.mu.Unlock()
		if w.Others == 0 || !time.Now().Before(w.Deadline) {
			return w, nil
		}
		if !logged {
			logged = true
			r.log.Info("waiting for other clients to leave the old user before retiring it",
				zap.String("user", user), zap.Int("sessions", w.Others), zap.Any("holders", holders),
				zap.Time("fleet_deadline", w.Deadline))
		}
		if err := sleep(ctx, min(time.Second, time.Until(w.Deadline))); err != nil {
			return w, err
		}
	}
}

// verifyRetired checks that the old credential is refused.
func (r *Rotator) verifyRetired(ctx context.Context) (string, error) {
	p := r.pending()
	old := creds.Credential{Username: p.OldUsername, Password: p.OldPassword}
	if r.strategy() == "alternating-users" {
		managed := false
		for _, u := range r.o.Config.Users {
			managed = managed || u == p.OldUsername
		}
		if !managed {
			return "skipped", nil
		}
	}
	err := r.o.DB.Verify(ctx, old)
	switch {
	case err == nil:
		return "", fmt.Errorf("the old credential of %s is still accepted", p.OldUsername)
	case !isRejected(err):
		return "", fmt.Errorf("checking the old credential: %w", err)
	}
	return "the old credential of " + p.OldUsername + " is refused", nil
}

// rollback undoes apply before the new credential was published.
func (r *Rotator) rollback(ctx context.Context) (string, error) {
	r.mu.Lock()
	applied := r.running.done(PhaseApply)
	p := r.pend
	r.mu.Unlock()
	if !applied || p == nil {
		return "nothing to undo", nil
	}
	switch r.strategy() {
	case "alternating-users":
		if p.OldCanLogin {
			return p.NewUsername + " keeps an unused new password", nil
		}
		admin, err := r.admin(ctx)
		if err != nil {
			return "", err
		}
		if err := r.o.DB.Lock(ctx, admin, p.NewUsername, false); err != nil {
			return "", err
		}
		return p.NewUsername + " locked again", nil
	case "dual-password":
		admin, err := r.admin(ctx)
		if err != nil {
			return "", err
		}
		if err := r.o.DB.(DualPassworder).KeepOnly(ctx, admin, p.NewUsername, p.OldPassword); err != nil {
			return "", err
		}
		return "only the previous password of " + p.NewUsername + " kept", nil
	case "single-user":
		admin, err := r.admin(ctx)
		if err != nil {
			return "", err
		}
		if r.o.Admin == nil {
			admin = creds.Credential{Username: p.NewUsername, Password: p.NewPassword}
		}
		if err := r.o.DB.SetPassword(ctx, admin, p.NewUsername, p.OldPassword, false); err != nil {
			return "", err
		}
		return "the previous password of " + p.NewUsername + " restored", nil
	}
	return "nothing to undo", nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
