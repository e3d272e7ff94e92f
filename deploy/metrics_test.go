package deploy

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/credswap/credswap/admin"
	"github.com/credswap/credswap/config"
	"github.com/credswap/credswap/internal/app"
	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
	"github.com/credswap/credswap/rotate"
)

// scraped is a Prometheus text page: the label names of every sample
// name, and every sample by its exact series text.
type scraped struct {
	labels map[string]map[string]bool
	values map[string]float64
}

var reLabel = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)

func scrapeMetrics(t *testing.T, url string) scraped {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	s := scraped{labels: map[string]map[string]bool{}, values: map[string]float64{}}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		series, val := line[:i], line[i+1:]
		name := series
		if j := strings.IndexByte(series, '{'); j >= 0 {
			name = series[:j]
		}
		if s.labels[name] == nil {
			s.labels[name] = map[string]bool{}
		}
		for _, m := range reLabel.FindAllStringSubmatch(series[len(name):], -1) {
			s.labels[name][m[1]] = true
		}
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		s.values[series] = v
	}
	return s
}

// TestMetricsServed runs a real proxy (internal/app, the assembly the
// binary runs) with two PostgreSQL backends: "orders" on a credential
// file with alternating-users rotation, and "leased" on dynamic Vault
// credentials (so the credential expires). It pins a session with a
// temporary table, rotates orders (the pinned session stays behind past
// drain_deadline), scrapes /metrics, and checks that every metric the
// alerts and the dashboard read is served with every label they select
// or group by, and that the dashboard or the alerts show every credswap
// metric the proxy serves.
func TestMetricsServed(t *testing.T) {
	pg := testenv.PG(t)
	vault := testenv.VaultServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	owner := "owner_" + proxytest.Random(4)
	userA, passA := pg.CreateUser(t, "kit_a")
	userB, _ := pg.CreateUser(t, "kit_b")
	pg.Exec(t, fmt.Sprintf("CREATE ROLE %s NOLOGIN", owner))
	pg.Exec(t, fmt.Sprintf("GRANT %s TO %s, %s", owner, userA, userB))
	mount := vault.UniqueMount(t, "db")
	vault.EnableDatabase(t, mount)
	vault.ConfigurePostgres(t, mount, "pg", pg, "leased")
	vault.CreateDynamicRole(t, mount, "leased", "pg", time.Hour, 2*time.Hour)

	dir := t.TempDir()
	writeJSON := func(name string, v any) {
		b, _ := json.Marshal(v)
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeJSON("orders.json", map[string]string{"username": userA, "password": passA})
	writeJSON("admin.json", map[string]string{"username": pg.SuperUser, "password": pg.SuperPassword})
	os.WriteFile(filepath.Join(dir, "app-password"), []byte("local-password\n"), 0o600)
	yaml := fmt.Sprintf(`
admin: {listen: "127.0.0.1:0"}
shutdown_timeout: 5s
vault:
  address: %q
  auth: {method: token, token: %q}
backends:
  - name: orders
    protocol: postgres
    listen: "127.0.0.1:0"
    upstream: %q
    clients: [{user: app, password_file: app-password}]
    credential: {source: file, path: orders.json, refresh_interval: 1h}
    drain_deadline: 2s
    on_deadline: keep
    rotation:
      strategy: alternating-users
      users: [%s, %s]
      admin_credential: {source: file, path: admin.json}
      publish: {to: file}
      journal: orders.rotation.json
  - name: leased
    protocol: postgres
    listen: "127.0.0.1:0"
    upstream: %q
    clients: [{user: app, password_file: app-password}]
    credential: {source: vault-db, mount: %s, role: leased}
`, vault.Addr, vault.Token, pg.Addr(), userA, userB, pg.Addr(), mount)
	cfg, err := config.Parse([]byte(yaml), config.ParseOptions{BaseDir: dir})
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	build := admin.BuildInfo{Version: "v0.0.0-kit", Commit: "0123456789ab", Date: "2026-11-25T18:00:00Z"}
	a, err := app.Start(ctx, cfg, app.Options{Logger: zap.NewNop(), Version: build.Version, Build: build})
	if err != nil {
		t.Fatalf("starting the proxy: %v", err)
	}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		a.Shutdown(sctx)
	})
	adminURL := "http://" + a.AdminAddr()

	// A session pinned by a temporary table stays on userA through the
	// rotation, past drain_deadline (on_deadline: keep).
	conn, err := pgx.Connect(ctx, fmt.Sprintf("postgres://app:local-password@%s/postgres?sslmode=disable", a.ListenAddr("orders")))
	if err != nil {
		t.Fatalf("connecting through the proxy: %v", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE TEMP TABLE kit_pin (x int)"); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, adminURL+"/v1/backends/orders/rotate?wait=1", nil)
	req.Header.Set(admin.MarkerHeader, "1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var rec rotate.Record
	json.NewDecoder(resp.Body).Decode(&rec)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || rec.State != "succeeded" {
		t.Fatalf("rotation: HTTP %d, %+v", resp.StatusCode, rec)
	}
	proxytest.Eventually(t, 10*time.Second, "the drain to be overdue", func() bool {
		return a.Backend("orders").DrainOverdue()
	})

	m := scrapeMetrics(t, adminURL+"/metrics")
	// The values the alerts and panels depend on, for this situation.
	for series, want := range map[string]float64{
		`credswap_drain_overdue{backend="orders"}`:                                                                                                 1,
		`credswap_drain_pending_sessions{backend="orders"}`:                                                                                        1,
		`credswap_drain_overdue{backend="leased"}`:                                                                                                 0,
		`credswap_pinned_sessions{backend="orders",reason="temp_table"}`:                                                                           1,
		`credswap_credential_generation{backend="orders"}`:                                                                                         2,
		`credswap_rotations_total{backend="orders",result="succeeded",strategy="alternating-users"}`:                                               1,
		`credswap_client_errors_total{backend="orders",code="too_many_clients"}`:                                                                   0,
		`credswap_credential_adoption_failing{backend="leased"}`:                                                                                   0,
		fmt.Sprintf(`credswap_build_info{commit="0123456789ab",date="2026-11-25T18:00:00Z",goversion=%q,version="v0.0.0-kit"}`, runtime.Version()): 1,
	} {
		if got, ok := m.values[series]; !ok || got != want {
			t.Errorf("%s = %v (served: %v), want %v", series, got, ok, want)
		}
	}
	if exp := m.values[`credswap_credential_expiry_timestamp_seconds{backend="leased"}`]; exp < float64(time.Now().Add(30*time.Minute).Unix()) {
		t.Errorf("credswap_credential_expiry_timestamp_seconds of the leased backend: %v", exp)
	}

	used := map[string]bool{}
	for _, q := range kitQueries(t) {
		sels, grouping := selectors(q.Expr)
		if len(sels) == 0 {
			t.Errorf("%s: no metric found in %q", q.Where, q.Expr)
		}
		avail := map[string]bool{"le": true}
		for _, s := range sels {
			used[s.Metric] = true
			if s.Metric == "up" {
				continue // Prometheus' own, per target
			}
			labels, ok := m.labels[s.Metric]
			if !ok {
				t.Errorf("%s: %s is not served by a running proxy", q.Where, s.Metric)
				continue
			}
			for l := range labels {
				avail[l] = true
			}
			for _, l := range s.Labels {
				if !labels[l] && !isTargetLabel(l) {
					t.Errorf("%s: %s has no label %q", q.Where, s.Metric, l)
				}
			}
		}
		for _, l := range grouping {
			if !avail[l] && !isTargetLabel(l) {
				t.Errorf("%s: groups by %q, which none of its metrics has", q.Where, l)
			}
		}
	}
	for name := range m.labels {
		family := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
		if strings.HasPrefix(name, "credswap_") && !used[name] && !slices.ContainsFunc(keys(used), func(u string) bool {
			return strings.HasPrefix(u, family)
		}) {
			t.Errorf("%s is served but neither the dashboard nor the alerts show it", name)
		}
	}
}

func keys(m map[string]bool) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}
