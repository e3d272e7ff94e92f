package creds

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"
)

// maxCredentialFileSize bounds how much of a credential file is read, so that
// a path pointing at the wrong file cannot exhaust memory.
const maxCredentialFileSize = 1 << 20

// defaultDebounce is FileOptions.Debounce when it is zero.
const defaultDebounce = 100 * time.Millisecond

// FileOptions configures a FileSource.
type FileOptions struct {
	// Debounce is how long Watch waits after the last file system event
	// before announcing a change (default 100ms), so that a burst of events
	// from one update yields one refresh.
	Debounce time.Duration
	// Logger receives watch problems at debug and warn level; nil discards
	// them. Nothing logged includes file content.
	Logger *zap.Logger
}

// FileSource reads a credential from a JSON file or from a directory holding
// the files "username" and "password" (a mounted Kubernetes Secret). It is
// safe for concurrent use; Watch may run while Fetch is called.
type FileSource struct {
	path     string
	debounce time.Duration
	log      *zap.Logger
	ver      versioner
}

// NewFileSource returns a Source of kind "file" reading path, which may be a
// JSON file {"username": "...", "password": "..."} or a directory.
func NewFileSource(path string, opts FileOptions) *FileSource {
	if opts.Debounce <= 0 {
		opts.Debounce = defaultDebounce
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	return &FileSource{
		path:     filepath.Clean(path),
		debounce: opts.Debounce,
		log:      opts.Logger,
		ver:      newVersioner(),
	}
}

// Kind returns "file".
func (s *FileSource) Kind() string { return "file" }

// Fetch reads the credential. Errors name the path and what is wrong, never
// the content of a file.
func (s *FileSource) Fetch(ctx context.Context) (Credential, error) {
	if err := ctx.Err(); err != nil {
		return Credential{}, err
	}
	fi, err := os.Stat(s.path)
	if err != nil {
		return Credential{}, err // *fs.PathError: op, path and errno only
	}
	var user, pass string
	if fi.IsDir() {
		user, pass, err = readCredentialDir(s.path)
	} else {
		user, pass, err = readCredentialJSON(s.path)
	}
	if err != nil {
		return Credential{}, err
	}
	return Credential{
		Username: user,
		Password: pass,
		Version:  s.ver.version(user, pass),
		Source:   "file",
	}, nil
}

// readCredentialJSON reads and parses a JSON credential file.
func readCredentialJSON(path string) (user, pass string, err error) {
	data, err := readSmallFile(path)
	if err != nil {
		return "", "", err
	}
	user, pass, err = parseCredentialJSON(data)
	if err != nil {
		return "", "", fmt.Errorf("%s: %w", path, err)
	}
	return user, pass, nil
}

// readCredentialDir reads dir/username and dir/password. The username is read
// again after the password: if it changed, the directory was updated between
// the two reads and the pair might not belong together, so it is read again.
// (When only the password changed, any pair read is a real one.)
func readCredentialDir(dir string) (user, pass string, err error) {
	const attempts = 3
	for range attempts {
		user, err = readDirFile(dir, "username")
		if err != nil {
			return "", "", err
		}
		if user == "" {
			return "", "", fmt.Errorf("%s: must not be empty", filepath.Join(dir, "username"))
		}
		pass, err = readDirFile(dir, "password")
		if err != nil {
			return "", "", err
		}
		again, err := readDirFile(dir, "username")
		if err != nil {
			return "", "", err
		}
		if again == user {
			return user, pass, nil
		}
	}
	return "", "", fmt.Errorf("%s: username changed while reading the credential %d times", dir, attempts)
}

// readDirFile reads dir/name without one trailing "\n" or "\r\n", which
// editors and `kubectl create secret --from-file` tend to leave.
func readDirFile(dir, name string) (string, error) {
	data, err := readSmallFile(filepath.Join(dir, name))
	if err != nil {
		return "", err
	}
	switch {
	case bytes.HasSuffix(data, []byte("\r\n")):
		data = data[:len(data)-2]
	case bytes.HasSuffix(data, []byte("\n")):
		data = data[:len(data)-1]
	}
	return string(data), nil
}

// readSmallFile reads at most maxCredentialFileSize bytes of path.
func readSmallFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxCredentialFileSize+1))
	if err != nil {
		return nil, err // *fs.PathError: op, path and errno only
	}
	if len(data) > maxCredentialFileSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxCredentialFileSize)
	}
	return data, nil
}

// parseCredentialJSON extracts username and password from a JSON object.
// Unknown keys are ignored. The errors it returns never quote the input:
// encoding/json's own messages do (for example "invalid character 'x'"), so
// they are replaced by ones that give only a byte offset or a field name.
func parseCredentialJSON(data []byte) (user, pass string, err error) {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")) // UTF-8 byte order mark
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		var syntax *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syntax):
			return "", "", fmt.Errorf("invalid JSON at byte offset %d", syntax.Offset)
		case errors.As(err, &typ):
			return "", "", errors.New("invalid credential: the top-level JSON value must be an object")
		default:
			return "", "", errors.New("invalid JSON")
		}
	}
	if fields == nil { // the input was "null"
		return "", "", errors.New("invalid credential: the top-level JSON value must be an object")
	}
	user, err = jsonStringField(fields, "username")
	if err != nil {
		return "", "", err
	}
	if user == "" {
		return "", "", errors.New("field username must not be empty")
	}
	pass, err = jsonStringField(fields, "password")
	if err != nil {
		return "", "", err
	}
	return user, pass, nil
}

// jsonStringField decodes fields[name] as a JSON string.
func jsonStringField(fields map[string]json.RawMessage, name string) (string, error) {
	raw, ok := fields[name]
	if !ok {
		return "", fmt.Errorf("field %s missing", name)
	}
	var s string
	// null would decode into "" without an error; it is not a string.
	if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) || json.Unmarshal(raw, &s) != nil {
		return "", fmt.Errorf("field %s must be a string", name)
	}
	return s, nil
}
