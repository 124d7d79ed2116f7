// Package contracts checks that the contracts stay in code: the etcd layout
// is spelled only in the contract package (api), and no comment or doc cites
// a file the repository does not hold.
package contracts

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// etcdKeyLiteral matches a Go string literal that starts with a directory of
// api.Keys' layout, Sextant's default prefix or a Kitex suite's prefix.
var etcdKeyLiteral = regexp.MustCompile("[\"`](/sextant/|/KitexConfig|kitex/registry-etcd|(registry|policy|config|config-history|audit|pins|shards|tokens|ca)/)")

func TestEtcdKeysOnlyInTheContract(t *testing.T) {
	walk(t, func(path string, data []byte) {
		if !strings.HasSuffix(path, ".go") || strings.HasPrefix(path, "api/") || strings.HasPrefix(path, "tests/contracts/") || strings.HasPrefix(path, "deploy/") {
			return
		}
		for i, line := range strings.Split(string(data), "\n") {
			if code, _, _ := strings.Cut(line, "//"); etcdKeyLiteral.MatchString(code) {
				t.Errorf("%s:%d: an etcd key spelled outside api.Keys: %s", path, i+1, strings.TrimSpace(line))
			}
		}
	})
}

// citesOutside matches a citation of the design file that lived outside the
// repository, or a path that climbs out of it.
var citesOutside = regexp.MustCompile(`DESIGN\.md|\.\./shared/`)

func TestNothingCitesFilesOutsideTheRepository(t *testing.T) {
	walk(t, func(path string, data []byte) {
		if strings.HasPrefix(path, "tests/contracts/") {
			return
		}
		for i, line := range strings.Split(string(data), "\n") {
			if citesOutside.MatchString(line) {
				t.Errorf("%s:%d: cites a file outside the repository: %s", path, i+1, strings.TrimSpace(line))
			}
		}
	})
}

// walk calls f with every source and document file of the repository,
// relative to its root; generated code and tools' output are left out.
func walk(t *testing.T, f func(path string, data []byte)) {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			switch rel {
			case ".git", "bin", "kitex_gen", "node_modules":
				return filepath.SkipDir
			}
			if strings.HasSuffix(rel, "/kitex_gen") {
				return filepath.SkipDir
			}
			return nil
		}
		switch filepath.Ext(rel) {
		case ".go", ".md", ".thrift", ".yaml", ".tpl", ".txt":
		default:
			if filepath.Base(rel) != "Makefile" && filepath.Base(rel) != "Dockerfile" {
				return nil
			}
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		f(rel, data)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
