// Package layout_test enforces the import rules of DESIGN.md "Layout":
// limiter, breaker and config import neither proxy nor each other, and
// nothing imports cmd. It is a test-only package at the module root.
package layout_test

import (
	"bufio"
	"bytes"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

const module = "github.com/tollgate-proxy/tollgate"

// forbidden maps a top-level directory to the module's top-level
// directories its packages must not depend on, directly or not.
var forbidden = map[string][]string{
	"limiter": {"proxy", "breaker", "config", "cmd"},
	"breaker": {"proxy", "limiter", "config", "cmd"},
	"config":  {"proxy", "limiter", "breaker", "cmd"},
	"proxy":   {"cmd"},
}

// top returns the module's top-level directory of an import path, or ""
// for a package outside the module.
func top(path string) string {
	rest, ok := strings.CutPrefix(path, module+"/")
	if !ok {
		return ""
	}
	dir, _, _ := strings.Cut(rest, "/")
	return dir
}

func goTool(t *testing.T) string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

func TestImportRules(t *testing.T) {
	cmd := exec.Command(goTool(t), "list", "-f", `{{.ImportPath}} {{join .Imports ","}} {{join .Deps ","}}`, "./...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	checked := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), " ")
		if len(fields) != 3 {
			t.Fatalf("go list line %q", sc.Text())
		}
		pkg, imports, deps := fields[0], strings.Split(fields[1], ","), strings.Split(fields[2], ",")
		from := top(pkg)
		checked++
		for _, dep := range deps {
			to := top(dep)
			if to == "" || to == from {
				continue
			}
			if to == "cmd" {
				t.Errorf("%s depends on %s: nothing may import cmd", pkg, dep)
				continue
			}
			for _, bad := range forbidden[from] {
				if to == bad {
					t.Errorf("%s depends on %s%s: %s may not import %s (DESIGN.md Layout)",
						pkg, dep, via(imports, dep), from, bad)
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("go list found no packages")
	}
}

// via names the direct import when dep is only an indirect dependency.
func via(imports []string, dep string) string {
	for _, imp := range imports {
		if imp == dep {
			return " (direct import)"
		}
	}
	return " (indirectly; direct imports: " + strings.Join(imports, ", ") + ")"
}
