package config

import (
	"bytes"
	"encoding"
	"errors"
	"io"
	"reflect"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// maxVisits bounds the nodes one decode visits, counting every use of an
// alias or merge key again, so that a small document of nested aliases
// cannot make decoding take exponential time.
const maxVisits = 100_000

// fieldSet records the fields a document set explicitly, keyed by the
// field's address (a pointer of the field's own type, such as *int), with
// the line of the key that set it. applyDefaults fills only absent fields,
// so an explicit 0 stays 0, and validation uses the lines to place its
// errors.
type fieldSet map[any]int

// has reports whether the document set the field at p.
func (s fieldSet) has(p any) bool {
	_, ok := s[p]
	return ok
}

// line returns the line of the first of ps the document set, or 0.
func (s fieldSet) line(ps ...any) int {
	for _, p := range ps {
		if l, ok := s[p]; ok {
			return l
		}
	}
	return 0
}

// decoder walks a YAML node tree against the Go types of Config, by
// reflection over their yaml tags, and reports every problem with its field
// path instead of stopping at the first.
type decoder struct {
	lookupEnv func(string) (string, bool)
	errs      *issues
	given     fieldSet
	// active holds the anchored nodes being decoded through an alias, to
	// catch an alias inside the value it refers to.
	active    map[*yaml.Node]bool
	visits    int
	exhausted bool
}

// decode parses data as a single YAML document and decodes it into cfg,
// expanding ${NAME} in scalar values with lookupEnv. Problems go to errs;
// the returned fieldSet says which fields the document set.
func decode(data []byte, cfg *Config, lookupEnv func(string) (string, bool), errs *issues) fieldSet {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			errs.addf("", 0, "config is empty")
		} else {
			errs.addf("", 0, "invalid YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
		}
		return nil
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case err == nil:
		errs.addf("", next.Line, "config must be a single YAML document")
		return nil
	case !errors.Is(err, io.EOF):
		errs.addf("", 0, "invalid YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
		return nil
	}

	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	switch {
	case isNull(root):
		errs.addf("", root.Line, "config is empty")
		return nil
	case root.Kind != yaml.MappingNode:
		errs.addf("", root.Line, "config must be a mapping of keys to values")
		return nil
	}
	d := &decoder{
		lookupEnv: lookupEnv,
		errs:      errs,
		given:     fieldSet{},
		active:    map[*yaml.Node]bool{},
	}
	d.value(root, reflect.ValueOf(cfg).Elem(), "")
	return d.given
}

// visit counts one node against maxVisits and reports whether decoding may
// go on.
func (d *decoder) visit() bool {
	if d.exhausted {
		return false
	}
	d.visits++
	if d.visits > maxVisits {
		d.exhausted = true
		d.errs.add("", 0, "config is too complex: it has, or its aliases expand to, more than %d values", maxVisits)
		return false
	}
	return true
}

// value decodes n into v and reports whether it set v; a null value leaves
// v as it is, so that the field counts as absent.
func (d *decoder) value(n *yaml.Node, v reflect.Value, path string) bool {
	if !d.visit() {
		return false
	}
	if n.Kind == yaml.AliasNode {
		target, ok := d.enter(n, path)
		if !ok {
			return false
		}
		defer delete(d.active, target)
		return d.value(target, v, path)
	}
	if isNull(n) {
		return false
	}
	if tu, ok := v.Addr().Interface().(encoding.TextUnmarshaler); ok {
		return d.text(n, v, tu, path)
	}
	switch v.Kind() {
	case reflect.Struct:
		return d.structure(n, v, path)
	case reflect.Slice:
		return d.list(n, v, path)
	case reflect.String, reflect.Bool,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return d.scalar(n, v, path)
	}
	// Only reachable if a field of an unsupported type is added to Config.
	d.errs.addf(path, n.Line, "cannot be decoded: unsupported field type %s", v.Type())
	return false
}

// enter follows the alias n, refusing an alias that refers to a value that
// contains it. The caller must delete the returned node from d.active when
// done with it.
func (d *decoder) enter(n *yaml.Node, path string) (*yaml.Node, bool) {
	target := n.Alias
	if target == nil || d.active[target] {
		d.errs.addf(path, n.Line, "alias refers to a value that contains it")
		return nil, false
	}
	d.active[target] = true
	return target, true
}

// structure decodes the mapping n into the struct v.
func (d *decoder) structure(n *yaml.Node, v reflect.Value, path string) bool {
	if n.Kind != yaml.MappingNode {
		d.errs.addf(path, n.Line, "must be a mapping, not %s", nodeWord(n))
		return false
	}
	d.pairs(n, v, path, structFields(v.Type()), map[string]bool{})
	return true
}

// pairs decodes the key/value pairs of the mapping n into the struct v,
// then the mappings its merge keys ("<<") name. done holds the keys already
// decoded into v by a mapping that takes precedence; they are skipped, which
// gives merge keys their YAML meaning: explicit keys win over merged ones,
// and earlier merged mappings over later ones.
func (d *decoder) pairs(n *yaml.Node, v reflect.Value, path string, fields []field, done map[string]bool) {
	seen := map[string]int{} // key -> line, for duplicates within n itself
	var merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		if !d.visit() {
			return
		}
		k, val := n.Content[i], n.Content[i+1]
		if isMerge(k) {
			merges = append(merges, val)
			continue
		}
		if k.Kind != yaml.ScalarNode {
			d.errs.addf(path, k.Line, "keys must be strings, not %s", nodeWord(k))
			continue
		}
		name := k.Value
		kpath := keyPath(path, name)
		if first, dup := seen[name]; dup {
			d.errs.addf(kpath, k.Line, "duplicate key (first on line %d)", first)
			continue
		}
		seen[name] = k.Line
		if done[name] {
			continue
		}
		f, ok := lookupField(fields, name)
		if !ok {
			// An unnamed key stays out of the path, but a suggestion
			// only shows a field name and so is safe either way.
			msg := "unknown key"
			if s := suggest(name, fields); s != "" {
				msg += " (did you mean " + strconv.Quote(s) + "?)"
			}
			d.errs.addf(kpath, k.Line, "%s", msg)
			continue
		}
		// Marked done even if decoding fails, so a merged value cannot
		// silently replace a broken explicit one.
		done[name] = true
		fv := v.Field(f.index)
		if d.value(val, fv, kpath) {
			d.given[fv.Addr().Interface()] = k.Line
		}
	}
	for _, m := range merges {
		d.merge(m, v, path, fields, done)
	}
}

// merge decodes the value of a merge key: a mapping, or a list of mappings,
// each possibly an alias.
func (d *decoder) merge(m *yaml.Node, v reflect.Value, path string, fields []field, done map[string]bool) {
	if m.Kind == yaml.SequenceNode {
		for _, item := range m.Content {
			d.mergeOne(item, v, path, fields, done)
		}
		return
	}
	d.mergeOne(m, v, path, fields, done)
}

// mergeOne decodes one mapping named by a merge key.
func (d *decoder) mergeOne(m *yaml.Node, v reflect.Value, path string, fields []field, done map[string]bool) {
	if !d.visit() {
		return
	}
	if m.Kind == yaml.AliasNode {
		target, ok := d.enter(m, path)
		if !ok {
			return
		}
		defer delete(d.active, target)
		m = target
	}
	if m.Kind != yaml.MappingNode {
		d.errs.addf(path, m.Line, `merge key "<<" needs a mapping or a list of mappings`)
		return
	}
	d.pairs(m, v, path, fields, done)
}

// list decodes the sequence n into the slice v.
func (d *decoder) list(n *yaml.Node, v reflect.Value, path string) bool {
	if n.Kind != yaml.SequenceNode {
		d.errs.addf(path, n.Line, "must be a list, not %s", nodeWord(n))
		return false
	}
	// The slice is allocated once, before its elements are decoded, so that
	// the element addresses recorded in d.given stay valid.
	v.Set(reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content)))
	for i, item := range n.Content {
		ipath := indexPath(path, i)
		if isNull(item) {
			d.errs.addf(ipath, item.Line, "list entry must not be empty")
			continue
		}
		ev := v.Index(i)
		if d.value(item, ev, ipath) {
			d.given[ev.Addr().Interface()] = item.Line
		}
	}
	return true
}

// scalar decodes the scalar n into a string, bool or integer v.
func (d *decoder) scalar(n *yaml.Node, v reflect.Value, path string) bool {
	what := kindWord(v.Kind())
	s, ok := d.scalarText(n, path, what)
	if !ok {
		return false
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		switch s {
		case "true", "True", "TRUE":
			v.SetBool(true)
		case "false", "False", "FALSE":
			v.SetBool(false)
		default:
			d.errs.addf(path, n.Line, "must be %s", what)
			return false
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		i, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v.OverflowInt(i) {
			d.errs.addf(path, n.Line, "must be %s", what)
			return false
		}
		v.SetInt(i)
	default: // unsigned
		u, err := strconv.ParseUint(s, 10, 64)
		if err != nil || v.OverflowUint(u) {
			d.errs.addf(path, n.Line, "must be %s", what)
			return false
		}
		v.SetUint(u)
	}
	return true
}

// text decodes the scalar n into v through its UnmarshalText method.
func (d *decoder) text(n *yaml.Node, v reflect.Value, tu encoding.TextUnmarshaler, path string) bool {
	s, ok := d.scalarText(n, path, "a "+typeWord(v.Type()))
	if !ok {
		return false
	}
	if err := tu.UnmarshalText([]byte(s)); err != nil {
		// Our UnmarshalText methods never quote their input.
		d.errs.addf(path, n.Line, "%s", err)
		return false
	}
	return true
}

// scalarText returns the text of the scalar n after ${NAME} expansion.
// Errors describe the expected type (what) but never the value.
func (d *decoder) scalarText(n *yaml.Node, path, what string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		d.errs.addf(path, n.Line, "must be %s, not %s", what, nodeWord(n))
		return "", false
	}
	s, err := expand(n.Value, d.lookupEnv)
	if err != nil {
		d.errs.addf(path, n.Line, "%s", err)
		return "", false
	}
	return s, true
}

// field is one decodable field of a struct: its YAML key and its index.
type field struct {
	name  string
	index int
}

// structFields lists the exported fields of the struct type t under their
// YAML keys: the yaml tag's name, or the lowercased field name without one,
// as go.yaml.in/yaml/v3 does.
func structFields(t reflect.Type) []field {
	fields := make([]field, 0, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		switch name {
		case "-":
			continue
		case "":
			name = strings.ToLower(f.Name)
		}
		fields = append(fields, field{name: name, index: i})
	}
	return fields
}

// lookupField finds the field with YAML key name.
func lookupField(fields []field, name string) (field, bool) {
	for _, f := range fields {
		if f.name == name {
			return f, true
		}
	}
	return field{}, false
}

// keyPath returns the path of key name below path. Only a key spelled like
// our field names (snake_case: a lowercase letter, then lowercase letters,
// digits and underscores) goes into the path; any other key is left out,
// because it could be a secret written in the wrong place.
func keyPath(path, name string) string {
	if len(name) == 0 || len(name) > 64 || !('a' <= name[0] && name[0] <= 'z') {
		return path
	}
	for i := 1; i < len(name); i++ {
		if c := name[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_') {
			return path
		}
	}
	return joinPath(path, name)
}

// isNull reports whether n is a YAML null: "~", "null" or nothing at all.
func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// isMerge reports whether n is the merge key "<<" (plain, not quoted).
func isMerge(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Value == "<<" && n.ShortTag() == "!!merge"
}

// nodeWord names the kind of n for error messages.
func nodeWord(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	return "a single value"
}

// kindWord names what a scalar of kind k must look like.
func kindWord(k reflect.Kind) string {
	switch k {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	}
	return "a non-negative integer"
}

// typeWord names a type that decodes itself from text.
func typeWord(t reflect.Type) string {
	switch t {
	case reflect.TypeFor[Duration]():
		return "duration"
	case reflect.TypeFor[ByteSize]():
		return "byte size"
	}
	return "string"
}
