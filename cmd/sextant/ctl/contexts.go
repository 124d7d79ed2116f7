package ctl

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

const contextUsage = `usage: sextant context <command>

  set NAME [--config-center ADDR] [--token T] [--ca-file F] [--use]
                 add or change a context (fields not given are kept)
  use NAME       make NAME the current context
  list           the contexts, the current one marked
  current        the current context's name

The file is $SEXTANT_CONFIG, else $XDG_CONFIG_HOME/sextant/config, else
~/.config/sextant/config (mode 0600: it holds tokens).
`

func contextCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || isHelp(args[0]) {
		fmt.Fprint(stdout, contextUsage)
		return nil
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("sextant context "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	center := fs.String("config-center", "", "config-center address")
	token := fs.String("token", "", "credential")
	ca := fs.String("ca-file", "", "CA bundle for an https config-center")
	use := fs.Bool("use", false, "also make it the current context")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	f, err := LoadContexts()
	if err != nil {
		return err
	}
	switch sub {
	case "set":
		if len(pos) != 1 {
			return errors.New("usage: sextant context set NAME [flags]")
		}
		c, ok := f.Find(pos[0])
		if !ok {
			f.Contexts = append(f.Contexts, Context{Name: pos[0]})
			c = &f.Contexts[len(f.Contexts)-1]
		}
		c.ConfigCenter = firstOf(*center, c.ConfigCenter)
		c.Token = firstOf(*token, c.Token)
		c.CAFile = firstOf(*ca, c.CAFile)
		if *use || f.Current == "" {
			f.Current = pos[0]
		}
		if err := f.Save(); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "context %s saved in %s\n", pos[0], ContextPath())
	case "use":
		if len(pos) != 1 {
			return errors.New("usage: sextant context use NAME")
		}
		if _, ok := f.Find(pos[0]); !ok {
			return fmt.Errorf("no context %q in %s", pos[0], ContextPath())
		}
		f.Current = pos[0]
		return f.Save()
	case "list":
		t := newTable(stdout, "CURRENT", "NAME", "CONFIG-CENTER", "TOKEN")
		for _, c := range f.Contexts {
			mark, tok := "", "-"
			if c.Name == f.Current {
				mark = "*"
			}
			if c.Token != "" {
				tok = "set"
			}
			t.row(mark, c.Name, firstOf(c.ConfigCenter, DefaultConfigCenter), tok)
		}
		t.flush()
	case "current":
		if f.Current == "" {
			return errors.New("no current context")
		}
		fmt.Fprintln(stdout, f.Current)
	default:
		fmt.Fprint(stderr, contextUsage)
		return fmt.Errorf("unknown command %q", sub)
	}
	return nil
}
