// Package admin serves credswap's HTTP admin API: /healthz, /readyz,
// /metrics, and under /v1 (bearer token when admin.token_file is set) the
// status of every backend and the refresh and drain actions. Errors are
// JSON {"error": ..., "code": ...}. See docs/admin-api.md.
package admin
