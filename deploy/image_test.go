package deploy

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/credswap/credswap/internal/proxytest"
	"github.com/credswap/credswap/internal/testenv"
)

// imageConfig is the part of `podman image inspect` the test reads.
type imageConfig struct {
	Config struct {
		User         string
		Entrypoint   []string
		Cmd          []string
		ExposedPorts map[string]struct{}
		Volumes      map[string]struct{}
		Labels       map[string]string
		Env          []string
	}
	Os           string
	Architecture string
}

// TestImage builds the image with scripts/image.sh, once with podman and
// once with buildah, offline, and checks its configuration (numeric
// non-root user, entrypoint, ports, OCI labels stamped with the version),
// its files (the static binary, the CA bundle, /etc/credswap, the journal
// directory owned by the user, nothing else), and runs the binary taken
// out of it (podman create + export; containers cannot run on these
// machines) with version and with check against a real PostgreSQL.
func TestImage(t *testing.T) {
	podman := testenv.RequireBinary(t, "podman")
	root := repoRoot(t)
	const (
		ver  = "v0.0.0-imagetest"
		rev  = "0123456789abcdef0123456789abcdef01234567"
		date = "2026-11-25T18:00:00Z"
	)
	var configs []imageConfig
	var tags []string
	for _, builder := range []string{"podman", "buildah"} {
		testenv.RequireBinary(t, builder)
		tag := "localhost/credswap-imagetest:" + builder + "-" + proxytest.Random(4)
		env := append(os.Environ(), "CREDSWAP_IMAGE_BUILDER="+builder, "VERSION="+ver, "COMMIT="+rev, "DATE="+date)
		out := run(t, root, env, "scripts/image.sh", "-t", tag)
		t.Cleanup(func() { command("", nil, podman, "rmi", "-f", tag).Run() })
		if !strings.Contains(out, "building credswap "+ver) {
			t.Fatalf("image.sh output:\n%s", out)
		}
		var inspected []imageConfig
		if err := json.Unmarshal([]byte(run(t, "", nil, podman, "image", "inspect", tag)), &inspected); err != nil || len(inspected) != 1 {
			t.Fatalf("podman image inspect %s: %v", tag, err)
		}
		configs = append(configs, inspected[0])
		tags = append(tags, tag)
	}

	for i, ic := range configs {
		c := ic.Config
		if c.User != "65532:65532" {
			t.Errorf("%s: user %q, want the numeric non-root 65532:65532", tags[i], c.User)
		}
		if !slices.Equal(c.Entrypoint, []string{"/usr/local/bin/credswap"}) ||
			!slices.Equal(c.Cmd, []string{"run", "--config", "/etc/credswap/credswap.yaml"}) {
			t.Errorf("%s: entrypoint %q cmd %q", tags[i], c.Entrypoint, c.Cmd)
		}
		for _, p := range []string{"6432/tcp", "3307/tcp", "9649/tcp"} {
			if _, ok := c.ExposedPorts[p]; !ok {
				t.Errorf("%s: port %s not exposed (%v)", tags[i], p, c.ExposedPorts)
			}
		}
		if _, ok := c.Volumes["/var/lib/credswap"]; !ok {
			t.Errorf("%s: no volume /var/lib/credswap (%v)", tags[i], c.Volumes)
		}
		for k, want := range map[string]string{
			"org.opencontainers.image.title":    "credswap",
			"org.opencontainers.image.version":  ver,
			"org.opencontainers.image.revision": rev,
			"org.opencontainers.image.created":  date,
			"org.opencontainers.image.source":   "https://github.com/credswap/credswap",
		} {
			if got := c.Labels[k]; got != want {
				t.Errorf("%s: label %s = %q, want %q", tags[i], k, got, want)
			}
		}
		if ic.Os != "linux" || ic.Architecture != runtime.GOARCH {
			t.Errorf("%s: platform %s/%s", tags[i], ic.Os, ic.Architecture)
		}
	}
	if len(configs) == 2 {
		a, _ := json.Marshal(configs[0].Config)
		b, _ := json.Marshal(configs[1].Config)
		// buildah adds no labels of its own beyond what podman (built on
		// buildah) adds; the configurations must be the same.
		if !bytes.Equal(a, b) {
			t.Errorf("podman and buildah built different configurations:\n%s\n%s", a, b)
		}
	}

	// The files of the image, from a container that is created, not run.
	id := strings.TrimSpace(run(t, "", nil, podman, "create", tags[0]))
	t.Cleanup(func() { command("", nil, podman, "rm", "-f", id).Run() })
	dir := t.TempDir()
	tarPath := filepath.Join(dir, "rootfs.tar")
	run(t, "", nil, podman, "export", "-o", tarPath, id)
	bin := filepath.Join(dir, "credswap")
	entries := readImageTar(t, tarPath, map[string]string{"usr/local/bin/credswap": bin})
	want := map[string]string{
		"etc/":                              "dir 0:0",
		"etc/credswap/":                     "dir 0:0",
		"etc/ssl/":                          "dir 0:0",
		"etc/ssl/certs/":                    "dir 0:0",
		"etc/ssl/certs/ca-certificates.crt": "file 0:0",
		"usr/":                              "dir 0:0",
		"usr/local/":                        "dir 0:0",
		"usr/local/bin/":                    "dir 0:0",
		"usr/local/bin/credswap":            "exec 0:0",
		"var/":                              "dir 0:0",
		"var/lib/":                          "dir 0:0",
		"var/lib/credswap/":                 "dir 65532:65532",
	}
	for name, kind := range want {
		if entries[name] != kind {
			t.Errorf("image file %s: %q, want %q", name, entries[name], kind)
		}
	}
	for name, kind := range entries {
		// podman create adds the mount points of a container runtime.
		if _, ok := want[name]; !ok && !slices.Contains([]string{"dev/", "proc/", "sys/", "run/", "etc/hosts", "etc/resolv.conf", "etc/hostname", "run/.containerenv"}, name) {
			t.Errorf("unexpected file in the image: %s (%s)", name, kind)
		}
	}
	checkStatic(t, bin)

	out := run(t, "", nil, bin, "version")
	wantVersion := fmt.Sprintf("credswap %s (commit %s, built %s, %s linux/%s)\n", ver, rev, date, runtime.Version(), runtime.GOARCH)
	if out != wantVersion {
		t.Errorf("version from the image:\n got %q\nwant %q", out, wantVersion)
	}

	// check: a real test login through the binary from the image.
	pg := testenv.PG(t)
	user, pass := pg.CreateUser(t, "img")
	cfgDir := t.TempDir()
	os.WriteFile(filepath.Join(cfgDir, "app-password"), []byte("local\n"), 0o600)
	cfg := fmt.Sprintf("backends:\n  - name: db\n    protocol: postgres\n    listen: 127.0.0.1:6432\n    upstream: %s\n    clients: [{user: app, password_file: app-password}]\n    credential: {source: file, path: db.json}\n", pg.Addr())
	cfgPath := filepath.Join(cfgDir, "credswap.yaml")
	os.WriteFile(cfgPath, []byte(cfg), 0o600)
	writeCred := func(pw string) {
		b, _ := json.Marshal(map[string]string{"username": user, "password": pw})
		os.WriteFile(filepath.Join(cfgDir, "db.json"), b, 0o600)
	}
	writeCred(pass)
	if out := run(t, "", nil, bin, "check", "--config", cfgPath); !strings.Contains(out, "backend db: ok ("+pg.Addr()+")") {
		t.Errorf("check: %s", out)
	}
	writeCred("not-the-password")
	out2, err := command("", nil, bin, "check", "--config", cfgPath).CombinedOutput()
	var exit interface{ ExitCode() int }
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(string(out2), "backend db: FAIL") {
		t.Errorf("check with a wrong password: %v\n%s", err, out2)
	}
	if strings.Contains(string(out2), pass) || strings.Contains(string(out2), "not-the-password") {
		t.Error("check printed a password")
	}
}

// readImageTar lists the entries of an exported root file system as
// "dir|file|exec|link uid:gid" by name (directories end in "/") and
// extracts the files named in extract.
func readImageTar(t *testing.T, path string, extract map[string]string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	entries := map[string]string{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(h.Name, "./")
		kind := "file"
		switch {
		case h.Typeflag == tar.TypeDir:
			kind = "dir"
			name = strings.TrimSuffix(name, "/") + "/"
		case h.Typeflag == tar.TypeSymlink || h.Typeflag == tar.TypeLink:
			kind = "link"
		case h.Mode&0o111 != 0:
			kind = "exec"
		}
		entries[name] = fmt.Sprintf("%s %d:%d", kind, h.Uid, h.Gid)
		if dst, ok := extract[name]; ok {
			out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(out, tr); err != nil {
				t.Fatal(err)
			}
			out.Close()
		}
	}
	return entries
}

// checkStatic fails unless path is an ELF executable without an
// interpreter or shared libraries (it runs on an empty base image).
func checkStatic(t *testing.T, path string) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("the image's binary: %v", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the image's binary is dynamically linked (has an interpreter)")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("the image's binary needs shared libraries: %v", libs)
	}
}
