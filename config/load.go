package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Load reads and parses the config file at path (see Parse) and records
// path in Config.Path. Read errors are returned as they are; problems in
// the file as *Errors.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := Parse(path, data)
	if err != nil {
		return nil, err
	}
	c.Path = path
	return c, nil
}

// Parse parses a YAML config; name is the file name used in error
// positions. It expands ${NAME} from the environment in every value ($${
// stands for a literal ${), decodes strictly, applies defaults and
// validates. It returns a complete Config, or nil and an *Errors holding
// every problem found, each with its position.
func Parse(name string, data []byte) (*Config, error) {
	return parse(name, data, os.LookupEnv)
}

// parse is Parse with the environment as a parameter.
func parse(name string, data []byte, lookup func(string) (string, bool)) (*Config, error) {
	root, err := parseYAML(name, data)
	if err != nil {
		return nil, &Errors{List: []Error{*err}}
	}
	x := &expander{file: name, src: data, lookup: lookup, failed: map[*yaml.Node]bool{}}
	d := &decoder{file: name, nodes: nodeIndex{}, failed: x.failed, invalid: map[string]bool{}}
	var c Config
	if root != nil {
		x.walk(root, "")
		d.nodes[""] = root
		d.mapping(root, reflect.ValueOf(&c).Elem(), "")
	}
	applyDefaults(&c, d.nodes)
	errs := append(x.errs, d.errs...)
	errs = append(errs, validate(&c, name, d.nodes, d.invalid)...)
	if len(errs) > 0 {
		sortErrors(errs)
		return nil, &Errors{List: errs}
	}
	return &c, nil
}

// yamlLine pulls the line out of yaml.v3's syntax errors, which have no
// column and no structured form: "yaml: line 3: did not find expected key".
// The line is yaml.v3's guess: for errors inside a block or flow
// collection it is often the line before the one at fault.
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// parseYAML returns the document's top node, nil for an empty document.
func parseYAML(name string, data []byte) (*yaml.Node, *Error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, yamlError(name, err)
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, yamlError(name, err)
		}
		return nil, &Error{File: name, Line: next.Line, Col: next.Column, Msg: "a config file holds one YAML document, found another"}
	}
	if len(doc.Content) == 0 || isNull(doc.Content[0]) {
		return nil, nil
	}
	return doc.Content[0], nil
}

func yamlError(name string, err error) *Error {
	e := &Error{File: name, Msg: "invalid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		e.Line, _ = strconv.Atoi(m[1])
		e.Msg = "invalid YAML: " + m[2]
	}
	return e
}

// Upstream returns the upstream called name, or nil.
func (c *Config) Upstream(name string) *Upstream {
	for i := range c.Upstreams {
		if c.Upstreams[i].Name == name {
			return &c.Upstreams[i]
		}
	}
	return nil
}

// Zone returns the limit_req_zone called name, or nil.
func (c *Config) Zone(name string) *LimitReqZone {
	for i := range c.LimitReqZones {
		if c.LimitReqZones[i].Name == name {
			return &c.LimitReqZones[i]
		}
	}
	return nil
}

// Enabled reports whether the admin listener runs (Addr is not "off").
func (a Admin) Enabled() bool { return a.Addr != AdminOff }

// BurstOrZero returns Burst, 0 when it was not written.
func (l LimitReq) BurstOrZero() int {
	if l.Burst == nil {
		return 0
	}
	return *l.Burst
}

// DelayOrZero returns Delay, 0 (delay every excess request) when it was not
// written. NoDelay is separate: with it, nothing is delayed.
func (l LimitReq) DelayOrZero() int {
	if l.Delay == nil {
		return 0
	}
	return *l.Delay
}
