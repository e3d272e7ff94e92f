package app

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"go.uber.org/zap"

	"github.com/credswap/credswap/config"
)

// warnUnverifiedUpstream logs, once at startup, what crosses the network
// unprotected when the upstream is off loopback and upstream TLS does not
// verify the server (verify-full), or when upstream_auth any hands the
// password to whatever answers on the upstream address
// (docs/security.md, "The upstream").
func warnUnverifiedUpstream(bc config.Backend, log *zap.Logger) {
	if bc.UpstreamVerified() || (bc.UpstreamOnLoopback() && bc.UpstreamAuth != "any") {
		return
	}
	var exposed []string
	msg := "upstream TLS does not verify the database: a machine on the network path can impersonate it"
	switch {
	case bc.UpstreamOnLoopback():
		msg = "upstream_auth any without verified TLS: whatever answers on the upstream address gets the password if it asks"
	case bc.UpstreamTLS.Mode == "disable":
		msg = "upstream TLS is off: the network path sees every session in plaintext and can impersonate the database"
		exposed = append(exposed, "sessions: every query and result")
	}
	exposed = append(exposed, loginExposure(bc))
	if r := bc.Rotation; r.Enabled() && r.Strategy != "vault-static" {
		if bc.Protocol == "mysql" {
			exposed = append(exposed, "rotations: ALTER USER statements carrying the new password (MySQL) or its mysql_native_password hash (MariaDB), which with one recorded login is enough to log in")
		} else {
			exposed = append(exposed, "rotations: ALTER ROLE statements carrying the new password's SCRAM verifier, which with one recorded login is enough to log in")
		}
	}
	log.Warn(msg, zap.String("upstream", bc.Upstream), zap.String("upstream_tls", bc.UpstreamTLS.Mode),
		zap.String("upstream_auth", bc.UpstreamAuth), zap.Strings("exposed", exposed),
		zap.String("fix", "upstream_tls.mode verify-full (docs/security.md)"))
}

// loginExposure says what a backend login gives away under bc's
// upstream_auth.
func loginExposure(bc config.Backend) string {
	switch {
	case bc.UpstreamAuth == "any":
		return "logins: the backend password, in cleartext if the server asks for it"
	case bc.Protocol == "mysql" && bc.UpstreamRSAPublicKeyFile != "":
		return "logins: scrambles, or the password encrypted to the pinned RSA key; an impostor can try to guess the password offline from a scramble"
	case bc.Protocol == "mysql":
		return "logins: scrambles only; an impostor can try to guess the password offline from one"
	case bc.UpstreamAuth == "md5":
		return "logins: SCRAM-SHA-256 or an md5 hash of the password, which an impostor can try to guess offline"
	}
	return "logins: SCRAM-SHA-256 only (the password is not sent)"
}

// warnReadableSecrets logs one warning for every file holding a secret
// that every user of the host may read. Group-readable files are not
// reported: a group is how credswap's user is usually given access (the
// systemd unit's files are root:credswap 0640, a Kubernetes Secret mounted
// with fsGroup or defaultMode 0440 is group-readable). A Kubernetes Secret
// mounted without defaultMode is 0644 and is reported.
func warnReadableSecrets(cfg *config.Config, log *zap.Logger) {
	for _, f := range config.SecretFiles(cfg) {
		path := f.Path
		fi, err := os.Stat(path) // follows the symlinks of a Secret volume
		if err == nil && fi.IsDir() {
			path = filepath.Join(path, "password")
			fi, err = os.Stat(path)
		}
		if err != nil || fi.Mode().Perm()&0o004 == 0 {
			continue // unreadable files are reported where they are read
		}
		log.Warn("secret file is readable by every user of the host", zap.String("field", f.Field), zap.String("path", path),
			zap.String("mode", fmt.Sprintf("%04o", fi.Mode().Perm()&fs.ModePerm)),
			zap.String("fix", "chmod o-r (0640 with credswap's group, or defaultMode: 0440 on a Kubernetes Secret volume)"))
	}
}
