package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/credswap/credswap/internal/testenv"
)

const runbookBase = "https://github.com/credswap/credswap/blob/main/docs/operations.md#"

// TestAlertRules runs promtool on deploy/prometheus: the rules are valid
// and their unit tests (alerts_test.yaml) pass. It also checks what
// promtool does not: every alert has a severity, a summary, a description
// and a runbook_url pointing at its own entry in docs/operations.md, and
// alerts_test.yaml makes every alert fire at least once and stay quiet at
// least once.
func TestAlertRules(t *testing.T) {
	root := repoRoot(t)
	dir := filepath.Join(root, "deploy", "prometheus")
	rules := loadAlerts(t)

	var tests struct {
		RuleFiles []string `yaml:"rule_files"`
		Tests     []struct {
			Name          string `yaml:"name"`
			AlertRuleTest []struct {
				Alertname string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	data, err := os.ReadFile(filepath.Join(dir, "alerts_test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &tests); err != nil {
		t.Fatalf("alerts_test.yaml: %v", err)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, at := range tc.AlertRuleTest {
			if len(at.ExpAlerts) > 0 {
				fires[at.Alertname] = true
			} else {
				quiet[at.Alertname] = true
			}
		}
	}
	ops, err := os.ReadFile(filepath.Join(root, "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range rules {
		if seen[r.Alert] {
			t.Errorf("alert %s is defined twice", r.Alert)
		}
		seen[r.Alert] = true
		if s := r.Labels["severity"]; s != "critical" && s != "warning" {
			t.Errorf("alert %s: severity %q, want critical or warning", r.Alert, s)
		}
		for _, a := range []string{"summary", "description"} {
			if strings.TrimSpace(r.Annotations[a]) == "" {
				t.Errorf("alert %s: no %s", r.Alert, a)
			}
		}
		if got, want := r.Annotations["runbook_url"], runbookBase+strings.ToLower(r.Alert); got != want {
			t.Errorf("alert %s: runbook_url %q, want %q", r.Alert, got, want)
		}
		// A heading "#### CredswapDown" is the anchor #credswapdown.
		if !regexp.MustCompile(`(?m)^#{2,4} ` + regexp.QuoteMeta(r.Alert) + `$`).Match(ops) {
			t.Errorf("alert %s: docs/operations.md has no runbook heading for it", r.Alert)
		}
		if !fires[r.Alert] || !quiet[r.Alert] {
			t.Errorf("alert %s: alerts_test.yaml must make it fire (%v) and stay quiet (%v)", r.Alert, fires[r.Alert], quiet[r.Alert])
		}
	}

	promtool := testenv.RequireBinary(t, "promtool")
	if out := run(t, dir, nil, promtool, "check", "rules", "alerts.yaml"); !strings.Contains(out, "SUCCESS") {
		t.Errorf("promtool check rules:\n%s", out)
	}
	if out := run(t, dir, nil, promtool, "test", "rules", "alerts_test.yaml"); !strings.Contains(out, "SUCCESS") {
		t.Errorf("promtool test rules:\n%s", out)
	}
}
