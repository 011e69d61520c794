// Package config loads ccflow's configuration: one YAML file, then CCFLOW_*
// environment variables, then command-line flags, each overriding the one
// before, on top of the defaults of every stage.
//
// Configuration structs are plain Go structs owned by each stage package. The
// loader reads three struct tags:
//
//	yaml:"name"     the key (required on every configurable field)
//	doc:"..."       one sentence that documents the key (required)
//	enum:"a|b|c"    the allowed values of a string key (optional)
//
// Every error names where the offending value came from (file, line and
// column; environment variable; or flag), the dotted key, and what is
// allowed. Unknown keys are errors. Stage packages report validation problems
// as *FieldError values whose Key is relative to the stage; Prefix makes them
// absolute.
package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
)

// FieldError is a configuration problem with one key.
type FieldError struct {
	// Key is the dotted key path, e.g. "collector.netflow.addr".
	Key string
	// Msg says what is wrong, in lowercase.
	Msg string
	// Allowed lists the allowed values or keys, when there is a fixed set.
	Allowed []string
	// Origin says where the value came from; the loader fills it in.
	Origin string
}

// Error formats the error as "ORIGIN: KEY: MSG (allowed: ...)".
func (e *FieldError) Error() string {
	var b strings.Builder
	if e.Origin != "" {
		b.WriteString(e.Origin)
		b.WriteString(": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	if len(e.Allowed) > 0 {
		b.WriteString(" (allowed: ")
		b.WriteString(strings.Join(e.Allowed, ", "))
		b.WriteString(")")
	}
	return b.String()
}

// Errorf returns a *FieldError for key with a formatted message.
func Errorf(key, format string, args ...any) error {
	return &FieldError{Key: key, Msg: fmt.Sprintf(format, args...)}
}

// Prefix prepends prefix and a dot to the Key of every *FieldError inside
// err (which may be a join of several errors) and returns the result. Other
// errors become FieldErrors on the prefix itself.
func Prefix(prefix string, err error) error {
	if err == nil {
		return nil
	}
	var out []error
	for _, e := range flatten(err) {
		var fe *FieldError
		if errors.As(e, &fe) {
			c := *fe
			if c.Key == "" {
				c.Key = prefix
			} else {
				c.Key = prefix + "." + c.Key
			}
			out = append(out, &c)
			continue
		}
		out = append(out, &FieldError{Key: prefix, Msg: e.Error()})
	}
	return errors.Join(out...)
}

func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// Override is one key set outside the file (for example by a flag).
type Override struct {
	// Key is the dotted key path.
	Key string
	// Value is the textual value, parsed like an environment variable.
	Value string
	// Origin names the source in errors, e.g. "flag --netflow-addr".
	Origin string
}

// Loader loads configuration into a struct that already holds the defaults.
type Loader struct {
	// File is the YAML file to read; empty means none.
	File string
	// Env is the environment (os.Environ form); nil means none.
	Env []string
	// EnvPrefix is the prefix of configuration variables ("CCFLOW_").
	EnvPrefix string
	// EnvIgnore lists variable prefixes that are not configuration keys
	// (for example "CCFLOW_TEST_").
	EnvIgnore []string
	// Overrides apply last, in order (flags).
	Overrides []Override

	origins map[string]string
}

// Load reads the file, environment and overrides into dst (a pointer to a
// struct holding the defaults), then calls validate, if not nil, and
// attributes its FieldErrors to their origins. All problems found are
// returned together.
func (l *Loader) Load(dst any, validate func() error) error {
	l.origins = map[string]string{}
	rv := reflect.ValueOf(dst)
	if rv.Kind() != reflect.Pointer || rv.Elem().Kind() != reflect.Struct {
		return errors.New("config: destination must be a pointer to a struct")
	}
	var errs []error
	if l.File != "" {
		if err := l.loadFile(rv.Elem()); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, l.loadEnv(rv.Elem())...)
	for _, o := range l.Overrides {
		if err := setPath(rv.Elem(), o.Key, o.Value); err != nil {
			errs = append(errs, withOrigin(err, o.Key, o.Origin))
			continue
		}
		l.origins[o.Key] = o.Origin
	}
	if len(errs) == 0 && validate != nil {
		if err := validate(); err != nil {
			for _, e := range flatten(err) {
				var fe *FieldError
				if errors.As(e, &fe) {
					c := *fe
					c.Origin = l.Origin(c.Key)
					errs = append(errs, &c)
				} else {
					errs = append(errs, e)
				}
			}
		}
	}
	return errors.Join(errs...)
}

// Origin returns where key (or its closest parent) was set: "FILE:LINE:COL",
// "environment VAR", "flag --x", or "default".
func (l *Loader) Origin(key string) string {
	for k := key; k != ""; {
		if o, ok := l.origins[k]; ok {
			return o
		}
		i := strings.LastIndexAny(k, ".[")
		if i < 0 {
			break
		}
		k = k[:i]
	}
	if l.File != "" {
		return l.File + " (default value)"
	}
	return "default"
}

func withOrigin(err error, key, origin string) error {
	var fe *FieldError
	if errors.As(err, &fe) {
		c := *fe
		if c.Key == "" {
			c.Key = key
		}
		c.Origin = origin
		return &c
	}
	return &FieldError{Key: key, Msg: err.Error(), Origin: origin}
}

func (l *Loader) loadFile(root reflect.Value) error {
	data, err := os.ReadFile(l.File)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	f, err := parser.ParseBytes(data, 0)
	if err != nil {
		return fmt.Errorf("%s: invalid YAML: %s", l.File, strings.TrimSpace(strings.ReplaceAll(err.Error(), "\n", " ")))
	}
	var errs []error
	for _, doc := range f.Docs {
		if doc == nil || doc.Body == nil {
			continue
		}
		errs = append(errs, l.decode(doc.Body, root, "")...)
	}
	return errors.Join(errs...)
}

func (l *Loader) pos(n ast.Node) string {
	tk := n.GetToken()
	if tk == nil || tk.Position == nil {
		return l.File
	}
	return fmt.Sprintf("%s:%d:%d", l.File, tk.Position.Line, tk.Position.Column)
}

func joinKey(prefix, k string) string {
	if prefix == "" {
		return k
	}
	return prefix + "." + k
}

func unwrap(n ast.Node) ast.Node {
	for {
		switch t := n.(type) {
		case *ast.TagNode:
			n = t.Value
		case *ast.AnchorNode:
			n = t.Value
		case *ast.CommentGroupNode:
			return nil
		default:
			return n
		}
	}
}

func mappingValues(n ast.Node) ([]*ast.MappingValueNode, bool) {
	switch t := n.(type) {
	case *ast.MappingNode:
		return t.Values, true
	case *ast.MappingValueNode:
		return []*ast.MappingValueNode{t}, true
	}
	return nil, false
}

// decode decodes YAML node n into v (at key path key).
func (l *Loader) decode(n ast.Node, v reflect.Value, key string) []error {
	n = unwrap(n)
	if n == nil {
		return nil
	}
	if _, ok := n.(*ast.NullNode); ok {
		return nil
	}
	if key != "" {
		l.origins[key] = l.pos(n)
	}
	switch {
	case v.Kind() == reflect.Struct && v.Type() != durationType:
		vals, ok := mappingValues(n)
		if !ok {
			return []error{&FieldError{Key: key, Origin: l.pos(n), Msg: "expected a mapping of keys"}}
		}
		var errs []error
		fields := structFields(v.Type())
		for _, mv := range vals {
			name := scalarText(mv.Key)
			fi, ok := fields[name]
			k := joinKey(key, name)
			if !ok {
				errs = append(errs, &FieldError{Key: k, Origin: l.pos(mv.Key), Msg: "unknown key", Allowed: sortedKeys(fields)})
				continue
			}
			errs = append(errs, l.decode(mv.Value, v.Field(fi), k)...)
		}
		return errs
	case v.Kind() == reflect.Map:
		vals, ok := mappingValues(n)
		if !ok {
			return []error{&FieldError{Key: key, Origin: l.pos(n), Msg: "expected a mapping"}}
		}
		if v.IsNil() {
			v.Set(reflect.MakeMap(v.Type()))
		}
		var errs []error
		for _, mv := range vals {
			name := scalarText(mv.Key)
			k := joinKey(key, name)
			ev := reflect.New(v.Type().Elem()).Elem()
			if e := l.decode(mv.Value, ev, k); len(e) > 0 {
				errs = append(errs, e...)
				continue
			}
			v.SetMapIndex(reflect.ValueOf(name).Convert(v.Type().Key()), ev)
		}
		return errs
	case v.Kind() == reflect.Slice:
		seq, ok := n.(*ast.SequenceNode)
		if !ok {
			// A scalar for a list: accept the comma-separated form.
			if s, ok := scalar(n); ok && v.Type().Elem().Kind() != reflect.Struct {
				if err := setString(v, s); err != nil {
					return []error{withOrigin(err, key, l.pos(n))}
				}
				return nil
			}
			return []error{&FieldError{Key: key, Origin: l.pos(n), Msg: "expected a list"}}
		}
		out := reflect.MakeSlice(v.Type(), 0, len(seq.Values))
		var errs []error
		for i, item := range seq.Values {
			ev := reflect.New(v.Type().Elem()).Elem()
			errs = append(errs, l.decode(item, ev, fmt.Sprintf("%s[%d]", key, i))...)
			out = reflect.Append(out, ev)
		}
		v.Set(out)
		return errs
	default:
		s, ok := scalar(n)
		if !ok {
			return []error{&FieldError{Key: key, Origin: l.pos(n), Msg: fmt.Sprintf("expected %s, got a %s", typeName(v.Type()), nodeKind(n))}}
		}
		if err := setString(v, s); err != nil {
			return []error{withOrigin(err, key, l.pos(n))}
		}
		return nil
	}
}

func nodeKind(n ast.Node) string {
	switch n.(type) {
	case *ast.MappingNode, *ast.MappingValueNode:
		return "mapping"
	case *ast.SequenceNode:
		return "list"
	}
	return "value"
}

func scalarText(n ast.Node) string {
	if s, ok := scalar(n); ok {
		return s
	}
	return n.String()
}

func scalar(n ast.Node) (string, bool) {
	switch t := unwrap(n).(type) {
	case *ast.StringNode:
		return t.Value, true
	case *ast.LiteralNode:
		return t.Value.Value, true
	case *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode, *ast.InfinityNode, *ast.NanNode:
		return t.GetToken().Value, true
	case *ast.NullNode:
		return "", true
	}
	return "", false
}

var durationType = reflect.TypeOf(time.Duration(0))

func typeName(t reflect.Type) string {
	switch {
	case t == durationType:
		return "a duration (like 30s, 5m, 168h)"
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Int64:
		return "an integer"
	case t.Kind() >= reflect.Uint && t.Kind() <= reflect.Uint64:
		return "a non-negative integer"
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return "a number"
	case t.Kind() == reflect.String:
		return "a string"
	case t.Kind() == reflect.Slice:
		return "a list"
	}
	return t.String()
}

// setString parses s into v according to v's type. Lists take
// comma-separated values.
func setString(v reflect.Value, s string) error {
	s = strings.TrimSpace(s)
	switch {
	case v.Type() == durationType:
		d, err := time.ParseDuration(s)
		if err != nil {
			return &FieldError{Msg: fmt.Sprintf("%q is not %s", s, typeName(v.Type()))}
		}
		v.SetInt(int64(d))
	case v.Kind() == reflect.String:
		v.SetString(s)
	case v.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return &FieldError{Msg: fmt.Sprintf("%q is not %s", s, typeName(v.Type()))}
		}
		v.SetBool(b)
	case v.Kind() >= reflect.Int && v.Kind() <= reflect.Int64:
		i, err := strconv.ParseInt(strings.ReplaceAll(s, "_", ""), 0, v.Type().Bits())
		if err != nil {
			return &FieldError{Msg: fmt.Sprintf("%q is not %s", s, typeName(v.Type()))}
		}
		v.SetInt(i)
	case v.Kind() >= reflect.Uint && v.Kind() <= reflect.Uint64:
		u, err := strconv.ParseUint(strings.ReplaceAll(s, "_", ""), 0, v.Type().Bits())
		if err != nil {
			return &FieldError{Msg: fmt.Sprintf("%q is not %s that fits in %d bits", s, typeName(v.Type()), v.Type().Bits())}
		}
		v.SetUint(u)
	case v.Kind() == reflect.Float32 || v.Kind() == reflect.Float64:
		f, err := strconv.ParseFloat(s, v.Type().Bits())
		if err != nil {
			return &FieldError{Msg: fmt.Sprintf("%q is not %s", s, typeName(v.Type()))}
		}
		v.SetFloat(f)
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() != reflect.Struct:
		out := reflect.MakeSlice(v.Type(), 0, 4)
		if s != "" {
			for _, part := range strings.Split(s, ",") {
				ev := reflect.New(v.Type().Elem()).Elem()
				if err := setString(ev, part); err != nil {
					return err
				}
				out = reflect.Append(out, ev)
			}
		}
		v.Set(out)
	default:
		return &FieldError{Msg: fmt.Sprintf("cannot be set from text (type %s); set it in the config file", v.Type())}
	}
	return nil
}

// structFields maps yaml key names to field indexes.
func structFields(t reflect.Type) map[string]int {
	m := map[string]int{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name := yamlName(f)
		if name == "" {
			continue
		}
		m[name] = i
	}
	return m
}

func yamlName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	tag := f.Tag.Get("yaml")
	name, _, _ := strings.Cut(tag, ",")
	if name == "-" {
		return ""
	}
	return name
}

func sortedKeys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// setPath sets the key at dotted path to the textual value s.
func setPath(root reflect.Value, path, s string) error {
	v := root
	parts := strings.Split(path, ".")
	for i, p := range parts {
		if v.Kind() == reflect.Map && i == len(parts)-1 {
			if v.IsNil() {
				v.Set(reflect.MakeMap(v.Type()))
			}
			ev := reflect.New(v.Type().Elem()).Elem()
			if err := setString(ev, s); err != nil {
				return err
			}
			v.SetMapIndex(reflect.ValueOf(p).Convert(v.Type().Key()), ev)
			return nil
		}
		if v.Kind() != reflect.Struct {
			return &FieldError{Msg: "unknown key"}
		}
		fields := structFields(v.Type())
		fi, ok := fields[p]
		if !ok {
			return &FieldError{Key: strings.Join(parts[:i+1], "."), Msg: "unknown key", Allowed: sortedKeys(fields)}
		}
		v = v.Field(fi)
	}
	return setString(v, s)
}

// loadEnv applies CCFLOW_* variables. A variable names a key by upper-casing
// it and replacing dots with underscores: collector.netflow.addr is
// CCFLOW_COLLECTOR_NETFLOW_ADDR.
func (l *Loader) loadEnv(root reflect.Value) []error {
	if l.EnvPrefix == "" || len(l.Env) == 0 {
		return nil
	}
	keys := map[string]string{}
	for _, k := range Keys(root.Type()) {
		keys[EnvName(l.EnvPrefix, k.Key)] = k.Key
	}
	var errs []error
	envs := append([]string(nil), l.Env...)
	sort.Strings(envs)
next:
	for _, kv := range envs {
		name, val, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, l.EnvPrefix) {
			continue
		}
		for _, ig := range l.EnvIgnore {
			if strings.HasPrefix(name, ig) {
				continue next
			}
		}
		key, ok := keys[name]
		origin := "environment " + name
		if !ok {
			errs = append(errs, &FieldError{Origin: origin, Msg: "unknown configuration variable (variables are CCFLOW_ followed by the key in upper case with _ for dots, e.g. CCFLOW_COLLECTOR_NETFLOW_ADDR)"})
			continue
		}
		if err := setPath(root, key, val); err != nil {
			errs = append(errs, withOrigin(err, key, origin))
			continue
		}
		l.origins[key] = origin
	}
	return errs
}

// EnvName returns the environment variable that sets key.
func EnvName(prefix, key string) string {
	return prefix + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(key))
}

// Key describes one configuration key.
type Key struct {
	// Key is the dotted path.
	Key string
	// Type is a human description of the value's type.
	Type string
	// Doc is the key's documentation (the doc tag).
	Doc string
	// Enum lists allowed values, if fixed.
	Enum []string
}

// Keys lists every leaf key of the configuration type t, in declaration
// order. Lists of structs are described with "[]" in the path.
func Keys(t reflect.Type) []Key {
	var out []Key
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name := yamlName(f)
			if name == "" {
				continue
			}
			k := joinKey(prefix, name)
			ft := f.Type
			switch {
			case ft.Kind() == reflect.Struct && ft != durationType:
				walk(ft, k)
				continue
			case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
				out = append(out, Key{Key: k, Type: "list", Doc: f.Tag.Get("doc")})
				walk(ft.Elem(), k+"[]")
				continue
			}
			key := Key{Key: k, Type: typeName(ft), Doc: f.Tag.Get("doc")}
			if ft.Kind() == reflect.Map {
				key.Type = "a mapping"
			}
			if e := f.Tag.Get("enum"); e != "" {
				key.Enum = strings.Split(e, "|")
			}
			out = append(out, key)
		}
	}
	walk(t, "")
	return out
}

// CheckEnums returns a FieldError for every string field of cfg (a struct or
// pointer to one) whose value is not in its enum tag.
func CheckEnums(cfg any) error {
	var errs []error
	var walk func(v reflect.Value, prefix string)
	walk = func(v reflect.Value, prefix string) {
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name := yamlName(f)
			if name == "" {
				continue
			}
			k := joinKey(prefix, name)
			fv := v.Field(i)
			switch {
			case fv.Kind() == reflect.Struct && f.Type != durationType:
				walk(fv, k)
			case fv.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
				for j := 0; j < fv.Len(); j++ {
					walk(fv.Index(j), fmt.Sprintf("%s[%d]", k, j))
				}
			case fv.Kind() == reflect.String:
				if e := f.Tag.Get("enum"); e != "" {
					allowed := strings.Split(e, "|")
					ok := false
					for _, a := range allowed {
						ok = ok || a == fv.String()
					}
					if !ok {
						errs = append(errs, &FieldError{Key: k, Msg: fmt.Sprintf("%q is not allowed", fv.String()), Allowed: allowed})
					}
				}
			}
		}
	}
	v := reflect.ValueOf(cfg)
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	walk(v, "")
	return errors.Join(errs...)
}

// IsSet reports whether key was set by the file, the environment or an
// override (rather than left at its default).
func (l *Loader) IsSet(key string) bool {
	_, ok := l.origins[key]
	return ok
}

// Attribute fills in the Origin of every *FieldError inside err (a start-up
// error such as "port in use" that names its key) and returns the result;
// other errors pass unchanged.
func (l *Loader) Attribute(err error) error {
	if err == nil {
		return nil
	}
	var out []error
	for _, e := range flatten(err) {
		var fe *FieldError
		if errors.As(e, &fe) && fe.Origin == "" {
			c := *fe
			c.Origin = l.Origin(c.Key)
			out = append(out, &c)
			continue
		}
		out = append(out, e)
	}
	return errors.Join(out...)
}

// SetOrigin records where key was set, for values applied outside Load
// (for example a repeatable flag that fills a list).
func (l *Loader) SetOrigin(key, origin string) {
	if l.origins == nil {
		l.origins = map[string]string{}
	}
	l.origins[key] = origin
}
