package config

import (
	"os"
	"path/filepath"
)

// ParseOptions are the inputs of Parse besides the document.
type ParseOptions struct {
	// LookupEnv returns the value of an environment variable for ${NAME}
	// expansion; nil means that no variable is set.
	LookupEnv func(string) (string, bool)
	// BaseDir is the directory relative file paths are resolved against; it
	// should be absolute. Empty leaves relative paths as they are.
	BaseDir string
}

// Load reads the configuration file at path, parses it with Parse (BaseDir
// the file's directory, LookupEnv os.LookupEnv) and then checks that every
// file the configuration names exists and can be opened for reading.
func Load(path string) (*Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(abs)
	if err != nil {
		return nil, err // *fs.PathError, which names the file
	}
	cfg, given, err := parse(data, ParseOptions{LookupEnv: os.LookupEnv, BaseDir: filepath.Dir(abs)})
	if err != nil {
		return nil, err
	}
	if err := checkFiles(cfg, given); err != nil {
		return nil, err
	}
	return cfg, nil
}

// Parse decodes a YAML configuration strictly, expands ${NAME} in its
// values, applies the defaults, resolves relative file paths and validates
// the result. On failure it returns a nil Config and every problem found, as
// *FieldError values joined with errors.Join in document order. Parse does
// not touch the file system.
func Parse(data []byte, opts ParseOptions) (*Config, error) {
	cfg, _, err := parse(data, opts)
	return cfg, err
}

// parse is Parse that also returns which fields the document set, for
// Load's error lines.
func parse(data []byte, opts ParseOptions) (*Config, fieldSet, error) {
	var errs issues
	cfg := new(Config)
	given := decode(data, cfg, opts.LookupEnv, &errs)
	// Validating a document that did not decode would mostly repeat its
	// decoding errors ("path is required" after "pathh: unknown key").
	if !errs.empty() {
		return nil, nil, errs.err()
	}
	applyDefaults(cfg, given)
	validate(cfg, given, &errs)
	if !errs.empty() {
		return nil, nil, errs.err()
	}
	resolvePaths(cfg, opts.BaseDir)
	return cfg, given, nil
}
