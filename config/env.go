package config

import (
	"bytes"
	"fmt"
	"iter"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// Environment references are expanded inside scalar values after YAML
// parsing, not in the raw text: a value can then never inject YAML
// structure, and each node keeps its true position.

type tokKind int

const (
	tokText       tokKind = iota // literal text
	tokEscape                    // "$${", which stands for a literal "${"
	tokRef                       // "${NAME}"
	tokBadName                   // "${...}" whose inside is not a name
	tokUnterminal                // "${" with no closing brace
)

// token is one piece of a scalar: s[start:end] of the given kind.
type token struct {
	kind       tokKind
	start, end int
	name       string // tokRef, tokBadName: the text between the braces
}

// tokens splits s into text, escapes and references.
func tokens(s string) iter.Seq[token] {
	return func(yield func(token) bool) {
		text := 0 // start of the pending text run
		for i := 0; i < len(s); {
			var t token
			switch {
			case strings.HasPrefix(s[i:], "$${"):
				t = token{kind: tokEscape, start: i, end: i + 3}
			case strings.HasPrefix(s[i:], "${"):
				t = refToken(s, i)
			default:
				i++
				continue
			}
			if text < i && !yield(token{kind: tokText, start: text, end: i}) {
				return
			}
			if !yield(t) {
				return
			}
			i, text = t.end, t.end
		}
		if text < len(s) {
			yield(token{kind: tokText, start: text, end: len(s)})
		}
	}
}

// refToken reads the reference starting at s[i:], which begins with "${".
func refToken(s string, i int) token {
	end := strings.IndexByte(s[i+2:], '}')
	if end < 0 {
		return token{kind: tokUnterminal, start: i, end: len(s)}
	}
	name := s[i+2 : i+2+end]
	kind := tokRef
	if !isEnvName(name) {
		kind = tokBadName
	}
	return token{kind: kind, start: i, end: i + 3 + end, name: name}
}

// isEnvName reports whether s is a shell-style variable name.
func isEnvName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '_' && (c < 'A' || c > 'Z') && (c < 'a' || c > 'z') && (i == 0 || c < '0' || c > '9') {
			return false
		}
	}
	return s != ""
}

// expander expands ${NAME} in every scalar value of a node tree.
type expander struct {
	file   string
	src    []byte
	lookup func(string) (string, bool)
	errs   []Error
	failed map[*yaml.Node]bool // scalars with a bad reference; not decoded
}

// walk expands the values under n. Mapping keys are left alone: field names
// are not configuration. Aliases are not followed, since their target is
// expanded where it stands.
func (x *expander) walk(n *yaml.Node, path string) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			x.walk(c, path)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			x.walk(c, fmt.Sprintf("%s[%d]", path, i))
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			x.walk(n.Content[i+1], join(path, n.Content[i].Value, "."))
		}
	case yaml.ScalarNode:
		x.scalar(n, path)
	}
}

// scalar expands one scalar in place, or records why it cannot.
func (x *expander) scalar(n *yaml.Node, path string) {
	if !strings.Contains(n.Value, "${") {
		return
	}
	var b strings.Builder
	ordinal := 0 // counts "${" tokens, to find the same one in the source
	for t := range tokens(n.Value) {
		var msg string
		switch t.kind {
		case tokText:
			b.WriteString(n.Value[t.start:t.end])
		case tokEscape:
			b.WriteString("${")
		case tokRef:
			if v, ok := x.lookup(t.name); ok {
				b.WriteString(v)
			} else {
				msg = fmt.Sprintf("environment variable %q is not set (write $${ for a literal ${)", t.name)
			}
		case tokBadName:
			msg = fmt.Sprintf("invalid environment variable name %q in ${...}", t.name)
		case tokUnterminal:
			msg = `unterminated "${" (write $${ for a literal ${)`
		}
		if t.kind >= tokRef {
			ordinal++
		}
		if msg != "" {
			line, col := x.refPos(n, ordinal)
			x.errs = append(x.errs, Error{File: x.file, Line: line, Col: col, Path: path, Msg: msg})
			x.failed[n] = true
		}
	}
	n.Value = b.String()
}

// refPos finds the ordinal-th "${" in the source from n's start, so an
// error points at the reference itself, not at the start of the scalar.
// Quoting and folding do not change references, so the raw text holds the
// same ones in the same order; if it does not (escapes in a double-quoted
// string), the scalar's own position is close enough.
func (x *expander) refPos(n *yaml.Node, ordinal int) (line, col int) {
	start, ok := offsetOf(x.src, n.Line, n.Column)
	if !ok {
		return n.Line, n.Column
	}
	raw := string(x.src[start:])
	seen := 0
	for t := range tokens(raw) {
		if t.kind < tokRef {
			continue
		}
		if seen++; seen < ordinal {
			continue
		}
		before := raw[:t.start]
		nl := strings.LastIndexByte(before, '\n')
		if nl < 0 {
			return n.Line, n.Column + utf8.RuneCountInString(before)
		}
		return n.Line + strings.Count(before, "\n"), utf8.RuneCountInString(before[nl+1:]) + 1
	}
	return n.Line, n.Column
}

// offsetOf converts a 1-based line and column (counted in characters, as
// yaml.v3 counts them) to a byte offset in src.
func offsetOf(src []byte, line, col int) (int, bool) {
	off := 0
	for l := 1; l < line; l++ {
		nl := bytes.IndexByte(src[off:], '\n')
		if nl < 0 {
			return 0, false
		}
		off += nl + 1
	}
	for c := 1; c < col; c++ {
		if off >= len(src) || src[off] == '\n' {
			return 0, false
		}
		_, size := utf8.DecodeRune(src[off:])
		off += size
	}
	return off, true
}
