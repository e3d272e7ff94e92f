package rotate

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// The phases of a rotation, in order.
const (
	PhasePrepare       = "prepare"
	PhaseApply         = "apply"
	PhaseVerify        = "verify"
	PhasePublish       = "publish"
	PhaseDrain         = "drain"
	PhaseRetire        = "retire"
	PhaseVerifyRetired = "verify-retired"
	PhaseRollback      = "rollback"
)

// States of a rotation.
const (
	StateRunning    = "running"
	StateSucceeded  = "succeeded"
	StateFailed     = "failed"
	StateRolledBack = "rolled_back"
)

// Record is one rotation as the admin API shows it. It never holds a
// password.
type Record struct {
	ID       string `json:"id"`
	Backend  string `json:"backend"`
	Strategy string `json:"strategy"`
	// Trigger is api, schedule, cli or resume.
	Trigger string        `json:"trigger"`
	State   string        `json:"state"`
	Phases  []PhaseRecord `json:"phases"`
	Error   string        `json:"error,omitempty"`
	// FromUser and ToUser are the database users before and after.
	FromUser string `json:"from_user,omitempty"`
	ToUser   string `json:"to_user,omitempty"`
	// Generation is the credential generation the proxy adopted.
	Generation uint64 `json:"generation,omitempty"`
	// Waiting is set while retire waits for other clients (other proxies)
	// to leave the old user, and kept with what was left when the fleet
	// deadline passed.
	Waiting   *FleetWait `json:"waiting,omitempty"`
	StartedAt time.Time  `json:"started_at"`
	EndedAt   time.Time  `json:"ended_at,omitzero"`
}

// FleetWait is retire's wait for the database to show no session of the
// old user other than the ones this proxy keeps.
type FleetWait struct {
	User     string    `json:"user"`
	Since    time.Time `json:"since"`
	Deadline time.Time `json:"deadline"`
	// Own is how many of the sessions are this proxy's (pinned sessions it
	// knowingly keeps on the old credential).
	Own int `json:"own"`
	// Holders are the database's clients with sessions of User, this
	// proxy's included.
	Holders []Holder `json:"holders"`
	// Others is the number of sessions that are not this proxy's.
	Others int `json:"others"`
}

// PhaseRecord is one phase of a rotation.
type PhaseRecord struct {
	Name      string    `json:"name"`
	StartedAt time.Time `json:"started_at"`
	EndedAt   time.Time `json:"ended_at,omitzero"`
	// Outcome is ok, failed or skipped; empty while the phase runs.
	Outcome string `json:"outcome,omitempty"`
	Detail  string `json:"detail,omitempty"`
	Error   string `json:"error,omitempty"`
}

// done reports whether phase completed successfully.
func (r *Record) done(phase string) bool {
	for _, p := range r.Phases {
		if p.Name == phase && p.Outcome == "ok" {
			return true
		}
	}
	return false
}

func (r *Record) clone() Record {
	c := *r
	c.Phases = append([]PhaseRecord(nil), r.Phases...)
	if r.Waiting != nil {
		w := *r.Waiting
		w.Holders = append([]Holder(nil), r.Waiting.Holders...)
		c.Waiting = &w
	}
	return c
}

// pending is what a running rotation must remember to resume after a
// crash. It holds the new password and lives only in the journal.
type pending struct {
	NewUsername string `json:"new_username"`
	NewPassword string `json:"new_password"`
	// OldUsername and OldPassword are the credential in use before, to
	// check it is refused afterwards and to restore it on rollback.
	OldUsername string `json:"old_username"`
	OldPassword string `json:"old_password"`
	// OldCanLogin is whether the user being changed could log in before
	// (alternating-users), to restore on rollback.
	OldCanLogin bool `json:"old_can_login"`
	// CASVersion is the KV version the publish must replace.
	CASVersion int `json:"cas_version,omitempty"`
}

// journalFile is the on-disk journal of one backend.
type journalFile struct {
	Current *Record  `json:"current,omitempty"`
	Pending *pending `json:"pending,omitempty"`
	History []Record `json:"history"`
}

const historyKept = 20

// journal persists rotations to a file, replaced atomically on every
// change. Its methods are called with the Rotator's mutex held.
type journal struct {
	path string
	data journalFile
}

func openJournal(path string) (*journal, error) {
	j := &journal{path: path}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return j, nil
	}
	if err != nil {
		return nil, fmt.Errorf("rotation journal: %w", err)
	}
	if err := json.Unmarshal(b, &j.data); err != nil {
		return nil, fmt.Errorf("rotation journal %s: invalid JSON at byte %d", path, jsonOffset(err))
	}
	return j, nil
}

func jsonOffset(err error) int64 {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return se.Offset
	}
	return 0
}

// save writes the journal: temporary file, fsync, rename.
func (j *journal) save() error {
	b, err := json.MarshalIndent(&j.data, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(j.path)
	f, err := os.CreateTemp(dir, ".rotation-*.tmp")
	if err != nil {
		return fmt.Errorf("rotation journal: %w", err)
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), j.path)
}

// finish moves the current record to the history and forgets the pending
// secret.
func (j *journal) finish() {
	if j.data.Current != nil {
		j.data.History = append(j.data.History, j.data.Current.clone())
		if len(j.data.History) > historyKept {
			j.data.History = j.data.History[len(j.data.History)-historyKept:]
		}
	}
	j.data.Current = nil
	j.data.Pending = nil
}
