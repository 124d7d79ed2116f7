package ctl

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"

	"github.com/sextant-mesh/sextant/api"
)

const configUsage = `usage: sextant config <command> [flags] [arguments]

  kinds                                 the kinds, their scopes, and the knobs kinds' defaults
  list [--service S]                    configs naming S (every config without --service)
  get KIND SCOPE                        a config's document, revision and rollout
  put KIND SCOPE -f FILE [--rollout P]  write FILE (- for stdin); shows the diff first
  edit KIND SCOPE                       open the document in $EDITOR, check it, show the diff, write it
  diff KIND SCOPE (-f FILE | --revision R)
                                        what writing FILE (or going back to R) would change
  delete KIND SCOPE
  history KIND SCOPE                    the versions kept, newest first
  rollback KIND SCOPE --to R            write revision R's document again, as a new version
  rollout KIND SCOPE -f FILE --percent P
                                        stage FILE to P % of the instances
  promote KIND SCOPE --percent P        widen a rollout (100: everyone)
  abort KIND SCOPE                      end a rollout: everyone back to the previous document
  status KIND SCOPE                     how many instances run which revision
  pin SERVICE KIND SCOPE --revision R   SERVICE's instances keep revision R until unpinned
  unpin SERVICE KIND SCOPE
  pins SERVICE

KIND is one of: ` + kindList + `. SCOPE is SERVICE for
server-scoped kinds and CALLER/CALLEE for client-scoped ones.
Every command takes --context, --config-center, --token and -o table|json|yaml.
`

const kindList = "rpc_timeout, retry, circuit_break, degradation, limit, access_control, unit_routing, overload, priority_rules, calculator"

func configCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || isHelp(args[0]) {
		fmt.Fprint(stdout, configUsage)
		return nil
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("sextant config "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cf connFlags
	cf.register(fs, true)
	file := fs.String("f", "", "the document's file (- for stdin)")
	service := fs.String("service", "", "only the configs naming this service")
	rollout := fs.Int("rollout", 0, "stage the write to this percentage of the instances (1..99)")
	pct := fs.Int("percent", 0, "percentage of the instances")
	to := fs.Int64("to", 0, "the revision to roll back to")
	revision := fs.Int64("revision", 0, "a revision")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	want := map[string]int{"list": 0, "kinds": 0, "pins": 1, "pin": 3, "unpin": 3}
	n, ok := want[sub]
	if !ok {
		n = 2
	}
	known := []string{"kinds", "list", "get", "put", "edit", "diff", "delete", "history", "rollback", "rollout", "promote", "abort", "status", "pin", "unpin", "pins"}
	if !slices.Contains(known, sub) {
		fmt.Fprint(stderr, configUsage)
		return fmt.Errorf("unknown command %q", sub)
	}
	if len(pos) != n {
		return fmt.Errorf("sextant config %s takes %d argument(s), got %d (sextant config -h)", sub, n, len(pos))
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	cmd := configRun{c: c, out: stdout, errOut: stderr, format: cf.output}
	if n == 2 {
		cmd.path = "/v1/configs/" + url.PathEscape(pos[0]) + "/" + escapeScope(pos[1])
		cmd.name = pos[0] + "/" + pos[1]
	}
	switch sub {
	case "list":
		return cmd.list(*service)
	case "kinds":
		return cmd.kinds()
	case "get":
		return cmd.get()
	case "put":
		if *rollout != 0 {
			return cmd.write(*file, "?rollout="+strconv.Itoa(*rollout))
		}
		return cmd.write(*file, "")
	case "rollout":
		if *pct <= 0 {
			return errors.New("--percent is required (1..99)")
		}
		return cmd.write(*file, "?rollout="+strconv.Itoa(*pct))
	case "edit":
		return cmd.edit()
	case "diff":
		return cmd.diff(*file, *revision)
	case "delete":
		return cmd.remove()
	case "history":
		return cmd.history()
	case "rollback":
		if *to <= 0 {
			return errors.New("--to R is required: the revision to roll back to (sextant config history)")
		}
		return cmd.post("/rollback?to="+strconv.FormatInt(*to, 10), "rolled back to revision "+strconv.FormatInt(*to, 10))
	case "promote":
		if *pct <= 0 {
			return errors.New("--percent is required (up to 100)")
		}
		return cmd.post("/promote?percent="+strconv.Itoa(*pct), "promoted to "+strconv.Itoa(*pct)+" %")
	case "abort":
		return cmd.post("/abort", "rollout aborted")
	case "status":
		return cmd.status()
	case "pins":
		return cmd.pins(pos[0])
	case "pin":
		if *revision <= 0 {
			return errors.New("--revision R is required")
		}
		return cmd.pin(pos[0], pos[1], pos[2], *revision)
	case "unpin":
		return cmd.unpin(pos[0], pos[1], pos[2])
	}
	return nil
}

// configRun is one config command against one config (path, name).
type configRun struct {
	c           *Client
	out, errOut io.Writer
	format      string
	path, name  string
}

func escapeScope(scope string) string {
	parts := strings.Split(scope, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}

func (r configRun) list(service string) error {
	var got struct {
		Configs []api.Entry `json:"configs"`
		Pins    []api.Pin   `json:"pins"`
	}
	if _, err := r.c.Do(http.MethodGet, "/v1/configs?service="+url.QueryEscape(service), nil, &got); err != nil {
		return err
	}
	if done, err := emit(r.out, r.format, got); done {
		return err
	}
	t := newTable(r.out, "KIND", "SCOPE", "REVISION", "ROLLOUT", "UPDATED BY", "UPDATED")
	for _, e := range got.Configs {
		t.row(e.Kind, e.Scope, e.Revision, rolloutOf(e), e.UpdatedBy, when(e.UpdatedAtMs))
	}
	t.flush()
	return nil
}

func (r configRun) kinds() error {
	var got struct {
		Kinds []struct {
			Kind     string          `json:"kind"`
			Scope    string          `json:"scope"`
			Defaults json.RawMessage `json:"defaults,omitempty"`
		} `json:"kinds"`
	}
	if _, err := r.c.Do(http.MethodGet, "/v1/kinds", nil, &got); err != nil {
		return err
	}
	if done, err := emit(r.out, r.format, got); done {
		return err
	}
	t := newTable(r.out, "KIND", "SCOPE", "DEFAULTS")
	for _, k := range got.Kinds {
		scope, defaults := "SERVICE", "-"
		if k.Scope == "client" {
			scope = "CALLER/CALLEE"
		}
		if len(k.Defaults) > 0 {
			defaults = "sextant config kinds -o json"
		}
		t.row(k.Kind, scope, defaults)
	}
	t.flush()
	return nil
}

func rolloutOf(e api.Entry) string {
	if e.Rollout == nil {
		return "-"
	}
	return fmt.Sprintf("%d%% (from %d)", e.Rollout.Percent, e.Rollout.PreviousRevision)
}

// current reads the config; ok is false when it does not exist.
func (r configRun) current() (e api.Entry, etag string, ok bool, err error) {
	h, err := r.c.Do(http.MethodGet, r.path, nil, &e)
	if StatusOf(err) == http.StatusNotFound {
		return e, "", false, nil
	}
	if err != nil {
		return e, "", false, err
	}
	return e, h.Get("ETag"), true, nil
}

func (r configRun) get() error {
	e, _, ok, err := r.current()
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%s does not exist", r.name)
	}
	if done, err := emit(r.out, r.format, e); done {
		return err
	}
	fmt.Fprintf(r.out, "# %s revision %d, by %s at %s; rollout %s\n", r.name, e.Revision, e.UpdatedBy, when(e.UpdatedAtMs), rolloutOf(e))
	doc, err := pretty(e.Document)
	if err != nil {
		return err
	}
	_, err = r.out.Write(doc)
	return err
}

func readDoc(file string) ([]byte, error) {
	switch file {
	case "":
		return nil, errors.New("-f FILE is required (- for stdin)")
	case "-":
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(file)
}

// write puts FILE's document, with If-Match of the revision read, after
// printing what it changes.
func (r configRun) write(file, query string) error {
	doc, err := readDoc(file)
	if err != nil {
		return err
	}
	cur, etag, exists, err := r.current()
	if err != nil {
		return err
	}
	return r.put(cur.Document, etag, exists, doc, query)
}

func (r configRun) put(old []byte, etag string, exists bool, doc []byte, query string) error {
	d, err := unifiedDiff(r.name+" (current)", old, r.name+" (new)", doc)
	if err != nil {
		return err
	}
	if d == "" && query == "" {
		fmt.Fprintf(r.errOut, "%s: no change\n", r.name)
		return nil
	}
	fmt.Fprint(r.errOut, d)
	var headers []string
	if exists {
		headers = []string{"If-Match", etag}
	}
	var e api.Entry
	if _, err := r.c.Do(http.MethodPut, r.path+query, doc, &e, headers...); err != nil {
		if StatusOf(err) == http.StatusPreconditionFailed {
			return fmt.Errorf("%s changed since it was read (%w): read it again and retry", r.name, err)
		}
		return err
	}
	fmt.Fprintf(r.errOut, "%s written: revision %d\n", r.name, e.Revision)
	return nil
}

// edit opens the document in $EDITOR; an invalid result is shown and
// opened again (with the error on top) until it is valid, unchanged or
// given up (emptied); a valid one is diffed and written with If-Match.
func (r configRun) edit() error {
	cur, etag, exists, err := r.current()
	if err != nil {
		return err
	}
	base := []byte("{}\n")
	if exists {
		if base, err = pretty(cur.Document); err != nil {
			return err
		}
	}
	f, err := os.CreateTemp("", "sextant-edit-*.json")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	text := base
	for {
		if err := os.WriteFile(f.Name(), text, 0o600); err != nil {
			return err
		}
		if err := runEditor(f.Name()); err != nil {
			return err
		}
		edited, err := os.ReadFile(f.Name())
		if err != nil {
			return err
		}
		doc := stripComments(edited)
		if len(strings.TrimSpace(string(doc))) == 0 {
			return errors.New("the document is empty: nothing written")
		}
		if sameMeaning(doc, base) {
			fmt.Fprintf(r.errOut, "%s: no change\n", r.name)
			return nil
		}
		_, verr := r.c.Do(http.MethodPut, r.path+"?validate=true", doc, nil)
		if verr == nil {
			return r.put(cur.Document, etag, exists, doc, "")
		}
		if StatusOf(verr) != http.StatusBadRequest {
			return verr
		}
		fmt.Fprintf(r.errOut, "%s is not valid: %v\n", r.name, verr)
		if sameMeaning(doc, stripComments(text)) {
			return fmt.Errorf("%s: still invalid, nothing written: %w", r.name, verr)
		}
		text = append([]byte("// "+strings.ReplaceAll(verr.Error(), "\n", " ")+"\n// Fix it, or empty the file to give up.\n"), doc...)
	}
}

// runEditor runs $VISUAL or $EDITOR (vi without either) on path.
func runEditor(path string) error {
	editor := firstOf(os.Getenv("VISUAL"), os.Getenv("EDITOR"), "vi")
	cmd := exec.Command("sh", "-c", editor+` "$1"`, "sh", path)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("editor %q: %w", editor, err)
	}
	return nil
}

// stripComments drops the lines edit adds on top (starting with //).
func stripComments(b []byte) []byte {
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "//") {
			out = append(out, l)
		}
	}
	return []byte(strings.Join(out, "\n"))
}

func (r configRun) diff(file string, revision int64) error {
	cur, _, _, err := r.current()
	if err != nil {
		return err
	}
	var doc []byte
	name := r.name + " (" + file + ")"
	switch {
	case file != "":
		if doc, err = readDoc(file); err != nil {
			return err
		}
	case revision > 0:
		v, err := r.version(revision)
		if err != nil {
			return err
		}
		doc, name = v.Document, fmt.Sprintf("%s (revision %d)", r.name, revision)
	default:
		return errors.New("diff against -f FILE or --revision R")
	}
	d, err := unifiedDiff(r.name+" (current)", cur.Document, name, doc)
	if err != nil {
		return err
	}
	if d == "" {
		fmt.Fprintln(r.errOut, "no difference")
	}
	_, err = fmt.Fprint(r.out, d)
	return err
}

type historyAnswer struct {
	Versions []api.Entry `json:"versions"`
}

func (r configRun) version(revision int64) (api.Entry, error) {
	var h historyAnswer
	if _, err := r.c.Do(http.MethodGet, r.path+"/history", nil, &h); err != nil {
		return api.Entry{}, err
	}
	for _, v := range h.Versions {
		if v.Revision == revision {
			return v, nil
		}
	}
	return api.Entry{}, fmt.Errorf("%s has no version at revision %d (sextant config history)", r.name, revision)
}

func (r configRun) history() error {
	var h historyAnswer
	if _, err := r.c.Do(http.MethodGet, r.path+"/history", nil, &h); err != nil {
		return err
	}
	if done, err := emit(r.out, r.format, h); done {
		return err
	}
	t := newTable(r.out, "REVISION", "UPDATED BY", "UPDATED", "NOTE")
	for i, v := range h.Versions {
		note := ""
		switch {
		case i == 0 && !v.Deleted:
			note = "current"
		case v.Deleted:
			note = "deleted after"
		}
		if v.Rollout != nil {
			note = strings.TrimSpace(note + " rollout " + rolloutOf(v))
		}
		t.row(v.Revision, v.UpdatedBy, when(v.UpdatedAtMs), note)
	}
	t.flush()
	return nil
}

func (r configRun) remove() error {
	_, etag, exists, err := r.current()
	if err != nil {
		return err
	}
	if !exists {
		return fmt.Errorf("%s does not exist", r.name)
	}
	if _, err := r.c.Do(http.MethodDelete, r.path, nil, nil, "If-Match", etag); err != nil {
		return err
	}
	fmt.Fprintf(r.errOut, "%s deleted\n", r.name)
	return nil
}

func (r configRun) post(action, done string) error {
	var e json.RawMessage
	if _, err := r.c.Do(http.MethodPost, r.path+action, nil, &e); err != nil {
		return err
	}
	if ok, err := emit(r.out, r.format, e); ok {
		return err
	}
	fmt.Fprintf(r.errOut, "%s: %s\n", r.name, done)
	return nil
}

func (r configRun) status() error {
	var st api.ConfigStatus
	if _, err := r.c.Do(http.MethodGet, r.path+"/status", nil, &st); err != nil {
		return err
	}
	if done, err := emit(r.out, r.format, st); done {
		return err
	}
	t := newTable(r.out, "REVISION", "INSTANCES")
	revs := make([]string, 0, len(st.ByRevision))
	for rev := range st.ByRevision {
		revs = append(revs, rev)
	}
	slices.Sort(revs)
	for _, rev := range revs {
		t.row(rev, st.ByRevision[rev])
	}
	t.flush()
	return nil
}

func (r configRun) pins(service string) error {
	var pins json.RawMessage
	if _, err := r.c.Do(http.MethodGet, "/v1/pins/"+url.PathEscape(service), nil, &pins); err != nil {
		return err
	}
	var got struct {
		Pins []api.Pin `json:"pins"`
	}
	if err := json.Unmarshal(pins, &got); err != nil {
		return err
	}
	if done, err := emit(r.out, r.format, got); done {
		return err
	}
	t := newTable(r.out, "KIND", "SCOPE", "REVISION")
	for _, p := range got.Pins {
		t.row(p.Kind, p.Scope, p.Revision)
	}
	t.flush()
	return nil
}

func (r configRun) pin(service, kind, scope string, revision int64) error {
	body := map[string]any{"kind": kind, "scope": scope, "revision": revision}
	if _, err := r.c.Do(http.MethodPost, "/v1/pins/"+url.PathEscape(service), body, nil); err != nil {
		return err
	}
	fmt.Fprintf(r.errOut, "%s pinned to %s/%s revision %d\n", service, kind, scope, revision)
	return nil
}

func (r configRun) unpin(service, kind, scope string) error {
	q := url.Values{"kind": {kind}, "scope": {scope}}
	if _, err := r.c.Do(http.MethodDelete, "/v1/pins/"+url.PathEscape(service)+"?"+q.Encode(), nil, nil); err != nil {
		return err
	}
	fmt.Fprintf(r.errOut, "%s unpinned from %s/%s\n", service, kind, scope)
	return nil
}

// parseInterleaved parses flags that may come before, between or after
// the positional arguments.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos, args = append(pos, fs.Arg(0)), fs.Args()[1:]
	}
}

func isHelp(s string) bool { return s == "-h" || s == "-help" || s == "--help" || s == "help" }
