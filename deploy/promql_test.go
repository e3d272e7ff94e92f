package deploy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// A selector is one metric a PromQL expression reads, with the label names
// its matchers use.
type selector struct {
	Metric string
	Labels []string
}

// A query is a PromQL expression of the kit and where it is from.
type query struct {
	Where string // e.g. "alert CredswapDown" or "panel 7 (Switch duration) A"
	Expr  string
}

var (
	// Metric names the kit reads: credswap's own, the Go and process
	// collectors' it serves, and Prometheus' up.
	reMetric  = regexp.MustCompile(`\b(credswap_[a-z0-9_]+|process_[a-z0-9_]+|go_[a-z0-9_]+|up)\b\s*(\{[^}]*\})?`)
	reMatcher = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"`)
	reBy      = regexp.MustCompile(`\b(?:by|without|on|ignoring)\s*\(([^)]*)\)`)
	reQuoted  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
)

// selectors returns the metrics expr reads and the label names of their
// matchers, and the label names of its by/without/on/ignoring clauses.
// The kit's expressions are simple enough for this: a name followed by
// an optional {…}; functions and keywords are not metric names because
// the names are matched by prefix.
func selectors(expr string) (sels []selector, grouping []string) {
	for _, m := range reMetric.FindAllStringSubmatch(expr, -1) {
		s := selector{Metric: m[1]}
		for _, lm := range reMatcher.FindAllStringSubmatch(m[2], -1) {
			s.Labels = append(s.Labels, lm[1])
		}
		sels = append(sels, s)
	}
	for _, m := range reBy.FindAllStringSubmatch(reQuoted.ReplaceAllString(expr, `""`), -1) {
		for _, l := range strings.Split(m[1], ",") {
			if l = strings.TrimSpace(l); l != "" {
				grouping = append(grouping, l)
			}
		}
	}
	return sels, grouping
}

// alertRule is a rule of deploy/prometheus/alerts.yaml.
type alertRule struct {
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func loadAlerts(t *testing.T) []alertRule {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "prometheus", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Groups []struct {
			Name  string      `yaml:"name"`
			Rules []alertRule `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("alerts.yaml: %v", err)
	}
	var rules []alertRule
	for _, g := range doc.Groups {
		rules = append(rules, g.Rules...)
	}
	if len(rules) == 0 {
		t.Fatal("alerts.yaml has no rules")
	}
	return rules
}

// dashboard is the part of deploy/grafana/credswap-dashboard.json the
// tests read.
type dashboard struct {
	UID           string `json:"uid"`
	Title         string `json:"title"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Definition string          `json:"definition"`
			Datasource *datasourceRef  `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID          int            `json:"id"`
	Type        string         `json:"type"`
	Title       string         `json:"title"`
	Description string         `json:"description"`
	Datasource  *datasourceRef `json:"datasource"`
	GridPos     struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		RefID      string         `json:"refId"`
		Expr       string         `json:"expr"`
		Datasource *datasourceRef `json:"datasource"`
	} `json:"targets"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "grafana", "credswap-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("credswap-dashboard.json: %v", err)
	}
	return d
}

// kitQueries returns every PromQL expression of the alerts and the
// dashboard (panel targets and the selectors inside label_values()).
func kitQueries(t *testing.T) []query {
	t.Helper()
	var qs []query
	for _, r := range loadAlerts(t) {
		qs = append(qs, query{Where: "alert " + r.Alert, Expr: r.Expr})
	}
	d := loadDashboard(t)
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			qs = append(qs, query{Where: panelWhere(p) + " " + tg.RefID, Expr: tg.Expr})
		}
	}
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			qs = append(qs, query{Where: "variable " + v.Name, Expr: v.Definition})
		}
	}
	return qs
}

func panelWhere(p panel) string {
	return "panel " + strconv.Itoa(p.ID) + " (" + p.Title + ")"
}

// Target labels Prometheus adds to every scraped series.
var targetLabels = []string{"job", "instance", "namespace", "pod", "container"}

func isTargetLabel(l string) bool { return slices.Contains(targetLabels, l) }
