package clientmatrix_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
)

// TestPostgresClients runs the PostgreSQL drivers through credswap,
// plainly and while the credential alternates.
func TestPostgresClients(t *testing.T) {
	t.Parallel()
	runMatrix(t, []client{
		{name: "psql", prepare: psqlClient},
		{name: "psycopg2", prepare: pythonClient("pg_psycopg2.py", "psycopg2", "python3-psycopg2")},
		{name: "psycopg3", prepare: pythonClient("pg_psycopg3.py", "psycopg_pool", "python3-psycopg and python3-psycopg-pool")},
		{name: "pgjdbc", prepare: javaClient("/usr/share/java/postgresql.jar", "libpostgresql-jdbc-java", "postgres")},
		{name: "node-postgres", prepare: nodeClient("pg.js", "pg")},
	}, func(t *testing.T, _ client) *target { return postgresTarget(t) })
}

// postgresTarget creates two backend users with the same rights, a
// database with the matrix's schema (testdata/postgres/schema.sql) granted
// to both, and a proxy whose credential is the first user.
func postgresTarget(t *testing.T) *target {
	t.Helper()
	pg := testenv.PG(t)
	userA, passA := pg.CreateUser(t, "cma")
	userB, passB := pg.CreateUser(t, "cmb")
	db := pg.CreateDatabase(t)
	pg.ExecIn(t, db, readTestdata(t, "postgres/schema.sql"))
	both := pgx.Identifier{userA}.Sanitize() + ", " + pgx.Identifier{userB}.Sanitize()
	pg.Exec(t, fmt.Sprintf("GRANT ALL ON DATABASE %s TO %s", pgx.Identifier{db}.Sanitize(), both))
	pg.ExecIn(t, db, fmt.Sprintf(`GRANT ALL ON SCHEMA public, app TO %[1]s;
GRANT ALL ON ALL TABLES IN SCHEMA app TO %[1]s;
GRANT ALL ON ALL SEQUENCES IN SCHEMA app TO %[1]s`, both))
	p := proxytest.Start(t, pg, userA, passA)
	tg := &target{p: p, db: db, users: [2]string{userA, userB}, secrets: &secrets{}}
	tg.secrets.add("the local password", p.ClientPassword)
	tg.secrets.add("the password of "+userA, passA)
	tg.secrets.add("the password of "+userB, passB)
	// The superuser connection that changes passwords; only the rotation
	// goroutine uses it. The statement is not put in errors: it holds the
	// password.
	admin := pg.Connect(t, "postgres")
	tg.setPassword = func(user, password string) error {
		_, err := admin.Exec(context.Background(), "ALTER ROLE "+pgx.Identifier{user}.Sanitize()+" PASSWORD '"+strings.ReplaceAll(password, "'", "''")+"'")
		return err
	}
	return tg
}

// psqlClient runs the scripts in testdata/psql with psql, one iteration
// at a time (see drive).
func psqlClient(t *testing.T) runner {
	bin := testenv.RequireBinary(t, "psql")
	dir := testdata(t, "psql")
	return func(ctx context.Context, t *testing.T, tg *target, w work) (string, error) {
		env := append(tg.p.Env(tg.db), "PGAPPNAME=cm-psql")
		cmd := testenv.Command(ctx, bin, env, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1")
		s, err := startScript(cmd, nil)
		if err != nil {
			return "", err
		}
		setup := fmt.Sprintf("\\set backend_users '%s,%s'\n\\set min_changes %d\n\\i %s\n",
			tg.users[0], tg.users[1], w.changes, filepath.Join(dir, "setup.sql"))
		iteration := func(i int) string {
			return fmt.Sprintf("\\set iter %d\n\\i %s\n", i, filepath.Join(dir, "iteration.sql"))
		}
		return drive(s, w, setup, iteration, "\\i "+filepath.Join(dir, "finish.sql")+"\n")
	}
}
