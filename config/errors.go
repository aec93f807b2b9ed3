package config

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
)

// Error is one problem in a config file, placed at the YAML node that
// causes it. Line and Col are 1-based; zero when unknown (YAML syntax errors
// carry a line only).
type Error struct {
	File      string
	Line, Col int
	// Path names the offending field, e.g. "upstreams[0].servers[1].weight";
	// empty for the document itself.
	Path string
	Msg  string
}

// Error formats e as "file:line:col: path: msg", leaving out parts that are
// unknown or empty.
func (e Error) Error() string {
	var b strings.Builder
	pos := e.File
	if e.Line > 0 {
		pos = join(pos, strconv.Itoa(e.Line), ":")
		if e.Col > 0 {
			pos += ":" + strconv.Itoa(e.Col)
		}
	}
	if pos != "" {
		b.WriteString(pos)
		b.WriteString(": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in one config, in file order. Parse and
// Load return it as *Errors; it unwraps to its Error values, so
// errors.As(err, &configError) finds the first.
type Errors struct {
	List []Error
}

// Error prints one problem per line.
func (e *Errors) Error() string {
	lines := make([]string, len(e.List))
	for i, x := range e.List {
		lines[i] = x.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns each problem as an error.
func (e *Errors) Unwrap() []error {
	errs := make([]error, len(e.List))
	for i, x := range e.List {
		errs[i] = x
	}
	return errs
}

// sortErrors orders problems by position; position-less ones go last, and
// problems at the same position keep the order they were found in.
func sortErrors(list []Error) {
	key := func(e Error) int {
		if e.Line == 0 {
			return int(^uint(0) >> 1)
		}
		return e.Line<<20 | e.Col
	}
	slices.SortStableFunc(list, func(a, b Error) int { return cmp.Compare(key(a), key(b)) })
}

// join joins two non-empty strings with sep, or returns the non-empty one.
func join(a, b, sep string) string {
	if a == "" {
		return b
	}
	if b == "" {
		return a
	}
	return a + sep + b
}

// suggest returns the candidate closest to name if it is within edit
// distance 2 (and closer than name is long, so "x" does not suggest "y"),
// or "" when nothing is close. Ties go to the earlier candidate.
func suggest(name string, candidates []string) string {
	best, bestDist := "", 3
	for _, c := range candidates {
		d := editDistance(name, c)
		if d < bestDist && d < len(name) {
			best, bestDist = c, d
		}
	}
	return best
}

// didYouMean formats suggest's answer as a message suffix.
func didYouMean(name string, candidates []string) string {
	if s := suggest(name, candidates); s != "" {
		return " (did you mean " + strconv.Quote(s) + "?)"
	}
	return ""
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
