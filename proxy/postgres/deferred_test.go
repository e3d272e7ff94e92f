package postgres

import (
	"fmt"
	"testing"
)

func TestStatementRefs(t *testing.T) {
	cases := []struct {
		q             string
		exec, dealloc []string
		all           bool
	}{
		{"EXECUTE ins(1)", []string{"ins"}, nil, false},
		{`execute "Ins" (1); DEALLOCATE prepare b`, []string{"Ins"}, []string{"b"}, false},
		{"EXPLAIN ANALYZE EXECUTE x; create table t as execute y", []string{"x", "y"}, nil, false},
		{"DEALLOCATE ALL", nil, nil, true},
		{"deallocate prepare all", nil, nil, true},
		{"DISCARD ALL", nil, nil, true},
		{"DISCARD TEMP", nil, nil, false},
		{"SELECT 'EXECUTE x' -- EXECUTE y\n, $$EXECUTE z$$ /* EXECUTE w */", nil, nil, false},
		{"DO $f$ BEGIN EXECUTE 'x'; END $f$", nil, nil, false},
		{"SELECT execute FROM t", nil, nil, false},
	}
	for _, c := range cases {
		exec, dealloc, all := statementRefs(c.q)
		if fmt.Sprint(exec) != fmt.Sprint(c.exec) || fmt.Sprint(dealloc) != fmt.Sprint(c.dealloc) || all != c.all {
			t.Errorf("statementRefs(%q) = %q %q %v, want %q %q %v", c.q, exec, dealloc, all, c.exec, c.dealloc, c.all)
		}
	}
}

func FuzzStatementRefs(f *testing.F) {
	for _, s := range []string{"EXECUTE a", "DEALLOCATE PREPARE \"x\"\"y\"", "$a$ $a", "/* /* */", "E'\\''"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) { statementRefs(q) })
}
