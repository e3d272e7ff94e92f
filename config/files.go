package config

import (
	"fmt"
	"os"
	"path/filepath"
)

// fileRef is a field of a Config that names a file the proxy reads.
type fileRef struct {
	path   string  // field path, such as "backends[0].clients[1].password_file"
	val    *string // the field
	dirOK  bool    // a directory is acceptable (credential.path)
	owner  any     // the enclosing struct, to place errors when val was not set
	secret bool    // the file holds a secret (a password, token or private key)
}

// fileRefs lists the file-naming fields of c, empty or not. It is the one
// list both path resolution and Load's file checks work from, so the two
// cannot disagree.
func fileRefs(c *Config) []fileRef {
	refs := []fileRef{
		{path: "admin.token_file", val: &c.Admin.TokenFile, owner: &c.Admin, secret: true},
		{path: "vault.ca_file", val: &c.Vault.CAFile, owner: &c.Vault},
		{path: "vault.auth.path", val: &c.Vault.Auth.Path, owner: &c.Vault.Auth, secret: true},
		{path: "vault.auth.secret_id_file", val: &c.Vault.Auth.SecretIDFile, owner: &c.Vault.Auth, secret: true},
	}
	for i := range c.Backends {
		b := &c.Backends[i]
		p := indexPath("backends", i)
		refs = append(refs,
			fileRef{path: p + ".upstream_tls.ca_file", val: &b.UpstreamTLS.CAFile, owner: b},
			fileRef{path: p + ".upstream_tls.cert_file", val: &b.UpstreamTLS.CertFile, owner: b},
			fileRef{path: p + ".upstream_tls.key_file", val: &b.UpstreamTLS.KeyFile, owner: b, secret: true},
			fileRef{path: p + ".upstream_rsa_public_key_file", val: &b.UpstreamRSAPublicKeyFile, owner: b},
			fileRef{path: p + ".client_tls.cert_file", val: &b.ClientTLS.CertFile, owner: b},
			fileRef{path: p + ".client_tls.key_file", val: &b.ClientTLS.KeyFile, owner: b, secret: true},
		)
		for j := range b.Clients {
			refs = append(refs, fileRef{
				path:   indexPath(p+".clients", j) + ".password_file",
				val:    &b.Clients[j].PasswordFile,
				owner:  &b.Clients[j],
				secret: true,
			})
		}
		// Only source file names a file: other sources (vault-kv) will use
		// path for a secret's path in Vault.
		if b.Credential.Source == sourceFile {
			refs = append(refs, fileRef{path: p + ".credential.path", val: &b.Credential.Path, dirOK: true, owner: b, secret: true})
		}
		if ac := &b.Rotation.AdminCredential; ac.Source == sourceFile {
			refs = append(refs, fileRef{path: p + ".rotation.admin_credential.path", val: &ac.Path, owner: b, secret: true})
		}
	}
	return refs
}

// SecretFile is a file named in the configuration that holds a secret: a
// password, a token or a private key.
type SecretFile struct {
	// Field is the field's path, such as backends[0].credential.path.
	Field string
	// Path is the file (absolute after Load); a credential directory's
	// secret is its file "password".
	Path string
}

// SecretFiles lists the files c names that hold secrets, for the check
// that nobody but credswap's user and group can read them.
func SecretFiles(c *Config) []SecretFile {
	var out []SecretFile
	for _, r := range fileRefs(c) {
		if r.secret && *r.val != "" {
			out = append(out, SecretFile{Field: r.path, Path: *r.val})
		}
	}
	return out
}

// resolvePaths makes every relative file path in c absolute against base.
// An empty base leaves paths as they are.
func resolvePaths(c *Config, base string) {
	if base == "" {
		return
	}
	for _, r := range fileRefs(c) {
		if *r.val != "" && !filepath.IsAbs(*r.val) {
			*r.val = filepath.Join(base, *r.val)
		}
	}
	// Rotation journals are written, not read: they need not exist yet,
	// so they are resolved here but not checked by Load.
	for i := range c.Backends {
		r := &c.Backends[i].Rotation
		if !r.Enabled() {
			continue
		}
		if r.Journal == "" {
			r.Journal = "credswap-" + c.Backends[i].Name + ".rotation.json"
		}
		if !filepath.IsAbs(r.Journal) {
			r.Journal = filepath.Join(base, r.Journal)
		}
	}
}

// checkFiles reports every file named in c that cannot be opened for
// reading, or that is a directory where a file is expected. It opens the
// files but reads nothing: their contents may be secrets.
func checkFiles(c *Config, given fieldSet) error {
	var errs issues
	for _, r := range fileRefs(c) {
		if *r.val == "" {
			continue
		}
		if problem := checkReadable(*r.val, r.dirOK); problem != "" {
			errs.addf(r.path, given.line(r.val, r.owner), "%s", problem)
		}
	}
	return errs.err()
}

// checkReadable says what keeps name from being read, or "" when nothing
// does.
func checkReadable(name string, dirOK bool) string {
	f, err := os.Open(name)
	if err != nil {
		return err.Error() // *fs.PathError: "open <name>: <reason>"
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err.Error()
	}
	if st.IsDir() && !dirOK {
		return fmt.Sprintf("%s is a directory, not a file", name)
	}
	return ""
}
