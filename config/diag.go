package config

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Pos is where a node was written: the file name as it was opened (the
// path given to Load, or the include's glob match) and a 1-based line.
type Pos struct {
	File string
	Line int
}

func (p Pos) String() string { return fmt.Sprintf("%s:%d", p.File, p.Line) }

// Severity separates what keepalived would refuse from what it would
// only log.
type Severity int

const (
	Warning Severity = iota
	Error
)

func (s Severity) String() string {
	if s == Error {
		return "error"
	}
	return "warning"
}

// Diagnostic is one finding, printed as "file:line: message".
type Diagnostic struct {
	Pos      Pos
	Severity Severity
	Msg      string
}

func (d Diagnostic) String() string { return d.Pos.String() + ": " + d.Msg }

// Diagnostics are kept in the order they were found; parsing is
// deterministic so that order is too.
type Diagnostics []Diagnostic

func (ds *Diagnostics) errorf(p Pos, format string, args ...any) {
	*ds = append(*ds, Diagnostic{Pos: p, Severity: Error, Msg: fmt.Sprintf(format, args...)})
}

func (ds *Diagnostics) warnf(p Pos, format string, args ...any) {
	*ds = append(*ds, Diagnostic{Pos: p, Severity: Warning, Msg: fmt.Sprintf(format, args...)})
}

// HasErrors reports whether any diagnostic is an error.
func (ds Diagnostics) HasErrors() bool {
	for _, d := range ds {
		if d.Severity == Error {
			return true
		}
	}
	return false
}

// Errors returns only the errors.
func (ds Diagnostics) Errors() Diagnostics { return ds.filter(Error) }

// Warnings returns only the warnings.
func (ds Diagnostics) Warnings() Diagnostics { return ds.filter(Warning) }

func (ds Diagnostics) filter(s Severity) Diagnostics {
	var out Diagnostics
	for _, d := range ds {
		if d.Severity == s {
			out = append(out, d)
		}
	}
	return out
}

// String prints one diagnostic per line, warnings marked as such:
//
//	keepalived.conf:12: priority 300: out of range 1..255
//	keepalived.conf:3: warning: unknown keyword "foo"
func (ds Diagnostics) String() string {
	var b strings.Builder
	for _, d := range ds {
		b.WriteString(d.Pos.String())
		b.WriteString(": ")
		if d.Severity == Warning {
			b.WriteString("warning: ")
		}
		b.WriteString(d.Msg)
		b.WriteByte('\n')
	}
	return b.String()
}

// ErrInvalid is wrapped by the error Load returns when the file has errors.
var ErrInvalid = errors.New("invalid configuration")

// InvalidError carries the errors of a refused configuration.
type InvalidError struct {
	Errors Diagnostics
}

func (e *InvalidError) Error() string {
	var b strings.Builder
	b.WriteString(ErrInvalid.Error())
	for _, d := range e.Errors {
		b.WriteString("\n")
		b.WriteString(d.String())
	}
	return b.String()
}

func (e *InvalidError) Unwrap() error { return ErrInvalid }

// Err returns an *InvalidError holding the errors, or nil if there are none.
func (ds Diagnostics) Err() error {
	if errs := ds.Errors(); len(errs) > 0 {
		return &InvalidError{Errors: errs}
	}
	return nil
}

// sortBy orders diagnostics by file (in reading order) and line, keeping
// the order of findings on the same line.
func (ds Diagnostics) sortBy(files []string) {
	idx := make(map[string]int, len(files))
	for i, f := range files {
		idx[f] = i
	}
	slices.SortStableFunc(ds, func(a, b Diagnostic) int {
		if c := cmp.Compare(idx[a.Pos.File], idx[b.Pos.File]); c != 0 {
			return c
		}
		return cmp.Compare(a.Pos.Line, b.Pos.Line)
	})
}
