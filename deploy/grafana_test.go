package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/credswap/credswap/internal/testenv"
)

// TestDashboard checks deploy/grafana/credswap-dashboard.json: panels with
// unique ids inside the 24-column grid, every panel and query on the
// ${datasource} variable, the variables the queries use defined, and
// every query valid PromQL (promtool parses them as recording rules, with
// Grafana's variables replaced by what Grafana would send). That the
// metrics exist is TestMetricsServed's part.
func TestDashboard(t *testing.T) {
	d := loadDashboard(t)
	if d.UID != "credswap" || d.Title == "" || d.SchemaVersion < 36 {
		t.Errorf("uid %q title %q schemaVersion %d", d.UID, d.Title, d.SchemaVersion)
	}
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
		if v.Type == "query" && (v.Datasource == nil || v.Datasource.UID != "${datasource}") {
			t.Errorf("variable %s does not query ${datasource}", v.Name)
		}
	}
	if !vars["datasource"] {
		t.Error("no datasource variable: the dashboard would be tied to one data source")
	}
	ids := map[int]bool{}
	queries := 0
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	reVar := regexp.MustCompile(`\$\{?([a-zA-Z_]+)\}?`)
	grafanaVars := map[string]string{"__rate_interval": "5m", "__interval": "1m", "__range": "6h"}
	for _, p := range d.Panels {
		where := panelWhere(p)
		if ids[p.ID] || p.ID == 0 {
			t.Errorf("%s: id missing or not unique", where)
		}
		ids[p.ID] = true
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X < 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("%s: gridPos %+v outside the 24-column grid", where, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("%s: datasource %+v, want ${datasource}", where, p.Datasource)
		}
		if p.Description == "" {
			t.Errorf("%s: no description", where)
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s: no queries", where)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			queries++
			if refs[tg.RefID] || tg.RefID == "" {
				t.Errorf("%s: refId %q missing or not unique", where, tg.RefID)
			}
			refs[tg.RefID] = true
			if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" {
				t.Errorf("%s %s: datasource %+v", where, tg.RefID, tg.Datasource)
			}
			expr := reVar.ReplaceAllStringFunc(tg.Expr, func(m string) string {
				name := reVar.FindStringSubmatch(m)[1]
				if v, ok := grafanaVars[name]; ok {
					return v
				}
				if !vars[name] {
					t.Errorf("%s %s: variable $%s is not defined", where, tg.RefID, name)
				}
				return ".*" // what "All" sends (allValue)
			})
			fmt.Fprintf(&rules, "      - record: dashboard:panel%d:%s\n        expr: %q\n", p.ID, tg.RefID, expr)
		}
	}
	if queries < 20 {
		t.Errorf("only %d queries", queries)
	}

	promtool := testenv.RequireBinary(t, "promtool")
	dir := t.TempDir()
	path := filepath.Join(dir, "dashboard-queries.yaml")
	if err := os.WriteFile(path, []byte(rules.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := command(dir, nil, promtool, "check", "rules", path).CombinedOutput(); err != nil {
		t.Errorf("a dashboard query is not valid PromQL: %v\n%s", err, out)
	}
}
