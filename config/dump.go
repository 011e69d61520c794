package config

import (
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Dump renders cfg (a struct or pointer to one) as YAML that Loader reads
// back to the same values. With docs, every key is preceded by its doc tag
// as a comment and its allowed values, which makes the output a commented
// sample configuration.
func Dump(cfg any, docs bool) []byte {
	v := reflect.ValueOf(cfg)
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	var b strings.Builder
	dumpStruct(&b, v, 0, docs)
	return []byte(b.String())
}

func dumpStruct(b *strings.Builder, v reflect.Value, indent int, docs bool) {
	t := v.Type()
	pad := strings.Repeat("  ", indent)
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name := yamlName(f)
		if name == "" {
			continue
		}
		fv := v.Field(i)
		if docs {
			if d := f.Tag.Get("doc"); d != "" {
				for _, line := range wrap(d, 88-len(pad)) {
					fmt.Fprintf(b, "%s# %s\n", pad, line)
				}
			}
			if e := f.Tag.Get("enum"); e != "" {
				fmt.Fprintf(b, "%s# Allowed: %s.\n", pad, strings.ReplaceAll(e, "|", ", "))
			}
		}
		switch {
		case fv.Kind() == reflect.Struct && f.Type != durationType:
			fmt.Fprintf(b, "%s%s:\n", pad, name)
			dumpStruct(b, fv, indent+1, docs)
		case fv.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
			if fv.Len() == 0 {
				fmt.Fprintf(b, "%s%s: []\n", pad, name)
				if docs {
					// Show the item keys as a commented example.
					fmt.Fprintf(b, "%s# Each item has:\n", pad)
					et := f.Type.Elem()
					for j := 0; j < et.NumField(); j++ {
						if n := yamlName(et.Field(j)); n != "" {
							fmt.Fprintf(b, "%s#   %s: %s\n", pad, n, et.Field(j).Tag.Get("doc"))
						}
					}
				}
				continue
			}
			fmt.Fprintf(b, "%s%s:\n", pad, name)
			for j := 0; j < fv.Len(); j++ {
				var sub strings.Builder
				dumpStruct(&sub, fv.Index(j), 0, false)
				lines := strings.Split(strings.TrimRight(sub.String(), "\n"), "\n")
				for k, line := range lines {
					lead := "  "
					if k == 0 {
						lead = "- "
					}
					fmt.Fprintf(b, "%s  %s%s\n", pad, lead, line)
				}
			}
		case fv.Kind() == reflect.Map:
			if fv.Len() == 0 {
				fmt.Fprintf(b, "%s%s: {}\n", pad, name)
				continue
			}
			fmt.Fprintf(b, "%s%s:\n", pad, name)
			keys := fv.MapKeys()
			sort.Slice(keys, func(i, j int) bool { return fmt.Sprint(keys[i]) < fmt.Sprint(keys[j]) })
			for _, k := range keys {
				fmt.Fprintf(b, "%s  %s: %s\n", pad, quote(fmt.Sprint(k.Interface())), scalarYAML(fv.MapIndex(k)))
			}
		case fv.Kind() == reflect.Slice:
			if fv.Len() == 0 {
				fmt.Fprintf(b, "%s%s: []\n", pad, name)
				continue
			}
			fmt.Fprintf(b, "%s%s:\n", pad, name)
			for j := 0; j < fv.Len(); j++ {
				fmt.Fprintf(b, "%s  - %s\n", pad, scalarYAML(fv.Index(j)))
			}
		default:
			fmt.Fprintf(b, "%s%s: %s\n", pad, name, scalarYAML(fv))
		}
		if docs && indent == 0 {
			b.WriteString("\n")
		}
	}
}

func scalarYAML(v reflect.Value) string {
	switch {
	case v.Type() == durationType:
		return time.Duration(v.Int()).String()
	case v.Kind() == reflect.String:
		return quote(v.String())
	case v.Kind() == reflect.Bool:
		return strconv.FormatBool(v.Bool())
	}
	return fmt.Sprint(v.Interface())
}

func quote(s string) string {
	return strconv.Quote(s)
}

func wrap(s string, width int) []string {
	var lines []string
	var cur strings.Builder
	for _, w := range strings.Fields(s) {
		if cur.Len() > 0 && cur.Len()+1+len(w) > width {
			lines = append(lines, cur.String())
			cur.Reset()
		}
		if cur.Len() > 0 {
			cur.WriteByte(' ')
		}
		cur.WriteString(w)
	}
	if cur.Len() > 0 {
		lines = append(lines, cur.String())
	}
	return lines
}

// Reference renders the keys of configuration type t (a struct value or
// pointer) as a Markdown table: key, type, default, description.
func Reference(cfg any, envPrefix string) string {
	v := reflect.ValueOf(cfg)
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	var b strings.Builder
	b.WriteString("| key | type | default | environment | description |\n|---|---|---|---|---|\n")
	for _, k := range Keys(v.Type()) {
		def := ""
		if !strings.Contains(k.Key, "[]") {
			if fv, ok := lookup(v, k.Key); ok {
				def = "`" + strings.ReplaceAll(defaultText(fv), "|", "\\|") + "`"
			}
		}
		typ := k.Type
		if len(k.Enum) > 0 {
			typ = "one of " + strings.Join(k.Enum, ", ")
		}
		env := ""
		if !strings.Contains(k.Key, "[]") && k.Type != "list" && k.Type != "a mapping" {
			env = "`" + EnvName(envPrefix, k.Key) + "`"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s |\n", k.Key, typ, def, env, strings.ReplaceAll(k.Doc, "|", "\\|"))
	}
	return b.String()
}

func defaultText(v reflect.Value) string {
	switch {
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() != reflect.Struct:
		parts := make([]string, v.Len())
		for i := range parts {
			parts[i] = fmt.Sprint(v.Index(i).Interface())
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case v.Kind() == reflect.Slice || v.Kind() == reflect.Map:
		if v.Len() == 0 {
			return "[]"
		}
		return fmt.Sprint(v.Interface())
	case v.Type() == durationType:
		return time.Duration(v.Int()).String()
	case v.Kind() == reflect.String:
		return strconv.Quote(v.String())
	}
	return fmt.Sprint(v.Interface())
}

func lookup(v reflect.Value, path string) (reflect.Value, bool) {
	for _, p := range strings.Split(path, ".") {
		if v.Kind() != reflect.Struct {
			return reflect.Value{}, false
		}
		fi, ok := structFields(v.Type())[p]
		if !ok {
			return reflect.Value{}, false
		}
		v = v.Field(fi)
	}
	return v, true
}
