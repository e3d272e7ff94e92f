package postgres

import (
	"slices"
	"testing"
)

func TestScanSettingNames(t *testing.T) {
	cases := []struct {
		sql  string
		want []string
	}{
		{"SET app.tenant = 'x'", []string{"app.tenant"}},
		{"set session App.Tenant to 1", []string{"app.tenant"}},
		{"SET LOCAL app.t = 1", []string{"app.t"}},
		{`SET "MyApp".x = 1`, []string{"myapp.x"}},
		{"SELECT set_config('app.user_id', '42', false)", []string{"app.user_id"}},
		{"select SET_CONFIG ( 'a.b' , $1, false)", []string{"a.b"}},
		{"SET search_path = public", nil},
		{"RESET app.x", []string{"app.x"}},
		{"SELECT * FROM t OFFSET 5", nil},
		{"SELECT 1; SET a.b = 1; SET c.d = 2", []string{"a.b", "c.d"}},
		{"SELECT abalance FROM pgbench_accounts WHERE aid = 1", nil},
		{"set", nil},
		{"set ", nil},
		{"SET x.", nil},
	}
	for _, c := range cases {
		var got []string
		scanSettingNames([]byte(c.sql), func(n string) { got = append(got, n) })
		if !slices.Equal(got, c.want) {
			t.Errorf("%q: got %q, want %q", c.sql, got, c.want)
		}
	}
}

func TestScanSettingNamesAllocs(t *testing.T) {
	q := []byte("SELECT abalance FROM pgbench_accounts WHERE aid = $1")
	sink := func(string) {}
	if n := testing.AllocsPerRun(100, func() { scanSettingNames(q, sink) }); n != 0 {
		t.Fatalf("%v allocations per scan of a query without SET", n)
	}
}

func FuzzScanSettingNames(f *testing.F) {
	f.Add("SET a.b = 1")
	f.Add("set_config('x.y'")
	f.Add(`SET "a""b".c`)
	f.Fuzz(func(t *testing.T, s string) {
		scanSettingNames([]byte(s), func(n string) {
			if len(n) < 3 || len(n) > 127 {
				t.Fatalf("bad name %q", n)
			}
		})
	})
}

func TestSingleStatement(t *testing.T) {
	cases := map[string]bool{
		"PREPARE p AS SELECT 1":                           true,
		"PREPARE p AS SELECT 1;":                          true,
		"PREPARE p AS SELECT 1; -- trailing":              true,
		"PREPARE p AS SELECT ';'":                         true,
		"PREPARE p AS SELECT $$;x$$":                      true,
		"PREPARE p AS SELECT $tag$ ; $tag$":               true,
		`PREPARE p AS SELECT E'\';'`:                      true,
		`PREPARE p AS SELECT ";" FROM t`:                  true,
		"PREPARE p AS SELECT 1 /* ; x */":                 true,
		"PREPARE p AS SELECT 1; DELETE FROM t":            false,
		"PREPARE p AS SELECT 1;\nSELECT 2":                false,
		"SELECT 1; PREPARE p AS SELECT 1":                 false,
		"PREPARE p AS SELECT $1 ; PREPARE q AS SELECT $2": false,
	}
	for sql, want := range cases {
		if got := singleStatement(sql); got != want {
			t.Errorf("singleStatement(%q) = %v, want %v", sql, got, want)
		}
	}
}

func TestQuoting(t *testing.T) {
	if got := QuoteLiteral(`a'b\c`); got != `E'a''b\\c'` {
		t.Errorf("quoteLiteral: %s", got)
	}
	if got := QuoteIdent(`we"ird`); got != `"we""ird"` {
		t.Errorf("quoteIdent: %s", got)
	}
	oids, err := parseOIDArray("{23,25}")
	if err != nil || !slices.Equal(oids, []uint32{23, 25}) {
		t.Errorf("parseOIDArray: %v %v", oids, err)
	}
	if oids, err := parseOIDArray("{}"); err != nil || len(oids) != 0 {
		t.Errorf("parseOIDArray empty: %v %v", oids, err)
	}
}
