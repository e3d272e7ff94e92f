package config

import (
	"errors"
	"fmt"
	"strings"
)

// expand replaces ${NAME} with the value of the environment variable NAME
// and ${NAME:-default} with that value or, when NAME is unset or empty, with
// default. "$$" stands for a single "$"; a "$" followed by anything else is
// kept as it is, so most passwords need no escaping.
//
// Substituted text is not scanned again: a variable whose value contains
// "${" or "$$" is used verbatim. Errors name the variable but never quote s,
// which may be a secret.
func expand(s string, lookup func(string) (string, bool)) (string, error) {
	if !strings.Contains(s, "$") {
		return s, nil
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		if s[i] != '$' {
			b.WriteByte(s[i])
			i++
			continue
		}
		if i+1 < len(s) && s[i+1] == '$' {
			b.WriteByte('$')
			i += 2
			continue
		}
		if i+1 >= len(s) || s[i+1] != '{' {
			b.WriteByte('$')
			i++
			continue
		}
		end := strings.IndexByte(s[i+2:], '}')
		if end < 0 {
			return "", errors.New(`unterminated "${" (write "$$" for a literal "$")`)
		}
		body := s[i+2 : i+2+end]
		name, def, hasDef := strings.Cut(body, ":-")
		if !isEnvName(name) {
			return "", errors.New(`invalid variable name in "${...}" (write "$$" for a literal "$")`)
		}
		v, ok := "", false
		if lookup != nil {
			v, ok = lookup(name)
		}
		switch {
		case hasDef && v == "":
			v = def
		case !ok:
			return "", fmt.Errorf("environment variable %s is not set", name)
		}
		b.WriteString(v)
		i += 2 + end + 1
	}
	return b.String(), nil
}

// isEnvName reports whether s is a portable environment variable name:
// a letter or underscore followed by letters, digits and underscores.
func isEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
