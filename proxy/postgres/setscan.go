package postgres

// scanSettingNames finds the names of custom settings (placeholders with a
// dot, such as app.tenant) that query text may set: `SET [SESSION|LOCAL]
// a.b ...`, `RESET a.b` and `set_config('a.b', ...)`. PostgreSQL lists such settings
// nowhere (not in pg_settings, not in SHOW ALL), so the proxy remembers the
// names it saw and probes them with current_setting(name, true) when it
// captures session state. False positives (a match inside a string literal
// or a comment) are harmless: a name that does not exist probes as NULL.
//
// The scan is a single pass over the text that only looks closer at the
// letters "set"; it allocates only when it reports a name.
func scanSettingNames(q []byte, seen func(name string)) {
	for i := 0; i+3 <= len(q); i++ {
		if q[i]|0x20 != 's' || q[i+1]|0x20 != 'e' || q[i+2]|0x20 != 't' {
			continue
		}
		if i > 0 && isIdentByte(q[i-1]) {
			// RESET a.b defines the placeholder too (with an empty value).
			if !(i >= 2 && q[i-2]|0x20 == 'r' && q[i-1]|0x20 == 'e' && (i == 2 || !isIdentByte(q[i-3]))) {
				continue
			}
		}
		j := i + 3
		if j >= len(q) {
			return
		}
		switch {
		case q[j] == '_':
			if name, ok := setConfigArg(q[j:]); ok {
				seen(name)
			}
		case isSpace(q[j]):
			k := skipSpace(q, j)
			if w, end := word(q, k); w == "session" || w == "local" {
				k = skipSpace(q, end)
			}
			if name, ok := dottedName(q[k:]); ok {
				seen(name)
			}
		}
	}
}

// setConfigArg parses `_config ( 'a.b'` at the start of q.
func setConfigArg(q []byte) (string, bool) {
	const kw = "_config"
	if len(q) < len(kw) {
		return "", false
	}
	for i := 0; i < len(kw); i++ {
		if q[i]|0x20 != kw[i]|0x20 {
			return "", false
		}
	}
	k := skipSpace(q, len(kw))
	if k >= len(q) || q[k] != '(' {
		return "", false
	}
	k = skipSpace(q, k+1)
	if k >= len(q) || q[k] != '\'' {
		return "", false
	}
	k++
	start := k
	for k < len(q) && q[k] != '\'' {
		k++
	}
	if k >= len(q) {
		return "", false
	}
	return customName(q[start:k])
}

// dottedName reads an identifier chain such as app.tenant or "App".x at the
// start of q and returns it lower-cased if it has a dot.
func dottedName(q []byte) (string, bool) {
	k := 0
	var buf []byte
	for {
		if k < len(q) && q[k] == '"' {
			k++
			for k < len(q) {
				if q[k] == '"' {
					if k+1 < len(q) && q[k+1] == '"' {
						buf = append(buf, '"')
						k += 2
						continue
					}
					break
				}
				buf = append(buf, q[k])
				k++
			}
			if k >= len(q) {
				return "", false
			}
			k++
		} else {
			start := k
			for k < len(q) && isIdentByte(q[k]) {
				k++
			}
			if k == start {
				return "", false
			}
			buf = append(buf, q[start:k]...)
		}
		if k < len(q) && q[k] == '.' {
			buf = append(buf, '.')
			k++
			continue
		}
		break
	}
	return customName(buf)
}

// customName validates and lower-cases a candidate custom setting name.
func customName(b []byte) (string, bool) {
	if len(b) < 3 || len(b) > 127 {
		return "", false
	}
	dot := false
	for _, c := range b {
		switch {
		case c == '.':
			dot = true
		case c == '\'' || c == 0 || c == ';' || isSpace(c):
			return "", false
		}
	}
	if !dot || b[0] == '.' || b[len(b)-1] == '.' {
		return "", false
	}
	out := make([]byte, len(b))
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		out[i] = c
	}
	return string(out), true
}

func word(q []byte, k int) (string, int) {
	start := k
	for k < len(q) && isIdentByte(q[k]) {
		k++
	}
	if k-start > 8 {
		return "", start
	}
	var w [8]byte
	for i := start; i < k; i++ {
		w[i-start] = q[i] | 0x20
	}
	return string(w[:k-start]), k
}

func isIdentByte(c byte) bool {
	return c == '_' || c == '$' || '0' <= c && c <= '9' || 'a' <= c|0x20 && c|0x20 <= 'z' || c >= 0x80
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' }

func skipSpace(q []byte, k int) int {
	for k < len(q) && isSpace(q[k]) {
		k++
	}
	return k
}
