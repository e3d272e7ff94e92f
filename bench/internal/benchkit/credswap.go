//go:build linux

package benchkit

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// CredswapConfig is what a generated credswap configuration refers to.
type CredswapConfig struct {
	Listen       string // the client listener, a free loopback address
	AdminListen  string // the admin API, a free loopback address
	Upstream     string // the PostgreSQL server
	ClientUser   string // the user of the local login
	PasswordFile string // holds the local login's password
	CredFile     string // holds the backend credential (see WriteCredential)
}

// CredswapOptions say how StartCredswap runs credswap.
type CredswapOptions struct {
	Bin        string // the credswap binary (see BuildCredswap)
	Dir        string // the working directory; the generated files and the log go there
	Upstream   string // the PostgreSQL server credswap connects to
	ClientUser string // the user of the local login that clients use
	Credential Login  // the backend credential

	// Config returns the text of the configuration file.
	Config func(CredswapConfig) string

	// ReadyTimeout bounds the wait for GET /readyz to answer 200 (zero: 30 s); PollInterval is
	// the time between two tries (zero: 50 ms).
	ReadyTimeout, PollInterval time.Duration

	// JoinStop stops the process after a failed wait and combines the two failures; nil means
	// the package's JoinStop.
	JoinStop func(err error, p *Process) error
}

// Credswap is a credswap process started by StartCredswap.
type Credswap struct {
	Proc      *Process // the running proxy
	Addr      string   // the client listener
	AdminAddr string   // the admin API
	Local     Login    // the local login clients use: ClientUser with a random password
	CredFile  string   // the backend credential file, which credswap watches
}

// StartCredswap writes the backend credential to Dir/cred.json, a random password for the
// local login ("local-" and 32 hex digits) to Dir/client-password and the configuration for
// free loopback ports to Dir/credswap.yaml, starts `Bin run --config Dir/credswap.yaml` in Dir
// with its output appended to Dir/credswap.log (see StartProcess) and waits until GET /readyz on
// the admin API says that every backend is ready. The environment of credswap holds only PATH
// and HOME, and the Go runtime settings GOMAXPROCS, GOGC and GODEBUG where set, so that their
// effect can be measured. If credswap does not become ready, it is stopped.
func StartCredswap(ctx context.Context, o CredswapOptions) (*Credswap, error) {
	localPassword, err := RandomHex(16)
	if err != nil {
		return nil, err
	}
	local := Login{User: o.ClientUser, Password: "local-" + localPassword}
	c := CredswapConfig{
		Upstream:     o.Upstream,
		ClientUser:   o.ClientUser,
		PasswordFile: filepath.Join(o.Dir, "client-password"),
		CredFile:     filepath.Join(o.Dir, "cred.json"),
	}
	if err := os.WriteFile(c.PasswordFile, []byte(local.Password+"\n"), 0o600); err != nil {
		return nil, err
	}
	if err := WriteCredential(c.CredFile, o.Credential); err != nil {
		return nil, err
	}
	if c.Listen, err = FreeAddr(); err != nil {
		return nil, err
	}
	if c.AdminListen, err = FreeAddr(); err != nil {
		return nil, err
	}
	configFile := filepath.Join(o.Dir, "credswap.yaml")
	if err := os.WriteFile(configFile, []byte(o.Config(c)), 0o600); err != nil {
		return nil, err
	}

	cmd := exec.Command(o.Bin, "run", "--config", configFile)
	cmd.Dir = o.Dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for _, k := range []string{"GOMAXPROCS", "GOGC", "GODEBUG"} {
		if v, ok := os.LookupEnv(k); ok {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	proc, err := StartProcess("credswap", cmd, filepath.Join(o.Dir, "credswap.log"))
	if err != nil {
		return nil, err
	}
	timeout, poll := cmp.Or(o.ReadyTimeout, 30*time.Second), cmp.Or(o.PollInterval, 50*time.Millisecond)
	if err := waitReadyz(ctx, proc, c.AdminListen, timeout, poll); err != nil {
		joinStop := o.JoinStop
		if joinStop == nil {
			joinStop = JoinStop
		}
		return nil, joinStop(err, proc)
	}
	return &Credswap{Proc: proc, Addr: c.Listen, AdminAddr: c.AdminListen, Local: local, CredFile: c.CredFile}, nil
}

// WriteCredential replaces file with the credential l as JSON ({"username", "password"}, the
// format of credswap's file source) atomically, as a secret manager or an operator does: a temp
// file in the same directory, renamed over the path.
func WriteCredential(file string, l Login) error {
	b, err := json.Marshal(map[string]string{"username": l.User, "password": l.Password})
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), ".cred-*.tmp")
	if err != nil {
		return fmt.Errorf("write credential: %w", err)
	}
	_, err = tmp.Write(b)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), file)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write credential: %w", err)
	}
	return nil
}

// JoinStop stops p after a failed start and adds the stop error to err, unless p had already
// exited (err then says so).
func JoinStop(err error, p *Process) error {
	if gone, _ := p.Exited(); gone {
		_ = p.Stop()
		return err
	}
	return errors.Join(err, p.Stop())
}

// waitReadyz polls GET /readyz on the admin listener adminAddr every poll until it answers 200,
// the process exits, timeout passes or ctx ends. The error of a failed wait carries the tail of
// the process's log.
func waitReadyz(ctx context.Context, proc *Process, adminAddr string, timeout, poll time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	url := "http://" + adminAddr + "/readyz"
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		last := probe(ctx, client, url)
		if last == nil {
			return nil
		}
		select {
		case <-proc.Done():
			return fmt.Errorf("%s exited during start (%v); log:\n%s", proc.Name(), proc.WaitErr(), Indent(proc.LogTail()))
		case <-ctx.Done():
			return fmt.Errorf("%s not ready within %v: %w (last GET %s: %v); log:\n%s",
				proc.Name(), timeout, context.Cause(ctx), url, last, Indent(proc.LogTail()))
		case <-tick.C:
		}
	}
}

// probe returns nil if GET url answers 200, else why not.
func probe(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}
