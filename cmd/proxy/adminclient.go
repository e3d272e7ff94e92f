package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/credswap/credswap/admin"
	"github.com/credswap/credswap/config"
	"github.com/credswap/credswap/rotate"
)

// tokenEnv names the environment variable holding the admin bearer token.
const tokenEnv = "CREDSWAP_ADMIN_TOKEN"

type adminClient struct {
	base  string
	token string
	http  *http.Client
}

func (c *adminClient) do(method, path string, out any) error {
	req, err := http.NewRequest(method, c.base+path, nil)
	if err != nil {
		return err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	req.Header.Set("X-Credswap-Trigger", "cli")
	// Required on POST and PUT (docs/security.md); sent on every request.
	req.Header.Set(admin.MarkerHeader, "1")
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var e admin.ErrorResponse
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s (%s, HTTP %d)", e.Error, e.Code, resp.StatusCode)
		}
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return json.Unmarshal(body, out)
}

func adminCommands() []*cobra.Command {
	var base string
	var asJSON bool
	client := func() *adminClient {
		b := strings.TrimRight(base, "/")
		if !strings.Contains(b, "://") {
			b = "http://" + b
		}
		return &adminClient{base: b, token: os.Getenv(tokenEnv), http: &http.Client{Timeout: 90 * time.Second}}
	}
	printJSON := func(cmd *cobra.Command, v any) error {
		enc := json.NewEncoder(cmd.OutOrStdout())
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	status := &cobra.Command{
		Use:   "status",
		Short: "Show backends, credential generations, sessions and pins (admin API)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st admin.StatusResponse
			if err := client().do(http.MethodGet, "/v1/status", &st); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd, st)
			}
			printStatus(cmd.OutOrStdout(), st)
			return nil
		},
	}
	refresh := &cobra.Command{
		Use:   "refresh NAME",
		Short: "Re-read a backend's credential source now; adopt and drain if it changed",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var r admin.RefreshResponse
			if err := client().do(http.MethodPost, "/v1/backends/"+args[0]+"/refresh", &r); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd, r)
			}
			if r.Adopted {
				cmd.Printf("%s: adopted generation %d (user %s)\n", r.Backend, r.Generation, r.Username)
			} else {
				cmd.Printf("%s: unchanged, generation %d (user %s)\n", r.Backend, r.Generation, r.Username)
			}
			return nil
		},
	}
	drain := &cobra.Command{
		Use:   "drain NAME",
		Short: "Move every session of a backend to the current credential now",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var r admin.DrainResponse
			if err := client().do(http.MethodPost, "/v1/backends/"+args[0]+"/drain", &r); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd, r)
			}
			cmd.Printf("%s: generation %d, %s, %d still pending\n", r.Backend, r.Generation, formatCounts(r.Results), r.Pending)
			return nil
		},
	}
	var wait bool
	rotateCmd := &cobra.Command{
		Use:   "rotate NAME",
		Short: "Rotate a backend's database password now (admin API); --wait follows the phases",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := client()
			var rec rotate.Record
			if err := c.do(http.MethodPost, "/v1/backends/"+args[0]+"/rotate", &rec); err != nil {
				return err
			}
			if !wait {
				if asJSON {
					return printJSON(cmd, rec)
				}
				cmd.Printf("rotation %s started\n", rec.ID)
				return nil
			}
			return followRotation(cmd, c, rec.ID, asJSON)
		},
	}
	rotateCmd.Flags().BoolVar(&wait, "wait", false, "print the phases as they happen and wait for the end")
	cmds := []*cobra.Command{status, refresh, drain, rotateCmd}
	for _, c := range cmds {
		c.Flags().StringVar(&base, "admin", "http://"+config.DefaultAdminListen, "admin API address (token from $"+tokenEnv+")")
		c.Flags().BoolVar(&asJSON, "json", false, "print the raw JSON response")
	}
	return cmds
}

func formatCounts(m map[string]int) string {
	if len(m) == 0 {
		return "no sessions to move"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return strings.Join(parts, " ")
}

func printStatus(w io.Writer, st admin.StatusResponse) {
	fmt.Fprintf(w, "credswap %s, up since %s\n", st.Version, st.StartedAt.Format(time.RFC3339))
	for _, b := range st.Backends {
		ready := "ready"
		if !b.Ready {
			ready = "NOT READY: " + strings.Join(b.NotReady, "; ")
		}
		fmt.Fprintf(w, "\nbackend %s (%s) %s -> %s: %s\n", b.Name, b.Protocol, b.Listen, b.Upstream, ready)
		if c := b.Credential.Current; c != nil {
			fmt.Fprintf(w, "  credential: generation %d, user %s, source %s, adopted %s", c.Generation, c.Username, c.Source, c.AdoptedAt.Format(time.RFC3339))
			if !c.Verified {
				fmt.Fprint(w, " (unverified)")
			}
			fmt.Fprintln(w)
		}
		if f := b.Credential.Fallback; f != nil {
			fmt.Fprintf(w, "  fallback:   generation %d, user %s\n", f.Generation, f.Username)
		}
		if b.Credential.LastError != "" {
			fmt.Fprintf(w, "  last error: %s (%s)\n", b.Credential.LastError, b.Credential.LastErrorAt.Format(time.RFC3339))
		}
		fmt.Fprintf(w, "  sessions: %d %s\n", b.Sessions.Total, formatCounts(b.Sessions.ByGeneration))
		fmt.Fprintf(w, "  backend connections: %d (%d idle) %s\n", b.BackendConnections.Total, b.BackendConnections.Idle, formatCounts(b.BackendConnections.ByGeneration))
		d := b.Drain
		if d.Generation > 0 {
			state := "complete"
			if !d.Complete {
				state = fmt.Sprintf("in progress, %d pending, deadline %s (on_deadline: %s)", d.Pending, d.Deadline.Format(time.RFC3339), d.OnDeadline)
			}
			fmt.Fprintf(w, "  drain to generation %d: %s %s\n", d.Generation, state, formatCounts(d.Results))
		}
		if r := b.Rotation; r != nil {
			sched := "schedule off"
			if r.Schedule.Enabled {
				sched = fmt.Sprintf("every %s, next %s", r.Schedule.Interval, r.Schedule.Next.Format(time.RFC3339))
			}
			fmt.Fprintf(w, "  rotation: %s, %s\n", r.Strategy, sched)
			if r.Running != nil {
				fmt.Fprintf(w, "    running: %s (%s → %s), %d phases done\n", r.Running.ID, r.Running.FromUser, r.Running.ToUser, len(r.Running.Phases))
				if wt := r.Running.Waiting; wt != nil {
					fmt.Fprintf(w, "    %s\n", formatWaiting(wt))
				}
			}
			if l := r.Last; l != nil {
				fmt.Fprintf(w, "    last: %s %s (%s → %s) at %s", l.ID, l.State, l.FromUser, l.ToUser, l.EndedAt.Format(time.RFC3339))
				if l.Error != "" {
					fmt.Fprintf(w, ": %s", l.Error)
				}
				fmt.Fprintln(w)
			}
		}
		for _, p := range b.PinnedSessions {
			fmt.Fprintf(w, "  pinned: session %d (%s, user %s, db %s) on generation %d: %s since %s\n",
				p.ID, p.Client, p.User, p.Database, p.Generation, p.PinReason, p.PinnedSince.Format(time.RFC3339))
		}
		for _, f := range b.SwitchFailing {
			sf := f.SwitchFailure
			fmt.Fprintf(w, "  switch failing: session %d (%s, user %s, db %s) on generation %d: %d attempts since %s, %s failed: %s; next at %s\n",
				f.ID, f.Client, f.User, f.Database, f.Generation, sf.Failures, sf.Since.Format(time.RFC3339), sf.Stage, sf.Error,
				sf.RetryAt.Format(time.RFC3339))
		}
	}
}

// followRotation polls a rotation and prints each phase as it ends; it
// returns an error unless the rotation succeeded.
func followRotation(cmd *cobra.Command, c *adminClient, id string, asJSON bool) error {
	cmd.Printf("rotation %s\n", id)
	printed := 0
	lastWait := ""
	for {
		var rec rotate.Record
		if err := c.do(http.MethodGet, "/v1/rotations/"+id, &rec); err != nil {
			return err
		}
		if rec.State == rotate.StateRunning && rec.Waiting != nil {
			if line := formatWaiting(rec.Waiting); line != lastWait {
				cmd.Println("  " + line)
				lastWait = line
			}
		}
		for ; printed < len(rec.Phases); printed++ {
			p := rec.Phases[printed]
			if p.Outcome == "" {
				break // running
			}
			line := fmt.Sprintf("  %-15s %-8s %6s", p.Name, p.Outcome, p.EndedAt.Sub(p.StartedAt).Round(time.Millisecond))
			if p.Detail != "" {
				line += "  " + p.Detail
			}
			if p.Error != "" {
				line += "  error: " + p.Error
			}
			cmd.Println(line)
		}
		if rec.State != rotate.StateRunning {
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				enc.Encode(rec)
			}
			cmd.Printf("%s: %s → %s, %s in %s\n", rec.State, rec.FromUser, rec.ToUser, rec.Backend, rec.EndedAt.Sub(rec.StartedAt).Round(time.Millisecond))
			if rec.State != rotate.StateSucceeded {
				return fmt.Errorf("rotation %s %s: %s", rec.ID, rec.State, rec.Error)
			}
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// formatWaiting describes a rotation's wait for other clients to leave
// the user it retires.
func formatWaiting(w *rotate.FleetWait) string {
	holders := make([]string, 0, len(w.Holders))
	for _, h := range w.Holders {
		who := h.Client
		if h.Application != "" {
			who += " " + h.Application
		}
		holders = append(holders, fmt.Sprintf("%s: %d", who, h.Sessions))
	}
	return fmt.Sprintf("retire waits for other clients to leave %s until %s: %d sessions of others, %d of this proxy (%s)",
		w.User, w.Deadline.Format(time.RFC3339), w.Others, w.Own, strings.Join(holders, ", "))
}
