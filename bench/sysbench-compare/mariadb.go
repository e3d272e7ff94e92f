//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/credswap/credswap/bench/internal/benchkit"
	"github.com/credswap/credswap/internal/testenv"
)

const (
	benchDB   = "bench"
	benchUser = "bench"

	mariadbStartTimeout = 2 * time.Minute
	sqlTimeout          = time.Minute
	prepareTimeout      = 15 * time.Minute // 4 × 100 000 rows take about 10 s
	readyTimeout        = 30 * time.Second
	pollInterval        = 50 * time.Millisecond
)

// startMariaDB starts a throwaway MariaDB server (see testenv.StartMariaDB), giving it two
// minutes. A missing program is reported with the hint to run scripts/deps.sh.
func startMariaDB(ctx context.Context) (*testenv.MariaDB, error) {
	ctx, cancel := context.WithTimeout(ctx, mariadbStartTimeout)
	defer cancel()
	m, err := testenv.StartMariaDB(ctx, testenv.MariaDBOptions{})
	if err != nil {
		var missing *testenv.MissingError
		if errors.As(err, &missing) {
			return nil, fmt.Errorf("%w; run scripts/deps.sh", err)
		}
		return nil, err
	}
	return m, nil
}

// setupDatabase creates the database "bench" and the account 'bench'@'%' with a random password
// (mysql_native_password, the server's default) and every privilege on it, as root over the unix
// socket, then loads the sysbench tables over TCP as that account with
// `sysbench oltp_point_select prepare`. It returns the account's login. dir holds the option
// files with the passwords (mode 0600).
func setupDatabase(ctx context.Context, m *testenv.MariaDB, dir, sysbenchBin string, tables, tableSize int) (benchkit.Login, error) {
	password, err := benchkit.RandomHex(16)
	if err != nil {
		return benchkit.Login{}, err
	}
	// The password is hex; the statement goes over stdin and is kept out of error messages.
	sql := "CREATE DATABASE " + benchDB + ";\n" +
		"CREATE USER '" + benchUser + "'@'%' IDENTIFIED BY '" + password + "';\n" +
		"GRANT ALL PRIVILEGES ON " + benchDB + ".* TO '" + benchUser + "'@'%';\n"
	if err := rootSQL(ctx, m, dir, sql); err != nil {
		return benchkit.Login{}, fmt.Errorf("create database and user %s: %w", benchUser, err)
	}

	l := benchkit.Login{User: benchUser, Password: password}
	connFile := filepath.Join(dir, "sysbench-direct.cnf")
	if err := writeConnFile(connFile, m.Addr(), l, benchDB); err != nil {
		return benchkit.Login{}, err
	}
	pctx, cancel := context.WithTimeout(ctx, prepareTimeout)
	defer cancel()
	args := append(workloadArgs(tables, tableSize), sysbenchTest, "prepare")
	if out, err := sysbenchCmd(pctx, sysbenchBin, connFile, args).CombinedOutput(); err != nil {
		return benchkit.Login{}, fmt.Errorf("sysbench %s: %w\n%s", strings.Join(args, " "), err, benchkit.Indent(benchkit.LastLines(string(out), 10)))
	}
	return l, nil
}

// rootSQL feeds sql to the mariadb client logged in as root over the unix socket, with an option
// file in dir holding root's password (so that it is on no command line).
func rootSQL(ctx context.Context, m *testenv.MariaDB, dir, sql string) error {
	file := filepath.Join(dir, "root.cnf")
	conf := "[client]\nuser = root\npassword = " + m.RootPassword + "\nsocket = " + m.Socket + "\nprotocol = socket\n"
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, sqlTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, m.ClientBin, "--defaults-file="+file, "--batch", "--skip-print-query-on-error")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "LANG=C.UTF-8"}
	cmd.Stdin = strings.NewReader(sql)
	cmd.WaitDelay = time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if myErr := testenv.ParseMariaDBError(stderr.Bytes()); myErr != nil {
			return myErr
		}
		return fmt.Errorf("mariadb client: %w: %s", err, benchkit.LastLines(stderr.String(), 5))
	}
	return nil
}
