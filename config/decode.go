package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"

	"go.yaml.in/yaml/v3"
)

// maxSteps bounds the nodes one decode visits. Aliases can make a small
// document expand exponentially ("billion laughs") or even refer to itself;
// a real config is a few hundred nodes.
const maxSteps = 100_000

// decoder fills a value from a yaml.Node tree by the yaml field tags,
// strictly: unknown and duplicate keys and mistyped scalars are errors, and
// it goes on after each one so that a single run reports them all.
type decoder struct {
	file   string
	errs   []Error
	nodes  nodeIndex           // every path decoded → its value node
	failed map[*yaml.Node]bool // scalars whose ${NAME} expansion failed
	// invalid holds the paths whose value was rejected, so validation does
	// not report the same mistake again as a missing or zero value.
	invalid map[string]bool
	steps   int
}

// nodeIndex maps a field path ("upstreams[0].servers[1].weight") to the
// node it was decoded from. It tells the defaults which keys were written
// and gives validation errors their positions.
type nodeIndex map[string]*yaml.Node

// has reports whether path was written with a non-null value.
func (idx nodeIndex) has(path string) bool { return idx[path] != nil }

// pos returns the position of path, or of its nearest written ancestor
// when path itself was not written (a missing required field is reported
// at the mapping that lacks it).
func (idx nodeIndex) pos(path string) (line, col int) {
	for {
		if n := idx[path]; n != nil {
			return n.Line, n.Column
		}
		if path == "" {
			return 0, 0
		}
		path = parentPath(path)
	}
}

// parentPath strips the last ".key" or "[i]" from path.
func parentPath(path string) string {
	if i := strings.LastIndexAny(path, ".["); i >= 0 {
		return path[:i]
	}
	return ""
}

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	d.errs = append(d.errs, Error{File: d.file, Line: n.Line, Col: n.Column, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// invalidf reports a value at path that could not be decoded.
func (d *decoder) invalidf(n *yaml.Node, path, format string, args ...any) {
	d.invalid[path] = true
	d.errorf(n, path, format, args...)
}

// step counts a visited node and reports whether the budget allows it.
func (d *decoder) step(n *yaml.Node) bool {
	d.steps++
	if d.steps == maxSteps {
		d.errorf(n, "", "document too large or too deeply aliased (more than %d nodes)", maxSteps)
	}
	return d.steps < maxSteps
}

// resolve follows aliases to the node they name.
func (d *decoder) resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode && d.step(n) {
		n = n.Alias
	}
	if n == nil || n.Kind == yaml.AliasNode {
		return nil
	}
	return n
}

// isNull reports whether n is an empty value or null, which count as if
// the key were not written.
func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// value decodes n into v, the addressable field at path.
func (d *decoder) value(n *yaml.Node, v reflect.Value, path string) {
	if n = d.resolve(n); n == nil || !d.step(n) || isNull(n) {
		return
	}
	if d.failed[n] {
		d.invalid[path] = true
		return
	}
	d.nodes[path] = n
	if p, ok := v.Addr().Interface().(scalarParser); ok {
		if s, ok := d.scalar(n, path, "a scalar"); ok {
			if err := p.parseScalar(s); err != nil {
				d.invalidf(n, path, "%v", err)
			}
		}
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		e := reflect.New(v.Type().Elem())
		d.value(n, e.Elem(), path)
		v.Set(e)
	case reflect.Struct:
		d.mapping(n, v, path)
	case reflect.Slice:
		d.sequence(n, v, path)
	case reflect.String:
		if s, ok := d.scalar(n, path, "a string"); ok {
			v.SetString(s)
		}
	case reflect.Int:
		d.int(n, v, path)
	case reflect.Bool:
		d.bool(n, v, path)
	default:
		panic("config: no decoder for field type " + v.Type().String())
	}
}

// scalar returns n's text, or reports that n is a collection.
func (d *decoder) scalar(n *yaml.Node, path, want string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		d.invalidf(n, path, "expected %s, got %s", want, describe(n))
		return "", false
	}
	return n.Value, true
}

func (d *decoder) int(n *yaml.Node, v reflect.Value, path string) {
	s, ok := d.scalar(n, path, "an integer")
	if !ok {
		return
	}
	i, err := strconv.ParseInt(s, 10, v.Type().Bits())
	switch {
	case err == nil:
		v.SetInt(i)
	case err.(*strconv.NumError).Err == strconv.ErrRange:
		d.invalidf(n, path, "integer %s is out of range", s)
	default:
		d.invalidf(n, path, "expected an integer, got %q", s)
	}
}

// bool accepts YAML 1.2's true/false and, for Nginx users, on/off.
func (d *decoder) bool(n *yaml.Node, v reflect.Value, path string) {
	s, ok := d.scalar(n, path, "true or false")
	if !ok {
		return
	}
	switch s {
	case "true", "True", "TRUE", "on":
		v.SetBool(true)
	case "false", "False", "FALSE", "off":
		v.SetBool(false)
	default:
		d.invalidf(n, path, "expected true or false, got %q", s)
	}
}

func (d *decoder) sequence(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.SequenceNode {
		d.invalidf(n, path, "expected a list, got %s", describe(n))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		d.value(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
	}
	v.Set(s)
}

func (d *decoder) mapping(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.invalidf(n, path, "expected a mapping, got %s", describe(n))
		return
	}
	fields := fieldsOf(v.Type())
	seen := map[string]*yaml.Node{}
	for _, p := range d.pairs(n, path, false) {
		k := d.resolve(p.key)
		if k == nil {
			continue
		}
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, path, "expected a field name, got %s", describe(k))
			continue
		}
		if first := seen[k.Value]; first != nil {
			// A merged key yields to a written one and to earlier merges.
			if !p.merged {
				d.errorf(k, path, "duplicate field %q (first at %d:%d)", k.Value, first.Line, first.Column)
			}
			continue
		}
		seen[k.Value] = k
		i, ok := fields.index[k.Value]
		if !ok && path == "" && strings.HasPrefix(k.Value, "x-") {
			continue // a place for anchors, as in docker-compose files
		}
		if !ok {
			d.errorf(k, path, "unknown field %q%s", k.Value, didYouMean(k.Value, fields.names))
			continue
		}
		d.value(p.value, v.Field(i), join(path, k.Value, "."))
	}
}

// pair is one key and value of a mapping; merged ones came in through a
// "<<" merge key.
type pair struct {
	key, value *yaml.Node
	merged     bool
}

// pairs lists n's own pairs, then those of its "<<" merges, so that own
// keys win over merged ones.
func (d *decoder) pairs(n *yaml.Node, path string, merged bool) []pair {
	var own, more []pair
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if !d.step(k) {
			break
		}
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			more = append(more, d.merge(v, path)...)
			continue
		}
		own = append(own, pair{k, v, merged})
	}
	return append(own, more...)
}

// merge returns the pairs a "<<" value brings in: one mapping or a list of
// them, earlier ones first.
func (d *decoder) merge(v *yaml.Node, path string) []pair {
	v = d.resolve(v)
	if v == nil {
		return nil
	}
	items := []*yaml.Node{v}
	if v.Kind == yaml.SequenceNode {
		items = v.Content
	}
	var out []pair
	for _, m := range items {
		if m = d.resolve(m); m == nil {
			continue
		}
		if m.Kind != yaml.MappingNode {
			d.errorf(m, path, "a << merge takes a mapping or a list of mappings, got %s", describe(m))
			continue
		}
		out = append(out, d.pairs(m, path, true)...)
	}
	return out
}

// describe names a node's kind for error messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return strconv.Quote(n.Value)
	}
	return "nothing"
}

// structFields is a struct type's YAML field names and their indices.
type structFields struct {
	names []string // in declaration order, for suggestions
	index map[string]int
}

var fieldCache sync.Map // reflect.Type → *structFields

// fieldsOf reads t's yaml tags; untagged, unexported and "-" fields are
// not configurable.
func fieldsOf(t reflect.Type) *structFields {
	if f, ok := fieldCache.Load(t); ok {
		return f.(*structFields)
	}
	f := &structFields{index: map[string]int{}}
	for i := range t.NumField() {
		sf := t.Field(i)
		name, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
		if !sf.IsExported() || name == "" || name == "-" {
			continue
		}
		f.names = append(f.names, name)
		f.index[name] = i
	}
	fieldCache.Store(t, f)
	return f
}
