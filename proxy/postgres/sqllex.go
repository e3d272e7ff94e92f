package postgres

// singleStatement reports whether sql holds at most one statement: no
// semicolon outside quotes, dollar quotes and comments is followed by
// anything but space, comments and further semicolons. A SQL PREPARE is
// replayed from pg_prepared_statements.statement, which holds the whole
// query string the client sent; replaying a string with more than one
// statement would run the others again, so such a session is pinned.
func singleStatement(sql string) bool {
	seenEnd := false
	for i := 0; i < len(sql); {
		c := sql[i]
		switch {
		case c == ';':
			seenEnd = true
			i++
		case isSpace(c):
			i++
		case c == '-' && i+1 < len(sql) && sql[i+1] == '-':
			for i < len(sql) && sql[i] != '\n' {
				i++
			}
		case c == '/' && i+1 < len(sql) && sql[i+1] == '*':
			depth := 0
			for i < len(sql) {
				if sql[i] == '/' && i+1 < len(sql) && sql[i+1] == '*' {
					depth++
					i += 2
				} else if sql[i] == '*' && i+1 < len(sql) && sql[i+1] == '/' {
					depth--
					i += 2
					if depth == 0 {
						break
					}
				} else {
					i++
				}
			}
		default:
			if seenEnd {
				return false
			}
			i = skipToken(sql, i)
		}
	}
	return true
}

// skipToken skips one token starting at a non-space, non-comment byte,
// treating quoted strings, quoted identifiers and dollar-quoted strings
// as single tokens.
func skipToken(sql string, i int) int {
	c := sql[i]
	switch {
	case c == '\'' || c == '"':
		// E'..' strings may escape quotes with a backslash.
		escapes := c == '\'' && i > 0 && (sql[i-1]|0x20) == 'e' && (i < 2 || !isIdentByte(sql[i-2]))
		i++
		for i < len(sql) {
			switch {
			case escapes && sql[i] == '\\':
				i += 2
			case sql[i] == c:
				if i+1 < len(sql) && sql[i+1] == c {
					i += 2
					continue
				}
				return i + 1
			default:
				i++
			}
		}
		return i
	case c == '$':
		j := i + 1
		for j < len(sql) && (isIdentByte(sql[j]) && sql[j] != '$') {
			j++
		}
		if j < len(sql) && sql[j] == '$' && (j == i+1 || !('0' <= sql[i+1] && sql[i+1] <= '9')) {
			tag := sql[i : j+1]
			for k := j + 1; k+len(tag) <= len(sql); k++ {
				if sql[k:k+len(tag)] == tag {
					return k + len(tag)
				}
			}
			return len(sql)
		}
		return i + 1
	case isIdentByte(c):
		for i < len(sql) && isIdentByte(sql[i]) {
			i++
		}
		return i
	}
	return i + 1
}
