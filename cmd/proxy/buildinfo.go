package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/credswap/credswap/admin"
)

// Stamped at build time, as scripts/image.sh and the Dockerfile do:
//
//	go build -ldflags "-X main.version=v1.2.3 -X main.commit=$(git rev-parse HEAD) -X main.date=$(date -u +%Y-%m-%dT%H:%M:%SZ)" ./cmd/proxy
//
// What is not stamped comes from the Go build information (module version,
// VCS revision and time), which `go build` in a git checkout records.
var (
	version = ""
	commit  = ""
	date    = ""
)

// binaryInfo identifies this binary: the stamped values, else the Go
// build information, else "unknown".
func binaryInfo() admin.BuildInfo {
	b := admin.BuildInfo{Version: version, Commit: commit, Date: date, GoVersion: runtime.Version()}
	var rev, vcsTime, modVersion string
	modified := false
	if info, ok := debug.ReadBuildInfo(); ok {
		modVersion = info.Main.Version
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				vcsTime = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if b.Version == "" {
		b.Version = modVersion
		if b.Version == "" || b.Version == "(devel)" {
			b.Version = "devel"
		}
		if len(rev) >= 12 {
			b.Version += "+" + rev[:12]
		}
	}
	if b.Commit == "" && rev != "" {
		b.Commit = rev
		if modified {
			b.Commit += "-dirty"
		}
	}
	if b.Date == "" {
		b.Date = vcsTime
	}
	for _, f := range []*string{&b.Commit, &b.Date} {
		if *f == "" {
			*f = "unknown"
		}
	}
	return b
}

// buildVersion is the version /v1/status reports.
func buildVersion() string { return binaryInfo().Version }

// versionLine is what `credswap version` prints.
func versionLine(b admin.BuildInfo) string {
	return fmt.Sprintf("credswap %s (commit %s, built %s, %s %s/%s)", b.Version, b.Commit, b.Date, b.GoVersion, runtime.GOOS, runtime.GOARCH)
}
