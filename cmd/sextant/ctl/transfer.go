package ctl

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/sextant-mesh/sextant/api"
)

// Export and import keep each config as DIR/KIND/SCOPE.json, the API's own
// path (a client-scoped config is DIR/KIND/CALLER/CALLEE.json), holding its
// document pretty-printed: files to review and keep in version control.

func exportCmd(args []string, stdout, stderr io.Writer) error {
	flags := flag.NewFlagSet("sextant export", flag.ContinueOnError)
	flags.SetOutput(stderr)
	var cf connFlags
	cf.register(flags, false)
	pos, err := parseInterleaved(flags, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New("usage: sextant export DIR")
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	var got struct {
		Configs []api.Entry `json:"configs"`
	}
	if _, err := c.Do(http.MethodGet, "/v1/configs", nil, &got); err != nil {
		return err
	}
	for _, e := range got.Configs {
		doc, err := pretty(e.Document)
		if err != nil {
			return fmt.Errorf("%s/%s: %w", e.Kind, e.Scope, err)
		}
		path := filepath.Join(pos[0], e.Kind, filepath.FromSlash(e.Scope)+".json")
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, doc, 0o644); err != nil {
			return err
		}
		if e.Rollout != nil {
			fmt.Fprintf(stderr, "%s/%s: in a rollout at %d %%: exported the new document\n", e.Kind, e.Scope, e.Rollout.Percent)
		}
	}
	fmt.Fprintf(stdout, "exported %d configs to %s\n", len(got.Configs), pos[0])
	return nil
}

func importCmd(args []string, stdout, stderr io.Writer) error {
	flags := flag.NewFlagSet("sextant import", flag.ContinueOnError)
	flags.SetOutput(stderr)
	var cf connFlags
	cf.register(flags, false)
	dryRun := flags.Bool("dry-run", false, "check every file and say what would change, without writing")
	pos, err := parseInterleaved(flags, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New("usage: sextant import DIR")
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	type file struct{ kind, scope, path string }
	var files []file
	root := pos[0]
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".json") {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		kind, scope, ok := strings.Cut(filepath.ToSlash(strings.TrimSuffix(rel, ".json")), "/")
		if !ok {
			return fmt.Errorf("%s: not under DIR/KIND/", path)
		}
		files = append(files, file{kind, scope, path})
		return nil
	})
	if err != nil {
		return err
	}
	slices.SortFunc(files, func(a, b file) int { return strings.Compare(a.path, b.path) })
	// Every file is checked before any is written: a bad one writes nothing.
	docs := make([][]byte, len(files))
	for i, f := range files {
		if docs[i], err = os.ReadFile(f.path); err != nil {
			return err
		}
		r := configRun{c: c, path: "/v1/configs/" + f.kind + "/" + escapeScope(f.scope)}
		if _, err := c.Do(http.MethodPut, r.path+"?validate=true", docs[i], nil); err != nil {
			return fmt.Errorf("%s: %w (nothing imported)", f.path, err)
		}
	}
	var created, updated, unchanged int
	for i, f := range files {
		r := configRun{c: c, out: stdout, errOut: io.Discard, path: "/v1/configs/" + f.kind + "/" + escapeScope(f.scope), name: f.kind + "/" + f.scope}
		cur, etag, exists, err := r.current()
		if err != nil {
			return err
		}
		switch {
		case exists && sameMeaning(cur.Document, docs[i]):
			unchanged++
			continue
		case exists:
			updated++
		default:
			created++
		}
		fmt.Fprintf(stdout, "%s %s\n", map[bool]string{true: "update", false: "create"}[exists], r.name)
		if *dryRun {
			continue
		}
		if err := r.put(cur.Document, etag, exists, docs[i], ""); err != nil {
			return fmt.Errorf("%s: %w", f.path, err)
		}
	}
	verb := "imported"
	if *dryRun {
		verb = "would import"
	}
	fmt.Fprintf(stdout, "%s %d configs: %d created, %d updated, %d unchanged\n", verb, len(files), created, updated, unchanged)
	return nil
}
