package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// maxIncludeDepth bounds include nesting so a file that includes itself
// ends in a diagnostic instead of unbounded recursion.
const maxIncludeDepth = 16

// token is one word of the configuration. Braces are tokens of their own
// even when written against a word ("url{"), as keepalived splits them.
type token struct {
	text   string
	quoted bool // written between double quotes: never a keyword or brace
	pos    Pos
	bol    bool // first token on its physical line (after include splicing)
}

func (t token) isOpen() bool  { return !t.quoted && t.text == "{" }
func (t token) isClose() bool { return !t.quoted && t.text == "}" }

// source reads configuration files and expands include globs. Two
// implementations: the OS file system (paths as the operator wrote them)
// and an fs.FS (tests, fuzzing).
type source interface {
	read(name string) ([]byte, error)
	glob(pattern string) ([]string, error)
	dir(name string) string
	join(dir, rel string) string
	isAbs(name string) bool
}

type osSource struct{}

func (osSource) read(name string) ([]byte, error)      { return os.ReadFile(name) }
func (osSource) glob(pattern string) ([]string, error) { return filepath.Glob(pattern) }
func (osSource) dir(name string) string                { return filepath.Dir(name) }
func (osSource) join(dir, rel string) string           { return filepath.Join(dir, rel) }
func (osSource) isAbs(name string) bool                { return filepath.IsAbs(name) }

type fsSource struct{ fsys fs.FS }

func (s fsSource) read(name string) ([]byte, error) {
	return fs.ReadFile(s.fsys, strings.TrimPrefix(path.Clean(name), "/"))
}
func (s fsSource) glob(pattern string) ([]string, error) {
	return fs.Glob(s.fsys, strings.TrimPrefix(path.Clean(pattern), "/"))
}
func (fsSource) dir(name string) string      { return path.Dir(name) }
func (fsSource) join(dir, rel string) string { return path.Join(dir, rel) }
func (fsSource) isAbs(name string) bool      { return strings.HasPrefix(name, "/") }

// lexer turns files into one token stream with includes spliced in place.
type lexer struct {
	src   source
	diags *Diagnostics
	files []string // every file read, in reading order
	toks  []token
	stack []string // files being read, for include-loop detection
}

// lexFile appends the tokens of name (already read as data) to l.toks.
func (l *lexer) lexFile(name string, data []byte, depth int) {
	if slices.Contains(l.stack, name) {
		return // loop: reported by the include that closed it
	}
	l.files = append(l.files, name)
	l.stack = append(l.stack, name)
	defer func() { l.stack = l.stack[:len(l.stack)-1] }()

	lines := strings.Split(string(data), "\n")
	for i, line := range lines {
		pos := Pos{File: name, Line: i + 1}
		words := l.splitLine(line, pos)
		if len(words) == 0 {
			continue
		}
		// include is handled here, not by the block grammar, because
		// keepalived accepts it at any nesting level.
		if !words[0].quoted && strings.EqualFold(words[0].text, "include") {
			l.include(words, pos, depth)
			continue
		}
		words[0].bol = true
		l.toks = append(l.toks, words...)
	}
}

func (l *lexer) include(words []token, pos Pos, depth int) {
	if len(words) < 2 {
		l.diags.errorf(pos, "include: missing file name")
		return
	}
	if len(words) > 2 {
		l.diags.warnf(pos, "include: extra arguments after %q ignored", words[1].text)
	}
	if depth >= maxIncludeDepth {
		l.diags.errorf(pos, "include %s: nested more than %d levels deep", words[1].text, maxIncludeDepth)
		return
	}
	pattern := words[1].text
	if !l.src.isAbs(pattern) {
		pattern = l.src.join(l.src.dir(pos.File), pattern)
	}
	matches, err := l.src.glob(pattern)
	if err != nil {
		l.diags.errorf(pos, "include %s: %v", words[1].text, err)
		return
	}
	if len(matches) == 0 {
		// keepalived carries on when an include matches nothing.
		l.diags.warnf(pos, "include %s: no file matches", words[1].text)
		return
	}
	slices.Sort(matches) // glob order is the file system's; keep it stable
	for _, m := range matches {
		if slices.Contains(l.stack, m) {
			// "include *.conf" beside the main file matches the main file:
			// skip it rather than loop.
			l.diags.warnf(pos, "include %s: %s is already being read, skipped", words[1].text, m)
			continue
		}
		data, err := l.src.read(m)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				l.diags.errorf(pos, "include %s: %s does not exist", words[1].text, m)
			} else {
				l.diags.errorf(pos, "include %s: %v", words[1].text, err)
			}
			continue
		}
		l.lexFile(m, data, depth+1)
	}
}

// splitLine splits one physical line into tokens. '#' and '!' start a
// comment where a word could start (so "pa!ss" stays one word); quoted
// strings are single tokens without their quotes.
func (l *lexer) splitLine(line string, pos Pos) []token {
	var out []token
	line = strings.TrimSuffix(line, "\r")
	i := 0
	for i < len(line) {
		c := line[i]
		switch {
		case c == ' ' || c == '\t' || c == '\f' || c == '\v' || c == '\r':
			i++
		case c == '#' || c == '!':
			return out
		case c == '{' || c == '}':
			out = append(out, token{text: line[i : i+1], pos: pos})
			i++
		case c == '"':
			end := strings.IndexByte(line[i+1:], '"')
			if end < 0 {
				l.diags.errorf(pos, "unterminated quoted string")
				out = append(out, token{text: line[i+1:], quoted: true, pos: pos})
				return out
			}
			out = append(out, token{text: line[i+1 : i+1+end], quoted: true, pos: pos})
			i += end + 2
		default:
			j := i
			for j < len(line) {
				d := line[j]
				if d == ' ' || d == '\t' || d == '\f' || d == '\v' || d == '\r' || d == '{' || d == '}' || d == '"' {
					break
				}
				j++
			}
			out = append(out, token{text: line[i:j], pos: pos})
			i = j
		}
	}
	return out
}

// String is for debugging the lexer in tests.
func (t token) String() string {
	if t.quoted {
		return fmt.Sprintf("%s:%q", t.pos, t.text)
	}
	return fmt.Sprintf("%s:%s", t.pos, t.text)
}
