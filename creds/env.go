package creds

import (
	"context"
	"fmt"
	"os"
)

// EnvSource reads a credential from two environment variables. It is safe
// for concurrent use.
type EnvSource struct {
	usernameVar, passwordVar string
	lookup                   func(string) (string, bool)
	ver                      versioner
}

// NewEnvSource returns a Source of kind "env" that reads the username from
// usernameVar and the password from passwordVar through lookup (os.LookupEnv
// when nil).
func NewEnvSource(usernameVar, passwordVar string, lookup func(string) (string, bool)) *EnvSource {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	return &EnvSource{
		usernameVar: usernameVar,
		passwordVar: passwordVar,
		lookup:      lookup,
		ver:         newVersioner(),
	}
}

// Kind returns "env".
func (s *EnvSource) Kind() string { return "env" }

// Fetch reads both variables. A missing variable or an empty username is an
// error that names the variable, never its value; the password may be empty.
func (s *EnvSource) Fetch(ctx context.Context) (Credential, error) {
	if err := ctx.Err(); err != nil {
		return Credential{}, err
	}
	user, ok := s.lookup(s.usernameVar)
	if !ok {
		return Credential{}, fmt.Errorf("environment variable %s is not set", s.usernameVar)
	}
	if user == "" {
		return Credential{}, fmt.Errorf("environment variable %s is empty", s.usernameVar)
	}
	pass, ok := s.lookup(s.passwordVar)
	if !ok {
		return Credential{}, fmt.Errorf("environment variable %s is not set", s.passwordVar)
	}
	return Credential{
		Username: user,
		Password: pass,
		Version:  s.ver.version(user, pass),
		Source:   "env",
	}, nil
}
