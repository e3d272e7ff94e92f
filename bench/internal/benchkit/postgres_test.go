package benchkit

import (
	"encoding/hex"
	"net"
	"reflect"
	"testing"
	"time"
)

func TestLibpqEnv(t *testing.T) {
	got := LibpqEnv("127.0.0.1:5433", Login{User: "u", Password: "p"}, "db")
	want := []string{"PGHOST=127.0.0.1", "PGPORT=5433", "PGUSER=u", "PGPASSWORD=p", "PGDATABASE=db", "PGSSLMODE=disable"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("LibpqEnv = %q, want %q", got, want)
	}
}

func TestConnString(t *testing.T) {
	got, err := ConnString("127.0.0.1:5433", "u", "db", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if want := "host=127.0.0.1 port=5433 user=u dbname=db sslmode=disable connect_timeout=5"; got != want {
		t.Errorf("ConnString = %q, want %q", got, want)
	}
	if _, err := ConnString("no port", "u", "db", time.Second); err == nil {
		t.Error("ConnString accepted an address without a port")
	}
}

func TestPgConnConfig(t *testing.T) {
	// What ParseConfig would take from the environment is overridden.
	t.Setenv("PGPASSWORD", "from-env")
	t.Setenv("PGAPPNAME", "from-env")
	t.Setenv("PGOPTIONS", "-c work_mem=1MB")
	t.Setenv("PGPASSFILE", "/nonexistent")
	cfg, err := PgConnConfig("127.0.0.1:5433", Login{User: "u", Password: "secret"}, "db", 10*time.Second, "bench-test")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "127.0.0.1" || cfg.Port != 5433 || cfg.User != "u" || cfg.Database != "db" || cfg.Password != "secret" ||
		cfg.ConnectTimeout != 10*time.Second || cfg.TLSConfig != nil || cfg.Fallbacks != nil ||
		cfg.ValidateConnect != nil || cfg.AfterConnect != nil ||
		!reflect.DeepEqual(cfg.RuntimeParams, map[string]string{"application_name": "bench-test"}) {
		t.Errorf("PgConnConfig = %+v", cfg)
	}
}

func TestRandomHex(t *testing.T) {
	a, err := RandomHex(16)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := RandomHex(16)
	if _, err := hex.DecodeString(a); err != nil || len(a) != 32 || a == b {
		t.Errorf("RandomHex = %q, %q", a, b)
	}
}

func TestFreeAddr(t *testing.T) {
	addr, err := FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	l.Close()
}
