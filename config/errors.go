package config

import (
	"errors"
	"fmt"
	"sort"
)

// FieldError is one problem in a configuration, located by the dotted path
// of the field it concerns, such as "backends[0].credential.path". Parse and
// Load return every problem they find as a *FieldError joined with
// errors.Join; use errors.As to pick them out.
//
// Msg never contains a configured value, so an error can be logged even when
// the offending field holds a secret.
type FieldError struct {
	// Path is the field's path in the document; empty for a problem with the
	// document as a whole.
	Path string
	// Msg says what is wrong and, where known, on which line.
	Msg string
}

// Error returns Path + ": " + Msg, or Msg alone when Path is empty.
func (e *FieldError) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// issue is a FieldError together with the line it was found on, so that the
// collected errors can be reported in document order whatever order the
// checks ran in.
type issue struct {
	line int
	err  *FieldError
}

// maxIssues is the most problems one call reports. A document of aliases
// can repeat one mistake thousands of times; nobody reads past the first
// screenful, and the error text must stay small.
const maxIssues = 100

// issues collects the problems of one Parse or Load call.
type issues struct {
	list    []issue
	dropped int // problems beyond maxIssues, counted but not kept
}

// addf records a problem at path. A line > 0 is appended to the message as
// "(line N)" and orders the problem within the document; line 0 means the
// problem has no place in the document (a missing required field of the
// root, say) and sorts first. Beyond maxIssues problems are only counted.
func (is *issues) addf(path string, line int, format string, args ...any) {
	if len(is.list) >= maxIssues {
		is.dropped++
		return
	}
	is.add(path, line, format, args...)
}

// add records a problem like addf but even beyond maxIssues, for the few
// problems that explain all the others (the document is too complex).
func (is *issues) add(path string, line int, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if line > 0 {
		msg = fmt.Sprintf("%s (line %d)", msg, line)
	}
	is.list = append(is.list, issue{line: line, err: &FieldError{Path: path, Msg: msg}})
}

// empty reports whether no problem was recorded.
func (is *issues) empty() bool { return len(is.list) == 0 }

// err returns the recorded problems in document order joined with
// errors.Join, or nil when there are none. When problems were dropped, a
// last FieldError without a path says how many.
func (is *issues) err() error {
	if len(is.list) == 0 {
		return nil
	}
	sort.SliceStable(is.list, func(i, j int) bool { return is.list[i].line < is.list[j].line })
	errs := make([]error, 0, len(is.list)+1)
	for _, it := range is.list {
		errs = append(errs, it.err)
	}
	if is.dropped > 0 {
		errs = append(errs, &FieldError{Msg: fmt.Sprintf("%d more problems not shown", is.dropped)})
	}
	return errors.Join(errs...)
}

// joinPath returns the path of the field key below parent.
func joinPath(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

// indexPath returns the path of element i of the list at parent.
func indexPath(parent string, i int) string {
	return fmt.Sprintf("%s[%d]", parent, i)
}
