#!/usr/bin/env bash
# Runs every credswap test on a fresh machine: installs the PostgreSQL
# binaries the tests start their own servers from (and podman, buildah,
# promtool and systemd-analyze for the deployment kit), then the
# race-enabled test suite and the Kubernetes manifests' module. CI=true
# turns a missing server binary or tool into a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
export PATH="$PATH:$(go env GOPATH)/bin"
gofmt_out=$(gofmt -l $(git ls-files '*.go') 2>/dev/null || true)
if [ -n "$gofmt_out" ]; then
  echo "gofmt would change:" >&2; echo "$gofmt_out" >&2; exit 1
fi
go vet ./...
# One package at a time: the load tests of proxy/postgres, proxy/mysql and
# rotate (pgbench, sysbench, rotations every 500 ms) each assume the 2-core
# machine to themselves; run in parallel they starve each other.
go test -race -count=1 -p 1 -timeout 30m ./... "$@"
# The Kubernetes manifests' test is a module of its own, so that k8s.io
# stays out of the main go.mod; ./... does not enter it.
(cd deploy/kubernetes/manifest_test && go vet ./... && go test -race -count=1 ./...)
