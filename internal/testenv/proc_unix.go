//go:build unix

package testenv

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// serverAccount is the OS account that initdb and postgres run as.
type serverAccount struct {
	name     string
	uid, gid uint32
	home     string
	switched bool // true when the account differs from the current one (we are root)
}

// serverUser returns the account to run the server programs as: the current one, or the
// "postgres" user when running as root, because initdb and postgres refuse to run as root.
func serverUser() (*serverAccount, error) {
	if os.Geteuid() != 0 {
		home, _ := os.UserHomeDir()
		name := strconv.Itoa(os.Geteuid())
		if u, err := user.Current(); err == nil {
			name = u.Username
		}
		return &serverAccount{name: name, uid: uint32(os.Geteuid()), gid: uint32(os.Getegid()), home: home}, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, &MissingError{
			What: `OS user "postgres"`,
			Hint: "initdb and postgres refuse to run as root, so testenv runs them as that user: " + err.Error(),
		}
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("testenv: uid %q of user postgres: %w", u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("testenv: gid %q of user postgres: %w", u.Gid, err)
	}
	return &serverAccount{name: u.Username, uid: uint32(uid), gid: uint32(gid), home: u.HomeDir, switched: true}, nil
}

// sysProcAttr puts the server program in its own process group, so a Ctrl-C aimed at the test
// binary's group does not reach it before the test binary can stop it in order, and runs it as
// the server account.
func (a *serverAccount) sysProcAttr() *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{Setpgid: true}
	if a.switched {
		attr.Credential = &syscall.Credential{Uid: a.uid, Gid: a.gid}
	}
	return attr
}

// chown hands path and everything under it to the server account; a no-op when we run as it.
func (a *serverAccount) chown(path string) error {
	if !a.switched {
		return nil
	}
	return filepath.WalkDir(path, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, int(a.uid), int(a.gid))
	})
}

// canTraverse reports whether the server account can reach entries inside dir, checking the
// search permission of dir and each of its ancestors.
func (a *serverAccount) canTraverse(dir string) bool {
	if !a.switched {
		return true
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	for {
		fi, err := os.Stat(dir)
		if err != nil {
			return false
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		perm := fi.Mode().Perm()
		switch {
		case ok && st.Uid == a.uid:
			if perm&0o100 == 0 {
				return false
			}
		case ok && st.Gid == a.gid:
			if perm&0o010 == 0 {
				return false
			}
		case perm&0o001 == 0:
			return false
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return true
		}
		dir = parent
	}
}

// processAlive reports whether a process with this pid exists (possibly owned by another user).
func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
