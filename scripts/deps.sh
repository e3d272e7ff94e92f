#!/usr/bin/env bash
# Installs what credswap's tests and benchmarks need on a Debian machine and
# fails loudly if a required program is still missing afterwards.
#
#   scripts/deps.sh            # test dependencies: PostgreSQL and MariaDB servers
#                              # and clients, sysbench; for the deployment kit's
#                              # tests (deploy/) podman and buildah (image
#                              # builds), promtool (package prometheus; its
#                              # server is not started) and systemd-analyze;
#                              # for the client matrix (internal/clientmatrix)
#                              # psycopg2, psycopg 3 and its pool, PyMySQL,
#                              # mysqlclient, a JDK, pgjdbc, MariaDB
#                              # Connector/J, Node.js with npm, and the npm
#                              # packages pg and mysql2 (npm ci into
#                              # internal/clientmatrix/testdata/node)
#   scripts/deps.sh bench      # plus pgbouncer and socat for the benchmarks
set -euo pipefail

need_pkgs=()
pg_bindir() {
  if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
    pg_config --bindir; return
  fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

bindir=$(pg_bindir || true)
for prog in initdb postgres pgbench; do
  if [ -z "$bindir" ] || [ ! -x "$bindir/$prog" ]; then need_pkgs+=(postgresql); break; fi
done
command -v psql >/dev/null 2>&1 || need_pkgs+=(postgresql-client)
# MariaDB: testenv runs mariadb-install-db and mariadbd from these packages.
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }
{ have mariadbd && have mariadb-install-db; } || need_pkgs+=(mariadb-server)
have mariadb || need_pkgs+=(mariadb-client)
have sysbench || need_pkgs+=(sysbench)
# Deployment kit (deploy/): image builds, alert rule tests, unit checks.
have podman || need_pkgs+=(podman)
have buildah || need_pkgs+=(buildah)
have promtool || need_pkgs+=(prometheus)
have systemd-analyze || need_pkgs+=(systemd)
[ -r /etc/ssl/certs/ca-certificates.crt ] || need_pkgs+=(ca-certificates)
# Client matrix (internal/clientmatrix): Debian's python3 with the drivers,
# a JDK for javac, the JDBC drivers' jars, Node.js and npm.
matrix_py_modules=(psycopg2:python3-psycopg2 psycopg:python3-psycopg psycopg_pool:python3-psycopg-pool
  pymysql:python3-pymysql cryptography:python3-cryptography MySQLdb:python3-mysqldb)
pg_jdbc_jar=/usr/share/java/postgresql.jar
maria_jdbc_jar=/usr/share/java/mariadb-java-client.jar
matrix_node_dir="$(cd "$(dirname "$0")/.." && pwd)/internal/clientmatrix/testdata/node"
for mp in "${matrix_py_modules[@]}"; do
  [ -x /usr/bin/python3 ] && /usr/bin/python3 -c "import ${mp%%:*}" 2>/dev/null || need_pkgs+=("${mp#*:}")
done
have javac || need_pkgs+=(default-jdk-headless)
[ -r "$pg_jdbc_jar" ] || need_pkgs+=(libpostgresql-jdbc-java)
[ -r "$maria_jdbc_jar" ] || need_pkgs+=(libmariadb-java)
have node || need_pkgs+=(nodejs)
have npm || need_pkgs+=(npm)
if [ "${1:-}" = "bench" ]; then
  command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || need_pkgs+=(pgbouncer)
  have socat || need_pkgs+=(socat)
fi

if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "deps: installing ${need_pkgs[*]}" >&2
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  # The prometheus package ships the server too; only promtool is wanted.
  # Keep its init script from starting the server (the machine's image
  # usually has such a policy already).
  if [[ " ${need_pkgs[*]} " == *" prometheus "* ]] && [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod +x /usr/sbin/policy-rc.d
    trap '$sudo rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

bindir=$(pg_bindir || true)
missing=()
for prog in initdb postgres pgbench psql; do
  [ -n "$bindir" ] && [ -x "$bindir/$prog" ] || missing+=("$prog")
done
for prog in mariadbd mariadb-install-db mariadb sysbench podman buildah promtool systemd-analyze; do
  have "$prog" || missing+=("$prog")
done
if [ "${1:-}" = "bench" ]; then
  command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
  have socat || missing+=(socat)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: required programs missing after install: ${missing[*]}" >&2
  exit 1
fi

# The client matrix's npm packages, from the committed package-lock.json;
# reinstalled only when the lock file changed since the last install.
if have npm && ! cmp -s "$matrix_node_dir/package-lock.json" "$matrix_node_dir/node_modules/.credswap-installed-lock"; then
  echo "deps: npm ci in $matrix_node_dir" >&2
  if (cd "$matrix_node_dir" && npm ci --no-audit --no-fund --loglevel=error >&2); then
    cp "$matrix_node_dir/package-lock.json" "$matrix_node_dir/node_modules/.credswap-installed-lock"
  fi
fi
matrix_missing=()
for mp in "${matrix_py_modules[@]}"; do
  /usr/bin/python3 -c "import ${mp%%:*}" 2>/dev/null || matrix_missing+=("python3 module ${mp%%:*} (${mp#*:})")
done
for prog in javac java node npm; do
  have "$prog" || matrix_missing+=("$prog")
done
for jar in "$pg_jdbc_jar" "$maria_jdbc_jar"; do
  [ -r "$jar" ] || matrix_missing+=("$jar")
done
for pkg in pg mysql2; do
  [ -r "$matrix_node_dir/node_modules/$pkg/package.json" ] || matrix_missing+=("npm package $pkg in $matrix_node_dir")
done
if [ ${#matrix_missing[@]} -gt 0 ]; then
  if [ "${CI:-}" = "true" ]; then
    echo "deps: the client matrix's clients are missing after install: ${matrix_missing[*]}" >&2
    exit 1
  fi
  echo "deps: WARNING: the client matrix (internal/clientmatrix) will skip clients; missing: ${matrix_missing[*]}" >&2
fi
command -v go >/dev/null 2>&1 || { echo "deps: go is not on PATH" >&2; exit 1; }
[ -r /etc/ssl/certs/ca-certificates.crt ] || { echo "deps: /etc/ssl/certs/ca-certificates.crt missing after install" >&2; exit 1; }
echo "deps: PostgreSQL binaries in $bindir; MariaDB $(mariadbd --version 2>/dev/null | awk '{print $3}' || /usr/sbin/mariadbd --version | awk '{print $3}'); $(sysbench --version)" >&2
