package config

import (
	"encoding/hex"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Dump prints cfg as indented text, one field per line, zero values left
// out. The output depends only on cfg, so it serves golden tests and
// "xvsd -t -D"-style inspection.
func Dump(cfg *Config) string {
	var b strings.Builder
	dumpValue(&b, 0, reflect.ValueOf(cfg))
	return b.String()
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	stringerType = reflect.TypeFor[fmt.Stringer]()
)

// scalar renders a value that fits on one line, or reports false.
func scalar(v reflect.Value) (string, bool) {
	if v.Type() == durationType {
		return time.Duration(v.Int()).String(), true
	}
	switch v.Kind() {
	case reflect.String:
		return strconv.Quote(v.String()), true
	case reflect.Bool:
		return strconv.FormatBool(v.Bool()), true
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.FormatInt(v.Int(), 10), true
	case reflect.Uint, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return strconv.FormatUint(v.Uint(), 10), true
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return hex.EncodeToString(v.Bytes()), true
		}
		if v.Type().Elem().Kind() == reflect.String {
			parts := make([]string, v.Len())
			for i := range parts {
				parts[i] = strconv.Quote(v.Index(i).String())
			}
			return "[" + strings.Join(parts, ", ") + "]", true
		}
	case reflect.Struct:
		// netip.Addr, netip.Prefix, Pos: their String is the value.
		if v.Type().Implements(stringerType) && v.Type().NumField() > 0 && v.Type().Field(0).PkgPath != "" {
			return v.Interface().(fmt.Stringer).String(), true
		}
		if v.Type() == reflect.TypeFor[Pos]() {
			return v.Interface().(Pos).String(), true
		}
		if v.Type() == reflect.TypeFor[StatusRange]() {
			r := v.Interface().(StatusRange)
			if r.Lo == r.Hi {
				return strconv.Itoa(r.Lo), true
			}
			return fmt.Sprintf("%d-%d", r.Lo, r.Hi), true
		}
	}
	return "", false
}

func dumpValue(b *strings.Builder, depth int, v reflect.Value) {
	for v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return
		}
		v = v.Elem()
	}
	ind := strings.Repeat("  ", depth)
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := v.Field(i)
		if !t.Field(i).IsExported() || f.IsZero() {
			continue
		}
		name := t.Field(i).Name
		for f.Kind() == reflect.Pointer && f.Elem().Kind() != reflect.Struct {
			f = f.Elem() // *bool
		}
		if s, ok := scalar(f); ok {
			fmt.Fprintf(b, "%s%s: %s\n", ind, name, s)
			continue
		}
		switch f.Kind() {
		case reflect.Slice:
			fmt.Fprintf(b, "%s%s:\n", ind, name)
			for j := 0; j < f.Len(); j++ {
				e := f.Index(j)
				if s, ok := scalar(e); ok {
					fmt.Fprintf(b, "%s  - %s\n", ind, s)
					continue
				}
				fmt.Fprintf(b, "%s  -\n", ind)
				dumpValue(b, depth+2, e)
			}
		default:
			fmt.Fprintf(b, "%s%s:\n", ind, name)
			dumpValue(b, depth+1, f)
		}
	}
}
