package creds

import (
	"context"
	"errors"
)

// staticSource always returns the same credential.
type staticSource struct {
	c Credential
}

// NewStaticSource returns a Source of kind "static" that always returns c,
// with c.Source set to "static" when empty. It is meant for tests and for
// one-shot commands such as check.
func NewStaticSource(c Credential) Source {
	if c.Source == "" {
		c.Source = "static"
	}
	return staticSource{c: c}
}

// Kind returns "static".
func (staticSource) Kind() string { return "static" }

// Fetch returns the credential given to NewStaticSource.
func (s staticSource) Fetch(ctx context.Context) (Credential, error) {
	if err := ctx.Err(); err != nil {
		return Credential{}, err
	}
	if s.c.IsZero() {
		return Credential{}, errors.New("static credential has no username")
	}
	return s.c, nil
}
