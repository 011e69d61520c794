package ccflow

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDocComments keeps the rule that every package and every exported name
// has a doc comment, from the first commit on.
func TestDocComments(t *testing.T) {
	pkgDoc := map[string]bool{}
	pkgSeen := map[string]bool{}
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != "." && (strings.HasPrefix(name, ".") || name == "testdata" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") || path == "tools.go" {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ParseComments)
		if err != nil {
			return err
		}
		dir := filepath.Dir(path)
		pkgSeen[dir] = true
		if f.Doc != nil {
			pkgDoc[dir] = true
		}
		for _, decl := range f.Decls {
			switch d := decl.(type) {
			case *ast.FuncDecl:
				if !d.Name.IsExported() || d.Doc != nil {
					continue
				}
				if d.Recv != nil && !exportedRecv(d.Recv) {
					continue
				}
				t.Errorf("%s: exported func %s has no doc comment", path, d.Name.Name)
			case *ast.GenDecl:
				for _, s := range d.Specs {
					switch s := s.(type) {
					case *ast.TypeSpec:
						if s.Name.IsExported() && d.Doc == nil && s.Doc == nil {
							t.Errorf("%s: exported type %s has no doc comment", path, s.Name.Name)
						}
					case *ast.ValueSpec:
						for _, n := range s.Names {
							if n.IsExported() && d.Doc == nil && s.Doc == nil {
								t.Errorf("%s: exported %s has no doc comment", path, n.Name)
							}
						}
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for dir := range pkgSeen {
		if !pkgDoc[dir] {
			t.Errorf("package in %s has no package doc comment", dir)
		}
	}
}

func exportedRecv(fl *ast.FieldList) bool {
	if len(fl.List) == 0 {
		return false
	}
	typ := fl.List[0].Type
	for {
		switch x := typ.(type) {
		case *ast.StarExpr:
			typ = x.X
		case *ast.IndexExpr:
			typ = x.X
		case *ast.IndexListExpr:
			typ = x.X
		case *ast.Ident:
			return x.IsExported()
		default:
			return false
		}
	}
}

// TestDependencyDirection keeps the dependency arrows of DESIGN.md: the
// record type, the privacy stage, the detector and the decoders never link
// the Kafka or ClickHouse clients, and production code does not import the
// benchmark harness (only the binary may, for `ccflow simulate`).
func TestDependencyDirection(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Deps " "}}`, "./...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	const mod = "github.com/ccflow/ccflow/"
	forbidden := []string{"github.com/segmentio/kafka-go", "github.com/ClickHouse/clickhouse-go", "github.com/ClickHouse/ch-go"}
	pure := []string{"flow", "privacy", "detect", "collector", "enrich", "config"}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg := strings.TrimPrefix(fields[0], mod)
		for _, dep := range fields[1:] {
			for _, p := range pure {
				if pkg == p || strings.HasPrefix(pkg, p+"/") {
					for _, f := range forbidden {
						if strings.HasPrefix(dep, f) {
							t.Errorf("%s depends on %s", pkg, dep)
						}
					}
				}
			}
			if strings.HasPrefix(dep, mod+"bench") && !strings.HasPrefix(pkg, "bench") && pkg != "cmd/ccflow" {
				t.Errorf("%s imports the benchmark harness %s", pkg, dep)
			}
			if (pkg == "flow" || strings.HasPrefix(pkg, "flow/")) && strings.HasPrefix(dep, mod) && !strings.HasPrefix(dep, mod+"flow") {
				t.Errorf("%s must depend on nothing else in the project, but imports %s", pkg, dep)
			}
		}
	}
}
