# credswap container image: one static binary on an empty base, run as an
# unprivileged numeric user. Two ways to build it (docs/operations.md):
#
#   scripts/image.sh
#       Offline, with podman or buildah from Debian's packages: the script
#       compiles the binary on the host (CGO_ENABLED=0, version stamped) into
#       a build context of its own and builds this file with
#       --build-arg BINARY=prebuilt. Nothing is pulled from a registry. CI
#       builds the image this way.
#
#   docker build -t credswap .          (or podman/buildah, same arguments)
#       From source, BINARY=source (the default): compiles inside the
#       golang image, so it needs a container registry and the Go module
#       proxy. Pass --build-arg VERSION=… COMMIT=… DATE=… to stamp it.
#
# Either way a stage files-$BINARY holds the image's files, and the last
# stage, the same for both, adds the configuration.

ARG BINARY=source
ARG GO_IMAGE=docker.io/library/golang:1.26-bookworm

# ---- BINARY=source: compile inside the golang image -------------------
FROM ${GO_IMAGE} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=devel
ARG COMMIT=unknown
ARG DATE=unknown
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT} -X main.date=${DATE}" \
      -o /image/usr/local/bin/credswap ./cmd/proxy \
 && mkdir -p /image/etc/ssl/certs /image/etc/credswap /image/var/lib /image-state \
 && cp /etc/ssl/certs/ca-certificates.crt /image/etc/ssl/certs/

FROM scratch AS files-source
COPY --from=build /image/ /
COPY --from=build --chown=65532:65532 /image-state/ /var/lib/credswap/

# ---- BINARY=prebuilt: the files scripts/image.sh prepared -------------
FROM scratch AS files-prebuilt
COPY rootfs/ /
COPY --chown=65532:65532 state/ /var/lib/credswap/

# ---- the image ----------------------------------------------------------
# /usr/local/bin/credswap, the CA bundle Go's TLS reads
# (/etc/ssl/certs/ca-certificates.crt), an empty /etc/credswap for the
# configuration (mount it: a ConfigMap, a bind mount), and the rotation
# journal's directory /var/lib/credswap, writable by the user below: point
# rotation.journal at it and mount a volume there when credswap rotates
# passwords itself. Nothing else is written.
FROM files-${BINARY}
ARG VERSION=devel
ARG COMMIT=unknown
ARG DATE=unknown
LABEL org.opencontainers.image.title="credswap" \
      org.opencontainers.image.description="Database proxy (PostgreSQL, MySQL/MariaDB) that rotates backend passwords under live client sessions" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}" \
      org.opencontainers.image.created="${DATE}" \
      org.opencontainers.image.source="https://github.com/credswap/credswap" \
      org.opencontainers.image.documentation="https://github.com/credswap/credswap/blob/main/docs/operations.md" \
      org.opencontainers.image.base.name="scratch"
VOLUME ["/var/lib/credswap"]
# No /etc/passwd: a numeric user, as Kubernetes' runAsNonRoot can verify.
USER 65532:65532
# PostgreSQL and MySQL listeners as in examples/, and the admin API
# (/healthz, /readyz, /metrics). The configuration decides the real ones.
EXPOSE 6432/tcp 3307/tcp 9649/tcp
ENTRYPOINT ["/usr/local/bin/credswap"]
CMD ["run", "--config", "/etc/credswap/credswap.yaml"]
