#!/usr/bin/env bash
# Builds the credswap container image offline: compiles a static binary on
# this machine with the local Go toolchain, stamps its version, and builds
# the repository's Dockerfile with --build-arg BINARY=prebuilt, which pulls
# nothing from a registry (the image is FROM scratch). Uses podman, else
# buildah (Debian packages; scripts/deps.sh installs both), else docker.
#
#   scripts/image.sh                      # tags localhost/credswap:latest
#   scripts/image.sh -t registry.example/credswap:v1.2.3
#   CREDSWAP_IMAGE_BUILDER=buildah scripts/image.sh
#
# VERSION, COMMIT and DATE in the environment override what git and the
# clock say (DATE defaults to $SOURCE_DATE_EPOCH when that is set). GOARCH
# picks another architecture. The last line printed is the image's ID.
set -euo pipefail
cd "$(dirname "$0")/.."

tag=localhost/credswap:latest
while [ $# -gt 0 ]; do
  case "$1" in
    -t|--tag) tag="$2"; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "image.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

builder="${CREDSWAP_IMAGE_BUILDER:-}"
if [ -z "$builder" ]; then
  for b in podman buildah docker; do
    if command -v "$b" >/dev/null 2>&1; then builder=$b; break; fi
  done
fi
if [ -z "$builder" ] || ! command -v "$builder" >/dev/null 2>&1; then
  echo "image.sh: no image builder found (podman, buildah or docker); scripts/deps.sh installs podman and buildah" >&2
  exit 1
fi
certs=/etc/ssl/certs/ca-certificates.crt
if [ ! -r "$certs" ]; then
  echo "image.sh: $certs is missing (Debian package ca-certificates)" >&2
  exit 1
fi

git_dir_ok() { git rev-parse --git-dir >/dev/null 2>&1; }
commit="${COMMIT:-$(git_dir_ok && git rev-parse HEAD || echo unknown)}"
version="${VERSION:-$(git_dir_ok && git describe --tags --always --dirty 2>/dev/null || echo devel)}"
if [ -z "${DATE:-}" ]; then
  if [ -n "${SOURCE_DATE_EPOCH:-}" ]; then
    DATE=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
  else
    DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  fi
fi

ctx=$(mktemp -d "${TMPDIR:-/tmp}/credswap-image.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/etc/ssl/certs" "$ctx/rootfs/etc/credswap" "$ctx/rootfs/var/lib" "$ctx/state"
goarch="${GOARCH:-$(go env GOARCH)}"
echo "image.sh: building credswap $version ($commit) for linux/$goarch" >&2
CGO_ENABLED=0 GOOS=linux GOARCH="$goarch" go build -trimpath \
  -ldflags "-s -w -X main.version=$version -X main.commit=$commit -X main.date=$DATE" \
  -o "$ctx/rootfs/usr/local/bin/credswap" ./cmd/proxy
cp "$certs" "$ctx/rootfs/etc/ssl/certs/ca-certificates.crt"

args=(--build-arg BINARY=prebuilt --build-arg "VERSION=$version" --build-arg "COMMIT=$commit" --build-arg "DATE=$DATE"
      --platform "linux/$goarch" -f "$PWD/Dockerfile" -t "$tag")
echo "image.sh: $builder build -t $tag" >&2
case "$builder" in
  buildah) buildah bud --quiet "${args[@]}" "$ctx" >&2 ;;
  podman) podman build --layers=false --quiet "${args[@]}" "$ctx" >&2 ;;
  *) "$builder" build --quiet "${args[@]}" "$ctx" >&2 ;;
esac
"$builder" inspect --format '{{.Id}}' "$tag" 2>/dev/null || "$builder" images -q "$tag"
